//! The f32 CPU backward (ssd-cpu) against the float64 reference: every backward kernel, the
//! combined backward for every option, chunk size and `seq_idx`, the four A-adjoint
//! contributions, gated RMSNorm and SwiGLU backward; determinism across runs and thread counts;
//! errors on bad input.
//!
//! Inputs are drawn in float64, rounded through f32 and fed to both sides (for the kernels: the
//! float64 reference's intermediates, rounded through f32), so each comparison measures the
//! kernel's own rounding only (threshold `GRADIENT_F32`). Per-head scalars (`dA`, `ddt_bias`,
//! `dD`) are judged with `rel_to_magnitude` against the sum of their terms' magnitudes, and the
//! combined `ddt` against the norm of its two terms' magnitudes (`tolerance::GRADIENT_F32` says
//! why: the paths through the decay and through the input can cancel).

use ndarray::{Array, Array1, Array2, Array4, ArrayD, Dimension, Ix4, IxDyn};
use proptest::prelude::*;
use ssd_cpu::Par;
use ssd_reference::{AAdjoint, ChunkedForward, Gradients, Options, RmsNormOptions, SsdError};
use ssd_tests::cases;
use ssd_tests::grads::{close, close_scalars, dd_magnitude, grads_close, o32, rounded, seeds};
use ssd_verify::gen::random_array;
use ssd_verify::rng::Rng;
use ssd_verify::strategies::{broken_problem, spec};
use ssd_verify::tolerance::{rel_l2, GRADIENT_F32};

fn two() -> Par {
    Par::rayon(2)
}

/// An f64 array rounded through f32: `(f32 values, the same values in f64)`.
fn r32<D: Dimension>(a: &Array<f64, D>) -> (Array<f32, D>, Array<f64, D>) {
    let a32 = a.mapv(|v| v as f32);
    let a64 = a32.mapv(|v| v as f64);
    (a32, a64)
}

fn f64v<D: Dimension>(a: &Array<f32, D>) -> Array<f64, D> {
    a.mapv(|v| v as f64)
}

/// The worst errors seen so far, per test (printed when they grow; run with `--nocapture`).
static WORST: std::sync::Mutex<[f64; 4]> = std::sync::Mutex::new([0.0; 4]);

fn record(slot: usize, what: &str, e: f64) {
    let mut w = WORST.lock().unwrap_or_else(|e| e.into_inner());
    if e > w[slot] {
        w[slot] = e;
        eprintln!("worst {what}: {e:e}");
    }
}

fn same_bits<D: Dimension>(a: &Array<f32, D>, b: &Array<f32, D>) -> bool {
    a.shape() == b.shape()
        && a.iter()
            .zip(b.iter())
            .all(|(x, y)| x.to_bits() == y.to_bits())
}

fn same_grads(a: &(Gradients<f32>, AAdjoint<f32>), b: &(Gradients<f32>, AAdjoint<f32>)) -> bool {
    let opt = |x: &Option<Array4<f32>>, y: &Option<Array4<f32>>| match (x, y) {
        (Some(x), Some(y)) => same_bits(x, y),
        (None, None) => true,
        _ => false,
    };
    let (ga, aa) = a;
    let (gb, ab) = b;
    same_bits(&ga.dx, &gb.dx)
        && same_bits(&ga.ddt, &gb.ddt)
        && same_bits(&ga.da, &gb.da)
        && same_bits(&ga.db, &gb.db)
        && same_bits(&ga.dc, &gb.dc)
        && match (&ga.dd, &gb.dd) {
            (Some(x), Some(y)) => same_bits(x, y),
            (None, None) => true,
            _ => false,
        }
        && opt(&ga.dz, &gb.dz)
        && match (&ga.ddt_bias, &gb.ddt_bias) {
            (Some(x), Some(y)) => same_bits(x, y),
            (None, None) => true,
            _ => false,
        }
        && opt(&ga.dinitial_states, &gb.dinitial_states)
        && same_bits(&aa.intra, &ab.intra)
        && same_bits(&aa.next, &ab.next)
        && same_bits(&aa.prev, &ab.prev)
        && same_bits(&aa.chunk, &ab.chunk)
}

