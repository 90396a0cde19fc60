//! `chunk_scan_bwd_dstates` [_chunk_scan_bwd_dstates]: the gradient of the state entering each
//! chunk through the outputs of the chunk's tokens.
//!
//! `dP_c[p, n] = Σ_{l in c, id_l = id_prev} exp(a_l) dy_l[p] C_l[n]`, where `id_prev` is the id of
//! the last token before the chunk (0 for the first chunk): the adjoint of the state term
//! `exp(a_l) C_l · P_c` of `chunk_scan`. Output (b, c, h, p, n).

use crate::chunking::{check_bhcq, chunk_bounds, prev_chunk_end_id, seq_id};
use crate::validate::{check_groups, check_shape};
use crate::SsdError;
use ndarray::{Array5, ArrayView2, ArrayView4};

/// Returns `dprev_states_bchpn`.
pub fn chunk_scan_bwd_dstates(
    c_blgn: ArrayView4<'_, f64>,
    dy_blhp: ArrayView4<'_, f64>,
    dacs_bhcq: ArrayView4<'_, f64>,
    seq_idx: Option<ArrayView2<'_, i32>>,
) -> Result<Array5<f64>, SsdError> {
    let (nb, l, nh, np) = dy_blhp.dim();
    let (_, _, ng, nn) = c_blgn.dim();
    check_shape("C", &[nb, l, ng, nn], c_blgn.shape())?;
    check_groups(nh, ng)?;
    let (nc, q) = check_bhcq("dA_cumsum", dacs_bhcq.shape(), nb, nh, l)?;
    if let Some(s) = &seq_idx {
        check_shape("seq_idx", &[nb, l], s.shape())?;
    }
    let hpg = nh / ng;
    let sref = seq_idx.as_ref();
    let mut out = Array5::<f64>::zeros((nb, nc, nh, np, nn));
    for b in 0..nb {
        for c in 0..nc {
            let (start, len) = chunk_bounds(c, q, l);
            let prev_id = prev_chunk_end_id(sref, b, c, q);
            for h in 0..nh {
                let g = h / hpg;
                for i in 0..len {
                    let t = start + i;
                    if seq_id(sref, b, t) != prev_id {
                        continue;
                    }
                    let e = dacs_bhcq[[b, h, c, i]].exp();
                    for p in 0..np {
                        let w = e * dy_blhp[[b, t, h, p]];
                        for n in 0..nn {
                            out[[b, c, h, p, n]] += w * c_blgn[[b, t, g, n]];
                        }
                    }
                }
            }
        }
    }
    Ok(out)
}
