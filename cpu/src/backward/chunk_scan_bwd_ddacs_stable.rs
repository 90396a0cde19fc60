//! `chunk_scan_bwd_ddacs_stable` [_chunk_scan_bwd_ddAcs_stable]: the adjoint of the per-step log
//! decays `Δ_k A` through the intra-chunk (`CB`) term of `chunk_scan`.
//!
//! With `W[l, s] = ⟨dy_l, x_s⟩ Δ_s CB[l, s] exp(a_l − a_s)` and
//! `a_l − a_s = Σ_{s < k ≤ l} Δ_k A`, `ddA_intra_k = Σ_{l ≥ k > s} W[l, s]`: every pair whose
//! segment contains step k. `ddA_intra_0 = 0` and 0 at padded positions. `CB` carries the
//! `seq_idx` mask.
//!
//! Formed as sums only, never as a difference of large sums: going up from the last row, the
//! column sums `T_s = Σ_{l ≥ k} W[l, s]` gain row k (SIMD along s), and `ddA_intra_k = Σ_{s < k}
//! T_s`. `W` is the epilogue of `chunk_scan_bwd_dcb`'s product `dY Xᵀ` times `CB`.

use super::chunk_scan_bwd_dcb::dcb_head;
use super::chunk_scan_chunk_state_bwd_dx::pack_cb;
use super::driver::{geom, group_tiles_head_rows, GroupTile};
use super::pack::{decay_matrix, pack_rows, transpose_packed, Cum};
use crate::geom::flat;
use crate::par::Par;
use crate::simd::mask_le;
use crate::simd::{load, store, V, W};
use crate::SsdError;
use ndarray::{Array4, ArrayView4, ArrayView5};
use ssd_reference::chunking::check_bhcq;
use ssd_reference::validate::{check_groups, check_shape};

/// `out[k] = Σ_{l ≥ k > s} W[l, s]` for `k < len` from `wmat` (rows `qp` wide, lower triangle
/// valid), 0 at `k = 0` and from `len` to `out.len()`. `colacc` is scratch (≥ pad(len)).
pub(crate) fn intra_head(wmat: &[f32], qp: usize, len: usize, colacc: &mut [f32], out: &mut [f32]) {
    out.fill(0.0);
    if len < 2 {
        return;
    }
    colacc[..(len - 1).div_ceil(W) * W].fill(0.0);
    for k in (1..len).rev() {
        let row = &wmat[k * qp..];
        let nv = k.div_ceil(W);
        let mut sum = V::ZERO;
        for v in 0..nv {
            let j = v * W;
            let t = load(&colacc[j..]) + load(&row[j..]);
            store(&mut colacc[j..], t);
            sum += if v + 1 == nv { mask_le(t, j, k - 1) } else { t };
        }
        out[k] = sum.reduce_add();
    }
}

/// Returns `ddA_intra_bhcq`.
///
/// Errors: shapes (`dt`, `dA_cumsum`, `dout`, `CB`), groups that do not divide the heads.
pub fn chunk_scan_bwd_ddacs_stable(
    x_blhp: ArrayView4<'_, f32>,
    dt_bhcq: ArrayView4<'_, f32>,
    dacs_bhcq: ArrayView4<'_, f32>,
    dy_blhp: ArrayView4<'_, f32>,
    cb_bcgqq: ArrayView5<'_, f32>,
    par: Par,
) -> Result<Array4<f32>, SsdError> {
    let (nb, l, nh, np) = x_blhp.dim();
    let (nc, q) = check_bhcq("dt", dt_bhcq.shape(), nb, nh, l)?;
    check_shape("dA_cumsum", dt_bhcq.shape(), dacs_bhcq.shape())?;
    check_shape("dout", &[nb, l, nh, np], dy_blhp.shape())?;
    let ng = cb_bcgqq.shape()[2];
    check_groups(nh, ng)?;
    check_shape("CB", &[nb, nc, ng, q, q], cb_bcgqq.shape())?;
    let g = geom(nb, l, nh, np, ng, 0, q);
    let (x, dt, hi, dy, cb) = (
        flat(&x_blhp),
        flat(&dt_bhcq),
        flat(&dacs_bhcq),
        flat(&dy_blhp),
        flat(&cb_bcgqq),
    );
    let cum = Cum {
        dt: &dt,
        hi: &hi,
        lo: None,
    };
    let hpg = g.hpg();
    let tiles = vec![(); nb * nc * ng];
    let intra = group_tiles_head_rows(&g, par, tiles, |s, t, (), out| {
        let GroupTile {
            i,
            b,
            c,
            hg,
            t0,
            len,
        } = t;
        pack_cb(&cb, i, q, g.qp, &mut s.cb);
        s.dcb[..len * g.qp].fill(0.0);
        for j in 0..hpg {
            let h = hg * hpg + j;
            s.load_head(&g, cum, b, h, c);
            decay_matrix(&s.hi, &s.lo, len, g.qp, &mut s.emat, None);
            let first = g.x_at(b, t0, h);
            pack_rows(&dy, first, nh * np, np, len, g.pp, None, &mut s.dy);
            pack_rows(&x, first, nh * np, np, len, g.pp, None, &mut s.xp);
            transpose_packed(&s.xp, len, np, g.pp, g.qp, &mut s.xt);
            dcb_head(&g, len, s, None, true);
            intra_head(
                &s.wmat,
                g.qp,
                len,
                &mut s.colacc,
                &mut out[j * q..(j + 1) * q],
            );
        }
    });
    Ok(intra)
}
