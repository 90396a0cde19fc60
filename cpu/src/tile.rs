//! Register-blocked small matrix products, the shape every matmul-like step of the SSD takes:
//! `acc[r][v] += Σ_k A[r, k] · B[k, 8v..8v+8]` for a tile of `R ≤ 6` rows and `NV ≤ 2` vectors
//! of 8 columns (at most 12 accumulators: AVX2 has 16 vector registers). `B` is row-major with
//! its columns padded to a multiple of 8; `A` is column-major ([`fma_cols`]: one pointer and a
//! stride) or given by rows ([`fma_rows`]). Shared by the forward and the backward kernels. Accumulators live in locals for the whole k-loop. The k-loop runs in one fixed order, so the result never depends
//! on how tiles are spread over threads.

use crate::simd::{store, V, W};

/// Rows of the main tile.
pub(crate) const MR: usize = 6;

/// `acc[r][v] += Σ_{kk<k} a_rows[r][kk] · b[kk·ldb + 8v ..]`.
#[inline(always)]
pub(crate) fn fma_rows<const R: usize, const NV: usize>(
    acc: &mut [[V; NV]; R],
    a_rows: [&[f32]; R],
    b: &[f32],
    ldb: usize,
    k: usize,
) {
    if k == 0 {
        return;
    }
    for row in &a_rows {
        assert!(row.len() >= k, "fma_rows: a row shorter than k");
    }
    assert!(b.len() >= (k - 1) * ldb + NV * W, "fma_rows: b too short");
    let a = a_rows.map(|row| row.as_ptr());
    let bp = b.as_ptr();
    let mut c = *acc;
    for kk in 0..k {
        let mut bv = [V::ZERO; NV];
        for v in 0..NV {
            // SAFETY: kk·ldb + v·W + W ≤ (k − 1)·ldb + NV·W ≤ b.len() (asserted above).
            bv[v] =
                unsafe { V::from(bp.add(kk * ldb + v * W).cast::<[f32; W]>().read_unaligned()) };
        }
        for r in 0..R {
            // SAFETY: kk < k ≤ a_rows[r].len() (asserted above).
            let av = V::splat(unsafe { *a[r].add(kk) });
            for v in 0..NV {
                c[r][v] = av.mul_add(bv[v], c[r][v]);
            }
        }
    }
    *acc = c;
}

/// `acc[r][v] += Σ_{kk<k} a[kk·ks + r] · b[kk·ldb + 8v ..]` (A column-major with stride `ks`).
///
/// The only `unsafe` of the kernels' arithmetic: with safe indexing the k-loop carried about as
/// many bounds-check instructions as FMAs (callgrind on S2: 484 M check/compare/branch vs
/// 445 M FMA instructions in the tile loops). The bounds are asserted once before the loop.
#[inline(always)]
pub(crate) fn fma_cols<const R: usize, const NV: usize>(
    acc: &mut [[V; NV]; R],
    a: &[f32],
    ks: usize,
    b: &[f32],
    ldb: usize,
    k: usize,
) {
    if k == 0 {
        return;
    }
    assert!(a.len() >= (k - 1) * ks + R && b.len() >= (k - 1) * ldb + NV * W);
    let (ap, bp) = (a.as_ptr(), b.as_ptr());
    // Accumulate in locals: `acc` is caller memory, which LLVM would otherwise store back
    // on every iteration.
    let mut c = *acc;
    for kk in 0..k {
        let mut bv = [V::ZERO; NV];
        for v in 0..NV {
            // SAFETY: kk ≤ k − 1 and v < NV, so the 8 floats at kk·ldb + 8v end at or before
            // (k − 1)·ldb + NV·8 ≤ b.len() (asserted above); unaligned reads are allowed.
            bv[v] =
                unsafe { V::from(bp.add(kk * ldb + v * W).cast::<[f32; W]>().read_unaligned()) };
        }
        for r in 0..R {
            // SAFETY: kk·ks + r < (k − 1)·ks + R ≤ a.len() (asserted above).
            let av = V::splat(unsafe { *ap.add(kk * ks + r) });
            for v in 0..NV {
                c[r][v] = av.mul_add(bv[v], c[r][v]);
            }
        }
    }
    *acc = c;
}

/// One register tile of a blocked product: rows `r0..r0+R`, vectors `v0..v0+NV`.
pub(crate) trait TileOp {
    fn tile<const R: usize, const NV: usize>(&mut self, r0: usize, v0: usize);
}

/// Covers `rows × nvec` vectors with tiles of [`MR`] × 2 (and smaller ones at the edges),
/// row blocks outermost.
pub(crate) fn for_tiles<T: TileOp>(op: &mut T, rows: usize, nvec: usize) {
    let mut r0 = 0;
    while r0 + MR <= rows {
        cols::<T, MR>(op, r0, nvec);
        r0 += MR;
    }
    match rows - r0 {
        1 => cols::<T, 1>(op, r0, nvec),
        2 => cols::<T, 2>(op, r0, nvec),
        3 => cols::<T, 3>(op, r0, nvec),
        4 => cols::<T, 4>(op, r0, nvec),
        5 => cols::<T, 5>(op, r0, nvec),
        _ => {}
    }
}

#[inline(always)]
fn cols<T: TileOp, const R: usize>(op: &mut T, r0: usize, nvec: usize) {
    let mut v0 = 0;
    while v0 + 2 <= nvec {
        op.tile::<R, 2>(r0, v0);
        v0 += 2;
    }
    if v0 < nvec {
        op.tile::<R, 1>(r0, v0);
    }
}

/// `out[r·ldb + j] = Σ_{kk<k} a[kk·ks + r] · b[kk·ldb + j]` for `r < rows`, `j < 8·nvec`: a
/// column-major `A` (stride `ks`) times a row-major `B` (k × 8·nvec, stride `ldb`) written into
/// `out` (rows × 8·nvec, stride `ldb`) — the chunk's state `Bᵀ diag(w) X` and, in the backward,
/// `Cᵀ diag(e) dY`.
pub(crate) fn product_cols_into(
    a: &[f32],
    ks: usize,
    b: &[f32],
    ldb: usize,
    k: usize,
    out: &mut [f32],
    rows: usize,
    nvec: usize,
) {
    struct Op<'a> {
        a: &'a [f32],
        ks: usize,
        b: &'a [f32],
        ldb: usize,
        k: usize,
        out: &'a mut [f32],
    }
    impl TileOp for Op<'_> {
        #[inline(always)]
        fn tile<const R: usize, const NV: usize>(&mut self, r0: usize, v0: usize) {
            let mut acc = [[V::ZERO; NV]; R];
            fma_cols(
                &mut acc,
                &self.a[r0..],
                self.ks,
                &self.b[v0 * W..],
                self.ldb,
                self.k,
            );
            for r in 0..R {
                for v in 0..NV {
                    store(
                        &mut self.out[(r0 + r) * self.ldb + (v0 + v) * W..],
                        acc[r][v],
                    );
                }
            }
        }
    }
    let mut op = Op {
        a,
        ks,
        b,
        ldb,
        k,
        out,
    };
    for_tiles(&mut op, rows, nvec);
}

/// The first column `l` (a multiple of 8) of row `s` of a causal `CBᵀ` / `Mᵀ` block that the
/// register tiles of `chunk_scan` read: `l ≥ s − MR`.
pub(crate) fn first_col(s: usize) -> usize {
    (s.saturating_sub(MR) / W) * W
}
