//! The f32 CPU forward (ssd-cpu) against the float64 reference: every kernel, the combined op
//! for every option and chunk size, the decode step, gated RMSNorm and SwiGLU; determinism
//! across runs and thread counts; errors on bad input.
//!
//! Inputs are drawn in float64, rounded through f32 and fed to both sides, so each comparison
//! measures the kernel's own rounding only (threshold `FORWARD_F32`).

use ndarray::{s, Array1, Array2, Array4, ArrayD, IxDyn};
use proptest::prelude::*;
use ssd_cpu::Par;
use ssd_reference::{DecodeInputs, DecodeOptions, Options, Problem, RmsNormOptions, SsdError};
use ssd_tests::cases;
use ssd_verify::rng::Rng;
use ssd_verify::strategies::{broken_problem, problem, spec_within, Limits};
use ssd_verify::tolerance::{max_abs, rel_l2, FORWARD_F32};

/// The f32 problem and the float64 problem holding exactly its values.
fn rounded(p: &Problem<f64>) -> (Problem<f64>, Problem<f32>) {
    let p32 = p.to_f32();
    (p32.map(|v| v as f64), p32)
}

fn two() -> Par {
    Par::rayon(2)
}

macro_rules! check {
    ($what:expr, $got:expr, $want:expr) => {{
        let (got, want) = (&$got, &$want);
        let e = rel_l2(got, want);
        prop_assert!(
            e <= FORWARD_F32,
            "{}: rel_l2 {:e} (max_abs {:e})",
            $what,
            e,
            max_abs(got, want)
        );
    }};
}

fn f64v<D: ndarray::Dimension>(a: &ndarray::Array<f32, D>) -> ndarray::Array<f64, D> {
    a.mapv(|v| v as f64)
}

