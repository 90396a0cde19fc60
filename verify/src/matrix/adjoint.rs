//! The float64 backward kernels checked through the adjoint identity `⟨J v, w⟩ = ⟨v, Jᵀ w⟩`
//! with their forward kernels, and the magnitudes of the kernel outputs reduced over many terms.
//!
//! For each backward output (the gradient w.r.t. one input of a forward kernel, given the seed
//! `w` of that kernel's outputs), a random direction `v` of that input is drawn and
//! `⟨J v, w⟩` is formed by the fourth-order central difference ([`crate::fd::central_difference`])
//! of `t ↦ ⟨w, f(u + t v)⟩` with `h = 1e-4` (v scaled like the input). For the inputs a kernel
//! is linear in this is exact up to rounding; for the others (`exp` of the cumsums, the gate,
//! the norm) the truncation error is `O(h⁴)`. Both stay orders below `FD_DIRECTIONAL` = 1e-6,
//! which any wrong term (≥ 1e-3) exceeds by orders.
//!
//! The adjoints of the log decay are w.r.t. the per-step `Δ_k A` (`ddA_next`, `ddA_intra`: the
//! cumsum is perturbed by the within-chunk cumsum of `v`), w.r.t. the cumsum `a_l` (`ddacs_prev`)
//! and w.r.t. `a_last` (`ddA_chunk`: position Q − 1, where `state_passing` reads it).

use crate::backends::{Backend, KernelInputs, Reference, Tensors};
use crate::fd::central_difference;
use crate::rng::Rng;
use ndarray::{s, Array, Array4, ArrayD, Axis, Dimension, IxDyn};
use ssd_reference::{
    bmm_chunk, chunk_cumsum, chunk_scan, chunk_state, rmsnorm_gated, silu, state_passing,
    state_passing_bwd, swiglu, Kernel, SsdError,
};

/// Central-difference step, in units of the direction (scaled like the input). Smaller than
/// `fd::STEP` (1e-3): the stencil's reach `2h|v|` then stays clear of the kinks of the dt
/// processing (clamp limits) on the default problems, while truncation `h⁴|φ⁽⁵⁾|/30` ≈ 1e-18 and
/// rounding `1.5 ε |f| / h` ≈ 3e-12 of `|f|` stay far below `FD_DIRECTIONAL`.
const STEP: f64 = 1e-4;

type Triple = (String, ArrayD<f64>, ArrayD<f64>);

fn scalar(v: f64) -> ArrayD<f64> {
    ArrayD::from_elem(IxDyn(&[]), v)
}

fn dot<D1: Dimension, D2: Dimension>(a: &Array<f64, D1>, b: &Array<f64, D2>) -> f64 {
    assert_eq!(
        a.len(),
        b.len(),
        "adjoint check of arrays of different sizes"
    );
    a.iter().zip(b.iter()).map(|(x, y)| x * y).sum()
}

/// A random direction shaped like `like`, scaled to its root-mean-square (1 if it is zero).
fn direction<D: Dimension>(like: &Array<f64, D>, rng: &mut Rng) -> Array<f64, D> {
    let n = like.len().max(1) as f64;
    let rms = (like.iter().map(|v| v * v).sum::<f64>() / n).sqrt();
    let scale = if rms > 0.0 { rms } else { 1.0 };
    like.map(|_| scale * rng.normal())
}

/// `v` zeroed at the padded positions of a ragged last chunk ((b, h, c, Q), sequence length l).
fn unpad(mut v: Array4<f64>, l: usize) -> Array4<f64> {
    let (_, _, nc, q) = v.dim();
    for c in 0..nc {
        for k in 0..q {
            if c * q + k >= l {
                v.slice_mut(s![.., .., c, k]).fill(0.0);
            }
        }
    }
    v
}

/// Within-chunk cumsum along the last axis of (b, h, c, Q).
fn cumsum_q(v: &Array4<f64>) -> Array4<f64> {
    let mut o = v.clone();
    o.accumulate_axis_inplace(Axis(3), |&prev, cur| *cur += prev);
    o
}

/// `d/dt ⟨w, f(t)⟩` at 0 by the fourth-order central difference of [`crate::fd`], for a
/// forward `f(t)` returning arrays paired with `w`.
fn directional(
    w: &[ArrayD<f64>],
    f: impl Fn(f64) -> Result<Vec<ArrayD<f64>>, SsdError>,
) -> Result<f64, SsdError> {
    let mut err = None;
    let d = central_difference(
        |t| match f(t) {
            Ok(outs) => outs.iter().zip(w).map(|(o, w)| dot(o, w)).sum(),
            Err(e) => {
                err = Some(e);
                f64::NAN
            }
        },
        STEP,
    );
    match err {
        Some(e) => Err(e),
        None => Ok(d),
    }
}

