//! `nmoco make-synthetic [--out DIR] [--seed N] [--classes K] [--per-class N] ...`: generate
//! the synthetic event dataset (DVS128 Gesture layout). See docs/synthetic.md.

use std::path::PathBuf;

use anyhow::Context;
use nmoco_synth::{SynthConfig, generate};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Output folder (created if missing)
    #[arg(long, default_value = "datasets/synthetic/generated")]
    pub out: PathBuf,
    /// Dataset seed: the same seed gives byte-identical files
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Number of classes K (2..=12); labels in the CSVs are 1..=K
    #[arg(long, default_value_t = SynthConfig::default().classes)]
    pub classes: usize,
    /// Samples of each class per recording (user × lighting)
    #[arg(long, default_value_t = SynthConfig::default().per_class)]
    pub per_class: usize,
    /// Number of users (each recorded under every lighting)
    #[arg(long, default_value_t = SynthConfig::default().users)]
    pub users: usize,
    /// The first N users form the train split, the rest the test split
    #[arg(long, default_value_t = SynthConfig::default().train_users)]
    pub train_users: usize,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let cfg = SynthConfig {
        classes: args.classes,
        per_class: args.per_class,
        users: args.users,
        train_users: args.train_users,
        seed: args.seed,
        ..SynthConfig::default()
    };
    cfg.validate()?;
    // Threads: rayon's default (all cores, or RAYON_NUM_THREADS); the output does not depend
    // on it.
    let summary = generate(&cfg, &args.out)
        .with_context(|| format!("generating the synthetic dataset in {}", args.out.display()))?;
    let (min, mean, max) = summary.sample_events;
    println!("out:            {}", summary.out.display());
    println!(
        "recordings:     {} ({} users x {} lightings)",
        summary.recordings,
        cfg.users,
        cfg.lightings.len()
    );
    println!("files:          {}", summary.files.len());
    println!(
        "samples:        {} train, {} test ({} classes)",
        summary.train_samples, summary.test_samples, cfg.classes
    );
    println!("events:         {}", summary.events);
    println!("events/sample:  min {min}, mean {mean:.0}, max {max}");
    println!("recorded time:  {:.1} s", summary.duration_us as f64 * 1e-6);
    println!("elapsed:        {:.2} s", summary.elapsed.as_secs_f64());
    Ok(())
}
