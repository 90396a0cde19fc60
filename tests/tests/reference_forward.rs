//! The float64 forward in three forms: duality, decode unrolling, splitting, packing, errors.

use ndarray::{s, Array4, Axis};
use proptest::prelude::*;
use ssd_reference::{
    selective_state_update, ssd_chunked, ssd_quadratic, ssd_recurrent, validate, DecodeInputs,
    DecodeOptions, Options, Outputs, Problem, SsdError,
};
use ssd_tests::cases;
use ssd_verify::strategies::{broken_problem, problem, spec_within, Limits};
use ssd_verify::tolerance::{rel_l2, FORMS_F64};
use ssd_verify::ProblemSpec;

fn close(got: &Outputs<f64>, want: &Outputs<f64>, what: &str) -> Result<(), TestCaseError> {
    let e_out = rel_l2(&got.out, &want.out);
    let e_fin = rel_l2(&got.final_states, &want.final_states);
    prop_assert!(
        e_out <= FORMS_F64 && e_fin <= FORMS_F64,
        "{what}: rel_l2 out {e_out:e}, final_states {e_fin:e}"
    );
    Ok(())
}

proptest! {
    #![proptest_config(cases(64))]

    /// recurrent = quadratic = chunked (at the drawn Q, and at Q = 1 and Q > l).
    #[test]
    fn three_forms_agree(p in problem()) {
        let rec = ssd_recurrent(&p.inputs(), &p.options).unwrap();
        let quad = ssd_quadratic(&p.inputs(), &p.options).unwrap();
        close(&quad, &rec, "quadratic vs recurrent")?;
        let l = p.dims().seqlen;
        for q in [p.options.chunk_size, 1, l + 3] {
            let opts = Options { chunk_size: q, ..p.options };
            let ch = ssd_chunked(&p.inputs(), &opts).unwrap();
            close(&ch, &rec, &format!("chunked Q={q} vs recurrent"))?;
        }
    }

    /// The forward over a sequence equals unrolling the decode step token by token.
    #[test]
    fn decode_unrolls_forward(spec in spec_within(Limits { seqlen: 80, ..Limits::default() })) {
        let mut spec = spec;
        spec.seq_idx = false; // a decode loop runs one sequence per state slot
        let p = spec.build();
        let want = ssd_recurrent(&p.inputs(), &p.options).unwrap();
        let (state, out) = unroll_decode(&p);
        let got = Outputs { out, final_states: state };
        close(&got, &want, "decode unrolled vs forward")?;
    }

    /// Splitting at any point and passing `final_states` on equals the whole sequence.
    #[test]
    fn split_equals_whole(p in problem(), at in any::<prop::sample::Index>()) {
        let mut p = p;
        p.seq_idx = None;
        let l = p.dims().seqlen;
        let cut = at.index(l + 1);
        let whole = ssd_chunked(&p.inputs(), &p.options).unwrap();
        let first = slice_problem(&p, 0, cut, p.initial_states.clone());
        let a = ssd_chunked(&first.inputs(), &p.options).unwrap();
        let second = slice_problem(&p, cut, l, Some(a.final_states.clone()));
        let b = ssd_chunked(&second.inputs(), &p.options).unwrap();
        let mut out = a.out.clone();
        out.append(Axis(1), b.out.view()).unwrap();
        close(&Outputs { out, final_states: b.final_states }, &whole, &format!("split at {cut}"))?;
    }

    /// A row packed with `seq_idx` equals running each sequence alone (the first, if its id is
    /// 0, with the initial state; the others from zero).
    #[test]
    fn packed_equals_separate(p in problem()) {
        let mut p = p;
        if p.seq_idx.is_none() {
            let mut rng = ssd_verify::rng::Rng::new(p.dims().seqlen as u64);
            p.seq_idx = Some(ssd_verify::gen::random_seq_idx(&mut rng, p.dims().batch, p.dims().seqlen));
        }
        let packed = ssd_chunked(&p.inputs(), &p.options).unwrap();
        let seq = p.seq_idx.clone().unwrap();
        let dims = p.dims();
        for b in 0..dims.batch {
            let row = one_row(&p, b);
            let mut start = 0;
            while start < dims.seqlen {
                let id = seq[[b, start]];
                let mut end = start;
                while end < dims.seqlen && seq[[b, end]] == id { end += 1; }
                let init = if id == 0 { row.initial_states.clone() } else { None };
                let mut part = slice_problem(&row, start, end, init);
                part.seq_idx = None;
                let alone = ssd_recurrent(&part.inputs(), &p.options).unwrap();
                let got = packed.out.slice(s![b..b + 1, start..end, .., ..]).to_owned();
                let e = rel_l2(&got, &alone.out);
                prop_assert!(e <= FORMS_F64, "row {b} segment {start}..{end}: rel_l2 {e:e}");
                if end == dims.seqlen {
                    let fin = packed.final_states.slice(s![b..b + 1, .., .., ..]).to_owned();
                    let e = rel_l2(&fin, &alone.final_states);
                    prop_assert!(e <= FORMS_F64, "row {b} final state: rel_l2 {e:e}");
                }
                start = end;
            }
        }
    }

    /// Every broken problem gives its error (never a panic) from validation and every form.
    #[test]
    fn broken_problems_error((p, br) in broken_problem()) {
        for (form, r) in [
            ("validate", validate(&p.inputs(), &p.options).map(|_| ())),
            ("recurrent", ssd_recurrent(&p.inputs(), &p.options).map(|_| ())),
            ("quadratic", ssd_quadratic(&p.inputs(), &p.options).map(|_| ())),
            ("chunked", ssd_chunked(&p.inputs(), &p.options).map(|_| ())),
        ] {
            match r {
                Ok(()) => prop_assert!(false, "{form}: {br:?} was accepted"),
                Err(e) => prop_assert!(br.matches(&e), "{form}: {br:?} gave {e}"),
            }
        }
    }
}

