//! The fused ops against their plain-candle reference twins: values and gradients.

use candle_core::{DType, Device, Result, Tensor, Var};
use nmoco_conv::{
    batch_norm_eval, batch_norm_eval_reference, batch_norm_train, batch_norm_train_reference,
    channel_affine, conv2d, conv2d_bias, conv2d_grad_input, conv2d_grad_weight, conv2d_reference,
    fold_batch_norm,
};

/// Deterministic pseudo-random values in [-1, 1).
fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn tensor(dims: &[usize], seed: u64) -> Result<Tensor> {
    Tensor::from_vec(values(dims.iter().product(), seed), dims, &Device::Cpu)
}

/// Binary spikes with roughly `density` ones.
fn spikes(dims: &[usize], seed: u64, density: f32) -> Result<Tensor> {
    let v = values(dims.iter().product(), seed)
        .into_iter()
        .map(|u| {
            if (u + 1.0) / 2.0 < density {
                1.0f32
            } else {
                0.0
            }
        })
        .collect();
    Tensor::from_vec(v, dims, &Device::Cpu)
}

/// Max |a - b| relative to the reference's magnitude.
fn assert_close(what: &str, a: &Tensor, b: &Tensor, tol: f32) -> Result<()> {
    assert_eq!(a.dims(), b.dims(), "{what}: shapes differ");
    let a = a.flatten_all()?.to_vec1::<f32>()?;
    let b = b.flatten_all()?.to_vec1::<f32>()?;
    let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-3);
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert!(
            (x - y).abs() <= tol * scale,
            "{what}: element {i}: {x} vs {y} (scale {scale})"
        );
    }
    Ok(())
}

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

/// BN train values, statistics and the three gradients against the plain twin.
fn check_bn_train(x: &Tensor, seed: u64) -> Result<()> {
    let c = x.dim(1)?;
    let g0 = (tensor(&[c], seed)? + 1.5)?;
    let b0 = tensor(&[c], seed + 1)?;
    let (xv, gv, bv) = (
        Var::from_tensor(x)?,
        Var::from_tensor(&g0)?,
        Var::from_tensor(&b0)?,
    );
    let (xr, gr, br) = (
        Var::from_tensor(x)?,
        Var::from_tensor(&g0)?,
        Var::from_tensor(&b0)?,
    );
    let (y, m, v) = batch_norm_train(xv.as_tensor(), gv.as_tensor(), bv.as_tensor(), 1e-5)?;
    let (yr, mr, vr) =
        batch_norm_train_reference(xr.as_tensor(), gr.as_tensor(), br.as_tensor(), 1e-5)?;
    let what = format!("bn {:?}", x.dims());
    assert_close(&format!("{what} y"), &y, &yr, 1e-4)?;
    assert_close(&format!("{what} mean"), &m, &mr, 1e-4)?;
    assert_close(&format!("{what} var"), &v, &vr, 1e-4)?;
    let r = tensor(y.dims(), seed + 2)?;
    let g = (y * &r)?.sum_all()?.backward()?;
    let gref = (yr * &r)?.sum_all()?.backward()?;
    for (a, b, n) in [(&xv, &xr, "dx"), (&gv, &gr, "dgamma"), (&bv, &br, "dbeta")] {
        let ga = g.get(a).expect("grad");
        let gb = gref.get(b).expect("grad");
        assert_close(&format!("{what} {n}"), ga, gb, 2e-4)?;
    }
    Ok(())
}

#[test]
fn batch_norm_train_matches_plain_twin() -> Result<()> {
    check_bn_train(&tensor(&[4, 3, 5, 7], 51)?, 52)?;
    check_bn_train(&tensor(&[16, 5], 53)?, 54)?;
    check_bn_train(&tensor(&[1, 2, 33, 17], 55)?, 56)?;
    // An offset mean (cancellation check) and binary spikes.
    check_bn_train(&(tensor(&[3, 4, 6, 6], 57)? + 100.0)?, 58)?;
    check_bn_train(&spikes(&[3, 4, 6, 6], 59, 0.2)?, 60)?;
    // Non-contiguous input.
    let x = tensor(&[5, 4, 6, 3], 61)?.transpose(1, 3)?;
    assert!(!x.is_contiguous());
    check_bn_train(&x, 62)
}