proptest! {
    #![proptest_config(cases(64))]

    /// Each of the five chunked kernels against the float64 reference kernel, fed the same
    /// f32 inputs (the CPU's own intermediates for the later kernels).
    #[test]
    fn kernels_match_reference(p in problem()) {
        let (p64, p32) = rounded(&p);
        let o = &p.options;
        let l = p.dims().seqlen;
        let seq = p32.seq_idx.as_ref().map(|v| v.view());

        let (dt32, dacs32) = ssd_cpu::chunk_cumsum(
            p32.dt.view(), p32.a.view(), p32.dt_bias.as_ref().map(|v| v.view()), o, two()).unwrap();
        let (dt64, dacs64) = ssd_reference::chunk_cumsum(
            p64.dt.view(), p64.a.view(), p64.dt_bias.as_ref().map(|v| v.view()), o).unwrap();
        check!("chunk_cumsum dt", dt32, dt64);
        check!("chunk_cumsum dA_cumsum", dacs32, dacs64);
        let (dt, dacs) = (f64v(&dt32), f64v(&dacs32));

        let st32 = ssd_cpu::chunk_state(
            p32.b.view(), p32.x.view(), dt32.view(), dacs32.view(), seq, two()).unwrap();
        let st64 = ssd_reference::chunk_state(
            p64.b.view(), p64.x.view(), dt.view(), dacs.view(), seq).unwrap();
        check!("chunk_state", st32, st64);

        let init32 = p32.initial_states.as_ref().map(|v| v.view());
        let init64 = p64.initial_states.as_ref().map(|v| v.view());
        let (prev32, fin32) = ssd_cpu::state_passing(
            st32.view(), dacs32.view(), init32, seq, l, two()).unwrap();
        let (prev64, fin64) = ssd_reference::state_passing(
            f64v(&st32).view(), dacs.view(), init64, seq, l).unwrap();
        check!("state_passing prev", prev32, prev64);
        check!("state_passing final", fin32, fin64);

        let cb32 = ssd_cpu::bmm_chunk(p32.c.view(), p32.b.view(), o.chunk_size, seq, two()).unwrap();
        let cb64 = ssd_reference::bmm_chunk(p64.c.view(), p64.b.view(), o.chunk_size, seq).unwrap();
        check!("bmm_chunk", cb32, cb64);

        let (out32, y32) = ssd_cpu::chunk_scan(
            cb32.view(), p32.x.view(), dt32.view(), dacs32.view(), p32.c.view(), prev32.view(),
            p32.d.as_ref().map(|v| v.view()), p32.z.as_ref().map(|v| v.view()), seq, two()).unwrap();
        let (out64, y64) = ssd_reference::chunk_scan(
            f64v(&cb32).view(), p64.x.view(), dt.view(), dacs.view(), p64.c.view(),
            f64v(&prev32).view(), p64.d.as_ref().map(|v| v.view()),
            p64.z.as_ref().map(|v| v.view()), seq).unwrap();
        check!("chunk_scan out", out32, out64);
        prop_assert_eq!(y32.is_some(), y64.is_some());
        if let (Some(a), Some(b)) = (y32, y64) {
            check!("chunk_scan y", a, b);
        }
    }

    /// The combined forward and `ssd_chunked` against the float64 chunked reference, at the
    /// drawn chunk size and at Q = 1, Q = 64 and Q > l; `ssd_recurrent` against the float64
    /// recurrence; the combined forward runs the recurrence (same bits).
    #[test]
    fn combined_matches_reference(p in problem()) {
        let (p64, p32) = rounded(&p);
        let l = p.dims().seqlen;
        for q in [p.options.chunk_size, 1, 64, l + 5] {
            let opts = Options { chunk_size: q, ..p.options };
            let got = ssd_cpu::mamba_chunk_scan_combined(&p32.inputs(), &opts, two()).unwrap();
            let want = ssd_reference::ssd_chunked(&p64.inputs(), &opts).unwrap();
            check!(format!("combined out Q={q}"), got.out, want.out);
            check!(format!("combined final_states Q={q}"), got.final_states, want.final_states);
            let chunked = ssd_cpu::ssd_chunked(&p32.inputs(), &opts, two()).unwrap();
            check!(format!("chunked out Q={q}"), chunked.out, want.out);
            check!(format!("chunked final_states Q={q}"), chunked.final_states, want.final_states);
        }
        let rec = ssd_cpu::ssd_recurrent(&p32.inputs(), &p.options, two()).unwrap();
        let want = ssd_reference::ssd_recurrent(&p64.inputs(), &p64.options).unwrap();
        check!("recurrent out", rec.out, want.out);
        check!("recurrent final_states", rec.final_states, want.final_states);
        let got = ssd_cpu::mamba_chunk_scan_combined(&p32.inputs(), &p.options, two()).unwrap();
        prop_assert!(same_bits(&rec.out, &got.out) && same_bits(&rec.final_states, &got.final_states));
    }

    /// The combined forward (the register-blocked recurrence, which carries the state rescaled
    /// by the decay since the start of a segment) where segments break: per-head `A` from
    /// −400 (the state forgets within a token: `e^{ΔA}` underflows) through −16 and −0.01 to
    /// 0 (no decay), Δ scaled up to 8×, `seq_idx` restarts, initial states; against the float64
    /// recurrence.
    #[test]
    fn combined_under_extreme_decay(spec in spec_within(Limits::default()), scale in 0.5f64..8.0) {
        let mut p = spec.build();
        let rates = [-400.0, -16.0, -2.0, -0.01, 0.0, -60.0, -1.0, -5.0];
        for (h, a) in p.a.iter_mut().enumerate() {
            *a = rates[h % rates.len()];
        }
        // Δ scaled up (no clamp but dt_limit's): softplus'd or raw dt both grow with `scale`
        p.dt.mapv_inplace(|v| if p.options.dt_softplus { v + scale.ln() } else { v * scale });
        let (p64, p32) = rounded(&p);
        let got = ssd_cpu::mamba_chunk_scan_combined(&p32.inputs(), &p32.options, two()).unwrap();
        let want = ssd_reference::ssd_recurrent(&p64.inputs(), &p64.options).unwrap();
        prop_assert!(got.out.iter().chain(&got.final_states).all(|v| v.is_finite()));
        check!("extreme decay out", got.out, want.out);
        check!("extreme decay final_states", got.final_states, want.final_states);
    }

    /// Unrolling the decode step over the tokens equals the combined forward (and the float64
    /// recurrence).
    #[test]
    fn decode_unrolls_combined(spec in spec_within(Limits { seqlen: 60, ..Limits::default() })) {
        let mut spec = spec;
        spec.seq_idx = false;
        let (p64, p32) = rounded(&spec.build());
        let fwd = ssd_cpu::mamba_chunk_scan_combined(&p32.inputs(), &p32.options, two()).unwrap();
        let (state, out) = unroll_decode(&p32, two());
        check!("decode out vs combined", out, fwd.out);
        check!("decode state vs combined", state, fwd.final_states);
        let rec = ssd_reference::ssd_recurrent(&p64.inputs(), &p64.options).unwrap();
        check!("decode out vs recurrence", out, rec.out);
        check!("decode state vs recurrence", state, rec.final_states);
    }

    /// Slots, padding rows and the float64 decode step.
    #[test]
    fn decode_with_slots(spec in spec_within(Limits { seqlen: 1, ..Limits::default() }), seed in any::<u64>()) {
        let mut rng = Rng::new(seed);
        let (p64, p32) = rounded(&spec.build());
        let d = p32.dims();
        let pool = d.batch + 2;
        // distinct slots, some rows padding
        let mut free: Vec<i32> = (0..pool as i32).collect();
        let idx = Array1::from_shape_fn(d.batch, |_| {
            if rng.int(0, 3) == 0 { -1 } else { free.swap_remove(rng.int(0, free.len() - 1)) }
        });
        let state0 = Array4::from_shape_fn((pool, d.nheads, d.headdim, d.dstate), |_| {
            (0.5 * rng.normal()) as f32
        });
        let mk = |p: &Problem<f32>| (p.x.slice(s![.., 0, .., ..]).to_owned(),
            p.dt.slice(s![.., 0, ..]).to_owned(), p.b.slice(s![.., 0, .., ..]).to_owned(),
            p.c.slice(s![.., 0, .., ..]).to_owned(), p.z.as_ref().map(|z| z.slice(s![.., 0, .., ..]).to_owned()));
        let (x, dt, bm, cm, z) = mk(&p32);
        let inputs = DecodeInputs {
            x: x.view(), dt: dt.view(), a: p32.a.view(), b: bm.view(), c: cm.view(),
            d: p32.d.as_ref().map(|v| v.view()), z: z.as_ref().map(|v| v.view()),
            dt_bias: p32.dt_bias.as_ref().map(|v| v.view()),
            state_batch_indices: Some(idx.view()),
        };
        let opts = DecodeOptions::from(&p32.options);
        let mut st32 = state0.clone();
        let out32 = ssd_cpu::selective_state_update(st32.view_mut(), &inputs, &opts, two()).unwrap();
        let (x6, dt6, b6, c6, z6) = (f64v(&x), f64v(&dt), f64v(&bm), f64v(&cm), z.as_ref().map(f64v));
        let inputs64 = DecodeInputs {
            x: x6.view(), dt: dt6.view(), a: p64.a.view(), b: b6.view(), c: c6.view(),
            d: p64.d.as_ref().map(|v| v.view()), z: z6.as_ref().map(|v| v.view()),
            dt_bias: p64.dt_bias.as_ref().map(|v| v.view()),
            state_batch_indices: Some(idx.view()),
        };
        let mut st64 = f64v(&state0);
        let out64 = ssd_reference::selective_state_update(st64.view_mut(), &inputs64, &opts).unwrap();
        check!("decode out", out32, out64);
        check!("decode state", st32, st64);
        for b in 0..d.batch {
            if idx[b] < 0 {
                prop_assert!(out32.slice(s![b, .., ..]).iter().all(|&v| v == 0.0));
            }
        }
        for slot in 0..pool as i32 {
            if !idx.iter().any(|&i| i == slot) {
                let su = slot as usize;
                prop_assert_eq!(st32.slice(s![su, .., .., ..]), state0.slice(s![su, .., .., ..]));
            }
        }
    }

    /// Bit-identical results run after run and for 1 and 2 threads.
    #[test]
    fn bit_identical_across_runs_and_threads(p in problem()) {
        let p32 = p.to_f32();
        let a = ssd_cpu::mamba_chunk_scan_combined(&p32.inputs(), &p32.options, two()).unwrap();
        let b = ssd_cpu::mamba_chunk_scan_combined(&p32.inputs(), &p32.options, two()).unwrap();
        let c = ssd_cpu::mamba_chunk_scan_combined(&p32.inputs(), &p32.options, Par::Seq).unwrap();
        prop_assert!(same_bits(&a.out, &b.out) && same_bits(&a.final_states, &b.final_states));
        prop_assert!(same_bits(&a.out, &c.out) && same_bits(&a.final_states, &c.final_states));
        let r1 = ssd_cpu::ssd_chunked(&p32.inputs(), &p32.options, two()).unwrap();
        let r2 = ssd_cpu::ssd_chunked(&p32.inputs(), &p32.options, Par::Seq).unwrap();
        prop_assert!(same_bits(&r1.out, &r2.out) && same_bits(&r1.final_states, &r2.final_states));
        let mut spec_p = p32.clone();
        spec_p.seq_idx = None;
        let (s1, o1) = unroll_decode(&spec_p, two());
        let (s2, o2) = unroll_decode(&spec_p, Par::Seq);
        prop_assert!(same_bits(&s1, &s2) && same_bits(&o1, &o2));
    }

    /// The AVX-512 register block (used where the CPU has AVX-512F) gives the same bits as the
    /// 8-lane one: head dims up to 80 mix 32-, 16- and 8-row blocks in one tile. On a CPU
    /// without AVX-512F both calls run the 8-lane form and this checks run-to-run equality only.
    #[test]
    fn avx512_and_avx2_forms_agree(
        spec in spec_within(Limits { headdim: 80, dstate: 40, seqlen: 200, ..Limits::default() })
    ) {
        let p32 = spec.build().to_f32();
        let wide = ssd_cpu::ssd_recurrent(&p32.inputs(), &p32.options, two()).unwrap();
        ssd_cpu::set_avx512_allowed(false);
        let narrow = ssd_cpu::ssd_recurrent(&p32.inputs(), &p32.options, two());
        ssd_cpu::set_avx512_allowed(true);
        let narrow = narrow.unwrap();
        prop_assert!(same_bits(&wide.out, &narrow.out));
        prop_assert!(same_bits(&wide.final_states, &narrow.final_states));
    }

    /// Every broken problem gives its error, never a panic.
    #[test]
    fn broken_problems_error((p, br) in broken_problem()) {
        let p32 = p.to_f32();
        match ssd_cpu::mamba_chunk_scan_combined(&p32.inputs(), &p32.options, two()) {
            Ok(_) => prop_assert!(false, "{br:?} was accepted"),
            Err(e) => prop_assert!(br.matches(&e), "{br:?} gave {e}"),
        }
    }

    /// Gated RMSNorm (both gate orders, groups) and SwiGLU against the float64 reference.
    #[test]
    fn norm_and_swiglu_match_reference(rows in 1usize..20, groups in 1usize..4, gs in 1usize..70,
                                        gate in any::<bool>(), before in any::<bool>(), seed in any::<u64>()) {
        let mut rng = Rng::new(seed);
        let nd = groups * gs;
        let x = Array2::from_shape_fn((rows, nd), |_| rng.normal() as f32);
        let z = Array2::from_shape_fn((rows, nd), |_| (2.0 * rng.normal()) as f32);
        let w = Array1::from_shape_fn(nd, |_| (1.0 + 0.3 * rng.normal()) as f32);
        let opts = RmsNormOptions { eps: 1e-5, group_size: Some(gs), norm_before_gate: before };
        let zv = gate.then(|| z.view());
        let got = ssd_cpu::rmsnorm_gated(x.view(), w.view(), zv, &opts, two()).unwrap();
        let (x6, z6, w6) = (f64v(&x), f64v(&z), f64v(&w));
        let want = ssd_reference::rmsnorm_gated(x6.view(), w6.view(), gate.then(|| z6.view()), &opts).unwrap();
        check!("rmsnorm_gated", got, want);
        let got = ssd_cpu::swiglu(x.view().into_dyn(), z.view().into_dyn(), two()).unwrap();
        let want = ssd_reference::swiglu(x6.view().into_dyn(), z6.view().into_dyn()).unwrap();
        check!("swiglu", got, want);
        let again = ssd_cpu::rmsnorm_gated(x.view(), w.view(), gate.then(|| z.view()), &opts, Par::Seq).unwrap();
        let first = ssd_cpu::rmsnorm_gated(x.view(), w.view(), gate.then(|| z.view()), &opts, two()).unwrap();
        prop_assert!(same_bits(&again, &first));
    }
}

