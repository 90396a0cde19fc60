//! `bmm_chunk_bwd` [_bmm_chunk_bwd]: the adjoint of `bmm_chunk` (`CB[l, s] = C_l · B_s` within a
//! chunk and group, 0 across `seq_idx` ids).
//!
//! `dB_s += Σ_l [id_l = id_s] dCB[l, s] C_l`, `dC_l += Σ_s [id_l = id_s] dCB[l, s] B_s`, over the
//! whole Q × Q block (entries at padded rows and columns are ignored). The chunk size is read
//! off `dcb_bcgqq`.
//!
//! Per (batch, chunk, group) tile: the id mask applied to `dCB`, then `dB += dCBᵀ C` (rows `s`,
//! `dCB` read column-wise) and `dC += dCB B` (rows `l`), register-blocked with n along the
//! vectors. The combined backward passes the lower-triangular `dCB` of `chunk_scan_bwd_dcb` and
//! skips the zero half of both products.

use super::chunk_scan_chunk_state_bwd_dx::pack_cb;
use super::pack::{group_tiles, local_geom, nnp, pack_rows, unpack_rows, Scratch};
use crate::geom::{flat, Geom, Seq};
use crate::par::{for_each_tile, Par};
use crate::simd::{load, store, V, W};
use crate::tile::{fma_cols, fma_rows, for_tiles, TileOp};
use crate::SsdError;
use ndarray::{Array4, ArrayView2, ArrayView4, ArrayView5, Axis};
use ssd_reference::validate::check_shape;

struct DbCbOp<'a> {
    dcb: &'a [f32],
    qp: usize,
    cp: &'a [f32],
    nnp: usize,
    len: usize,
    lower: bool,
    db: &'a mut [f32],
}

impl TileOp for DbCbOp<'_> {
    #[inline(always)]
    fn tile<const R: usize, const NV: usize>(&mut self, r0: usize, v0: usize) {
        let (qp, nnp) = (self.qp, self.nnp);
        let mut acc = [[V::ZERO; NV]; R];
        for r in 0..R {
            for v in 0..NV {
                acc[r][v] = load(&self.db[(r0 + r) * nnp + (v0 + v) * W..]);
            }
        }
        let l0 = if self.lower { r0 } else { 0 };
        fma_cols(
            &mut acc,
            &self.dcb[l0 * qp + r0..],
            qp,
            &self.cp[l0 * nnp + v0 * W..],
            nnp,
            self.len - l0,
        );
        for r in 0..R {
            for v in 0..NV {
                store(&mut self.db[(r0 + r) * nnp + (v0 + v) * W..], acc[r][v]);
            }
        }
    }
}

struct DcCbOp<'a> {
    dcb: &'a [f32],
    qp: usize,
    bp: &'a [f32],
    nnp: usize,
    len: usize,
    lower: bool,
    dc: &'a mut [f32],
}

impl TileOp for DcCbOp<'_> {
    #[inline(always)]
    fn tile<const R: usize, const NV: usize>(&mut self, r0: usize, v0: usize) {
        let (qp, nnp) = (self.qp, self.nnp);
        let mut acc = [[V::ZERO; NV]; R];
        for r in 0..R {
            for v in 0..NV {
                acc[r][v] = load(&self.dc[(r0 + r) * nnp + (v0 + v) * W..]);
            }
        }
        let k = if self.lower { r0 + R } else { self.len };
        let rows: [&[f32]; R] = std::array::from_fn(|r| &self.dcb[(r0 + r) * qp..][..k]);
        fma_rows(&mut acc, rows, &self.bp[v0 * W..], nnp, k);
        for r in 0..R {
            for v in 0..NV {
                store(&mut self.dc[(r0 + r) * nnp + (v0 + v) * W..], acc[r][v]);
            }
        }
    }
}

/// Zeroes `dCB[l, s]` (rows `qp` wide, `l, s < len`) between tokens of different ids.
pub(crate) fn mask_dcb(dcb: &mut [f32], qp: usize, len: usize, seq: Seq<'_>, b: usize, t0: usize) {
    if seq.ids.is_none() {
        return;
    }
    for li in 0..len {
        let id = seq.id(b, t0 + li);
        let row = &mut dcb[li * qp..][..len];
        for (si, v) in row.iter_mut().enumerate() {
            if seq.id(b, t0 + si) != id {
                *v = 0.0;
            }
        }
    }
}

