//! Convolutions (values and gradients) against candle's `conv2d`, on the shape grid.

use candle_core::{DType, Result, Tensor, Var};
use nmoco_conv::{
    batch_norm_eval_reference, conv2d, conv2d_bias, conv2d_grad_input, conv2d_grad_weight,
    conv2d_reference, fold_batch_norm,
};

use super::{assert_close, spikes, tensor};

#[derive(Debug, Clone, Copy)]
struct Case {
    n: usize,
    c_in: usize,
    c_out: usize,
    h: usize,
    w: usize,
    k: usize,
    stride: usize,
    pad: usize,
    groups: usize,
}

const CASES: &[Case] = &[
    Case {
        n: 2,
        c_in: 4,
        c_out: 6,
        h: 9,
        w: 8,
        k: 3,
        stride: 1,
        pad: 1,
        groups: 1,
    },
    Case {
        n: 3,
        c_in: 3,
        c_out: 5,
        h: 10,
        w: 8,
        k: 3,
        stride: 2,
        pad: 1,
        groups: 1,
    },
    Case {
        n: 2,
        c_in: 4,
        c_out: 4,
        h: 8,
        w: 8,
        k: 3,
        stride: 2,
        pad: 0,
        groups: 2,
    },
    Case {
        n: 2,
        c_in: 6,
        c_out: 6,
        h: 7,
        w: 9,
        k: 3,
        stride: 1,
        pad: 1,
        groups: 6,
    },
    Case {
        n: 1,
        c_in: 4,
        c_out: 8,
        h: 6,
        w: 6,
        k: 3,
        stride: 1,
        pad: 0,
        groups: 2,
    },
    Case {
        n: 2,
        c_in: 5,
        c_out: 7,
        h: 6,
        w: 5,
        k: 1,
        stride: 1,
        pad: 0,
        groups: 1,
    },
    Case {
        n: 2,
        c_in: 4,
        c_out: 6,
        h: 7,
        w: 7,
        k: 1,
        stride: 2,
        pad: 0,
        groups: 2,
    },
    Case {
        n: 2,
        c_in: 4,
        c_out: 3,
        h: 5,
        w: 6,
        k: 1,
        stride: 1,
        pad: 1,
        groups: 1,
    },
    Case {
        n: 1,
        c_in: 3,
        c_out: 4,
        h: 15,
        w: 13,
        k: 7,
        stride: 2,
        pad: 3,
        groups: 1,
    },
    Case {
        n: 2,
        c_in: 2,
        c_out: 3,
        h: 9,
        w: 9,
        k: 7,
        stride: 1,
        pad: 3,
        groups: 1,
    },
    Case {
        n: 1,
        c_in: 2,
        c_out: 2,
        h: 4,
        w: 5,
        k: 3,
        stride: 1,
        pad: 3,
        groups: 1,
    },
    Case {
        n: 2,
        c_in: 8,
        c_out: 8,
        h: 40,
        w: 30,
        k: 3,
        stride: 1,
        pad: 1,
        groups: 1,
    },
    Case {
        n: 1,
        c_in: 4,
        c_out: 4,
        h: 9,
        w: 11,
        k: 3,
        stride: 2,
        pad: 1,
        groups: 4,
    },
];

/// Forward value and both gradients of `conv2d` against candle's `conv2d`.
fn check_conv(case: Case, x: &Tensor, seed: u64) -> Result<()> {
    let Case {
        c_in,
        c_out,
        k,
        stride,
        pad,
        groups,
        ..
    } = case;
    let w0 = tensor(&[c_out, c_in / groups, k, k], seed + 1)?;
    let xv = Var::from_tensor(x)?;
    let wv = Var::from_tensor(&w0)?;
    let xr = Var::from_tensor(x)?;
    let wr = Var::from_tensor(&w0)?;
    let y = conv2d(xv.as_tensor(), wv.as_tensor(), stride, pad, groups)?;
    let yr = conv2d_reference(xr.as_tensor(), wr.as_tensor(), stride, pad, groups)?;
    let what = format!("{case:?}");
    assert_close(&format!("{what} y"), &y, &yr, 1e-4)?;
    assert!(y.is_contiguous());
    let r = tensor(yr.dims(), seed + 2)?;
    let g = (y * &r)?.sum_all()?.backward()?;
    let gr = (yr * &r)?.sum_all()?.backward()?;
    let get = |g: &candle_core::backprop::GradStore, v: &Var| {
        g.get(v).cloned().expect("gradient present")
    };
    assert_close(&format!("{what} dx"), &get(&g, &xv), &get(&gr, &xr), 1e-4)?;
    assert_close(&format!("{what} dw"), &get(&g, &wv), &get(&gr, &wr), 1e-4)?;
    Ok(())
}

