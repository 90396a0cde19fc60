//! `chunk_state_bwd_db` [_chunk_state_bwd_db]: the gradient of `B` through the chunk's own state
//! `S_c = Σ_s [id_s = id_end] exp(a_last − a_s) Δ_s x_s ⊗ B_s`, and the adjoint `ddA_next` of
//! the per-step log decays inside that sum.
//!
//! `dB_s[n] += Σ_{heads of the group} [id_s = id_end] Δ_s exp(a_last − a_s) Σ_p dS_c[p, n] x_s[p]`;
//! with `U_s = [id_s = id_end] Δ_s exp(a_last − a_s) ⟨x_s ⊗ B_s, dS_c⟩` and
//! `a_last − a_s = Σ_{s < k ≤ last} Δ_k A`, `ddA_next_k = Σ_{s < k} U_s` (an exclusive prefix
//! sum), 0 at padded positions.

use crate::chunking::{check_bhcq, chunk_bounds, chunk_end_id, seq_id};
use crate::validate::{check_groups, check_shape};
use crate::SsdError;
use ndarray::{Array4, ArrayView2, ArrayView4, ArrayView5};

/// Returns `(db_blgn, ddA_next_bhcq)`.
pub fn chunk_state_bwd_db(
    x_blhp: ArrayView4<'_, f64>,
    b_blgn: ArrayView4<'_, f64>,
    dt_bhcq: ArrayView4<'_, f64>,
    dacs_bhcq: ArrayView4<'_, f64>,
    dstates_bchpn: ArrayView5<'_, f64>,
    seq_idx: Option<ArrayView2<'_, i32>>,
) -> Result<(Array4<f64>, Array4<f64>), SsdError> {
    let (nb, l, nh, np) = x_blhp.dim();
    let (_, _, ng, nn) = b_blgn.dim();
    check_shape("B", &[nb, l, ng, nn], b_blgn.shape())?;
    check_groups(nh, ng)?;
    let (nc, q) = check_bhcq("dt", dt_bhcq.shape(), nb, nh, l)?;
    check_shape("dA_cumsum", dt_bhcq.shape(), dacs_bhcq.shape())?;
    check_shape("dstates", &[nb, nc, nh, np, nn], dstates_bchpn.shape())?;
    if let Some(s) = &seq_idx {
        check_shape("seq_idx", &[nb, l], s.shape())?;
    }
    let hpg = nh / ng;
    let sref = seq_idx.as_ref();
    let mut db = Array4::<f64>::zeros((nb, l, ng, nn));
    let mut dda = Array4::<f64>::zeros((nb, nh, nc, q));
    let mut sx = vec![0.0; nn];
    for b in 0..nb {
        for c in 0..nc {
            let (start, len) = chunk_bounds(c, q, l);
            let end_id = chunk_end_id(sref, b, c, q, l);
            for h in 0..nh {
                let g = h / hpg;
                let a_last = dacs_bhcq[[b, h, c, q - 1]];
                let mut prefix = 0.0;
                for j in 0..len {
                    // ddA_next_j = Σ_{s < j} U_s
                    dda[[b, h, c, j]] = prefix;
                    let t = start + j;
                    if seq_id(sref, b, t) != end_id {
                        continue;
                    }
                    let w = dt_bhcq[[b, h, c, j]] * (a_last - dacs_bhcq[[b, h, c, j]]).exp();
                    // sx[n] = Σ_p dS[p, n] x_s[p]
                    for n in 0..nn {
                        let mut acc = 0.0;
                        for p in 0..np {
                            acc += dstates_bchpn[[b, c, h, p, n]] * x_blhp[[b, t, h, p]];
                        }
                        sx[n] = acc;
                    }
                    let mut u = 0.0;
                    for n in 0..nn {
                        db[[b, t, g, n]] += w * sx[n];
                        u += sx[n] * b_blgn[[b, t, g, n]];
                    }
                    prefix += w * u;
                }
            }
        }
    }
    Ok((db, dda))
}