fn same_bits<D: ndarray::Dimension>(
    a: &ndarray::Array<f32, D>,
    b: &ndarray::Array<f32, D>,
) -> bool {
    a.shape() == b.shape()
        && a.iter()
            .zip(b.iter())
            .all(|(x, y)| x.to_bits() == y.to_bits())
}

/// Runs the CPU decode step over every token (non-contiguous views of the sequence);
/// returns (final state, out).
fn unroll_decode(p: &Problem<f32>, par: Par) -> (Array4<f32>, Array4<f32>) {
    let d = p.dims();
    let mut state = p
        .initial_states
        .clone()
        .unwrap_or_else(|| Array4::zeros((d.batch, d.nheads, d.headdim, d.dstate)));
    let mut out = Array4::zeros((d.batch, d.seqlen, d.nheads, d.headdim));
    let opts = DecodeOptions::from(&p.options);
    for t in 0..d.seqlen {
        let inputs = DecodeInputs {
            x: p.x.slice(s![.., t, .., ..]),
            dt: p.dt.slice(s![.., t, ..]),
            a: p.a.view(),
            b: p.b.slice(s![.., t, .., ..]),
            c: p.c.slice(s![.., t, .., ..]),
            d: p.d.as_ref().map(|v| v.view()),
            z: p.z.as_ref().map(|v| v.slice(s![.., t, .., ..])),
            dt_bias: p.dt_bias.as_ref().map(|v| v.view()),
            state_batch_indices: None,
        };
        ssd_cpu::selective_state_update_into(
            state.view_mut(),
            &inputs,
            &opts,
            out.slice_mut(s![.., t, .., ..]),
            par,
        )
        .unwrap();
    }
    (state, out)
}

