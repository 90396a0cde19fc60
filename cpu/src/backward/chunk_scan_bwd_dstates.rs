//! `chunk_scan_bwd_dstates` [_chunk_scan_bwd_dstates]: the gradient of the state entering each
//! chunk through the outputs of the chunk's tokens.
//!
//! `dP_c[p, n] = Σ_{l in c, id_l = id_prev} exp(a_l) dy_l[p] C_l[n]`, where `id_prev` is the id of
//! the last token before the chunk (0 for the first chunk): the adjoint of the state term
//! `exp(a_l) C_l · P_c` of `chunk_scan`. Output (b, c, h, p, n).
//!
//! Per (batch, chunk, head) tile: `dYe = diag(e) dY` packed (len × p), then the (n, p) slab
//! `dPᵀ = Cᵀ dYe`, register-blocked with p along the vectors (the layout of `chunk_state`).

use super::driver::{check_bc_q, check_seq, seq, seq_ids};
use super::pack::{pack_rows, Cum, Scratch};
use crate::forward::chunk_state::slabs_to_pn;
use crate::geom::{flat, Geom};
use crate::par::{for_each_tile, split_mut, Par};
use crate::simd::W;
use crate::tile::product_cols_into;
use crate::SsdError;
use ndarray::{Array5, ArrayView2, ArrayView4};

/// The (n, pp) slab `dPᵀ = Cᵀ dYe` of one (b, c, h) from `dye` (len × pp, rows already scaled by
/// `e_prev`); `any` false means every `e_prev` is 0 (the slab is 0).
pub(crate) fn dstates_tile(
    g: &Geom,
    cm: &[f32],
    b: usize,
    c: usize,
    hg: usize,
    dye: &[f32],
    any: bool,
    slab: &mut [f32],
) {
    let (t0, len) = g.chunk(c);
    if !any || len == 0 {
        slab.fill(0.0);
        return;
    }
    product_cols_into(
        &cm[g.bc_at(b, t0, hg)..],
        g.ng * g.nn,
        dye,
        g.pp,
        len,
        slab,
        g.nn,
        g.pp / W,
    );
}

/// Returns `dprev_states_bchpn`, (b, c, h, p, n).
///
/// Errors: shapes (`C`, `dA_cumsum`, `seq_idx`), groups that do not divide the heads.
pub fn chunk_scan_bwd_dstates(
    c_blgn: ArrayView4<'_, f32>,
    dy_blhp: ArrayView4<'_, f32>,
    dacs_bhcq: ArrayView4<'_, f32>,
    seq_idx: Option<ArrayView2<'_, i32>>,
    par: Par,
) -> Result<Array5<f32>, SsdError> {
    let g = check_bc_q(&dy_blhp, "C", &c_blgn, "dA_cumsum", dacs_bhcq.shape())?;
    let (nb, nh, np, nn, nc) = (g.nb, g.nh, g.np, g.nn, g.nc);
    check_seq(&seq_idx, &g)?;
    let (cm, dy, hi) = (flat(&c_blgn), flat(&dy_blhp), flat(&dacs_bhcq));
    let ids = seq_ids(&seq_idx);
    let seq = seq(&g, &ids);
    let cum = Cum {
        dt: &hi,
        hi: &hi,
        lo: None,
    };
    let mut slabs = vec![0.0f32; nb * nc * nh * g.slab()];
    let tiles: Vec<_> = split_mut(&mut slabs, nb * nc * nh, g.slab())
        .into_iter()
        .enumerate()
        .collect();
    for_each_tile(
        par,
        tiles,
        || Scratch::new(&g),
        |s, (i, slab)| {
            let (b, c, h) = (i / (nc * nh), (i / nh) % nc, i % nh);
            let (t0, len) = g.chunk(c);
            s.load_head(&g, cum, b, h, c);
            let any = s.decay_prev(&g, seq, b, c);
            let first = g.x_at(b, t0, h);
            pack_rows(
                &dy,
                first,
                nh * np,
                np,
                len,
                g.pp,
                Some(&s.e_prev),
                &mut s.dy,
            );
            dstates_tile(&g, &cm, b, c, h / g.hpg(), &s.dy, any, slab);
        },
    );
    let mut out = Array5::<f32>::zeros((nb, nc, nh, np, nn));
    slabs_to_pn(
        &g,
        &slabs,
        out.as_slice_mut().expect("owned array is contiguous"),
    );
    Ok(out)
}
