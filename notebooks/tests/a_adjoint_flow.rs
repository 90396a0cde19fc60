//! The data functions of the `a_adjoint_flow` notebook at a small size (l = 100, Q = 16 with a
//! ragged last chunk, 3 heads): the four A-adjoint contributions sum to the reference `dA`, and
//! every deviation the notebook prints is below its threshold. Rendering is not tested here.

use ssd_notebooks::a_adjoint_flow::{
    backend_flow, chunk_sizes, duality_sweep, head_split, intra_adjoint, intra_truth,
    sequence_flow, stability_sweep, Backend, FlowSpec, IntraForm, StabilitySpec,
};
use ssd_verify::tolerance::{rel_l2, FD_DIRECTIONAL, GRADIENT_F32, GRADS_F64};

/// Σ of the four contributions against the per-step adjoint of the literal recurrence, relative
/// to its largest value. Both are float64 sums of at most Q + p·n ≈ 30 products per position,
/// chained through reverse cumsums of ≤ Q = 16 terms: rounding ≈ √k·ε ≈ 1e-15; measured
/// ≈ 1e-15 at full size. 1e-12 (the forms' threshold, `FORMS_F64`) leaves three orders of
/// headroom, while a missing or misplaced term (O(1) of the scale) fails by twelve.
const SUM_VS_RECURRENT: f64 = 1e-12;

#[test]
fn four_contributions_sum_to_the_recurrent_adjoint() {
    let fp = FlowSpec::SMALL.build();
    let flows = sequence_flow(&fp).unwrap();
    assert_eq!(flows.len(), FlowSpec::SMALL.nheads);
    for f in &flows {
        assert!(
            f.max_deviation <= SUM_VS_RECURRENT,
            "head {}: deviation {:e}",
            f.head,
            f.max_deviation
        );
        // Every producer carries something: the problem exercises all four paths.
        for (name, v) in [
            ("intra", &f.intra),
            ("next", &f.next),
            ("prev", &f.prev),
            ("chunk", &f.chunk),
        ] {
            assert!(
                v.iter().any(|x| x.abs() > 1e-8),
                "head {}: {name} is 0",
                f.head
            );
        }
        // intra is 0 at every chunk's first token, by definition (no pair s < t ≤ l there).
        for c in (0..f.intra.len()).step_by(f.chunk_size) {
            assert_eq!(f.intra[c], 0.0);
        }
    }
}

#[test]
fn split_sums_to_the_backward_da_and_the_finite_difference() {
    let fp = FlowSpec::SMALL.build();
    for h in head_split(&fp).unwrap() {
        // The split sums (Σ_k Σ_t part_t Δ_t) against `chunk_cumsum_bwd`'s Σ_t (Σ_k part_t) Δ_t:
        // the same float64 products summed in another order, ≈ √(4l)·ε of Σ|terms|.
        let e = (h.sum - h.backward).abs() / h.magnitude;
        assert!(
            e <= SUM_VS_RECURRENT,
            "head {}: split vs backward {e:e}",
            h.head
        );
        // Against the central finite difference (FD_DIRECTIONAL derives 1e-6 from its
        // ≈ 1e-10 truncation and rounding at the step ε^{1/3}).
        assert!(
            h.fd_error() <= FD_DIRECTIONAL,
            "head {}: |sum − FD|/|FD| = {:e}",
            h.head,
            h.fd_error()
        );
    }
}

#[test]
fn total_is_the_same_at_every_chunk_size() {
    let fp = FlowSpec::SMALL.build();
    let qs = chunk_sizes(FlowSpec::SMALL.seqlen);
    assert_eq!(qs.first(), Some(&1));
    assert_eq!(qs.last(), Some(&FlowSpec::SMALL.seqlen));
    assert!(qs
        .iter()
        .any(|&q| !FlowSpec::SMALL.seqlen.is_multiple_of(q)));
    let sweep = duality_sweep(&fp, &qs).unwrap();
    // The deviation the notebook prints, relative to Σ_t |ddA_t Δ_t|: the chunked and the
    // recurrent gradient differ by rounding only, bounded by `GRADS_F64` (chunked vs
    // recurrent gradients); measured ≈ 4e-15 at full size.
    assert!(
        sweep.max_deviation() <= GRADS_F64,
        "largest deviation of the total {:e}",
        sweep.max_deviation()
    );
    // At Q = 1 intra and next are 0 (every chunk is one token); at Q = l the chunk path
    // carries only the initial state's decay over the whole sequence.
    let first = &sweep.rows[0];
    for k in &first.by_kernel {
        assert_eq!(k[0], 0.0);
        assert_eq!(k[1], 0.0);
    }
    // The shares really move: some kernel's share changes by more than 10 % of dA_h.
    let h = 0;
    let share =
        |r: &ssd_notebooks::a_adjoint_flow::DualityRow, k: usize| r.by_kernel[h][k] / r.total[h];
    let moved = (0..4)
        .any(|k| (share(&sweep.rows[0], k) - share(sweep.rows.last().unwrap(), k)).abs() > 0.1);
    assert!(moved);
}