/// Runs the decode step over every token; returns (final state, out).
fn unroll_decode(p: &Problem<f64>) -> (Array4<f64>, Array4<f64>) {
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
        let y = selective_state_update(state.view_mut(), &inputs, &opts).unwrap();
        out.slice_mut(s![.., t, .., ..]).assign(&y);
    }
    (state, out)
}

/// Tokens `start..end` of every row, with the given initial states.
fn slice_problem(
    p: &Problem<f64>,
    start: usize,
    end: usize,
    init: Option<Array4<f64>>,
) -> Problem<f64> {
    Problem {
        x: p.x.slice(s![.., start..end, .., ..]).to_owned(),
        dt: p.dt.slice(s![.., start..end, ..]).to_owned(),
        a: p.a.clone(),
        b: p.b.slice(s![.., start..end, .., ..]).to_owned(),
        c: p.c.slice(s![.., start..end, .., ..]).to_owned(),
        d: p.d.clone(),
        z: p.z
            .as_ref()
            .map(|v| v.slice(s![.., start..end, .., ..]).to_owned()),
        dt_bias: p.dt_bias.clone(),
        initial_states: init,
        seq_idx: p
            .seq_idx
            .as_ref()
            .map(|v| v.slice(s![.., start..end]).to_owned()),
        options: p.options,
    }
}

/// Row `b` of a problem as a batch of one.
fn one_row(p: &Problem<f64>, b: usize) -> Problem<f64> {
    Problem {
        x: p.x.slice(s![b..b + 1, .., .., ..]).to_owned(),
        dt: p.dt.slice(s![b..b + 1, .., ..]).to_owned(),
        a: p.a.clone(),
        b: p.b.slice(s![b..b + 1, .., .., ..]).to_owned(),
        c: p.c.slice(s![b..b + 1, .., .., ..]).to_owned(),
        d: p.d.clone(),
        z: p.z
            .as_ref()
            .map(|v| v.slice(s![b..b + 1, .., .., ..]).to_owned()),
        dt_bias: p.dt_bias.clone(),
        initial_states: p
            .initial_states
            .as_ref()
            .map(|v| v.slice(s![b..b + 1, .., .., ..]).to_owned()),
        seq_idx: p
            .seq_idx
            .as_ref()
            .map(|v| v.slice(s![b..b + 1, ..]).to_owned()),
        options: p.options,
    }
}

#[test]
fn empty_sequence_is_valid() {
    for with_init in [false, true] {
        let mut spec = ProblemSpec::plain(2, 0, 4, 3, 2, 5, 16);
        spec.initial_states = with_init;
        let p = spec.seed(3).build();
        for f in [ssd_recurrent, ssd_quadratic, ssd_chunked] {
            let o = f(&p.inputs(), &p.options).unwrap();
            assert_eq!(o.out.shape(), &[2, 0, 4, 3]);
            match &p.initial_states {
                Some(init) => assert_eq!(&o.final_states, init),
                None => assert!(o.final_states.iter().all(|&v| v == 0.0)),
            }
        }
    }
}

