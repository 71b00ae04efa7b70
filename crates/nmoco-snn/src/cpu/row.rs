//! The per-neuron maths of the CPU kernels, row by row: charge → fire → reset (written once,
//! the `neuron_row!` macro, expanded per kernel and instantiated per charge form, reset and
//! affine input) and the BPTT step of the backward pass ([`bptt_row`], compiled per
//! instruction set out of line).

use crate::surrogate::SurrogateGrad;

/// The charge equation, `CH`: 0 IF, 1 LIF with `decay_input`, 2 LIF without.
#[inline(always)]
pub(super) fn charge<const CH: u8>(v: f32, x: f32, k: f32, vr: f32) -> f32 {
    match CH {
        0 => v + x,
        1 => v + (x - (v - vr)) * k,
        _ => v - (v - vr) * k + x,
    }
}

/// The reset, hard (`v_r`) or soft (`h - v_th`).
#[inline(always)]
pub(super) fn reset<const HARD: bool>(h: f32, fire: bool, vth: f32, vr: f32) -> f32 {
    if HARD {
        if fire { vr } else { h }
    } else if fire {
        h - vth
    } else {
        h
    }
}

/// One row (time step) of a block: every neuron of `$v` charges with its input `$xs` (mapped to
/// `a·x + d` with `$ab`, `$db` per neuron when `$aff`: the same f32 operations as the unfused
/// batch norm's output), fires, writes `$emit` (an expression of the membrane `$h` and the
/// spike `$fire`) to `$out` and resets. The charge → fire → reset row, written once and expanded
/// in place in the forward kernel (emitting the spike) and in the backward's trace pass
/// (emitting `h`). A macro rather than a function so that the loops stay in the kernels' own
/// bodies as they were measured: the kernels' machine code is the same as before the row was
/// shared (instructions and sizes of every instance compared).
macro_rules! neuron_row {
    (
        <$ch:ident, $hard:ident, $aff:ident>,
        $v:ident, $xs:ident, $ab:expr, $db:expr, $out:ident,
        $k:ident, $vth:ident, $vr:ident,
        |$h:ident, $fire:ident| $emit:expr
    ) => {
        if $aff {
            for (((vi, &xi), oi), (&a, &d)) in $v
                .iter_mut()
                .zip($xs)
                .zip($out.iter_mut())
                .zip($ab.iter().zip($db))
            {
                let $h = $crate::cpu::row::charge::<$ch>(*vi, a * xi + d, $k, $vr);
                let $fire = $h - $vth >= 0.0;
                *oi = $emit;
                *vi = $crate::cpu::row::reset::<$hard>($h, $fire, $vth, $vr);
            }
        } else {
            for ((vi, &xi), oi) in $v.iter_mut().zip($xs).zip($out.iter_mut()) {
                let $h = $crate::cpu::row::charge::<$ch>(*vi, xi, $k, $vr);
                let $fire = $h - $vth >= 0.0;
                *oi = $emit;
                *vi = $crate::cpu::row::reset::<$hard>($h, $fire, $vth, $vr);
            }
        }
    };
}
pub(super) use neuron_row;

/// The scalar parameters of a backward task.
#[derive(Clone, Copy)]
pub(super) struct BwdParams<S> {
    pub(super) k: f32,
    pub(super) vth: f32,
    pub(super) vr: f32,
    pub(super) sg: S,
}

/// dL/dh_t of one neuron from its membrane `h`, the spike gradient `g_s` and the carried
/// dL/dv_t `g_v` (updated to dL/dv_{t-1} = a * dL/dh_t).
#[inline(always)]
fn bptt_step<const HARD: bool, const DETACH: bool, S: SurrogateGrad>(
    h: f32,
    g_s: f32,
    g_v: &mut f32,
    a: f32,
    vth: f32,
    vr: f32,
    sg: S,
) -> f32 {
    let d = h - vth;
    let fire = d >= 0.0;
    let sgv = sg.grad(d);
    let dvdh = if HARD {
        let base = if fire { 0.0 } else { 1.0 };
        if DETACH { base } else { base + (vr - h) * sgv }
    } else if DETACH {
        1.0
    } else {
        1.0 - vth * sgv
    };
    let gh = g_s * sgv + *g_v * dvdh;
    *g_v = gh * a;
    gh
}

