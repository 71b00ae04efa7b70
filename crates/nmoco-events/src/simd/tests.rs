//! The fast paths against the reference scalar path, on random records of every format.

use super::{FORCE_PATH, Path};
use crate::core::{AnyCore, Meta, decode_all};
use crate::format::{Dvs128Polarity, Format, NbinOverflow, ReadOptions};
use crate::{Event, Events, Skipped};

/// xorshift64*: reproducible without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

const PATHS: [Path; 4] = [
    Path {
        simd: false,
        stream: false,
    },
    Path {
        simd: true,
        stream: false,
    },
    Path {
        simd: false,
        stream: true,
    },
    Path {
        simd: true,
        stream: true,
    },
];

/// Record counts around the SIMD group (16) and block ([`super::BLOCK`]) sizes.
fn counts(rng: &mut Rng) -> Vec<usize> {
    let mut v = vec![0, 1, 15, 16, 17, 33, 2047, 2048, 2049, 4096 + 31, 7000];
    v.extend((0..4).map(|_| rng.below(6000) as usize));
    v
}

/// How often records that are not events (markers, special words, invalid events) occur.
#[derive(Clone, Copy, Debug)]
enum Flags {
    None,
    One,
    Dense,
}

/// Events already in the output, with dirty spare capacity behind them: `k` events (so
/// the columns' write positions have every alignment) out of a longer random sequence.
fn prefill(rng: &mut Rng, k: usize) -> Events {
    let mut e: Events = (0..k + 100)
        .map(|_| Event {
            t: rng.next() as i64,
            x: rng.next() as u16,
            y: rng.next() as u16,
            on: rng.next() & 1 == 1,
        })
        .collect();
    e.t.truncate(k);
    e.x.truncate(k);
    e.y.truncate(k);
    e.on.truncate(k);
    e
}

fn decode(
    format: Format,
    opts: &ReadOptions,
    bytes: &[u8],
    out: &Events,
    path: Path,
) -> (Events, Skipped) {
    FORCE_PATH.set(Some(path));
    let mut out = out.clone();
    let mut meta = Meta::default();
    let mut core = AnyCore::new(format, opts);
    let res = decode_all(&mut core, bytes, &mut out, &mut meta);
    FORCE_PATH.set(None);
    res.unwrap();
    (out, meta.skipped)
}

/// Decodes `bytes` on every path, with a prefilled output, and checks all agree.
fn check_all(rng: &mut Rng, format: Format, opts: &ReadOptions, bytes: &[u8], what: &str) {
    let k = rng.below(40) as usize;
    let pre = prefill(rng, k);
    let reference = decode(format, opts, bytes, &pre, PATHS[0]);
    assert_eq!(reference.0.t[..k], pre.t[..], "{what}: prefix kept");
    for &path in &PATHS[1..] {
        let got = decode(format, opts, bytes, &pre, path);
        assert!(got.0.columns_consistent(), "{what} {path:?}");
        assert_eq!(got.0.t, reference.0.t, "{what} {path:?}: t");
        assert_eq!(got.0.x, reference.0.x, "{what} {path:?}: x");
        assert_eq!(got.0.y, reference.0.y, "{what} {path:?}: y");
        assert_eq!(got.0.on, reference.0.on, "{what} {path:?}: on");
        assert_eq!(got.1, reference.1, "{what} {path:?}: skipped");
    }
}

fn note_simd() {
    #[cfg(target_arch = "x86_64")]
    if !super::avx512::has_avx512vbmi() {
        eprintln!("note: no AVX-512 VBMI here; the SIMD kernels are not exercised");
    }
}

#[test]
fn nbin_fast_paths_match_scalar() {
    note_simd();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for n in counts(&mut rng) {
        for flags in [Flags::None, Flags::One, Flags::Dense] {
            let mut b = rng.bytes(5 * n);
            for r in b.chunks_exact_mut(5) {
                match flags {
                    Flags::None | Flags::One if r[1] == 240 => r[1] = 241,
                    Flags::Dense if rng.below(40) == 0 => r[1] = 240,
                    _ => {}
                }
            }
            if let (Flags::One, true) = (flags, n > 0) {
                let i = rng.below(n as u64) as usize;
                b[5 * i + 1] = 240;
            }
            for ovf in [
                NbinOverflow::Tonic,
                NbinOverflow::Wrap23,
                NbinOverflow::Ignore,
            ] {
                let opts = ReadOptions {
                    nbin_overflow: ovf,
                    ..ReadOptions::with_format(Format::NBin)
                };
                let what = format!("nbin n={n} {flags:?} {ovf:?}");
                check_all(&mut rng, Format::NBin, &opts, &b, &what);
            }
        }
    }
}

