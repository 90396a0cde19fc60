//! `chunk_scan` [_chunk_scan_fwd]: the output of every token.
//!
//! `y_l = [id_l = id_prev] exp(a_l) C_l · P_c + Σ_{s ≤ l} CB[l, s] exp(a_l − a_s) Δ_s x_s + D x_l`,
//! `out_l = y_l ⊙ silu(z_l)` when `z` is given.
//!
//! Per (batch, chunk, head) tile: `M[l, s] = CB[l, s] exp(a_l − a_s) Δ_s` (s ≤ l, SIMD along s),
//! `X` packed (len × p), then for each register tile of rows `l` and vectors of `p`:
//! `acc = diag(e) C Pᵀ + M X` (the state product first, scaled by `e_l = exp(a_l)`, then the
//! causal product over `s < l0 + R` only), and the `D`/`z` epilogue straight into `out`.

use super::{flat, Geom, Seq};
use crate::par::{for_each_tile, Par};
use crate::simd::{exp_nonpos, load, load_partial, mask_le, silu, store, store_partial, V, W};
use crate::tile::{fma_rows, for_tiles, TileOp};
use crate::SsdError;
use ndarray::{Array4, ArrayView2, ArrayView4, ArrayView5, ArrayViewD, ArrayViewMut2, Axis};
use ssd_reference::chunking::check_bhcq;
use ssd_reference::validate::{check_d, check_groups, check_shape};

/// Inputs of [`chunk_scan_core`], flat.
pub(crate) struct ScanArgs<'a> {
    /// (b, c, g, Q, qp)
    pub(crate) cb: &'a [f32],
    pub(crate) x: &'a [f32],
    pub(crate) dt: &'a [f32],
    pub(crate) hi: &'a [f32],
    pub(crate) lo: Option<&'a [f32]>,
    pub(crate) c: &'a [f32],
    /// (b, c, h, n, pp) slabs of `P_c`
    pub(crate) prev: &'a [f32],
    /// (h, pp): `D` per channel (a per-head `D` repeated), padded with 0
    pub(crate) d: Option<&'a [f32]>,
    pub(crate) z: Option<&'a [f32]>,
    pub(crate) seq: Seq<'a>,
}

/// `D` as an (h, pp) table.
pub(crate) fn d_table(d: &ArrayViewD<'_, f32>, nh: usize, np: usize, pp: usize) -> Vec<f32> {
    let mut t = vec![0.0f32; nh * pp];
    for h in 0..nh {
        for p in 0..np {
            t[h * pp + p] = if d.ndim() == 1 { d[[h]] } else { d[[h, p]] };
        }
    }
    t
}

/// Per-worker scratch of [`chunk_scan_core`].
struct Scratch {
    xp: Vec<f32>,
    m: Vec<f32>,
    hi: Vec<f32>,
    lo: Vec<f32>,
    dt: Vec<f32>,
    e: Vec<f32>,
}

/// One (b, c, h) tile: its rows of `out` (len × p) and optionally of `y`.
pub(crate) type ScanTile<'o> = (
    usize,
    ArrayViewMut2<'o, f32>,
    Option<ArrayViewMut2<'o, f32>>,
);

/// Splits standard-layout `out` (and `y`) (b, l, h, p) into (b, c, h) tiles in that order.
pub(crate) fn scan_tiles<'o>(
    g: &Geom,
    out: ndarray::ArrayViewMut4<'o, f32>,
    y: Option<ndarray::ArrayViewMut4<'o, f32>>,
) -> Vec<ScanTile<'o>> {
    /// `v` cut along `axis` into pieces of `size` (the last may be shorter).
    fn cut<'o, D: ndarray::RemoveAxis>(
        mut v: ndarray::ArrayViewMut<'o, f32, D>,
        axis: usize,
        size: usize,
    ) -> Vec<ndarray::ArrayViewMut<'o, f32, D>> {
        let mut parts = Vec::new();
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
    fn split<'o>(g: &Geom, v: ndarray::ArrayViewMut4<'o, f32>) -> Vec<ArrayViewMut2<'o, f32>> {
        let mut t = Vec::with_capacity(g.nb * g.nc * g.nh);
        for vb in cut(v, 0, 1) {
            for vc in cut(vb.index_axis_move(Axis(0), 0), 0, g.q) {
                for vh in cut(vc, 1, 1) {
                    t.push(vh.index_axis_move(Axis(1), 0));
                }
            }
        }
        t
    }
    let outs = split(g, out);
    let ys: Vec<Option<ArrayViewMut2<'o, f32>>> = match y {
        Some(y) => split(g, y).into_iter().map(Some).collect(),
        None => (0..outs.len()).map(|_| None).collect(),
    };
    outs.into_iter()
        .zip(ys)
        .enumerate()
        .map(|(i, (o, y))| (i, o, y))
        .collect()
}