proptest! {
    #![proptest_config(cases(64))]

    /// Each backward kernel against the float64 reference kernel, both fed the reference's
    /// intermediates rounded through f32.
    #[test]
    fn kernels_match_reference(sp in spec(), seed in any::<u64>()) {
        let p = sp.build();
        let (p64, p32) = rounded(&p);
        let o = &p.options;
        let dims = p.dims();
        let (l, ng) = (dims.seqlen, dims.ngroups);
        let seq = p32.seq_idx.as_ref().map(|v| v.view());
        let (dout64, dfinal64) = seeds(&p, seed);
        let (dout32, dfinal32) = (dout64.mapv(|v| v as f32), o32(&dfinal64));
        let f = ChunkedForward::run(&p64.inputs(), o).unwrap();
        let (dt32, dt) = r32(&f.dt_bhcq);
        let (dacs32, dacs) = r32(&f.dacs_bhcq);
        let (prev32, prev) = r32(&f.prev_states_bchpn);
        let (cb32, cb) = r32(&f.cb_bcgqq);
        let y = f.y.as_ref().map(r32);
        let d32 = p32.d.as_ref().map(|v| v.view());
        let d64 = p64.d.as_ref().map(|v| v.view());
        let mut w = 0.0;

        // chunk_scan_bwd_dz
        let (dy32, dz32, dd32) = ssd_cpu::chunk_scan_bwd_dz(
            dout32.view(), p32.x.view(), y.as_ref().map(|v| v.0.view()),
            p32.z.as_ref().map(|v| v.view()), d32.clone(), two()).unwrap();
        let (dy64, dz64, dd64) = ssd_reference::chunk_scan_bwd_dz(
            dout64.view(), p64.x.view(), y.as_ref().map(|v| v.1.view()),
            p64.z.as_ref().map(|v| v.view()), d64.clone()).unwrap();
        close("chunk_scan_bwd_dz dy", &dy32, &dy64, &mut w)?;
        prop_assert_eq!(dz32.is_some(), dz64.is_some());
        if let (Some(a), Some(b)) = (&dz32, &dz64) {
            close("chunk_scan_bwd_dz dz", a, b, &mut w)?;
        }
        prop_assert_eq!(dd32.is_some(), dd64.is_some());
        if let (Some(a), Some(b)) = (&dd32, &dd64) {
            let m = dd_magnitude(&p64, &dout64).unwrap();
            close_scalars("chunk_scan_bwd_dz dD", a, b, &m, &mut w)?;
        }
        let (dy32, dy) = r32(&dy64);

        // chunk_scan_bwd_dstates
        let dp32 = ssd_cpu::chunk_scan_bwd_dstates(
            p32.c.view(), dy32.view(), dacs32.view(), seq, two()).unwrap();
        let dp64 = ssd_reference::chunk_scan_bwd_dstates(
            p64.c.view(), dy.view(), dacs.view(), seq).unwrap();
        close("chunk_scan_bwd_dstates", &dp32, &dp64, &mut w)?;
        let (dp32, dp) = r32(&dp64);

        // state_passing_bwd
        let (ds32, dinit32, ddac32) = ssd_cpu::state_passing_bwd(
            prev32.view(), dacs32.view(), dp32.view(), dfinal32.as_ref().map(|v| v.view()),
            seq, l, two()).unwrap();
        let (ds64, dinit64, ddac64) = ssd_reference::state_passing_bwd(
            prev.view(), dacs.view(), dp.view(), dfinal64.as_ref().map(|v| v.view()),
            seq, l).unwrap();
        close("state_passing_bwd dstates", &ds32, &ds64, &mut w)?;
        close("state_passing_bwd dinitial", &dinit32, &dinit64, &mut w)?;
        close("state_passing_bwd ddA_chunk", &ddac32, &ddac64, &mut w)?;
        let (ds32, ds) = r32(&ds64);

        // chunk_scan_chunk_state_bwd_dx
        let (dx32, ddtd32) = ssd_cpu::chunk_scan_chunk_state_bwd_dx(
            p32.x.view(), dt32.view(), dacs32.view(), p32.b.view(), cb32.view(), dy32.view(),
            ds32.view(), d32.clone(), seq, two()).unwrap();
        let (dx64, ddtd64) = ssd_reference::chunk_scan_chunk_state_bwd_dx(
            p64.x.view(), dt.view(), dacs.view(), p64.b.view(), cb.view(), dy.view(),
            ds.view(), d64.clone(), seq).unwrap();
        close("chunk_scan_chunk_state_bwd_dx dx", &dx32, &dx64, &mut w)?;
        close("chunk_scan_chunk_state_bwd_dx ddt_direct", &ddtd32, &ddtd64, &mut w)?;

        // chunk_state_bwd_db
        let (db32, next32) = ssd_cpu::chunk_state_bwd_db(
            p32.x.view(), p32.b.view(), dt32.view(), dacs32.view(), ds32.view(), seq, two()).unwrap();
        let (db64, next64) = ssd_reference::chunk_state_bwd_db(
            p64.x.view(), p64.b.view(), dt.view(), dacs.view(), ds.view(), seq).unwrap();
        close("chunk_state_bwd_db dB", &db32, &db64, &mut w)?;
        close("chunk_state_bwd_db ddA_next", &next32, &next64, &mut w)?;

        // chunk_scan_bwd_dc
        let (dc32, v32) = ssd_cpu::chunk_scan_bwd_dc(
            prev32.view(), dacs32.view(), p32.c.view(), dy32.view(), seq, two()).unwrap();
        let (dc64, v64) = ssd_reference::chunk_scan_bwd_dc(
            prev.view(), dacs.view(), p64.c.view(), dy.view(), seq).unwrap();
        close("chunk_scan_bwd_dc dC", &dc32, &dc64, &mut w)?;
        close("chunk_scan_bwd_dc V", &v32, &v64, &mut w)?;

        // chunk_scan_bwd_dcb
        let dcb32 = ssd_cpu::chunk_scan_bwd_dcb(
            p32.x.view(), dt32.view(), dacs32.view(), dy32.view(), ng, two()).unwrap();
        let dcb64 = ssd_reference::chunk_scan_bwd_dcb(
            p64.x.view(), dt.view(), dacs.view(), dy.view(), ng).unwrap();
        close("chunk_scan_bwd_dcb", &dcb32, &dcb64, &mut w)?;

        // bmm_chunk_bwd, on a full (not triangular) dCB to exercise the whole block
        let full = random_array(dcb64.shape(), seed ^ 0xB3).into_dimensionality().unwrap();
        let (full32, full) = r32(&full);
        let (dbb32, dcc32) = ssd_cpu::bmm_chunk_bwd(
            p32.c.view(), p32.b.view(), full32.view(), seq, two()).unwrap();
        let (dbb64, dcc64) = ssd_reference::bmm_chunk_bwd(
            p64.c.view(), p64.b.view(), full.view(), seq).unwrap();
        close("bmm_chunk_bwd dB", &dbb32, &dbb64, &mut w)?;
        close("bmm_chunk_bwd dC", &dcc32, &dcc64, &mut w)?;

        // chunk_scan_bwd_ddacs_stable
        let intra32 = ssd_cpu::chunk_scan_bwd_ddacs_stable(
            p32.x.view(), dt32.view(), dacs32.view(), dy32.view(), cb32.view(), two()).unwrap();
        let intra64 = ssd_reference::chunk_scan_bwd_ddacs_stable(
            p64.x.view(), dt.view(), dacs.view(), dy.view(), cb.view()).unwrap();
        close("chunk_scan_bwd_ddacs_stable", &intra32, &intra64, &mut w)?;

        // chunk_cumsum_bwd, from the reference's ddA and ddt_direct
        let (dda32, dda) = r32(&(&(&intra64 + &next64) + &revcum_with_chunk(&v64, &ddac64, l)));
        let (ddtd32, ddtd) = r32(&ddtd64);
        let bias32 = p32.dt_bias.as_ref().map(|v| v.view());
        let bias64 = p64.dt_bias.as_ref().map(|v| v.view());
        let (ddt32, da32, dbias32) = ssd_cpu::chunk_cumsum_bwd(
            dda32.view(), ddtd32.view(), p32.dt.view(), p32.a.view(), bias32, o, two()).unwrap();
        let (ddt64, da64, dbias64) = ssd_reference::chunk_cumsum_bwd(
            dda.view(), ddtd.view(), p64.dt.view(), p64.a.view(), bias64, o).unwrap();
        close("chunk_cumsum_bwd ddt", &ddt32, &ddt64, &mut w)?;
        let mut ma = ArrayD::<f64>::zeros(IxDyn(&[dims.nheads]));
        let mut mb = ArrayD::<f64>::zeros(IxDyn(&[dims.nheads]));
        for ((b, h, c, i), v) in dda.indexed_iter() {
            ma[[h]] += (v * dt[[b, h, c, i]]).abs();
        }
        for ((_, _, h), v) in ddt64.indexed_iter() {
            mb[[h]] += v.abs();
        }
        close_scalars("chunk_cumsum_bwd dA", &da32.into_dyn(), &da64.into_dyn(), &ma, &mut w)?;
        prop_assert_eq!(dbias32.is_some(), dbias64.is_some());
        if let (Some(a), Some(b)) = (dbias32, dbias64) {
            close_scalars("chunk_cumsum_bwd ddt_bias", &a.into_dyn(), &b.into_dyn(), &mb, &mut w)?;
        }
        record(0, "kernel", w);
    }

    /// The combined backward against the float64 reference at the drawn chunk size, Q = 1,
    /// Q > l and a Q that does not divide l; the four A-adjoint contributions each and summed
    /// against the reference `ddA`.
    #[test]
    fn combined_matches_reference(sp in spec(), seed in any::<u64>()) {
        let p = sp.build();
        let (p64, p32) = rounded(&p);
        let (dout64, dfinal64) = seeds(&p, seed);
        let (dout32, dfinal32) = (dout64.mapv(|v| v as f32), o32(&dfinal64));
        let l = p.dims().seqlen;
        let mut qs = vec![p.options.chunk_size, 1, l + 5];
        if l > 2 {
            qs.push((l / 2).max(2) + usize::from(l % 2 == 0));
        }
        let mut worst = (0.0, 0.0);
        for q in qs {
            let opts = Options { chunk_size: q, ..p.options };
            let got = ssd_cpu::mamba_chunk_scan_combined_bwd(
                &p32.inputs(), &opts, dout32.view(), dfinal32.as_ref().map(|v| v.view()), two()).unwrap();
            let want = ssd_reference::mamba_chunk_scan_combined_bwd(
                &p64.inputs(), &opts, dout64.view(), dfinal64.as_ref().map(|v| v.view())).unwrap();
            let f = ChunkedForward::run(&p64.inputs(), &opts).unwrap();
            grads_close(&format!("Q={q}"), &p64, &opts, &dout64, &got, &want, &f.dt_bhcq, &mut worst)?;
        }
        record(1, "combined rel_l2", worst.0);
        record(2, "combined per-head scalar / magnitude", worst.1);
    }

    /// Bit-identical results run after run, for 1 and 2 threads, and with a reused workspace.
    #[test]
    fn bit_identical_across_runs_and_threads(sp in spec(), seed in any::<u64>()) {
        let p = sp.build();
        let p32 = p.to_f32();
        let (dout64, dfinal64) = seeds(&p, seed);
        let (dout, dfinal) = (dout64.mapv(|v| v as f32), o32(&dfinal64));
        let run = |par| ssd_cpu::mamba_chunk_scan_combined_bwd(
            &p32.inputs(), &p32.options, dout.view(), dfinal.as_ref().map(|v| v.view()), par).unwrap();
        let a = run(two());
        let b = run(two());
        let c = run(Par::Seq);
        prop_assert!(same_grads(&a, &b), "two runs on 2 threads differ");
        prop_assert!(same_grads(&a, &c), "1 and 2 threads differ");
        // A reused workspace, first filled by another chunk size, gives the same bits.
        let mut ws = ssd_cpu::BackwardWorkspace::new();
        let other = Options { chunk_size: 1 + p32.options.chunk_size / 3, ..p32.options };
        let with = |opts: &Options, ws: &mut ssd_cpu::BackwardWorkspace| {
            ssd_cpu::mamba_chunk_scan_combined_bwd_with(
                &p32.inputs(), opts, dout.view(), dfinal.as_ref().map(|v| v.view()), ws, two()).unwrap()
        };
        let _ = with(&other, &mut ws);
        let d = with(&p32.options, &mut ws);
        prop_assert!(same_grads(&a, &d), "a reused workspace changes the result");
    }

    /// Every broken problem gives its error, never a panic.
    #[test]
    fn broken_problems_error((p, br) in broken_problem()) {
        let p32 = p.to_f32();
        let d = p32.dims();
        let dout = Array4::<f32>::zeros((d.batch, d.seqlen, d.nheads, d.headdim));
        match ssd_cpu::mamba_chunk_scan_combined_bwd(&p32.inputs(), &p32.options, dout.view(), None, two()) {
            Ok(_) => prop_assert!(false, "{br:?} was accepted"),
            Err(e) => prop_assert!(br.matches(&e), "{br:?} gave {e}"),
        }
    }

    /// Gated RMSNorm backward (both gate orders, groups) and SwiGLU backward against the
    /// float64 reference.
    #[test]
    fn norm_and_swiglu_bwd_match_reference(rows in 1usize..40, groups in 1usize..4, gs in 1usize..70,
                                           gate in any::<bool>(), before in any::<bool>(), seed in any::<u64>()) {
        let mut rng = Rng::new(seed);
        let nd = groups * gs;
        let x = Array2::from_shape_fn((rows, nd), |_| rng.normal() as f32);
        let z = Array2::from_shape_fn((rows, nd), |_| (2.0 * rng.normal()) as f32);
        let w = Array1::from_shape_fn(nd, |_| (1.0 + 0.3 * rng.normal()) as f32);
        let g = Array2::from_shape_fn((rows, nd), |_| rng.normal() as f32);
        let opts = RmsNormOptions { eps: 1e-5, group_size: Some(gs), norm_before_gate: before };
        let (dx, dw, dz) = ssd_cpu::rmsnorm_gated_bwd(
            x.view(), w.view(), gate.then(|| z.view()), g.view(), &opts, two()).unwrap();
        let (x6, z6, w6, g6) = (f64v(&x), f64v(&z), f64v(&w), f64v(&g));
        let (dx6, dw6, dz6) = ssd_reference::rmsnorm_gated_bwd(
            x6.view(), w6.view(), gate.then(|| z6.view()), g6.view(), &opts).unwrap();
        let mut worst = 0.0;
        close("rmsnorm_gated_bwd dx", &dx, &dx6, &mut worst)?;
        close("rmsnorm_gated_bwd dweight", &dw, &dw6, &mut worst)?;
        prop_assert_eq!(dz.is_some(), dz6.is_some());
        if let (Some(a), Some(b)) = (&dz, &dz6) {
            close("rmsnorm_gated_bwd dz", a, b, &mut worst)?;
        }
        let again = ssd_cpu::rmsnorm_gated_bwd(
            x.view(), w.view(), gate.then(|| z.view()), g.view(), &opts, Par::Seq).unwrap();
        prop_assert!(same_bits(&again.0, &dx) && same_bits(&again.1, &dw));
        let (sx, sy) = ssd_cpu::swiglu_bwd(
            x.view().into_dyn(), z.view().into_dyn(), g.view().into_dyn(), two()).unwrap();
        let (sx6, sy6) = ssd_reference::swiglu_bwd(
            x6.view().into_dyn(), z6.view().into_dyn(), g6.view().into_dyn()).unwrap();
        close("swiglu_bwd dx", &sx, &sx6, &mut worst)?;
        close("swiglu_bwd dy", &sy, &sy6, &mut worst)?;
        record(3, "rmsnorm/swiglu", worst);
    }
}

