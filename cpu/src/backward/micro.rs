//! Register-blocked small matrix products of the backward:
//! `acc[r][v] += Σ_k A[r, k] · B[k, 8v..8v+8]` for a tile of `R ≤ 6` rows and `NV ≤ 2` vectors
//! of 8 columns (12 accumulators; AVX2 has 16 vector registers). `B` is row-major with its
//! columns padded to a multiple of 8; `A` is given by rows ([`fma_rows`]) or column-major
//! ([`fma_cols`]). The accumulators live in locals during the k-loop (so they stay in registers),
//! the operands' bounds are checked once before it (unchecked loads inside: the per-iteration
//! checks cost a third of the loop's instructions), and the k-loop runs in one fixed order: a
//! result never depends on how tiles are spread over threads.

use crate::simd::{iota, V, W};
use wide::CmpLe;

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
            bv[v] = unsafe { load_at(bp.add(kk * ldb + v * W)) };
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
    assert!(a.len() >= (k - 1) * ks + R, "fma_cols: a too short");
    assert!(b.len() >= (k - 1) * ldb + NV * W, "fma_cols: b too short");
    let (ap, bp) = (a.as_ptr(), b.as_ptr());
    let mut c = *acc;
    for kk in 0..k {
        let mut bv = [V::ZERO; NV];
        for v in 0..NV {
            // SAFETY: kk·ldb + v·W + W ≤ (k − 1)·ldb + NV·W ≤ b.len() (asserted above).
            bv[v] = unsafe { load_at(bp.add(kk * ldb + v * W)) };
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

/// The 8 floats at `p`, unaligned.
///
/// # Safety
/// `p .. p + 8` must be readable.
#[inline(always)]
unsafe fn load_at(p: *const f32) -> V {
    // SAFETY: the caller guarantees 8 readable floats at `p`; `read_unaligned` needs no alignment.
    V::from(unsafe { p.cast::<[f32; W]>().read_unaligned() })
}

/// One register tile of a blocked product: rows `r0..r0+R`, vectors `v0..v0+NV`.
pub(crate) trait TileOp {
    fn tile<const R: usize, const NV: usize>(&mut self, r0: usize, v0: usize);
}

/// Covers `rows × nvec` vectors with tiles of [`MR`] × 2 (and smaller ones at the edges), row
/// blocks outermost, vectors in increasing order.
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

/// Lanes `i` with `start + i ≤ last` keep `v`, the others become 0.
#[inline(always)]
pub(crate) fn mask_le(v: V, start: usize, last: usize) -> V {
    let idx = iota() + V::splat(start as f32);
    idx.cmp_le(V::splat(last as f32)).blend(v, V::ZERO)
}
