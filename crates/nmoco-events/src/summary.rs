//! What `nmoco inspect` prints about a decoded file.

use crate::{Format, Recording, SensorSize, Skipped, sha256_txyp};

/// Counts, ranges and the column digest of a decoded recording. The ranges are `None` for a
/// recording without events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub format: Format,
    pub events: u64,
    pub t_min: Option<i64>,
    pub t_max: Option<i64>,
    pub x_min: Option<u16>,
    pub x_max: Option<u16>,
    pub y_min: Option<u16>,
    pub y_max: Option<u16>,
    pub on: u64,
    pub off: u64,
    pub sensor: Option<SensorSize>,
    pub skipped: Skipped,
    /// See [`sha256_txyp`].
    pub sha256_txyp: String,
}

fn min_max<T: Copy + Ord>(v: &[T]) -> (Option<T>, Option<T>) {
    let mut it = v.iter().copied();
    let Some(first) = it.next() else {
        return (None, None);
    };
    let (lo, hi) = it.fold((first, first), |(lo, hi), x| (lo.min(x), hi.max(x)));
    (Some(lo), Some(hi))
}

impl Summary {
    pub fn new(format: Format, rec: &Recording) -> Summary {
        let ev = &rec.events;
        let (t_min, t_max) = min_max(&ev.t);
        let (x_min, x_max) = min_max(&ev.x);
        let (y_min, y_max) = min_max(&ev.y);
        let on = ev.on.iter().filter(|&&p| p).count() as u64;
        Summary {
            format,
            events: ev.t.len() as u64,
            t_min,
            t_max,
            x_min,
            x_max,
            y_min,
            y_max,
            on,
            off: ev.on.len() as u64 - on,
            sensor: rec.sensor,
            skipped: rec.skipped.clone(),
            sha256_txyp: sha256_txyp(ev),
        }
    }
}