/// One row (time step) of BPTT over a block. Its own function, not inlined into the block
/// loop, and compiled per instruction set ([`bptt_row_avx2`]): inlined there, LLVM kept this
/// loop scalar (one `vdivss` per neuron for ATan, measured), since it could not prove that the
/// rows do not alias; as a function its slice arguments are `noalias` and it vectorises.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn bptt_row<const CH: u8, const HARD: bool, const DETACH: bool, const PLIF: bool, S>(
    hs: &[f32],
    hp: Option<&[f32]>,
    xs: &[f32],
    gss: &[f32],
    gv: &mut [f32],
    gk: &mut [f32],
    gxs: &mut [f32],
    pr: BwdParams<S>,
) where
    S: SurrogateGrad,
{
    let BwdParams { k, vth, vr, sg } = pr;
    let a = if CH == 0 { 1.0 } else { 1.0 - k };
    let b = if CH == 1 { k } else { 1.0 };
    if !PLIF {
        for ((&h, &g_s), (g_v, gx)) in hs.iter().zip(gss).zip(gv.iter_mut().zip(gxs.iter_mut())) {
            *gx = bptt_step::<HARD, DETACH, S>(h, g_s, g_v, a, vth, vr, sg) * b;
        }
        return;
    }
    let len = hs.len();
    let (xs, gss, gv, gk, gxs) = (
        &xs[..len],
        &gss[..len],
        &mut gv[..len],
        &mut gk[..len],
        &mut gxs[..len],
    );
    match hp {
        Some(hp) => {
            let hp = &hp[..len];
            for i in 0..len {
                let gh = bptt_step::<HARD, DETACH, S>(hs[i], gss[i], &mut gv[i], a, vth, vr, sg);
                gxs[i] = gh * b;
                let vp = reset::<HARD>(hp[i], hp[i] - vth >= 0.0, vth, vr);
                let dhdk = if CH == 1 {
                    xs[i] - (vp - vr)
                } else {
                    -(vp - vr)
                };
                gk[i] += gh * dhdk;
            }
        }
        None => {
            for i in 0..len {
                let gh = bptt_step::<HARD, DETACH, S>(hs[i], gss[i], &mut gv[i], a, vth, vr, sg);
                gxs[i] = gh * b;
                // v_{-1} = vr, so (v - vr) = 0.
                let dhdk = if CH == 1 { xs[i] } else { 0.0 };
                gk[i] += gh * dhdk;
            }
        }
    }
}

/// [`bptt_row`] as an out-of-line baseline function (see there why).
#[allow(clippy::too_many_arguments)]
#[inline(never)]
pub(super) fn bptt_row_base<
    const CH: u8,
    const HARD: bool,
    const DETACH: bool,
    const PLIF: bool,
    S,
>(
    hs: &[f32],
    hp: Option<&[f32]>,
    xs: &[f32],
    gss: &[f32],
    gv: &mut [f32],
    gk: &mut [f32],
    gxs: &mut [f32],
    pr: BwdParams<S>,
) where
    S: SurrogateGrad,
{
    bptt_row::<CH, HARD, DETACH, PLIF, S>(hs, hp, xs, gss, gv, gk, gxs, pr)
}

/// [`bptt_row`] as an out-of-line function compiled with AVX2 and FMA (see there why).
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[allow(clippy::too_many_arguments)]
#[inline(never)]
#[cfg_attr(target_arch = "x86_64", target_feature(enable = "avx2,fma"))]
pub(super) unsafe fn bptt_row_avx2<
    const CH: u8,
    const HARD: bool,
    const DETACH: bool,
    const PLIF: bool,
    S,
>(
    hs: &[f32],
    hp: Option<&[f32]>,
    xs: &[f32],
    gss: &[f32],
    gv: &mut [f32],
    gk: &mut [f32],
    gxs: &mut [f32],
    pr: BwdParams<S>,
) where
    S: SurrogateGrad,
{
    bptt_row::<CH, HARD, DETACH, PLIF, S>(hs, hp, xs, gss, gv, gk, gxs, pr)
}