/// Adds `dCBᵀ C` to `s.db` and `dCB B` to `s.dc` (all (len × nnp)) from the (masked) `s.dcb`,
/// `s.cp`, `s.bp`; `lower` when `dCB` is 0 above the diagonal.
pub(crate) fn bmm_bwd_group(g: &Geom, len: usize, s: &mut Scratch, lower: bool) {
    let nnp = nnp(g);
    let mut op = DbCbOp {
        dcb: &s.dcb,
        qp: g.qp,
        cp: &s.cp,
        nnp,
        len,
        lower,
        db: &mut s.db,
    };
    for_tiles(&mut op, len, nnp / W);
    let mut op = DcCbOp {
        dcb: &s.dcb,
        qp: g.qp,
        bp: &s.bp,
        nnp,
        len,
        lower,
        dc: &mut s.dc,
    };
    for_tiles(&mut op, len, nnp / W);
}

/// Returns `(db_blgn, dc_blgn)`.
///
/// Errors: shapes (`B`, `dCB`, `seq_idx`), a zero chunk size.
pub fn bmm_chunk_bwd(
    c_blgn: ArrayView4<'_, f32>,
    b_blgn: ArrayView4<'_, f32>,
    dcb_bcgqq: ArrayView5<'_, f32>,
    seq_idx: Option<ArrayView2<'_, i32>>,
    par: Par,
) -> Result<(Array4<f32>, Array4<f32>), SsdError> {
    let (nb, l, ng, nn) = c_blgn.dim();
    check_shape("B", c_blgn.shape(), b_blgn.shape())?;
    let q = dcb_bcgqq.shape()[3];
    if q == 0 {
        return Err(SsdError::ZeroChunkSize);
    }
    let nc = l.div_ceil(q);
    check_shape("dCB", &[nb, nc, ng, q, q], dcb_bcgqq.shape())?;
    if let Some(s) = &seq_idx {
        check_shape("seq_idx", &[nb, l], s.shape())?;
    }
    let g = local_geom(
        ssd_reference::Dims {
            batch: nb,
            seqlen: l,
            nheads: ng,
            headdim: 0,
            ngroups: ng,
            dstate: nn,
        },
        q,
    );
    let (cm, bm, dcb) = (flat(&c_blgn), flat(&b_blgn), flat(&dcb_bcgqq));
    let ids = seq_idx.as_ref().map(flat);
    let seq = Seq {
        ids: ids.as_deref(),
        l,
        q,
    };
    let nnp = nnp(&g);
    let mut db = Array4::<f32>::zeros((nb, l, ng, nn));
    let mut dc = Array4::<f32>::zeros((nb, l, ng, nn));
    let tiles: Vec<_> = group_tiles(&g, db.view_mut(), 1)
        .into_iter()
        .zip(group_tiles(&g, dc.view_mut(), 1))
        .enumerate()
        .collect();
    for_each_tile(
        par,
        tiles,
        || Scratch::new(&g),
        |s, (i, (dbt, dct))| {
            let (b, c, hg) = (i / (nc * ng), (i / ng) % nc, i % ng);
            let (t0, len) = g.chunk(c);
            let first = g.bc_at(b, t0, hg);
            pack_rows(&bm, first, ng * nn, nn, len, nnp, None, &mut s.bp);
            pack_rows(&cm, first, ng * nn, nn, len, nnp, None, &mut s.cp);
            pack_cb(&dcb, i, q, g.qp, &mut s.dcb);
            mask_dcb(&mut s.dcb, g.qp, len, seq, b, t0);
            s.db[..len * nnp].fill(0.0);
            s.dc[..len * nnp].fill(0.0);
            bmm_bwd_group(&g, len, s, false);
            unpack_rows(&s.db, nnp, &mut dbt.index_axis_move(Axis(1), 0));
            unpack_rows(&s.dc, nnp, &mut dct.index_axis_move(Axis(1), 0));
        },
    );
    Ok((db, dc))
}
