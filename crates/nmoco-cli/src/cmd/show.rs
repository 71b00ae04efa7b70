//! `nmoco show FILE --out grid.png` or `nmoco show --dataset NAME --root DIR --index I`: render
//! the frames of a recording or a dataset sample as a PNG grid (ON red, OFF blue, one tile per
//! time step).

use std::path::PathBuf;

use anyhow::{Context, bail};
use nmoco_data::{CacheMode, DataConfig, Dataset, DatasetKind, Split};
use nmoco_frames::{FrameConfig, Resize};
use nmoco_viz::grid::{GridOptions, render_grid};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// An event file (any supported format), or with --dataset a sample index
    pub file_or_sample: Option<String>,
    /// The PNG to write
    #[arg(long, default_value = "grid.png")]
    pub out: PathBuf,
    /// Number of frames (time steps)
    #[arg(long = "t", default_value_t = 16)]
    pub t: usize,
    /// Frame size N (N×N); default: the sensor size for a file, the dataset's size for a sample
    #[arg(long)]
    pub size: Option<usize>,
    /// Show a dataset sample instead of a file
    #[arg(long, value_parser = crate::cmd::data::parse_kind)]
    pub dataset: Option<DatasetKind>,
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// Sample index within the split
    #[arg(long)]
    pub index: Option<usize>,
    #[arg(long, default_value = "train", value_parser = parse_split)]
    pub split: Split,
    /// Tiles per row (0 = about sqrt(T))
    #[arg(long, default_value_t = 0)]
    pub columns: usize,
    /// Screen pixels per frame pixel (0 = automatic)
    #[arg(long, default_value_t = 0)]
    pub scale: usize,
}

fn parse_split(s: &str) -> Result<Split, String> {
    match s {
        "train" => Ok(Split::Train),
        "test" => Ok(Split::Test),
        _ => Err(format!("unknown split {s:?}; expected train or test")),
    }
}

pub fn run(a: Args) -> anyhow::Result<()> {
    if a.t == 0 {
        bail!("--t must be at least 1");
    }
    let (frames, title) = match &a.dataset {
        Some(kind) => {
            let root = a.root.clone().context("--dataset needs --root DIR")?;
            let index = match (a.index, &a.file_or_sample) {
                (Some(i), _) => i,
                (None, Some(s)) => s.parse().with_context(|| {
                    format!("with --dataset the positional argument is a sample index, got {s:?}")
                })?,
                (None, None) => bail!("--dataset needs --index I"),
            };
            let mut cfg = DataConfig::for_dataset(kind.clone(), &root);
            cfg.frames.t = a.t;
            if let Some(n) = a.size {
                cfg.frames.height = n;
                cfg.frames.width = n;
                if cfg.frames.resize == Resize::None {
                    cfg.frames.resize = Resize::Pool;
                }
            }
            let ds = Dataset::open_with(&cfg, a.split, CacheMode::Off)?;
            let (f, label) = ds.get(index)?;
            let name = ds.class_names().get(label).cloned().unwrap_or_default();
            let s = ds.sample(index)?;
            tracing::info!(file = %s.path.display(), segment = ?s.segment, label, "sample");
            (f, format!("{kind} {} #{index} {name}", a.split))
        }
        None => {
            let path = PathBuf::from(
                a.file_or_sample
                    .clone()
                    .context("give an event file, or --dataset NAME --root DIR --index I")?,
            );
            let rec = nmoco_events::read_file(&path, None)
                .with_context(|| format!("reading {}", path.display()))?;
            let ev = &rec.events;
            if ev.is_empty() {
                bail!("{} holds no events", path.display());
            }
            let sensor = rec.sensor.unwrap_or_else(|| nmoco_events::SensorSize {
                width: ev.x.iter().copied().max().unwrap_or(0) + 1,
                height: ev.y.iter().copied().max().unwrap_or(0) + 1,
            });
            let (h, w, resize) = match a.size {
                Some(n) => (n, n, Resize::Pool),
                None => (sensor.height as usize, sensor.width as usize, Resize::None),
            };
            let fc = FrameConfig {
                t: a.t,
                height: h,
                width: w,
                resize,
                drop_out_of_bounds: true,
                ..FrameConfig::default()
            };
            let f = nmoco_frames::integrate(ev, sensor, &fc)?;
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            (f, format!("{name} {} ev", ev.len()))
        }
    };
    let opts = GridOptions {
        columns: a.columns,
        scale: a.scale,
        title: Some(title),
        ..GridOptions::default()
    };
    let canvas = render_grid(&frames.data, frames.t, frames.h, frames.w, &opts)?;
    canvas.save_png(&a.out)?;
    println!(
        "wrote {} ({}x{} px, {} frames of {}x{})",
        a.out.display(),
        canvas.width,
        canvas.height,
        frames.t,
        frames.h,
        frames.w
    );
    Ok(())
}
