//! `bmm_chunk` [_bmm_chunk_fwd]: `CB[l, s] = C_l · B_s` within each chunk and group.
//!
//! Output (b, c, g, Q, Q), the whole Q × Q block (the causal mask is applied by `chunk_scan`);
//! 0 between tokens of different `seq_idx` and at padded positions.

use crate::chunking::{chunk_bounds, seq_id};
use crate::validate::check_shape;
use crate::SsdError;
use ndarray::{Array5, ArrayView2, ArrayView4};

/// Returns `cb_bcgqq`.
pub fn bmm_chunk(
    c_blgn: ArrayView4<'_, f64>,
    b_blgn: ArrayView4<'_, f64>,
    chunk_size: usize,
    seq_idx: Option<ArrayView2<'_, i32>>,
) -> Result<Array5<f64>, SsdError> {
    let (nb, l, ng, nn) = c_blgn.dim();
    check_shape("B", c_blgn.shape(), b_blgn.shape())?;
    if chunk_size == 0 {
        return Err(SsdError::ZeroChunkSize);
    }
    if let Some(s) = &seq_idx {
        check_shape("seq_idx", &[nb, l], s.shape())?;
    }
    let q = chunk_size;
    let nc = l.div_ceil(q);
    let sref = seq_idx.as_ref();
    let mut cb = Array5::<f64>::zeros((nb, nc, ng, q, q));
    for b in 0..nb {
        for c in 0..nc {
            let (start, len) = chunk_bounds(c, q, l);
            for g in 0..ng {
                for i in 0..len {
                    for j in 0..len {
                        if seq_id(sref, b, start + i) != seq_id(sref, b, start + j) {
                            continue;
                        }
                        let mut acc = 0.0;
                        for n in 0..nn {
                            acc += c_blgn[[b, start + i, g, n]] * b_blgn[[b, start + j, g, n]];
                        }
                        cb[[b, c, g, i, j]] = acc;
                    }
                }
            }
        }
    }
    Ok(cb)
}