#[test]
fn stable_form_in_f64_is_the_reference_kernel() {
    let spec = StabilitySpec::small();
    let (p32, dout32) = spec.problem(40, 1.0);
    let p = p32.map(f64::from);
    let dout = dout32.mapv(f64::from);
    let truth = intra_truth(&p, &dout).unwrap();
    // The notebook's generic loop in f64 and the reference kernel do the same sums in the
    // same order up to the dot product: ≈ ε.
    let e = rel_l2(&intra_adjoint(&p, &dout, IntraForm::Stable), &truth);
    assert!(e <= 1e-13, "stable f64 vs reference {e:e}");
    // The closed form is the same quantity (in float64, at mild decay): ≈ ε / ratio ≈ 1e-15.
    let e = rel_l2(&intra_adjoint(&p, &dout, IntraForm::ClosedForm), &truth);
    assert!(e <= 1e-12, "closed f64 vs reference {e:e}");
}

#[test]
fn closed_form_breaks_down_where_the_stable_form_does_not() {
    // Uniform Δ: every step decays by e^{−κ}. At κ = 0.01 both f32 forms are near f32 ε; at
    // κ = 16 the closed form's error ≈ ε_f32 · e^16 / √… ≥ 1 (measured 3–45 at l = 64–1024)
    // while the stable one stays near ε (measured ≤ 1e-5).
    let spec = StabilitySpec {
        kappas: vec![0.01, 16.0],
        uniform_dt: Some(0.03),
        ..StabilitySpec::small()
    };
    let rows = stability_sweep(&spec, &[]).unwrap();
    let (mild, strong) = (&rows[0], &rows[1]);
    // f32 thresholds: `GRADIENT_F32` = 1e-4 for a well-conditioned f32 gradient.
    assert!(
        mild.closed_f32 <= 1e-4,
        "mild closed f32 {:e}",
        mild.closed_f32
    );
    assert!(
        mild.stable_f32 <= 1e-4,
        "mild stable f32 {:e}",
        mild.stable_f32
    );
    assert!(
        strong.stable_f32 <= 1e-4,
        "strong stable f32 {:e}",
        strong.stable_f32
    );
    assert!(
        strong.closed_f32 >= 1e-2,
        "strong closed f32 {:e}",
        strong.closed_f32
    );
    // float64: the stable form is exact to rounding at any decay.
    assert!(
        strong.stable_f64 <= 1e-13,
        "strong stable f64 {:e}",
        strong.stable_f64
    );
}

/// The CPU f32 backend as the notebook runs it, on one thread.
fn cpu() -> Backend<'static> {
    Backend::cpu(ssd_cpu::Par::Seq)
}

#[test]
fn cpu_contributions_over_float64() {
    let fp = FlowSpec::SMALL.build();
    let f = backend_flow(&fp, &cpu()).unwrap();
    // Each contribution is an f32 gradient intermediate: `GRADIENT_F32` (1e-4) bounds the
    // rounding of the backward's chained sums; dA_h is a per-head scalar judged relative to the
    // magnitude of its terms, as that tolerance prescribes.
    for (k, e) in f.rel_l2.iter().enumerate() {
        assert!(*e <= GRADIENT_F32, "contribution {k}: rel_l2 {e:e}");
    }
    assert!(
        f.rel_l2_sum <= GRADIENT_F32,
        "sum: rel_l2 {:e}",
        f.rel_l2_sum
    );
    for (h, e) in f.da_error.iter().enumerate() {
        assert!(*e <= GRADIENT_F32, "head {h}: dA error {e:e}");
    }
}

#[test]
fn cpu_intra_kernel_is_stable_at_strong_decay() {
    let spec = StabilitySpec {
        kappas: vec![16.0],
        uniform_dt: Some(0.03),
        ..StabilitySpec::small()
    };
    let rows = stability_sweep(&spec, &[cpu()]).unwrap();
    let e = rows[0].backends[0].1.clone().unwrap();
    // Where the closed form has no correct digit, the CPU's intra kernel is an ordinary f32
    // gradient (`GRADIENT_F32`).
    assert!(e <= GRADIENT_F32, "CPU intra at κ = 16: {e:e}");
    assert!(rows[0].closed_f32 > 1e3 * e);
}
