//! Fake dataset roots in the exact real layouts, written with the nmoco-events writers, and
//! the loader read back as plain vectors; shared by the integration tests.

use std::path::Path;
use std::sync::Arc;

use candle_core::Device;
use nmoco_data::{DataConfig, Dataset, DatasetKind, Loader, LoaderConfig};
use nmoco_events::{Events, SensorSize};
use nmoco_frames::{AugmentConfig, FrameConfig, Resize};

pub const S128: SensorSize = SensorSize {
    width: 128,
    height: 128,
};

/// `n` events with increasing time from `t0`, coordinates derived from `tag` so files differ.
pub fn events(n: usize, tag: u64, t0: i64, w: u16, h: u16) -> Events {
    let mut ev = Events::new();
    let mut z = tag.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for i in 0..n {
        z ^= z << 13;
        z ^= z >> 7;
        z ^= z << 17;
        ev.t.push(t0 + 10 * i as i64);
        ev.x.push((z % w as u64) as u16);
        ev.y.push(((z >> 20) % h as u64) as u16);
        ev.on.push(z & (1 << 40) != 0);
    }
    ev
}

pub fn small_frames(t: usize, hw: usize) -> FrameConfig {
    FrameConfig {
        t,
        height: hw,
        width: hw,
        resize: Resize::Events,
        ..FrameConfig::default()
    }
}

pub fn write_cifar(root: &Path, per_class: usize) {
    for (c, class) in nmoco_data::CIFAR10_CLASSES.iter().enumerate() {
        let d = root.join(class);
        std::fs::create_dir_all(&d).unwrap();
        for i in 0..per_class {
            // Event count encodes the file number, so tests can tell files apart.
            let ev = events(10 + i, (c * 1000 + i) as u64, 0, 128, 128);
            nmoco_events::aedat2::write_file(
                &d.join(format!("cifar10_{class}_{i}.aedat")),
                &ev,
                Some(S128),
            )
            .unwrap();
        }
    }
}

pub fn cifar_cfg(root: &Path) -> DataConfig {
    DataConfig {
        dataset: DatasetKind::Cifar10Dvs,
        root: root.to_path_buf(),
        frames: small_frames(2, 16),
        ..DataConfig::default()
    }
}

/// A batch as plain vectors: x, x2 (empty without a second view), labels, indices.
pub type Flat = (Vec<f32>, Vec<f32>, Vec<u32>, Vec<usize>);

pub fn collect(ds: &Arc<Dataset>, lc: &LoaderConfig, aug: &AugmentConfig) -> Vec<Flat> {
    let loader = Loader::new(ds.clone(), lc, aug, &Device::Cpu);
    let nb = loader.num_batches();
    let out: Vec<_> = loader
        .map(|b| {
            let b = b.unwrap();
            let x = b.x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let x2 =
                b.x2.map(|t| t.flatten_all().unwrap().to_vec1::<f32>().unwrap())
                    .unwrap_or_default();
            (x, x2, b.labels.to_vec1::<u32>().unwrap(), b.indices)
        })
        .collect();
    assert_eq!(out.len(), nb);
    out
}
