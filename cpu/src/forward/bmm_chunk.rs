//! `bmm_chunk` [_bmm_chunk_fwd]: `CB[l, s] = C_l · B_s` within each chunk and group.
//!
//! Output (b, c, g, Q, Q), the whole Q × Q block (the causal mask is applied by `chunk_scan`);
//! 0 between tokens of different `seq_idx` and at padded positions.
//!
//! Per (batch, chunk, group) tile: `Bᵀ` is packed (n × Q, s along the vectors), then
//! `CB = C Bᵀ` register-blocked. The combined forward computes only the blocks on or below the
//! diagonal (`causal`), the only ones `chunk_scan` reads.

use crate::geom::{flat, Geom, Seq};
use crate::par::{for_each_tile, split_mut, Par};
use crate::simd::{store, V, W};
use crate::tile::first_col;
use crate::tile::{fma_cols, for_tiles, TileOp};
use crate::SsdError;
use ndarray::{Array5, ArrayView2, ArrayView4};
use ssd_reference::validate::check_shape;

/// Writes `CBᵀ` of every (b, c, g) into `cbt` ((b, c, g, Q, qp) blocks: row `s`, column `l`)
/// and `Cᵀ` into `ct` ((b, c, g, n, qp) blocks, zero past the chunk). With `causal`, only the
/// vectors of columns `l ≥ s − 8` of each row `s` (rounded out to whole tiles) are written, the
/// only ones `chunk_scan` reads.
pub(crate) fn bmm_chunk_core(
    g: &Geom,
    cmat: &[f32],
    bmat: &[f32],
    seq: Seq<'_>,
    causal: bool,
    cbt: &mut [f32],
    ct: &mut [f32],
    par: Par,
) {
    let ntiles = g.nb * g.nc * g.ng;
    let tiles: Vec<_> = split_mut(cbt, ntiles, g.q * g.qp)
        .into_iter()
        .zip(split_mut(ct, ntiles, g.nn * g.qp))
        .enumerate()
        .collect();
    for_each_tile(
        par,
        tiles,
        || vec![0.0f32; g.nn * g.qp],
        |bt, (i, (out, ct))| {
            let (b, c, gg) = (i / (g.nc * g.ng), (i / g.ng) % g.nc, i % g.ng);
            let (t0, len) = g.chunk(c);
            pack_t(g, bmat, b, t0, len, gg, bt);
            pack_t(g, cmat, b, t0, len, gg, ct);
            let mut op = CbOp {
                g,
                bt,
                ct,
                causal,
                out,
            };
            for_tiles(&mut op, len, g.qp / W);
            if seq.ids.is_some() {
                for si in 0..len {
                    let id = seq.id(b, t0 + si);
                    let from = if causal { first_col(si) } else { 0 };
                    for l in from..len {
                        if seq.id(b, t0 + l) != id {
                            out[si * g.qp + l] = 0.0;
                        }
                    }
                }
            }
        },
    );
}

/// `dst[n, s] = src[b, t0 + s, g, n]` for `s < len`, 0 up to qp.
pub(crate) fn pack_t(
    g: &Geom,
    src: &[f32],
    b: usize,
    t0: usize,
    len: usize,
    gg: usize,
    dst: &mut [f32],
) {
    dst.fill(0.0);
    for s in 0..len {
        let row = &src[g.bc_at(b, t0 + s, gg)..][..g.nn];
        for (n, &v) in row.iter().enumerate() {
            dst[n * g.qp + s] = v;
        }
    }
}

struct CbOp<'a> {
    g: &'a Geom,
    bt: &'a [f32],
    ct: &'a [f32],
    causal: bool,
    out: &'a mut [f32],
}

impl TileOp for CbOp<'_> {
    #[inline(always)]
    fn tile<const R: usize, const NV: usize>(&mut self, r0: usize, v0: usize) {
        if self.causal && (v0 + NV) * W <= first_col(r0) {
            return;
        }
        let qp = self.g.qp;
        let mut acc = [[V::ZERO; NV]; R];
        fma_cols(
            &mut acc,
            &self.bt[r0..],
            qp,
            &self.ct[v0 * W..],
            qp,
            self.g.nn,
        );
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
    let mut ct = vec![0.0f32; nb * g.nc * ng * nn * g.qp];
    bmm_chunk_core(&g, &cm, &bm, seq, false, &mut blocks, &mut ct, par);
    let mut out = Array5::<f32>::zeros((nb, g.nc, ng, g.q, g.q));
    let o = out.as_slice_mut().expect("owned array is contiguous");
    // CB[l, s] = CBᵀ[s, l]
    for (dst, src) in o.chunks_mut(g.q * g.q).zip(blocks.chunks(g.q * g.qp)) {
        for l in 0..g.q {
            for s in 0..g.q {
                dst[l * g.q + s] = src[s * g.qp + l];
            }
        }
    }
    Ok(out)
}
