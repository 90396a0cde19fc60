//! Validation at the public boundary: [`ssd_reference::validate`]'s checks in its order and with
//! its errors, but with the finiteness scan of the large tensors vectorised (the reference's
//! scalar scan over x, B, C, z took 4–6% of the S2 forward). A tensor that holds a non-finite
//! value is handed to the reference's `check_finite`, so the error is the reference's exactly.

use ndarray::{ArrayView, Dimension};
use ssd_reference::validate::{
    check_a, check_d, check_dt_limit, check_finite, check_groups, check_seq_idx, check_shape,
};
use ssd_reference::{Dims, Inputs, Options, SsdError};

/// Whether every element of `s` is finite (branch-free blocks, so the compiler vectorises).
fn all_finite(s: &[f32]) -> bool {
    s.chunks(256)
        .all(|c| c.iter().fold(true, |ok, v| ok & v.is_finite()))
}

/// The reference's `check_finite`, with a vectorised pass first.
pub(crate) fn finite<D: Dimension>(
    tensor: &'static str,
    v: &ArrayView<'_, f32, D>,
) -> Result<(), SsdError> {
    match v.as_slice_memory_order() {
        Some(s) if all_finite(s) => Ok(()),
        _ => check_finite(tensor, v),
    }
}

/// [`ssd_reference::validate`] for f32 inputs (same checks, order and errors).
pub(crate) fn validate(inputs: &Inputs<'_, f32>, options: &Options) -> Result<Dims, SsdError> {
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
    finite("x", &inputs.x)?;
    finite("dt", &inputs.dt)?;
    finite("B", &inputs.b)?;
    finite("C", &inputs.c)?;
    if let Some(d) = &inputs.d {
        finite("D", d)?;
    }
    if let Some(z) = &inputs.z {
        finite("z", z)?;
    }
    if let Some(v) = &inputs.dt_bias {
        finite("dt_bias", v)?;
    }
    if let Some(v) = &inputs.initial_states {
        finite("initial_states", v)?;
    }
    Ok(dims)
}
