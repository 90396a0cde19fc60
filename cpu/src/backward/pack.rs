//! Per-tile packing shared by the backward kernels: the cumsum and Δ of one (b, h, c) row, the
//! decay factors of the two state terms, the causal decay matrix `E[l, s] = exp(a_l − a_s)`,
//! row packing and transposes into SIMD-padded layouts, and the splitting of outputs into
//! (batch, chunk, group) tiles.
//!
//! Every packed matrix is zero in its padding, so register tiles may read whole vectors.

use crate::geom::{Geom, Seq};
use crate::simd::mask_le;
use crate::simd::{exp_nonpos, load, load_partial, pad, prefetch_range, store, V, W};
use ndarray::{ArrayViewMut, ArrayViewMut3, ArrayViewMut4, Axis, RemoveAxis};
use ssd_reference::Dims;

/// n padded to a multiple of 8.
pub(crate) fn nnp(g: &Geom) -> usize {
    pad(g.nn)
}

/// The geometry of a problem as the backward uses it: the forward's, except that `qp`, the
/// row stride of every per-chunk matrix, is `min(Q, l)` padded to 8 — a chunk never holds
/// more than `min(Q, l)` tokens, and Q may be far larger than l.
pub(crate) fn local_geom(dims: Dims, q: usize) -> Geom {
    let mut g = Geom::new(dims, q);
    g.qp = pad(q.min(dims.seqlen).max(1));
    g
}

/// The flat (b, h, c, Q) processed Δ and within-chunk cumsum (`hi + lo`, `lo` absent for a
/// cumsum given as plain f32).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cum<'a> {
    pub(crate) dt: &'a [f32],
    pub(crate) hi: &'a [f32],
    pub(crate) lo: Option<&'a [f32]>,
}

/// Per-worker scratch of the backward tiles, sized once for a problem. Names: `q` rows of a
/// chunk, `qp`/`pp`/`nnp` the padded widths of Q, p, n.
#[derive(Debug)]
pub(crate) struct Scratch {
    /// cumsum pair and Δ of the current (b, h, c), length qp (cumsum flat and Δ 0 past q)
    pub(crate) hi: Vec<f32>,
    pub(crate) lo: Vec<f32>,
    pub(crate) dt: Vec<f32>,
    /// the cumsum pair at the chunk's last position (`Q − 1`)
    pub(crate) hi_last: f32,
    pub(crate) lo_last: f32,
    /// `exp(a_l)` where the state entering the chunk reaches token l, else 0 (q)
    pub(crate) e_prev: Vec<f32>,
    /// `exp(a_last − a_s)` where token s belongs to the chunk's state, else 0 (q)
    pub(crate) e_state: Vec<f32>,
    /// `Δ_s e_state[s]` (q)
    pub(crate) w: Vec<f32>,
    /// `E[l, s] = exp(a_l − a_s)`, s ≤ l (q × qp)
    pub(crate) emat: Vec<f32>,
    /// `CB[l, s] E[l, s]` (q × qp)
    pub(crate) mmat: Vec<f32>,
    /// `W[l, s] = dCB_h[l, s] CB[l, s]` of the current head (q × qp)
    pub(crate) wmat: Vec<f32>,
    /// `dCB` summed over the heads of the group (q × qp)
    pub(crate) dcb: Vec<f32>,
    /// a `CB` block (q × qp) when it is not read from the forward's buffer
    pub(crate) cb: Vec<f32>,
    /// `dy` rows of the current head (q × pp)
    pub(crate) dy: Vec<f32>,
    /// `x` rows of the current head (q × pp)
    pub(crate) xp: Vec<f32>,
    /// a (q × pp) product of the current head
    pub(crate) out: Vec<f32>,
    /// `xᵀ` of the current head (pp × qp)
    pub(crate) xt: Vec<f32>,
    /// `dS_c` as (p, n) (pp × nnp)
    pub(crate) ds_t: Vec<f32>,
    /// `P_c` as (p, n) (pp × nnp)
    pub(crate) p_t: Vec<f32>,
    /// `Bᵀ` of the group (nnp × qp)
    pub(crate) bt: Vec<f32>,
    /// `B`, `C` rows of the group (q × nnp)
    pub(crate) bp: Vec<f32>,
    pub(crate) cp: Vec<f32>,
    /// `dB`, `dC` of the group (q × nnp)
    pub(crate) db: Vec<f32>,
    pub(crate) dc: Vec<f32>,
    /// per-row results of the current head (q): `U`, `V`, `ddt_direct`
    pub(crate) u: Vec<f32>,
    pub(crate) v: Vec<f32>,
    pub(crate) ddt: Vec<f32>,
    /// column sums of `ddacs_stable` (qp)
    pub(crate) colacc: Vec<f32>,
}