fn triple(name: &str, grad: &ArrayD<f64>, v: &ArrayD<f64>, jv_w: f64) -> Triple {
    (name.to_string(), scalar(dot(grad, v)), scalar(jv_w))
}

/// `v_dt` with, at every token whose `u = dt + dt_bias` the stencil (reach `2.5·STEP·|v_u|`,
/// `v_u = v_dt + v_bias`) would carry across a kink of the dt processing, `v_dt = −v_bias` so
/// that `u` does not move there (the derivative along the direction is then still exact).
fn off_kinks(
    p: &ssd_reference::Problem<f64>,
    v_dt: &ndarray::Array3<f64>,
    v_bias: &ndarray::Array1<f64>,
) -> ndarray::Array3<f64> {
    let o = &p.options;
    let regime = |u: f64| {
        let sp = o.dt_softplus && u <= 20.0;
        let v = if sp { u.exp().ln_1p() } else { u };
        (sp, v < o.dt_limit.0, v > o.dt_limit.1)
    };
    let mut out = v_dt.clone();
    for ((b, t, h), v) in out.indexed_iter_mut() {
        let u = p.dt[[b, t, h]] + p.dt_bias.as_ref().map_or(0.0, |x| x[h]);
        let reach = 2.5 * STEP * (*v + v_bias[h]).abs();
        if regime(u - reach) != regime(u + reach) {
            *v = -v_bias[h];
        }
    }
    out
}

