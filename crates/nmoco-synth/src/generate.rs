//! Simulating samples and recordings, and writing the dataset in the DVS128 Gesture layout.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nmoco_events::Events;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::Error;
use crate::camera::Camera;
use crate::config::SynthConfig;
use crate::scene::{MAX_CLASSES, Object, ObjectState, SampleParams, class_names};

/// Header of the label CSVs, as in DVS128 Gesture.
pub const LABELS_HEADER: &str = "class,startTime_usec,endTime_usec";

/// One labelled segment of a recording. `class` is 0-based; the CSV stores `class + 1`.
/// Events of the sample are those with `start_us <= t < end_us`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub class: usize,
    pub start_us: i64,
    pub end_us: i64,
}

/// A simulated recording: time-sorted events and its labelled segments.
#[derive(Debug, Clone, PartialEq)]
pub struct SimRecording {
    pub events: Events,
    pub segments: Vec<Segment>,
    pub duration_us: i64,
}

/// What [`generate`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub out: PathBuf,
    pub recordings: usize,
    /// Every file written, relative to `out`, in a fixed order.
    pub files: Vec<PathBuf>,
    pub train_samples: usize,
    pub test_samples: usize,
    /// Events in all recordings (gaps included).
    pub events: u64,
    /// Events per labelled sample: min, mean, max.
    pub sample_events: (u64, f64, u64),
    /// Total recorded time, µs.
    pub duration_us: i64,
    pub elapsed: Duration,
}

/// SplitMix64 finaliser: spreads a 64-bit value over all bits.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The seed of recording (`user`, `lighting`): it depends only on these and the dataset seed,
/// so the output does not depend on the order in which recordings are simulated.
pub fn recording_seed(seed: u64, user: usize, lighting: usize) -> u64 {
    mix(seed ^ mix(((user as u64) << 32) | lighting as u64))
}

/// File stem of a recording, e.g. `user03_dim`.
pub fn recording_stem(user: usize, lighting: &str) -> String {
    format!("user{user:02}_{lighting}")
}

fn check_params(class: usize, p: &SampleParams) -> Result<(), Error> {
    let bad = |field: &'static str, value: String, reason: &'static str| {
        Err(Error::InvalidConfig {
            field,
            value,
            reason,
        })
    };
    if class >= MAX_CLASSES {
        return Err(Error::ClassOutOfRange {
            class,
            max: MAX_CLASSES,
        });
    }
    let (w, h) = (p.sensor.width, p.sensor.height);
    if !(8..=1024).contains(&w) || !(8..=1024).contains(&h) {
        return bad(
            "sensor",
            format!("{w}x{h}"),
            "width and height must be in 8..=1024",
        );
    }
    if !(1000..=60_000_000).contains(&p.duration_us) {
        return bad(
            "duration_us",
            p.duration_us.to_string(),
            "must be in 1000..=60000000",
        );
    }
    let c = &p.camera;
    if !(1..=1000).contains(&c.render_step_us) {
        return bad(
            "render_step_us",
            c.render_step_us.to_string(),
            "must be in 1..=1000",
        );
    }
    if !(c.threshold.is_finite() && c.threshold >= 0.05) {
        return bad(
            "threshold",
            c.threshold.to_string(),
            "must be finite and at least 0.05",
        );
    }
    if c.refractory_us < 0 {
        return bad(
            "refractory_us",
            c.refractory_us.to_string(),
            "must be non-negative",
        );
    }
    let finite = [
        ("size", p.size),
        ("position.0", p.position.0),
        ("position.1", p.position.1),
        ("orientation", p.orientation),
        ("pace", p.pace),
        ("phase", p.phase),
        ("drift.0", p.drift.0),
        ("drift.1", p.drift.1),
        ("texture.cycles", p.texture.cycles),
        ("texture.orientation", p.texture.orientation),
        ("texture.phase", p.texture.phase),
        ("threshold_sigma", c.threshold_sigma),
        ("noise_hz", c.noise_hz),
        ("hot_pixel_hz", c.hot_pixel_hz),
    ];
    for (field, v) in finite {
        if !v.is_finite() {
            return bad(field, v.to_string(), "must be finite");
        }
    }
    if !(p.log_contrast.is_finite() && p.log_contrast.abs() <= 5.0) {
        return bad(
            "log_contrast",
            p.log_contrast.to_string(),
            "must be in [-5, 5]",
        );
    }
    if !(0.0..1.0).contains(&p.texture.amplitude) {
        return bad(
            "texture.amplitude",
            p.texture.amplitude.to_string(),
            "must be in [0, 1)",
        );
    }
    if !(p.background_texture.is_finite() && (0.0..=2.0).contains(&p.background_texture)) {
        return bad(
            "background_texture",
            p.background_texture.to_string(),
            "must be in [0, 2]",
        );
    }
    Ok(())
}

