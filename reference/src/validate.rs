//! The one validation entry point for the SSD op, shared by every backend.
//!
//! [`validate`] checks shapes against the dimensions implied by `x` and `B`, the group
//! structure, the options, `seq_idx`, the sign of `A` and the finiteness of every float input,
//! and returns the [`Dims`]. Kernels called after it need no further checks.

use crate::{Dims, Inputs, Options, SsdError};
use ndarray::{ArrayView2, ArrayViewD, Dimension};

/// Checks that `actual == expected`, naming the tensor otherwise.
pub fn check_shape(
    tensor: &'static str,
    expected: &[usize],
    actual: &[usize],
) -> Result<(), SsdError> {
    if expected == actual {
        Ok(())
    } else {
        Err(SsdError::ShapeMismatch {
            tensor,
            expected: expected.to_vec(),
            actual: actual.to_vec(),
        })
    }
}

/// The multi-index of position `flat` of a row-major array of `shape` (the inverse of the
/// row-major order `iter` visits).
pub fn unravel(flat: usize, shape: &[usize]) -> Vec<usize> {
    let mut index = vec![0; shape.len()];
    let mut rest = flat;
    for (k, &len) in shape.iter().enumerate().rev() {
        index[k] = rest % len;
        rest /= len;
    }
    index
}

/// Returns the first non-finite element of `values` as an error.
pub fn check_finite<'a, T, D>(
    tensor: &'static str,
    values: &ndarray::ArrayView<'a, T, D>,
) -> Result<(), SsdError>
where
    T: Copy + Into<f64>,
    D: Dimension,
{
    for (flat, &v) in values.iter().enumerate() {
        let v: f64 = v.into();
        if !v.is_finite() {
            // `iter` visits in logical row-major order
            return Err(SsdError::NonFinite {
                tensor,
                index: unravel(flat, values.shape()),
                value: v,
            });
        }
    }
    Ok(())
}

/// Checks `dt_limit`: `0 ≤ dt_min ≤ dt_max`, no NaN (`dt_max` may be `+∞`).
pub fn check_dt_limit(limit: (f64, f64)) -> Result<(), SsdError> {
    let (lo, hi) = limit;
    if lo.is_nan() || hi.is_nan() || lo < 0.0 || lo > hi || lo == f64::INFINITY {
        return Err(SsdError::InvalidDtLimit { min: lo, max: hi });
    }
    Ok(())
}

/// Checks `seq_idx` (b, l): non-negative and non-decreasing along each row.
pub fn check_seq_idx(seq_idx: &ArrayView2<'_, i32>) -> Result<(), SsdError> {
    for (bi, row) in seq_idx.outer_iter().enumerate() {
        let mut prev: Option<i32> = None;
        for (t, &id) in row.iter().enumerate() {
            if id < 0 {
                return Err(SsdError::SeqIdxNegative {
                    batch: bi,
                    position: t,
                    value: id as i64,
                });
            }
            if let Some(p) = prev {
                if id < p {
                    return Err(SsdError::SeqIdxDecreasing {
                        batch: bi,
                        position: t,
                        previous: p as i64,
                        value: id as i64,
                    });
                }
            }
            prev = Some(id);
        }
    }
    Ok(())
}

/// Checks that `A` is ≤ 0 everywhere (and finite).
pub fn check_a<T: Copy + Into<f64>>(a: &ndarray::ArrayView1<'_, T>) -> Result<(), SsdError> {
    check_finite("A", a)?;
    for (head, &v) in a.iter().enumerate() {
        let v: f64 = v.into();
        if v > 0.0 {
            return Err(SsdError::PositiveA { head, value: v });
        }
    }
    Ok(())
}

/// Checks `D`: shape (h) or (h, p).
pub fn check_d<T>(d: &ArrayViewD<'_, T>, nheads: usize, headdim: usize) -> Result<(), SsdError> {
    let ok = d.shape() == [nheads] || d.shape() == [nheads, headdim];
    if ok {
        Ok(())
    } else {
        let expected = if d.ndim() == 1 {
            vec![nheads]
        } else {
            vec![nheads, headdim]
        };
        Err(SsdError::ShapeMismatch {
            tensor: "D",
            expected,
            actual: d.shape().to_vec(),
        })
    }
}

/// Checks the group structure: `g ≥ 1` and `g | h`, `h ≥ 1`.
pub fn check_groups(nheads: usize, ngroups: usize) -> Result<(), SsdError> {
    if ngroups == 0 || nheads == 0 || !nheads.is_multiple_of(ngroups) {
        return Err(SsdError::GroupsDoNotDivideHeads { nheads, ngroups });
    }
    Ok(())
}

/// Validates a whole SSD problem and returns its dimensions.
///
/// Errors: [`SsdError::ShapeMismatch`] naming the tensor with expected and actual shapes,
/// [`SsdError::GroupsDoNotDivideHeads`], [`SsdError::ZeroChunkSize`],
/// [`SsdError::InvalidDtLimit`], [`SsdError::SeqIdxNegative`],
/// [`SsdError::SeqIdxDecreasing`], [`SsdError::PositiveA`], [`SsdError::NonFinite`].
///
/// An empty sequence (`l = 0`) is valid.
pub fn validate<T: Copy + Into<f64>>(
    inputs: &Inputs<'_, T>,
    options: &Options,
) -> Result<Dims, SsdError> {
    validate_with(inputs, options, |tensor, values| {
        check_finite(tensor, &values)
    })
}

/// [`validate`] with the caller's finiteness check of the float inputs (`x dt B C D z dt_bias
/// initial_states`, in that order), e.g. a vectorised one; every other check, their order and
/// their errors are [`validate`]'s. `finite` must return [`check_finite`]'s error for a
/// non-finite tensor.
pub fn validate_with<T: Copy + Into<f64>>(
    inputs: &Inputs<'_, T>,
    options: &Options,
    mut finite: impl FnMut(&'static str, ArrayViewD<'_, T>) -> Result<(), SsdError>,
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
    finite("x", inputs.x.view().into_dyn())?;
    finite("dt", inputs.dt.view().into_dyn())?;
    finite("B", inputs.b.view().into_dyn())?;
    finite("C", inputs.c.view().into_dyn())?;
    if let Some(d) = &inputs.d {
        finite("D", d.view().into_dyn())?;
    }
    if let Some(z) = &inputs.z {
        finite("z", z.view().into_dyn())?;
    }
    if let Some(v) = &inputs.dt_bias {
        finite("dt_bias", v.view().into_dyn())?;
    }
    if let Some(v) = &inputs.initial_states {
        finite("initial_states", v.view().into_dyn())?;
    }
    Ok(dims)
}
