//! The verification matrix: every kernel of [`Kernel::ALL`] on every available backend, then
//! the combined op forward and every gradient, on the embedded default problem set.
//!
//! What each row compares:
//! - **reference, per kernel**: the float64 kernel against an independent float64 route to the
//!   same numbers: `chunk_state` against the recurrence run on the chunk alone, `state_passing`
//!   against the recurrence run on every prefix, `chunk_scan` against the full recurrence,
//!   `bmm_chunk` and `chunk_cumsum` against their sums written out, `selective_state_update`
//!   against a one-token recurrence, `rmsnorm_gated` and `swiglu` against their formulas in array
//!   form; backward kernels through the adjoint identity `⟨J v, w⟩ = ⟨v, Jᵀ w⟩` with the
//!   forward kernel (central differences, exact for the linear ones).
//! - **cpu / cuda, per kernel**: the backend's kernel against the float64 kernel on the same
//!   (f32-representable) inputs.
//! - **combined**: `ssd_quadratic` and `mamba_chunk_scan_combined` of every backend against the
//!   literal recurrence `ssd_recurrent`; gradients against `ssd_recurrent_bwd`.
//!
//! Thresholds come from [`crate::tolerance`]: float64 routes by `FORMS_F64`, `GRADS_F64` and
//! `FD_DIRECTIONAL`, f32 backends by `FORWARD_F32` and `GRADIENT_F32`.
//!
//! Every tensor a backend returns is scanned for NaN and infinities ([`crate::finite`]): those
//! compared in [`Row::compare`] (with their truth), the ones no row compares (extra outputs, the
//! raw outputs of the reference's backward kernels behind the adjoint scalars, the four pieces
//! of the `A` adjoint) here. A non-finite tensor fails its row with a note such as
//! `out: 3 non-finite values, first NaN at (b, l, h, p) = (0, 1234, 3, 17)`.

pub mod adjoint;
pub mod cases;
pub mod report;

pub use cases::{build_case, default_specs, Case, CaseSpec};
pub use report::{Metric, Row};

use crate::backends::{Backend, BackwardInputs, KernelInputs, Precision, Reference, Tensors};
use crate::tolerance::{FORMS_F64, FORWARD_F32, GRADIENT_F32, GRADS_F64};
use ndarray::{s, Array2, Array4, Array5, ArrayD, Axis};
use ssd_reference::{
    process_dt, sigmoid, silu, ssd_quadratic, ssd_recurrent, Gradients, Kernel, Options, Outputs,
    Problem, SsdError,
};

/// The name of the combined forward in rows.
pub const COMBINED: &str = "mamba_chunk_scan_combined";
/// The name of the combined backward in rows.
pub const COMBINED_BWD: &str = "mamba_chunk_scan_combined_bwd";

/// The float64 truth of a problem: the literal recurrence (and its hand-written reverse mode).
#[derive(Debug, Clone)]
pub struct Truth {
    /// `ssd_recurrent`
    pub forward: Outputs<f64>,
    /// `ssd_recurrent_bwd`, when `ssd-reference` has it
    pub gradients: Option<Gradients<f64>>,
}

/// Computes the truth of `problem` with seeds `dout`, `dfinal_states`.
pub fn truth(
    problem: &Problem<f64>,
    dout: Option<&Array4<f64>>,
    dfinal_states: Option<&Array4<f64>>,
) -> Result<Truth, SsdError> {
    let forward = ssd_recurrent(&problem.inputs(), &problem.options)?;
    let gradients = match dout {
        Some(d) => crate::backends::recurrent_backward(problem, d, dfinal_states)?,
        None => None,
    };
    Ok(Truth { forward, gradients })
}

/// The threshold a backend of `precision` is judged by for `kernel`'s results.
pub fn kernel_threshold(precision: Precision, kernel: Kernel) -> f64 {
    match (precision, kernel.is_backward()) {
        (Precision::F64, false) => FORMS_F64,
        (Precision::F64, true) => crate::tolerance::FD_DIRECTIONAL,
        (Precision::F32, false) => FORWARD_F32,
        (Precision::F32, true) => GRADIENT_F32,
    }
}

