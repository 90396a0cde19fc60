//! `chunk_scan_bwd_dc` [_chunk_scan_bwd_dc]: the gradient of `C` through the state term
//! `[id_l = id_prev] exp(a_l) C_l · P_c` of `chunk_scan`, and that term's gradient w.r.t. the
//! cumsum value `a_l`.
//!
//! `dC_l[n] += Σ_{heads of the group} [id_l = id_prev] exp(a_l) Σ_p P_c[p, n] dy_l[p]`,
//! `V_l = [id_l = id_prev] exp(a_l) ⟨dy_l ⊗ C_l, P_c⟩` (w.r.t. `a_l`, not the per-step decay:
//! the combined backward turns it into `ddA_prev` by a reverse cumsum). 0 at padded positions.

use crate::chunking::{check_bhcq, chunk_bounds, prev_chunk_end_id, seq_id};
use crate::validate::{check_groups, check_shape};
use crate::SsdError;
use ndarray::{Array4, ArrayView2, ArrayView4, ArrayView5};

/// Returns `(dc_blgn, ddacs_prev_bhcq)`.
pub fn chunk_scan_bwd_dc(
    prev_states_bchpn: ArrayView5<'_, f64>,
    dacs_bhcq: ArrayView4<'_, f64>,
    c_blgn: ArrayView4<'_, f64>,
    dy_blhp: ArrayView4<'_, f64>,
    seq_idx: Option<ArrayView2<'_, i32>>,
) -> Result<(Array4<f64>, Array4<f64>), SsdError> {
    let (nb, l, nh, np) = dy_blhp.dim();
    let (_, _, ng, nn) = c_blgn.dim();
    check_shape("C", &[nb, l, ng, nn], c_blgn.shape())?;
    check_groups(nh, ng)?;
    let (nc, q) = check_bhcq("dA_cumsum", dacs_bhcq.shape(), nb, nh, l)?;
    check_shape("states", &[nb, nc, nh, np, nn], prev_states_bchpn.shape())?;
    if let Some(s) = &seq_idx {
        check_shape("seq_idx", &[nb, l], s.shape())?;
    }
    let hpg = nh / ng;
    let sref = seq_idx.as_ref();
    let mut dc = Array4::<f64>::zeros((nb, l, ng, nn));
    let mut v = Array4::<f64>::zeros((nb, nh, nc, q));
    let mut pd = vec![0.0; nn];
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
                    // pd[n] = Σ_p P[p, n] dy_l[p]
                    for n in 0..nn {
                        let mut acc = 0.0;
                        for p in 0..np {
                            acc += prev_states_bchpn[[b, c, h, p, n]] * dy_blhp[[b, t, h, p]];
                        }
                        pd[n] = acc;
                    }
                    let mut vl = 0.0;
                    for n in 0..nn {
                        dc[[b, t, g, n]] += e * pd[n];
                        vl += pd[n] * c_blgn[[b, t, g, n]];
                    }
                    v[[b, h, c, i]] = e * vl;
                }
            }
        }
    }
    Ok((dc, v))
}
