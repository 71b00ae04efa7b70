//! Batch norm and the channel affine against their plain twins.

use candle_core::{Result, Tensor, Var};
use nmoco_conv::{
    batch_norm_eval, batch_norm_eval_reference, batch_norm_train, batch_norm_train_reference,
    channel_affine,
};

use super::{assert_close, spikes, tensor};

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