#[test]
fn errors_name_the_tensor_and_shapes() {
    let p = ProblemSpec::plain(1, 8, 2, 3, 1, 4, 4).build();
    let mut bad = p.clone();
    bad.dt = ndarray::Array3::zeros((1, 8, 3));
    let e = ssd_chunked(&bad.inputs(), &bad.options).unwrap_err();
    assert_eq!(
        e,
        SsdError::ShapeMismatch {
            tensor: "dt",
            expected: vec![1, 8, 2],
            actual: vec![1, 8, 3]
        }
    );
    assert_eq!(
        e.to_string(),
        "`dt` has shape (1, 8, 3) but (1, 8, 2) was expected"
    );
}

#[test]
fn decode_padding_rows_and_pool() {
    let p = ProblemSpec::plain(3, 1, 2, 3, 1, 4, 1)
        .all_options()
        .seed(9)
        .build();
    let d = p.dims();
    let pool0 = ssd_verify::gen::random_array(&[5, d.nheads, d.headdim, d.dstate], 11)
        .into_dimensionality::<ndarray::Ix4>()
        .unwrap();
    let mut pool = pool0.clone();
    let idx = ndarray::arr1(&[4, -1, 0]);
    let bads = [
        (ndarray::arr1(&[5, 0, 1]), false),
        (ndarray::arr1(&[2, 2, -1]), true),
    ];
    let inputs = DecodeInputs {
        x: p.x.slice(s![.., 0, .., ..]),
        dt: p.dt.slice(s![.., 0, ..]),
        a: p.a.view(),
        b: p.b.slice(s![.., 0, .., ..]),
        c: p.c.slice(s![.., 0, .., ..]),
        d: p.d.as_ref().map(|v| v.view()),
        z: p.z.as_ref().map(|v| v.slice(s![.., 0, .., ..])),
        dt_bias: p.dt_bias.as_ref().map(|v| v.view()),
        state_batch_indices: Some(idx.view()),
    };
    let opts = DecodeOptions::from(&p.options);
    let out = selective_state_update(pool.view_mut(), &inputs, &opts).unwrap();
    // the padding row is 0 and slots 1..=3 are untouched
    assert!(out.slice(s![1, .., ..]).iter().all(|&v| v == 0.0));
    for slot in 1..4 {
        assert_eq!(
            pool.slice(s![slot, .., .., ..]),
            pool0.slice(s![slot, .., .., ..])
        );
    }
    // row 0 updated slot 4 exactly as a batch of one with that state
    let mut single = pool0.slice(s![4..5, .., .., ..]).to_owned();
    let one = DecodeInputs {
        x: p.x.slice(s![0..1, 0, .., ..]),
        dt: p.dt.slice(s![0..1, 0, ..]),
        b: p.b.slice(s![0..1, 0, .., ..]),
        c: p.c.slice(s![0..1, 0, .., ..]),
        z: p.z.as_ref().map(|v| v.slice(s![0..1, 0, .., ..])),
        state_batch_indices: None,
        ..inputs.clone()
    };
    let y = selective_state_update(single.view_mut(), &one, &opts).unwrap();
    assert_eq!(y.slice(s![0, .., ..]), out.slice(s![0, .., ..]));
    assert_eq!(
        single.slice(s![0, .., .., ..]),
        pool.slice(s![4, .., .., ..])
    );
    // out-of-range and duplicate slots are errors, and leave the pool untouched
    let before = pool.clone();
    for (bad, want_dup) in &bads {
        let e = selective_state_update(
            pool.view_mut(),
            &DecodeInputs {
                state_batch_indices: Some(bad.view()),
                ..inputs.clone()
            },
            &opts,
        )
        .unwrap_err();
        assert_eq!(
            matches!(e, SsdError::DuplicateStateIndex { .. }),
            *want_dup,
            "{e}"
        );
        assert_eq!(
            matches!(e, SsdError::StateIndexOutOfRange { .. }),
            !want_dup,
            "{e}"
        );
    }
    assert_eq!(pool, before);
}
