//! Validation at the public boundary: [`ssd_reference::validate`]'s checks in its order and with
//! its errors, but with the finiteness scan of the large tensors vectorised (the reference's
//! scalar scan over x, B, C, z took 4–6% of the S2 forward). A tensor that holds a non-finite
//! value is handed to the reference's `check_finite`, so the error is the reference's exactly.

use crate::par::{for_each_tile, Par};
use ndarray::{ArrayView, Dimension};
use ssd_reference::validate::{check_finite, validate_with};
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

/// [`ssd_reference::validate`] for f32 inputs (same checks, order and errors), with the
/// vectorised finiteness scan.
pub(crate) fn validate(
    inputs: &Inputs<'_, f32>,
    options: &Options,
    par: Par,
) -> Result<Dims, SsdError> {
    validate_with(inputs, options, |tensor, values| {
        finite(tensor, &values, par)
    })
}
