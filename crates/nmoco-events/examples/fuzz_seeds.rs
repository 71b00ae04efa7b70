//! Writes small seed inputs for the fuzz targets: `cargo run -p nmoco-events --example
//! fuzz_seeds -- fuzz/corpus` creates `fuzz/corpus/<target>/seed-*` (not committed).
//! Each seed starts with the option-selector byte the fuzz targets consume.

use nmoco_events::{Compression, Event, Events, SensorSize, aedat2, aedat4, aedat31, nbin};

fn events(n: usize, t0: i64) -> Events {
    (0..n)
        .map(|i| Event {
            t: t0 + 3 * i as i64,
            x: (i * 7 % 128) as u16,
            y: (i * 13 % 128) as u16,
            on: i % 3 == 0,
        })
        .collect()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = std::path::PathBuf::from(std::env::args().nth(1).unwrap_or("fuzz/corpus".into()));
    let ev = events(40, 100);
    let s = Some(SensorSize {
        width: 128,
        height: 128,
    });
    let mut seeds: Vec<(&str, Vec<u8>)> = Vec::new();
    let mut v = Vec::new();
    nbin::write(&mut v, &ev, None)?;
    seeds.push(("nbin", v));
    let mut v = Vec::new();
    nbin::write(&mut v, &events(20, (1 << 23) + 5), None)?;
    seeds.push(("nbin", v));
    let mut v = Vec::new();
    aedat2::write(&mut v, &ev, s)?;
    seeds.push(("aedat2", v));
    let mut v = Vec::new();
    let words: Vec<(u32, u32)> = (0..30u32)
        .map(|i| match i % 5 {
            0 => (0x8000_0C00 | (i << 12), i),
            1 => (0x8000_0000 | (i << 12), i),
            2 => (0x400 | (i << 12), i),
            _ => ((i << 22) | (i << 12) | ((i & 1) << 11), i),
        })
        .collect();
    aedat2::write_raw(&mut v, "eu.seebetter.ini.chips.davis.DAVIS240C", &words)?;
    seeds.push(("aedat2", v));
    let mut v = Vec::new();
    aedat31::write(&mut v, &ev, s)?;
    seeds.push(("aedat31", v));
    let mut v = Vec::new();
    aedat31::write(
        &mut v,
        &events(10, (1 << 31) - 10),
        Some(SensorSize {
            width: 64,
            height: 48,
        }),
    )?;
    let special = aedat31::RawPacket {
        event_type: 0,
        event_source: 1,
        event_size: 8,
        ts_offset: 4,
        ts_overflow: 0,
        capacity: 2,
        number: 2,
        valid: 2,
        payload: vec![1, 0, 0, 0, 5, 0, 0, 0, 3, 0, 0, 0, 6, 0, 0, 0],
    };
    v.extend_from_slice(&special.to_bytes());
    seeds.push(("aedat31", v));
    for c in [Compression::None, Compression::Lz4, Compression::Zstd] {
        let mut v = Vec::new();
        let opts = aedat4::WriteOptions {
            compression: c,
            packet_events: 16,
            extra_packets: vec![(1, "TRIG".into(), aedat4::empty_packet_payload(b"TRIG"))],
            file_data_table: true,
        };
        aedat4::write_with(&mut v, &ev, s, &opts)?;
        seeds.push(("aedat4", v));
    }
    for (i, (target, bytes)) in seeds.iter().enumerate() {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir)?;
        for sel in [0u8, 0x55, 0xAA] {
            let mut b = vec![sel];
            b.extend_from_slice(bytes);
            std::fs::write(dir.join(format!("seed-{i}-{sel:02x}")), b)?;
        }
    }
    println!("wrote {} seeds under {}", seeds.len() * 3, root.display());
    Ok(())
}
