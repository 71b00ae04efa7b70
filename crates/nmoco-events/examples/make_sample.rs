//! Regenerates the committed sample recording:
//! `cargo run -p nmoco-events --example make_sample -- datasets/sample/sample.aedat`.

#[path = "../tests/common/sample.rs"]
mod sample;

fn main() -> Result<(), nmoco_events::Error> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "datasets/sample/sample.aedat".into());
    let ev = sample::sample_events();
    nmoco_events::aedat31::write_file(path.as_ref(), &ev, Some(sample::SENSOR))?;
    println!(
        "{path}: {} events, sha256_txyp {}",
        ev.len(),
        nmoco_events::sha256_txyp(&ev)
    );
    Ok(())
}