#[test]
fn conv2d_matches_candle_values_and_gradients() -> Result<()> {
    for (i, &case) in CASES.iter().enumerate() {
        let x = tensor(&[case.n, case.c_in, case.h, case.w], 10 * i as u64)?;
        check_conv(case, &x, 10 * i as u64 + 3)?;
    }
    Ok(())
}

#[test]
fn conv2d_on_spike_inputs_matches_candle() -> Result<()> {
    for (i, density) in [0.0f32, 0.05, 0.1, 0.25, 0.6, 1.0].into_iter().enumerate() {
        let case = CASES[i % 3];
        let x = spikes(
            &[case.n, case.c_in, case.h, case.w],
            100 + i as u64,
            density,
        )?;
        check_conv(case, &x, 200 + i as u64)?;
    }
    Ok(())
}

#[test]
fn conv2d_handles_non_contiguous_inputs() -> Result<()> {
    // x is a transposed view, w a narrowed one.
    let base = tensor(&[2, 9, 5, 8], 7)?;
    let x = base.transpose(1, 3)?; // [2, 8, 5, 9]
    assert!(!x.is_contiguous());
    let wbase = tensor(&[6, 4, 3, 5], 8)?;
    let w = wbase.narrow(3, 1, 3)?; // [6, 4, 3, 3]
    assert!(!w.is_contiguous());
    let y = conv2d(&x, &w, 1, 1, 2)?;
    let yr = conv2d_reference(&x.contiguous()?, &w.contiguous()?, 1, 1, 2)?;
    assert_close("non-contiguous", &y, &yr, 1e-4)?;
    // candle's reference input gradient assumes the same output padding along H and W,
    // so stride-2 cases keep (H + 2p - k) and (W + 2p - k) of equal parity.
    let case = Case {
        n: 2,
        c_in: 8,
        c_out: 6,
        h: 5,
        w: 9,
        k: 3,
        stride: 2,
        pad: 1,
        groups: 1,
    };
    check_conv(case, &x, 9)
}

#[test]
fn standalone_gradients_match_autograd() -> Result<()> {
    let x = tensor(&[2, 4, 9, 7], 31)?;
    let w = tensor(&[6, 2, 3, 3], 32)?;
    for stride in [1, 2] {
        let xv = Var::from_tensor(&x)?;
        let wv = Var::from_tensor(&w)?;
        let y = conv2d_reference(xv.as_tensor(), wv.as_tensor(), stride, 1, 2)?;
        let dy = tensor(y.dims(), 33)?;
        let g = (y * &dy)?.sum_all()?.backward()?;
        let dx = conv2d_grad_input(&dy, &w, x.dims(), stride, 1, 2)?;
        let dw = conv2d_grad_weight(&x, &dy, w.dims(), stride, 1, 2)?;
        assert_close("grad input", &dx, g.get(&xv).expect("dx"), 1e-4)?;
        assert_close("grad weight", &dw, g.get(&wv).expect("dw"), 1e-4)?;
    }
    Ok(())
}