#[test]
fn batch_norm_eval_and_channel_affine_match_plain_twin() -> Result<()> {
    let x0 = tensor(&[3, 4, 5, 5], 71)?;
    let p = |s| tensor(&[4], s);
    let (g0, b0, rm) = (p(72)?, p(73)?, p(74)?);
    let rv = (p(75)?.abs()? + 0.2)?;
    let (xv, gv, bv) = (
        Var::from_tensor(&x0)?,
        Var::from_tensor(&g0)?,
        Var::from_tensor(&b0)?,
    );
    let (xr, gr, br) = (
        Var::from_tensor(&x0)?,
        Var::from_tensor(&g0)?,
        Var::from_tensor(&b0)?,
    );
    let y = batch_norm_eval(
        xv.as_tensor(),
        gv.as_tensor(),
        bv.as_tensor(),
        &rm,
        &rv,
        1e-5,
    )?;
    let yr = batch_norm_eval_reference(
        xr.as_tensor(),
        gr.as_tensor(),
        br.as_tensor(),
        &rm,
        &rv,
        1e-5,
    )?;
    assert_close("bn eval y", &y, &yr, 1e-5)?;
    let r = tensor(y.dims(), 76)?;
    let g = (y * &r)?.sum_all()?.backward()?;
    let gref = (yr * &r)?.sum_all()?.backward()?;
    for (a, b, n) in [(&xv, &xr, "dx"), (&gv, &gr, "dgamma"), (&bv, &br, "dbeta")] {
        assert_close(n, g.get(a).expect("grad"), gref.get(b).expect("grad"), 1e-4)?;
    }
    let z = channel_affine(&x0.narrow(2, 1, 3)?, &g0, &b0)?;
    let zr = x0
        .narrow(2, 1, 3)?
        .broadcast_mul(&g0.reshape((1, 4, 1, 1))?)?
        .broadcast_add(&b0.reshape((1, 4, 1, 1))?)?;
    assert_close("channel affine", &z, &zr, 1e-6)
}

#[test]
fn bad_shapes_are_errors() -> Result<()> {
    let x = tensor(&[1, 4, 5, 5], 1)?;
    let w = tensor(&[4, 3, 3, 3], 2)?;
    assert!(conv2d(&x, &w, 1, 1, 1).is_err());
    let w = tensor(&[4, 2, 3, 3], 2)?;
    assert!(conv2d(&x, &w, 1, 1, 2).is_ok());
    assert!(conv2d(&x, &w, 0, 1, 2).is_err());
    assert!(conv2d(&x, &w, 1, 1, 0).is_err());
    assert!(conv2d(&x, &tensor(&[4, 4, 7, 7], 3)?, 1, 0, 1).is_err());
    assert!(conv2d(&x.flatten_all()?, &w, 1, 1, 2).is_err());
    // Degenerate but valid shapes give empty or zero outputs, never a panic.
    let y = conv2d(&tensor(&[0, 4, 5, 5], 4)?, &w, 1, 1, 2)?;
    assert_eq!(y.dims(), &[0, 4, 5, 5]);
    let empty_c = Tensor::zeros((1, 0, 5, 5), DType::F32, &Device::Cpu)?;
    let w0 = Tensor::zeros((3, 0, 3, 3), DType::F32, &Device::Cpu)?;
    let y = conv2d(&empty_c, &w0, 1, 1, 1)?;
    assert_eq!(y.dims(), &[1, 3, 5, 5]);
    assert_eq!(y.abs()?.sum_all()?.to_scalar::<f32>()?, 0.0);
    let gamma = Tensor::ones(3, DType::F32, &Device::Cpu)?;
    assert!(batch_norm_train(&x, &gamma, &gamma, 1e-5).is_err());
    assert!(batch_norm_train(&x.flatten_all()?, &gamma, &gamma, 1e-5).is_err());
    Ok(())
}