/// `V` plus `ddA_chunk` at the last valid position, reverse-cumsummed within each chunk: the
/// `ddA_prev + ddA_chunk` of the combined backward's assembly.
fn revcum_with_chunk(v: &Array4<f64>, dda_chunk: &ndarray::Array3<f64>, l: usize) -> Array4<f64> {
    let (nb, nh, nc, q) = v.dim();
    let mut out = Array4::<f64>::zeros((nb, nh, nc, q));
    for b in 0..nb {
        for h in 0..nh {
            for c in 0..nc {
                let len = q.min(l - c * q);
                let mut acc = dda_chunk[[b, h, c]];
                for i in (0..len).rev() {
                    acc += v[[b, h, c, i]];
                    out[[b, h, c, i]] = acc;
                }
            }
        }
    }
    out
}

/// An empty sequence, n = p = 1, and p not a multiple of the vector width, every option on.
#[test]
fn empty_and_degenerate_sizes() {
    for (l, n, p) in [(0, 5, 3), (7, 1, 1), (9, 3, 17)] {
        for with_init in [false, true] {
            let mut spec = ssd_verify::ProblemSpec::plain(2, l, 4, p, 2, n, 4).all_options();
            spec.initial_states = with_init;
            let (p64, p32) = rounded(&spec.seed(5).build());
            let (dout64, dfinal64) = seeds(&p64, 3);
            let dout32 = dout64.mapv(|v| v as f32);
            let dfinal32 = o32(&dfinal64);
            let got = ssd_cpu::mamba_chunk_scan_combined_bwd(
                &p32.inputs(),
                &p32.options,
                dout32.view(),
                dfinal32.as_ref().map(|v| v.view()),
                two(),
            )
            .unwrap();
            let want = ssd_reference::mamba_chunk_scan_combined_bwd(
                &p64.inputs(),
                &p64.options,
                dout64.view(),
                dfinal64.as_ref().map(|v| v.view()),
            )
            .unwrap();
            assert_eq!(got.0.dx.shape(), want.0.dx.shape());
            assert!(rel_l2(&got.0.dx, &want.0.dx) <= GRADIENT_F32);
            assert!(rel_l2(&got.0.db, &want.0.db) <= GRADIENT_F32);
            assert!(rel_l2(&got.0.dc, &want.0.dc) <= GRADIENT_F32);
            assert_eq!(got.0.dinitial_states.is_some(), with_init);
        }
    }
}