/// Computes every (b, c, h) tile of `out` (and `y`, the output before the gate).
pub(crate) fn chunk_scan_core(g: &Geom, a: &ScanArgs<'_>, tiles: Vec<ScanTile<'_>>, par: Par) {
    let scratch = || Scratch {
        xp: vec![0.0; g.q * g.pp],
        m: vec![0.0; g.q * g.qp],
        hi: vec![0.0; g.qp],
        lo: vec![0.0; g.qp],
        dt: vec![0.0; g.qp],
        e: vec![0.0; g.q],
    };
    for_each_tile(par, tiles, scratch, |s, (i, out, y)| {
        let (b, c, h) = (i / (g.nc * g.nh), (i / g.nh) % g.nc, i % g.nh);
        scan_tile(g, a, b, c, h, s, out, y);
    });
}

#[allow(clippy::too_many_arguments)]
fn scan_tile<'o>(
    g: &Geom,
    a: &ScanArgs<'_>,
    b: usize,
    c: usize,
    h: usize,
    s: &mut Scratch,
    out: ArrayViewMut2<'o, f32>,
    y: Option<ArrayViewMut2<'o, f32>>,
) {
    let (t0, len) = g.chunk(c);
    let base = g.bhcq_at(b, h, c);
    let (qp, pp) = (g.qp, g.pp);
    // cumsum and Δ of the chunk, padded to qp (flat cumsum, Δ = 0).
    for k in 0..qp {
        let j = base + k.min(g.q - 1);
        s.hi[k] = a.hi[j];
        s.lo[k] = a.lo.map_or(0.0, |lo| lo[j]);
        s.dt[k] = if k < g.q { a.dt[j] } else { 0.0 };
    }
    // X packed (len × pp).
    for l in 0..len {
        let row = &a.x[g.x_at(b, t0 + l, h)..][..g.np];
        for v in (0..pp).step_by(W) {
            store(&mut s.xp[l * pp + v..], load_partial(&row[v..]));
        }
    }
    // M[l, s] = CB[l, s] exp(a_l − a_s) Δ_s for s ≤ l.
    let hg = h / g.hpg();
    let cb = &a.cb[((b * g.nc + c) * g.ng + hg) * g.q * qp..][..g.q * qp];
    for l in 0..len {
        let (hl, ll) = (V::splat(s.hi[l]), V::splat(s.lo[l]));
        let cbrow = &cb[l * qp..][..qp];
        let mrow = &mut s.m[l * qp..][..qp];
        for j0 in (0..=l).step_by(W) {
            let x = (hl - load(&s.hi[j0..])) + (ll - load(&s.lo[j0..]));
            let e = exp_nonpos(x.fast_min(V::ZERO));
            let v = e * load(&s.dt[j0..]) * load(&cbrow[j0..]);
            store(&mut mrow[j0..], mask_le(v, j0, l));
        }
        // The register tile of row l reads up to 5 columns past l: keep them 0.
        let next = (l / W + 1) * W;
        if next < qp {
            store(&mut mrow[next..], V::ZERO);
        }
    }
    // e_l = exp(a_l) where the state entering the chunk reaches token l.
    let prev_id = a.seq.prev_end(b, c);
    let mut any_state = false;
    for l in 0..len {
        s.e[l] = if a.seq.id(b, t0 + l) == prev_id {
            ((s.hi[l] as f64 + s.lo[l] as f64).exp()) as f32
        } else {
            0.0
        };
        any_state |= s.e[l] != 0.0;
    }
    let mut op = ScanOp {
        g,
        a,
        crow0: g.bc_at(b, t0, hg),
        xrow0: g.x_at(b, t0, h),
        prev: &a.prev[((b * g.nc + c) * g.nh + h) * g.slab()..][..g.slab()],
        d: a.d.map(|d| &d[h * pp..(h + 1) * pp]),
        s,
        any_state,
        out,
        y,
    };
    for_tiles(&mut op, len, pp / W);
}

struct ScanOp<'a, 'o> {
    g: &'a Geom,
    a: &'a ScanArgs<'a>,
    crow0: usize,
    xrow0: usize,
    prev: &'a [f32],
    d: Option<&'a [f32]>,
    s: &'a Scratch,
    any_state: bool,
    out: ArrayViewMut2<'o, f32>,
    y: Option<ArrayViewMut2<'o, f32>>,
}

