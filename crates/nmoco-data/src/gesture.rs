//! DVS128 Gesture layout: `*_labels.csv` parsing, `trials_to_*.txt` lists and segment cutting.
//!
//! Each CSV row `class,startTime_usec,endTime_usec` is one sample: label `class - 1`, events with
//! `start <= t < end` (half-open), rows independent of each other (they may repeat a class and
//! may overlap, so one event can land in two samples), as SpikingJelly's
//! `_split_aedat_files_to_np` cuts them.

use std::path::Path;

use nmoco_events::Events;

use crate::error::Error;

/// Class names of DVS128 Gesture, index = label = CSV class − 1.
pub const GESTURE_CLASSES: [&str; 11] = [
    "hand_clapping",
    "right_hand_wave",
    "left_hand_wave",
    "right_arm_cw",
    "right_arm_ccw",
    "left_arm_cw",
    "left_arm_ccw",
    "arm_roll",
    "air_drums",
    "air_guitar",
    "other_gestures",
];

/// One row of a labels CSV.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LabelRow {
    /// The 1-based class as written in the file.
    pub class: u32,
    /// Start time in µs, inclusive.
    pub start: i64,
    /// End time in µs, exclusive.
    pub end: i64,
}

impl LabelRow {
    /// The 0-based label, `class - 1`.
    pub fn label(&self) -> usize {
        self.class as usize - 1
    }
}

/// Parse a labels CSV. The first line is a header and is skipped when it is not numeric (as
/// `np.loadtxt(skiprows=1)` skips it); blank lines are ignored; CRLF is accepted.
pub fn parse_labels_csv(text: &str, path: &Path) -> Result<Vec<LabelRow>, Error> {
    let mut rows = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        let bad = |reason: String| Error::Labels {
            path: path.to_path_buf(),
            line: i + 1,
            reason,
        };
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if i == 0 && fields.first().is_some_and(|f| f.parse::<i64>().is_err()) {
            continue;
        }
        if fields.len() != 3 {
            return Err(bad(format!(
                "expected 3 comma-separated fields (class,startTime_usec,endTime_usec), found {}",
                fields.len()
            )));
        }
        let class: u32 = fields[0]
            .parse()
            .map_err(|_| bad(format!("class {:?} is not a positive integer", fields[0])))?;
        if class == 0 {
            return Err(bad("class 0: classes are numbered from 1".into()));
        }
        let start: i64 = fields[1]
            .parse()
            .map_err(|_| bad(format!("start time {:?} is not an integer", fields[1])))?;
        let end: i64 = fields[2]
            .parse()
            .map_err(|_| bad(format!("end time {:?} is not an integer", fields[2])))?;
        if end < start {
            return Err(bad(format!("end time {end} is before start time {start}")));
        }
        rows.push(LabelRow { class, start, end });
    }
    Ok(rows)
}

/// Read and parse a labels CSV.
pub fn read_labels_csv(path: &Path) -> Result<Vec<LabelRow>, Error> {
    let text = std::fs::read_to_string(path).map_err(crate::error::io_err(path))?;
    parse_labels_csv(&text, path)
}

/// Parse a trials list: one recording file name per line (e.g. `user01_fluorescent.aedat`),
/// blank lines ignored.
pub fn parse_trials(text: &str, path: &Path) -> Result<Vec<String>, Error> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let name = raw.trim();
        if name.is_empty() {
            continue;
        }
        if name.contains('/') || name.contains('\\') || !name.ends_with(".aedat") {
            return Err(Error::Trials {
                path: path.to_path_buf(),
                line: i + 1,
                reason: format!("expected a bare `*.aedat` file name, found {name:?}"),
            });
        }
        out.push(name.to_string());
    }
    Ok(out)
}

/// The labels CSV that belongs to a recording: `user01_led.aedat` → `user01_led_labels.csv`.
pub fn labels_name(recording: &str) -> String {
    let stem = recording.strip_suffix(".aedat").unwrap_or(recording);
    format!("{stem}_labels.csv")
}

/// Cut one labelled segment out of a recording: events with `start <= t < end`, in file order.
pub fn cut_segment(events: &Events, row: &LabelRow) -> Events {
    events.filter_time(row.start, row.end)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> &'static Path {
        Path::new("x_labels.csv")
    }

    #[test]
    fn parses_header_crlf_and_blank_lines() {
        let rows = parse_labels_csv(
            "class,startTime_usec,endTime_usec\r\n1,10,20\r\n\r\n11, 30 ,40\r\n",
            p(),
        )
        .unwrap();
        assert_eq!(
            rows,
            vec![
                LabelRow {
                    class: 1,
                    start: 10,
                    end: 20
                },
                LabelRow {
                    class: 11,
                    start: 30,
                    end: 40
                }
            ]
        );
        assert_eq!(rows[1].label(), 10);
    }

    #[test]
    fn bad_rows_name_file_and_line() {
        let e = parse_labels_csv("class,a,b\n1,2\n", p()).unwrap_err();
        assert!(matches!(e, Error::Labels { line: 2, .. }), "{e}");
        assert!(e.to_string().contains("x_labels.csv"));
        let e = parse_labels_csv("class,a,b\n0,2,3\n", p()).unwrap_err();
        assert!(matches!(e, Error::Labels { line: 2, .. }));
        let e = parse_labels_csv("class,a,b\n1,5,3\n", p()).unwrap_err();
        assert!(matches!(e, Error::Labels { line: 2, .. }));
        let e = parse_labels_csv("1,x,3\n", p()).unwrap_err();
        assert!(matches!(e, Error::Labels { line: 1, .. }));
    }

    #[test]
    fn trials_and_label_names() {
        let t = parse_trials("user01_fluorescent.aedat\n\nuser02_led.aedat\n", p()).unwrap();
        assert_eq!(t, vec!["user01_fluorescent.aedat", "user02_led.aedat"]);
        assert!(parse_trials("a/b.aedat\n", p()).is_err());
        assert!(parse_trials("user01.csv\n", p()).is_err());
        assert_eq!(labels_name("user01_led.aedat"), "user01_led_labels.csv");
    }

    #[test]
    fn segments_are_half_open_and_may_overlap() {
        let mut ev = Events::new();
        for t in [0i64, 5, 10, 15, 20, 25] {
            ev.t.push(t);
            ev.x.push(t as u16);
            ev.y.push(0);
            ev.on.push(t % 10 == 0);
        }
        let a = cut_segment(
            &ev,
            &LabelRow {
                class: 1,
                start: 5,
                end: 20,
            },
        );
        assert_eq!(a.t, vec![5, 10, 15]);
        assert_eq!(a.x, vec![5, 10, 15]);
        let b = cut_segment(
            &ev,
            &LabelRow {
                class: 1,
                start: 15,
                end: 26,
            },
        );
        assert_eq!(b.t, vec![15, 20, 25]);
        let empty = cut_segment(
            &ev,
            &LabelRow {
                class: 2,
                start: 7,
                end: 7,
            },
        );
        assert!(empty.is_empty());
    }
}
