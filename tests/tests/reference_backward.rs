//! The float64 backward: the literal gradient (BPTT through the recurrence) against finite
//! differences, the chunked backward against it, every backward kernel against its forward
//! kernel through the adjoint identity `⟨J v, w⟩ = ⟨v, Jᵀ w⟩`, the four A-adjoint producers,
//! the closed form of the chunk-scan A adjoint, and the rmsnorm_gated / swiglu backward.
//!
//! Each property test prints the worst error it saw per check (`--nocapture` shows them).

use ndarray::{s, Array, Array1, Array2, Array4, Array5, ArrayD, ArrayView4, Dimension, Ix4, Ix5};
use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use ssd_reference::{
    bmm_chunk, bmm_chunk_bwd, chunk_cumsum, chunk_cumsum_bwd, chunk_scan, chunk_scan_bwd_dc,
    chunk_scan_bwd_dcb, chunk_scan_bwd_ddacs_stable, chunk_scan_bwd_dstates, chunk_scan_bwd_dz,
    chunk_scan_chunk_state_bwd_dx, chunk_state, chunk_state_bwd_db, mamba_chunk_scan_combined_bwd,
    rmsnorm_gated, rmsnorm_gated_bwd, ssd_chunked, ssd_recurrent, ssd_recurrent_bwd,
    ssd_recurrent_bwd_with_dda, state_passing, state_passing_bwd, swiglu, swiglu_bwd,
    ChunkedForward, ErrorKind, Gradients, Options, Problem, RmsNormOptions,
};
use ssd_tests::cases;
use ssd_verify::fd::{
    central_difference, directional_derivative, relative_error, relative_error_beyond,
    rounding_floor, ssd_loss, ssd_loss_magnitude, Direction, Input, STEP,
};
use ssd_verify::gen::random_array;
use ssd_verify::strategies::{problem, spec_within, Limits};
use ssd_verify::tolerance::{rel_l2, ADJOINT_F64, FD_DIRECTIONAL, GRADS_F64};
use ssd_verify::{DKind, ProblemSpec};
use std::cell::RefCell;
use std::collections::BTreeMap;

// ---------------------------------------------------------------------------------------------
// Helpers

/// The worst error seen per named check over all cases of one test.
#[derive(Debug, Default)]
struct Worst(BTreeMap<String, f64>);

impl Worst {
    /// Records `err` under `key` and fails the case if it exceeds `threshold`.
    fn check(&mut self, key: &str, err: f64, threshold: f64) -> Result<(), TestCaseError> {
        let w = self.0.entry(key.to_string()).or_insert(0.0);
        if err > *w || err.is_nan() {
            *w = err;
        }
        prop_assert!(err <= threshold, "{key}: error {err:e} > {threshold:e}");
        Ok(())
    }
}

/// Runs `body` over `cases(default)` values of `strategy`, then prints the worst errors.
fn run<S: Strategy>(
    name: &str,
    default: u32,
    strategy: S,
    body: impl Fn(S::Value, &mut Worst) -> Result<(), TestCaseError>,
) {
    let worst = RefCell::new(Worst::default());
    let mut runner = TestRunner::new(cases(default));
    let result = runner.run(&strategy, |v| body(v, &mut worst.borrow_mut()));
    for (k, v) in &worst.borrow().0 {
        println!("{name}: worst {k}: {v:.3e}");
    }
    if let Err(e) = result {
        panic!("{name}: {e}");
    }
}

fn dot<D: Dimension>(a: &Array<f64, D>, b: &Array<f64, D>) -> f64 {
    a.iter().zip(b.iter()).map(|(x, y)| x * y).sum()
}

/// `Σ |a ⊙ b|`: the magnitude of the terms of `⟨a, b⟩`.
fn mag<D: Dimension>(a: &Array<f64, D>, b: &Array<f64, D>) -> f64 {
    a.iter().zip(b.iter()).map(|(x, y)| (x * y).abs()).sum()
}

fn randn<D: Dimension>(shape: &[usize], seed: u64) -> Array<f64, D> {
    random_array(shape, seed)
        .into_dimensionality::<D>()
        .unwrap()
}

/// `(⟨F, w⟩, Σ|F ⊙ w|)` summed over several outputs of a forward kernel.
fn pairing(parts: &[(ArrayD<f64>, &ArrayD<f64>)]) -> (f64, f64) {
    parts
        .iter()
        .fold((0.0, 0.0), |(s, m), (f, w)| (s + dot(f, w), m + mag(f, w)))
}

/// Adjoint identity where the forward is linear in the perturbed input: `s(t) = ⟨F(x + t v), w⟩`
/// (with its term magnitude), `⟨J v, w⟩ = (s(1) − s(−1)) / 2` exactly up to rounding, against
/// `rhs = ⟨v, Jᵀ w⟩` with term magnitude `rhs_mag`. Judged relative to all term magnitudes.
fn exact_identity(s: impl Fn(f64) -> (f64, f64), rhs: f64, rhs_mag: f64) -> f64 {
    let (sp, mp) = s(1.0);
    let (sm, mm) = s(-1.0);
    let lhs = (sp - sm) / 2.0;
    let scale = rhs_mag + (mp + mm) / 2.0;
    if lhs == rhs {
        0.0
    } else {
        (lhs - rhs).abs() / scale
    }
}

/// Adjoint identity through a central finite difference of `s(t) = ⟨F(x + t v), w⟩`, judged
/// relative to the magnitude of the terms of `⟨v, Jᵀ w⟩` (a sum of many signed terms;
/// docs/design.md §4.4 allows this for reduced scalars).
fn fd_identity(s: impl Fn(f64) -> f64, rhs: f64, rhs_mag: f64) -> f64 {
    let lhs = central_difference(s, STEP);
    if lhs == rhs {
        0.0
    } else {
        (lhs - rhs).abs() / rhs_mag
    }
}

/// `dout` (b, l, h, p) and, for odd seeds, `dfinal_states` (b, h, p, n), drawn from `seed`.
fn seeds(p: &Problem<f64>, seed: u64) -> (Array4<f64>, Option<Array4<f64>>) {
    let d = p.dims();
    let dout = randn::<Ix4>(&[d.batch, d.seqlen, d.nheads, d.headdim], seed);
    let dfinal = (seed % 2 == 1)
        .then(|| randn::<Ix4>(&[d.batch, d.nheads, d.headdim, d.dstate], seed ^ 0xF1));
    (dout, dfinal)
}