/// Simulate one sample of `class` (0-based) alone: the camera starts adapted to the first
/// frame, the object moves for `params.duration_us`, then background activity and hot pixels
/// are added. Timestamps run from 0 to the duration; events are sorted by time.
pub fn simulate_sample<R: Rng + ?Sized>(
    class: usize,
    params: &SampleParams,
    rng: &mut R,
) -> Result<Events, Error> {
    check_params(class, params)?;
    let obj = Object::new(class, params);
    let mut cam = Camera::new(params.sensor, params.camera, params.background_texture, rng);
    let s0 = obj.state(0.0);
    cam.settle(&obj, &s0);
    let step = params.camera.render_step_us;
    let d = params.duration_us;
    let mut prev = s0;
    let mut t0 = 0;
    while t0 < d {
        let t1 = (t0 + step).min(d);
        let s = obj.state(t1 as f64 * 1e-6);
        if s != prev {
            cam.step(t0, t1, Some((&obj, prev)), Some((&obj, s)));
        }
        prev = s;
        t0 = t1;
    }
    cam.add_noise(d, rng);
    Ok(cam.finish())
}

struct Planned {
    class: usize,
    appear: i64,
    start: i64,
    end: i64,
    disappear: i64,
    obj: Object,
}

/// Draw a multiple of `step` in `lo..=hi` (rounded, at least one step).
fn draw_aligned<R: Rng + ?Sized>(rng: &mut R, (lo, hi): (i64, i64), step: i64) -> i64 {
    let v = rng.random_range(lo..=hi);
    ((v + step / 2) / step).max(1) * step
}

