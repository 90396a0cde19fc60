//! Validation at the public boundary: [`ssd_reference::validate`]'s checks in its order and with
//! its errors, but with the finiteness scan of the large tensors vectorised (the reference's
//! scalar scan over x, B, C, z took 4–6% of the S2 forward). A tensor that holds a non-finite
//! value is handed to the reference's `check_finite`, so the error is the reference's exactly.

use crate::par::{for_each_tile, Par};
use ndarray::{ArrayView, Dimension};
use ssd_reference::validate::{
    check_a, check_d, check_dt_limit, check_finite, check_groups, check_seq_idx, check_shape,
};
use ssd_reference::{Dims, Inputs, Options, SsdError};
use std::sync::atomic::{AtomicBool, Ordering};

/// Whether every element of `s` is finite (branch-free blocks, so the compiler vectorises;
/// pieces of 64 Ki elements spread over `par`).
fn all_finite(s: &[f32], par: Par) -> bool {
    let ok = AtomicBool::new(true);
    let pieces: Vec<&[f32]> = s.chunks(1 << 16).collect();
    for_each_tile(
        par,
        pieces,
        || (),
        |_, piece| {
            let fine = piece
                .chunks(256)
                .all(|c| c.iter().fold(true, |ok, v| ok & v.is_finite()));
            if !fine {
                ok.store(false, Ordering::Relaxed);
            }
        },
    );
    ok.into_inner()
}

/// The reference's `check_finite`, with a vectorised pass first.
pub(crate) fn finite<D: Dimension>(
    tensor: &'static str,
    v: &ArrayView<'_, f32, D>,
    par: Par,
) -> Result<(), SsdError> {
    match v.as_slice_memory_order() {
        Some(s) if all_finite(s, par) => Ok(()),
        _ => check_finite(tensor, v),
    }
}

/// [`ssd_reference::validate`] for f32 inputs (same checks, order and errors).
pub(crate) fn validate(
    inputs: &Inputs<'_, f32>,
    options: &Options,
    par: Par,
) -> Result<Dims, SsdError> {
    let (batch, seqlen, nheads, headdim) = inputs.x.dim();
    let (_, _, ngroups, dstate) = inputs.b.dim();
    let dims = Dims {
        batch,
        seqlen,
        nheads,
        headdim,
        ngroups,
        dstate,
    };
    if options.chunk_size == 0 {
        return Err(SsdError::ZeroChunkSize);
    }
    check_dt_limit(options.dt_limit)?;
    check_shape("dt", &[batch, seqlen, nheads], inputs.dt.shape())?;
    check_shape("A", &[nheads], inputs.a.shape())?;
    check_shape("B", &[batch, seqlen, ngroups, dstate], inputs.b.shape())?;
    check_groups(nheads, ngroups)?;
    check_shape("C", &[batch, seqlen, ngroups, dstate], inputs.c.shape())?;
    if let Some(d) = &inputs.d {
        check_d(d, nheads, headdim)?;
    }
    if let Some(z) = &inputs.z {
        check_shape("z", &[batch, seqlen, nheads, headdim], z.shape())?;
    }
    if let Some(v) = &inputs.dt_bias {
        check_shape("dt_bias", &[nheads], v.shape())?;
    }
    if let Some(v) = &inputs.initial_states {
        check_shape(
            "initial_states",
            &[batch, nheads, headdim, dstate],
            v.shape(),
        )?;
    }
    if let Some(s) = &inputs.seq_idx {
        check_shape("seq_idx", &[batch, seqlen], s.shape())?;
        check_seq_idx(s)?;
    }
    check_a(&inputs.a)?;
    finite("x", &inputs.x, par)?;
    finite("dt", &inputs.dt, par)?;
    finite("B", &inputs.b, par)?;
    finite("C", &inputs.c, par)?;
    if let Some(d) = &inputs.d {
        finite("D", d, par)?;
    }
    if let Some(z) = &inputs.z {
        finite("z", z, par)?;
    }
    if let Some(v) = &inputs.dt_bias {
        finite("dt_bias", v, par)?;
    }
    if let Some(v) = &inputs.initial_states {
        finite("initial_states", v, par)?;
    }
    Ok(dims)
}
