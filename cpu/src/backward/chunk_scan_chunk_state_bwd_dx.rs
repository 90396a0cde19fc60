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

use super::driver::{check_bc_q, check_seq, group_tiles_head_rows, seq, seq_ids, GroupTile};
use super::pack::{decay_matrix, group_tiles, pack_rows, Cum, Scratch};
use crate::forward::chunk_scan::d_table;
use crate::forward::chunk_state::pn_to_slabs;
use crate::geom::{flat, Geom};
use crate::par::Par;
use crate::simd::{load, store, store_partial, V, W};
use crate::tile::{fma_cols, fma_rows, for_tiles, TileOp};
use crate::SsdError;
use ndarray::{Array4, ArrayView2, ArrayView4, ArrayView5, ArrayViewD, ArrayViewMut2, Axis};
use ssd_reference::validate::{check_d, check_shape};

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
    let g = check_bc_q(&x_blhp, "B", &b_blgn, "dt", dt_bhcq.shape())?;
    let (nb, l, nh, np, ng, nn, nc, q) = (g.nb, g.l, g.nh, g.np, g.ng, g.nn, g.nc, g.q);
    check_shape("dA_cumsum", dt_bhcq.shape(), dacs_bhcq.shape())?;
    check_shape("CB", &[nb, nc, ng, q, q], cb_bcgqq.shape())?;
    check_shape("dout", &[nb, l, nh, np], dy_blhp.shape())?;
    check_shape("dstates", &[nb, nc, nh, np, nn], dstates_bchpn.shape())?;
    if let Some(d) = &d {
        check_d(d, nh, np)?;
    }
    check_seq(&seq_idx, &g)?;
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
    let ids = seq_ids(&seq_idx);
    let seq = seq(&g, &ids);
    let cum = Cum {
        dt: &dt,
        hi: &hi,
        lo: None,
    };
    let hpg = g.hpg();
    let mut dx = Array4::<f32>::zeros((nb, l, nh, np));
    let tiles = group_tiles(&g, dx.view_mut(), hpg);
    let ddt = group_tiles_head_rows(&g, par, tiles, |s, t, mut dxt, ddt| {
        let GroupTile {
            i,
            b,
            c,
            hg,
            t0,
            len,
        } = t;
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
    });
    Ok((dx, ddt))
}