/// Triples (tensor, `⟨v, Jᵀ w⟩`, `⟨J v, w⟩`) for the float64 backward kernel `kernel` on `i`,
/// whose outputs `got` (`Reference.kernel(kernel, i)`) the caller has run.
pub fn adjoint_checks(
    kernel: Kernel,
    i: &KernelInputs,
    got: &Tensors,
) -> Result<Vec<Triple>, SsdError> {
    let bw = match &i.backward {
        Some(b) => b,
        None => return Ok(Vec::new()),
    };
    if got.is_empty() {
        return Ok(Vec::new());
    }
    let g = |name: &str| -> Result<ArrayD<f64>, SsdError> {
        got.iter()
            .find(|(n, _)| *n == name)
            .map(|(_, a)| a.clone())
            .ok_or_else(|| SsdError::invalid("kernel", format!("{kernel} returned no `{name}`")))
    };
    let p = &i.problem;
    let seq = || p.seq_idx.as_ref().map(|v| v.view());
    let l = p.x.dim().1;
    let q = p.options.chunk_size;
    let mut rng =
        Rng::new(0xAD70 + Kernel::ALL.iter().position(|k| *k == kernel).unwrap_or(0) as u64);
    let dy = bw.dy.clone().into_dyn();
    // chunk_scan without D and z: the pre-gate output minus the skip term
    let scan = |cb: &ndarray::Array5<f64>,
                x: &Array4<f64>,
                dt: &Array4<f64>,
                dacs: &Array4<f64>,
                c: &Array4<f64>,
                prev: &ndarray::Array5<f64>|
     -> Result<ArrayD<f64>, SsdError> {
        Ok(chunk_scan(
            cb.view(),
            x.view(),
            dt.view(),
            dacs.view(),
            c.view(),
            prev.view(),
            None,
            None,
            seq(),
        )?
        .0
        .into_dyn())
    };
    let mut out = Vec::new();
    match kernel {
        Kernel::ChunkScanBwdDz => {
            // dy: the gate out = y ⊙ silu(z) (identity without z)
            let y = match &i.y {
                Some(y) => y.clone(),
                None => {
                    chunk_scan(
                        i.cb_bcgqq.view(),
                        p.x.view(),
                        i.dt_bhcq.view(),
                        i.dacs_bhcq.view(),
                        p.c.view(),
                        i.prev_states_bchpn.view(),
                        p.d.as_ref().map(|v| v.view()),
                        None,
                        seq(),
                    )?
                    .0
                }
            };
            let gate = p.z.as_ref().map(|z| z.mapv(silu));
            let v = direction(&y, &mut rng);
            let w = [bw.dout.clone().into_dyn()];
            let jw = directional(&w, |h| {
                let yy = &y + &(&v * h);
                Ok(vec![match &gate {
                    Some(gt) => (yy * gt).into_dyn(),
                    None => yy.into_dyn(),
                }])
            })?;
            out.push(triple("dy_blhp", &g("dy_blhp")?, &v.into_dyn(), jw));
            let full = |d: Option<&ArrayD<f64>>, z: Option<&Array4<f64>>| {
                chunk_scan(
                    i.cb_bcgqq.view(),
                    p.x.view(),
                    i.dt_bhcq.view(),
                    i.dacs_bhcq.view(),
                    p.c.view(),
                    i.prev_states_bchpn.view(),
                    d.map(|v| v.view()),
                    z.map(|v| v.view()),
                    seq(),
                )
                .map(|r| r.0.into_dyn())
            };
            if let Some(z) = &p.z {
                let v = direction(z, &mut rng);
                let jw = directional(&w, |h| {
                    Ok(vec![full(p.d.as_ref(), Some(&(z + &(&v * h))))?])
                })?;
                out.push(triple("dz_blhp", &g("dz_blhp")?, &v.into_dyn(), jw));
            }
            if let Some(d) = &p.d {
                let v = direction(d, &mut rng);
                let jw = directional(&w, |h| {
                    Ok(vec![full(Some(&(d + &(&v * h))), p.z.as_ref())?])
                })?;
                out.push(triple("dd", &g("dd")?, &v, jw));
            }
        }
        Kernel::ChunkScanBwdDstates => {
            let v = direction(&i.prev_states_bchpn, &mut rng);
            let jw = directional(std::slice::from_ref(&dy), |h| {
                Ok(vec![scan(
                    &i.cb_bcgqq,
                    &p.x,
                    &i.dt_bhcq,
                    &i.dacs_bhcq,
                    &p.c,
                    &(&i.prev_states_bchpn + &(&v * h)),
                )?])
            })?;
            out.push(triple(
                "dprev_states_bchpn",
                &g("dprev_states_bchpn")?,
                &v.into_dyn(),
                jw,
            ));
        }
        Kernel::StatePassingBwd => {
            let (nb, _, nh, np, nn) = i.states_bchpn.dim();
            let init0 = p
                .initial_states
                .clone()
                .unwrap_or_else(|| Array4::zeros((nb, nh, np, nn)));
            let dfin = bw
                .dfinal_states
                .clone()
                .unwrap_or_else(|| Array4::zeros((nb, nh, np, nn)));
            let w = [bw.dprev_states.clone().into_dyn(), dfin.into_dyn()];
            let sp = |st: &ndarray::Array5<f64>, dacs: &Array4<f64>, init: &Array4<f64>| {
                state_passing(st.view(), dacs.view(), Some(init.view()), seq(), l)
                    .map(|(a, b)| vec![a.into_dyn(), b.into_dyn()])
            };
            let v = direction(&i.states_bchpn, &mut rng);
            let jw = directional(&w, |h| {
                sp(&(&i.states_bchpn + &(&v * h)), &i.dacs_bhcq, &init0)
            })?;
            out.push(triple(
                "dstates_bchpn",
                &g("dstates_bchpn")?,
                &v.into_dyn(),
                jw,
            ));
            let v = direction(&init0, &mut rng);
            let jw = directional(&w, |h| {
                sp(&i.states_bchpn, &i.dacs_bhcq, &(&init0 + &(&v * h)))
            })?;
            out.push(triple(
                "dinitial_states_bhpn",
                &g("dinitial_states_bhpn")?,
                &v.into_dyn(),
                jw,
            ));
            // ddA_chunk, w.r.t. a_last = dacs[.., Q-1]. Its term exp(a_last)⟨P, G⟩ is far below
            // the rounding of the states when a_last ≪ 0, so the identity is taken at the
            // cumsums scaled to a_last ≥ −1 (a valid input; the forward states recomputed there).
            let amin = i
                .dacs_bhcq
                .slice(s![.., .., .., q - 1])
                .fold(0.0f64, |m, &v| m.min(v));
            let dacs = if amin < -1.0 {
                &i.dacs_bhcq * (-1.0 / amin)
            } else {
                i.dacs_bhcq.clone()
            };
            let (prev, _) = state_passing(
                i.states_bchpn.view(),
                dacs.view(),
                Some(init0.view()),
                seq(),
                l,
            )?;
            let (_, _, dda_chunk) = state_passing_bwd(
                prev.view(),
                dacs.view(),
                bw.dprev_states.view(),
                bw.dfinal_states.as_ref().map(|v| v.view()),
                seq(),
                l,
            )?;
            let v3 = direction(&dacs.slice(s![.., .., .., q - 1]).to_owned(), &mut rng);
            let mut v4 = Array4::<f64>::zeros(dacs.raw_dim());
            v4.slice_mut(s![.., .., .., q - 1]).assign(&v3);
            let jw = directional(&w, |h| sp(&i.states_bchpn, &(&dacs + &(&v4 * h)), &init0))?;
            out.push(triple(
                "dda_chunk_bhc",
                &dda_chunk.into_dyn(),
                &v3.into_dyn(),
                jw,
            ));
        }
        Kernel::ChunkScanChunkStateBwdDx => {
            let w = [bw.dstates.clone().into_dyn(), dy.clone()];
            let both = |x: &Array4<f64>, dt: &Array4<f64>| -> Result<Vec<ArrayD<f64>>, SsdError> {
                let st = chunk_state(p.b.view(), x.view(), dt.view(), i.dacs_bhcq.view(), seq())?;
                let y = chunk_scan(
                    i.cb_bcgqq.view(),
                    x.view(),
                    dt.view(),
                    i.dacs_bhcq.view(),
                    p.c.view(),
                    i.prev_states_bchpn.view(),
                    p.d.as_ref().map(|v| v.view()),
                    None,
                    seq(),
                )?
                .0;
                Ok(vec![st.into_dyn(), y.into_dyn()])
            };
            let v = direction(&p.x, &mut rng);
            let jw = directional(&w, |h| both(&(&p.x + &(&v * h)), &i.dt_bhcq))?;
            out.push(triple("dx_blhp", &g("dx_blhp")?, &v.into_dyn(), jw));
            let v = unpad(direction(&i.dt_bhcq, &mut rng), l);
            let jw = directional(&w, |h| both(&p.x, &(&i.dt_bhcq + &(&v * h))))?;
            out.push(triple(
                "ddt_direct_bhcq",
                &g("ddt_direct_bhcq")?,
                &v.into_dyn(),
                jw,
            ));
        }
        Kernel::ChunkStateBwdDb => {
            let w = [bw.dstates.clone().into_dyn()];
            let st = |b: &Array4<f64>, dacs: &Array4<f64>| {
                chunk_state(b.view(), p.x.view(), i.dt_bhcq.view(), dacs.view(), seq())
                    .map(|r| vec![r.into_dyn()])
            };
            let v = direction(&p.b, &mut rng);
            let jw = directional(&w, |h| st(&(&p.b + &(&v * h)), &i.dacs_bhcq))?;
            out.push(triple("db_blgn", &g("db_blgn")?, &v.into_dyn(), jw));
            let v = unpad(direction(&(&i.dt_bhcq * 1.0), &mut rng), l);
            let cv = cumsum_q(&v);
            let jw = directional(&w, |h| st(&p.b, &(&i.dacs_bhcq + &(&cv * h))))?;
            out.push(triple(
                "dda_next_bhcq",
                &g("dda_next_bhcq")?,
                &v.into_dyn(),
                jw,
            ));
        }
        Kernel::ChunkScanBwdDc => {
            let w = [dy.clone()];
            let v = direction(&p.c, &mut rng);
            let jw = directional(&w, |h| {
                Ok(vec![scan(
                    &i.cb_bcgqq,
                    &p.x,
                    &i.dt_bhcq,
                    &i.dacs_bhcq,
                    &(&p.c + &(&v * h)),
                    &i.prev_states_bchpn,
                )?])
            })?;
            out.push(triple("dc_blgn", &g("dc_blgn")?, &v.into_dyn(), jw));
            // V: w.r.t. the cumsum a_l through the state term alone (CB = 0 removes the rest)
            let zero_cb = ndarray::Array5::<f64>::zeros(i.cb_bcgqq.raw_dim());
            let v = unpad(direction(&i.dacs_bhcq, &mut rng), l);
            let jw = directional(&w, |h| {
                Ok(vec![scan(
                    &zero_cb,
                    &p.x,
                    &i.dt_bhcq,
                    &(&i.dacs_bhcq + &(&v * h)),
                    &p.c,
                    &i.prev_states_bchpn,
                )?])
            })?;
            out.push(triple(
                "ddacs_prev_bhcq",
                &g("ddacs_prev_bhcq")?,
                &v.into_dyn(),
                jw,
            ));
        }
        Kernel::ChunkScanBwdDcb => {
            let v = direction(&i.cb_bcgqq, &mut rng);
            let jw = directional(std::slice::from_ref(&dy), |h| {
                Ok(vec![scan(
                    &(&i.cb_bcgqq + &(&v * h)),
                    &p.x,
                    &i.dt_bhcq,
                    &i.dacs_bhcq,
                    &p.c,
                    &i.prev_states_bchpn,
                )?])
            })?;
            out.push(triple("dcb_bcgqq", &g("dcb_bcgqq")?, &v.into_dyn(), jw));
        }
        Kernel::BmmChunkBwd => {
            let w = [bw.dcb.clone().into_dyn()];
            let mm = |c: &Array4<f64>, b: &Array4<f64>| {
                bmm_chunk(c.view(), b.view(), q, seq()).map(|r| vec![r.into_dyn()])
            };
            let v = direction(&p.b, &mut rng);
            let jw = directional(&w, |h| mm(&p.c, &(&p.b + &(&v * h))))?;
            out.push(triple("db_blgn", &g("db_blgn")?, &v.into_dyn(), jw));
            let v = direction(&p.c, &mut rng);
            let jw = directional(&w, |h| mm(&(&p.c + &(&v * h)), &p.b))?;
            out.push(triple("dc_blgn", &g("dc_blgn")?, &v.into_dyn(), jw));
        }
        Kernel::ChunkScanBwdDdacsStable => {
            // the intra-chunk term alone: no entering state, no D, no gate
            let zero_prev = ndarray::Array5::<f64>::zeros(i.prev_states_bchpn.raw_dim());
            let v = unpad(direction(&i.dt_bhcq, &mut rng), l);
            let cv = cumsum_q(&v);
            let jw = directional(std::slice::from_ref(&dy), |h| {
                Ok(vec![scan(
                    &i.cb_bcgqq,
                    &p.x,
                    &i.dt_bhcq,
                    &(&i.dacs_bhcq + &(&cv * h)),
                    &p.c,
                    &zero_prev,
                )?])
            })?;
            out.push(triple(
                "dda_intra_bhcq",
                &g("dda_intra_bhcq")?,
                &v.into_dyn(),
                jw,
            ));
        }
        Kernel::ChunkCumsumBwd => {
            // outputs (Δ, Δ·A): the explicit Δ factors and the per-step log decay
            let w = [bw.ddt_direct.clone().into_dyn(), bw.dda.clone().into_dyn()];
            let cc = |dt: &ndarray::Array3<f64>,
                      a: &ndarray::Array1<f64>,
                      bias: Option<&ndarray::Array1<f64>>|
             -> Result<Vec<ArrayD<f64>>, SsdError> {
                let (d, _) = chunk_cumsum(dt.view(), a.view(), bias.map(|v| v.view()), &p.options)?;
                let mut step = d.clone();
                for (hh, &ah) in a.iter().enumerate() {
                    step.slice_mut(s![.., hh, .., ..]).mapv_inplace(|v| v * ah);
                }
                Ok(vec![d.into_dyn(), step.into_dyn()])
            };
            // directions kept off the kinks of the dt processing: where the stencil would carry
            // u = dt + dt_bias across a clamp limit (or the softplus switch at 20), dt moves
            // against dt_bias so that u stays put
            let zero_bias = ndarray::Array1::<f64>::zeros(p.a.len());
            let v = off_kinks(p, &direction(&p.dt, &mut rng), &zero_bias);
            let jw = directional(&w, |h| cc(&(&p.dt + &(&v * h)), &p.a, p.dt_bias.as_ref()))?;
            out.push(triple("ddt_blh", &g("ddt_blh")?, &v.into_dyn(), jw));
            let v = direction(&p.a, &mut rng);
            let jw = directional(&w, |h| cc(&p.dt, &(&p.a + &(&v * h)), p.dt_bias.as_ref()))?;
            out.push(triple("da_h", &g("da_h")?, &v.into_dyn(), jw));
            if let Some(bias) = &p.dt_bias {
                let vb = direction(bias, &mut rng);
                let vdt = off_kinks(p, &ndarray::Array3::zeros(p.dt.raw_dim()), &vb);
                let jw = directional(&w, |h| {
                    cc(&(&p.dt + &(&vdt * h)), &p.a, Some(&(bias + &(&vb * h))))
                })?;
                let both = dot(&g("ddt_bias_h")?, &vb) + dot(&g("ddt_blh")?, &vdt);
                out.push(("ddt_bias_h".to_string(), scalar(both), scalar(jw)));
            }
        }
        Kernel::RmsnormGatedBwd => {
            let n = &i.norm;
            let w = [n.dout.clone().into_dyn()];
            let f = |x: &ndarray::Array2<f64>,
                     wt: &ndarray::Array1<f64>,
                     z: Option<&ndarray::Array2<f64>>| {
                rmsnorm_gated(x.view(), wt.view(), z.map(|v| v.view()), &n.options)
                    .map(|r| vec![r.into_dyn()])
            };
            let v = direction(&n.x, &mut rng);
            let jw = directional(&w, |h| f(&(&n.x + &(&v * h)), &n.weight, n.z.as_ref()))?;
            out.push(triple("dx", &g("dx")?, &v.into_dyn(), jw));
            let v = direction(&n.weight, &mut rng);
            let jw = directional(&w, |h| f(&n.x, &(&n.weight + &(&v * h)), n.z.as_ref()))?;
            out.push(triple("dweight", &g("dweight")?, &v.into_dyn(), jw));
            if let Some(z) = &n.z {
                let v = direction(z, &mut rng);
                let jw = directional(&w, |h| f(&n.x, &n.weight, Some(&(z + &(&v * h)))))?;
                out.push(triple("dz", &g("dz")?, &v.into_dyn(), jw));
            }
        }
        Kernel::SwigluBwd => {
            let sw = &i.swiglu;
            let w = [sw.dout.clone()];
            let v = direction(&sw.x, &mut rng);
            let jw = directional(&w, |h| {
                swiglu((&sw.x + &(&v * h)).view(), sw.y.view()).map(|r| vec![r])
            })?;
            out.push(triple("dx", &g("dx")?, &v, jw));
            let v = direction(&sw.y, &mut rng);
            let jw = directional(&w, |h| {
                swiglu(sw.x.view(), (&sw.y + &(&v * h)).view()).map(|r| vec![r])
            })?;
            out.push(triple("dy", &g("dy")?, &v, jw));
        }
        _ => {}
    }
    Ok(out)
}

