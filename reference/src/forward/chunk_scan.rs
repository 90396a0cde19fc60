//! `chunk_scan` [_chunk_scan_fwd]: the output of every token.
//!
//! `y_l = [id_l = id_prev] exp(a_l) C_l · P_c + Σ_{s ≤ l} CB[l, s] exp(a_l − a_s) Δ_s x_s + D x_l`,
//! `out_l = y_l ⊙ silu(z_l)` when `z` is given. `id_prev` is the id of the last token before the
//! chunk (0 for the first chunk).

use crate::chunking::{check_bhcq, chunk_bounds, d_at, prev_chunk_end_id, seq_id};
use crate::validate::{check_d, check_shape};
use crate::{silu, SsdError};
use ndarray::{Array4, ArrayView2, ArrayView4, ArrayView5, ArrayViewD};

/// Returns `(out_blhp, y_blhp)`; `y` (the output before the `z` gate) only when `z` is given.
pub fn chunk_scan(
    cb_bcgqq: ArrayView5<'_, f64>,
    x_blhp: ArrayView4<'_, f64>,
    dt_bhcq: ArrayView4<'_, f64>,
    dacs_bhcq: ArrayView4<'_, f64>,
    c_blgn: ArrayView4<'_, f64>,
    prev_states_bchpn: ArrayView5<'_, f64>,
    d: Option<ArrayViewD<'_, f64>>,
    z_blhp: Option<ArrayView4<'_, f64>>,
    seq_idx: Option<ArrayView2<'_, i32>>,
) -> Result<(Array4<f64>, Option<Array4<f64>>), SsdError> {
    let (nb, l, nh, np) = x_blhp.dim();
    let (_, _, ng, nn) = c_blgn.dim();
    check_shape("C", &[nb, l, ng, nn], c_blgn.shape())?;
    crate::validate::check_groups(nh, ng)?;
    let (nc, q) = check_bhcq("dt", dt_bhcq.shape(), nb, nh, l)?;
    check_shape("dA_cumsum", dt_bhcq.shape(), dacs_bhcq.shape())?;
    check_shape("CB", &[nb, nc, ng, q, q], cb_bcgqq.shape())?;
    check_shape("states", &[nb, nc, nh, np, nn], prev_states_bchpn.shape())?;
    if let Some(d) = &d {
        check_d(d, nh, np)?;
    }
    if let Some(z) = &z_blhp {
        check_shape("z", &[nb, l, nh, np], z.shape())?;
    }
    if let Some(s) = &seq_idx {
        check_shape("seq_idx", &[nb, l], s.shape())?;
    }
    let hpg = nh / ng;
    let sref = seq_idx.as_ref();
    let mut y = Array4::<f64>::zeros((nb, l, nh, np));
    for b in 0..nb {
        for c in 0..nc {
            let (start, len) = chunk_bounds(c, q, l);
            let prev_id = prev_chunk_end_id(sref, b, c, q);
            for h in 0..nh {
                let g = h / hpg;
                for i in 0..len {
                    let t = start + i;
                    let a_l = dacs_bhcq[[b, h, c, i]];
                    let from_state = seq_id(sref, b, t) == prev_id;
                    let e_l = a_l.exp();
                    for p in 0..np {
                        let mut acc = 0.0;
                        if from_state {
                            let mut dot = 0.0;
                            for n in 0..nn {
                                dot += c_blgn[[b, t, g, n]] * prev_states_bchpn[[b, c, h, p, n]];
                            }
                            acc += e_l * dot;
                        }
                        for j in 0..=i {
                            let w = cb_bcgqq[[b, c, g, i, j]]
                                * (a_l - dacs_bhcq[[b, h, c, j]]).exp()
                                * dt_bhcq[[b, h, c, j]];
                            acc += w * x_blhp[[b, start + j, h, p]];
                        }
                        if let Some(d) = &d {
                            acc += d_at(d, h, p) * x_blhp[[b, t, h, p]];
                        }
                        y[[b, t, h, p]] = acc;
                    }
                }
            }
        }
    }
    match z_blhp {
        Some(z) => {
            let mut out = y.clone();
            ndarray::Zip::from(&mut out)
                .and(&z)
                .for_each(|o, &zv| *o *= silu(zv));
            Ok((out, Some(y)))
        }
        None => Ok((y, None)),
    }
}