impl Scratch {
    pub(crate) fn new(g: &Geom) -> Scratch {
        // rows: a chunk holds at most min(Q, l) tokens
        let (q, qp, pp, nnp) = (g.q.min(g.l).max(1), g.qp, g.pp, nnp(g));
        Scratch {
            hi: vec![0.0; qp],
            lo: vec![0.0; qp],
            dt: vec![0.0; qp],
            hi_last: 0.0,
            lo_last: 0.0,
            e_prev: vec![0.0; q],
            e_state: vec![0.0; q],
            w: vec![0.0; q],
            emat: vec![0.0; q * qp],
            mmat: vec![0.0; q * qp],
            wmat: vec![0.0; q * qp],
            dcb: vec![0.0; q * qp],
            cb: vec![0.0; q * qp],
            dy: vec![0.0; q * pp],
            xp: vec![0.0; q * pp],
            out: vec![0.0; q * pp],
            xt: vec![0.0; pp * qp],
            ds_t: vec![0.0; pp * nnp],
            p_t: vec![0.0; pp * nnp],
            bt: vec![0.0; nnp * qp],
            bp: vec![0.0; q * nnp],
            cp: vec![0.0; q * nnp],
            db: vec![0.0; q * nnp],
            dc: vec![0.0; q * nnp],
            u: vec![0.0; q],
            v: vec![0.0; q],
            ddt: vec![0.0; q],
            colacc: vec![0.0; qp],
        }
    }

    /// Loads the cumsum pair and Δ of (b, h, c).
    pub(crate) fn load_head(&mut self, g: &Geom, cum: Cum<'_>, b: usize, h: usize, c: usize) {
        let base = g.bhcq_at(b, h, c);
        for k in 0..g.qp {
            let j = base + k.min(g.q - 1);
            self.hi[k] = cum.hi[j];
            self.lo[k] = cum.lo.map_or(0.0, |lo| lo[j]);
            self.dt[k] = if k < g.q { cum.dt[base + k] } else { 0.0 };
        }
        self.hi_last = cum.hi[base + g.q - 1];
        self.lo_last = cum.lo.map_or(0.0, |lo| lo[base + g.q - 1]);
    }

    /// `e_prev[l] = exp(a_l)` where the state entering chunk c reaches token l (its id equals
    /// the id before the chunk), else 0. Returns whether any is nonzero.
    pub(crate) fn decay_prev(&mut self, g: &Geom, seq: Seq<'_>, b: usize, c: usize) -> bool {
        let (t0, len) = g.chunk(c);
        let prev_id = seq.prev_end(b, c);
        let mut any = false;
        for l in 0..len {
            self.e_prev[l] = if seq.id(b, t0 + l) == prev_id {
                ((self.hi[l] as f64 + self.lo[l] as f64).exp()) as f32
            } else {
                0.0
            };
            any |= self.e_prev[l] != 0.0;
        }
        any
    }

    /// `e_state[s] = exp(a_last − a_s)` where token s belongs to the chunk's state (its id equals
    /// the id of the chunk's last token), else 0, and `w[s] = Δ_s e_state[s]`, as `chunk_state`
    /// forms them. Returns whether any `e_state` is nonzero.
    pub(crate) fn decay_state(&mut self, g: &Geom, seq: Seq<'_>, b: usize, c: usize) -> bool {
        let (t0, len) = g.chunk(c);
        let end_id = seq.chunk_end(b, c);
        let (hi_last, lo_last) = (self.hi_last, self.lo_last);
        let mut any = false;
        for s in 0..len {
            if seq.id(b, t0 + s) == end_id {
                let x = (hi_last - self.hi[s]) as f64 + (lo_last as f64 - self.lo[s] as f64);
                let e = x.min(0.0).exp();
                self.e_state[s] = e as f32;
                self.w[s] = (e * self.dt[s] as f64) as f32;
            } else {
                self.e_state[s] = 0.0;
                self.w[s] = 0.0;
            }
            any |= self.e_state[s] != 0.0;
        }
        any
    }
}

