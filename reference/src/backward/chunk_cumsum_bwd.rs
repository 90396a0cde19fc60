//! `chunk_cumsum_bwd` [_chunk_cumsum_bwd]: from the adjoints of `Δ_k A` and of the explicit `Δ`
//! factors back to the raw `dt`, `A` and `dt_bias`.
//!
//! `dΔ = ddA · A + ddt_direct`; `ddt = dΔ · ∂Δ/∂u` (0 where `dt_limit` clamps, `σ(u)` through
//! the softplus for `u ≤ 20`, 1 otherwise), scattered back to (b, l, h);
//! `dA_h = Σ ddA · Δ`, `ddt_bias_h = Σ_{b, l} ddt`. Padded positions are ignored.

use crate::chunking::check_cumsum_bwd_args;
use crate::{process_dt, process_dt_grad, Options, SsdError};
use ndarray::{Array1, Array3, ArrayView1, ArrayView3, ArrayView4};

/// Returns `(ddt_blh, da_h, ddt_bias_h?)`; `ddt_bias` when `dt_bias` is given.
pub fn chunk_cumsum_bwd(
    dda_bhcq: ArrayView4<'_, f64>,
    ddt_direct_bhcq: ArrayView4<'_, f64>,
    dt_blh: ArrayView3<'_, f64>,
    a_h: ArrayView1<'_, f64>,
    dt_bias_h: Option<ArrayView1<'_, f64>>,
    options: &Options,
) -> Result<(Array3<f64>, Array1<f64>, Option<Array1<f64>>), SsdError> {
    let (nb, l, nh) = dt_blh.dim();
    let (_, q) = check_cumsum_bwd_args(
        nb,
        l,
        nh,
        a_h.shape(),
        dt_bias_h.as_ref().map(|v| v.shape()),
        dda_bhcq.shape(),
        ddt_direct_bhcq.shape(),
        options,
    )?;
    let mut ddt = Array3::<f64>::zeros((nb, l, nh));
    let mut da = Array1::<f64>::zeros(nh);
    let mut dbias = dt_bias_h.as_ref().map(|_| Array1::<f64>::zeros(nh));
    for h in 0..nh {
        let bias = dt_bias_h.as_ref().map_or(0.0, |v| v[h]);
        let mut da_acc = 0.0;
        let mut dbias_acc = 0.0;
        for b in 0..nb {
            for t in 0..l {
                let (c, i) = (t / q, t % q);
                let raw = dt_blh[[b, t, h]];
                let delta = process_dt(raw, bias, options.dt_softplus, options.dt_limit);
                let dda = dda_bhcq[[b, h, c, i]];
                let ddelta = dda * a_h[h] + ddt_direct_bhcq[[b, h, c, i]];
                let g = ddelta * process_dt_grad(raw, bias, options.dt_softplus, options.dt_limit);
                ddt[[b, t, h]] = g;
                da_acc += dda * delta;
                dbias_acc += g;
            }
        }
        da[h] = da_acc;
        if let Some(v) = &mut dbias {
            v[h] = dbias_acc;
        }
    }
    Ok((ddt, da, dbias))
}