/// Every gradient tensor by name (present ones only).
fn named(g: &Gradients<f64>) -> Vec<(&'static str, ArrayD<f64>)> {
    let mut v = vec![
        ("dx", g.dx.clone().into_dyn()),
        ("ddt", g.ddt.clone().into_dyn()),
        ("dA", g.da.clone().into_dyn()),
        ("dB", g.db.clone().into_dyn()),
        ("dC", g.dc.clone().into_dyn()),
    ];
    v.extend(g.dd.clone().map(|a| ("dD", a)));
    v.extend(g.dz.clone().map(|a| ("dz", a.into_dyn())));
    v.extend(g.ddt_bias.clone().map(|a| ("ddt_bias", a.into_dyn())));
    v.extend(
        g.dinitial_states
            .clone()
            .map(|a| ("dinitial_states", a.into_dyn())),
    );
    v
}

fn view(a: &Option<Array4<f64>>) -> Option<ArrayView4<'_, f64>> {
    a.as_ref().map(|v| v.view())
}

/// Zeroes the entries of a (b, h, c, Q) tensor at the padded positions past `l`.
fn zero_padding(a: &mut Array4<f64>, l: usize) {
    let (_, _, nc, q) = a.dim();
    for c in 0..nc {
        for i in 0..q {
            if c * q + i >= l {
                a.slice_mut(s![.., .., c, i]).fill(0.0);
            }
        }
    }
}

/// Within-chunk cumsum of a (b, h, c, Q) tensor.
fn cumsum_chunks(v: &Array4<f64>) -> Array4<f64> {
    let mut out = v.clone();
    let q = v.dim().3;
    for i in 1..q {
        let prev = out.slice(s![.., .., .., i - 1]).to_owned();
        let mut cur = out.slice_mut(s![.., .., .., i]);
        cur += &prev;
    }
    out
}