/// The threshold of the combined forward (`backward = false`) or gradients.
pub fn combined_threshold(precision: Precision, backward: bool) -> f64 {
    match (precision, backward) {
        (Precision::F64, false) => FORMS_F64,
        (Precision::F64, true) => GRADS_F64,
        (Precision::F32, false) => FORWARD_F32,
        (Precision::F32, true) => GRADIENT_F32,
    }
}

fn dyn_of<D: ndarray::Dimension>(a: ndarray::Array<f64, D>) -> ArrayD<f64> {
    a.into_dyn()
}

/// `problem` restricted to tokens `t0..t1` (without `D`, `z`, and with the initial states only
/// if `keep_initial`).
fn slice_problem(p: &Problem<f64>, t0: usize, t1: usize, keep_initial: bool) -> Problem<f64> {
    Problem {
        x: p.x.slice(s![.., t0..t1, .., ..]).to_owned(),
        dt: p.dt.slice(s![.., t0..t1, ..]).to_owned(),
        a: p.a.clone(),
        b: p.b.slice(s![.., t0..t1, .., ..]).to_owned(),
        c: p.c.slice(s![.., t0..t1, .., ..]).to_owned(),
        d: None,
        z: None,
        dt_bias: p.dt_bias.clone(),
        initial_states: if keep_initial {
            p.initial_states.clone()
        } else {
            None
        },
        seq_idx: p
            .seq_idx
            .as_ref()
            .map(|v| v.slice(s![.., t0..t1]).to_owned()),
        options: p.options,
    }
}

fn named<'a>(tensors: &'a Tensors, name: &str) -> Option<&'a ArrayD<f64>> {
    tensors.iter().find(|(n, _)| *n == name).map(|(_, a)| a)
}

/// Failing rows for the tensors of `got` that no row compares with a truth (their names are
/// not in `compared`) but that hold NaN or an infinity.
pub fn unmatched_non_finite_rows<'a>(
    kernel: &str,
    backend: &str,
    case: &str,
    threshold: f64,
    got: impl IntoIterator<Item = (&'a str, &'a ArrayD<f64>)>,
    compared: &[&str],
) -> Vec<Row> {
    got.into_iter()
        .filter(|(name, _)| !compared.contains(name))
        .filter_map(|(name, a)| {
            crate::finite::message(kernel, name, name, a)
                .map(|m| Row::non_finite(kernel, backend, name, case, threshold, m))
        })
        .collect()
}