#[test]
fn empty_and_degenerate_sizes() {
    for (l, n, p) in [(0, 5, 3), (7, 1, 1), (9, 3, 17)] {
        for with_init in [false, true] {
            let mut spec = ssd_verify::ProblemSpec::plain(2, l, 4, p, 2, n, 4).all_options();
            spec.initial_states = with_init;
            let (p64, p32) = rounded(&spec.seed(5).build());
            let got =
                ssd_cpu::mamba_chunk_scan_combined(&p32.inputs(), &p32.options, two()).unwrap();
            let want = ssd_reference::ssd_chunked(&p64.inputs(), &p64.options).unwrap();
            assert_eq!(got.out.shape(), want.out.shape());
            assert!(rel_l2(&got.out, &want.out) <= FORWARD_F32);
            assert!(rel_l2(&got.final_states, &want.final_states) <= FORWARD_F32);
        }
    }
}

/// Inputs given as non-standard-layout views and outputs written into strided caller
/// buffers give the same bits as the owned path.
#[test]
fn any_layout_in_and_out() {
    let p32 = ssd_verify::ProblemSpec::plain(2, 70, 4, 6, 2, 5, 16)
        .all_options()
        .seed(11)
        .build()
        .to_f32();
    let want = ssd_cpu::mamba_chunk_scan_combined(&p32.inputs(), &p32.options, two()).unwrap();
    // x stored as (p, h, l, b) and viewed back as (b, l, h, p)
    let xt = p32.x.view().reversed_axes().to_owned();
    let mut inputs = p32.inputs();
    inputs.x = xt.view().reversed_axes();
    let mut out_store = Array4::<f32>::zeros((6, 4, 70, 2));
    let mut fin_store = Array4::<f32>::zeros((5, 6, 4, 2));
    let mut ws = ssd_cpu::Workspace::new();
    for _ in 0..2 {
        ssd_cpu::mamba_chunk_scan_combined_into(
            &inputs,
            &p32.options,
            out_store.view_mut().reversed_axes(),
            fin_store.view_mut().reversed_axes(),
            &mut ws,
            Par::Seq,
        )
        .unwrap();
        assert!(same_bits(
            &out_store.view().reversed_axes().to_owned(),
            &want.out
        ));
        assert!(same_bits(
            &fin_store.view().reversed_axes().to_owned(),
            &want.final_states
        ));
    }
}