/// A chunk size far beyond l is the single chunk of length l: the same gradients, bit for bit,
/// as Q = l + 3, and the same A adjoint on the valid positions (memory stays O(l), not O(Q²)).
#[test]
fn huge_chunk_is_one_chunk() {
    let mut spec = ssd_verify::ProblemSpec::plain(2, 37, 4, 5, 2, 6, 40).all_options();
    spec.seq_idx = true;
    let p32 = spec.seed(9).build().to_f32();
    let dout = random_array(&[2, 37, 4, 5], 4)
        .into_dimensionality::<Ix4>()
        .unwrap()
        .mapv(|v| v as f32);
    let run = |q: usize| {
        let opts = Options {
            chunk_size: q,
            ..p32.options
        };
        ssd_cpu::mamba_chunk_scan_combined_bwd(&p32.inputs(), &opts, dout.view(), None, two())
            .unwrap()
    };
    let (a, b) = (run(40), run(100_000));
    assert!(same_bits(&a.0.dx, &b.0.dx) && same_bits(&a.0.ddt, &b.0.ddt));
    assert!(same_bits(&a.0.db, &b.0.db) && same_bits(&a.0.dc, &b.0.dc));
    assert!(same_bits(&a.0.da, &b.0.da));
    for (x, y) in [
        (&a.1.intra, &b.1.intra),
        (&a.1.next, &b.1.next),
        (&a.1.prev, &b.1.prev),
        (&a.1.chunk, &b.1.chunk),
    ] {
        let (xs, ys) = (
            x.slice(ndarray::s![.., .., .., ..37]),
            y.slice(ndarray::s![.., .., .., ..37]),
        );
        assert!(xs
            .iter()
            .zip(ys.iter())
            .all(|(u, v)| u.to_bits() == v.to_bits()));
        assert!(y
            .slice(ndarray::s![.., .., .., 37..])
            .iter()
            .all(|&v| v == 0.0));
    }
}

