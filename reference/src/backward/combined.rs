//! The combined chunked backward [_mamba_chunk_scan_combined_bwd]: recompute the forward
//! intermediates, then the backward kernels in upstream's order:
//! `chunk_scan_bwd_dz` → `chunk_scan_bwd_dstates` → `state_passing_bwd` →
//! `chunk_scan_chunk_state_bwd_dx` → `chunk_state_bwd_db` → `chunk_scan_bwd_dc` →
//! `chunk_scan_bwd_dcb` → `bmm_chunk_bwd` → `chunk_scan_bwd_ddacs_stable` → `chunk_cumsum_bwd`.
//!
//! Assembly (per chunk): `V[last valid] += ddA_chunk`; `ddA_prev` = reverse cumsum of `V`;
//! `ddA = ddA_intra + ddA_next + ddA_prev`. The four producers are also returned separately as
//! [`AAdjoint`]: `prev` is the reverse cumsum of `V` alone and `chunk` the reverse cumsum of the
//! `ddA_chunk` term alone (`ddA_chunk_c` at every valid position of chunk c).

use super::{
    bmm_chunk_bwd, chunk_cumsum_bwd, chunk_scan_bwd_dc, chunk_scan_bwd_dcb,
    chunk_scan_bwd_ddacs_stable, chunk_scan_bwd_dstates, chunk_scan_bwd_dz,
    chunk_scan_chunk_state_bwd_dx, chunk_state_bwd_db, state_passing_bwd,
};
use crate::chunking::chunk_bounds;
use crate::validate::check_shape;
use crate::{validate, AAdjoint, ChunkedForward, Gradients, Inputs, Options, SsdError};
use ndarray::{Array4, ArrayView4};

/// Gradients of the SSD op by the chunked algorithm, and the four contributions to the adjoint
/// of the per-step log decay `Δ_k A` (each (b, h, c, Q), 0 at padded positions).
///
/// `dout` is (b, l, h, p); `dfinal_states` (b, h, p, n) seeds the final states (0 if absent).
pub fn mamba_chunk_scan_combined_bwd(
    inputs: &Inputs<'_, f64>,
    options: &Options,
    dout: ArrayView4<'_, f64>,
    dfinal_states: Option<ArrayView4<'_, f64>>,
) -> Result<(Gradients<f64>, AAdjoint<f64>), SsdError> {
    let dims = validate(inputs, options)?;
    let (nb, l, nh, np, ng, nn) = (
        dims.batch,
        dims.seqlen,
        dims.nheads,
        dims.headdim,
        dims.ngroups,
        dims.dstate,
    );
    check_shape("dout", &[nb, l, nh, np], dout.shape())?;
    if let Some(v) = &dfinal_states {
        check_shape("dfinal_states", &[nb, nh, np, nn], v.shape())?;
    }
    let f = ChunkedForward::run(inputs, options)?;
    let seq_idx = inputs.seq_idx;

    let (dy, dz, dd) = chunk_scan_bwd_dz(
        dout,
        inputs.x,
        f.y.as_ref().map(|v| v.view()),
        inputs.z,
        inputs.d.clone(),
    )?;
    let dprev = chunk_scan_bwd_dstates(inputs.c, dy.view(), f.dacs_bhcq.view(), seq_idx)?;
    let (dstates, dinit, dda_chunk) = state_passing_bwd(
        f.prev_states_bchpn.view(),
        f.dacs_bhcq.view(),
        dprev.view(),
        dfinal_states,
        seq_idx,
        l,
    )?;
    let (dx, ddt_direct) = chunk_scan_chunk_state_bwd_dx(
        inputs.x,
        f.dt_bhcq.view(),
        f.dacs_bhcq.view(),
        inputs.b,
        f.cb_bcgqq.view(),
        dy.view(),
        dstates.view(),
        inputs.d.clone(),
        seq_idx,
    )?;
    let (mut db, dda_next) = chunk_state_bwd_db(
        inputs.x,
        inputs.b,
        f.dt_bhcq.view(),
        f.dacs_bhcq.view(),
        dstates.view(),
        seq_idx,
    )?;
    let (mut dc, v_prev) = chunk_scan_bwd_dc(
        f.prev_states_bchpn.view(),
        f.dacs_bhcq.view(),
        inputs.c,
        dy.view(),
        seq_idx,
    )?;
    let dcb = chunk_scan_bwd_dcb(
        inputs.x,
        f.dt_bhcq.view(),
        f.dacs_bhcq.view(),
        dy.view(),
        ng,
    )?;
    let (db_cb, dc_cb) = bmm_chunk_bwd(inputs.c, inputs.b, dcb.view(), seq_idx)?;
    db += &db_cb;
    dc += &dc_cb;
    let dda_intra = chunk_scan_bwd_ddacs_stable(
        inputs.x,
        f.dt_bhcq.view(),
        f.dacs_bhcq.view(),
        dy.view(),
        f.cb_bcgqq.view(),
    )?;

    // Assembly: reverse cumsums within each chunk over its valid positions.
    let q = options.chunk_size;
    let nc = l.div_ceil(q);
    let mut prev = Array4::<f64>::zeros((nb, nh, nc, q));
    let mut chunk = Array4::<f64>::zeros((nb, nh, nc, q));
    let mut dda = Array4::<f64>::zeros((nb, nh, nc, q));
    for b in 0..nb {
        for h in 0..nh {
            for c in 0..nc {
                let (_, len) = chunk_bounds(c, q, l);
                let mut acc_v = 0.0;
                let mut acc_all = 0.0;
                for i in (0..len).rev() {
                    let mut vi = v_prev[[b, h, c, i]];
                    acc_v += vi;
                    if i + 1 == len {
                        vi += dda_chunk[[b, h, c]];
                    }
                    acc_all += vi;
                    prev[[b, h, c, i]] = acc_v;
                    chunk[[b, h, c, i]] = dda_chunk[[b, h, c]];
                    dda[[b, h, c, i]] = dda_intra[[b, h, c, i]] + dda_next[[b, h, c, i]] + acc_all;
                }
            }
        }
    }
    let (ddt, da, ddt_bias) = chunk_cumsum_bwd(
        dda.view(),
        ddt_direct.view(),
        inputs.dt,
        inputs.a,
        inputs.dt_bias,
        options,
    )?;
    let grads = Gradients {
        dx,
        ddt,
        da,
        db,
        dc,
        dd,
        dz,
        ddt_bias,
        dinitial_states: inputs.initial_states.map(|_| dinit),
    };
    let adjoint = AAdjoint {
        intra: dda_intra,
        next: dda_next,
        prev,
        chunk,
    };
    Ok((grads, adjoint))
}

/// The chunked backward under the reference's form name: the same as
/// [`mamba_chunk_scan_combined_bwd`].
pub fn ssd_chunked_bwd(
    inputs: &Inputs<'_, f64>,
    options: &Options,
    dout: ArrayView4<'_, f64>,
    dfinal_states: Option<ArrayView4<'_, f64>>,
) -> Result<(Gradients<f64>, AAdjoint<f64>), SsdError> {
    mamba_chunk_scan_combined_bwd(inputs, options, dout, dfinal_states)
}
