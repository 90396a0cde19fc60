//! Problems the way real clients run them (issue 20), on the float64 reference and the f32 CPU
//! backend: drawn by `strategies::client_spec` (whole chunks, Q ∈ {64, 128, 256}, l = k·Q from
//! 1024 to 4096, p = 64, n ∈ {64, 128}, several groups, every option on together most of the
//! time, upstream's value ranges), and the two problems of issue 20 (`gen::client_regressions`).
//!
//! On each: the reference's chunked form against its literal recurrence (`FORMS_F64`); the CPU
//! combined forward and its chunked kernels against the reference (`FORWARD_F32`); the CPU
//! combined backward against the reference's (`GRADIENT_F32`, judged as in `cpu_backward`:
//! `ssd_tests::grads`); every CPU output, gradient and A-adjoint part finite, a failure naming
//! the tensor and the index of its first non-finite value (NaN on such problems was the bug).
//! Inputs are rounded through f32 and fed to both sides, as in `cpu_forward`/`cpu_backward`.
//!
//! A case is big (up to `CLIENT_MAX_ELEMENTS` = 2²⁶ elements of b·l·h·p·n; the float64 reference
//! takes a second or two on one core), so the property test draws few cases (`PROPTEST_CASES`
//! raises them) and shrinks little. Each case prints its errors (`--nocapture` shows them).

use ndarray::{Array, Dimension};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};
use ssd_cpu::Par;
use ssd_reference::{
    chunk_cumsum, mamba_chunk_scan_combined_bwd, ssd_chunked, ssd_recurrent, ssd_recurrent_bwd,
    AAdjoint, Gradients,
};
use ssd_tests::grads::{grads_close, o32, rounded, seeds};
use ssd_tests::{cases, finite};
use ssd_verify::gen::client_regressions;
use ssd_verify::strategies::{client_spec, CLIENT_MAX_ELEMENTS};
use ssd_verify::tolerance::{max_abs, rel_l2, FORMS_F64, FORWARD_F32, GRADS_F64};
use ssd_verify::{DKind, ProblemSpec};
use std::time::Instant;

fn two() -> Par {
    Par::rayon(2)
}

/// Sizes and options of a spec, on one line.
fn describe(s: &ProblemSpec) -> String {
    let d = &s.dims;
    let o = &s.options;
    format!(
        "b {} l {} h {} p {} g {} n {} Q {} D {:?} z {} dt_bias {} softplus {} dt_limit {:?} \
         initial_states {} seq_idx {} seed {}",
        d.batch,
        d.seqlen,
        d.nheads,
        d.headdim,
        d.ngroups,
        d.dstate,
        o.chunk_size,
        s.d,
        s.z,
        s.dt_bias,
        o.dt_softplus,
        o.dt_limit,
        s.initial_states,
        s.seq_idx,
        s.seed
    )
}

/// Every gradient and A-adjoint part of a backward finite (`finite` names the first bad value).
fn grads_finite<T: Copy + Into<f64>>(
    who: &str,
    (g, a): &(Gradients<T>, AAdjoint<T>),
) -> Result<(), TestCaseError> {
    finite(&format!("{who} dx"), &g.dx)?;
    finite(&format!("{who} ddt"), &g.ddt)?;
    finite(&format!("{who} dA"), &g.da)?;
    finite(&format!("{who} dB"), &g.db)?;
    finite(&format!("{who} dC"), &g.dc)?;
    if let Some(v) = &g.dd {
        finite(&format!("{who} dD"), v)?;
    }
    if let Some(v) = &g.dz {
        finite(&format!("{who} dz"), v)?;
    }
    if let Some(v) = &g.ddt_bias {
        finite(&format!("{who} ddt_bias"), v)?;
    }
    if let Some(v) = &g.dinitial_states {
        finite(&format!("{who} dinitial_states"), v)?;
    }
    finite(&format!("{who} A adjoint intra"), &a.intra)?;
    finite(&format!("{who} A adjoint next"), &a.next)?;
    finite(&format!("{who} A adjoint prev"), &a.prev)?;
    finite(&format!("{who} A adjoint chunk"), &a.chunk)?;
    Ok(())
}

/// `rel_l2(got, want) ≤ tol`, the error returned for the report.
fn within<T1, T2, D>(
    what: &str,
    got: &Array<T1, D>,
    want: &Array<T2, D>,
    tol: f64,
) -> Result<f64, TestCaseError>
where
    T1: Copy + Into<f64>,
    T2: Copy + Into<f64>,
    D: Dimension,
{
    let e = rel_l2(got, want);
    prop_assert!(
        e <= tol,
        "{}: rel_l2 {:e} > {:e} (max_abs {:e})",
        what,
        e,
        tol,
        max_abs(got, want)
    );
    Ok(e)
}