/// Malformed seeds and malformed kernel arguments are errors.
#[test]
fn bad_seeds_and_kernel_arguments_error() {
    let p32 = ssd_verify::ProblemSpec::plain(2, 20, 4, 6, 2, 5, 8)
        .all_options()
        .seed(7)
        .build()
        .to_f32();
    let (inputs, opts) = (p32.inputs(), p32.options);
    let dout = Array4::<f32>::zeros((2, 20, 4, 6));
    let bad = Array4::<f32>::zeros((2, 20, 4, 7));
    let e = ssd_cpu::mamba_chunk_scan_combined_bwd(&inputs, &opts, bad.view(), None, two())
        .unwrap_err();
    assert!(
        matches!(e, SsdError::ShapeMismatch { tensor: "dout", .. }),
        "{e}"
    );
    let fin = Array4::<f32>::zeros((2, 4, 6, 4));
    let e = ssd_cpu::mamba_chunk_scan_combined_bwd(
        &inputs,
        &opts,
        dout.view(),
        Some(fin.view()),
        two(),
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            SsdError::ShapeMismatch {
                tensor: "dfinal_states",
                ..
            }
        ),
        "{e}"
    );
    let mut nan = dout.clone();
    nan[[1, 3, 2, 1]] = f32::NAN;
    let e = ssd_cpu::mamba_chunk_scan_combined_bwd(&inputs, &opts, nan.view(), None, two())
        .unwrap_err();
    assert!(
        matches!(e, SsdError::NonFinite { tensor: "dout", .. }),
        "{e}"
    );
    let mut inf = Array4::<f32>::zeros((2, 4, 6, 5));
    inf[[0, 0, 0, 0]] = f32::INFINITY;
    let e = ssd_cpu::mamba_chunk_scan_combined_bwd(
        &inputs,
        &opts,
        dout.view(),
        Some(inf.view()),
        two(),
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            SsdError::NonFinite {
                tensor: "dfinal_states",
                ..
            }
        ),
        "{e}"
    );
    let zero_q = Options {
        chunk_size: 0,
        ..opts
    };
    let e = ssd_cpu::mamba_chunk_scan_combined_bwd(&inputs, &zero_q, dout.view(), None, two())
        .unwrap_err();
    assert_eq!(e, SsdError::ZeroChunkSize);

    // kernels called directly with inconsistent shapes
    let bhcq = Array4::<f32>::zeros((2, 4, 3, 8));
    let short = Array4::<f32>::zeros((2, 4, 2, 8));
    let e = ssd_cpu::chunk_scan_bwd_dstates(p32.c.view(), dout.view(), short.view(), None, two())
        .unwrap_err();
    assert!(matches!(e, SsdError::ShapeMismatch { .. }), "{e}");
    let e =
        ssd_cpu::chunk_scan_bwd_dz(bad.view(), p32.x.view(), None, None, None, two()).unwrap_err();
    assert!(
        matches!(e, SsdError::ShapeMismatch { tensor: "dout", .. }),
        "{e}"
    );
    let e = ssd_cpu::chunk_scan_bwd_dz(
        dout.view(),
        p32.x.view(),
        None,
        Some(p32.x.view()),
        None,
        two(),
    )
    .unwrap_err();
    assert!(
        matches!(e, SsdError::InvalidArgument { name: "y", .. }),
        "{e}"
    );
    let dcb = ndarray::Array5::<f32>::zeros((2, 3, 2, 8, 7));
    let e =
        ssd_cpu::bmm_chunk_bwd(p32.c.view(), p32.b.view(), dcb.view(), None, two()).unwrap_err();
    assert!(matches!(e, SsdError::ShapeMismatch { .. }), "{e}");
    let e = ssd_cpu::chunk_scan_bwd_dcb(
        p32.x.view(),
        bhcq.view(),
        bhcq.view(),
        dout.view(),
        3,
        two(),
    )
    .unwrap_err();
    assert!(matches!(e, SsdError::GroupsDoNotDivideHeads { .. }), "{e}");
    let bad_q = Array4::<f32>::zeros((2, 4, 3, 0));
    let e = ssd_cpu::chunk_scan_bwd_ddacs_stable(
        p32.x.view(),
        bad_q.view(),
        bad_q.view(),
        dout.view(),
        ndarray::Array5::<f32>::zeros((2, 3, 2, 8, 8)).view(),
        two(),
    )
    .unwrap_err();
    assert_eq!(e, SsdError::ZeroChunkSize);
    let states = ndarray::Array5::<f32>::zeros((2, 3, 4, 6, 5));
    let e = ssd_cpu::state_passing_bwd(
        states.view(),
        bhcq.view(),
        states.view(),
        None,
        None,
        30,
        two(),
    )
    .unwrap_err();
    assert!(matches!(e, SsdError::ShapeMismatch { .. }), "{e}");
    let bad_limit = Options {
        dt_limit: (0.5, 0.1),
        ..opts
    };
    let e = ssd_cpu::chunk_cumsum_bwd(
        bhcq.view(),
        bhcq.view(),
        p32.dt.view(),
        p32.a.view(),
        None,
        &bad_limit,
        two(),
    )
    .unwrap_err();
    assert!(matches!(e, SsdError::InvalidDtLimit { .. }), "{e}");
    // rmsnorm / swiglu
    let xs = Array2::<f32>::ones((2, 6));
    let w = Array1::<f32>::ones(6);
    let g5 = Array2::<f32>::ones((2, 5));
    assert!(ssd_cpu::rmsnorm_gated_bwd(
        xs.view(),
        w.view(),
        None,
        g5.view(),
        &RmsNormOptions::default(),
        two()
    )
    .is_err());
    let bad_group = RmsNormOptions {
        group_size: Some(4),
        ..RmsNormOptions::default()
    };
    assert!(
        ssd_cpu::rmsnorm_gated_bwd(xs.view(), w.view(), None, xs.view(), &bad_group, two())
            .is_err()
    );
    let y = ArrayD::<f32>::zeros(IxDyn(&[2, 5]));
    assert!(
        ssd_cpu::swiglu_bwd(xs.view().into_dyn(), y.view(), xs.view().into_dyn(), two()).is_err()
    );
}