#[test]
fn non_f32_falls_back_to_candle() -> Result<()> {
    let x = tensor(&[1, 2, 5, 5], 91)?.to_dtype(DType::F64)?;
    let w = tensor(&[3, 2, 3, 3], 92)?.to_dtype(DType::F64)?;
    let y = conv2d(&x, &w, 1, 1, 1)?;
    assert_eq!(y.dtype(), DType::F64);
    let yr = conv2d_reference(&x, &w, 1, 1, 1)?;
    assert_close(
        "f64",
        &y.to_dtype(DType::F32)?,
        &yr.to_dtype(DType::F32)?,
        1e-6,
    )?;
    // The standalone gradients fall back to candle's autograd; compare with the f32 fast path.
    let dy = tensor(y.dims(), 93)?;
    let f = |t: &Tensor| t.to_dtype(DType::F32);
    let dx64 = conv2d_grad_input(&dy.to_dtype(DType::F64)?, &w, x.dims(), 1, 1, 1)?;
    let dx32 = conv2d_grad_input(&dy, &f(&w)?, x.dims(), 1, 1, 1)?;
    assert_close("f64 grad input", &f(&dx64)?, &dx32, 1e-5)?;
    let dw64 = conv2d_grad_weight(&x, &dy.to_dtype(DType::F64)?, w.dims(), 1, 1, 1)?;
    let dw32 = conv2d_grad_weight(&f(&x)?, &dy, w.dims(), 1, 1, 1)?;
    assert_close("f64 grad weight", &f(&dw64)?, &dw32, 1e-5)?;
    // Batch norm falls back to the plain twin.
    let gamma = Tensor::ones(2, DType::F64, &Device::Cpu)?;
    let beta = Tensor::zeros(2, DType::F64, &Device::Cpu)?;
    let (z, m, v) = batch_norm_train(&x, &gamma, &beta, 1e-5)?;
    assert_eq!(z.dtype(), DType::F64);
    let (z32, m32, v32) = batch_norm_train(&f(&x)?, &f(&gamma)?, &f(&beta)?, 1e-5)?;
    assert_close("f64 bn", &f(&z)?, &z32, 1e-4)?;
    assert_close("f64 bn mean", &f(&m)?, &m32, 1e-5)?;
    assert_close("f64 bn var", &f(&v)?, &v32, 1e-5)
}

#[test]
fn weight_gradient_is_bitwise_reproducible_across_thread_counts() -> Result<()> {
    let x = tensor(&[12, 4, 9, 9], 101)?;
    let s = spikes(&[12, 4, 9, 9], 102, 0.05)?;
    let dy = tensor(&[12, 6, 9, 9], 103)?;
    let run = |threads: usize, x: &Tensor| -> Result<Vec<f32>> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .map_err(candle_core::Error::wrap)?;
        pool.install(|| conv2d_grad_weight(x, &dy, &[6, 4, 3, 3], 1, 1, 1))?
            .flatten_all()?
            .to_vec1::<f32>()
    };
    for input in [&x, &s] {
        let one = run(1, input)?;
        assert_eq!(one, run(3, input)?);
        assert_eq!(one, run(2, input)?);
    }
    // Few images with many tiles: the tiles of one image are spread over the pool.
    let x = tensor(&[2, 3, 40, 40], 104)?;
    let dy = tensor(&[2, 5, 40, 40], 105)?;
    let run = |threads: usize| -> Result<Vec<f32>> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .map_err(candle_core::Error::wrap)?;
        pool.install(|| conv2d_grad_weight(&x, &dy, &[5, 3, 3, 3], 1, 1, 1))?
            .flatten_all()?
            .to_vec1::<f32>()
    };
    let one = run(1)?;
    assert_eq!(one, run(2)?);
    assert_eq!(one, run(5)?);
    // Batch-norm statistics and gradients.
    let x = tensor(&[6, 3, 20, 20], 106)?;
    let r = tensor(&[6, 3, 20, 20], 107)?;
    let bn = |threads: usize| -> Result<Vec<Vec<f32>>> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .map_err(candle_core::Error::wrap)?;
        pool.install(|| {
            let xv = Var::from_tensor(&x)?;
            let gamma = Var::ones(3, DType::F32, &Device::Cpu)?;
            let beta = Var::zeros(3, DType::F32, &Device::Cpu)?;
            let (y, m, v) = batch_norm_train(xv.as_tensor(), &gamma, &beta, 1e-5)?;
            let grads = (y * &r)?.sum_all()?.backward()?;
            let dx = grads.get(&xv).cloned().expect("dx");
            [m, v, dx]
                .iter()
                .map(|t| t.flatten_all()?.to_vec1::<f32>())
                .collect()
        })
    };
    let one = bn(1)?;
    assert_eq!(one, bn(2)?);
    assert_eq!(one, bn(5)?);
    Ok(())
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
