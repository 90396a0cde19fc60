//! The wrapper that the public per-tile backward kernels share: the `(B or C, groups, Q)` checks,
//! the backward geometry, `seq_idx` look-ups, and one parallel pass over (batch, chunk, group)
//! tiles with a per-worker [`Scratch`], optionally gathering one (Q) row per head into a
//! (b, h, c, Q) tensor. The per-tile body is the kernel's own closure; the tiles, their order and
//! the scratch are those the kernels had written out each, so results are unchanged.

use super::pack::{bchq_to_bhcq, local_geom, Scratch};
use crate::geom::{flat, Geom, Seq};
use crate::par::{for_each_tile, split_mut, Par};
use crate::SsdError;
use ndarray::{Array4, ArrayView2, ArrayView4};
use ssd_reference::chunking::check_bhcq;
use ssd_reference::validate::{check_groups, check_shape};
use ssd_reference::Dims;
use std::borrow::Cow;

/// Checks `bc` (`name`: `B` or `C`) against `(b, l, ·, ·)` of `dims_of` (a (b, l, h, p) view),
/// that its groups divide the heads and the (b, h, c, Q) `q_shape` (`q_name`); returns the
/// geometry (`nc`, `q` from `q_shape`).
pub(crate) fn check_bc_q(
    dims_of: &ArrayView4<'_, f32>,
    name: &'static str,
    bc: &ArrayView4<'_, f32>,
    q_name: &'static str,
    q_shape: &[usize],
) -> Result<Geom, SsdError> {
    let (nb, l, nh, np) = dims_of.dim();
    let (_, _, ng, nn) = bc.dim();
    check_shape(name, &[nb, l, ng, nn], bc.shape())?;
    check_groups(nh, ng)?;
    let (_, q) = check_bhcq(q_name, q_shape, nb, nh, l)?;
    Ok(geom(nb, l, nh, np, ng, nn, q))
}

/// The backward geometry ([`local_geom`]) of the given sizes.
pub(crate) fn geom(
    nb: usize,
    l: usize,
    nh: usize,
    np: usize,
    ng: usize,
    nn: usize,
    q: usize,
) -> Geom {
    let dims = Dims {
        batch: nb,
        seqlen: l,
        nheads: nh,
        headdim: np,
        ngroups: ng,
        dstate: nn,
    };
    local_geom(dims, q)
}

/// Checks `seq_idx` against (b, l).
pub(crate) fn check_seq(seq_idx: &Option<ArrayView2<'_, i32>>, g: &Geom) -> Result<(), SsdError> {
    if let Some(s) = seq_idx {
        check_shape("seq_idx", &[g.nb, g.l], s.shape())?;
    }
    Ok(())
}

/// `seq_idx` flat (borrowed where contiguous); [`seq`] reads it.
pub(crate) fn seq_ids<'a>(seq_idx: &'a Option<ArrayView2<'_, i32>>) -> Option<Cow<'a, [i32]>> {
    seq_idx.as_ref().map(flat)
}

/// The [`Seq`] look-ups of `ids` (from [`seq_ids`]).
pub(crate) fn seq<'a>(g: &Geom, ids: &'a Option<Cow<'_, [i32]>>) -> Seq<'a> {
    Seq {
        ids: ids.as_deref(),
        l: g.l,
        q: g.q,
    }
}

/// One (batch, chunk, group) tile: its index `i` in (b, c, g) order, and chunk `c` as
/// `(t0, len)`; its heads are `hg · hpg + j`, `j < hpg`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct GroupTile {
    pub(crate) i: usize,
    pub(crate) b: usize,
    pub(crate) c: usize,
    pub(crate) hg: usize,
    pub(crate) t0: usize,
    pub(crate) len: usize,
}

/// Runs `body(scratch, tile, out)` over the (b, c, g) tiles in parallel, `outs` holding each
/// tile's output piece in (b, c, g) order.
pub(crate) fn for_each_group_tile<T, F>(g: &Geom, par: Par, outs: Vec<T>, body: F)
where
    T: Send,
    F: Fn(&mut Scratch, GroupTile, T) + Sync,
{
    let (nc, ng) = (g.nc, g.ng);
    let tiles: Vec<_> = outs.into_iter().enumerate().collect();
    for_each_tile(
        par,
        tiles,
        || Scratch::new(g),
        |s, (i, out)| {
            let (b, c, hg) = (i / (nc * ng), (i / ng) % nc, i % ng);
            let (t0, len) = g.chunk(c);
            body(
                s,
                GroupTile {
                    i,
                    b,
                    c,
                    hg,
                    t0,
                    len,
                },
                out,
            );
        },
    );
}

/// [`for_each_group_tile`] with one more output per tile: the (hpg × Q) rows of its heads
/// (`j · Q ..`), returned as a (b, h, c, Q) tensor (0 where the body writes nothing).
pub(crate) fn group_tiles_head_rows<T, F>(g: &Geom, par: Par, outs: Vec<T>, body: F) -> Array4<f32>
where
    T: Send,
    F: Fn(&mut Scratch, GroupTile, T, &mut [f32]) + Sync,
{
    let (nb, nc, nh, ng, q) = (g.nb, g.nc, g.nh, g.ng, g.q);
    let mut bchq = vec![0.0f32; nb * nc * nh * q];
    let outs: Vec<_> = outs
        .into_iter()
        .zip(split_mut(&mut bchq, nb * nc * ng, g.hpg() * q))
        .collect();
    for_each_group_tile(g, par, outs, |s, t, (out, rows)| body(s, t, out, rows));
    let mut bhcq = Array4::<f32>::zeros((nb, nh, nc, q));
    bchq_to_bhcq(
        g,
        &bchq,
        bhcq.as_slice_mut().expect("owned array is contiguous"),
    );
    bhcq
}
