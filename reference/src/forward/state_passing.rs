//! `state_passing` [_state_passing_fwd]: carries the state across chunks.
//!
//! `H_{-1}` = initial state (0 if absent), `H_c = exp(a_last,c) H_{c-1} + S_c`; returns the state
//! entering each chunk `P_c = H_{c-1}` (b, c, h, p, n) and `final_states = H_{c_last}`.
//! With `seq_idx` the decay is 0 where the id at the end of chunk `c` differs from the id at
//! the end of chunk `c − 1` (id 0 before the first chunk).

use crate::chunking::{chunk_end_id, prev_chunk_end_id};
use crate::validate::check_shape;
use crate::SsdError;
use ndarray::{s, Array4, Array5, ArrayView2, ArrayView4, ArrayView5};

/// Returns `(prev_states_bchpn, final_states_bhpn)`.
///
/// `seqlen` is the sequence length l (needed to find the last token of a ragged last chunk).
pub fn state_passing(
    states_bchpn: ArrayView5<'_, f64>,
    dacs_bhcq: ArrayView4<'_, f64>,
    initial_states_bhpn: Option<ArrayView4<'_, f64>>,
    seq_idx: Option<ArrayView2<'_, i32>>,
    seqlen: usize,
) -> Result<(Array5<f64>, Array4<f64>), SsdError> {
    let (nb, nc, nh, np, nn) = states_bchpn.dim();
    let (nc2, q) = crate::chunking::check_bhcq("dA_cumsum", dacs_bhcq.shape(), nb, nh, seqlen)?;
    check_shape("states", &[nb, nc2, nh, np, nn], states_bchpn.shape())?;
    if let Some(init) = &initial_states_bhpn {
        check_shape("initial_states", &[nb, nh, np, nn], init.shape())?;
    }
    if let Some(s) = &seq_idx {
        check_shape("seq_idx", &[nb, seqlen], s.shape())?;
    }
    let sref = seq_idx.as_ref();
    let mut prev = Array5::<f64>::zeros((nb, nc, nh, np, nn));
    let mut fin = Array4::<f64>::zeros((nb, nh, np, nn));
    for b in 0..nb {
        for h in 0..nh {
            let mut hstate = match &initial_states_bhpn {
                Some(init) => init.slice(s![b, h, .., ..]).to_owned(),
                None => ndarray::Array2::<f64>::zeros((np, nn)),
            };
            for c in 0..nc {
                prev.slice_mut(s![b, c, h, .., ..]).assign(&hstate);
                let same = chunk_end_id(sref, b, c, q, seqlen) == prev_chunk_end_id(sref, b, c, q);
                let decay = if same {
                    dacs_bhcq[[b, h, c, q - 1]].exp()
                } else {
                    0.0
                };
                hstate.mapv_inplace(|v| v * decay);
                hstate += &states_bchpn.slice(s![b, c, h, .., ..]);
            }
            fin.slice_mut(s![b, h, .., ..]).assign(&hstate);
        }
    }
    Ok((prev, fin))
}