/// Simulate recording (`user`, `lighting`) of the dataset described by `cfg`. `user` is
/// 1-based (as in the file names), `lighting` indexes `cfg.lightings`.
pub fn simulate_recording(
    cfg: &SynthConfig,
    user: usize,
    lighting: usize,
) -> Result<SimRecording, Error> {
    cfg.validate()?;
    let Some(light) = cfg.lightings.get(lighting) else {
        return Err(Error::InvalidConfig {
            field: "lighting",
            value: lighting.to_string(),
            reason: "no such lighting index",
        });
    };
    if user == 0 || user > cfg.users {
        return Err(Error::InvalidConfig {
            field: "user",
            value: user.to_string(),
            reason: "must be in 1..=users",
        });
    }
    let mut rng = ChaCha8Rng::seed_from_u64(recording_seed(cfg.seed, user, lighting));
    let camera = cfg.camera(light);
    let mut cam = Camera::new(cfg.sensor, camera, cfg.background_texture, &mut rng);
    let step = cfg.render_step_us;

    let mut order: Vec<usize> = (0..cfg.classes)
        .flat_map(|c| std::iter::repeat_n(c, cfg.per_class))
        .collect();
    order.shuffle(&mut rng);
    let mut plan: Vec<Planned> = Vec::with_capacity(order.len());
    let mut t = 0i64;
    for class in order {
        let gap = draw_aligned(&mut rng, cfg.gap_us, step);
        let dur = draw_aligned(&mut rng, cfg.segment_us, step);
        if let Some(last) = plan.last_mut() {
            last.disappear = t + gap * 3 / 10;
        }
        let start = t + gap;
        let mut params = SampleParams::random(cfg.sensor, dur, light.contrast, camera, &mut rng);
        params.background_texture = cfg.background_texture;
        plan.push(Planned {
            class,
            appear: t + gap * 6 / 10,
            start,
            end: start + dur,
            disappear: i64::MAX,
            obj: Object::new(class, &params),
        });
        t = start + dur;
    }
    let tail = draw_aligned(&mut rng, cfg.gap_us, step);
    if let Some(last) = plan.last_mut() {
        last.disappear = t + tail * 3 / 10;
    }
    let total = t + tail;

    let mut prev: Option<(usize, ObjectState)> = None;
    let mut idx = 0;
    let mut t0 = 0;
    while t0 < total {
        let t1 = (t0 + step).min(total);
        while idx < plan.len() && plan[idx].disappear <= t1 {
            idx += 1;
        }
        let cur = plan
            .get(idx)
            .filter(|p| p.appear <= t1)
            .map(|p| (idx, p.obj.state((t1 - p.start) as f64 * 1e-6)));
        if cur != prev {
            cam.step(
                t0,
                t1,
                prev.map(|(i, s)| (&plan[i].obj, s)),
                cur.map(|(i, s)| (&plan[i].obj, s)),
            );
        }
        prev = cur;
        t0 = t1;
    }
    let (noise, hot) = cam.add_noise(total, &mut rng);
    let drops = cam.refractory_drops;
    let events = cam.finish();
    tracing::debug!(
        user,
        lighting = %light.name,
        events = events.len(),
        noise,
        hot,
        refractory_drops = drops,
        "simulated recording"
    );
    Ok(SimRecording {
        events,
        segments: plan
            .iter()
            .map(|p| Segment {
                class: p.class,
                start_us: p.start,
                end_us: p.end,
            })
            .collect(),
        duration_us: total,
    })
}

/// Number of events with `start <= t < end` in time-sorted `t`.
pub fn count_in(t: &[i64], start: i64, end: i64) -> usize {
    t.partition_point(|&v| v < end) - t.partition_point(|&v| v < start)
}

/// Write `bytes` to `path` through a temporary file in the same folder, then rename.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let tmp = tmp_path(path);
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = fs::File::create(&tmp).map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)?;
    drop(f);
    fs::rename(&tmp, path).map_err(io)
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".tmp");
    path.with_file_name(name)
}

/// The label CSV of a recording.
pub fn labels_csv(segments: &[Segment]) -> String {
    let mut s = String::from(LABELS_HEADER);
    s.push('\n');
    for seg in segments {
        s.push_str(&format!(
            "{},{},{}\n",
            seg.class + 1,
            seg.start_us,
            seg.end_us
        ));
    }
    s
}

struct Written {
    stem: String,
    train: bool,
    events: u64,
    sample_events: Vec<u64>,
    duration_us: i64,
}

