//! `state_passing` [_state_passing_fwd]: carries the state across chunks.
//!
//! `H_{-1}` = initial state (0 if absent), `H_c = exp(a_last,c) H_{c-1} + S_c`; returns the state
//! entering each chunk `P_c = H_{c-1}` (b, c, h, p, n) and `final_states = H_{c_last}`. With
//! `seq_idx` the decay is 0 where the id at the end of chunk `c` differs from the id at the end
//! of chunk `c − 1` (id 0 before the first chunk).
//!
//! Per (batch, head) tile, sequential over chunks, elementwise over the state (SIMD), in place:
//! the `S_c` slabs are overwritten by `P_c`.

use super::chunk_state::{pn_to_slabs, slabs_to_pn};
use crate::geom::{flat, Geom, Seq};
use crate::par::{for_each_tile, split_mut, Par};
use crate::simd::{load, store, V, W};
use crate::SsdError;
use ndarray::{Array4, Array5, ArrayView2, ArrayView4, ArrayView5};
use ssd_reference::chunking::check_bhcq;
use ssd_reference::validate::check_shape;

/// Replaces the `S_c` slabs in `states` ((b, c, h, n, pp)) by `P_c` and writes
/// `final_states` ((b, h, p, n)). `init` is (b, h, p, n).
#[allow(clippy::too_many_arguments)]
pub(crate) fn state_passing_core(
    g: &Geom,
    states: &mut [f32],
    hi: &[f32],
    lo: Option<&[f32]>,
    init: Option<&[f32]>,
    seq: Seq<'_>,
    final_states: &mut [f32],
    par: Par,
) {
    let slab = g.slab();
    let pn = g.np * g.nn;
    // Group the (b, c, h) slabs by (b, h).
    let mut groups: Vec<Vec<&mut [f32]>> = (0..g.nb * g.nh).map(|_| Vec::new()).collect();
    for (i, s) in split_mut(states, g.nb * g.nc * g.nh, slab)
        .into_iter()
        .enumerate()
    {
        let (b, h) = (i / (g.nc * g.nh), i % g.nh);
        groups[b * g.nh + h].push(s);
    }
    let tiles: Vec<_> = groups
        .into_iter()
        .zip(split_mut(final_states, g.nb * g.nh, pn))
        .enumerate()
        .collect();
    for_each_tile(
        par,
        tiles,
        || vec![0.0f32; slab],
        |run, (i, (slabs, fin))| {
            let (b, h) = (i / g.nh, i % g.nh);
            match init {
                Some(init) => pn_to_slabs(g, &init[i * pn..(i + 1) * pn], run),
                None => run.fill(0.0),
            }
            for (c, s) in slabs.into_iter().enumerate() {
                let same = seq.chunk_end(b, c) == seq.prev_end(b, c);
                let base = g.bhcq_at(b, h, c);
                let a_last =
                    hi[base + g.q - 1] as f64 + lo.map_or(0.0, |lo| lo[base + g.q - 1]) as f64;
                let decay = V::splat(if same { a_last.exp() as f32 } else { 0.0 });
                for j in (0..slab).step_by(W) {
                    let hv = load(&run[j..]);
                    let sv = load(&s[j..]);
                    store(&mut s[j..], hv);
                    store(&mut run[j..], hv.mul_add(decay, sv));
                }
            }
            slabs_to_pn(g, run, fin);
        },
    );
}

/// Returns `(prev_states_bchpn, final_states_bhpn)`; `seqlen` is l.
///
/// Errors: shapes (`states`, `dA_cumsum`, `initial_states`, `seq_idx`), a zero chunk size.
pub fn state_passing(
    states_bchpn: ArrayView5<'_, f32>,
    dacs_bhcq: ArrayView4<'_, f32>,
    initial_states_bhpn: Option<ArrayView4<'_, f32>>,
    seq_idx: Option<ArrayView2<'_, i32>>,
    seqlen: usize,
    par: Par,
) -> Result<(Array5<f32>, Array4<f32>), SsdError> {
    let (nb, nc, nh, np, nn) = states_bchpn.dim();
    let (nc2, q) = check_bhcq("dA_cumsum", dacs_bhcq.shape(), nb, nh, seqlen)?;
    check_shape("states", &[nb, nc2, nh, np, nn], states_bchpn.shape())?;
    if let Some(init) = &initial_states_bhpn {
        check_shape("initial_states", &[nb, nh, np, nn], init.shape())?;
    }
    if let Some(s) = &seq_idx {
        check_shape("seq_idx", &[nb, seqlen], s.shape())?;
    }
    let g = Geom::new(
        ssd_reference::Dims {
            batch: nb,
            seqlen,
            nheads: nh,
            headdim: np,
            ngroups: 1,
            dstate: nn,
        },
        q,
    );
    let mut slabs = vec![0.0f32; nb * nc * nh * g.slab()];
    pn_to_slabs(&g, &flat(&states_bchpn), &mut slabs);
    let hi = flat(&dacs_bhcq);
    let init = initial_states_bhpn.as_ref().map(flat);
    let ids = seq_idx.as_ref().map(flat);
    let mut fin = Array4::<f32>::zeros((nb, nh, np, nn));
    state_passing_core(
        &g,
        &mut slabs,
        &hi,
        None,
        init.as_deref(),
        Seq {
            ids: ids.as_deref(),
            l: seqlen,
            q,
        },
        fin.as_slice_mut().expect("owned array is contiguous"),
        par,
    );
    let mut prev = Array5::<f32>::zeros((nb, nc, nh, np, nn));
    slabs_to_pn(
        &g,
        &slabs,
        prev.as_slice_mut().expect("owned array is contiguous"),
    );
    Ok((prev, fin))
}