#[test]
fn decode_bad_input_errors() {
    let p32 = ssd_verify::ProblemSpec::plain(3, 1, 2, 4, 1, 8, 4)
        .build()
        .to_f32();
    let x = p32.x.slice(s![.., 0, .., ..]).to_owned();
    let dt = p32.dt.slice(s![.., 0, ..]).to_owned();
    let bm = p32.b.slice(s![.., 0, .., ..]).to_owned();
    let cm = p32.c.slice(s![.., 0, .., ..]).to_owned();
    fn with<'a>(
        base: &DecodeInputs<'a, f32>,
        idx: Option<&'a Array1<i32>>,
    ) -> DecodeInputs<'a, f32> {
        DecodeInputs {
            state_batch_indices: idx.map(|v| v.view()),
            ..base.clone()
        }
    }
    let base = DecodeInputs {
        x: x.view(),
        dt: dt.view(),
        a: p32.a.view(),
        b: bm.view(),
        c: cm.view(),
        d: None,
        z: None,
        dt_bias: None,
        state_batch_indices: None,
    };
    let mk = |idx| with(&base, idx);
    let opts = DecodeOptions::default();
    let mut pool = Array4::<f32>::zeros((4, 2, 4, 8));
    let out_of_range = Array1::from(vec![0, 4, 1]);
    let e =
        ssd_cpu::selective_state_update(pool.view_mut(), &mk(Some(&out_of_range)), &opts, two())
            .unwrap_err();
    assert!(matches!(e, SsdError::StateIndexOutOfRange { .. }), "{e}");
    let dup = Array1::from(vec![2, -1, 2]);
    let e = ssd_cpu::selective_state_update(pool.view_mut(), &mk(Some(&dup)), &opts, two())
        .unwrap_err();
    assert!(matches!(e, SsdError::DuplicateStateIndex { .. }), "{e}");
    let mut small = Array4::<f32>::zeros((3, 2, 4, 7));
    let e = ssd_cpu::selective_state_update(small.view_mut(), &mk(None), &opts, two()).unwrap_err();
    assert!(
        matches!(
            e,
            SsdError::ShapeMismatch {
                tensor: "state",
                ..
            }
        ),
        "{e}"
    );
    let mut nan_x = x.clone();
    nan_x[[1, 1, 2]] = f32::NAN;
    let mut inp = mk(None);
    inp.x = nan_x.view();
    let mut st = Array4::<f32>::zeros((3, 2, 4, 8));
    let e = ssd_cpu::selective_state_update(st.view_mut(), &inp, &opts, two()).unwrap_err();
    assert!(matches!(e, SsdError::NonFinite { tensor: "x", .. }), "{e}");
    // rmsnorm / swiglu
    let xs = Array2::<f32>::ones((2, 6));
    let w = Array1::<f32>::ones(5);
    assert!(
        ssd_cpu::rmsnorm_gated(xs.view(), w.view(), None, &RmsNormOptions::default(), two())
            .is_err()
    );
    let w = Array1::<f32>::ones(6);
    let bad_group = RmsNormOptions {
        group_size: Some(4),
        ..RmsNormOptions::default()
    };
    assert!(ssd_cpu::rmsnorm_gated(xs.view(), w.view(), None, &bad_group, two()).is_err());
    let y = ArrayD::<f32>::zeros(IxDyn(&[2, 5]));
    assert!(ssd_cpu::swiglu(xs.view().into_dyn(), y.view(), two()).is_err());
    // a kernel called directly with inconsistent shapes
    let e = ssd_cpu::chunk_state(
        p32.b.view(),
        p32.x.view(),
        Array4::<f32>::zeros((3, 2, 1, 3)).view(),
        Array4::<f32>::zeros((3, 2, 1, 4)).view(),
        None,
        two(),
    )
    .unwrap_err();
    assert!(matches!(e, SsdError::ShapeMismatch { .. }), "{e}");
}