#[test]
fn aedat2_fast_paths_match_scalar() {
    note_simd();
    let mut rng = Rng(0x0123_4567_89AB_CDEF);
    for n in counts(&mut rng) {
        for flags in [Flags::None, Flags::One, Flags::Dense] {
            let mut b = crate::aedat2::MAGIC.as_bytes().to_vec();
            b.extend_from_slice(b"# AEChip: ch.unizh.ini.jaer.chip.retina.DVS128\r\n");
            let h = b.len();
            b.extend(rng.bytes(8 * n));
            for r in b[h..].chunks_exact_mut(8) {
                match flags {
                    Flags::None | Flags::One => {
                        r[0] &= 0x7F;
                        r[2] &= 0x7F;
                    }
                    Flags::Dense if rng.below(8) != 0 => {
                        r[0] &= 0x7F;
                        r[2] &= 0x7F;
                    }
                    Flags::Dense => {}
                }
            }
            if let (Flags::One, true) = (flags, n > 0) {
                let i = rng.below(n as u64) as usize;
                b[h + 8 * i + 2 * rng.below(2) as usize] |= 0x80;
            }
            for keep_special in [false, true] {
                for pol in [Dvs128Polarity::Bit0On, Dvs128Polarity::Jaer] {
                    let opts = ReadOptions {
                        keep_special,
                        dvs128_polarity: pol,
                        ..ReadOptions::with_format(Format::Aedat2)
                    };
                    let what = format!("aedat2 n={n} {flags:?} keep={keep_special} {pol:?}");
                    check_all(&mut rng, Format::Aedat2, &opts, &b, &what);
                }
            }
        }
    }
}

/// An AEDAT 3.1 file of polarity packets holding `n` events in all, of random sizes, with
/// random overflow counters and capacity slack; one packet of stride 12 (the generic path)
/// and one non-polarity packet are mixed in.
fn aedat31_file(rng: &mut Rng, n: usize, flags: Flags) -> Vec<u8> {
    let mut b = crate::aedat31::MAGIC.as_bytes().to_vec();
    b.extend_from_slice(b"#Source 1: DVS128\r\n#!END-HEADER\r\n");
    let mut left = n;
    let mut one = match flags {
        Flags::One if n > 0 => Some(rng.below(n as u64) as usize),
        _ => None,
    };
    let mut index = 0usize;
    let mut packet = 0;
    while left > 0 || packet < 2 {
        let (ty, stride, tso) = match packet {
            1 => (1i16, 12i32, 8i32),
            2 => (3, 40, 36),
            _ => (1, 8, 4),
        };
        let number = if ty == 1 {
            (rng.below(5000) as usize + 1).min(left)
        } else {
            3
        };
        let capacity = number + rng.below(3) as usize;
        let ovf = rng.next() as u32;
        let fields = [
            stride,
            tso,
            ovf as i32,
            capacity as i32,
            number as i32,
            number as i32,
        ];
        b.extend_from_slice(&ty.to_le_bytes());
        b.extend_from_slice(&0i16.to_le_bytes());
        for f in fields {
            b.extend_from_slice(&f.to_le_bytes());
        }
        for _ in 0..capacity {
            let mut e = rng.bytes(stride as usize);
            let valid = match flags {
                Flags::None => true,
                Flags::One => one != Some(index),
                Flags::Dense => rng.below(8) != 0,
            };
            e[0] = (e[0] & !1) | valid as u8;
            b.extend_from_slice(&e);
            if ty == 1 {
                index += 1;
            }
        }
        if ty == 1 {
            left -= number;
            if one.is_some_and(|i| i < index) {
                one = None;
            }
        }
        packet += 1;
    }
    b
}

