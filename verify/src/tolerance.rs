//! Error metrics and every threshold of the suite, each with the argument that derives it.
//!
//! The metric is `rel_l2 = ‖got − want‖₂ / ‖want‖₂` per tensor; `max_abs` is reported beside it.

use ndarray::{ArrayBase, Data, Dimension};

/// `‖got − want‖₂ / ‖want‖₂`, computed in f64. Returns 0 when both are zero, `+∞` when only
/// `want` is zero, and `NaN` never passes a threshold (comparisons with NaN are false).
pub fn rel_l2<S1, S2, D, T1, T2>(got: &ArrayBase<S1, D>, want: &ArrayBase<S2, D>) -> f64
where
    S1: Data<Elem = T1>,
    S2: Data<Elem = T2>,
    D: Dimension,
    T1: Copy + Into<f64>,
    T2: Copy + Into<f64>,
{
    assert_eq!(
        got.shape(),
        want.shape(),
        "rel_l2 of tensors of different shapes"
    );
    let mut num = 0.0f64;
    let mut den = 0.0f64;
    for (g, w) in got.iter().zip(want.iter()) {
        let g: f64 = (*g).into();
        let w: f64 = (*w).into();
        num += (g - w) * (g - w);
        den += w * w;
    }
    if num == 0.0 {
        0.0
    } else if den == 0.0 {
        f64::INFINITY
    } else {
        (num / den).sqrt()
    }
}

/// `max |got − want|` (NaN if any difference is NaN).
pub fn max_abs<S1, S2, D, T1, T2>(got: &ArrayBase<S1, D>, want: &ArrayBase<S2, D>) -> f64
where
    S1: Data<Elem = T1>,
    S2: Data<Elem = T2>,
    D: Dimension,
    T1: Copy + Into<f64>,
    T2: Copy + Into<f64>,
{
    assert_eq!(
        got.shape(),
        want.shape(),
        "max_abs of tensors of different shapes"
    );
    let mut m = 0.0f64;
    for (g, w) in got.iter().zip(want.iter()) {
        let d = ((*g).into() - (*w).into()).abs();
        if d.is_nan() {
            return f64::NAN;
        }
        m = m.max(d);
    }
    m
}

/// Error of a scalar reduced over many terms, relative to the sum of its terms' magnitudes
/// (`|got − want| / Σ|term|`). Used for per-head scalars such as `dA_h`, `ddt_bias_h`, `dD_h`,
/// which are sums of many signed terms that can cancel: f32 rounding of each term is relative to
/// the term, not to the (possibly much smaller) sum.
pub fn rel_to_magnitude(got: f64, want: f64, magnitude: f64) -> f64 {
    let d = (got - want).abs();
    if d == 0.0 {
        0.0
    } else if magnitude == 0.0 {
        f64::INFINITY
    } else {
        d / magnitude
    }
}

/// float64 forms against each other (recurrent, quadratic, chunked, every chunk size).
///
/// Each output is a sum of at most l·n·p ≈ 3·10⁵ products of O(1) values whose decay factors are
/// computed from sums of at most l = 300 terms; the rounding error of such sums grows like
/// `√k · ε` with ε = 1.1e-16, i.e. ≈ 1e-13 in the worst case drawn by the strategies. The forms
/// round differently (cumsum differences vs accumulated segment sums), so 1e-12 leaves an order of
/// magnitude of headroom and would still catch any missing or misplaced term (≥ 1e-3 relative).
/// At client sizes (`strategies::client_spec`, l ≤ 4096, and the issue-20 regressions, l up to
/// 16384, Q ≤ 256: the chunked form's cumsums still span one chunk) measured ≤ 5.1e-15.
pub const FORMS_F64: f64 = 1e-12;

/// float64 gradients, chunked against recurrent: the same sums as [`FORMS_F64`] but through the
/// backward's longer chains (reverse cumsums of products of two forward quantities); two orders
/// above the forward's bound still separates any real error by many orders of magnitude.
/// On the issue-20 regressions (l 2048 and 16384) measured ≤ 2.7e-14.
pub const GRADS_F64: f64 = 1e-10;

/// float64 gradients against central finite differences (directional relative error).
/// [`crate::fd`] uses the fourth-order central difference at `h = 1e-3` (≈ ε^{1/5}) along a
/// direction scaled to its inputs: truncation `O(h⁴·φ⁽⁵⁾)` ≈ 1e-13 and rounding `O(ε·|f|/h)`
/// ≈ 3e-13 of `|f|`, so ≤ 1e-9 of the directional derivative even where that is 10⁻⁴ of `|f|`
/// (measured worst 2e-8 beyond the difference's rounding floor, [`FD_ROUNDING`]); 1e-6 leaves
/// a factor of 50. (The two-point formula at its
/// best step ε^{1/3} ≈ 6e-6 measured 1.6e-6 on such a derivative, so it is not used.)
pub const FD_DIRECTIONAL: f64 = 1e-6;

