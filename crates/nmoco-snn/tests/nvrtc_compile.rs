//! Every CUDA kernel variant compiles with NVRTC to PTX for sm_80 and sm_90 (no GPU and no
//! `cuda` feature needed), and, where `ptxas` is available (`$NMOCO_PTXAS`, else `ptxas` on the
//! PATH), assembles; registers and spills are reported.
//!
//! NVRTC is loaded from `$NMOCO_NVRTC_LIB` (else the default library names). Without NVRTC the
//! test reports that it could not run and passes, unless `NMOCO_REQUIRE_NVRTC=1`.

use std::path::PathBuf;
use std::process::Command;

use nmoco_snn::cuda_variants::{KERNELS, LIF_SRC, Variant};
use nmoco_snn::nvrtc::Nvrtc;
use rayon::prelude::*;

const ARCHS: [u32; 2] = [80, 90];
const STATIC_TS: [u32; 2] = [8, nmoco_snn::cuda_variants::MAX_STATIC_T];

/// Per kernel: name, registers, spill store bytes, spill load bytes.
type KernelStats = Vec<(String, u32, u32, u32)>;

fn ptxas() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("NMOCO_PTXAS")
        && !p.is_empty()
    {
        return Some(PathBuf::from(p));
    }
    let ok = Command::new("ptxas").arg("--version").output().ok()?;
    ok.status.success().then(|| PathBuf::from("ptxas"))
}

/// `(registers, spill stores, spill loads)` per kernel from `ptxas -v` output.
fn parse_ptxas(stderr: &str) -> KernelStats {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut spills = (0, 0);
    for line in stderr.lines() {
        if let Some(i) = line.find("Compiling entry function '") {
            let rest = &line[i + 26..];
            current = rest.split('\'').next().unwrap_or("").to_string();
        }
        if line.contains("bytes spill stores") {
            let nums: Vec<u32> = line
                .split(|c: char| !c.is_ascii_digit())
                .filter_map(|s| s.parse().ok())
                .collect();
            // "N bytes stack frame, S bytes spill stores, L bytes spill loads"
            if nums.len() >= 3 {
                spills = (nums[1], nums[2]);
            }
        }
        if let Some(i) = line.find("Used ") {
            let regs = line[i + 5..]
                .split_whitespace()
                .next()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            out.push((current.clone(), regs, spills.0, spills.1));
        }
    }
    out
}

