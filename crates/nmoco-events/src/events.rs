//! The decoded data: a struct of arrays and its metadata.

use std::collections::BTreeMap;

/// One event, for iteration only; bulk data lives in [`Events`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Event {
    /// Timestamp in microseconds.
    pub t: i64,
    pub x: u16,
    pub y: u16,
    /// `true` = ON (brightness increase), `false` = OFF.
    pub on: bool,
}

/// Events as a struct of arrays. All four columns always have the same length.
///
/// `t` is in microseconds as the file stores it (not rebased); `on` is `true` for ON events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Events {
    pub t: Vec<i64>,
    pub x: Vec<u16>,
    pub y: Vec<u16>,
    pub on: Vec<bool>,
}

impl Events {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_capacity(n: usize) -> Self {
        Self {
            t: Vec::with_capacity(n),
            x: Vec::with_capacity(n),
            y: Vec::with_capacity(n),
            on: Vec::with_capacity(n),
        }
    }

    /// Number of events. Panics in debug builds if the columns disagree in length.
    pub fn len(&self) -> usize {
        debug_assert!(self.columns_consistent());
        self.t.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether all columns have the same length.
    pub fn columns_consistent(&self) -> bool {
        let n = self.t.len();
        self.x.len() == n && self.y.len() == n && self.on.len() == n
    }

    #[inline]
    pub fn push(&mut self, e: Event) {
        self.t.push(e.t);
        self.x.push(e.x);
        self.y.push(e.y);
        self.on.push(e.on);
    }

    pub fn get(&self, i: usize) -> Option<Event> {
        Some(Event {
            t: *self.t.get(i)?,
            x: self.x[i],
            y: self.y[i],
            on: self.on[i],
        })
    }

    pub fn iter(&self) -> impl DoubleEndedIterator<Item = Event> + ExactSizeIterator + '_ {
        (0..self.len()).map(move |i| Event {
            t: self.t[i],
            x: self.x[i],
            y: self.y[i],
            on: self.on[i],
        })
    }

    pub fn clear(&mut self) {
        self.t.clear();
        self.x.clear();
        self.y.clear();
        self.on.clear();
    }

    pub fn extend_from(&mut self, other: &Events) {
        self.t.extend_from_slice(&other.t);
        self.x.extend_from_slice(&other.x);
        self.y.extend_from_slice(&other.y);
        self.on.extend_from_slice(&other.on);
    }

    /// A copy of the events with index in `range`.
    pub fn slice(&self, range: std::ops::Range<usize>) -> Events {
        Events {
            t: self.t[range.clone()].to_vec(),
            x: self.x[range.clone()].to_vec(),
            y: self.y[range.clone()].to_vec(),
            on: self.on[range].to_vec(),
        }
    }

    /// The events with `start <= t < end`, kept in file order (no sorting assumed).
    pub fn filter_time(&self, start: i64, end: i64) -> Events {
        let mut out = Events::new();
        for (i, &t) in self.t.iter().enumerate() {
            if t >= start && t < end {
                out.t.push(t);
                out.x.push(self.x[i]);
                out.y.push(self.y[i]);
                out.on.push(self.on[i]);
            }
        }
        out
    }
}

impl FromIterator<Event> for Events {
    fn from_iter<I: IntoIterator<Item = Event>>(iter: I) -> Self {
        let mut ev = Events::new();
        for e in iter {
            ev.push(e);
        }
        ev
    }
}

/// Sensor width and height in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SensorSize {
    pub width: u16,
    pub height: u16,
}

/// Counts of words, packets or records the decoder skipped, by kind (e.g. `"imu"`, `"aps"`,
/// `"special"`, `"invalid"`, `"packet:frame"`).
pub type Skipped = BTreeMap<String, u64>;

/// A decoded file: events plus what the file says about itself.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Recording {
    pub events: Events,
    /// Sensor size when the file states it (AEDAT 4 stream info, a known AEDAT 2/3 chip).
    pub sensor: Option<SensorSize>,
    pub skipped: Skipped,
}