/// Generate the dataset into `out` (created if missing): for every user and lighting
/// `userNN_<lighting>.aedat` (AEDAT 3.1) and `userNN_<lighting>_labels.csv`, then
/// `trials_to_train.txt`, `trials_to_test.txt` and `gesture_mapping.csv`. Recordings are
/// simulated in parallel; the bytes written do not depend on the number of threads.
pub fn generate(cfg: &SynthConfig, out: &Path) -> Result<Summary, Error> {
    let started = Instant::now();
    cfg.validate()?;
    fs::create_dir_all(out).map_err(|source| Error::Io {
        path: out.to_path_buf(),
        source,
    })?;
    let jobs: Vec<(usize, usize)> = (1..=cfg.users)
        .flat_map(|u| (0..cfg.lightings.len()).map(move |l| (u, l)))
        .collect();
    tracing::info!(
        recordings = jobs.len(),
        classes = cfg.classes,
        per_class = cfg.per_class,
        seed = cfg.seed,
        out = %out.display(),
        "generating synthetic dataset"
    );
    let written: Vec<Written> = jobs
        .par_iter()
        .map(|&(user, li)| -> Result<Written, Error> {
            let rec = simulate_recording(cfg, user, li)?;
            let stem = recording_stem(user, &cfg.lightings[li].name);
            let aedat = out.join(format!("{stem}.aedat"));
            let tmp = tmp_path(&aedat);
            nmoco_events::aedat31::write_file(&tmp, &rec.events, Some(cfg.sensor)).map_err(
                |source| Error::Events {
                    path: aedat.clone(),
                    source,
                },
            )?;
            fs::rename(&tmp, &aedat).map_err(|source| Error::Io {
                path: aedat.clone(),
                source,
            })?;
            let csv = out.join(format!("{stem}_labels.csv"));
            write_atomic(&csv, labels_csv(&rec.segments).as_bytes())?;
            let sample_events = rec
                .segments
                .iter()
                .map(|s| count_in(&rec.events.t, s.start_us, s.end_us) as u64)
                .collect();
            tracing::debug!(file = %aedat.display(), events = rec.events.len(), "wrote recording");
            Ok(Written {
                stem,
                train: user <= cfg.train_users,
                events: rec.events.len() as u64,
                sample_events,
                duration_us: rec.duration_us,
            })
        })
        .collect::<Result<_, _>>()?;

    let mut files = Vec::new();
    let mut train_list = String::new();
    let mut test_list = String::new();
    for w in &written {
        files.push(PathBuf::from(format!("{}.aedat", w.stem)));
        files.push(PathBuf::from(format!("{}_labels.csv", w.stem)));
        let list = if w.train {
            &mut train_list
        } else {
            &mut test_list
        };
        list.push_str(&format!("{}.aedat\n", w.stem));
    }
    for (name, text) in [
        ("trials_to_train.txt", train_list),
        ("trials_to_test.txt", test_list),
    ] {
        write_atomic(&out.join(name), text.as_bytes())?;
        files.push(PathBuf::from(name));
    }
    let mut mapping = String::from("action,label\n");
    for (i, name) in class_names(cfg.classes).iter().enumerate() {
        mapping.push_str(&format!("{name},{}\n", i + 1));
    }
    write_atomic(&out.join("gesture_mapping.csv"), mapping.as_bytes())?;
    files.push(PathBuf::from("gesture_mapping.csv"));

    let per_rec = cfg.samples_per_recording();
    let train_recs = written.iter().filter(|w| w.train).count();
    let all: Vec<u64> = written
        .iter()
        .flat_map(|w| w.sample_events.iter().copied())
        .collect();
    let min = all.iter().copied().min().unwrap_or(0);
    let max = all.iter().copied().max().unwrap_or(0);
    let mean = if all.is_empty() {
        0.0
    } else {
        all.iter().sum::<u64>() as f64 / all.len() as f64
    };
    let summary = Summary {
        out: out.to_path_buf(),
        recordings: written.len(),
        files,
        train_samples: train_recs * per_rec,
        test_samples: (written.len() - train_recs) * per_rec,
        events: written.iter().map(|w| w.events).sum(),
        sample_events: (min, mean, max),
        duration_us: written.iter().map(|w| w.duration_us).sum(),
        elapsed: started.elapsed(),
    };
    tracing::info!(
        recordings = summary.recordings,
        train = summary.train_samples,
        test = summary.test_samples,
        events = summary.events,
        secs = summary.elapsed.as_secs_f64(),
        "synthetic dataset written"
    );
    Ok(summary)
}