#[test]
fn aedat31_fast_paths_match_scalar() {
    note_simd();
    let mut rng = Rng(0xDEAD_BEEF_CAFE_F00D);
    for n in counts(&mut rng) {
        for flags in [Flags::None, Flags::One, Flags::Dense] {
            let b = aedat31_file(&mut rng, n, flags);
            for keep_invalid in [false, true] {
                let opts = ReadOptions {
                    keep_invalid,
                    ..ReadOptions::with_format(Format::Aedat31)
                };
                let what = format!("aedat31 n={n} {flags:?} keep={keep_invalid}");
                check_all(&mut rng, Format::Aedat31, &opts, &b, &what);
            }
        }
    }
}

/// The default choice on a large file (streamed, SIMD where available) through the public
/// entry point equals the reference path.
#[test]
fn large_inputs_default_path_matches_scalar() {
    let mut rng = Rng(42);
    let n = super::STREAM_MIN_OUTPUT / 13 + 12_345;
    let mut b = rng.bytes(5 * n);
    for r in b.chunks_exact_mut(5) {
        if r[1] == 240 && rng.below(64) != 0 {
            r[1] = 7;
        }
    }
    let opts = ReadOptions::with_format(Format::NBin);
    let meta = Meta {
        whole_input: b.len(),
        ..Meta::default()
    };
    let chosen = super::choose(&crate::nbin::Decoder::new(&opts), &meta);
    assert_eq!(
        chosen.stream, chosen.simd,
        "large inputs stream whenever SIMD runs"
    );
    let mut rec = crate::Recording::default();
    crate::decode_into(&b, Format::NBin, &opts, &mut rec).unwrap();
    let reference = decode(Format::NBin, &opts, &b, &Events::new(), PATHS[0]);
    assert_eq!(rec.events, reference.0);
    assert_eq!(rec.skipped, reference.1);
    assert!(rec.skipped["overflow"] > 0);
}

/// The N-binary → tonic-records kernel loop against the scalar loop, its twin, from overflow
/// bases up to and past the largest the kernel takes (`TONIC_MAX_BASE`, where it hands the
/// rest to the scalar loop), with markers frequent and rare, and without marker handling.
#[cfg(target_arch = "x86_64")]
#[test]
fn tonic_groups_agree_with_scalar_near_max_base() {
    use super::avx512::TONIC_MAX_BASE;
    use crate::nbin::{OVERFLOW_Y, RECORD, TONIC_RECORD, scalar_records};
    let Some(kernel) = super::TonicEight::detect() else {
        return;
    };
    let inc = 1i64 << 23;
    let mut rng = Rng(0x7031);
    for start in [
        0,
        TONIC_MAX_BASE - 3 * inc,
        TONIC_MAX_BASE - 1,
        TONIC_MAX_BASE,
        TONIC_MAX_BASE + 1,
    ] {
        for every in [3u64, 40, 0] {
            let n = 301;
            let mut data = rng.bytes(n * RECORD);
            for r in data.chunks_exact_mut(RECORD) {
                if every > 0 && rng.below(every) == 0 {
                    r[1] = OVERFLOW_Y;
                } else if r[1] == OVERFLOW_Y {
                    r[1] = 0;
                }
            }
            let watch = every > 0;
            let run = |out: &mut [u8], base: &mut i64, simd: bool| {
                let (i, k, m) = if simd {
                    kernel.run_groups(&data, out, 0, 0, base, inc, watch)
                } else {
                    (0, 0, 0)
                };
                let (k2, m2) = if watch {
                    scalar_records::<true>(
                        &data[i * RECORD..],
                        inc,
                        base,
                        &mut out[k * TONIC_RECORD..],
                    )
                } else {
                    scalar_records::<false>(
                        &data[i * RECORD..],
                        inc,
                        base,
                        &mut out[k * TONIC_RECORD..],
                    )
                };
                (k + k2, m + m2)
            };
            let (mut want, mut got) = (vec![0u8; n * TONIC_RECORD], vec![0xAAu8; n * TONIC_RECORD]);
            let (mut base_w, mut base_g) = (start, start);
            let (kw, mw) = run(&mut want, &mut base_w, false);
            let (kg, mg) = run(&mut got, &mut base_g, true);
            assert_eq!(
                (kg, mg, base_g),
                (kw, mw, base_w),
                "start {start}, every {every}"
            );
            assert!(
                got[..kg * TONIC_RECORD] == want[..kw * TONIC_RECORD],
                "start {start}, every {every}"
            );
        }
    }
}