#[test]
fn every_kernel_variant_compiles() {
    let required = std::env::var("NMOCO_REQUIRE_NVRTC").is_ok_and(|v| v == "1");
    let nvrtc = match Nvrtc::load() {
        Ok(n) => n,
        Err(e) => {
            assert!(!required, "NMOCO_REQUIRE_NVRTC=1 but NVRTC is missing: {e}");
            println!("nvrtc_compile: could not run, NVRTC not found ({e}); set NMOCO_NVRTC_LIB");
            return;
        }
    };
    // Every kernel the Rust side names is defined in the source.
    for k in KERNELS {
        assert!(
            LIF_SRC
                .lines()
                .any(|l| l.contains("__global__ void") && l.contains(&format!(" {k}("))),
            "kernel {k} missing from lif.cu"
        );
    }
    let ptxas = ptxas();
    let dir = tempfile::tempdir().expect("tempdir");
    let variants = Variant::all();
    // Any-T kernels for every architecture; fixed-T kernels (registers hold the trace) at a
    // typical T and at the largest one, where register pressure is highest.
    let jobs: Vec<(Variant, u32)> = variants
        .iter()
        .flat_map(|v| {
            ARCHS
                .iter()
                .map(move |a| (*v, *a))
                .chain(STATIC_TS.iter().map(|t| (v.with_t_static(*t), 90)))
        })
        .collect();
    let results: Vec<Result<(String, u32, KernelStats), String>> = jobs
        .par_iter()
        .map(|(v, arch)| {
            let name = v.module_name();
            let ptx = nvrtc
                .compile_ptx(&v.source(), &name, &v.options(*arch))
                .map_err(|e| format!("{name} sm_{arch}: {e}"))?;
            for k in KERNELS {
                if !ptx.contains(&format!(".entry {k}(")) {
                    return Err(format!("{name} sm_{arch}: no entry {k} in PTX"));
                }
            }
            let mut stats = Vec::new();
            if let Some(ptxas) = &ptxas {
                let file = dir.path().join(format!("{name}_sm{arch}.ptx"));
                std::fs::write(&file, &ptx).map_err(|e| e.to_string())?;
                let out = Command::new(ptxas)
                    .arg(format!("-arch=sm_{arch}"))
                    .arg("-v")
                    .arg(&file)
                    .arg("-o")
                    .arg(file.with_extension("cubin"))
                    .output()
                    .map_err(|e| format!("ptxas: {e}"))?;
                let log = String::from_utf8_lossy(&out.stderr).into_owned();
                if !out.status.success() {
                    return Err(format!("{name} sm_{arch}: ptxas failed: {log}"));
                }
                stats = parse_ptxas(&log);
                if stats.len() != KERNELS.len() {
                    return Err(format!("{name} sm_{arch}: unexpected ptxas output: {log}"));
                }
            }
            Ok((name, *arch, stats))
        })
        .collect();
    let (major, minor) = nvrtc.version();
    let mut failures = Vec::new();
    let mut max_regs = 0;
    let mut max_regs_by_t = std::collections::BTreeMap::<u32, u32>::new();
    let mut spilling = Vec::new();
    for r in &results {
        match r {
            Ok((name, arch, stats)) => {
                let t = name
                    .rsplit_once("_t")
                    .and_then(|(_, t)| t.parse::<u32>().ok())
                    .unwrap_or(0);
                for (k, regs, st, ld) in stats {
                    max_regs = max_regs.max(*regs);
                    let m = max_regs_by_t.entry(t).or_default();
                    *m = (*m).max(*regs);
                    if *st > 0 || *ld > 0 {
                        spilling.push(format!("{name} sm_{arch} {k}: {st} B stores, {ld} B loads"));
                    }
                }
            }
            Err(e) => failures.push(e.clone()),
        }
    }
    println!(
        "nvrtc_compile: NVRTC {major}.{minor} ({}), {} variants x ({:?} + fixed T {:?} on sm_90) = {} modules compiled",
        nvrtc.path(),
        variants.len(),
        ARCHS,
        STATIC_TS,
        results.len() - failures.len()
    );
    match &ptxas {
        Some(p) => println!(
            "nvrtc_compile: ptxas {}: max {max_regs} registers per thread (by fixed T, 0 = any: {max_regs_by_t:?}), spills: {}",
            p.display(),
            if spilling.is_empty() {
                "none".to_string()
            } else {
                spilling.join("; ")
            }
        ),
        None => println!("nvrtc_compile: no ptxas found, PTX not assembled"),
    }
    if let Some(Ok((name, arch, stats))) = results.first() {
        for (k, regs, st, ld) in stats {
            println!("  {name} sm_{arch} {k}: {regs} registers, spill {st}/{ld} B");
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// A broken source must fail (the test above can fail).
#[test]
fn a_broken_kernel_is_reported() {
    let nvrtc = match Nvrtc::load() {
        Ok(n) => n,
        Err(e) => {
            let required = std::env::var("NMOCO_REQUIRE_NVRTC").is_ok_and(|v| v == "1");
            assert!(!required, "NMOCO_REQUIRE_NVRTC=1 but NVRTC is missing: {e}");
            println!("nvrtc_compile: could not run, NVRTC not found ({e})");
            return;
        }
    };
    let v = Variant::all()[0];
    let src = format!("{}\nthis is not cuda;", v.source());
    let err = nvrtc.compile_ptx(&src, "broken", &v.options(80));
    assert!(err.is_err());
}

/// The max-pool kernels compile for every storage dtype and architecture, and define every
/// entry point the Rust side names.
#[test]
fn every_pool_variant_compiles() {
    use nmoco_snn::cuda_variants::{
        KernelDtype, POOL_KERNELS, POOL_SRC, pool_module_name, pool_options, pool_source,
    };
    let nvrtc = match Nvrtc::load() {
        Ok(n) => n,
        Err(e) => {
            let required = std::env::var("NMOCO_REQUIRE_NVRTC").is_ok_and(|v| v == "1");
            assert!(!required, "NMOCO_REQUIRE_NVRTC=1 but NVRTC is missing: {e}");
            println!("nvrtc_compile: could not run, NVRTC not found ({e})");
            return;
        }
    };
    for k in POOL_KERNELS {
        assert!(
            POOL_SRC
                .lines()
                .any(|l| l.contains("__global__ void") && l.contains(&format!(" {k}("))),
            "kernel {k} missing from pool.cu"
        );
    }
    let mut n = 0;
    for dtype in KernelDtype::ALL {
        for arch in ARCHS {
            let name = pool_module_name(dtype);
            let ptx = nvrtc
                .compile_ptx(&pool_source(), &name, &pool_options(dtype, arch))
                .unwrap_or_else(|e| panic!("{name} sm_{arch}: {e}"));
            for k in POOL_KERNELS {
                assert!(
                    ptx.contains(&format!(".entry {k}(")),
                    "{name} sm_{arch}: no {k}"
                );
            }
            n += 1;
        }
    }
    println!("nvrtc_compile: {n} max-pool modules compiled");
}

/// The PTX of entry `k` in `ptx` (up to the next entry).
fn entry_ptx<'a>(ptx: &'a str, k: &str) -> &'a str {
    let start = ptx
        .find(&format!(".entry {k}("))
        .unwrap_or_else(|| panic!("no entry {k}"));
    let rest = &ptx[start + 1..];
    let end = rest.find(".entry ").map_or(rest.len(), |e| e + 1);
    &ptx[start..start + end]
}

/// Widths in bytes of the global loads and stores of a PTX entry (`ld.global.u32` → 4,
/// `ld.global.nc.v2.f32` → 8, ...).
fn global_access_widths(entry: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for line in entry.lines() {
        let op = line.split_whitespace().next().unwrap_or("");
        if !(op.starts_with("ld.global") || op.starts_with("st.global")) {
            continue;
        }
        let parts: Vec<&str> = op.split('.').collect();
        let lanes = if parts.contains(&"v4") {
            4
        } else if parts.contains(&"v2") {
            2
        } else {
            1
        };
        let ty = parts.last().copied().unwrap_or("");
        let bits: u32 = ty[1..].parse().unwrap_or(0);
        out.push(lanes * bits / 8);
    }
    out
}

/// The two-neuron kernels move two elements per global access (4 B for f16/bf16, 8 B for f32)
/// where the one-neuron kernels move one: checked on the PTX of the default LIF (no PLIF `w`
/// load) with T fixed (no f32 trace buffer), forward and backward, every storage dtype.
#[test]
fn two_neuron_kernels_use_two_element_accesses() {
    use nmoco_snn::cuda_variants::{
        KERNEL_BWD, KERNEL_BWD_V2, KERNEL_FWD, KERNEL_FWD_V2, KernelDtype,
    };
    let nvrtc = match Nvrtc::load() {
        Ok(n) => n,
        Err(e) => {
            let required = std::env::var("NMOCO_REQUIRE_NVRTC").is_ok_and(|v| v == "1");
            assert!(!required, "NMOCO_REQUIRE_NVRTC=1 but NVRTC is missing: {e}");
            println!("nvrtc_compile: could not run, NVRTC not found ({e})");
            return;
        }
    };
    for dtype in KernelDtype::ALL {
        let v = Variant::all()
            .into_iter()
            .find(|v| v.dtype == dtype && !v.plif && v.charge == 1)
            .expect("a LIF variant")
            .with_t_static(16);
        let ptx = nvrtc
            .compile_ptx(&v.source(), &v.module_name(), &v.options(90))
            .unwrap_or_else(|e| panic!("{}: {e}", v.module_name()));
        let one = dtype.bytes() as u32;
        for (k1, k2) in [(KERNEL_FWD, KERNEL_FWD_V2), (KERNEL_BWD, KERNEL_BWD_V2)] {
            let w1 = global_access_widths(entry_ptx(&ptx, k1));
            let w2 = global_access_widths(entry_ptx(&ptx, k2));
            println!(
                "nvrtc_compile: {dtype:?} {k1}: {} global accesses of {one} B, {k2}: {} of {} B",
                w1.len(),
                w2.len(),
                2 * one
            );
            assert!(
                !w1.is_empty() && !w2.is_empty(),
                "{dtype:?} {k1}: {w1:?} {k2}: {w2:?}"
            );
            assert!(w1.iter().all(|w| *w == one), "{dtype:?} {k1}: {w1:?}");
            assert!(w2.iter().all(|w| *w == 2 * one), "{dtype:?} {k2}: {w2:?}");
            // Fixed T = 16: one access per step and stream (fwd: x, s; bwd: x, g, gx), both kernels.
            assert_eq!(w1.len(), w2.len(), "{dtype:?} {k1} {w1:?} vs {k2} {w2:?}");
        }
    }
}

/// The SEW IAND connect kernels compile for every storage dtype and architecture, and define
/// every entry point the Rust side names.
#[test]
fn every_connect_variant_compiles() {
    use nmoco_snn::cuda_variants::{
        CONNECT_KERNELS, CONNECT_SRC, KernelDtype, connect_module_name, connect_source,
        pool_options,
    };
    let nvrtc = match Nvrtc::load() {
        Ok(n) => n,
        Err(e) => {
            let required = std::env::var("NMOCO_REQUIRE_NVRTC").is_ok_and(|v| v == "1");
            assert!(!required, "NMOCO_REQUIRE_NVRTC=1 but NVRTC is missing: {e}");
            println!("nvrtc_compile: could not run, NVRTC not found ({e})");
            return;
        }
    };
    for k in CONNECT_KERNELS {
        assert!(
            CONNECT_SRC
                .lines()
                .any(|l| l.contains("__global__ void") && l.contains(&format!(" {k}("))),
            "kernel {k} missing from connect.cu"
        );
    }
    let mut n = 0;
    for dtype in KernelDtype::ALL {
        for arch in ARCHS {
            let name = connect_module_name(dtype);
            let ptx = nvrtc
                .compile_ptx(&connect_source(), &name, &pool_options(dtype, arch))
                .unwrap_or_else(|e| panic!("{name} sm_{arch}: {e}"));
            for k in CONNECT_KERNELS {
                assert!(
                    ptx.contains(&format!(".entry {k}(")),
                    "{name} sm_{arch}: no {k}"
                );
            }
            n += 1;
        }
    }
    println!("nvrtc_compile: {n} connect modules compiled");
}

/// One module to compile: name, source, options, its kernels, architecture.
type ModuleJob = (String, String, Vec<String>, &'static [&'static str], u32);