/// Within-chunk reverse cumsum of a (b, h, c, Q) tensor.
fn revcumsum_chunks(v: &Array4<f64>) -> Array4<f64> {
    let mut out = v.clone();
    let q = v.dim().3;
    for i in (0..q.saturating_sub(1)).rev() {
        let next = out.slice(s![.., .., .., i + 1]).to_owned();
        let mut cur = out.slice_mut(s![.., .., .., i]);
        cur += &next;
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The literal gradient against finite differences

#[test]
fn recurrent_gradients_match_finite_differences() {
    let limits = Limits {
        batch: 2,
        seqlen: 96,
        nheads: 4,
        headdim: 12,
        dstate: 12,
    };
    run(
        "recurrent vs fd",
        64,
        (spec_within(limits), any::<u64>()),
        |(spec, seed), worst| {
            let p = spec.build();
            let (dout, dfinal) = seeds(&p, seed);
            let g = ssd_recurrent_bwd(&p.inputs(), &p.options, dout.view(), view(&dfinal)).unwrap();
            let loss = |q: &Problem<f64>| {
                ssd_loss(
                    &ssd_recurrent(&q.inputs(), &q.options).unwrap(),
                    &dout,
                    dfinal.as_ref(),
                )
            };
            // Judged as `|fd − ⟨v, g⟩| ≤ FD_DIRECTIONAL·|⟨v, g⟩| + floor`, the floor being the
            // difference's own rounding `FD_ROUNDING·ε·Σ|out·dout|/h`: a derivative can be 10⁻⁸
            // of the loss's terms (every path through A suppressed by a per-step decay of e⁻¹⁵, or
            // a cancelling dA_h = Σ ddA·Δ), and no float64 difference resolves it to 1e-6.
            let o = ssd_recurrent(&p.inputs(), &p.options).unwrap();
            let floor = rounding_floor(ssd_loss_magnitude(&o, &dout, dfinal.as_ref()), STEP);
            let mut check = |key: &str, mut dir: Direction| -> Result<(), TestCaseError> {
                dir.keep_off_kinks(&p, STEP);
                let fd = directional_derivative(&p, &dir, STEP, loss);
                let an = dir.dot(&g);
                // reported, not asserted: the plain relative error
                worst.check(
                    &format!("{key} (plain relative)"),
                    relative_error(fd, an),
                    f64::INFINITY,
                )?;
                worst.check(key, relative_error_beyond(fd, an, floor), FD_DIRECTIONAL)
            };
            // a random direction in every input at once, then in each input alone
            check("all inputs", Direction::random(&p, seed ^ 1))?;
            let present = [
                (Input::X, true),
                (Input::Dt, true),
                (Input::A, true),
                (Input::B, true),
                (Input::C, true),
                (Input::D, p.d.is_some()),
                (Input::Z, p.z.is_some()),
                (Input::DtBias, p.dt_bias.is_some()),
                (Input::InitialStates, p.initial_states.is_some()),
            ];
            for (k, (input, on)) in present.into_iter().enumerate() {
                if on {
                    let dir = Direction::random(&p, seed ^ (k as u64 + 2)).only(&[input]);
                    check(input.name(), dir)?;
                }
            }
            // coordinate probes of every A_h and dt_bias_h
            for h in 0..p.dims().nheads {
                check(
                    "A_h probe",
                    Direction::coordinate(&p, Input::A, &[h]).unwrap(),
                )?;
                if p.dt_bias.is_some() {
                    let dir = Direction::coordinate(&p, Input::DtBias, &[h]).unwrap();
                    check("dt_bias_h probe", dir)?;
                }
            }
            Ok(())
        },
    );
}

// ---------------------------------------------------------------------------------------------
// The chunked backward against the literal gradient

#[test]
fn chunked_equals_recurrent() {
    run(
        "chunked vs recurrent",
        64,
        (problem(), any::<u64>()),
        |(p, seed), worst| {
            let (dout, dfinal) = seeds(&p, seed);
            let l = p.dims().seqlen;
            let want =
                ssd_recurrent_bwd(&p.inputs(), &p.options, dout.view(), view(&dfinal)).unwrap();
            // the drawn Q, Q = 1, Q > l, and a Q that does not divide l (l ≥ 3)
            let mut qs = vec![
                ("drawn Q", p.options.chunk_size),
                ("Q=1", 1),
                ("Q>l", l + 5),
            ];
            if l > 2 {
                qs.push(("Q∤l", (l / 2).max(2) + usize::from(l % 2 == 0)));
            }
            for (label, q) in qs {
                let opts = Options {
                    chunk_size: q,
                    ..p.options
                };
                let (got, _) =
                    mamba_chunk_scan_combined_bwd(&p.inputs(), &opts, dout.view(), view(&dfinal))
                        .unwrap();
                let sq = if p.seq_idx.is_some() {
                    "seq_idx"
                } else {
                    "no seq_idx"
                };
                for ((k, a), (_, b)) in named(&got).into_iter().zip(named(&want)) {
                    worst.check(&format!("{label}, {sq}: {k}"), rel_l2(&a, &b), GRADS_F64)?;
                }
            }
            Ok(())
        },
    );
}

// ---------------------------------------------------------------------------------------------
// Every backward kernel against its forward kernel

#[test]
fn kernels_satisfy_the_adjoint_identity() {
    let limits = Limits {
        seqlen: 48,
        ..Limits::small()
    };
    run(
        "kernel adjoints",
        64,
        (spec_within(limits), any::<u64>()),
        |(spec, seed), worst| kernel_adjoints(&spec.build(), seed, worst),
    );
}

fn kernel_adjoints(p: &Problem<f64>, seed: u64, worst: &mut Worst) -> Result<(), TestCaseError> {
    let dims = p.dims();
    let (nb, l, nh, np, ng, nn) = (
        dims.batch,
        dims.seqlen,
        dims.nheads,
        dims.headdim,
        dims.ngroups,
        dims.dstate,
    );
    let q = p.options.chunk_size;
    let nc = l.div_ceil(q);
    let sq = p.seq_idx.as_ref().map(|v| v.view());
    let f = ChunkedForward::run(&p.inputs(), &p.options).unwrap();
    let (dt, dacs) = (f.dt_bhcq.view(), f.dacs_bhcq.view());
    let mut k = seed;
    let mut next = || {
        k = k.wrapping_add(0x9E37);
        k
    };
    // D for the kernels that take one: the problem's, else a random (h, p)
    let d_k: ArrayD<f64> =
        p.d.clone()
            .unwrap_or_else(|| random_array(&[nh, np], next()));
    let w_y = randn::<Ix4>(&[nb, l, nh, np], next());
    let w_s = randn::<Ix5>(&[nb, nc, nh, np, nn], next());
    let w_y_d = w_y.clone().into_dyn();
    let w_s_d = w_s.clone().into_dyn();
    // a per-step direction in Δ_k A, 0 at padding, and the cumsum it induces
    let mut v_step = randn::<Ix4>(&[nb, nh, nc, q], next());
    zero_padding(&mut v_step, l);
    let v_cum = cumsum_chunks(&v_step);

    // chunk_scan_bwd_dz: dD exactly through chunk_scan's D; dy through the gate (the change
    // of y from a change of D, gated or not); dz by finite differences through chunk_scan's z.
    {
        let scan = |d: &ArrayD<f64>, z: Option<ArrayView4<'_, f64>>| {
            chunk_scan(
                f.cb_bcgqq.view(),
                p.x.view(),
                dt,
                dacs,
                p.c.view(),
                f.prev_states_bchpn.view(),
                Some(d.view()),
                z,
                sq,
            )
            .unwrap()
        };
        let (_, y) = scan(&d_k, p.z.as_ref().map(|z| z.view()));
        let (dy, dz, dd) = chunk_scan_bwd_dz(
            w_y.view(),
            p.x.view(),
            view(&y),
            view(&p.z),
            Some(d_k.view()),
        )
        .unwrap();
        let dd = dd.unwrap();
        let v_d = random_array(d_k.shape(), next());
        let e = exact_identity(
            |t| pairing(&[(scan(&(&d_k + &(t * &v_d)), view(&p.z)).0.into_dyn(), &w_y_d)]),
            dot(&v_d, &dd),
            mag(&v_d, &dd),
        );
        worst.check("chunk_scan_bwd_dz dD", e, ADJOINT_F64)?;
        // ⟨δout, w⟩ = ⟨δy, dy⟩ with δy the ungated change of the output
        let dy_d = dy.into_dyn();
        let delta_y = |t: f64| scan(&(&d_k + &(t * &v_d)), None).0.into_dyn();
        let e = exact_identity(
            |t| pairing(&[(scan(&(&d_k + &(t * &v_d)), view(&p.z)).0.into_dyn(), &w_y_d)]),
            (dot(&delta_y(1.0), &dy_d) - dot(&delta_y(-1.0), &dy_d)) / 2.0,
            (mag(&delta_y(1.0), &dy_d) + mag(&delta_y(-1.0), &dy_d)) / 2.0,
        );
        worst.check("chunk_scan_bwd_dz dy", e, ADJOINT_F64)?;
        if let (Some(z), Some(dz)) = (&p.z, &dz) {
            let v_z = randn::<Ix4>(&[nb, l, nh, np], next());
            let e = fd_identity(
                |t| dot(&scan(&d_k, Some((z + &(t * &v_z)).view())).0, &w_y),
                dot(&v_z, dz),
                mag(&v_z, dz),
            );
            worst.check("chunk_scan_bwd_dz dz (fd)", e, FD_DIRECTIONAL)?;
        }
    }

    // chunk_scan_bwd_dstates: chunk_scan is linear in the entering states.
    {
        let dprev = chunk_scan_bwd_dstates(p.c.view(), w_y.view(), dacs, sq).unwrap();
        let v = randn::<Ix5>(&[nb, nc, nh, np, nn], next());
        let scan = |t: f64| {
            let states = &f.prev_states_bchpn + &(t * &v);
            chunk_scan(
                f.cb_bcgqq.view(),
                p.x.view(),
                dt,
                dacs,
                p.c.view(),
                states.view(),
                None,
                None,
                sq,
            )
            .unwrap()
            .0
            .into_dyn()
        };
        let e = exact_identity(
            |t| pairing(&[(scan(t), &w_y_d)]),
            dot(&v, &dprev),
            mag(&v, &dprev),
        );
        worst.check("chunk_scan_bwd_dstates", e, ADJOINT_F64)?;
    }

    // state_passing_bwd: linear in the chunk states and the initial state; ddA_chunk by finite
    // differences of a_last = dacs[.., Q−1]. The cumsums here are drawn in [−3, 0] rather than
    // taken from the problem: a drawn chunk can decay by exp(−300), and then ddA_chunk (≈ 1e-130)
    // lies far below what any finite difference of an O(1) pairing can resolve.
    {
        let dacs_sp = randn::<Ix4>(&[nb, nh, nc, q], next()).mapv(|v| -v.abs().min(3.0));
        let dacs = dacs_sp.view();
        let init: Array4<f64> = p
            .initial_states
            .clone()
            .unwrap_or_else(|| randn::<Ix4>(&[nb, nh, np, nn], next()));
        let w_fin = randn::<Ix4>(&[nb, nh, np, nn], next());
        let w_fin_d = w_fin.clone().into_dyn();
        let pass = |states: &Array5<f64>, dacs: &Array4<f64>, init: &Array4<f64>| {
            let (prev, fin) =
                state_passing(states.view(), dacs.view(), Some(init.view()), sq, l).unwrap();
            pairing(&[(prev.into_dyn(), &w_s_d), (fin.into_dyn(), &w_fin_d)])
        };
        let (prev, _) =
            state_passing(f.states_bchpn.view(), dacs, Some(init.view()), sq, l).unwrap();
        let (dstates, dinit, dda_chunk) =
            state_passing_bwd(prev.view(), dacs, w_s.view(), Some(w_fin.view()), sq, l).unwrap();
        let v = randn::<Ix5>(&[nb, nc, nh, np, nn], next());
        let e = exact_identity(
            |t| pass(&(&f.states_bchpn + &(t * &v)), &dacs_sp, &init),
            dot(&v, &dstates),
            mag(&v, &dstates),
        );
        worst.check("state_passing_bwd dstates", e, ADJOINT_F64)?;
        let v = randn::<Ix4>(&[nb, nh, np, nn], next());
        let e = exact_identity(
            |t| pass(&f.states_bchpn, &dacs_sp, &(&init + &(t * &v))),
            dot(&v, &dinit),
            mag(&v, &dinit),
        );
        worst.check("state_passing_bwd dinitial_states", e, ADJOINT_F64)?;
        let v = randn::<Ix4>(&[nb, nh, nc, q], next());
        let v_last = v.slice(s![.., .., .., q - 1]).to_owned();
        let e = fd_identity(
            |t| pass(&f.states_bchpn, &(&dacs_sp + &(t * &v)), &init).0,
            dot(&v_last, &dda_chunk),
            mag(&v_last, &dda_chunk),
        );
        worst.check("state_passing_bwd ddA_chunk (fd)", e, FD_DIRECTIONAL)?;
    }

    // chunk_scan_chunk_state_bwd_dx: (chunk_scan, chunk_state) are linear in x and in Δ (the
    // explicit factors, at fixed cumsums).
    {
        let (dx, ddt) = chunk_scan_chunk_state_bwd_dx(
            p.x.view(),
            dt,
            dacs,
            p.b.view(),
            f.cb_bcgqq.view(),
            w_y.view(),
            w_s.view(),
            Some(d_k.view()),
            sq,
        )
        .unwrap();
        let both = |x: &Array4<f64>, dt: &Array4<f64>| {
            let (out, _) = chunk_scan(
                f.cb_bcgqq.view(),
                x.view(),
                dt.view(),
                dacs,
                p.c.view(),
                f.prev_states_bchpn.view(),
                Some(d_k.view()),
                None,
                sq,
            )
            .unwrap();
            let st = chunk_state(p.b.view(), x.view(), dt.view(), dacs, sq).unwrap();
            pairing(&[(out.into_dyn(), &w_y_d), (st.into_dyn(), &w_s_d)])
        };
        let v = randn::<Ix4>(&[nb, l, nh, np], next());
        let e = exact_identity(
            |t| both(&(&p.x + &(t * &v)), &f.dt_bhcq),
            dot(&v, &dx),
            mag(&v, &dx),
        );
        worst.check("chunk_scan_chunk_state_bwd_dx dx", e, ADJOINT_F64)?;
        let mut v = randn::<Ix4>(&[nb, nh, nc, q], next());
        zero_padding(&mut v, l);
        let e = exact_identity(
            |t| both(&p.x, &(&f.dt_bhcq + &(t * &v))),
            dot(&v, &ddt),
            mag(&v, &ddt),
        );
        worst.check("chunk_scan_chunk_state_bwd_dx ddt_direct", e, ADJOINT_F64)?;
    }

    // chunk_state_bwd_db: chunk_state is linear in B; ddA_next by finite differences along a
    // per-step change of Δ_k A.
    {
        let (db, dda_next) =
            chunk_state_bwd_db(p.x.view(), p.b.view(), dt, dacs, w_s.view(), sq).unwrap();
        let state = |b: &Array4<f64>, dacs: &Array4<f64>| {
            let st = chunk_state(b.view(), p.x.view(), dt, dacs.view(), sq).unwrap();
            pairing(&[(st.into_dyn(), &w_s_d)])
        };
        let v = randn::<Ix4>(&[nb, l, ng, nn], next());
        let e = exact_identity(
            |t| state(&(&p.b + &(t * &v)), &f.dacs_bhcq),
            dot(&v, &db),
            mag(&v, &db),
        );
        worst.check("chunk_state_bwd_db dB", e, ADJOINT_F64)?;
        let e = fd_identity(
            |t| state(&p.b, &(&f.dacs_bhcq + &(t * &v_cum))).0,
            dot(&v_step, &dda_next),
            mag(&v_step, &dda_next),
        );
        worst.check("chunk_state_bwd_db ddA_next (fd)", e, FD_DIRECTIONAL)?;
    }

    // chunk_scan_bwd_dc: chunk_scan is linear in C (C enters only the state term; CB is its own
    // input); V by finite differences of the cumsums with CB = 0 (only the state term moves).
    {
        let (dc, v_prev) =
            chunk_scan_bwd_dc(f.prev_states_bchpn.view(), dacs, p.c.view(), w_y.view(), sq)
                .unwrap();
        let scan = |cb: &Array5<f64>, c: &Array4<f64>, dacs: &Array4<f64>| {
            let (out, _) = chunk_scan(
                cb.view(),
                p.x.view(),
                dt,
                dacs.view(),
                c.view(),
                f.prev_states_bchpn.view(),
                None,
                None,
                sq,
            )
            .unwrap();
            pairing(&[(out.into_dyn(), &w_y_d)])
        };
        let v = randn::<Ix4>(&[nb, l, ng, nn], next());
        let e = exact_identity(
            |t| scan(&f.cb_bcgqq, &(&p.c + &(t * &v)), &f.dacs_bhcq),
            dot(&v, &dc),
            mag(&v, &dc),
        );
        worst.check("chunk_scan_bwd_dc dC", e, ADJOINT_F64)?;
        let cb0 = Array5::<f64>::zeros(f.cb_bcgqq.raw_dim());
        let mut v = randn::<Ix4>(&[nb, nh, nc, q], next());
        zero_padding(&mut v, l);
        let e = fd_identity(
            |t| scan(&cb0, &p.c, &(&f.dacs_bhcq + &(t * &v))).0,
            dot(&v, &v_prev),
            mag(&v, &v_prev),
        );
        worst.check("chunk_scan_bwd_dc ddacs_prev (fd)", e, FD_DIRECTIONAL)?;
    }

    // chunk_scan_bwd_dcb: chunk_scan is linear in CB; bmm_chunk_bwd: bmm_chunk is linear in
    // B and in C.
    {
        let dcb = chunk_scan_bwd_dcb(p.x.view(), dt, dacs, w_y.view(), ng).unwrap();
        let v = randn::<Ix5>(&[nb, nc, ng, q, q], next());
        let scan = |t: f64| {
            let cb = &f.cb_bcgqq + &(t * &v);
            let (out, _) = chunk_scan(
                cb.view(),
                p.x.view(),
                dt,
                dacs,
                p.c.view(),
                f.prev_states_bchpn.view(),
                None,
                None,
                sq,
            )
            .unwrap();
            pairing(&[(out.into_dyn(), &w_y_d)])
        };
        let e = exact_identity(scan, dot(&v, &dcb), mag(&v, &dcb));
        worst.check("chunk_scan_bwd_dcb", e, ADJOINT_F64)?;

        let w_cb = randn::<Ix5>(&[nb, nc, ng, q, q], next()).into_dyn();
        let (db, dc) = bmm_chunk_bwd(
            p.c.view(),
            p.b.view(),
            w_cb.view().into_dimensionality::<Ix5>().unwrap(),
            sq,
        )
        .unwrap();
        let bmm = |c: &Array4<f64>, b: &Array4<f64>| {
            pairing(&[(
                bmm_chunk(c.view(), b.view(), q, sq).unwrap().into_dyn(),
                &w_cb,
            )])
        };
        let v = randn::<Ix4>(&[nb, l, ng, nn], next());
        let e = exact_identity(
            |t| bmm(&p.c, &(&p.b + &(t * &v))),
            dot(&v, &db),
            mag(&v, &db),
        );
        worst.check("bmm_chunk_bwd dB", e, ADJOINT_F64)?;
        let e = exact_identity(
            |t| bmm(&(&p.c + &(t * &v)), &p.b),
            dot(&v, &dc),
            mag(&v, &dc),
        );
        worst.check("bmm_chunk_bwd dC", e, ADJOINT_F64)?;
    }

    // chunk_scan_bwd_ddacs_stable: finite differences of chunk_scan along a per-step change of
    // Δ_k A with the entering states 0 (so only the CB term moves).
    {
        let dda = chunk_scan_bwd_ddacs_stable(p.x.view(), dt, dacs, w_y.view(), f.cb_bcgqq.view())
            .unwrap();
        let zero_states = Array5::<f64>::zeros(f.prev_states_bchpn.raw_dim());
        let e = fd_identity(
            |t| {
                let dacs_t = &f.dacs_bhcq + &(t * &v_cum);
                let (out, _) = chunk_scan(
                    f.cb_bcgqq.view(),
                    p.x.view(),
                    dt,
                    dacs_t.view(),
                    p.c.view(),
                    zero_states.view(),
                    None,
                    None,
                    sq,
                )
                .unwrap();
                dot(&out, &w_y)
            },
            dot(&v_step, &dda),
            mag(&v_step, &dda),
        );
        worst.check("chunk_scan_bwd_ddacs_stable (fd)", e, FD_DIRECTIONAL)?;
    }

    // chunk_cumsum_bwd: seeds on (Δ, cumsum) turn into (ddt_direct, ddA = reverse cumsum);
    // finite differences of chunk_cumsum along (dt, A, dt_bias), kept off the dt kinks.
    {
        let mut w_dt = randn::<Ix4>(&[nb, nh, nc, q], next());
        let mut w_cs = randn::<Ix4>(&[nb, nh, nc, q], next());
        zero_padding(&mut w_dt, l);
        zero_padding(&mut w_cs, l);
        let dda = revcumsum_chunks(&w_cs);
        let (ddt, da, dbias) = chunk_cumsum_bwd(
            dda.view(),
            w_dt.view(),
            p.dt.view(),
            p.a.view(),
            p.dt_bias.as_ref().map(|v| v.view()),
            &p.options,
        )
        .unwrap();
        let grads = Gradients {
            dx: Array4::zeros(p.x.raw_dim()),
            ddt,
            da,
            db: Array4::zeros(p.b.raw_dim()),
            dc: Array4::zeros(p.c.raw_dim()),
            dd: None,
            dz: None,
            ddt_bias: dbias,
            dinitial_states: None,
        };
        for (key, keep) in [
            (
                "chunk_cumsum_bwd dt, A, dt_bias (fd)",
                &[Input::Dt, Input::A, Input::DtBias][..],
            ),
            ("chunk_cumsum_bwd A (fd)", &[Input::A][..]),
            ("chunk_cumsum_bwd dt_bias (fd)", &[Input::DtBias][..]),
        ] {
            if keep == [Input::DtBias] && p.dt_bias.is_none() {
                continue;
            }
            let mut dir = Direction::random(p, next()).only(keep);
            dir.keep_off_kinks(p, STEP);
            let rhs = dir.dot(&grads);
            let rhs_mag = mag(&dir.dt, &grads.ddt)
                + mag(&dir.a, &grads.da)
                + match (&dir.dt_bias, &grads.ddt_bias) {
                    (Some(a), Some(b)) => mag(a, b),
                    _ => 0.0,
                };
            let lhs = directional_derivative(p, &dir, STEP, |pp| {
                let (d, cs) = chunk_cumsum(
                    pp.dt.view(),
                    pp.a.view(),
                    pp.dt_bias.as_ref().map(|v| v.view()),
                    &pp.options,
                )
                .unwrap();
                dot(&d, &w_dt) + dot(&cs, &w_cs)
            });
            let e = if lhs == rhs {
                0.0
            } else {
                (lhs - rhs).abs() / rhs_mag
            };
            worst.check(key, e, FD_DIRECTIONAL)?;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The four producers of the A adjoint

#[test]
fn a_adjoint_contributions_sum_to_dda() {
    run(
        "A adjoint",
        64,
        (problem(), any::<u64>()),
        |(p, seed), worst| {
            let (dout, dfinal) = seeds(&p, seed);
            let dims = p.dims();
            let (nb, l, nh) = (dims.batch, dims.seqlen, dims.nheads);
            let q = p.options.chunk_size;
            let (rec, dda_rec) =
                ssd_recurrent_bwd_with_dda(&p.inputs(), &p.options, dout.view(), view(&dfinal))
                    .unwrap();
            let (ch, adj) =
                mamba_chunk_scan_combined_bwd(&p.inputs(), &p.options, dout.view(), view(&dfinal))
                    .unwrap();
            let f = ChunkedForward::run(&p.inputs(), &p.options).unwrap();
            // the four summed, per step, against the literal ddA (b, l, h)
            let sum = &(&adj.intra + &adj.next) + &(&adj.prev + &adj.chunk);
            let mut sum_blh = ndarray::Array3::<f64>::zeros((nb, l, nh));
            for b in 0..nb {
                for t in 0..l {
                    for h in 0..nh {
                        sum_blh[[b, t, h]] = sum[[b, h, t / q, t % q]];
                    }
                }
            }
            worst.check(
                "Σ four vs literal ddA",
                rel_l2(&sum_blh, &dda_rec),
                GRADS_F64,
            )?;
            // Σ ddA·Δ = dA_h, against both backwards' dA
            let mut da = Array1::<f64>::zeros(nh);
            for b in 0..nb {
                for h in 0..nh {
                    for c in 0..l.div_ceil(q) {
                        for i in 0..q {
                            da[h] += sum[[b, h, c, i]] * f.dt_bhcq[[b, h, c, i]];
                        }
                    }
                }
            }
            worst.check("Σ four·Δ vs recurrent dA", rel_l2(&da, &rec.da), GRADS_F64)?;
            worst.check("Σ four·Δ vs chunked dA", rel_l2(&da, &ch.da), GRADS_F64)?;
            // every contribution is 0 at padded positions
            for (name, a) in [
                ("intra", &adj.intra),
                ("next", &adj.next),
                ("prev", &adj.prev),
                ("chunk", &adj.chunk),
            ] {
                let mut padded = a.clone();
                for c in 0..l.div_ceil(q) {
                    for i in 0..q {
                        if c * q + i < l {
                            padded.slice_mut(s![.., .., c, i]).fill(0.0);
                        }
                    }
                }
                prop_assert!(
                    padded.iter().all(|&v| v == 0.0),
                    "{name} is not 0 at padding"
                );
            }
            Ok(())
        },
    );
}

// ---------------------------------------------------------------------------------------------
// The closed form of the chunk-scan A adjoint against the stable kernels

/// The upstream closed form of the chunk-scan part of the A adjoint: with `out_x` the chunk
/// scan's output before `D` and the gate, `dy` its gradient and `ddt_intra` the intra-chunk part
/// of the direct Δ gradient, `ddA = revcumsum(Σ_p out_x·dy − ddt_intra·Δ)` per chunk. It should
/// equal `intra + prev` (prev = reverse cumsum of V alone) of the stable kernels.
///
/// Returns `‖closed − stable‖₂ / ‖stable‖₂`, or, where the stable value is exactly 0 (e.g. one
/// token and no initial state: the diagonal terms cancel exactly in the stable kernels but only
/// to rounding in the closed form), `‖closed‖₂` relative to the magnitude of the closed form's
/// own terms `‖revcumsum(|Σ_p out_x·dy| + |ddt_intra·Δ|)‖₂`.
fn closed_form_vs_stable(p: &Problem<f64>, dout: &Array4<f64>) -> f64 {
    let dims = p.dims();
    let (nb, l, nh, np) = (dims.batch, dims.seqlen, dims.nheads, dims.headdim);
    let q = p.options.chunk_size;
    let nc = l.div_ceil(q);
    let sq = p.seq_idx.as_ref().map(|v| v.view());
    let f = ChunkedForward::run(&p.inputs(), &p.options).unwrap();
    let (out_x, _) = chunk_scan(
        f.cb_bcgqq.view(),
        p.x.view(),
        f.dt_bhcq.view(),
        f.dacs_bhcq.view(),
        p.c.view(),
        f.prev_states_bchpn.view(),
        None,
        None,
        sq,
    )
    .unwrap();
    let (dy, _, _) = chunk_scan_bwd_dz(
        dout.view(),
        p.x.view(),
        view(&f.y),
        view(&p.z),
        p.d.as_ref().map(|d| d.view()),
    )
    .unwrap();
    let zero_ds = Array5::<f64>::zeros(f.states_bchpn.raw_dim());
    let (_, ddt_intra) = chunk_scan_chunk_state_bwd_dx(
        p.x.view(),
        f.dt_bhcq.view(),
        f.dacs_bhcq.view(),
        p.b.view(),
        f.cb_bcgqq.view(),
        dy.view(),
        zero_ds.view(),
        None,
        sq,
    )
    .unwrap();
    let mut per_a = Array4::<f64>::zeros((nb, nh, nc, q));
    let mut per_a_mag = Array4::<f64>::zeros((nb, nh, nc, q));
    for b in 0..nb {
        for t in 0..l {
            let (c, i) = (t / q, t % q);
            for h in 0..nh {
                let mut acc = 0.0;
                for pp in 0..np {
                    acc += out_x[[b, t, h, pp]] * dy[[b, t, h, pp]];
                }
                let col = ddt_intra[[b, h, c, i]] * f.dt_bhcq[[b, h, c, i]];
                per_a[[b, h, c, i]] = acc - col;
                per_a_mag[[b, h, c, i]] = acc.abs() + col.abs();
            }
        }
    }
    let closed = revcumsum_chunks(&per_a);
    let (_, adj) =
        mamba_chunk_scan_combined_bwd(&p.inputs(), &p.options, dout.view(), None).unwrap();
    let stable = &adj.intra + &adj.prev;
    if stable.iter().all(|&v| v == 0.0) {
        let norm = |a: &Array4<f64>| a.iter().map(|v| v * v).sum::<f64>().sqrt();
        let terms = norm(&revcumsum_chunks(&per_a_mag));
        if terms == 0.0 {
            0.0
        } else {
            norm(&closed) / terms
        }
    } else {
        rel_l2(&closed, &stable)
    }
}

/// The closed form agrees with the stable kernels on small problems with realistic per-step
/// decay (`Δ|A| ≤ 4`; the drawn problems reach 16 when `dt_bias` lifts Δ without softplus).
#[test]
fn closed_form_agrees_on_small_problems() {
    run(
        "closed form",
        64,
        (spec_within(Limits::small()), any::<u64>()),
        |(spec, seed), worst| {
            let p = spec.build();
            // realistic per-step decay only: past Δ|A| ≈ 4 the closed form's cancellation grows
            // like exp(Δ|A|) (closed_form_breakdown_as_l_and_decay_grow shows where)
            let f = ChunkedForward::run(&p.inputs(), &p.options).unwrap();
            let max_decay = (0..p.dims().nheads)
                .map(|h| {
                    let dmax = f
                        .dt_bhcq
                        .slice(s![.., h, .., ..])
                        .fold(0.0f64, |m, &v| m.max(v));
                    dmax * p.a[h].abs()
                })
                .fold(0.0f64, f64::max);
            prop_assume!(max_decay <= 4.0);
            let (dout, _) = seeds(&p, seed);
            worst.check(
                "closed form vs stable",
                closed_form_vs_stable(&p, &dout),
                GRADS_F64,
            )
        },
    );
}

/// Where the closed form stops agreeing: one chunk of length l (Q = l), constant per-step decay
/// `Δ·|A|`. The closed form subtracts two sums over the whole rest of the chunk whose difference,
/// the pairs straddling k, shrinks like `exp(−Δ|A|)`, so its relative error grows like
/// `ε·√l·exp(Δ|A|)`. The stable kernels have no such cancellation.
#[test]
fn closed_form_breakdown_as_l_and_decay_grow() {
    let mut table = Vec::new();
    for &l in &[16usize, 128, 1024] {
        for &decay in &[0.01f64, 0.5, 4.0, 12.0, 20.0, 28.0] {
            let mut spec = ProblemSpec::plain(1, l, 1, 4, 1, 4, l).seed(7);
            spec.d = DKind::PerHead;
            let mut p = spec.build();
            p.a.fill(-16.0);
            p.dt.fill(decay / 16.0);
            let (dout, _) = seeds(&p, 11);
            let e = closed_form_vs_stable(&p, &dout);
            println!("closed form vs stable: l = {l:5}, Δ|A| = {decay:5}: rel_l2 {e:.2e}");
            table.push((l, decay, e));
        }
    }
    let at = |l: usize, d: f64| table.iter().find(|r| r.0 == l && r.1 == d).unwrap().2;
    // agreement at mild decay, for every l
    for &l in &[16, 128, 1024] {
        assert!(
            at(l, 0.5) <= GRADS_F64,
            "l = {l}, Δ|A| = 0.5: {:e}",
            at(l, 0.5)
        );
    }
    // and no agreement left at strong decay: the closed form is unusable there
    assert!(
        at(1024, 28.0) > 1e-3,
        "expected a breakdown, got {:e}",
        at(1024, 28.0)
    );
}

// ---------------------------------------------------------------------------------------------
// rmsnorm_gated and swiglu

#[test]
fn rmsnorm_gated_bwd_matches_finite_differences() {
    let strategy = (
        1usize..5,
        1usize..5,
        1usize..9,
        any::<bool>(),
        any::<bool>(),
        any::<u64>(),
    );
    run(
        "rmsnorm_gated",
        64,
        strategy,
        |(rows, ngroups, gs, with_z, before, seed), worst| {
            let nd = ngroups * gs;
            let options = RmsNormOptions {
                eps: 1e-5,
                group_size: Some(gs),
                norm_before_gate: before,
            };
            let x = randn::<ndarray::Ix2>(&[rows, nd], seed);
            let w = 1.0 + 0.3 * randn::<ndarray::Ix1>(&[nd], seed ^ 1);
            let z = with_z.then(|| randn::<ndarray::Ix2>(&[rows, nd], seed ^ 2));
            let dout = randn::<ndarray::Ix2>(&[rows, nd], seed ^ 3);
            let (dx, dw, dz) = rmsnorm_gated_bwd(
                x.view(),
                w.view(),
                z.as_ref().map(|v| v.view()),
                dout.view(),
                &options,
            )
            .unwrap();
            let vx = randn::<ndarray::Ix2>(&[rows, nd], seed ^ 4);
            let vw = randn::<ndarray::Ix1>(&[nd], seed ^ 5);
            let vz = randn::<ndarray::Ix2>(&[rows, nd], seed ^ 6);
            let loss = |x: &Array2<f64>, w: &Array1<f64>, z: Option<&Array2<f64>>| {
                dot(
                    &rmsnorm_gated(x.view(), w.view(), z.map(|v| v.view()), &options).unwrap(),
                    &dout,
                )
            };
            // The norm of a group varies on the scale of its RMS √(mean v² + eps), which can be
            // as small as √eps ≈ 3e-3 (a group of small x, or of z near 0): the step follows the
            // smallest such scale, as `fd` scales its directions to the inputs.
            //
            // dx and dz are `r dn − r³ v ⟨dn, v⟩ / group_size` (a projection): with one feature
            // per group and |x| ≫ √eps the two terms cancel to ≈ eps/|x|³ of each, below what a
            // difference of the O(1) loss resolves. They are judged relative to the larger of
            // their value and the magnitude of the first term, `Σ |v|·r|dn|` (a missing or wrong
            // projection term is of that size and still fails by orders of magnitude).
            let mut rms_min = 1.0f64;
            let mut r_of = Array2::<f64>::zeros((rows, nd));
            let gate = |r: usize, j: usize| match &z {
                Some(z) => ssd_reference::silu(z[[r, j]]),
                None => 1.0,
            };
            for r in 0..rows {
                for g0 in (0..nd).step_by(gs) {
                    let ms = (g0..g0 + gs)
                        .map(|j| (x[[r, j]] * if before { 1.0 } else { gate(r, j) }).powi(2))
                        .sum::<f64>()
                        / gs as f64;
                    let rms = (ms + options.eps).sqrt();
                    rms_min = rms_min.min(rms);
                    r_of.slice_mut(s![r, g0..g0 + gs]).fill(1.0 / rms);
                }
            }
            let h = STEP * rms_min;
            // |r dn| per feature: dn = dout ⊙ w (⊙ silu(z) when the gate follows the norm)
            let r_dn = Array2::from_shape_fn((rows, nd), |(r, j)| {
                (r_of[[r, j]] * dout[[r, j]] * w[j] * if before { gate(r, j) } else { 1.0 }).abs()
            });
            let judged = |fd: f64, an: f64, first_term: f64| {
                let d = (fd - an).abs();
                if d == 0.0 {
                    0.0
                } else {
                    d / an.abs().max(first_term)
                }
            };
            let fd_x = central_difference(|t| loss(&(&x + &(t * &vx)), &w, z.as_ref()), h);
            let gate_x =
                Array2::from_shape_fn(
                    (rows, nd),
                    |(r, j)| {
                        if before {
                            1.0
                        } else {
                            gate(r, j).abs()
                        }
                    },
                );
            let first_x = mag(&vx, &(&r_dn * &gate_x));
            worst.check("dx", judged(fd_x, dot(&vx, &dx), first_x), FD_DIRECTIONAL)?;
            let fd_w = central_difference(|t| loss(&x, &(&w + &(t * &vw)), z.as_ref()), STEP);
            worst.check(
                "dweight",
                relative_error(fd_w, dot(&vw, &dw)),
                FD_DIRECTIONAL,
            )?;
            if let (Some(z), Some(dz)) = (&z, &dz) {
                let fd_z = central_difference(|t| loss(&x, &w, Some(&(z + &(t * &vz)))), h);
                // dz = dv ⊙ x ⊙ silu'(z) before the norm: the same projection
                let first_z = if before {
                    0.0
                } else {
                    let dg = z.mapv(|v| {
                        let sg = ssd_reference::sigmoid(v);
                        (sg * (1.0 + v * (1.0 - sg))).abs()
                    });
                    mag(&vz, &(&(&r_dn * &x.mapv(f64::abs)) * &dg))
                };
                worst.check("dz", judged(fd_z, dot(&vz, dz), first_z), FD_DIRECTIONAL)?;
            }
            prop_assert_eq!(dz.is_some(), with_z);
            Ok(())
        },
    );
}

#[test]
fn swiglu_bwd_matches_finite_differences() {
    run(
        "swiglu",
        64,
        (1usize..6, 1usize..20, any::<u64>()),
        |(r, c, seed), worst| {
            let x = random_array(&[r, c], seed);
            let y = random_array(&[r, c], seed ^ 1);
            let dout = random_array(&[r, c], seed ^ 2);
            let (dx, dy) = swiglu_bwd(x.view(), y.view(), dout.view()).unwrap();
            let v = random_array(&[r, c], seed ^ 3);
            let loss =
                |x: &ArrayD<f64>, y: &ArrayD<f64>| dot(&swiglu(x.view(), y.view()).unwrap(), &dout);
            let fd_x = central_difference(|t| loss(&(&x + &(t * &v)), &y), STEP);
            worst.check("dx", relative_error(fd_x, dot(&v, &dx)), FD_DIRECTIONAL)?;
            // linear in y: exact
            let e = exact_identity(
                |t| pairing(&[(swiglu(x.view(), (&y + &(t * &v)).view()).unwrap(), &dout)]),
                dot(&v, &dy),
                mag(&v, &dy),
            );
            worst.check("dy", e, ADJOINT_F64)?;
            Ok(())
        },
    );
}

// ---------------------------------------------------------------------------------------------
// Errors, never panics

#[test]
fn backward_kernels_reject_bad_shapes() {
    let p = ProblemSpec::plain(2, 10, 4, 3, 2, 5, 4)
        .all_options()
        .seed(5)
        .build();
    let f = ChunkedForward::run(&p.inputs(), &p.options).unwrap();
    let dout = Array4::<f64>::zeros(p.x.raw_dim());
    let bad4 = Array4::<f64>::zeros((2, 10, 4, 4));
    let bad_bhcq = Array4::<f64>::zeros((2, 4, 3, 5));
    let bad5 = Array5::<f64>::zeros((2, 3, 4, 3, 6));
    let sq = p.seq_idx.as_ref().map(|v| v.view());
    let (dt, dacs) = (f.dt_bhcq.view(), f.dacs_bhcq.view());
    let shape = |r: Result<(), ssd_reference::SsdError>, what: &str| match r {
        Err(e) => assert!(
            e.kind() == ErrorKind::Shape || e.kind() == ErrorKind::Value,
            "{what}: {e}"
        ),
        Ok(()) => panic!("{what}: a bad shape was accepted"),
    };
    shape(
        chunk_scan_bwd_dz(bad4.view(), p.x.view(), None, None, None).map(|_| ()),
        "dz dout",
    );
    shape(
        chunk_scan_bwd_dz(dout.view(), p.x.view(), None, view(&p.z), None).map(|_| ()),
        "dz without y",
    );
    shape(
        chunk_scan_bwd_dstates(p.c.view(), dout.view(), bad_bhcq.view(), sq).map(|_| ()),
        "dstates",
    );
    shape(
        state_passing_bwd(f.prev_states_bchpn.view(), dacs, bad5.view(), None, sq, 10).map(|_| ()),
        "state_passing_bwd",
    );
    shape(
        chunk_scan_chunk_state_bwd_dx(
            p.x.view(),
            dt,
            dacs,
            p.b.view(),
            f.cb_bcgqq.view(),
            dout.view(),
            bad5.view(),
            None,
            sq,
        )
        .map(|_| ()),
        "dx",
    );
    shape(
        chunk_state_bwd_db(p.x.view(), p.b.view(), dt, dacs, bad5.view(), sq).map(|_| ()),
        "db",
    );
    shape(
        chunk_scan_bwd_dc(bad5.view(), dacs, p.c.view(), dout.view(), sq).map(|_| ()),
        "dc",
    );
    shape(
        chunk_scan_bwd_dcb(p.x.view(), dt, dacs, dout.view(), 3).map(|_| ()),
        "dcb groups",
    );
    shape(
        bmm_chunk_bwd(p.c.view(), p.b.view(), bad5.view(), sq).map(|_| ()),
        "bmm_chunk_bwd",
    );
    shape(
        chunk_scan_bwd_ddacs_stable(
            p.x.view(),
            bad_bhcq.view(),
            dacs,
            dout.view(),
            f.cb_bcgqq.view(),
        )
        .map(|_| ()),
        "ddacs_stable",
    );
    shape(
        chunk_cumsum_bwd(
            bad_bhcq.view(),
            dacs,
            p.dt.view(),
            p.a.view(),
            None,
            &p.options,
        )
        .map(|_| ()),
        "chunk_cumsum_bwd",
    );
    shape(
        mamba_chunk_scan_combined_bwd(&p.inputs(), &p.options, bad4.view(), None).map(|_| ()),
        "combined dout",
    );
    shape(
        ssd_recurrent_bwd(&p.inputs(), &p.options, dout.view(), Some(bad4.view())).map(|_| ()),
        "recurrent dfinal",
    );
    // and the empty sequence is valid: dinitial_states = dfinal_states, everything else 0
    let mut e = ProblemSpec::plain(1, 0, 2, 3, 1, 4, 8);
    e.initial_states = true;
    let p = e.build();
    let dfin = randn::<Ix4>(&[1, 2, 3, 4], 9);
    let dout = Array4::<f64>::zeros((1, 0, 2, 3));
    for g in [
        ssd_recurrent_bwd(&p.inputs(), &p.options, dout.view(), Some(dfin.view())).unwrap(),
        mamba_chunk_scan_combined_bwd(&p.inputs(), &p.options, dout.view(), Some(dfin.view()))
            .unwrap()
            .0,
    ] {
        assert_eq!(g.dinitial_states.as_ref(), Some(&dfin));
        assert!(g.da.iter().all(|&v| v == 0.0));
    }
    // the forward itself is unchanged by running the backward (sanity: same problem, same out)
    let o1 = ssd_chunked(&p.inputs(), &p.options).unwrap();
    let o2 = ssd_recurrent(&p.inputs(), &p.options).unwrap();
    assert_eq!(o1.final_states, o2.final_states);
}