/// Per-entry `Σ|terms|` of a kernel output that is a sum over many tokens or rows of signed
/// terms (the per-head scalars `dd`, `da_h`, `ddt_bias_h`, and `dweight`); `None` for the rest.
pub fn reduction_magnitude(kernel: Kernel, tensor: &str, i: &KernelInputs) -> Option<ArrayD<f64>> {
    let p = &i.problem;
    match (kernel, tensor) {
        (Kernel::ChunkScanBwdDz, "dd") => {
            let bw = i.backward.as_ref()?;
            let d = p.d.as_ref()?;
            let terms = (&bw.dy * &p.x).mapv(f64::abs);
            let per_hp = terms.sum_axis(Axis(0)).sum_axis(Axis(0));
            Some(if d.ndim() == 1 {
                per_hp.sum_axis(Axis(1)).into_dyn()
            } else {
                per_hp.into_dyn()
            })
        }
        (Kernel::ChunkCumsumBwd, "da_h") => {
            let bw = i.backward.as_ref()?;
            Some(
                (&bw.dda * &i.dt_bhcq)
                    .mapv(f64::abs)
                    .sum_axis(Axis(0))
                    .sum_axis(Axis(1))
                    .sum_axis(Axis(1))
                    .into_dyn(),
            )
        }
        (Kernel::ChunkCumsumBwd, "ddt_bias_h") => {
            let t = Reference.kernel(kernel, i).ok()??;
            let ddt = t.iter().find(|(n, _)| *n == "ddt_blh")?.1.clone();
            Some(
                ddt.mapv(f64::abs)
                    .sum_axis(Axis(0))
                    .sum_axis(Axis(0))
                    .into_dyn(),
            )
        }
        (Kernel::RmsnormGatedBwd, "dweight") => {
            // dweight_j = Σ_rows dout ⊙ (out / w)_j
            let n = &i.norm;
            if n.weight.iter().any(|w| *w == 0.0) {
                return None;
            }
            let out = rmsnorm_gated(
                n.x.view(),
                n.weight.view(),
                n.z.as_ref().map(|v| v.view()),
                &n.options,
            )
            .ok()?;
            Some(
                ((&n.dout * &out) / &n.weight)
                    .mapv(f64::abs)
                    .sum_axis(Axis(0))
                    .into_dyn(),
            )
        }
        _ => None,
    }
}
