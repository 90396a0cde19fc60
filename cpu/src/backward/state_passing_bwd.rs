//! `state_passing_bwd` [_state_passing_bwd]: the gradient through the inter-chunk recurrence
//! `H_c = exp(a_last,c) P_c + S_c`, `P_{c+1} = H_c`, `final_states = H_{c_last}`.
//!
//! With `G_{c_last} = dfinal` and `G_c = dP_{c+1} + exp(a_last,c+1) G_{c+1}` (the adjoint of
//! `H_c`): `dS_c = G_c`, `dinitial = dP_0 + exp(a_last,0) G_0`, and the gradient w.r.t. each
//! chunk's `a_last`, `ddA_chunk_c = exp(a_last,c) ⟨P_c, G_c⟩`. Where `seq_idx` cuts the decay
//! (the id at the end of chunk c differs from the id at the end of chunk c − 1) the decay is the
//! constant 0: nothing flows back and `ddA_chunk_c = 0`.
//!
//! Per (batch, head) tile, sequential over chunks from the last, elementwise over the (n, p)
//! state (SIMD), in place: the `dP_c` slabs are overwritten by `dS_c`. The inner product is
//! summed in f32 lanes per state row and in f64 over the rows.

use super::pack::local_geom;
use crate::forward::chunk_state::{pn_to_slabs, slabs_to_pn};
use crate::geom::{flat, Geom, Seq};
use crate::par::{for_each_tile, split_mut, Par};
use crate::simd::{load, store, V, W};
use crate::SsdError;
use ndarray::{Array3, Array4, Array5, ArrayView2, ArrayView4, ArrayView5};
use ssd_reference::chunking::check_bhcq;
use ssd_reference::validate::check_shape;

/// Replaces the `dP_c` slabs in `ds` ((b, c, h, n, pp)) by `dS_c`; writes `dinit` (b, h, p, n)
/// and `dda_chunk` (b, h, c). `prev` holds the `P_c` slabs, `dfinal` is (b, h, p, n).
#[allow(clippy::too_many_arguments)]
pub(crate) fn state_passing_bwd_core(
    g: &Geom,
    ds: &mut [f32],
    prev: &[f32],
    hi: &[f32],
    lo: Option<&[f32]>,
    dfinal: Option<&[f32]>,
    seq: Seq<'_>,
    dinit: &mut [f32],
    dda_chunk: &mut [f32],
    par: Par,
) {
    let slab = g.slab();
    let pn = g.np * g.nn;
    let mut groups: Vec<Vec<&mut [f32]>> = (0..g.nb * g.nh).map(|_| Vec::new()).collect();
    for (i, s) in split_mut(ds, g.nb * g.nc * g.nh, slab)
        .into_iter()
        .enumerate()
    {
        let (b, h) = (i / (g.nc * g.nh), i % g.nh);
        groups[b * g.nh + h].push(s);
    }
    let tiles: Vec<_> = groups
        .into_iter()
        .zip(split_mut(dinit, g.nb * g.nh, pn))
        .zip(split_mut(dda_chunk, g.nb * g.nh, g.nc))
        .enumerate()
        .collect();
    for_each_tile(
        par,
        tiles,
        || vec![0.0f32; slab],
        |run, (i, ((mut slabs, dinit), dda))| {
            let (b, h) = (i / g.nh, i % g.nh);
            match dfinal {
                Some(f) => pn_to_slabs(g, &f[i * pn..(i + 1) * pn], run),
                None => run.fill(0.0),
            }
            for c in (0..g.nc).rev() {
                let s = &mut slabs[c];
                let same = seq.chunk_end(b, c) == seq.prev_end(b, c);
                let base = g.bhcq_at(b, h, c);
                let a_last =
                    hi[base + g.q - 1] as f64 + lo.map_or(0.0, |lo| lo[base + g.q - 1]) as f64;
                let e = a_last.exp();
                let decay = V::splat(if same { e as f32 } else { 0.0 });
                dda[c] = if same {
                    let p_c = &prev[((b * g.nc + c) * g.nh + h) * slab..][..slab];
                    let mut dot = 0.0f64;
                    for n in 0..g.nn {
                        let mut acc = V::ZERO;
                        for j in (n * g.pp..(n + 1) * g.pp).step_by(W) {
                            acc = load(&p_c[j..]).mul_add(load(&run[j..]), acc);
                        }
                        dot += acc.reduce_add() as f64;
                    }
                    (e * dot) as f32
                } else {
                    0.0
                };
                for j in (0..slab).step_by(W) {
                    let dp = load(&s[j..]);
                    let gv = load(&run[j..]);
                    store(&mut s[j..], gv);
                    store(&mut run[j..], gv.mul_add(decay, dp));
                }
            }
            slabs_to_pn(g, run, dinit);
        },
    );
}

/// Returns `(dstates_bchpn, dinitial_states_bhpn, ddA_chunk_bhc)`.
///
/// `dprev_states_bchpn` is the gradient of `prev_states` from the outputs
/// (`chunk_scan_bwd_dstates`); `seqlen` is l (to find the last token of a ragged last chunk).
///
/// Errors: shapes (`states`, `dstates`, `dA_cumsum`, `dfinal_states`, `seq_idx`), a zero chunk
/// size.
pub fn state_passing_bwd(
    prev_states_bchpn: ArrayView5<'_, f32>,
    dacs_bhcq: ArrayView4<'_, f32>,
    dprev_states_bchpn: ArrayView5<'_, f32>,
    dfinal_states_bhpn: Option<ArrayView4<'_, f32>>,
    seq_idx: Option<ArrayView2<'_, i32>>,
    seqlen: usize,
    par: Par,
) -> Result<(Array5<f32>, Array4<f32>, Array3<f32>), SsdError> {
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
    let g = local_geom(
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
    let mut prev = vec![0.0f32; nb * nc * nh * g.slab()];
    pn_to_slabs(&g, &flat(&prev_states_bchpn), &mut prev);
    let mut ds = vec![0.0f32; nb * nc * nh * g.slab()];
    pn_to_slabs(&g, &flat(&dprev_states_bchpn), &mut ds);
    let hi = flat(&dacs_bhcq);
    let dfinal = dfinal_states_bhpn.as_ref().map(flat);
    let ids = seq_idx.as_ref().map(flat);
    let mut dinit = Array4::<f32>::zeros((nb, nh, np, nn));
    let mut dda = Array3::<f32>::zeros((nb, nh, nc));
    state_passing_bwd_core(
        &g,
        &mut ds,
        &prev,
        &hi,
        None,
        dfinal.as_deref(),
        Seq {
            ids: ids.as_deref(),
            l: seqlen,
            q,
        },
        dinit.as_slice_mut().expect("owned array is contiguous"),
        dda.as_slice_mut().expect("owned array is contiguous"),
        par,
    );
    let mut dstates = Array5::<f32>::zeros((nb, nc, nh, np, nn));
    slabs_to_pn(
        &g,
        &ds,
        dstates.as_slice_mut().expect("owned array is contiguous"),
    );
    Ok((dstates, dinit, dda))
}
