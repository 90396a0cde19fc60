//! `chunk_scan_bwd_dc` [_chunk_scan_bwd_dc]: the gradient of `C` through the state term
//! `[id_l = id_prev] exp(a_l) C_l · P_c` of `chunk_scan`, and that term's gradient w.r.t. the
//! cumsum value `a_l`.
//!
//! `dC_l[n] += Σ_{heads of the group} e_l Σ_p P_c[p, n] dy_l[p]` with
//! `e_l = [id_l = id_prev] exp(a_l)`, and `V_l = e_l ⟨dy_l ⊗ C_l, P_c⟩` (w.r.t. `a_l`, not the
//! per-step decay: the combined backward turns it into `ddA_prev` by a reverse cumsum). 0 at
//! padded positions.
//!
//! Per (batch, chunk, head): `dC_h = diag(e) dY P` register-blocked over rows `l` and vectors of
//! n, added to the group's `dC` in head order, with `V_l = rowsum(dC_h ⊙ C)` in the epilogue.

use super::driver::{check_bc_q, check_seq, group_tiles_head_rows, seq, seq_ids, GroupTile};
use super::pack::{group_tiles, nnp, pack_rows, slab_to_pn_padded, unpack_rows, Cum, Scratch};
use super::row_scaled::{scaled_rows_product, RowScaled};
use crate::forward::chunk_state::pn_to_slabs;
use crate::geom::{flat, Geom};
use crate::par::Par;
use crate::SsdError;
use ndarray::{Array4, ArrayView2, ArrayView4, ArrayView5, Axis};
use ssd_reference::validate::check_shape;

/// Adds `diag(e_prev) dY P` of one head to `s.dc` and writes `V` into `s.v[..len]`.
///
/// Reads from the scratch: `dy` (packed dy rows), `p_t` (`P_c` as (p, n)), `e_prev`, `cp`.
pub(crate) fn dc_head(g: &Geom, len: usize, s: &mut Scratch, any_prev: bool) {
    let ops = RowScaled {
        rows: &s.dy,
        m: &s.p_t,
        scale: &s.e_prev,
        other: &s.cp,
        out: &mut s.dc,
        dots: &mut s.v,
    };
    scaled_rows_product(g, len, ops, any_prev);
}

/// Returns `(dc_blgn, ddacs_prev_bhcq)` (`V`, w.r.t. the cumsum `a_l`).
///
/// Errors: shapes (`C`, `dA_cumsum`, `states`, `seq_idx`), groups that do not divide the heads.
pub fn chunk_scan_bwd_dc(
    prev_states_bchpn: ArrayView5<'_, f32>,
    dacs_bhcq: ArrayView4<'_, f32>,
    c_blgn: ArrayView4<'_, f32>,
    dy_blhp: ArrayView4<'_, f32>,
    seq_idx: Option<ArrayView2<'_, i32>>,
    par: Par,
) -> Result<(Array4<f32>, Array4<f32>), SsdError> {
    let g = check_bc_q(&dy_blhp, "C", &c_blgn, "dA_cumsum", dacs_bhcq.shape())?;
    let (nb, l, nh, np, ng, nn, nc) = (g.nb, g.l, g.nh, g.np, g.ng, g.nn, g.nc);
    check_shape("states", &[nb, nc, nh, np, nn], prev_states_bchpn.shape())?;
    check_seq(&seq_idx, &g)?;
    let (hi, cm, dy) = (flat(&dacs_bhcq), flat(&c_blgn), flat(&dy_blhp));
    let mut prev = vec![0.0f32; nb * nc * nh * g.slab()];
    pn_to_slabs(&g, &flat(&prev_states_bchpn), &mut prev);
    let ids = seq_ids(&seq_idx);
    let seq = seq(&g, &ids);
    let cum = Cum {
        dt: &hi,
        hi: &hi,
        lo: None,
    };
    let (hpg, nnp, q) = (g.hpg(), nnp(&g), g.q);
    let mut dc = Array4::<f32>::zeros((nb, l, ng, nn));
    let tiles = group_tiles(&g, dc.view_mut(), 1);
    let v = group_tiles_head_rows(&g, par, tiles, |s, t, dct, vout| {
        let GroupTile {
            b, c, hg, t0, len, ..
        } = t;
        pack_rows(
            &cm,
            g.bc_at(b, t0, hg),
            ng * nn,
            nn,
            len,
            nnp,
            None,
            &mut s.cp,
        );
        s.dc[..len * nnp].fill(0.0);
        for j in 0..hpg {
            let h = hg * hpg + j;
            s.load_head(&g, cum, b, h, c);
            let any_prev = s.decay_prev(&g, seq, b, c);
            pack_rows(
                &dy,
                g.x_at(b, t0, h),
                nh * np,
                np,
                len,
                g.pp,
                None,
                &mut s.dy,
            );
            let slab = &prev[((b * nc + c) * nh + h) * g.slab()..][..g.slab()];
            slab_to_pn_padded(slab, nn, np, g.pp, nnp, &mut s.p_t);
            dc_head(&g, len, s, any_prev);
            vout[j * q..j * q + len].copy_from_slice(&s.v[..len]);
        }
        unpack_rows(&s.dc, nnp, &mut dct.index_axis_move(Axis(1), 0));
    });
    Ok((dc, v))
}
