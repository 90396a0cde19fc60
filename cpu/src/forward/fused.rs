//! The state side of the combined forward, fused: `chunk_state`, `state_passing` and
//! `chunk_scan` run per (batch, head) tile, sequentially over the chunks, with the running state
//! `H` (n × p) kept in the worker's cache instead of a (b, c, h, p, n) tensor in memory.
//!
//! For chunk `c` with `P_c = H`:
//! 1. `y = diag(e) C Pᵀ + M X` and the `D`/`z` epilogue (as [`super::chunk_scan`]);
//! 2. `H ← decay_c H + Bᵀ diag(w) X` with `w_s = [id_s = id_last] exp(a_last − a_s) Δ_s` and
//!    `decay_c = [id_last,c = id_last,c−1] exp(a_last)` (as `chunk_state` + `state_passing`),
//!    the product accumulated onto `decay_c H` in registers.

use super::chunk_scan::{emit_block, prepare_block, ScanArgs, Scratch};
use super::chunk_state::{pn_to_slabs, slabs_to_pn};
use crate::geom::Geom;
use crate::par::{for_each_tile, split_mut, Par};
use crate::simd::{exp_nonpos, load, prefetch_range, store, V, W};
use crate::tile::{fma_cols, for_tiles, TileOp};
use ndarray::{s, ArrayViewMut2, ArrayViewMut4, Axis};

/// Per-worker scratch: the block scratch, `Xw` and the running state.
struct Fused {
    s: Scratch,
    xw: Vec<f32>,
    w: Vec<f32>,
    state: Vec<f32>,
}

/// Runs every (b, h) tile over all chunks; writes `out` (standard layout) and `final_states`
/// ((b, h, p, n)). `init` is (b, h, p, n); `bmat` is `B` (b, l, g, n).
pub(crate) fn scan_fused(
    g: &Geom,
    a: &ScanArgs<'_>,
    bmat: &[f32],
    init: Option<&[f32]>,
    out: ArrayViewMut4<'_, f32>,
    final_states: &mut [f32],
    par: Par,
) {
    let pn = g.np * g.nn;
    let mut views: Vec<ArrayViewMut2<'_, f32>> = Vec::with_capacity(g.nb * g.nh);
    let mut rest = out;
    for _ in 0..g.nb {
        let (head, tail) = rest.split_at(Axis(0), 1);
        rest = tail;
        let mut vb = head.index_axis_move(Axis(0), 0);
        for _ in 0..g.nh {
            let (vh, t) = vb.split_at(Axis(1), 1);
            vb = t;
            views.push(vh.index_axis_move(Axis(1), 0));
        }
    }
    let tiles: Vec<_> = views
        .into_iter()
        .zip(split_mut(final_states, g.nb * g.nh, pn))
        .enumerate()
        .collect();
    let scratch = || Fused {
        s: Scratch::new(g),
        xw: vec![0.0; g.q * g.pp],
        w: vec![0.0; g.qp],
        state: vec![0.0; g.slab()],
    };
    for_each_tile(par, tiles, scratch, |f, (i, (mut out, fin))| {
        let (b, h) = (i / g.nh, i % g.nh);
        match init {
            Some(init) => pn_to_slabs(g, &init[i * pn..(i + 1) * pn], &mut f.state),
            None => f.state.fill(0.0),
        }
        for c in 0..g.nc {
            let (t0, len) = g.chunk(c);
            if c + 1 < g.nc {
                prefetch_rows(g, a, b, c + 1, h);
            } else if c == 0 {
                prefetch_rows(g, a, b, c, h);
            }
            let any_state = prepare_block(g, a, b, c, h, &mut f.s);
            emit_block(
                g,
                a,
                b,
                c,
                h,
                &f.s,
                &f.state,
                any_state,
                out.slice_mut(s![t0..t0 + len, ..]),
                None,
            );
            update_state(g, a, bmat, b, c, h, f);
        }
        slabs_to_pn(g, &f.state, fin);
    });
}

/// Prefetches the rows of `x` and `z` of block (b, c, h) (each row of one head is `h·p`
/// floats after the previous one: see [`crate::simd::prefetch`]).
fn prefetch_rows(g: &Geom, a: &ScanArgs<'_>, b: usize, c: usize, h: usize) {
    let (t0, len) = g.chunk(c);
    for l in 0..len {
        let at = g.x_at(b, t0 + l, h);
        prefetch_range(a.x, at, g.np);
        if let Some(z) = a.z {
            prefetch_range(z, at, g.np);
        }
    }
}

/// `H ← decay_c H + Bᵀ diag(w) X` for block (b, c, h).
fn update_state(
    g: &Geom,
    a: &ScanArgs<'_>,
    bmat: &[f32],
    b: usize,
    c: usize,
    h: usize,
    f: &mut Fused,
) {
    let (t0, len) = g.chunk(c);
    let last = g.q - 1;
    let (hi_last, lo_last) = (f.s.hi[last], f.s.lo[last]);
    let last_id = a.seq.chunk_end(b, c);
    let (hl, ll) = (V::splat(hi_last), V::splat(lo_last));
    for j0 in (0..len).step_by(W) {
        let x = (hl - load(&f.s.hi[j0..])) + (ll - load(&f.s.lo[j0..]));
        let w = exp_nonpos(x.fast_min(V::ZERO)) * load(&f.s.dt[j0..]);
        store(&mut f.w[j0..], w);
    }
    if a.seq.ids.is_some() {
        for si in 0..len {
            if a.seq.id(b, t0 + si) != last_id {
                f.w[si] = 0.0;
            }
        }
    }
    let pp = g.pp;
    for si in 0..len {
        let ws = V::splat(f.w[si]);
        for v in (0..pp).step_by(W) {
            store(&mut f.xw[si * pp + v..], load(&f.s.xp[si * pp + v..]) * ws);
        }
    }
    let same = last_id == a.seq.prev_end(b, c);
    let a_last = hi_last as f64 + lo_last as f64;
    let decay = if same { a_last.exp() as f32 } else { 0.0 };
    let mut op = StateUpdate {
        bmat: &bmat[g.bc_at(b, t0, h / g.hpg())..],
        ks: g.ng * g.nn,
        xw: &f.xw[..len * pp],
        pp,
        k: len,
        decay: V::splat(decay),
        state: &mut f.state,
    };
    for_tiles(&mut op, g.nn, pp / W);
}

struct StateUpdate<'a> {
    bmat: &'a [f32],
    ks: usize,
    xw: &'a [f32],
    pp: usize,
    k: usize,
    decay: V,
    state: &'a mut [f32],
}

impl TileOp for StateUpdate<'_> {
    #[inline(always)]
    fn tile<const R: usize, const NV: usize>(&mut self, r0: usize, v0: usize) {
        let mut acc = [[V::ZERO; NV]; R];
        for r in 0..R {
            for v in 0..NV {
                acc[r][v] = load(&self.state[(r0 + r) * self.pp + (v0 + v) * W..]) * self.decay;
            }
        }
        fma_cols(
            &mut acc,
            &self.bmat[r0..],
            self.ks,
            &self.xw[v0 * W..],
            self.pp,
            self.k,
        );
        for r in 0..R {
            for v in 0..NV {
                store(
                    &mut self.state[(r0 + r) * self.pp + (v0 + v) * W..],
                    acc[r][v],
                );
            }
        }
    }
}
