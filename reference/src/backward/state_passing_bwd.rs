//! `state_passing_bwd` [_state_passing_bwd]: the gradient through the inter-chunk recurrence
//! `H_c = exp(a_last,c) P_c + S_c`, `P_{c+1} = H_c`, `final_states = H_{c_last}`.
//!
//! With `G_{c_last} = dfinal` and `G_c = dP_{c+1} + exp(a_last,c+1) G_{c+1}` (the adjoint of
//! `H_c`): `dS_c = G_c`, `dinitial = dP_0 + exp(a_last,0) G_0`, and the gradient w.r.t. each
//! chunk's `a_last`, `ddA_chunk_c = exp(a_last,c) ⟨P_c, G_c⟩`. Where `seq_idx` cuts the decay
//! (the id at the end of chunk c differs from the id at the end of chunk c − 1) the decay is the
//! constant 0: nothing flows back and `ddA_chunk_c = 0`.

use crate::chunking::{check_bhcq, chunk_end_id, prev_chunk_end_id};
use crate::validate::check_shape;
use crate::SsdError;
use ndarray::{s, Array2, Array3, Array4, Array5, ArrayView2, ArrayView4, ArrayView5};

/// Returns `(dstates_bchpn, dinitial_states_bhpn, ddA_chunk_bhc)`.
///
/// `dprev_states_bchpn` is the gradient of `prev_states` from the outputs
/// (`chunk_scan_bwd_dstates`); `seqlen` is l (to find the last token of a ragged last chunk).
pub fn state_passing_bwd(
    prev_states_bchpn: ArrayView5<'_, f64>,
    dacs_bhcq: ArrayView4<'_, f64>,
    dprev_states_bchpn: ArrayView5<'_, f64>,
    dfinal_states_bhpn: Option<ArrayView4<'_, f64>>,
    seq_idx: Option<ArrayView2<'_, i32>>,
    seqlen: usize,
) -> Result<(Array5<f64>, Array4<f64>, Array3<f64>), SsdError> {
    let (nb, _, nh, np, nn) = prev_states_bchpn.dim();
    let (nc, q) = check_bhcq("dA_cumsum", dacs_bhcq.shape(), nb, nh, seqlen)?;
    check_shape("states", &[nb, nc, nh, np, nn], prev_states_bchpn.shape())?;
    check_shape("dstates", &[nb, nc, nh, np, nn], dprev_states_bchpn.shape())?;
    if let Some(v) = &dfinal_states_bhpn {
        check_shape("dfinal_states", &[nb, nh, np, nn], v.shape())?;
    }
    if let Some(s) = &seq_idx {
        check_shape("seq_idx", &[nb, seqlen], s.shape())?;
    }
    let sref = seq_idx.as_ref();
    let mut dstates = Array5::<f64>::zeros((nb, nc, nh, np, nn));
    let mut dinit = Array4::<f64>::zeros((nb, nh, np, nn));
    let mut dda_chunk = Array3::<f64>::zeros((nb, nh, nc));
    for b in 0..nb {
        for h in 0..nh {
            // G: the adjoint of H_c, starting from the final state's seed.
            let mut gs = match &dfinal_states_bhpn {
                Some(v) => v.slice(s![b, h, .., ..]).to_owned(),
                None => Array2::<f64>::zeros((np, nn)),
            };
            for c in (0..nc).rev() {
                dstates.slice_mut(s![b, c, h, .., ..]).assign(&gs);
                let same = chunk_end_id(sref, b, c, q, seqlen) == prev_chunk_end_id(sref, b, c, q);
                let decay = if same {
                    dacs_bhcq[[b, h, c, q - 1]].exp()
                } else {
                    0.0
                };
                if same {
                    let mut dot = 0.0;
                    for p in 0..np {
                        for n in 0..nn {
                            dot += prev_states_bchpn[[b, c, h, p, n]] * gs[[p, n]];
                        }
                    }
                    dda_chunk[[b, h, c]] = decay * dot;
                }
                // G_{c-1} = dP_c + decay_c G_c
                for p in 0..np {
                    for n in 0..nn {
                        gs[[p, n]] = dprev_states_bchpn[[b, c, h, p, n]] + decay * gs[[p, n]];
                    }
                }
            }
            dinit.slice_mut(s![b, h, .., ..]).assign(&gs);
        }
    }
    Ok((dstates, dinit, dda_chunk))
}