/// The float64 kernel `kernel` against its independent float64 route, on `case.exact`.
/// Backward kernels are checked in [`adjoint_rows`].
fn reference_forward_rows(
    kernel: Kernel,
    case: &Case,
) -> Result<Vec<(String, ArrayD<f64>, ArrayD<f64>)>, SsdError> {
    let i = &case.exact;
    let p = &i.problem;
    let got = match Reference.kernel(kernel, i)? {
        Some(t) => t,
        None => return Ok(Vec::new()),
    };
    let g = |name: &str| named(&got, name).cloned().unwrap_or_default();
    let d = p.dims();
    let (nb, l, nh, np, nn) = (d.batch, d.seqlen, d.nheads, d.headdim, d.dstate);
    let q = p.options.chunk_size;
    let nc = l.div_ceil(q);
    let mut out = Vec::new();
    match kernel {
        Kernel::ChunkCumsum => {
            let mut dt = Array4::<f64>::zeros((nb, nh, nc, q));
            let mut dacs = Array4::<f64>::zeros((nb, nh, nc, q));
            for b in 0..nb {
                for h in 0..nh {
                    let bias = p.dt_bias.as_ref().map_or(0.0, |v| v[h]);
                    let delta = |t: usize| {
                        if t < l {
                            process_dt(
                                p.dt[[b, t, h]],
                                bias,
                                p.options.dt_softplus,
                                p.options.dt_limit,
                            )
                        } else {
                            0.0
                        }
                    };
                    for c in 0..nc {
                        for k in 0..q {
                            dt[[b, h, c, k]] = delta(c * q + k);
                            dacs[[b, h, c, k]] =
                                (0..=k).map(|j| delta(c * q + j) * p.a[h]).sum::<f64>();
                        }
                    }
                }
            }
            out.push(("dt_bhcq".into(), g("dt_bhcq"), dyn_of(dt)));
            out.push(("dacs_bhcq".into(), g("dacs_bhcq"), dyn_of(dacs)));
        }
        Kernel::ChunkState => {
            let mut want = Array5::<f64>::zeros((nb, nc, nh, np, nn));
            for c in 0..nc {
                let sub = slice_problem(p, c * q, (c * q + q).min(l), false);
                let f = ssd_recurrent(&sub.inputs(), &sub.options)?.final_states;
                want.slice_mut(s![.., c, .., .., ..]).assign(&f);
            }
            out.push(("states_bchpn".into(), g("states_bchpn"), dyn_of(want)));
        }
        Kernel::StatePassing => {
            let mut want = Array5::<f64>::zeros((nb, nc, nh, np, nn));
            if let Some(init) = &p.initial_states {
                want.slice_mut(s![.., 0, .., .., ..]).assign(init);
            }
            for c in 1..nc {
                let sub = slice_problem(p, 0, c * q, true);
                let f = ssd_recurrent(&sub.inputs(), &sub.options)?.final_states;
                want.slice_mut(s![.., c, .., .., ..]).assign(&f);
            }
            let fin = ssd_recurrent(&p.inputs(), &p.options)?.final_states;
            out.push((
                "prev_states_bchpn".into(),
                g("prev_states_bchpn"),
                dyn_of(want),
            ));
            out.push((
                "final_states_bhpn".into(),
                g("final_states_bhpn"),
                dyn_of(fin),
            ));
        }
        Kernel::BmmChunk => {
            let ng = d.ngroups;
            let mut want = Array5::<f64>::zeros((nb, nc, ng, q, q));
            let id = |b: usize, t: usize| p.seq_idx.as_ref().map_or(0, |v| v[[b, t]]);
            for b in 0..nb {
                for c in 0..nc {
                    for gg in 0..ng {
                        for li in 0..q {
                            for si in 0..q {
                                let (tl, ts) = (c * q + li, c * q + si);
                                if tl < l && ts < l && id(b, tl) == id(b, ts) {
                                    want[[b, c, gg, li, si]] = p
                                        .c
                                        .slice(s![b, tl, gg, ..])
                                        .dot(&p.b.slice(s![b, ts, gg, ..]));
                                }
                            }
                        }
                    }
                }
            }
            out.push(("cb_bcgqq".into(), g("cb_bcgqq"), dyn_of(want)));
        }
        Kernel::ChunkScan => {
            let full = ssd_recurrent(&p.inputs(), &p.options)?.out;
            out.push(("out_blhp".into(), g("out_blhp"), dyn_of(full)));
            if p.z.is_some() {
                let mut nz = p.clone();
                nz.z = None;
                let y = ssd_recurrent(&nz.inputs(), &nz.options)?.out;
                out.push(("y_blhp".into(), g("y_blhp"), dyn_of(y)));
            }
        }
        Kernel::SelectiveStateUpdate => {
            let dc = &i.decode;
            let mut state = dc.state.clone();
            let (nbd, nhd, npd) = dc.x.dim();
            let mut o = ndarray::Array3::<f64>::zeros((nbd, nhd, npd));
            for b in 0..nbd {
                let slot = match &dc.state_batch_indices {
                    Some(idx) if idx[b] < 0 => continue,
                    Some(idx) => idx[b] as usize,
                    None => b,
                };
                let one = |a: ndarray::ArrayView2<'_, f64>| {
                    a.to_owned().insert_axis(Axis(0)).insert_axis(Axis(0))
                };
                let sub = Problem {
                    x: one(dc.x.slice(s![b, .., ..])),
                    dt: dc
                        .dt
                        .slice(s![b..b + 1, ..])
                        .to_owned()
                        .insert_axis(Axis(1)),
                    a: dc.a.clone(),
                    b: one(dc.b.slice(s![b, .., ..])),
                    c: one(dc.c.slice(s![b, .., ..])),
                    d: dc.d.clone(),
                    z: dc.z.as_ref().map(|z| one(z.slice(s![b, .., ..]))),
                    dt_bias: dc.dt_bias.clone(),
                    initial_states: Some(dc.state.slice(s![slot..slot + 1, .., .., ..]).to_owned()),
                    seq_idx: None,
                    options: Options {
                        chunk_size: 1,
                        dt_softplus: dc.options.dt_softplus,
                        dt_limit: dc.options.dt_limit,
                    },
                };
                let r = ssd_recurrent(&sub.inputs(), &sub.options)?;
                o.slice_mut(s![b, .., ..])
                    .assign(&r.out.slice(s![0, 0, .., ..]));
                state
                    .slice_mut(s![slot, .., .., ..])
                    .assign(&r.final_states.slice(s![0, .., .., ..]));
            }
            out.push(("out_bhp".into(), g("out_bhp"), dyn_of(o)));
            out.push(("state".into(), g("state"), dyn_of(state)));
        }
        Kernel::RmsnormGated => {
            let n = &i.norm;
            let (rows, nd) = n.x.dim();
            let gs = n.options.group_size.unwrap_or(nd);
            let gate = n.z.as_ref().map(|z| z.mapv(silu));
            let v = match (&gate, n.options.norm_before_gate) {
                (Some(gt), false) => &n.x * gt,
                _ => n.x.clone(),
            };
            let v3 = v
                .clone()
                .into_shape_with_order((rows, nd / gs, gs))
                .map_err(|e| SsdError::invalid("group_size", e.to_string()))?;
            let ms = v3.mapv(|a| a * a).mean_axis(Axis(2)).unwrap_or_default();
            let rstd = ms.mapv(|m| 1.0 / (m + n.options.eps).sqrt());
            let normed = &v3 * &rstd.insert_axis(Axis(2));
            let mut want: Array2<f64> = normed
                .into_shape_with_order((rows, nd))
                .map_err(|e| SsdError::invalid("group_size", e.to_string()))?
                * &n.weight;
            if let (Some(gt), true) = (&gate, n.options.norm_before_gate) {
                want *= gt;
            }
            out.push(("out".into(), g("out"), dyn_of(want)));
        }
        Kernel::Swiglu => {
            let sw = &i.swiglu;
            let want = sw.x.mapv(sigmoid) * &sw.x * &sw.y;
            out.push(("out".into(), g("out"), want));
        }
        _ => {}
    }
    Ok(out)
}

