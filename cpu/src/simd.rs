//! Shared SIMD helpers: `f32x8` loads and stores on slices (full and partial), the vector
//! `exp` and `silu`, and scalar dt processing. Every kernel pads its contiguous axis to a
//! multiple of [`W`] so that the same lanes are computed the same way in every call.

use wide::{f32x8, CmpGe, CmpLe};

/// Lanes of one vector.
pub(crate) const W: usize = 8;
/// The vector type.
pub(crate) type V = f32x8;

/// `x` rounded up to a multiple of [`W`].
pub(crate) fn pad(x: usize) -> usize {
    x.div_ceil(W) * W
}

/// Loads `s[0..8]`.
#[inline(always)]
pub(crate) fn load(s: &[f32]) -> V {
    let a: [f32; W] = s[..W].try_into().unwrap();
    V::from(a)
}

/// Stores into `s[0..8]`.
#[inline(always)]
pub(crate) fn store(s: &mut [f32], v: V) {
    s[..W].copy_from_slice(&v.to_array());
}

/// Loads the first `min(8, s.len())` elements, zero elsewhere.
#[inline(always)]
pub(crate) fn load_partial(s: &[f32]) -> V {
    if s.len() >= W {
        return load(s);
    }
    let mut a = [0.0f32; W];
    a[..s.len()].copy_from_slice(s);
    V::from(a)
}

/// Stores the first `min(8, s.len())` lanes.
#[inline(always)]
pub(crate) fn store_partial(s: &mut [f32], v: V) {
    if s.len() >= W {
        return store(s, v);
    }
    let n = s.len();
    s.copy_from_slice(&v.to_array()[..n]);
}

/// `(0, 1, …, 7)` as floats.
#[inline(always)]
pub(crate) fn iota() -> V {
    V::from([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0])
}

/// Lanes `i` with `start + i >= first` keep `v`, the others become 0.
#[inline(always)]
pub(crate) fn mask_ge(v: V, start: usize, first: usize) -> V {
    if start >= first {
        return v;
    }
    let idx = iota() + V::splat(start as f32);
    idx.cmp_ge(V::splat(first as f32)).blend(v, V::ZERO)
}

/// `exp(x)` for `x ≤ 0` (≈ 1 ulp; 0 below −87.3).
#[inline(always)]
pub(crate) fn exp_nonpos(x: V) -> V {
    x.exp()
}

/// `silu(v) = v / (1 + e^{−v})`; the exponent is capped at 87 (where `e^{87}` is still finite)
/// so that very negative `v` give ≈ −0 instead of `wide`'s out-of-range 0 for `e^{−v}`.
#[inline(always)]
pub(crate) fn silu(v: V) -> V {
    let e = (-v).fast_min(V::splat(87.0)).exp();
    v / (V::ONE + e)
}

/// Asks the CPU to bring the cache line holding `s[i]` into L1 (nothing if `i` is out of
/// range). The chunked kernels walk `x`, `z` and `out` row by row with a stride of `h·p`
/// floats, a page or more at S2, which the hardware prefetchers do not follow; without this
/// hint the row loads of one (b, h) tile dominated its packing step (measured: 70% of
/// `prepare_block`, 12% of the S2 forward).
#[inline(always)]
pub(crate) fn prefetch(s: &[f32], i: usize) {
    #[cfg(target_arch = "x86_64")]
    if let Some(p) = s.get(i) {
        // SAFETY: `_mm_prefetch` is a hint: it never faults and has no architectural effect;
        // the pointer comes from a live reference anyway.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                (p as *const f32).cast::<i8>(),
            )
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (s, i);
}

/// Prefetches the lines of `s[start..start + len]`.
#[inline(always)]
pub(crate) fn prefetch_range(s: &[f32], start: usize, len: usize) {
    let mut i = start;
    while i < start + len {
        prefetch(s, i);
        i += 16;
    }
    if len > 0 {
        prefetch(s, start + len - 1);
    }
}

/// Processed Δ in f64 (the reference's `process_dt`) from f32 inputs.
#[inline]
pub(crate) fn process_dt(dt: f32, bias: f32, softplus: bool, limit: (f64, f64)) -> f64 {
    ssd_reference::process_dt(dt as f64, bias as f64, softplus, limit)
}

/// Lanes `i` with `start + i ≤ last` keep `v`, the others become 0.
#[inline(always)]
pub(crate) fn mask_le(v: V, start: usize, last: usize) -> V {
    let idx = iota() + V::splat(start as f32);
    idx.cmp_le(V::splat(last as f32)).blend(v, V::ZERO)
}

/// Whether the AVX-512 forms may run (see [`set_avx512_allowed`]).
static AVX512_ALLOWED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Allows (the default) or forbids the AVX-512F forms of the kernels that have one (today the
/// register block of [`ssd_recurrent`](crate::ssd_recurrent), which the combined forward runs).
/// They compute every element with the same operations in the same order as the 8-lane
/// (AVX2) forms, so results are bit-identical either way; the switch exists to show that and
/// to time both on one machine. Takes effect at the next call; process-wide.
pub fn set_avx512_allowed(allowed: bool) {
    AVX512_ALLOWED.store(allowed, std::sync::atomic::Ordering::Relaxed);
}

/// Whether the next call runs the AVX-512F forms: the CPU has AVX-512F (detected at run time)
/// and [`set_avx512_allowed`] has not forbidden them.
pub fn avx512_in_use() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        AVX512_ALLOWED.load(std::sync::atomic::Ordering::Relaxed)
            && std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}