/// The fused batch norm + IF/LIF kernels: the reduction module for every supported dtype and
/// architecture, and the neuron module for every IF/LIF variant (any `T` on every architecture,
/// fixed `T` at 8 and 16 on sm_90); every entry point the Rust side names is in the source and
/// in the PTX, and assembles with `ptxas` where available (no spills for the fixed-`T` backward).
#[test]
fn every_bn_lif_variant_compiles() {
    use nmoco_snn::cuda_variants::bn::{
        BN_LIF_DTYPES, BN_LIF_KERNELS, BN_LIF_SRC, BN_REDUCE_KERNELS, BnLifVariant,
        bn_reduce_module_name, bn_reduce_options, bn_reduce_source,
    };
    let nvrtc = match Nvrtc::load() {
        Ok(n) => n,
        Err(e) => {
            let required = std::env::var("NMOCO_REQUIRE_NVRTC").is_ok_and(|v| v == "1");
            assert!(!required, "NMOCO_REQUIRE_NVRTC=1 but NVRTC is missing: {e}");
            println!("nvrtc_compile: could not run, NVRTC not found ({e})");
            return;
        }
    };
    for k in BN_REDUCE_KERNELS.iter().chain(&BN_LIF_KERNELS) {
        assert!(
            BN_LIF_SRC.lines().any(|l| l.contains(&format!(" {k}("))),
            "kernel {k} missing from bn_lif.cu"
        );
    }
    let mut jobs: Vec<ModuleJob> = Vec::new();
    for dtype in BN_LIF_DTYPES {
        for arch in ARCHS {
            jobs.push((
                bn_reduce_module_name(dtype),
                bn_reduce_source(),
                bn_reduce_options(dtype, arch),
                &BN_REDUCE_KERNELS,
                arch,
            ));
        }
    }
    for v in BnLifVariant::all() {
        let fixed = STATIC_TS
            .iter()
            .map(|t| (BnLifVariant(v.0.with_t_static(*t)), 90));
        for (bv, arch) in ARCHS.iter().map(|a| (v, *a)).chain(fixed) {
            jobs.push((
                bv.module_name(),
                bv.source(),
                bv.options(arch),
                &BN_LIF_KERNELS,
                arch,
            ));
        }
    }
    let ptxas = ptxas();
    let dir = tempfile::tempdir().expect("tempdir");
    let failures: Vec<String> = jobs
        .par_iter()
        .filter_map(|(name, src, opts, kernels, arch)| {
            let run = || -> Result<(), String> {
                let ptx = nvrtc
                    .compile_ptx(src, name, opts)
                    .map_err(|e| format!("{name} sm_{arch}: {e}"))?;
                for k in kernels.iter() {
                    if !ptx.contains(&format!(".entry {k}(")) {
                        return Err(format!("{name} sm_{arch}: no entry {k} in PTX"));
                    }
                }
                let Some(ptxas) = &ptxas else {
                    return Ok(());
                };
                let file = dir.path().join(format!("{name}_sm{arch}.ptx"));
                std::fs::write(&file, &ptx).map_err(|e| e.to_string())?;
                let out = Command::new(ptxas)
                    .arg(format!("-arch=sm_{arch}"))
                    .arg("-v")
                    .arg(&file)
                    .arg("-o")
                    .arg(file.with_extension("cubin"))
                    .output()
                    .map_err(|e| format!("ptxas: {e}"))?;
                let log = String::from_utf8_lossy(&out.stderr).into_owned();
                if !out.status.success() {
                    return Err(format!("{name} sm_{arch}: ptxas failed: {log}"));
                }
                let stats = parse_ptxas(&log);
                if stats.len() != kernels.len() {
                    return Err(format!("{name} sm_{arch}: unexpected ptxas output: {log}"));
                }
                for (k, _, st, ld) in &stats {
                    if *st > 0 || *ld > 0 {
                        return Err(format!("{name} sm_{arch} {k}: spills {st}/{ld} B"));
                    }
                }
                Ok(())
            };
            run().err()
        })
        .collect();
    println!(
        "nvrtc_compile: {} fused batch norm + IF/LIF modules compiled{}",
        jobs.len() - failures.len(),
        if ptxas.is_some() {
            " and assembled"
        } else {
            ""
        }
    );
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