/// Per-entry `Σ|terms|` of the tensors reduced over many terms (per-head scalars), computed
/// from the kernel's inputs; `None` for the others.
pub fn magnitude(kernel: Kernel, tensor: &str, inputs: &KernelInputs) -> Option<ArrayD<f64>> {
    adjoint::reduction_magnitude(kernel, tensor, inputs)
}

fn sort_key(section: usize, kernel: Option<Kernel>, backend: usize) -> (usize, usize, usize) {
    let k = kernel
        .and_then(|k| Kernel::ALL.iter().position(|x| *x == k))
        .unwrap_or(0);
    (section, k, backend)
}

/// Rows of one case on every backend (unmerged, each with its sort key).
fn case_rows(
    case: &Case,
    backends: &[Box<dyn Backend>],
) -> Result<Vec<((usize, usize, usize), Row)>, SsdError> {
    let mut rows = Vec::new();
    let truth = truth(&case.problem, Some(&case.dout), case.dfinal_states.as_ref())?;
    for (bi, be) in backends.iter().enumerate() {
        let bname = be.name();
        let prec = be.precision();
        // per kernel
        for k in Kernel::ALL {
            let thr = kernel_threshold(prec, k);
            let key = sort_key(0, Some(k), bi);
            if prec == Precision::F64 && bname == "reference" {
                let triples = if k.is_backward() {
                    // the adjoint rows compare scalars `⟨v, Jᵀ w⟩`: scan the raw outputs here
                    let raw = Reference.kernel(k, &case.exact)?.unwrap_or_default();
                    let bad = unmatched_non_finite_rows(
                        k.name(),
                        bname,
                        &case.label,
                        thr,
                        raw.iter().map(|(n, a)| (*n, a)),
                        &[],
                    );
                    let bad_names: Vec<String> = bad.iter().map(|r| r.tensor.clone()).collect();
                    rows.extend(bad.into_iter().map(|r| (key, r)));
                    adjoint_rows(k, case, &raw)?
                        .into_iter()
                        .filter(|(t, _, _)| !bad_names.contains(t))
                        .collect()
                } else {
                    reference_forward_rows(k, case)?
                };
                if triples.is_empty() && !rows.iter().any(|(kk, _)| *kk == key) {
                    rows.push((
                        key,
                        Row::failed(
                            k.name(),
                            bname,
                            "-",
                            &case.label,
                            thr,
                            "not in ssd-reference yet",
                        ),
                    ));
                }
                for (tensor, got, want) in triples {
                    rows.push((
                        key,
                        Row::compare(
                            k.name(),
                            bname,
                            &tensor,
                            &case.label,
                            &got,
                            &want,
                            None,
                            thr,
                        ),
                    ));
                }
                continue;
            }
            let want = Reference.kernel(k, &case.rounded)?;
            let got = be.kernel(k, &case.rounded);
            match (want, got) {
                (_, Err(e)) => rows.push((
                    key,
                    Row::failed(k.name(), bname, "-", &case.label, thr, e.to_string()),
                )),
                (_, Ok(None)) => rows.push((
                    key,
                    Row::failed(
                        k.name(),
                        bname,
                        "-",
                        &case.label,
                        thr,
                        format!("not implemented by {bname}"),
                    ),
                )),
                (None, Ok(Some(_))) => rows.push((
                    key,
                    Row::failed(
                        k.name(),
                        bname,
                        "-",
                        &case.label,
                        thr,
                        "no float64 reference kernel to compare with",
                    ),
                )),
                (Some(want), Ok(Some(got))) => {
                    for (tensor, w) in &want {
                        let row = match named(&got, tensor) {
                            None => Row::failed(
                                k.name(),
                                bname,
                                tensor,
                                &case.label,
                                thr,
                                format!("{bname} returned no `{tensor}`"),
                            ),
                            Some(g) => {
                                let mag = magnitude(k, tensor, &case.rounded);
                                Row::compare(
                                    k.name(),
                                    bname,
                                    tensor,
                                    &case.label,
                                    g,
                                    w,
                                    mag.as_ref(),
                                    thr,
                                )
                            }
                        };
                        rows.push((key, row));
                    }
                    let compared: Vec<&str> = want.iter().map(|(n, _)| *n).collect();
                    for r in unmatched_non_finite_rows(
                        k.name(),
                        bname,
                        &case.label,
                        thr,
                        got.iter().map(|(n, a)| (*n, a)),
                        &compared,
                    ) {
                        rows.push((key, r));
                    }
                }
            }
        }
        // combined forward
        let thr = combined_threshold(prec, false);
        if bname == "reference" {
            let qd = ssd_quadratic(&case.problem.inputs(), &case.problem.options)?;
            for (tensor, g, w) in [
                ("out", &qd.out, &truth.forward.out),
                (
                    "final_states",
                    &qd.final_states,
                    &truth.forward.final_states,
                ),
            ] {
                rows.push((
                    (1, 0, 0),
                    Row::compare(
                        "ssd_quadratic",
                        bname,
                        tensor,
                        &case.label,
                        &g.clone().into_dyn(),
                        &w.clone().into_dyn(),
                        None,
                        thr,
                    ),
                ));
            }
        }
        let key = (2, 0, bi);
        match be.forward(&case.problem) {
            Err(e) => rows.push((
                key,
                Row::failed(COMBINED, bname, "-", &case.label, thr, e.to_string()),
            )),
            Ok(o) => {
                for (tensor, g, w) in [
                    ("out", &o.out, &truth.forward.out),
                    ("final_states", &o.final_states, &truth.forward.final_states),
                ] {
                    rows.push((
                        key,
                        Row::compare(
                            COMBINED,
                            bname,
                            tensor,
                            &case.label,
                            &g.clone().into_dyn(),
                            &w.clone().into_dyn(),
                            None,
                            thr,
                        ),
                    ));
                }
            }
        }
        // gradients
        let thr = combined_threshold(prec, true);
        let key = (3, 0, bi);
        let want = match &truth.gradients {
            Some(g) => g,
            None => {
                rows.push((
                    key,
                    Row::failed(
                        COMBINED_BWD,
                        bname,
                        "-",
                        &case.label,
                        thr,
                        "no float64 ssd_recurrent_bwd in ssd-reference yet",
                    ),
                ));
                continue;
            }
        };
        if bname == "reference" {
            rows.push((key, a_adjoint_row(case, thr)?));
        }
        match be.backward(&case.problem, &case.dout, case.dfinal_states.as_ref()) {
            Err(e) => rows.push((
                key,
                Row::failed(COMBINED_BWD, bname, "-", &case.label, thr, e.to_string()),
            )),
            Ok(None) => rows.push((
                key,
                Row::failed(
                    COMBINED_BWD,
                    bname,
                    "-",
                    &case.label,
                    thr,
                    format!("not implemented by {bname}"),
                ),
            )),
            Ok(Some(got)) => {
                let mags = gradient_magnitudes(
                    &case.problem,
                    &case.exact.dt_bhcq,
                    case.exact.backward.as_ref(),
                    want,
                );
                for r in gradient_rows(COMBINED_BWD, bname, &case.label, &got, want, &mags, thr) {
                    rows.push((key, r));
                }
            }
        }
    }
    Ok(rows)
}