/// The golden files (PyTorch float64 autograd through the literal recurrence) against our
/// float64 reference: two independent float64 computations of the same function, each with
/// relative rounding ≈ 1e-14 at these sizes (l ≤ 130); 1e-12 as for the forms.
pub const GOLDEN_F64: f64 = 1e-12;

/// f32 forward tensors against float64: f32 has ε = 6e-8; the outputs are sums of ≤ Q·n + n·p
/// terms computed with fused multiply-adds in a fixed order, where the error grows like
/// `√k · ε ≈ 100 · 6e-8` at k = 4·10⁴ (Q = 256, n = 128) in the worst case, in practice
/// closer to `ε·log k`. 1e-5 sits above the worst case (6e-6) and is 100× tighter than
/// mamba_ssm's Triton fp32 forward (≈ 1.2e-3 from float64, because it uses TF32).
pub const FORWARD_F32: f64 = 1e-5;

/// f32 gradients against float64: the backward chains two or three of the forward's sums
/// (dP from dy, dS from dP, dx from dS) plus reverse cumsums over Q, so its rounding is a few
/// times the forward's; 1e-4 bounds that with margin. Per-head scalars (`dA`, `ddt_bias`, `dD`)
/// are judged with [`rel_to_magnitude`] against this same number (`dA_h` against
/// `Σ (|ddA_intra| + |ddA_next| + |ddA_prev| + |ddA_chunk|) Δ`, `dD` against `Σ |dy ⊙ x|`).
///
/// `ddt` is judged, against this same number, relative to the norm of its terms' magnitudes,
/// `(|A| (|ddA_intra| + |ddA_next| + |ddA_prev| + |ddA_chunk|) + |ddt_direct|) ∂Δ/∂u` per
/// entry (and `ddt_bias_h` against their sum): `dΔ = A ddA + ddt_direct` adds the paths through
/// the decay `exp(Δ A)` and through the input `Δ x ⊗ B`, which can cancel to a few percent of
/// either; where `dt_limit` clamps all but a few positions, one such entry is the whole tensor,
/// and f32 terms (each within ~3e-7 of their own size, measured) leave 1e-5–1e-3 of the
/// difference. The four A-adjoint contributions are each judged against the norm of the four's
/// magnitudes (one can be negligible next to the others, below f32's range); their sum against
/// the float64 `ddA` with plain `rel_l2`. Tensors are judged beyond the f32 representation
/// error of the float64 truth (`‖got − want‖ − ‖want − f32(want)‖`): it is ≤ 6e-8 of `‖want‖`
/// unless the truth lies below f32's range (a `ddA_chunk` of 1e-46 rounds to 0, and 0 is right).
pub const GRADIENT_F32: f64 = 1e-4;

/// Whether `err` passes `threshold` (NaN never passes).
pub fn passes(err: f64, threshold: f64) -> bool {
    err <= threshold
}

/// float64 adjoint identities `⟨J v, w⟩ = ⟨v, Jᵀ w⟩` where the kernel is linear in the
/// perturbed input, so `J v` is exact (a difference with step 1): both sides are float64 sums of
/// the same ≤ 10⁶ products in different orders, each with rounding ≤ `√k·ε ≈ 1.1e-13` of the
/// sum of its terms' magnitudes. The error is therefore judged relative to those magnitudes
/// (`Σ|v ⊙ Jᵀw| + Σ|F(x ± v) ⊙ w|`, not the possibly cancelling value), and 1e-12 leaves an order
/// of magnitude of headroom while any wrong or missing term (≥ 1e-4 of the magnitude at these
/// sizes) fails by eight orders.
pub const ADJOINT_F64: f64 = 1e-12;

/// The resolution of a finite difference, as a multiple of `ε·Σ|terms of f| / h`
/// ([`crate::fd::rounding_floor`]): each evaluation of `f = Σ out·dout` is off by about
/// `ε·Σ|out·dout|` (the sum's rounding plus each output's), and the stencil weighs its four
/// values by `(1, 8, 8, 1) / 12h`, so the difference cannot resolve a directional derivative
/// below ≈ `1.5·ε·Σ|terms| / h`. It matters where a derivative is 10⁻⁸ of the loss's terms (all
/// paths through A suppressed by a per-step decay of e⁻¹⁵, or a cancelling `dA_h = Σ ddA·Δ`).
/// Checks against finite differences pass when `|fd − g| ≤ FD_DIRECTIONAL·|g| + floor`; over
/// 3000 drawn problems every check that missed the relative part was within 0.28 of
/// `ε·Σ|terms|/h`, so 4 leaves a factor of 14.
pub const FD_ROUNDING: f64 = 4.0;