/// One client problem on the reference and the CPU (see the module header). `dout` (and, for
/// odd `seed`, `dfinal_states`) is drawn from `seed`. With `recurrent_bwd`, the reference's
/// chunked gradients are also checked against the literal gradient (BPTT through the
/// recurrence) at `GRADS_F64`. Prints the errors of the case.
fn check_client(spec: &ProblemSpec, seed: u64, recurrent_bwd: bool) -> Result<(), TestCaseError> {
    let start = Instant::now();
    let (p64, p32) = rounded(&spec.build());
    let o = &p64.options;

    // The reference: chunked against the literal recurrence.
    let rec = ssd_recurrent(&p64.inputs(), o).unwrap();
    let want = ssd_chunked(&p64.inputs(), o).unwrap();
    finite("reference out", &want.out)?;
    finite("reference final_states", &want.final_states)?;
    let forms = within(
        "reference chunked vs recurrent out",
        &want.out,
        &rec.out,
        FORMS_F64,
    )?
    .max(within(
        "reference chunked vs recurrent final_states",
        &want.final_states,
        &rec.final_states,
        FORMS_F64,
    )?);

    // The CPU forward: the combined op and the chunked kernels.
    let got = ssd_cpu::mamba_chunk_scan_combined(&p32.inputs(), o, two()).unwrap();
    finite("cpu out", &got.out)?;
    finite("cpu final_states", &got.final_states)?;
    let chunked = ssd_cpu::ssd_chunked(&p32.inputs(), o, two()).unwrap();
    finite("cpu chunked out", &chunked.out)?;
    finite("cpu chunked final_states", &chunked.final_states)?;
    let mut fwd = 0.0f64;
    for (what, g, w) in [
        ("cpu out", &got.out, &want.out),
        ("cpu final_states", &got.final_states, &want.final_states),
        ("cpu chunked out", &chunked.out, &want.out),
        (
            "cpu chunked final_states",
            &chunked.final_states,
            &want.final_states,
        ),
    ] {
        fwd = fwd.max(within(what, g, w, FORWARD_F32)?);
    }

    // The CPU backward against the reference's.
    let (dout64, dfinal64) = seeds(&p64, seed);
    let (dout32, dfinal32) = (dout64.mapv(|v| v as f32), o32(&dfinal64));
    let got = ssd_cpu::mamba_chunk_scan_combined_bwd(
        &p32.inputs(),
        o,
        dout32.view(),
        dfinal32.as_ref().map(|v| v.view()),
        two(),
    )
    .unwrap();
    grads_finite("cpu", &got)?;
    let want = mamba_chunk_scan_combined_bwd(
        &p64.inputs(),
        o,
        dout64.view(),
        dfinal64.as_ref().map(|v| v.view()),
    )
    .unwrap();
    grads_finite("reference", &want)?;
    let (dt_bhcq, _) = chunk_cumsum(
        p64.dt.view(),
        p64.a.view(),
        p64.dt_bias.as_ref().map(|v| v.view()),
        o,
    )
    .unwrap();
    let mut worst = (0.0, 0.0);
    grads_close(
        "cpu backward",
        &p64,
        o,
        &dout64,
        &got,
        &want,
        &dt_bhcq,
        &mut worst,
    )?;

    // The reference's chunked gradients against the literal ones.
    let mut grads_forms = None;
    if recurrent_bwd {
        let lit = ssd_recurrent_bwd(
            &p64.inputs(),
            o,
            dout64.view(),
            dfinal64.as_ref().map(|v| v.view()),
        )
        .unwrap();
        let w = &want.0;
        let mut e = within("reference dx", &w.dx, &lit.dx, GRADS_F64)?;
        e = e.max(within("reference ddt", &w.ddt, &lit.ddt, GRADS_F64)?);
        e = e.max(within("reference dA", &w.da, &lit.da, GRADS_F64)?);
        e = e.max(within("reference dB", &w.db, &lit.db, GRADS_F64)?);
        e = e.max(within("reference dC", &w.dc, &lit.dc, GRADS_F64)?);
        for (what, a, b) in [
            ("reference dz", &w.dz, &lit.dz),
            (
                "reference dinitial_states",
                &w.dinitial_states,
                &lit.dinitial_states,
            ),
        ] {
            prop_assert_eq!(a.is_some(), b.is_some(), "{}", what);
            if let (Some(a), Some(b)) = (a, b) {
                e = e.max(within(what, a, b, GRADS_F64)?);
            }
        }
        prop_assert_eq!(w.dd.is_some(), lit.dd.is_some());
        if let (Some(a), Some(b)) = (&w.dd, &lit.dd) {
            e = e.max(within("reference dD", a, b, GRADS_F64)?);
        }
        prop_assert_eq!(w.ddt_bias.is_some(), lit.ddt_bias.is_some());
        if let (Some(a), Some(b)) = (&w.ddt_bias, &lit.ddt_bias) {
            e = e.max(within("reference ddt_bias", a, b, GRADS_F64)?);
        }
        grads_forms = Some(e);
    }
    println!(
        "{}: forms {forms:.1e}{} | cpu forward {fwd:.1e} | cpu backward {:.1e}, per-head \
         scalars/ddt {:.1e} of their terms | {:.1} s",
        describe(spec),
        grads_forms.map_or(String::new(), |e| format!(", gradient forms {e:.1e}")),
        worst.0,
        worst.1,
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

proptest! {
    #![proptest_config(Config { max_shrink_iters: 16, ..cases(4) })]

    /// Client-like problems (the spec is drawn and built here, so a failure prints the spec and
    /// not millions of values): reference forms, CPU forward and backward, all finite.
    #[test]
    fn client_problems_match_reference(spec in client_spec(), seed in any::<u64>()) {
        check_client(&spec, seed, false)?;
    }
}

/// The two problems of issue 20 (on which the CUDA backend returned NaN): reference forms
/// (forward and gradients), CPU forward and backward, all finite. The first with a
/// `dfinal_states` seed, the second without.
#[test]
fn client_regressions_match_reference() {
    for ((name, spec), seed) in client_regressions().into_iter().zip([7, 8]) {
        if let Err(e) = check_client(&spec, seed, true) {
            panic!("{name} ({}): {e}", describe(&spec));
        }
    }
}

/// `client_regressions` holds the two problems of issue 20 as the client ran them.
#[test]
fn client_regressions_are_the_issue_20_problems() {
    let r = client_regressions();
    let shape = |s: &ProblemSpec| {
        let d = &s.dims;
        let q = s.options.chunk_size;
        [
            d.batch, d.seqlen, d.nheads, d.headdim, d.ngroups, d.dstate, q,
        ]
    };
    assert_eq!(r.len(), 2);
    assert_eq!(r[0].0, "issue20-l2048-h16-g4-n128-q256");
    assert_eq!(shape(&r[0].1), [1, 2048, 16, 64, 4, 128, 256]);
    assert_eq!(r[0].1.options.dt_limit, (0.01, 0.1));
    assert_eq!(r[1].0, "issue20-l16384-h4-g1-n64-q64");
    assert_eq!(shape(&r[1].1), [1, 16384, 4, 64, 1, 64, 64]);
    assert_eq!(r[1].1.options.dt_limit, (0.0, f64::INFINITY));
    for (name, s) in &r {
        assert_eq!(s.d, DKind::PerHead, "{name}");
        assert!(
            s.z && s.dt_bias && s.options.dt_softplus && s.initial_states,
            "{name}"
        );
        assert!(!s.seq_idx, "{name}");
    }
    assert_ne!(r[0].1.seed, r[1].1.seed);
}

/// `client_spec` draws what it promises: whole chunks, client sizes within the element budget,
/// groups dividing heads; and, over many draws, every chunk size, h = 16, g = 4, both `D`
/// kinds, every `dt_limit`, mostly every option on, `seq_idx` in some.
#[test]
fn client_spec_draws_whole_chunks_at_client_sizes() {
    let mut runner = TestRunner::deterministic();
    let strategy = client_spec();
    let draws = 2000;
    let (mut all_on, mut with_seq) = (0, 0);
    let mut seen_q = [false; 3];
    let (mut h16, mut g4, mut per_head, mut per_channel) = (false, false, false, false);
    let mut limits = Vec::new();
    for _ in 0..draws {
        let s = strategy.new_tree(&mut runner).unwrap().current();
        let d = s.dims;
        let q = s.options.chunk_size;
        let qi = [64, 128, 256].iter().position(|&v| v == q);
        assert!(qi.is_some(), "Q = {q}");
        seen_q[qi.unwrap()] = true;
        assert!(
            d.seqlen.is_multiple_of(q) && (1024..=4096).contains(&d.seqlen),
            "l = {}, Q = {q}",
            d.seqlen
        );
        assert!((1..=2).contains(&d.batch) && (1..=16).contains(&d.nheads));
        assert_eq!(d.headdim, 64);
        assert!(d.dstate == 64 || d.dstate == 128);
        assert!([1, 2, 4].contains(&d.ngroups) && d.nheads.is_multiple_of(d.ngroups));
        let elements = d.batch * d.seqlen * d.nheads * d.headdim * d.dstate;
        assert!(elements <= CLIENT_MAX_ELEMENTS, "{}", describe(&s));
        h16 |= d.nheads == 16;
        g4 |= d.ngroups == 4;
        per_head |= s.d == DKind::PerHead;
        per_channel |= s.d == DKind::PerChannel;
        if !limits.contains(&s.options.dt_limit) {
            limits.push(s.options.dt_limit);
        }
        let on =
            s.d != DKind::None && s.z && s.dt_bias && s.options.dt_softplus && s.initial_states;
        all_on += usize::from(on);
        with_seq += usize::from(s.seq_idx);
    }
    assert!(seen_q.iter().all(|&v| v), "{seen_q:?}");
    assert!(h16 && g4 && per_head && per_channel);
    assert_eq!(limits.len(), 3, "{limits:?}");
    let frac = |k: usize| k as f64 / draws as f64;
    assert!(frac(all_on) > 0.8, "every option on in {}", frac(all_on));
    assert!(
        (0.15..0.35).contains(&frac(with_seq)),
        "seq_idx in {}",
        frac(with_seq)
    );
}
