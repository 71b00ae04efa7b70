//! `nmoco inspect FILE [--format auto|nbin|aedat2|aedat3|aedat4] [--json]`: decodes an event
//! file and prints its format, event count, t/x/y ranges, ON/OFF counts, sensor size, skipped
//! words/packets by kind and `sha256_txyp` (see `nmoco_events::sha256_txyp`).

use std::path::PathBuf;

use anyhow::Context;
use nmoco_events::{Aedat2Layout, Dvs128Polarity, Format, NbinOverflow, ReadOptions, Summary};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The event file
    pub file: PathBuf,
    /// File format: auto (magic string, then extension), nbin, aedat2, aedat3, aedat4
    #[arg(long, default_value = "auto")]
    pub format: String,
    /// Print one JSON object instead of text
    #[arg(long)]
    pub json: bool,
    /// N-binary y==240 overflow records: tonic (+8192 µs each), wrap23 (+2^23 µs), ignore
    #[arg(long, default_value = "tonic")]
    pub nbin_overflow: String,
    /// AEDAT 2.0 address layout: auto (from the AEChip header line), dvs128, davis240, davis346
    #[arg(long, default_value = "auto")]
    pub aedat2_layout: String,
    /// AEDAT 2.0 DVS128: bit0 = 0 means ON (jAER, spikingjelly) instead of bit0 = 1
    #[arg(long)]
    pub jaer_polarity: bool,
    /// AEDAT 2.0: decode special/APS/IMU words as events instead of skipping them
    #[arg(long)]
    pub keep_special: bool,
    /// AEDAT 3.1: keep events whose validity bit is 0
    #[arg(long)]
    pub keep_invalid: bool,
}

fn options(args: &Args) -> anyhow::Result<ReadOptions> {
    let format = match args.format.as_str() {
        "auto" => None,
        f => Some(f.parse::<Format>()?),
    };
    let nbin_overflow = match args.nbin_overflow.as_str() {
        "tonic" => NbinOverflow::Tonic,
        "wrap23" => NbinOverflow::Wrap23,
        "ignore" => NbinOverflow::Ignore,
        o => anyhow::bail!("unknown --nbin-overflow {o:?} (expected tonic|wrap23|ignore)"),
    };
    let aedat2_layout = match args.aedat2_layout.as_str() {
        "auto" => Aedat2Layout::Auto,
        "dvs128" => Aedat2Layout::Dvs128,
        "davis240" => Aedat2Layout::Davis240,
        "davis346" => Aedat2Layout::Davis346,
        o => {
            anyhow::bail!("unknown --aedat2-layout {o:?} (expected auto|dvs128|davis240|davis346)")
        }
    };
    Ok(ReadOptions {
        format,
        nbin_overflow,
        aedat2_layout,
        dvs128_polarity: if args.jaer_polarity {
            Dvs128Polarity::Jaer
        } else {
            Dvs128Polarity::Bit0On
        },
        keep_special: args.keep_special,
        keep_invalid: args.keep_invalid,
        ..Default::default()
    })
}

/// Decodes the file and summarises it.
pub fn summarize(args: &Args) -> anyhow::Result<Summary> {
    let mut opts = options(args)?;
    let format = match opts.format {
        Some(f) => f,
        None => nmoco_events::sniff_file(&args.file)?,
    };
    opts.format = Some(format);
    let rec = nmoco_events::read_file_with(&args.file, &opts)
        .with_context(|| format!("cannot decode {} as {format}", args.file.display()))?;
    Ok(Summary::new(format, &rec))
}

/// The summary as the JSON object `--json` prints.
pub fn to_json(s: &Summary) -> serde_json::Value {
    serde_json::json!({
        "format": s.format.name(),
        "events": s.events,
        "t_min": s.t_min,
        "t_max": s.t_max,
        "x_min": s.x_min,
        "x_max": s.x_max,
        "y_min": s.y_min,
        "y_max": s.y_max,
        "on": s.on,
        "off": s.off,
        "width": s.sensor.map(|z| z.width),
        "height": s.sensor.map(|z| z.height),
        "skipped": s.skipped,
        "sha256_txyp": s.sha256_txyp,
    })
}

/// The summary as the text `inspect` prints without `--json`.
pub fn to_text(file: &std::path::Path, s: &Summary) -> String {
    fn range<T: std::fmt::Display>(lo: Option<T>, hi: Option<T>) -> String {
        match (lo, hi) {
            (Some(lo), Some(hi)) => format!("{lo} .. {hi}"),
            _ => "-".into(),
        }
    }
    let sensor = s.sensor.map_or("unknown".to_string(), |z| {
        format!("{}x{}", z.width, z.height)
    });
    let skipped = if s.skipped.is_empty() {
        "none".to_string()
    } else {
        s.skipped
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "file         {}\nformat       {}\nevents       {}\nt (us)       {}\nx            {}\ny            {}\non / off     {} / {}\nsensor       {}\nskipped      {}\nsha256_txyp  {}\n",
        file.display(),
        s.format,
        s.events,
        range(s.t_min, s.t_max),
        range(s.x_min, s.x_max),
        range(s.y_min, s.y_max),
        s.on,
        s.off,
        sensor,
        skipped,
        s.sha256_txyp
    )
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let s = summarize(&args)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&to_json(&s))?);
    } else {
        print!("{}", to_text(&args.file, &s));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use nmoco_events::{Event, Events, SensorSize};

    fn args(file: PathBuf, format: &str) -> Args {
        Args {
            file,
            format: format.into(),
            json: true,
            nbin_overflow: "tonic".into(),
            aedat2_layout: "auto".into(),
            jaer_polarity: false,
            keep_special: false,
            keep_invalid: false,
        }
    }

    #[test]
    fn json_has_the_documented_keys_and_values() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.aedat");
        let ev: Events = [(5, 3, 9, true), (7, 1, 2, false), (9, 4, 4, true)]
            .into_iter()
            .map(|(t, x, y, on)| Event { t, x, y, on })
            .collect();
        nmoco_events::aedat31::write_file(
            &p,
            &ev,
            Some(SensorSize {
                width: 128,
                height: 128,
            }),
        )
        .unwrap();
        let s = summarize(&args(p.clone(), "auto")).unwrap();
        let j = to_json(&s);
        assert_eq!(j["format"], "aedat3");
        assert_eq!(j["events"], 3);
        assert_eq!(
            (j["t_min"].clone(), j["t_max"].clone()),
            (5.into(), 9.into())
        );
        assert_eq!(
            (j["x_min"].clone(), j["x_max"].clone()),
            (1.into(), 4.into())
        );
        assert_eq!(
            (j["y_min"].clone(), j["y_max"].clone()),
            (2.into(), 9.into())
        );
        assert_eq!((j["on"].clone(), j["off"].clone()), (2.into(), 1.into()));
        assert_eq!(
            (j["width"].clone(), j["height"].clone()),
            (128.into(), 128.into())
        );
        assert_eq!(j["skipped"], serde_json::json!({}));
        assert_eq!(j["sha256_txyp"], nmoco_events::sha256_txyp(&ev));
        let keys: Vec<_> = j.as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys.len(), 14);
        assert!(to_text(&p, &s).contains("on / off     2 / 1"));
    }

    #[test]
    fn unreadable_file_error_names_file_and_offset() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.bin");
        std::fs::write(&p, [1u8, 2, 3, 4, 5, 6, 7]).unwrap();
        let err = summarize(&args(p.clone(), "auto")).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("bad.bin"), "{msg}");
        assert!(msg.contains("at byte 5"), "{msg}");
        assert!(summarize(&args(p, "aedat9")).is_err());
    }
}