#[test]
fn conv2d_bias_and_batch_norm_folding_match_reference() -> Result<()> {
    let x = tensor(&[2, 3, 8, 8], 41)?;
    let w0 = tensor(&[5, 3, 3, 3], 42)?;
    let b0 = tensor(&[5], 43)?;
    let xv = Var::from_tensor(&x)?;
    let wv = Var::from_tensor(&w0)?;
    let bv = Var::from_tensor(&b0)?;
    let y = conv2d_bias(xv.as_tensor(), wv.as_tensor(), bv.as_tensor(), 2, 1, 1)?;
    let yr = conv2d_reference(&x, &w0, 2, 1, 1)?.broadcast_add(&b0.reshape((1, 5, 1, 1))?)?;
    assert_close("conv bias", &y, &yr, 1e-4)?;
    let xr = Var::from_tensor(&x)?;
    let wr = Var::from_tensor(&w0)?;
    let br = Var::from_tensor(&b0)?;
    let yr2 = conv2d_reference(xr.as_tensor(), wr.as_tensor(), 2, 1, 1)?
        .broadcast_add(&br.as_tensor().reshape((1, 5, 1, 1))?)?;
    let r = tensor(y.dims(), 44)?;
    let g = (y * &r)?.sum_all()?.backward()?;
    let gr = (yr2 * &r)?.sum_all()?.backward()?;
    for (a, b, what) in [(&xv, &xr, "dx"), (&wv, &wr, "dw"), (&bv, &br, "db")] {
        assert_close(
            what,
            g.get(a).expect("grad"),
            gr.get(b).expect("grad"),
            1e-4,
        )?;
    }

    let gamma = tensor(&[5], 45)?;
    let beta = tensor(&[5], 46)?;
    let rm = tensor(&[5], 47)?;
    let rv = (tensor(&[5], 48)?.abs()? + 0.5)?;
    let (wf, bf) = fold_batch_norm(&w0, Some(&b0), &gamma, &beta, &rm, &rv, 1e-5)?;
    let folded = conv2d_bias(&x, &wf, &bf, 2, 1, 1)?;
    let unfolded = batch_norm_eval_reference(&yr, &gamma, &beta, &rm, &rv, 1e-5)?;
    assert_close("folded bn", &folded, &unfolded, 1e-4)?;
    let (wf, bf) = fold_batch_norm(&w0, None, &gamma, &beta, &rm, &rv, 1e-5)?;
    let folded = conv2d_bias(&x, &wf, &bf, 2, 1, 1)?;
    let unfolded = batch_norm_eval_reference(
        &conv2d_reference(&x, &w0, 2, 1, 1)?,
        &gamma,
        &beta,
        &rm,
        &rv,
        1e-5,
    )?;
    assert_close("folded bn without bias", &folded, &unfolded, 1e-4)
}

#[test]
fn untracked_input_gets_no_gradient() -> Result<()> {
    // The network input is a plain tensor: only the kernel (and bias) get gradients, and they
    // equal those of the run where the input is tracked too.
    let x = spikes(&[2, 3, 9, 9], 201, 0.3)?;
    let w = Var::from_tensor(&tensor(&[4, 3, 3, 3], 202)?)?;
    let b = Var::from_tensor(&tensor(&[4], 203)?)?;
    let g = tensor(&[2, 4, 9, 9], 204)?;
    let grads = (conv2d_bias(&x, &w, &b, 1, 1, 1)? * &g)?
        .sum_all()?
        .backward()?;
    assert!(grads.get(&x).is_none());
    let xv = Var::from_tensor(&x)?;
    let all = (conv2d_bias(&xv, &w, &b, 1, 1, 1)? * &g)?
        .sum_all()?
        .backward()?;
    assert!(all.get(&xv).is_some());
    for (what, v) in [("w", &w), ("b", &b)] {
        let (Some(a), Some(r)) = (grads.get(v), all.get(v)) else {
            panic!("{what}: missing gradient");
        };
        assert_close(what, a, r, 1e-6)?;
    }
    Ok(())
}

#[test]
fn kernel_is_cast_to_the_input_dtype() -> Result<()> {
    // f32 master weights with half activations (f16 here: candle has no bf16 matmul on the CPU;
    // the cast is dtype-generic): the output is f16, the kernel's gradient f32,
    // both close to the f32 computation on the same (f16-rounded) input.
    let x32 = tensor(&[2, 3, 7, 7], 211)?
        .to_dtype(DType::F16)?
        .to_dtype(DType::F32)?;
    let w = Var::from_tensor(&tensor(&[4, 3, 3, 3], 212)?)?;
    let g = tensor(&[2, 4, 7, 7], 213)?;
    let y = conv2d(&x32.to_dtype(DType::F16)?, &w, 1, 1, 1)?;
    assert_eq!(y.dtype(), DType::F16);
    let gw = (y.to_dtype(DType::F32)? * &g)?.sum_all()?.backward()?;
    let gw = gw.get(&w).expect("kernel gradient");
    assert_eq!(gw.dtype(), DType::F32);
    let w2 = Var::from_tensor(&w.as_tensor().to_dtype(DType::F16)?.to_dtype(DType::F32)?)?;
    let y32 = conv2d(&x32, &w2, 1, 1, 1)?;
    let gw32 = (&y32 * &g)?.sum_all()?.backward()?;
    assert_close("y", &y.to_dtype(DType::F32)?, &y32, 2e-2)?;
    assert_close("dw", gw, gw32.get(&w2).expect("kernel gradient"), 2e-2)
}
