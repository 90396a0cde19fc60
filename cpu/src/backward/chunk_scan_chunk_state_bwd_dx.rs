//! `chunk_scan_chunk_state_bwd_dx` [_chunk_scan_chunk_state_bwd_dx]: the gradient of `x` through
//! both places it enters, the chunk's own state `S_c` and the intra-chunk outputs, plus `D`.
//!
//! `dx_s = Δ_s g_s + D dy_s` with
//! `g_s[p] = [id_s = id_end] exp(a_last − a_s) Σ_n dS_c[p, n] B_s[n]
//!         + Σ_{l ≥ s} CB[l, s] exp(a_l − a_s) dy_l[p]`,
//! and the direct part of the time-step gradient `ddt_direct_s = Σ_p g_s[p] x_s[p]`.
//! `CB` carries the `seq_idx` mask already (0 across ids); `id_end` is the id of the chunk's
//! last token.
//!
//! Per (batch, chunk, head) tile, register-blocked over rows `s` and vectors of p:
//! `G = diag(e_state) B dSᵀ + Mᵀ dY` with `M[l, s] = CB[l, s] E[l, s]` (only `l ≥ s`, read
//! column-wise), then the epilogue `dx = diag(Δ) G + D ⊙ dY` and `ddt_direct = rowsum(G ⊙ X)`.

use super::pack::{decay_matrix, group_tiles, local_geom, pack_rows, Cum, Scratch};
use crate::forward::chunk_scan::d_table;
use crate::forward::chunk_state::pn_to_slabs;
use crate::geom::{flat, Geom, Seq};
use crate::par::{for_each_tile, split_mut, Par};
use crate::simd::{load, store, store_partial, V, W};
use crate::tile::{fma_cols, fma_rows, for_tiles, TileOp};
use crate::SsdError;
use ndarray::{Array4, ArrayView2, ArrayView4, ArrayView5, ArrayViewD, ArrayViewMut2, Axis};
use ssd_reference::chunking::check_bhcq;
use ssd_reference::validate::{check_d, check_groups, check_shape};

/// What [`dx_head`] reads besides the scratch.
pub(crate) struct DxArgs<'a> {
    /// `B` rows of the chunk and group: row s at `s · brs`
    pub(crate) bm: &'a [f32],
    pub(crate) brs: usize,
    /// the (n, pp) slab of `dS_c`
    pub(crate) ds: &'a [f32],
    /// whether any `e_state` is nonzero
    pub(crate) any_state: bool,
    /// `D` of the head along p (pp), if any
    pub(crate) d: Option<&'a [f32]>,
}

struct DxOp<'a> {
    g: &'a Geom,
    a: &'a DxArgs<'a>,
    len: usize,
    e_state: &'a [f32],
    mmat: &'a [f32],
    dy: &'a [f32],
    out: &'a mut [f32],
}

impl TileOp for DxOp<'_> {
    #[inline(always)]
    fn tile<const R: usize, const NV: usize>(&mut self, r0: usize, v0: usize) {
        let (pp, qp, nn) = (self.g.pp, self.g.qp, self.g.nn);
        let mut acc = [[V::ZERO; NV]; R];
        if self.a.any_state {
            let rows: [&[f32]; R] =
                std::array::from_fn(|r| &self.a.bm[(r0 + r) * self.a.brs..][..nn]);
            fma_rows(&mut acc, rows, &self.a.ds[v0 * W..], pp, nn);
            for r in 0..R {
                let e = V::splat(self.e_state[r0 + r]);
                for v in 0..NV {
                    acc[r][v] *= e;
                }
            }
        }
        fma_cols(
            &mut acc,
            &self.mmat[r0 * qp + r0..],
            qp,
            &self.dy[r0 * pp + v0 * W..],
            pp,
            self.len - r0,
        );
        for r in 0..R {
            for v in 0..NV {
                store(&mut self.out[(r0 + r) * pp + (v0 + v) * W..], acc[r][v]);
            }
        }
    }
}

/// `dx` rows (len × p) of one (b, c, h) into `dx`, and `ddt_direct` into `s.ddt[..len]`.
///
/// Reads from the scratch: `dt`, `e_state`, `mmat` (`CB ∘ E`), `dy` and `xp` (packed rows);
/// `G` goes through `s.out`.
pub(crate) fn dx_head(
    g: &Geom,
    len: usize,
    s: &mut Scratch,
    a: &DxArgs<'_>,
    dx: &mut ArrayViewMut2<'_, f32>,
) {
    let pp = g.pp;
    let mut op = DxOp {
        g,
        a,
        len,
        e_state: &s.e_state,
        mmat: &s.mmat,
        dy: &s.dy,
        out: &mut s.out,
    };
    for_tiles(&mut op, len, pp / W);
    for (l, mut row) in dx.rows_mut().into_iter().enumerate().take(len) {
        let row = row.as_slice_mut().expect("dx rows are contiguous");
        let dts = V::splat(s.dt[l]);
        let mut part = V::ZERO;
        for col in (0..pp).step_by(W) {
            let at = l * pp + col;
            let gv = load(&s.out[at..]);
            part = gv.mul_add(load(&s.xp[at..]), part);
            let mut dxv = gv * dts;
            if let Some(d) = a.d {
                dxv = load(&d[col..]).mul_add(load(&s.dy[at..]), dxv);
            }
            store_partial(&mut row[col..], dxv);
        }
        s.ddt[l] = part.reduce_add();
    }
}

