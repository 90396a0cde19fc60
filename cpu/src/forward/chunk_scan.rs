//! `chunk_scan` [_chunk_scan_fwd]: the output of every token.
//!
//! `y_l = [id_l = id_prev] exp(a_l) C_l · P_c + Σ_{s ≤ l} CB[l, s] exp(a_l − a_s) Δ_s x_s + D x_l`,
//! `out_l = y_l ⊙ silu(z_l)` when `z` is given.
//!
//! Per (batch, chunk, head) tile: `M[l, s] = CB[l, s] exp(a_l − a_s) Δ_s` (s ≤ l, SIMD along s),
//! `X` packed (len × p), then for each register tile of rows `l` and vectors of `p`:
//! `acc = diag(e) C Pᵀ + M X` (the state product first, scaled by `e_l = exp(a_l)`, then the
//! causal product over `s < l0 + R` only), and the `D`/`z` epilogue straight into `out`.

use crate::geom::{flat, Geom, Seq};
use crate::par::{for_each_tile, Par};
use crate::simd::{exp_nonpos, load, load_partial, mask_ge, silu, store, store_partial, V, W};
use crate::tile::first_col;
use crate::tile::{fma_cols, for_tiles, TileOp};
use crate::SsdError;
use ndarray::{Array4, ArrayView2, ArrayView4, ArrayView5, ArrayViewD, ArrayViewMut2, Axis};
use ssd_reference::chunking::check_bhcq;
use ssd_reference::validate::{check_d, check_groups, check_shape};

/// Inputs of [`chunk_scan_core`], flat.
pub(crate) struct ScanArgs<'a> {
    /// (b, c, g, Q, qp): `CBᵀ`, row `s`, column `l`
    pub(crate) cbt: &'a [f32],
    /// (b, c, g, n, qp): `Cᵀ`
    pub(crate) ct: &'a [f32],
    pub(crate) x: &'a [f32],
    pub(crate) dt: &'a [f32],
    pub(crate) hi: &'a [f32],
    pub(crate) lo: Option<&'a [f32]>,
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

/// Per-worker scratch of one (b, c, h) block.
pub(crate) struct Scratch {
    /// X of the chunk (len × pp)
    pub(crate) xp: Vec<f32>,
    /// Mᵀ (len × qp)
    m: Vec<f32>,
    /// cumsum (hi, lo) and Δ of the chunk, padded to qp
    pub(crate) hi: Vec<f32>,
    pub(crate) lo: Vec<f32>,
    pub(crate) dt: Vec<f32>,
    /// `e_l = [id_l = id_prev] exp(a_l)`
    e: Vec<f32>,
}

impl Scratch {
    pub(crate) fn new(g: &Geom) -> Scratch {
        Scratch {
            xp: vec![0.0; g.q * g.pp],
            m: vec![0.0; g.q * g.qp],
            hi: vec![0.0; g.qp],
            lo: vec![0.0; g.qp],
            dt: vec![0.0; g.qp],
            e: vec![0.0; g.qp],
        }
    }
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
    for_each_tile(
        par,
        tiles,
        || Scratch::new(g),
        |s, (i, out, y)| {
            let (b, c, h) = (i / (g.nc * g.nh), (i / g.nh) % g.nc, i % g.nh);
            let any_state = prepare_block(g, a, b, c, h, s);
            let prev = &a.prev[((b * g.nc + c) * g.nh + h) * g.slab()..][..g.slab()];
            emit_block(g, a, b, c, h, s, prev, any_state, out, y);
        },
    );
}

/// Fills the scratch for block (b, c, h): cumsum and Δ, packed X, `Mᵀ`, `e`. Returns whether
/// any token of the block sees the state entering it.
pub(crate) fn prepare_block(
    g: &Geom,
    a: &ScanArgs<'_>,
    b: usize,
    c: usize,
    h: usize,
    s: &mut Scratch,
) -> bool {
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
    // Mᵀ[s, l] = CB[l, s] exp(a_l − a_s) Δ_s for l ≥ s (0 for first_col(s) ≤ l < s).
    let hg = h / g.hpg();
    let blk = (b * g.nc + c) * g.ng + hg;
    let cbt = &a.cbt[blk * g.q * qp..][..g.q * qp];
    for si in 0..len {
        let (hs, ls, ds) = (V::splat(s.hi[si]), V::splat(s.lo[si]), V::splat(s.dt[si]));
        let cbrow = &cbt[si * qp..][..qp];
        let mrow = &mut s.m[si * qp..][..qp];
        for j0 in (first_col(si)..qp).step_by(W) {
            let x = (load(&s.hi[j0..]) - hs) + (load(&s.lo[j0..]) - ls);
            let e = exp_nonpos(x.fast_min(V::ZERO));
            let v = e * ds * load(&cbrow[j0..]);
            store(&mut mrow[j0..], mask_ge(v, j0, si));
        }
    }
    // e_l = exp(a_l) where the state entering the chunk reaches token l.
    for j0 in (0..len).step_by(W) {
        store(
            &mut s.e[j0..],
            exp_nonpos(load(&s.hi[j0..]).fast_min(V::ZERO)),
        );
    }
    if a.seq.ids.is_some() {
        let prev_id = a.seq.prev_end(b, c);
        for l in 0..len {
            if a.seq.id(b, t0 + l) != prev_id {
                s.e[l] = 0.0;
            }
        }
    }
    let any_state = s.e[..len].iter().any(|&v| v != 0.0);
    any_state
}