/// The four producers of the adjoint of the per-step log decay (`AAdjoint`: intra + next +
/// prev + chunk) of the chunked backward, summed and scattered to (b, l, h), against the
/// per-step adjoint `ddA` of the literal recurrence's reverse mode.
fn a_adjoint_row(case: &Case, threshold: f64) -> Result<Row, SsdError> {
    let p = &case.problem;
    let dfin = case.dfinal_states.as_ref().map(|v| v.view());
    let (_, adj) = ssd_reference::mamba_chunk_scan_combined_bwd(
        &p.inputs(),
        &p.options,
        case.dout.view(),
        dfin,
    )?;
    let (_, want) =
        ssd_reference::ssd_recurrent_bwd_with_dda(&p.inputs(), &p.options, case.dout.view(), dfin)?;
    let tensor = "ddA=intra+next+prev+chunk";
    let pieces = [
        ("ddA_intra_bhcq", &adj.intra),
        ("ddA_next_bhcq", &adj.next),
        ("ddA_prev_bhcq", &adj.prev),
        ("ddA_chunk_bhcq", &adj.chunk),
    ];
    let bad: Vec<String> = pieces
        .iter()
        .filter_map(|(name, a)| crate::finite::message(COMBINED_BWD, name, name, *a))
        .collect();
    if !bad.is_empty() {
        return Ok(Row::non_finite(
            COMBINED_BWD,
            "reference",
            tensor,
            &case.label,
            threshold,
            bad.join("; "),
        ));
    }
    let sum = &adj.intra + &adj.next + &adj.prev + &adj.chunk;
    let (nb, l, nh) = want.dim();
    let q = p.options.chunk_size;
    let got = ndarray::Array3::from_shape_fn((nb, l, nh), |(b, t, h)| sum[[b, h, t / q, t % q]]);
    Ok(Row::compare(
        COMBINED_BWD,
        "reference",
        tensor,
        &case.label,
        &got.into_dyn(),
        &want.into_dyn(),
        None,
        threshold,
    ))
}