/// Zeroes the three vectors after the one holding column `l` (register tiles of up to 6 rows
/// and 2 vectors read that far past the diagonal).
#[inline]
fn zero_tail(row: &mut [f32], l: usize, qp: usize) {
    let from = (l / W + 1) * W;
    let to = ((l / W + 3) * W).min(qp);
    if from < to {
        row[from..to].fill(0.0);
    }
}

/// `E[l, s] = exp(a_l − a_s)` for `s ≤ l < len` (0 above the diagonal) from the cumsum pair
/// (`a_l − a_s = (hi_l − hi_s) + (lo_l − lo_s)`, exact differences of nearby `hi`), and with
/// `cb`, `M[l, s] = CB[l, s] E[l, s]`. Rows are `qp` wide.
pub(crate) fn decay_matrix(
    hi: &[f32],
    lo: &[f32],
    len: usize,
    qp: usize,
    emat: &mut [f32],
    cb_m: Option<(&[f32], &mut [f32])>,
) {
    let mut cb_m = cb_m;
    for l in 0..len {
        let (hl, ll) = (V::splat(hi[l]), V::splat(lo[l]));
        let erow = &mut emat[l * qp..][..qp];
        for j0 in (0..=l).step_by(W) {
            let x = (hl - load(&hi[j0..])) + (ll - load(&lo[j0..]));
            let e = mask_le(exp_nonpos(x.fast_min(V::ZERO)), j0, l);
            store(&mut erow[j0..], e);
            if let Some((cb, m)) = cb_m.as_mut() {
                store(&mut m[l * qp + j0..], e * load(&cb[l * qp + j0..]));
            }
        }
        zero_tail(erow, l, qp);
        if let Some((_, m)) = cb_m.as_mut() {
            zero_tail(&mut m[l * qp..][..qp], l, qp);
        }
    }
}

/// Packs `len` rows of `k` floats (the first at `first`, row stride `rs`) into `dst` (len × kp),
/// zero-padded; with `scale`, row r is multiplied by `scale[r]`.
pub(crate) fn pack_rows(
    src: &[f32],
    first: usize,
    rs: usize,
    k: usize,
    len: usize,
    kp: usize,
    scale: Option<&[f32]>,
    dst: &mut [f32],
) {
    for r in 0..len {
        let row = &src[first + r * rs..][..k];
        let sc = scale.map(|s| V::splat(s[r]));
        for v in (0..kp).step_by(W) {
            let mut x = load_partial(&row[v.min(k)..]);
            if let Some(sc) = sc {
                x *= sc;
            }
            store(&mut dst[r * kp + v..], x);
        }
    }
}

/// Prefetches `len` rows of `k` floats (the first at `first`, row stride `rs`): the rows of one
/// head are `h·p` floats apart, a stride the hardware prefetchers do not follow, and packing
/// them stalled on every row (measured: 6% of the S2 backward in `pack_rows`).
pub(crate) fn prefetch_rows(src: &[f32], first: usize, rs: usize, k: usize, len: usize) {
    for r in 0..len {
        prefetch_range(src, first + r * rs, k);
    }
}

