//! `chunk_state_bwd_db` [_chunk_state_bwd_db]: the gradient of `B` through the chunk's own state
//! `S_c = Σ_s [id_s = id_end] exp(a_last − a_s) Δ_s x_s ⊗ B_s`, and the adjoint `ddA_next` of
//! the per-step log decays inside that sum.
//!
//! `dB_s[n] += Σ_{heads of the group} w_s Σ_p dS_c[p, n] x_s[p]` with
//! `w_s = [id_s = id_end] Δ_s exp(a_last − a_s)`; with `U_s = w_s ⟨x_s ⊗ B_s, dS_c⟩`,
//! `ddA_next_k = Σ_{s < k} U_s` (an exclusive prefix sum), 0 at padded positions.
//!
//! Per (batch, chunk, head): `dB_h = diag(w) X dS` register-blocked over rows `s` and vectors of
//! n, added to the group's `dB` in head order, with `U_s = rowsum(dB_h ⊙ B)` in the epilogue.

use super::driver::{check_bc_q, check_seq, group_tiles_head_rows, seq, seq_ids, GroupTile};
use super::pack::{
    exclusive_prefix, group_tiles, nnp, pack_rows, slab_to_pn_padded, unpack_rows, Cum, Scratch,
};
use super::row_scaled::{scaled_rows_product, RowScaled};
use crate::forward::chunk_state::pn_to_slabs;
use crate::geom::{flat, Geom};
use crate::par::Par;
use crate::SsdError;
use ndarray::{Array4, ArrayView2, ArrayView4, ArrayView5, Axis};
use ssd_reference::validate::check_shape;

/// Adds `diag(w) X dS` of one head to `s.db` and writes `U` into `s.u[..len]`.
///
/// Reads from the scratch: `xp` (packed x rows), `ds_t` (`dS_c` as (p, n)), `w`, `bp`.
pub(crate) fn db_head(g: &Geom, len: usize, s: &mut Scratch, any_state: bool) {
    let ops = RowScaled {
        rows: &s.xp,
        m: &s.ds_t,
        scale: &s.w,
        other: &s.bp,
        out: &mut s.db,
        dots: &mut s.u,
    };
    scaled_rows_product(g, len, ops, any_state);
}

/// Returns `(db_blgn, ddA_next_bhcq)`.
///
/// Errors: shapes (`B`, `dt`, `dA_cumsum`, `dstates`, `seq_idx`), groups that do not divide the
/// heads.
pub fn chunk_state_bwd_db(
    x_blhp: ArrayView4<'_, f32>,
    b_blgn: ArrayView4<'_, f32>,
    dt_bhcq: ArrayView4<'_, f32>,
    dacs_bhcq: ArrayView4<'_, f32>,
    dstates_bchpn: ArrayView5<'_, f32>,
    seq_idx: Option<ArrayView2<'_, i32>>,
    par: Par,
) -> Result<(Array4<f32>, Array4<f32>), SsdError> {
    let g = check_bc_q(&x_blhp, "B", &b_blgn, "dt", dt_bhcq.shape())?;
    let (nb, l, nh, np, ng, nn, nc) = (g.nb, g.l, g.nh, g.np, g.ng, g.nn, g.nc);
    check_shape("dA_cumsum", dt_bhcq.shape(), dacs_bhcq.shape())?;
    check_shape("dstates", &[nb, nc, nh, np, nn], dstates_bchpn.shape())?;
    check_seq(&seq_idx, &g)?;
    let (x, dt, hi, bm) = (
        flat(&x_blhp),
        flat(&dt_bhcq),
        flat(&dacs_bhcq),
        flat(&b_blgn),
    );
    let mut ds = vec![0.0f32; nb * nc * nh * g.slab()];
    pn_to_slabs(&g, &flat(&dstates_bchpn), &mut ds);
    let ids = seq_ids(&seq_idx);
    let seq = seq(&g, &ids);
    let cum = Cum {
        dt: &dt,
        hi: &hi,
        lo: None,
    };
    let (hpg, nnp, q) = (g.hpg(), nnp(&g), g.q);
    let mut db = Array4::<f32>::zeros((nb, l, ng, nn));
    let tiles = group_tiles(&g, db.view_mut(), 1);
    let next = group_tiles_head_rows(&g, par, tiles, |s, t, dbt, next| {
        let GroupTile {
            b, c, hg, t0, len, ..
        } = t;
        pack_rows(
            &bm,
            g.bc_at(b, t0, hg),
            ng * nn,
            nn,
            len,
            nnp,
            None,
            &mut s.bp,
        );
        s.db[..len * nnp].fill(0.0);
        for j in 0..hpg {
            let h = hg * hpg + j;
            s.load_head(&g, cum, b, h, c);
            let any_state = s.decay_state(&g, seq, b, c);
            pack_rows(
                &x,
                g.x_at(b, t0, h),
                nh * np,
                np,
                len,
                g.pp,
                None,
                &mut s.xp,
            );
            let slab = &ds[((b * nc + c) * nh + h) * g.slab()..][..g.slab()];
            slab_to_pn_padded(slab, nn, np, g.pp, nnp, &mut s.ds_t);
            db_head(&g, len, s, any_state);
            exclusive_prefix(&s.u, len, &mut next[j * q..(j + 1) * q]);
        }
        unpack_rows(&s.db, nnp, &mut dbt.index_axis_move(Axis(1), 0));
    });
    Ok((db, next))
}