/// The gradients as named tensors (`dx ddt dA dB dC` and the optional ones present).
pub fn gradient_tensors(g: &Gradients<f64>) -> Vec<(&'static str, ArrayD<f64>)> {
    let mut v = vec![
        ("dx", g.dx.clone().into_dyn()),
        ("ddt", g.ddt.clone().into_dyn()),
        ("dA", g.da.clone().into_dyn()),
        ("dB", g.db.clone().into_dyn()),
        ("dC", g.dc.clone().into_dyn()),
    ];
    if let Some(a) = &g.dd {
        v.push(("dD", a.clone()));
    }
    if let Some(a) = &g.dz {
        v.push(("dz", a.clone().into_dyn()));
    }
    if let Some(a) = &g.ddt_bias {
        v.push(("ddt_bias", a.clone().into_dyn()));
    }
    if let Some(a) = &g.dinitial_states {
        v.push(("dinitial_states", a.clone().into_dyn()));
    }
    v
}

/// `Σ|terms|` of `dA`, `ddt_bias` and `dD` (the per-head scalars judged relative to the
/// magnitude of their terms), from the problem, its Δ, the float64 backward intermediates
/// (`dy`, `ddA`; without them `dD` and `dA` fall back to `rel_l2`) and the float64 gradients.
pub fn gradient_magnitudes(
    problem: &Problem<f64>,
    dt_bhcq: &Array4<f64>,
    backward: Option<&BackwardInputs>,
    truth: &Gradients<f64>,
) -> Vec<(&'static str, ArrayD<f64>)> {
    let p = problem;
    let mut v = Vec::new();
    if let (Some(d), Some(bw)) = (&p.d, backward) {
        // dD = Σ_{b,l} dy ⊙ x (summed over p as well for D of shape (h))
        let terms = (&bw.dy * &p.x).mapv(f64::abs);
        let per_hp = terms.sum_axis(Axis(0)).sum_axis(Axis(0));
        let m = if d.ndim() == 1 {
            per_hp.sum_axis(Axis(1)).into_dyn()
        } else {
            per_hp.into_dyn()
        };
        v.push(("dD", m));
    }
    if p.dt_bias.is_some() {
        // ddt_bias_h = Σ_{b,l} ddt
        v.push((
            "ddt_bias",
            truth
                .ddt
                .mapv(f64::abs)
                .sum_axis(Axis(0))
                .sum_axis(Axis(0))
                .into_dyn(),
        ));
    }
    if let Some(bw) = backward {
        // dA_h = Σ_{b,c,q} ddA · Δ
        let terms = (&bw.dda * dt_bhcq).mapv(f64::abs);
        v.push((
            "dA",
            terms
                .sum_axis(Axis(0))
                .sum_axis(Axis(1))
                .sum_axis(Axis(1))
                .into_dyn(),
        ));
    }
    v
}

