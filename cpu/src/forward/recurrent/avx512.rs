//! The register block of the recurrence ([`super::scan_block`]) on 16 lanes (AVX-512F) instead of
//! 8, for CPUs that have it (chosen at run time, [`crate::simd::avx512_in_use`]).
//!
//! Per lane the operations and their order are exactly those of the 8-lane form —
//! `G ← G·scale_in` at a segment start, `G ← fma(B_n, Δx/P, G)`, `acc_{n mod 2} ← fma(C_n, G,
//! acc_{n mod 2})`, `y ← acc_0 + acc_1` — so both forms give the same bits for every row, and a
//! tile may mix them (32- and 16-row blocks here, the 8-row rest in the 8-lane form).
//!
//! The `unsafe` is the unaligned load and store of 16 floats from a bounds-checked slice and
//! the call into a `target_feature` function after run-time detection; `wide` picks its width
//! at compile time, so it has no run-time-dispatched 16-lane type. Measured on 2 cores of an
//! AVX-512 Xeon (`ssd-verify bench cpu`, same run): S1 3.18–3.73 → 2.15–2.80 ms, S2 42–63 → 24–25 ms,
//! S3 51–57 → 29–40 ms for the combined forward.

use super::{Block, KN};
use std::arch::x86_64::{
    __m512, _mm512_add_ps, _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_mul_ps, _mm512_set1_ps,
    _mm512_setzero_ps, _mm512_storeu_ps,
};

/// Lanes of one vector.
pub(super) const W16: usize = 16;

/// Loads `s[0..16]`.
#[target_feature(enable = "avx512f")]
#[inline]
fn load16(s: &[f32]) -> __m512 {
    let s = &s[..W16];
    // SAFETY: `s` holds 16 floats (the slice above is bounds-checked); the load is unaligned.
    unsafe { _mm512_loadu_ps(s.as_ptr()) }
}

/// Stores into `s[0..16]`.
#[target_feature(enable = "avx512f")]
#[inline]
fn store16(s: &mut [f32], v: __m512) {
    let s = &mut s[..W16];
    // SAFETY: `s` holds 16 floats (the slice above is bounds-checked); the store is unaligned.
    unsafe { _mm512_storeu_ps(s.as_mut_ptr(), v) }
}

/// Rows `r..r + M·16` of `H` over the time block, every column block in turn (as
/// [`super::scan_rows`]).
#[target_feature(enable = "avx512f")]
pub(super) fn scan_rows16<const M: usize>(
    blk: &Block<'_>,
    hs: &mut [f32],
    y: &mut [f32],
    r: usize,
) {
    for (j, bc) in blk.bc.chunks_exact(2 * KN * blk.len).enumerate() {
        scan_block16::<M>(blk, bc, hs, y, r, j * KN);
    }
}

/// [`super::scan_block`] on 16 lanes.
#[target_feature(enable = "avx512f")]
#[inline]
fn scan_block16<const M: usize>(
    blk: &Block<'_>,
    bc: &[f32],
    hs: &mut [f32],
    y: &mut [f32],
    r: usize,
    n0: usize,
) {
    let rp = blk.rp;
    let first = n0 == 0;
    let zero = _mm512_setzero_ps();
    let mut hr = [[zero; M]; KN];
    for (k, row) in hr.iter_mut().enumerate() {
        for (m, v) in row.iter_mut().enumerate() {
            *v = load16(&hs[(n0 + k) * rp + r + m * W16..]);
        }
    }
    for seg in blk.segs {
        let f = _mm512_set1_ps(seg.scale_in);
        for row in hr.iter_mut() {
            for v in row.iter_mut() {
                *v = _mm512_mul_ps(*v, f);
            }
        }
        let (s, e) = (seg.start, seg.end);
        let rows = y[s * rp..e * rp]
            .chunks_exact_mut(rp)
            .zip(blk.dx[s * rp..e * rp].chunks_exact(rp));
        for ((yr, dxr), bct) in rows.zip(bc[s * 2 * KN..e * 2 * KN].chunks_exact(2 * KN)) {
            let yr = &mut yr[r..r + M * W16];
            let dxr = &dxr[r..r + M * W16];
            let mut dx = [zero; M];
            let mut acc = [[zero; M]; 2];
            for m in 0..M {
                dx[m] = load16(&dxr[m * W16..]);
                if !first {
                    acc[0][m] = load16(&yr[m * W16..]);
                }
            }
            for k in 0..KN {
                let (bv, cv) = (_mm512_set1_ps(bct[k]), _mm512_set1_ps(bct[KN + k]));
                for m in 0..M {
                    hr[k][m] = _mm512_fmadd_ps(bv, dx[m], hr[k][m]);
                    acc[k % 2][m] = _mm512_fmadd_ps(cv, hr[k][m], acc[k % 2][m]);
                }
            }
            for m in 0..M {
                store16(&mut yr[m * W16..], _mm512_add_ps(acc[0][m], acc[1][m]));
            }
        }
    }
    for (k, row) in hr.iter().enumerate() {
        for (m, v) in row.iter().enumerate() {
            store16(&mut hs[(n0 + k) * rp + r + m * W16..], *v);
        }
    }
}
