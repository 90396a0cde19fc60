//! `chunk_cumsum_bwd` [_chunk_cumsum_bwd]: from the adjoints of `Δ_k A` and of the explicit `Δ`
//! factors back to the raw `dt`, `A` and `dt_bias`.
//!
//! `dΔ = ddA · A + ddt_direct`; `ddt = dΔ · ∂Δ/∂u` (0 where `dt_limit` clamps, `σ(u)` through
//! the softplus for `u ≤ 20`, 1 otherwise), scattered back to (b, l, h);
//! `dA_h = Σ ddA · Δ`, `ddt_bias_h = Σ_{b, l} ddt`. Padded positions are ignored.
//!
//! Per (batch, head) tile in f64 (Δ and its derivative recomputed from the raw `dt` as the
//! forward's `chunk_cumsum` does); the per-tile sums are added over the batch in row order.

use super::pack::local_geom;
use crate::geom::{flat, Geom};
use crate::par::{for_each_tile, split_mut, Par};
use crate::SsdError;
use ndarray::{Array1, Array3, ArrayView1, ArrayView3, ArrayView4};
use ssd_reference::chunking::check_cumsum_bwd_args;
use ssd_reference::Options;

/// `(Δ, ∂Δ/∂u)` of `u = dt + bias`: `ssd_reference::process_dt` and `process_dt_grad` in one.
#[inline]
pub(crate) fn delta_grad(dt: f64, bias: f64, softplus: bool, limit: (f64, f64)) -> (f64, f64) {
    let u = dt + bias;
    let (v, dv) = if softplus && u <= 20.0 {
        let e = u.exp();
        (e.ln_1p(), e / (1.0 + e))
    } else {
        (u, 1.0)
    };
    let grad = if v < limit.0 || v > limit.1 { 0.0 } else { dv };
    (v.clamp(limit.0, limit.1), grad)
}

/// One (b, h): `ddt` over the sequence into `ddt_l` (l), from `dda` (f64) and `ddt_direct`
/// (both the (c, Q) row of (b, h), position t at index t). Returns this row's `(dA_h,
/// ddt_bias_h)` terms summed in f64.
#[allow(clippy::too_many_arguments)]
pub(crate) fn cumsum_bwd_row(
    g: &Geom,
    dt_raw: &[f32],
    b: usize,
    h: usize,
    a_h: f64,
    bias: f64,
    options: &Options,
    dda: &[f64],
    ddt_direct: &[f32],
    ddt_l: &mut [f32],
) -> (f64, f64) {
    let (mut da, mut dbias) = (0.0f64, 0.0f64);
    for t in 0..g.l {
        let raw = dt_raw[(b * g.l + t) * g.nh + h] as f64;
        let (delta, grad) = delta_grad(raw, bias, options.dt_softplus, options.dt_limit);
        let dd = dda[t];
        let gv = (dd * a_h + ddt_direct[t] as f64) * grad;
        ddt_l[t] = gv as f32;
        da += dd * delta;
        dbias += gv;
    }
    (da, dbias)
}

/// `ddt` (b, l, h) from the (b, h, l) rows, and `dA`, `ddt_bias` from the per-(b, h) sums,
/// added over b in order.
pub(crate) fn finish(
    g: &Geom,
    ddt_bhl: &[f32],
    sums: &[(f64, f64)],
    with_bias: bool,
) -> (Array3<f32>, Array1<f32>, Option<Array1<f32>>) {
    let mut ddt = Array3::<f32>::zeros((g.nb, g.l, g.nh));
    {
        let o = ddt.as_slice_mut().expect("owned array is contiguous");
        for b in 0..g.nb {
            for h in 0..g.nh {
                let row = &ddt_bhl[(b * g.nh + h) * g.l..][..g.l];
                for (t, &v) in row.iter().enumerate() {
                    o[(b * g.l + t) * g.nh + h] = v;
                }
            }
        }
    }
    let mut da = Array1::<f32>::zeros(g.nh);
    let mut dbias = Array1::<f32>::zeros(g.nh);
    for h in 0..g.nh {
        let (mut a, mut bsum) = (0.0f64, 0.0f64);
        for b in 0..g.nb {
            a += sums[b * g.nh + h].0;
            bsum += sums[b * g.nh + h].1;
        }
        da[h] = a as f32;
        dbias[h] = bsum as f32;
    }
    (ddt, da, with_bias.then_some(dbias))
}

/// Returns `(ddt_blh, da_h, ddt_bias_h?)`; `ddt_bias` when `dt_bias` is given.
///
/// Errors: shapes (`A`, `dt_bias`, `ddA`, `ddt`), a zero chunk size, an invalid `dt_limit`.
pub fn chunk_cumsum_bwd(
    dda_bhcq: ArrayView4<'_, f32>,
    ddt_direct_bhcq: ArrayView4<'_, f32>,
    dt_blh: ArrayView3<'_, f32>,
    a_h: ArrayView1<'_, f32>,
    dt_bias_h: Option<ArrayView1<'_, f32>>,
    options: &Options,
    par: Par,
) -> Result<(Array3<f32>, Array1<f32>, Option<Array1<f32>>), SsdError> {
    let (nb, l, nh) = dt_blh.dim();
    let (nc, q) = check_cumsum_bwd_args(
        nb,
        l,
        nh,
        a_h.shape(),
        dt_bias_h.as_ref().map(|v| v.shape()),
        dda_bhcq.shape(),
        ddt_direct_bhcq.shape(),
        options,
    )?;
    let g = local_geom(
        ssd_reference::Dims {
            batch: nb,
            seqlen: l,
            nheads: nh,
            headdim: 0,
            ngroups: 1,
            dstate: 0,
        },
        q,
    );
    let (dda, ddt_direct, dt, a) = (
        flat(&dda_bhcq),
        flat(&ddt_direct_bhcq),
        flat(&dt_blh),
        flat(&a_h),
    );
    let bias = dt_bias_h.as_ref().map(flat);
    let mut ddt_bhl = vec![0.0f32; nb * nh * l];
    let mut sums = vec![(0.0f64, 0.0f64); nb * nh];
    let tiles: Vec<_> = split_mut(&mut ddt_bhl, nb * nh, l)
        .into_iter()
        .zip(sums.iter_mut())
        .enumerate()
        .collect();
    let row = nc * q;
    for_each_tile(
        par,
        tiles,
        || vec![0.0f64; row],
        |dda64, (i, (ddt_l, sum))| {
            let (b, h) = (i / nh, i % nh);
            for (d, &v) in dda64.iter_mut().zip(&dda[i * row..(i + 1) * row]) {
                *d = v as f64;
            }
            *sum = cumsum_bwd_row(
                &g,
                &dt,
                b,
                h,
                a[h] as f64,
                bias.as_deref().map_or(0.0, |v| v[h] as f64),
                options,
                dda64,
                &ddt_direct[i * row..(i + 1) * row],
                ddt_l,
            );
        },
    );
    Ok(finish(&g, &ddt_bhl, &sums, dt_bias_h.is_some()))
}