/// Rows comparing every gradient of `want` with `got` (and failing rows for gradients only
/// `got` holds, where they are non-finite).
pub fn gradient_rows(
    kernel: &str,
    backend: &str,
    case: &str,
    got: &Gradients<f64>,
    want: &Gradients<f64>,
    magnitudes: &[(&'static str, ArrayD<f64>)],
    threshold: f64,
) -> Vec<Row> {
    let got = gradient_tensors(got);
    let want = gradient_tensors(want);
    let compared: Vec<&str> = want.iter().map(|(n, _)| *n).collect();
    let extra = unmatched_non_finite_rows(
        kernel,
        backend,
        case,
        threshold,
        got.iter().map(|(n, a)| (*n, a)),
        &compared,
    );
    want.into_iter()
        .map(|(name, w)| match got.iter().find(|(n, _)| *n == name) {
            None => Row::failed(
                kernel,
                backend,
                name,
                case,
                threshold,
                format!("{backend} returned no `{name}`"),
            ),
            Some((_, g)) => {
                let mag = magnitudes.iter().find(|(n, _)| *n == name).map(|(_, m)| m);
                Row::compare(kernel, backend, name, case, g, &w, mag, threshold)
            }
        })
        .chain(extra)
        .collect()
}

/// The backward kernel `kernel` of the reference through the adjoint identity with its forward
/// kernel, given its outputs `got` on `case.exact`: triples (tensor, `⟨v, Jᵀ w⟩`, `⟨J v, w⟩`)
/// as 0-d arrays.
fn adjoint_rows(
    kernel: Kernel,
    case: &Case,
    got: &Tensors,
) -> Result<Vec<(String, ArrayD<f64>, ArrayD<f64>)>, SsdError> {
    adjoint::adjoint_checks(kernel, &case.exact, got)
}

/// Runs the matrix on `specs` for `backends`; `progress(done, total, what)` is called before
/// each step. Returns one row per (kernel, backend, tensor), the worst over the cases.
pub fn run_matrix(
    specs: &[CaseSpec],
    backends: &[Box<dyn Backend>],
    progress: &mut dyn FnMut(usize, usize, &str),
) -> Result<Vec<Row>, SsdError> {
    let mut all = Vec::new();
    let total = specs.len();
    for (n, cs) in specs.iter().enumerate() {
        progress(n, total, &format!("{} ({})", cs.label, cs.describe()));
        let case = build_case(cs)?;
        all.extend(case_rows(&case, backends)?);
    }
    progress(total, total, "done");
    all.sort_by_key(|(k, _)| *k);
    Ok(report::worst_per_tensor(
        all.into_iter().map(|(_, r)| r).collect(),
    ))
}
