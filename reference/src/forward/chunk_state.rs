//! `chunk_state` [_chunk_state_fwd]: the state each chunk builds from its own tokens.
//!
//! `S_c[p, n] = Σ_s exp(a_last − a_s) Δ_s x_s[p] B_s[n]` over the tokens `s` of chunk `c`
//! whose `seq_idx` equals that of the chunk's last token. Output (b, c, h, p, n).

use crate::chunking::{check_bhcq, chunk_bounds, chunk_end_id, seq_id};
use crate::validate::check_shape;
use crate::SsdError;
use ndarray::{Array5, ArrayView2, ArrayView4};

/// Returns `states_bchpn`.
pub fn chunk_state(
    b_blgn: ArrayView4<'_, f64>,
    x_blhp: ArrayView4<'_, f64>,
    dt_bhcq: ArrayView4<'_, f64>,
    dacs_bhcq: ArrayView4<'_, f64>,
    seq_idx: Option<ArrayView2<'_, i32>>,
) -> Result<Array5<f64>, SsdError> {
    let (nb, l, nh, np) = x_blhp.dim();
    let (_, _, ng, nn) = b_blgn.dim();
    check_shape("B", &[nb, l, ng, nn], b_blgn.shape())?;
    crate::validate::check_groups(nh, ng)?;
    let (nc, q) = check_bhcq("dt", dt_bhcq.shape(), nb, nh, l)?;
    check_shape("dA_cumsum", dt_bhcq.shape(), dacs_bhcq.shape())?;
    if let Some(s) = &seq_idx {
        check_shape("seq_idx", &[nb, l], s.shape())?;
    }
    let hpg = nh / ng;
    let sref = seq_idx.as_ref();
    let mut out = Array5::<f64>::zeros((nb, nc, nh, np, nn));
    for b in 0..nb {
        for c in 0..nc {
            let (start, len) = chunk_bounds(c, q, l);
            let last_id = chunk_end_id(sref, b, c, q, l);
            for h in 0..nh {
                let g = h / hpg;
                let a_last = dacs_bhcq[[b, h, c, q - 1]];
                for i in 0..len {
                    let t = start + i;
                    if seq_id(sref, b, t) != last_id {
                        continue;
                    }
                    let w = (a_last - dacs_bhcq[[b, h, c, i]]).exp() * dt_bhcq[[b, h, c, i]];
                    for p in 0..np {
                        let wx = w * x_blhp[[b, t, h, p]];
                        for n in 0..nn {
                            out[[b, c, h, p, n]] += wx * b_blgn[[b, t, g, n]];
                        }
                    }
                }
            }
        }
    }
    Ok(out)
}
