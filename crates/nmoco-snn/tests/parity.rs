//! Fused ops vs their plain-candle reference twins, for every neuron variant: spikes identical,
//! gradients (input and PLIF's w) equal to rounding. Short and long T, small and large inputs.

mod common;

use candle_core::{DType, Device, Result, Tensor};
use common::{all_configs, rand_tensor, rel_err};
use nmoco_snn::testing::{NeuronRun, run_neuron};
use nmoco_snn::{NeuronConfig, NeuronKind};

/// Forward and backward on the CPU in f32 through the fused op or the reference twin.
fn run(cfg: &NeuronConfig, x: &Tensor, g: &Tensor, fused: bool) -> Result<NeuronRun> {
    run_neuron(cfg, x, g, &Device::Cpu, DType::F32, fused, DType::F32)
}

fn check_all(shape: &[usize], lo: f32, hi: f32, tol: f32) -> Result<()> {
    for (i, cfg) in all_configs().iter().enumerate() {
        let x = rand_tensor(shape, lo, hi, 1 + i as u64)?;
        let g = rand_tensor(shape, -1.0, 1.0, 1000 + i as u64)?;
        let a = run(cfg, &x, &g, true)?;
        let b = run(cfg, &x, &g, false)?;
        assert_eq!(a.spikes, b.spikes, "spikes differ for {cfg:?}");
        let rate = a.spikes.iter().sum::<f32>() / a.spikes.len() as f32;
        assert!(
            rate > 0.01 && rate < 0.99,
            "degenerate spike rate {rate} for {cfg:?}"
        );
        let e = rel_err(&a.gx, &b.gx);
        assert!(e < tol, "grad x rel err {e} for {cfg:?}");
        if let (Some(wa), Some(wb)) = (a.gw, b.gw) {
            let e = (wa - wb).abs() / wb.abs().max(1.0);
            assert!(e < tol, "grad w {wa} vs {wb} for {cfg:?}");
        }
    }
    Ok(())
}

#[test]
fn short_sequences_match_reference() -> Result<()> {
    check_all(&[8, 3, 37], -1.0, 3.0, 1e-5)
}

#[test]
fn long_sequences_match_reference() -> Result<()> {
    check_all(&[96, 41], -1.0, 2.5, 1e-4)
}

#[test]
fn large_magnitudes_match_reference() -> Result<()> {
    check_all(&[24, 2, 33], -200.0, 300.0, 1e-4)
}

/// A block boundary in the CPU kernel (more neurons than one task's block).
#[test]
fn many_neurons_match_reference() -> Result<()> {
    let cfg = NeuronConfig {
        kind: NeuronKind::Plif,
        tau: 2.5,
        ..NeuronConfig::default()
    };
    let x = rand_tensor(&[3, 16500], -1.0, 3.0, 7)?;
    let g = rand_tensor(&[3, 16500], -1.0, 1.0, 8)?;
    let a = run(&cfg, &x, &g, true)?;
    let b = run(&cfg, &x, &g, false)?;
    assert_eq!(a.spikes, b.spikes);
    assert!(rel_err(&a.gx, &b.gx) < 1e-5);
    let (wa, wb) = (a.gw.unwrap_or(f32::NAN), b.gw.unwrap_or(f32::NAN));
    assert!((wa - wb).abs() <= 1e-4 * wb.abs().max(1.0), "{wa} vs {wb}");
    Ok(())
}
