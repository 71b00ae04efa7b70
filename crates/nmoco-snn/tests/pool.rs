//! The fused max-pool 3×3/2 with a saved argmax against its reference twin (values and
//! gradients, random and tied inputs, odd and tiny sizes) and against hand-worked PyTorch
//! semantics (first maximum of a window takes the gradient; the padding never wins).

use candle_core::{DType, Device, Result, Tensor, Var};
use nmoco_snn::{max_pool_3x3_s2, max_pool_3x3_s2_ref};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn input(dims: (usize, usize, usize, usize), seed: u64, binary: bool) -> Result<Var> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n = dims.0 * dims.1 * dims.2 * dims.3;
    let v: Vec<f32> = (0..n)
        .map(|_| {
            if binary {
                f32::from(u8::from(rng.random::<f32>() < 0.3))
            } else {
                rng.random_range(-2.0..2.0)
            }
        })
        .collect();
    Var::from_vec(v, dims, &Device::Cpu)
}

/// Values and `d(Σ y·g)/dx` of a pool.
fn run(pool: fn(&Tensor) -> Result<Tensor>, x: &Var, seed: u64) -> Result<(Vec<f32>, Vec<f32>)> {
    let y = pool(x.as_tensor())?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let g: Vec<f32> = (0..y.elem_count())
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let g = Tensor::from_vec(g, y.shape(), &Device::Cpu)?;
    let grads = (&y * &g)?.sum_all()?.backward()?;
    let dx = grads.get(x.as_tensor()).expect("gradient of x");
    Ok((
        y.flatten_all()?.to_vec1::<f32>()?,
        dx.flatten_all()?.to_vec1::<f32>()?,
    ))
}

#[test]
fn fused_pool_matches_the_reference_twin() -> Result<()> {
    let shapes = [
        (2, 3, 8, 8),
        (1, 2, 7, 9),
        (2, 1, 1, 1),
        (1, 1, 2, 3),
        (3, 2, 5, 4),
        (1, 4, 16, 15),
    ];
    for (i, &dims) in shapes.iter().enumerate() {
        for binary in [false, true] {
            let x = input(dims, i as u64, binary)?;
            let (y_f, g_f) = run(max_pool_3x3_s2, &x, 100 + i as u64)?;
            let (y_r, g_r) = run(max_pool_3x3_s2_ref, &x, 100 + i as u64)?;
            assert_eq!(y_f, y_r, "{dims:?} binary={binary}: values");
            for (k, (a, b)) in g_f.iter().zip(&g_r).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-6 * (1.0 + b.abs()),
                    "{dims:?} binary={binary}: dx[{k}] {a} vs {b}"
                );
            }
            // Every window's gradient lands on exactly one element: the sums agree.
            let ho = dims.2.div_ceil(2);
            let wo = dims.3.div_ceil(2);
            assert_eq!(y_f.len(), dims.0 * dims.1 * ho * wo);
        }
    }
    Ok(())
}

#[test]
fn the_first_maximum_takes_the_gradient_and_padding_never_wins() -> Result<()> {
    // One 4×4 plane of negative values (zero padding would win) with ties; windows are
    // centred on (0,0), (0,2), (2,0), (2,2) and reach one row/column before and after.
    #[rustfmt::skip]
    let v = [
        -1.0f32, -5.0, -1.0, -7.0,
        -5.0,    -3.0, -6.0, -2.0,
        -3.0,    -3.0, -4.0, -2.0,
        -9.0,    -8.0, -2.0, -2.0,
    ];
    let x = Var::from_slice(&v, (1, 1, 4, 4), &Device::Cpu)?;
    for pool in [max_pool_3x3_s2, max_pool_3x3_s2_ref] {
        let y = pool(x.as_tensor())?;
        assert_eq!(
            y.flatten_all()?.to_vec1::<f32>()?,
            vec![-1.0, -1.0, -3.0, -2.0]
        );
        let grads = y.sum_all()?.backward()?;
        let dx = grads
            .get(x.as_tensor())
            .unwrap()
            .flatten_all()?
            .to_vec1::<f32>()?;
        // Window (0,0), rows 0-1 × cols 0-1: -1 at (0,0).
        // Window (0,1), rows 0-1 × cols 1-3: -1 at (0,2).
        // Window (1,0), rows 1-3 × cols 0-1: -3 at (1,1), (2,0), (2,1): the first, (1,1).
        // Window (1,1), rows 1-3 × cols 1-3: -2 at (1,3), (2,3), (3,2), (3,3): the first, (1,3).
        #[rustfmt::skip]
        let want = [
            1.0f32, 0.0, 1.0, 0.0,
            0.0,    1.0, 0.0, 1.0,
            0.0,    0.0, 0.0, 0.0,
            0.0,    0.0, 0.0, 0.0,
        ];
        assert_eq!(dx, want);
    }
    Ok(())
}

#[test]
fn bad_shapes_are_errors_and_other_dtypes_use_the_twin() -> Result<()> {
    let x = Tensor::zeros((2, 3, 4), DType::F32, &Device::Cpu)?;
    assert!(max_pool_3x3_s2(&x).is_err());
    let e = Tensor::zeros((1, 1, 0, 4), DType::F32, &Device::Cpu)?;
    assert!(max_pool_3x3_s2(&e).is_err());
    let x = input((1, 2, 5, 5), 9, false)?;
    let y32 = max_pool_3x3_s2(x.as_tensor())?;
    let y64 = max_pool_3x3_s2(&x.as_tensor().to_dtype(DType::F64)?)?;
    assert_eq!(y64.dtype(), DType::F64);
    assert_eq!(
        y32.flatten_all()?.to_vec1::<f32>()?,
        y64.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?
    );
    Ok(())
}
