//! `bmm_chunk` [_bmm_chunk_fwd]: `CB[l, s] = C_l · B_s` within each chunk and group.
//!
//! Output (b, c, g, Q, Q), the whole Q × Q block (the causal mask is applied by `chunk_scan`);
//! 0 between tokens of different `seq_idx` and at padded positions.
//!
//! Per (batch, chunk, group) tile: `Bᵀ` is packed (n × Q, s along the vectors), then
//! `CB = C Bᵀ` register-blocked. The combined forward computes only the blocks on or below the
//! diagonal (`causal`), the only ones `chunk_scan` reads.

use super::{flat, Geom, Seq};
use crate::par::{for_each_tile, split_mut, Par};
use crate::simd::{store, V, W};
use crate::tile::{fma_rows, for_tiles, TileOp};
use crate::SsdError;
use ndarray::{Array5, ArrayView2, ArrayView4};
use ssd_reference::validate::check_shape;

/// Writes `CB` of every (b, c, g) into `cb` ((b, c, g, Q, qp) blocks). With `causal`, only
/// the vectors of columns `s ≤ l` (rounded up to whole tiles) of each row `l` are written.
pub(crate) fn bmm_chunk_core(
    g: &Geom,
    cmat: &[f32],
    bmat: &[f32],
    seq: Seq<'_>,
    causal: bool,
    cb: &mut [f32],
    par: Par,
) {
    let blk = g.q * g.qp;
    let tiles: Vec<_> = split_mut(cb, g.nb * g.nc * g.ng, blk)
        .into_iter()
        .enumerate()
        .collect();
    for_each_tile(
        par,
        tiles,
        || vec![0.0f32; g.nn * g.qp],
        |bt, (i, out)| {
            let (b, c, gg) = (i / (g.nc * g.ng), (i / g.ng) % g.nc, i % g.ng);
            let (t0, len) = g.chunk(c);
            for n in 0..g.nn {
                for s in 0..g.qp {
                    bt[n * g.qp + s] = if s < len {
                        bmat[g.bc_at(b, t0 + s, gg) + n]
                    } else {
                        0.0
                    };
                }
            }
            let mut op = CbOp {
                cmat,
                g,
                row0: g.bc_at(b, t0, gg),
                rs: g.ng * g.nn,
                bt,
                causal,
                out,
            };
            for_tiles(&mut op, len, g.qp / W);
            if seq.ids.is_some() {
                for li in 0..len {
                    let id = seq.id(b, t0 + li);
                    let end = if causal { ((li / W) + 1) * W } else { g.qp };
                    for s in 0..end.min(len) {
                        if seq.id(b, t0 + s) != id {
                            out[li * g.qp + s] = 0.0;
                        }
                    }
                }
            }
        },
    );
}

struct CbOp<'a> {
    cmat: &'a [f32],
    g: &'a Geom,
    row0: usize,
    rs: usize,
    bt: &'a [f32],
    causal: bool,
    out: &'a mut [f32],
}

impl TileOp for CbOp<'_> {
    #[inline(always)]
    fn tile<const R: usize, const NV: usize>(&mut self, r0: usize, v0: usize) {
        if self.causal && v0 * W > r0 + R - 1 {
            return;
        }
        let nn = self.g.nn;
        let a_rows: [&[f32]; R] =
            std::array::from_fn(|r| &self.cmat[self.row0 + (r0 + r) * self.rs..][..nn]);
        let mut acc = [[V::ZERO; NV]; R];
        fma_rows(&mut acc, a_rows, &self.bt[v0 * W..], self.g.qp, nn);
        let qp = self.g.qp;
        for r in 0..R {
            for v in 0..NV {
                store(&mut self.out[(r0 + r) * qp + (v0 + v) * W..], acc[r][v]);
            }
        }
    }
}

/// Returns `cb_bcgqq`, (b, c, g, Q, Q).
///
/// Errors: shapes (`B`, `seq_idx`), a zero chunk size.
pub fn bmm_chunk(
    c_blgn: ArrayView4<'_, f32>,
    b_blgn: ArrayView4<'_, f32>,
    chunk_size: usize,
    seq_idx: Option<ArrayView2<'_, i32>>,
    par: Par,
) -> Result<Array5<f32>, SsdError> {
    let (nb, l, ng, nn) = c_blgn.dim();
    check_shape("B", c_blgn.shape(), b_blgn.shape())?;
    if chunk_size == 0 {
        return Err(SsdError::ZeroChunkSize);
    }
    if let Some(s) = &seq_idx {
        check_shape("seq_idx", &[nb, l], s.shape())?;
    }
    let g = Geom::new(
        ssd_reference::Dims {
            batch: nb,
            seqlen: l,
            nheads: ng,
            headdim: 0,
            ngroups: ng,
            dstate: nn,
        },
        chunk_size,
    );
    let (cm, bm) = (flat(&c_blgn), flat(&b_blgn));
    let ids = seq_idx.as_ref().map(flat);
    let seq = Seq {
        ids: ids.as_deref(),
        l,
        q: g.q,
    };
    let mut blocks = vec![0.0f32; nb * g.nc * ng * g.q * g.qp];
    bmm_chunk_core(&g, &cm, &bm, seq, false, &mut blocks, par);
    let mut out = Array5::<f32>::zeros((nb, g.nc, ng, g.q, g.q));
    let o = out.as_slice_mut().expect("owned array is contiguous");
    for (dst, src) in o.chunks_mut(g.q).zip(blocks.chunks(g.qp)) {
        dst.copy_from_slice(&src[..g.q]);
    }
    Ok(out)
}