impl TileOp for ScanOp<'_, '_> {
    #[inline(always)]
    fn tile<const R: usize, const NV: usize>(&mut self, r0: usize, v0: usize) {
        let g = self.g;
        let (pp, qp, nn) = (g.pp, g.qp, g.nn);
        let s = self.s;
        let mut acc = [[V::ZERO; NV]; R];
        if self.any_state {
            let rs = g.ng * nn;
            let c_rows: [&[f32]; R] =
                std::array::from_fn(|r| &self.a.c[self.crow0 + (r0 + r) * rs..][..nn]);
            fma_rows(&mut acc, c_rows, &self.prev[v0 * W..], pp, nn);
            for r in 0..R {
                let e = V::splat(s.e[r0 + r]);
                for v in 0..NV {
                    acc[r][v] *= e;
                }
            }
        }
        let m_rows: [&[f32]; R] = std::array::from_fn(|r| &s.m[(r0 + r) * qp..][..qp]);
        fma_rows(&mut acc, m_rows, &s.xp[v0 * W..], pp, r0 + R);
        let np = g.np;
        let xs = g.nh * np;
        for r in 0..R {
            let l = r0 + r;
            for v in 0..NV {
                let col = (v0 + v) * W;
                let mut yv = acc[r][v];
                if let Some(d) = self.d {
                    yv = load(&d[col..]).mul_add(load(&s.xp[l * pp + col..]), yv);
                }
                if let Some(y) = self.y.as_mut() {
                    let mut row = y.row_mut(l);
                    let row = row.as_slice_mut().expect("tile rows are contiguous");
                    store_partial(&mut row[col..], yv);
                }
                if let Some(z) = self.a.z {
                    let zrow = &z[self.xrow0 + l * xs..][..np];
                    yv *= silu(load_partial(&zrow[col..]));
                }
                let mut row = self.out.row_mut(l);
                let row = row.as_slice_mut().expect("tile rows are contiguous");
                store_partial(&mut row[col..], yv);
            }
        }
    }
}

/// Returns `(out_blhp, y_blhp)`; `y` (the output before the `z` gate) only when `z` is given.
///
/// Errors: shapes (`C`, `dt`, `dA_cumsum`, `CB`, `states`, `D`, `z`, `seq_idx`), groups that do
/// not divide the heads.
#[allow(clippy::too_many_arguments)]
pub fn chunk_scan(
    cb_bcgqq: ArrayView5<'_, f32>,
    x_blhp: ArrayView4<'_, f32>,
    dt_bhcq: ArrayView4<'_, f32>,
    dacs_bhcq: ArrayView4<'_, f32>,
    c_blgn: ArrayView4<'_, f32>,
    prev_states_bchpn: ArrayView5<'_, f32>,
    d: Option<ArrayViewD<'_, f32>>,
    z_blhp: Option<ArrayView4<'_, f32>>,
    seq_idx: Option<ArrayView2<'_, i32>>,
    par: Par,
) -> Result<(Array4<f32>, Option<Array4<f32>>), SsdError> {
    let (nb, l, nh, np) = x_blhp.dim();
    let (_, _, ng, nn) = c_blgn.dim();
    check_shape("C", &[nb, l, ng, nn], c_blgn.shape())?;
    check_groups(nh, ng)?;
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
    let g = Geom::new(
        ssd_reference::Dims {
            batch: nb,
            seqlen: l,
            nheads: nh,
            headdim: np,
            ngroups: ng,
            dstate: nn,
        },
        q,
    );
    // CB rows padded to qp; states transposed to (n, pp) slabs.
    let cb_in = flat(&cb_bcgqq);
    let mut cb = vec![0.0f32; nb * nc * ng * q * g.qp];
    for (dst, src) in cb.chunks_mut(g.qp).zip(cb_in.chunks(q)) {
        dst[..q].copy_from_slice(src);
    }
    let mut prev = vec![0.0f32; nb * nc * nh * g.slab()];
    super::chunk_state::pn_to_slabs(&g, &flat(&prev_states_bchpn), &mut prev);
    let (x, dt, hi, cm) = (
        flat(&x_blhp),
        flat(&dt_bhcq),
        flat(&dacs_bhcq),
        flat(&c_blgn),
    );
    let dtab = d.as_ref().map(|d| d_table(d, nh, np, g.pp));
    let z = z_blhp.as_ref().map(flat);
    let ids = seq_idx.as_ref().map(flat);
    let args = ScanArgs {
        cb: &cb,
        x: &x,
        dt: &dt,
        hi: &hi,
        lo: None,
        c: &cm,
        prev: &prev,
        d: dtab.as_deref(),
        z: z.as_deref(),
        seq: Seq {
            ids: ids.as_deref(),
            l,
            q,
        },
    };
    let mut out = Array4::<f32>::zeros((nb, l, nh, np));
    let mut y = z_blhp
        .as_ref()
        .map(|_| Array4::<f32>::zeros((nb, l, nh, np)));
    let tiles = scan_tiles(&g, out.view_mut(), y.as_mut().map(|y| y.view_mut()));
    chunk_scan_core(&g, &args, tiles, par);
    Ok((out, y))
}
