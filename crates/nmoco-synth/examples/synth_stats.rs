//! Print per-class event statistics of one simulated recording, and time it.
//!
//! `cargo run --release -p nmoco-synth --example synth_stats [SEED] [USER] [LIGHTING]`

use std::time::Instant;

use nmoco_synth::{SynthConfig, class_names, count_in, simulate_recording};

fn main() -> Result<(), nmoco_synth::Error> {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let cfg = SynthConfig {
        seed: args.first().copied().unwrap_or(0),
        ..SynthConfig::default()
    };
    let user = args.get(1).copied().unwrap_or(1) as usize;
    let lighting = args.get(2).copied().unwrap_or(0) as usize;
    let start = Instant::now();
    let rec = simulate_recording(&cfg, user, lighting)?;
    let secs = start.elapsed().as_secs_f64();
    let names = class_names(cfg.classes);
    println!(
        "user {user} lighting {lighting}: {} events, {:.1} s recorded, simulated in {secs:.2} s",
        rec.events.len(),
        rec.duration_us as f64 * 1e-6
    );
    let mut in_samples = 0;
    for s in &rec.segments {
        let n = count_in(&rec.events.t, s.start_us, s.end_us);
        in_samples += n;
        let on = (0..rec.events.len())
            .filter(|&i| {
                rec.events.t[i] >= s.start_us && rec.events.t[i] < s.end_us && rec.events.on[i]
            })
            .count();
        println!(
            "{:>22} {:>4} ms {:>7} events ({:.0} % ON)",
            names[s.class],
            (s.end_us - s.start_us) / 1000,
            n,
            100.0 * on as f64 / n.max(1) as f64
        );
    }
    println!("events in gaps: {}", rec.events.len() - in_samples);
    Ok(())
}
