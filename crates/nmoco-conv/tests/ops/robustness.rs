//! Bad shapes, other dtypes, and results independent of the thread count.

use candle_core::{DType, Device, Result, Tensor, Var};
use nmoco_conv::{
    batch_norm_train, conv2d, conv2d_grad_input, conv2d_grad_weight, conv2d_reference,
};

use super::{assert_close, spikes, tensor};

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
