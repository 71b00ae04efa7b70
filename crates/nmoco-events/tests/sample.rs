//! The committed sample recording decodes to the expected digest, and regenerating it
//! reproduces the same bytes.

mod common;

use std::path::PathBuf;

use nmoco_events::{Format, SensorSize, Summary, read_file, sha256_txyp};

const SHA256_TXYP: &str = "48899b96c532c74a0c9dd1ca529a094bd75ded0e3483e16f2295d15f55af6fac";

fn sample_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../datasets/sample/sample.aedat")
}

#[test]
fn committed_sample_decodes_to_the_expected_digest() {
    let rec = read_file(&sample_path(), None).unwrap();
    assert_eq!(rec.events.len(), 4000);
    assert_eq!(
        rec.sensor,
        Some(SensorSize {
            width: 128,
            height: 128
        })
    );
    assert!(rec.skipped.is_empty());
    assert_eq!(sha256_txyp(&rec.events), SHA256_TXYP);
    let s = Summary::new(Format::Aedat31, &rec);
    assert_eq!(s.on + s.off, 4000);
    assert!(s.x_max.unwrap() < 128 && s.y_min.unwrap() >= 32 && s.y_max.unwrap() < 96);
}

#[test]
fn regenerating_the_sample_reproduces_its_bytes() {
    let ev = common::sample::sample_events();
    assert_eq!(sha256_txyp(&ev), SHA256_TXYP);
    let mut bytes = Vec::new();
    nmoco_events::aedat31::write(&mut bytes, &ev, Some(common::sample::SENSOR)).unwrap();
    let committed = std::fs::read(sample_path()).unwrap();
    assert_eq!(bytes, committed, "regenerate with the make_sample example");
}
