//! `bmm_chunk_bwd` [_bmm_chunk_bwd]: the adjoint of `bmm_chunk` (`CB[l, s] = C_l · B_s` within a
//! chunk and group, 0 across `seq_idx` ids).
//!
//! `dB_s += Σ_l [id_l = id_s] dCB[l, s] C_l`, `dC_l += Σ_s [id_l = id_s] dCB[l, s] B_s`, over the
//! whole Q × Q block (entries at padded rows and columns are ignored). The chunk size is read
//! off `dcb_bcgqq`.

use crate::chunking::{chunk_bounds, seq_id};
use crate::validate::check_shape;
use crate::SsdError;
use ndarray::{Array4, ArrayView2, ArrayView4, ArrayView5};

/// Returns `(db_blgn, dc_blgn)`.
pub fn bmm_chunk_bwd(
    c_blgn: ArrayView4<'_, f64>,
    b_blgn: ArrayView4<'_, f64>,
    dcb_bcgqq: ArrayView5<'_, f64>,
    seq_idx: Option<ArrayView2<'_, i32>>,
) -> Result<(Array4<f64>, Array4<f64>), SsdError> {
    let (nb, l, ng, nn) = c_blgn.dim();
    check_shape("B", c_blgn.shape(), b_blgn.shape())?;
    let q = dcb_bcgqq.shape()[3];
    if q == 0 {
        return Err(SsdError::ZeroChunkSize);
    }
    let nc = l.div_ceil(q);
    check_shape("dCB", &[nb, nc, ng, q, q], dcb_bcgqq.shape())?;
    if let Some(s) = &seq_idx {
        check_shape("seq_idx", &[nb, l], s.shape())?;
    }
    let sref = seq_idx.as_ref();
    let mut db = Array4::<f64>::zeros((nb, l, ng, nn));
    let mut dc = Array4::<f64>::zeros((nb, l, ng, nn));
    for b in 0..nb {
        for c in 0..nc {
            let (start, len) = chunk_bounds(c, q, l);
            for g in 0..ng {
                for i in 0..len {
                    for j in 0..len {
                        if seq_id(sref, b, start + i) != seq_id(sref, b, start + j) {
                            continue;
                        }
                        let w = dcb_bcgqq[[b, c, g, i, j]];
                        for n in 0..nn {
                            db[[b, start + j, g, n]] += w * c_blgn[[b, start + i, g, n]];
                            dc[[b, start + i, g, n]] += w * b_blgn[[b, start + j, g, n]];
                        }
                    }
                }
            }
        }
    }
    Ok((db, dc))
}
