//! `chunk_scan_bwd_dcb` [_chunk_scan_bwd_dcb]: the adjoint of `chunk_scan` w.r.t. `CB`.
//!
//! `dCB[l, s] = Σ_{heads of the group} ⟨dy_l, x_s⟩ Δ_s exp(a_l − a_s)` for `s ≤ l` (the lower
//! triangle `chunk_scan` reads), 0 above the diagonal and at padded rows and columns. The
//! `seq_idx` mask belongs to `bmm_chunk` and is applied by `bmm_chunk_bwd`.
//!
//! Per (batch, chunk, head): `G = dY Xᵀ`, register-blocked over rows `l` and vectors of `s`,
//! causal blocks only, with the epilogue `dCB_h = G ⊙ E ⊙ Δ` added to the group's `dCB` in head
//! order (and, for `chunk_scan_bwd_ddacs_stable`, `W = dCB_h ⊙ CB`).

use super::driver::{for_each_group_tile, geom, GroupTile};
use super::pack::{decay_matrix, pack_rows, transpose_packed, Cum, Scratch};
use crate::geom::{flat, Geom};
use crate::par::{split_mut, Par};
use crate::simd::{load, store, V, W};
use crate::tile::{fma_rows, for_tiles, TileOp};
use crate::SsdError;
use ndarray::{Array5, ArrayView4};
use ssd_reference::chunking::check_bhcq;
use ssd_reference::validate::{check_groups, check_shape};

struct DcbOp<'a> {
    dy: &'a [f32],
    pp: usize,
    np: usize,
    xt: &'a [f32],
    qp: usize,
    emat: &'a [f32],
    dt: &'a [f32],
    dcb: &'a mut [f32],
    cb_w: Option<(&'a [f32], &'a mut [f32])>,
}

impl TileOp for DcbOp<'_> {
    #[inline(always)]
    fn tile<const R: usize, const NV: usize>(&mut self, r0: usize, v0: usize) {
        if v0 * W > r0 + R - 1 {
            return;
        }
        let (pp, np, qp) = (self.pp, self.np, self.qp);
        let rows: [&[f32]; R] = std::array::from_fn(|r| &self.dy[(r0 + r) * pp..][..np]);
        let mut acc = [[V::ZERO; NV]; R];
        fma_rows(&mut acc, rows, &self.xt[v0 * W..], qp, np);
        for r in 0..R {
            let l = r0 + r;
            for v in 0..NV {
                let col = (v0 + v) * W;
                let at = l * qp + col;
                let d = acc[r][v] * load(&self.emat[at..]) * load(&self.dt[col..]);
                let o = load(&self.dcb[at..]);
                store(&mut self.dcb[at..], o + d);
                if let Some((cb, w)) = self.cb_w.as_mut() {
                    store(&mut w[at..], d * load(&cb[at..]));
                }
            }
        }
    }
}

/// Adds `dY Xᵀ ⊙ E ⊙ Δ` of one head to `s.dcb` (rows < len, lower triangle); with `cb`, also
/// writes `W = dCB_h ⊙ CB` into `s.wmat` (`cb` = the chunk's `CB` rows, `qp` wide, or `s.cb`
/// when `None` and `want_w`).
///
/// Reads from the scratch: `dy` (packed dy rows), `xt` (xᵀ), `emat`, `dt`.
pub(crate) fn dcb_head(g: &Geom, len: usize, s: &mut Scratch, cb: Option<&[f32]>, want_w: bool) {
    let cb_w = if want_w {
        Some((cb.unwrap_or(&s.cb), &mut s.wmat[..]))
    } else {
        None
    };
    let mut op = DcbOp {
        dy: &s.dy,
        pp: g.pp,
        np: g.np,
        xt: &s.xt,
        qp: g.qp,
        emat: &s.emat,
        dt: &s.dt,
        dcb: &mut s.dcb,
        cb_w,
    };
    for_tiles(&mut op, len, g.qp / W);
}

/// Returns `dcb_bcgqq`, (b, c, g, Q, Q).
///
/// Errors: shapes (`dt`, `dA_cumsum`, `dout`), groups that do not divide the heads.
pub fn chunk_scan_bwd_dcb(
    x_blhp: ArrayView4<'_, f32>,
    dt_bhcq: ArrayView4<'_, f32>,
    dacs_bhcq: ArrayView4<'_, f32>,
    dy_blhp: ArrayView4<'_, f32>,
    ngroups: usize,
    par: Par,
) -> Result<Array5<f32>, SsdError> {
    let (nb, l, nh, np) = x_blhp.dim();
    check_groups(nh, ngroups)?;
    let (nc, q) = check_bhcq("dt", dt_bhcq.shape(), nb, nh, l)?;
    check_shape("dA_cumsum", dt_bhcq.shape(), dacs_bhcq.shape())?;
    check_shape("dout", &[nb, l, nh, np], dy_blhp.shape())?;
    let g = geom(nb, l, nh, np, ngroups, 0, q);
    let (x, dt, hi, dy) = (
        flat(&x_blhp),
        flat(&dt_bhcq),
        flat(&dacs_bhcq),
        flat(&dy_blhp),
    );
    let cum = Cum {
        dt: &dt,
        hi: &hi,
        lo: None,
    };
    let hpg = g.hpg();
    let mut out = Array5::<f32>::zeros((nb, nc, ngroups, q, q));
    let tiles = split_mut(
        out.as_slice_mut().expect("owned array is contiguous"),
        nb * nc * ngroups,
        q * q,
    );
    for_each_group_tile(&g, par, tiles, |s, t, blk| {
        let GroupTile {
            b, c, hg, t0, len, ..
        } = t;
        s.dcb[..len * g.qp].fill(0.0);
        for j in 0..hpg {
            let h = hg * hpg + j;
            s.load_head(&g, cum, b, h, c);
            decay_matrix(&s.hi, &s.lo, len, g.qp, &mut s.emat, None);
            let first = g.x_at(b, t0, h);
            pack_rows(&dy, first, nh * np, np, len, g.pp, None, &mut s.dy);
            pack_rows(&x, first, nh * np, np, len, g.pp, None, &mut s.xp);
            transpose_packed(&s.xp, len, np, g.pp, g.qp, &mut s.xt);
            dcb_head(&g, len, s, None, false);
        }
        for li in 0..len {
            blk[li * q..li * q + len].copy_from_slice(&s.dcb[li * g.qp..li * g.qp + len]);
        }
    });
    Ok(out)
}
