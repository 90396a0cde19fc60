//! `chunk_cumsum` [_chunk_cumsum_fwd]: processed time steps and their within-chunk cumsum.
//!
//! `Δ_t = clamp(softplus?(dt_t + dt_bias))`, `a_l = Σ_{k ≤ l, k in chunk} Δ_k A_h`; outputs
//! (b, h, c, Q), zero-padded (Δ = 0, `a` flat) past l.
//!
//! Δ and the cumsum are computed in f64 and rounded once. Internally the cumsum is kept as an
//! f32 pair `hi + lo` (`hi` = the rounded value, `lo` = the rounding error): the chunked kernels
//! exponentiate differences `a_l − a_s` of nearby entries, which are exact in f32 when formed
//! from `hi` (Sterbenz) and then corrected by `lo`, so deep into a chunk (|a| ≫ 1) the decay
//! factors keep f32 relative accuracy instead of `ulp(|a|)`.

use crate::geom::{flat, Geom};
use crate::par::{for_each_tile, split_mut, Par};
use crate::simd::process_dt;
use crate::SsdError;
use ndarray::{Array4, ArrayView1, ArrayView3};
use ssd_reference::chunking::check_cumsum_args;
use ssd_reference::Options;

/// Fills `dt_out`, `hi`, `lo` (each (b, h, c, Q)) from `dt` (b, l, h).
pub(crate) fn chunk_cumsum_core(
    g: &Geom,
    dt: &[f32],
    a: &[f32],
    bias: Option<&[f32]>,
    options: &Options,
    dt_out: &mut [f32],
    hi: &mut [f32],
    lo: &mut [f32],
    par: Par,
) {
    let per = g.nc * g.q;
    let tiles: Vec<_> = split_mut(dt_out, g.nb * g.nh, per)
        .into_iter()
        .zip(split_mut(hi, g.nb * g.nh, per))
        .zip(split_mut(lo, g.nb * g.nh, per))
        .enumerate()
        .collect();
    for_each_tile(
        par,
        tiles,
        || (),
        |_, (i, ((dt_o, hi_o), lo_o))| {
            let (b, h) = (i / g.nh, i % g.nh);
            let bias = bias.map_or(0.0, |v| v[h]);
            let ah = a[h] as f64;
            for c in 0..g.nc {
                let mut acc = 0.0f64;
                for k in 0..g.q {
                    let t = c * g.q + k;
                    let delta = if t < g.l {
                        process_dt(
                            dt[(b * g.l + t) * g.nh + h],
                            bias,
                            options.dt_softplus,
                            options.dt_limit,
                        )
                    } else {
                        0.0
                    };
                    acc += delta * ah;
                    let j = c * g.q + k;
                    dt_o[j] = delta as f32;
                    let hv = acc as f32;
                    hi_o[j] = hv;
                    lo_o[j] = (acc - hv as f64) as f32;
                }
            }
        },
    );
}

/// Returns `(dt_bhcq, dacs_bhcq)`, both (b, h, c, Q).
///
/// Errors: shapes of `A` and `dt_bias`, a zero chunk size, an invalid `dt_limit`.
pub fn chunk_cumsum(
    dt_blh: ArrayView3<'_, f32>,
    a_h: ArrayView1<'_, f32>,
    dt_bias_h: Option<ArrayView1<'_, f32>>,
    options: &Options,
    par: Par,
) -> Result<(Array4<f32>, Array4<f32>), SsdError> {
    let (nb, l, nh) = dt_blh.dim();
    check_cumsum_args(
        nh,
        l,
        a_h.shape(),
        dt_bias_h.as_ref().map(|v| v.shape()),
        options,
    )?;
    let g = Geom::new(
        ssd_reference::Dims {
            batch: nb,
            seqlen: l,
            nheads: nh,
            headdim: 0,
            ngroups: 1,
            dstate: 0,
        },
        options.chunk_size,
    );
    let shape = (nb, nh, g.nc, g.q);
    let mut dt_o = Array4::<f32>::zeros(shape);
    let mut hi = Array4::<f32>::zeros(shape);
    let mut lo = vec![0.0f32; hi.len()];
    let dt = flat(&dt_blh);
    let a = flat(&a_h);
    let bias = dt_bias_h.as_ref().map(flat);
    chunk_cumsum_core(
        &g,
        &dt,
        &a,
        bias.as_deref(),
        options,
        dt_o.as_slice_mut().expect("owned array is contiguous"),
        hi.as_slice_mut().expect("owned array is contiguous"),
        &mut lo,
        par,
    );
    Ok((dt_o, hi))
}