/// Writes rows `out` (len × p) (and `y`) of block (b, c, h) from the prepared scratch and the
/// state entering the block, `prev` ((n, pp)).
#[allow(clippy::too_many_arguments)]
pub(crate) fn emit_block<'o>(
    g: &Geom,
    a: &ScanArgs<'_>,
    b: usize,
    c: usize,
    h: usize,
    s: &Scratch,
    prev: &[f32],
    any_state: bool,
    out: ArrayViewMut2<'o, f32>,
    y: Option<ArrayViewMut2<'o, f32>>,
) {
    let (t0, len) = g.chunk(c);
    let (qp, pp) = (g.qp, g.pp);
    let blk = (b * g.nc + c) * g.ng + h / g.hpg();
    let mut op = ScanOp {
        g,
        a,
        ct: &a.ct[blk * g.nn * qp..][..g.nn * qp],
        xrow0: g.x_at(b, t0, h),
        prev,
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
    ct: &'a [f32],
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
            fma_cols(&mut acc, &self.ct[r0..], qp, &self.prev[v0 * W..], pp, nn);
            for r in 0..R {
                let e = V::splat(s.e[r0 + r]);
                for v in 0..NV {
                    acc[r][v] *= e;
                }
            }
        }
        fma_cols(&mut acc, &s.m[r0..], qp, &s.xp[v0 * W..], pp, r0 + R);
        let np = g.np;
        let xs = g.nh * np;
        let cols = (v0 * W).min(np)..((v0 + NV) * W).min(np);
        for r in 0..R {
            let l = r0 + r;
            let mut yv = acc[r];
            if let Some(d) = self.d {
                for v in 0..NV {
                    let col = (v0 + v) * W;
                    yv[v] = load(&d[col..]).mul_add(load(&s.xp[l * pp + col..]), yv[v]);
                }
            }
            if let Some(y) = self.y.as_mut() {
                let mut row = y.row_mut(l);
                let row = &mut row.as_slice_mut().expect("tile rows are contiguous")[cols.clone()];
                let n = row.len();
                for v in 0..NV {
                    store_partial(&mut row[(v * W).min(n)..], yv[v]);
                }
            }
            if let Some(z) = self.a.z {
                let zrow = &z[self.xrow0 + l * xs..][cols.clone()];
                for v in 0..NV {
                    yv[v] *= silu(load_partial(&zrow[(v * W).min(zrow.len())..]));
                }
            }
            let mut row = self.out.row_mut(l);
            let row = &mut row.as_slice_mut().expect("tile rows are contiguous")[cols.clone()];
            let n = row.len();
            for v in 0..NV {
                store_partial(&mut row[(v * W).min(n)..], yv[v]);
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
    // CBᵀ padded to qp columns, Cᵀ packed; states transposed to (n, pp) slabs.
    let cb_in = flat(&cb_bcgqq);
    let mut cbt = vec![0.0f32; nb * nc * ng * q * g.qp];
    for (dst, src) in cbt.chunks_mut(q * g.qp).zip(cb_in.chunks(q * q)) {
        for l in 0..q {
            for s in 0..q {
                dst[s * g.qp + l] = src[l * q + s];
            }
        }
    }
    let cm = flat(&c_blgn);
    let mut ct = vec![0.0f32; nb * nc * ng * nn * g.qp];
    for (i, blk) in ct
        .chunks_mut((nn * g.qp).max(1))
        .enumerate()
        .take(nb * nc * ng)
    {
        let (b, c, gg) = (i / (nc * ng), (i / ng) % nc, i % ng);
        let (t0, len) = g.chunk(c);
        super::bmm_chunk::pack_t(&g, &cm, b, t0, len, gg, blk);
    }
    let mut prev = vec![0.0f32; nb * nc * nh * g.slab()];
    super::chunk_state::pn_to_slabs(&g, &flat(&prev_states_bchpn), &mut prev);
    let (x, dt, hi) = (flat(&x_blhp), flat(&dt_bhcq), flat(&dacs_bhcq));
    let dtab = d.as_ref().map(|d| d_table(d, nh, np, g.pp));
    let z = z_blhp.as_ref().map(flat);
    let ids = seq_idx.as_ref().map(flat);
    let args = ScanArgs {
        cbt: &cbt,
        ct: &ct,
        x: &x,
        dt: &dt,
        hi: &hi,
        lo: None,
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