/// Copies the (Q × Q) block of `cb` (b, c, g, Q, Q) at `blk` into `dst` (rows `qp` wide): as
/// many rows and columns as `dst` holds (`qp` ≥ the chunk's length, possibly < Q).
pub(crate) fn pack_cb(cb: &[f32], blk: usize, q: usize, qp: usize, dst: &mut [f32]) {
    let src = &cb[blk * q * q..][..q * q];
    let k = q.min(qp);
    for (d, s) in dst.chunks_mut(qp).zip(src.chunks(q)) {
        d[..k].copy_from_slice(&s[..k]);
        d[k..].fill(0.0);
    }
}

/// Returns `(dx_blhp, ddt_direct_bhcq)`.
///
/// Errors: shapes (`B`, `dt`, `dA_cumsum`, `CB`, `dout`, `dstates`, `D`, `seq_idx`), groups
/// that do not divide the heads.
#[allow(clippy::too_many_arguments)]
pub fn chunk_scan_chunk_state_bwd_dx(
    x_blhp: ArrayView4<'_, f32>,
    dt_bhcq: ArrayView4<'_, f32>,
    dacs_bhcq: ArrayView4<'_, f32>,
    b_blgn: ArrayView4<'_, f32>,
    cb_bcgqq: ArrayView5<'_, f32>,
    dy_blhp: ArrayView4<'_, f32>,
    dstates_bchpn: ArrayView5<'_, f32>,
    d: Option<ArrayViewD<'_, f32>>,
    seq_idx: Option<ArrayView2<'_, i32>>,
    par: Par,
) -> Result<(Array4<f32>, Array4<f32>), SsdError> {
    let (nb, l, nh, np) = x_blhp.dim();
    let (_, _, ng, nn) = b_blgn.dim();
    check_shape("B", &[nb, l, ng, nn], b_blgn.shape())?;
    check_groups(nh, ng)?;
    let (nc, q) = check_bhcq("dt", dt_bhcq.shape(), nb, nh, l)?;
    check_shape("dA_cumsum", dt_bhcq.shape(), dacs_bhcq.shape())?;
    check_shape("CB", &[nb, nc, ng, q, q], cb_bcgqq.shape())?;
    check_shape("dout", &[nb, l, nh, np], dy_blhp.shape())?;
    check_shape("dstates", &[nb, nc, nh, np, nn], dstates_bchpn.shape())?;
    if let Some(d) = &d {
        check_d(d, nh, np)?;
    }
    if let Some(s) = &seq_idx {
        check_shape("seq_idx", &[nb, l], s.shape())?;
    }
    let g = local_geom(
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
    let (x, dt, hi, bm, cb, dy) = (
        flat(&x_blhp),
        flat(&dt_bhcq),
        flat(&dacs_bhcq),
        flat(&b_blgn),
        flat(&cb_bcgqq),
        flat(&dy_blhp),
    );
    let mut ds = vec![0.0f32; nb * nc * nh * g.slab()];
    pn_to_slabs(&g, &flat(&dstates_bchpn), &mut ds);
    let dtab = d.as_ref().map(|d| d_table(d, nh, np, g.pp));
    let ids = seq_idx.as_ref().map(flat);
    let seq = Seq {
        ids: ids.as_deref(),
        l,
        q,
    };
    let cum = Cum {
        dt: &dt,
        hi: &hi,
        lo: None,
    };
    let hpg = g.hpg();
    let mut dx = Array4::<f32>::zeros((nb, l, nh, np));
    let mut ddt_bchq = vec![0.0f32; nb * nc * nh * q];
    let tiles: Vec<_> = group_tiles(&g, dx.view_mut(), hpg)
        .into_iter()
        .zip(split_mut(&mut ddt_bchq, nb * nc * ng, hpg * q))
        .enumerate()
        .collect();
    for_each_tile(
        par,
        tiles,
        || Scratch::new(&g),
        |s, (i, (mut dxt, ddt))| {
            let (b, c, hg) = (i / (nc * ng), (i / ng) % nc, i % ng);
            let (t0, len) = g.chunk(c);
            pack_cb(&cb, i, q, g.qp, &mut s.cb);
            for j in 0..hpg {
                let h = hg * hpg + j;
                s.load_head(&g, cum, b, h, c);
                let any_state = s.decay_state(&g, seq, b, c);
                decay_matrix(
                    &s.hi,
                    &s.lo,
                    len,
                    g.qp,
                    &mut s.emat,
                    Some((&s.cb, &mut s.mmat)),
                );
                let first = g.x_at(b, t0, h);
                pack_rows(&dy, first, nh * np, np, len, g.pp, None, &mut s.dy);
                pack_rows(&x, first, nh * np, np, len, g.pp, None, &mut s.xp);
                let args = DxArgs {
                    bm: &bm[g.bc_at(b, t0, hg)..],
                    brs: ng * nn,
                    ds: &ds[((b * nc + c) * nh + h) * g.slab()..][..g.slab()],
                    any_state,
                    d: dtab.as_deref().map(|t| &t[h * g.pp..(h + 1) * g.pp]),
                };
                let mut dxh = dxt.index_axis_mut(Axis(1), j);
                dx_head(&g, len, s, &args, &mut dxh);
                ddt[j * q..j * q + len].copy_from_slice(&s.ddt[..len]);
            }
        },
    );
    let mut ddt = Array4::<f32>::zeros((nb, nh, nc, q));
    super::pack::bchq_to_bhcq(
        &g,
        &ddt_bchq,
        ddt.as_slice_mut().expect("owned array is contiguous"),
    );
    Ok((dx, ddt))
}