/// `dst[c·dw + r] = src[r·sw + c]` for `r < rows`, `c < cw` (`cw` a multiple of 8, `src` rows
/// padded to it), and 0 for `r` from `rows` up to `dw`: the transpose of a packed matrix, by
/// 8 × 8 blocks in registers.
pub(crate) fn transpose_padded(
    src: &[f32],
    rows: usize,
    sw: usize,
    cw: usize,
    dst: &mut [f32],
    dw: usize,
) {
    let rp = pad(rows);
    for r0 in (0..rows).step_by(W) {
        for c0 in (0..cw).step_by(W) {
            let blk: [V; W] = std::array::from_fn(|i| {
                if r0 + i < rows {
                    load(&src[(r0 + i) * sw + c0..])
                } else {
                    V::ZERO
                }
            });
            let t = V::transpose(blk);
            for (i, v) in t.into_iter().enumerate() {
                store(&mut dst[(c0 + i) * dw + r0..], v);
            }
        }
    }
    if rp < dw {
        for c in 0..cw {
            dst[c * dw + rp..(c + 1) * dw].fill(0.0);
        }
    }
}

/// `dst[p·qp + s] = src[s·pp + p]` for `s < len`, 0 for `len ≤ s < qp`: the transpose of a
/// packed (len × pp) matrix into (pp × qp).
pub(crate) fn transpose_packed(
    src: &[f32],
    len: usize,
    _np: usize,
    pp: usize,
    qp: usize,
    dst: &mut [f32],
) {
    transpose_padded(src, len, pp, pp, dst, qp);
}

/// An (n, pp) state slab as a (p, n) matrix `dst` (pp × nnp), zero in the padding columns.
pub(crate) fn slab_to_pn_padded(
    slab: &[f32],
    nn: usize,
    _np: usize,
    pp: usize,
    nnp: usize,
    dst: &mut [f32],
) {
    transpose_padded(slab, nn, pp, pp, dst, nnp);
}

/// `v` cut along `axis` into pieces of `size` (the last may be shorter).
fn cut<'o, D: RemoveAxis>(
    mut v: ArrayViewMut<'o, f32, D>,
    axis: usize,
    size: usize,
) -> Vec<ArrayViewMut<'o, f32, D>> {
    let mut parts = Vec::new();
    let size = size.max(1);
    while v.len_of(Axis(axis)) > size {
        let (head, tail) = v.split_at(Axis(axis), size);
        parts.push(head);
        v = tail;
    }
    if v.len_of(Axis(axis)) > 0 {
        parts.push(v);
    }
    parts
}

/// Splits a standard-layout (b, l, k, m) tensor into (b, c, group) tiles of shape
/// (len, per, m), in that order (`per` consecutive entries of axis 2 per group).
pub(crate) fn group_tiles<'o>(
    g: &Geom,
    v: ArrayViewMut4<'o, f32>,
    per: usize,
) -> Vec<ArrayViewMut3<'o, f32>> {
    let mut t = Vec::new();
    for vb in cut(v, 0, 1) {
        for vc in cut(vb.index_axis_move(Axis(0), 0), 0, g.q) {
            t.extend(cut(vc, 1, per));
        }
    }
    t
}

/// Copies a flat (b, c, h, Q) tensor into (b, h, c, Q) order.
pub(crate) fn bchq_to_bhcq(g: &Geom, src: &[f32], dst: &mut [f32]) {
    for b in 0..g.nb {
        for c in 0..g.nc {
            for h in 0..g.nh {
                let s = ((b * g.nc + c) * g.nh + h) * g.q;
                let d = g.bhcq_at(b, h, c);
                dst[d..d + g.q].copy_from_slice(&src[s..s + g.q]);
            }
        }
    }
}

/// Copies the first `dst.ncols()` columns of the packed rows `src` (row stride `kp`) into `dst`.
pub(crate) fn unpack_rows(src: &[f32], kp: usize, dst: &mut ndarray::ArrayViewMut2<'_, f32>) {
    let k = dst.ncols();
    for (r, mut row) in dst.rows_mut().into_iter().enumerate() {
        for (d, &s) in row.iter_mut().zip(&src[r * kp..r * kp + k]) {
            *d = s;
        }
    }
}

/// `out[k] = Σ_{s < k} u[s]` (an exclusive prefix sum, in f64) for `k < len`, 0 up to `out.len()`.
pub(crate) fn exclusive_prefix(u: &[f32], len: usize, out: &mut [f32]) {
    let mut acc = 0.0f64;
    for k in 0..len {
        out[k] = acc as f32;
        acc += u[k] as f64;
    }
    out[len..].fill(0.0);
}
