//! Event-level augmentations.

use nmoco_events::{Events, SensorSize};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{AugmentConfig, bernoulli_positions, chance, crop_rect, cutout_rect, shift, uniform};

/// Event-level counterpart of [`two_views`] (same seeding rule), built on [`augment_events`].
pub fn two_views_events(
    ev: &Events,
    sensor: SensorSize,
    cfg: &AugmentConfig,
    seed: u64,
) -> (Events, Events) {
    let view = |v: u64| {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(v);
        augment_events(ev, sensor, cfg, &mut rng)
    };
    (view(0), view(1))
}

/// Applies the event-level augmentations of `cfg` (see the module docs for the order). The
/// output keeps file order except after `time_jitter_us > 0`, which re-sorts stably by time.
/// Events outside `sensor` (and inconsistent trailing columns) are removed first; every output
/// event is inside `sensor`. Crop rescales the crop window back to the full sensor
/// (`x' = floor((x − x0)·W / cw)`), rotation rounds to the nearest pixel and removes events
/// rotated off the sensor, cutout removes the events inside its square.
pub fn augment_events<R: Rng + ?Sized>(
    ev: &Events,
    sensor: SensorSize,
    cfg: &AugmentConfig,
    rng: &mut R,
) -> Events {
    let (w, h) = (sensor.width as usize, sensor.height as usize);
    let n = ev.t.len().min(ev.x.len()).min(ev.y.len()).min(ev.on.len());
    let mut out = Events::with_capacity(n);
    for i in 0..n {
        if (ev.x[i] as usize) < w && (ev.y[i] as usize) < h {
            out.t.push(ev.t[i]);
            out.x.push(ev.x[i]);
            out.y.push(ev.y[i]);
            out.on.push(ev.on[i]);
        }
    }
    if w == 0 || h == 0 {
        return out;
    }
    if chance(rng, cfg.drop_p) {
        let mut keep = vec![true; out.t.len()];
        bernoulli_positions(rng, keep.len(), cfg.drop_rate, |i| keep[i] = false);
        out = filter(&out, |i, x, y| keep[i].then_some((x, y)));
    }
    if cfg.time_jitter_us > 0 {
        let j = cfg.time_jitter_us;
        for t in out.t.iter_mut() {
            *t = t.saturating_add(rng.random_range(-j..=j));
        }
        let mut idx: Vec<usize> = (0..out.t.len()).collect();
        idx.sort_by_key(|&i| out.t[i]);
        out = Events {
            t: idx.iter().map(|&i| out.t[i]).collect(),
            x: idx.iter().map(|&i| out.x[i]).collect(),
            y: idx.iter().map(|&i| out.y[i]).collect(),
            on: idx.iter().map(|&i| out.on[i]).collect(),
        };
    }
    if chance(rng, cfg.crop_p) {
        let (x0, y0, cw, ch) = crop_rect(rng, cfg, w, h);
        out = filter(&out, |_, x, y| {
            let (x, y) = (x as usize, y as usize);
            (x >= x0 && x < x0 + cw && y >= y0 && y < y0 + ch)
                .then(|| (((x - x0) * w / cw) as u16, ((y - y0) * h / ch) as u16))
        });
    }
    if cfg.hflip && chance(rng, cfg.hflip_p) {
        for x in out.x.iter_mut() {
            *x = (w - 1 - *x as usize) as u16;
        }
    }
    if chance(rng, cfg.translate_p) {
        let dx = shift(rng, cfg.translate_px).rem_euclid(w as i64) as usize;
        let dy = shift(rng, cfg.translate_px).rem_euclid(h as i64) as usize;
        for x in out.x.iter_mut() {
            *x = ((*x as usize + dx) % w) as u16;
        }
        for y in out.y.iter_mut() {
            *y = ((*y as usize + dy) % h) as u16;
        }
    }
    if chance(rng, cfg.rotate_p) {
        let theta = uniform(rng, -cfg.rotate_deg, cfg.rotate_deg).to_radians();
        let (s, c) = theta.sin_cos();
        let (cx, cy) = ((w as f64 - 1.0) / 2.0, (h as f64 - 1.0) / 2.0);
        out = filter(&out, |_, x, y| {
            // Forward rotation (the inverse of the frame-level sampling map).
            let (dx, dy) = (x as f64 - cx, y as f64 - cy);
            let nx = (c * dx - s * dy + cx).round();
            let ny = (s * dx + c * dy + cy).round();
            (nx >= 0.0 && ny >= 0.0 && nx < w as f64 && ny < h as f64)
                .then_some((nx as u16, ny as u16))
        });
    }
    if chance(rng, cfg.cutout_p) {
        let (x0, x1, y0, y1) = cutout_rect(rng, cfg.cutout_frac, w, h);
        out = filter(&out, |_, x, y| {
            let (xu, yu) = (x as usize, y as usize);
            (!(xu >= x0 && xu < x1 && yu >= y0 && yu < y1)).then_some((x, y))
        });
    }
    out
}

/// Keeps event `i` with new coordinates when `f(i, x, y)` returns them.
fn filter(ev: &Events, mut f: impl FnMut(usize, u16, u16) -> Option<(u16, u16)>) -> Events {
    let mut out = Events::with_capacity(ev.t.len());
    for i in 0..ev.t.len() {
        if let Some((x, y)) = f(i, ev.x[i], ev.y[i]) {
            out.t.push(ev.t[i]);
            out.x.push(x);
            out.y.push(y);
            out.on.push(ev.on[i]);
        }
    }
    out
}
