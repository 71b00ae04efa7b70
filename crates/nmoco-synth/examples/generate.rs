//! Generate the default synthetic dataset without building the `nmoco` binary (which links
//! candle): `cargo run --release -p nmoco-synth --example generate [OUT] [SEED]`.

use std::path::PathBuf;

use nmoco_synth::{SynthConfig, generate};

fn main() -> Result<(), nmoco_synth::Error> {
    let mut args = std::env::args().skip(1);
    let out = PathBuf::from(
        args.next()
            .unwrap_or_else(|| "datasets/synthetic/generated".into()),
    );
    let seed = args.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let cfg = SynthConfig {
        seed,
        ..SynthConfig::default()
    };
    let s = generate(&cfg, &out)?;
    let (min, mean, max) = s.sample_events;
    println!(
        "{} recordings, {} files, {} train / {} test samples, {} events, events/sample min {min} mean {mean:.0} max {max}, {:.1} s recorded, {:.2} s elapsed",
        s.recordings,
        s.files.len(),
        s.train_samples,
        s.test_samples,
        s.events,
        s.duration_us as f64 * 1e-6,
        s.elapsed.as_secs_f64()
    );
    Ok(())
}
