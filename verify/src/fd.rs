//! Central finite differences of any float64 forward: the independent check of every gradient.
//!
//! A [`Direction`] is a tangent in the space of a problem's float inputs (one array per input,
//! the problem's shapes). [`directional_derivative`] differentiates any closure over a
//! [`Problem`] along it by the fourth-order central difference [`central_difference`]:
//! `(f(−2h) − 8 f(−h) + 8 f(h) − f(2h)) / 12h` of `t ↦ f(p + t v)`. Coordinate probes are
//! directions with one non-zero entry ([`Direction::coordinate`]). [`ssd_loss`] is the scalar
//! whose gradient the backward computes, `Σ out·dout + Σ final_states·dfinal_states`.
//!
//! ## Step size
//!
//! Directions are *scaled*: [`Direction::random`] and [`Direction::coordinate`] give each input
//! the size of that input (its RMS), so a step `t` perturbs every input by about `t` relative,
//! and the scaled function `φ(t) = f(p + t v)` varies on a scale of order 1 in `t` (x, B, C, D,
//! z and the initial states enter polynomially or through `silu` of O(1) arguments).
//!
//! `A`, `dt` and `dt_bias` need their own scales. `A_h` gets `|A_h|` (not the RMS over heads):
//! the decay `exp(A_h S)` has derivatives `Sⁿ exp(A_h S) ≤ (n / (e|A_h|))ⁿ` whatever the span
//! S, so `|A_h|` is its scale; a head with `|A_h| = 1.3` moved by the RMS 7.6 measured 2e-6 of
//! truncation at h = 1e-3. (`A_h = 0` gets 1; a central difference there would need `A > 0`,
//! which is invalid.) `dt` and `dt_bias` only move `u = dt + dt_bias`, and the loss varies with
//! Δ relatively: shifting every Δ of a head by δ moves the decay over its horizon
//! (≈ 1/(|A|Δ) steps) by about δ/Δ. So each `dt` entry gets `Δ / (dΔ/du)` (≈ 1 through the
//! softplus at `u ≪ 0`, Δ itself without it) and `dt_bias_h` the RMS of that over the head's
//! tokens: a unit step changes every Δ by about itself. (Scaled by its own RMS, a bias of 2e-5
//! got a step swamped by rounding, 5e-5 measured; even the scale 1/|A| = 0.5 left 4e-6 of
//! truncation at h = 1e-3 for Δ ≈ 0.02 without softplus.)
//!
//! The error of a central difference is truncation plus rounding. Rounding is `≈ c·ε_f / h`
//! with `ε_f ≈ ε·Σ|terms of f|` (ε = 2.2e-16), and it matters because a directional derivative
//! can be 10⁻⁴ of `|f|` (a coordinate of small influence, e.g. the bias of a head with strong
//! decay). The two-point formula `(f(h) − f(−h)) / 2h` truncates at `h²|φ‴|/6`; at its best
//! step `h ≈ ε^{1/3} ≈ 6e-6` rounding is `ε_f/h ≈ 4e-11·|f|`, i.e. 1e-6 of such a small
//! derivative (measured: 1.6e-6 on a drawn problem). The fourth-order formula truncates at
//! `h⁴|φ⁽⁵⁾|/30`, so its best step is `h ≈ ε^{1/5} ≈ 7e-4`; at [`STEP`] = 1e-3 truncation is
//! ≈ 3e-14·|φ⁽⁵⁾| and rounding ≈ 1.5·ε_f/h ≈ 3e-13·|f|. Measured on drawn problems: ≤ 2e-8 of
//! the directional derivative (beyond the rounding floor below) where the two-point formula
//! gave 1e-6, a factor of 50 below the 1e-6 of `tolerance::FD_DIRECTIONAL`. Linear inputs may
//! use a step of 1, where the formula is exact up to rounding (it is exact for polynomials of
//! degree ≤ 4).
//!
//! No step resolves a derivative far below the function's terms (e.g. 10⁻⁸ of them, where every
//! path through `A` is suppressed by a per-step decay of e⁻¹⁵): [`rounding_floor`] is that
//! resolution, `tolerance::FD_ROUNDING·ε·Σ|terms|/h`, and [`relative_error_beyond`] the relative
//! error beyond it.
//!
//! ## Kinks
//!
//! The dt processing `clamp(softplus?(dt + dt_bias), dt_min, dt_max)` has kinks (the clamp
//! limits; the switch of softplus to the identity at `u = 20` is even a jump of 2e-9). A central
//! difference across a kink measures neither one-sided slope, so [`Direction::keep_off_kinks`]
//! removes, per element, the motion of `u = dt + dt_bias` wherever `u ± 2h|v_u|` (the reach of
//! the stencil) would reach a kink: it sets `v_dt = −v_dt_bias` there. The direction stays a
//! valid direction, and [`Direction::dot`] with the gradients is still the exact directional
//! derivative.

use crate::rng::Rng;
use ndarray::{Array, Array1, Array3, Array4, ArrayD, Dimension, IxDyn};
use ssd_reference::{Gradients, Outputs, Problem, SsdError};

/// Step of [`central_difference`] along a scaled direction: ≈ ε^{1/5} (see the module docs).
pub const STEP: f64 = 1e-3;

/// `(f(−2h) − 8 f(−h) + 8 f(h) − f(2h)) / 12h`: the fourth-order central difference of `f` at 0.
pub fn central_difference(mut f: impl FnMut(f64) -> f64, h: f64) -> f64 {
    let near = f(h) - f(-h);
    let far = f(2.0 * h) - f(-2.0 * h);
    (8.0 * near - far) / (12.0 * h)
}

/// The float inputs of an SSD problem (the ones a gradient exists for).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Input {
    /// `x` (b, l, h, p)
    X,
    /// raw `dt` (b, l, h)
    Dt,
    /// `A` (h)
    A,
    /// `B` (b, l, g, n)
    B,
    /// `C` (b, l, g, n)
    C,
    /// `D` (h) or (h, p)
    D,
    /// `z` (b, l, h, p)
    Z,
    /// `dt_bias` (h)
    DtBias,
    /// `initial_states` (b, h, p, n)
    InitialStates,
}

impl Input {
    /// Every input.
    pub const ALL: [Input; 9] = [
        Input::X,
        Input::Dt,
        Input::A,
        Input::B,
        Input::C,
        Input::D,
        Input::Z,
        Input::DtBias,
        Input::InitialStates,
    ];

    /// The upstream argument name.
    pub fn name(self) -> &'static str {
        match self {
            Input::X => "x",
            Input::Dt => "dt",
            Input::A => "A",
            Input::B => "B",
            Input::C => "C",
            Input::D => "D",
            Input::Z => "z",
            Input::DtBias => "dt_bias",
            Input::InitialStates => "initial_states",
        }
    }
}

/// A tangent direction in the space of a problem's float inputs: the problem's shapes, optional
/// entries present exactly when the problem's are.
#[derive(Debug, Clone, PartialEq)]
pub struct Direction {
    /// (b, l, h, p)
    pub x: Array4<f64>,
    /// (b, l, h), of the raw `dt`
    pub dt: Array3<f64>,
    /// (h)
    pub a: Array1<f64>,
    /// (b, l, g, n)
    pub b: Array4<f64>,
    /// (b, l, g, n)
    pub c: Array4<f64>,
    /// (h) or (h, p)
    pub d: Option<ArrayD<f64>>,
    /// (b, l, h, p)
    pub z: Option<Array4<f64>>,
    /// (h)
    pub dt_bias: Option<Array1<f64>>,
    /// (b, h, p, n)
    pub initial_states: Option<Array4<f64>>,
}

/// Root mean square of `a`, or 1 if it is all 0 (so a direction never vanishes for scale).
fn scale<D: Dimension>(a: &Array<f64, D>) -> f64 {
    let n = a.len().max(1) as f64;
    let rms = (a.iter().map(|v| v * v).sum::<f64>() / n).sqrt();
    if rms > 0.0 {
        rms
    } else {
        1.0
    }
}

/// The scale of an `A_h` direction: `|A_h|`, or 1 where `A_h = 0` (see the module docs).
fn a_scale(a: f64) -> f64 {
    if a != 0.0 {
        a.abs()
    } else {
        1.0
    }
}

/// Per-entry scales of a `dt` direction, `Δ / (dΔ/du)` before the clamp (see the module docs),
/// and per-head scales of a `dt_bias` direction, their RMS over the head's tokens (1 if 0).
fn u_scales(p: &Problem<f64>) -> (Array3<f64>, Array1<f64>) {
    let (nb, l, nh) = p.dt.dim();
    let mut s = Array3::<f64>::zeros((nb, l, nh));
    let mut head = Array1::<f64>::zeros(nh);
    for h in 0..nh {
        let bias = p.dt_bias.as_ref().map_or(0.0, |v| v[h]);
        let mut sq = 0.0;
        for b in 0..nb {
            for t in 0..l {
                let u = p.dt[[b, t, h]] + bias;
                let (v, slope) = if p.options.dt_softplus && u <= 20.0 {
                    (u.exp().ln_1p(), 1.0 / (1.0 + (-u).exp()))
                } else {
                    (u, 1.0)
                };
                let si = if slope > 0.0 { v.abs() / slope } else { 0.0 };
                s[[b, t, h]] = si;
                sq += si * si;
            }
        }
        let rms = (sq / (nb * l).max(1) as f64).sqrt();
        head[h] = if rms > 0.0 && rms.is_finite() {
            rms
        } else {
            1.0
        };
    }
    (s, head)
}

fn randn_like<D: Dimension>(a: &Array<f64, D>, rng: &mut Rng) -> Array<f64, D> {
    let s = scale(a);
    a.map(|_| s * rng.normal())
}

impl Direction {
    /// The zero direction of `p`'s inputs.
    pub fn zeros(p: &Problem<f64>) -> Self {
        Direction {
            x: Array4::zeros(p.x.raw_dim()),
            dt: Array3::zeros(p.dt.raw_dim()),
            a: Array1::zeros(p.a.raw_dim()),
            b: Array4::zeros(p.b.raw_dim()),
            c: Array4::zeros(p.c.raw_dim()),
            d: p.d.as_ref().map(|v| ArrayD::zeros(v.raw_dim())),
            z: p.z.as_ref().map(|v| Array4::zeros(v.raw_dim())),
            dt_bias: p.dt_bias.as_ref().map(|v| Array1::zeros(v.raw_dim())),
            initial_states: p
                .initial_states
                .as_ref()
                .map(|v| Array4::zeros(v.raw_dim())),
        }
    }

    /// A random direction from `seed`: each entry N(0, 1) times the scale of its input (its RMS;
    /// `|A_h|` for `A`, `Δ / (dΔ/du)` for `dt` and its RMS per head for `dt_bias`; see the
    /// module docs).
    pub fn random(p: &Problem<f64>, seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let (dt_scale, bias_scale) = u_scales(p);
        Direction {
            x: randn_like(&p.x, &mut rng),
            dt: dt_scale.mapv(|sc| sc * rng.normal()),
            a: p.a.mapv(|v| a_scale(v) * rng.normal()),
            b: randn_like(&p.b, &mut rng),
            c: randn_like(&p.c, &mut rng),
            d: p.d.as_ref().map(|v| randn_like(v, &mut rng)),
            z: p.z.as_ref().map(|v| randn_like(v, &mut rng)),
            dt_bias: p
                .dt_bias
                .as_ref()
                .map(|_| bias_scale.mapv(|sc| sc * rng.normal())),
            initial_states: p.initial_states.as_ref().map(|v| randn_like(v, &mut rng)),
        }
    }

    /// The direction of one coordinate of one input, of the scale of that input (as in
    /// [`Direction::random`]).
    /// Errors if the input is absent from `p` or the index is outside its shape.
    pub fn coordinate(p: &Problem<f64>, input: Input, index: &[usize]) -> Result<Self, SsdError> {
        let mut dir = Direction::zeros(p);
        let absent = || SsdError::invalid("input", format!("{} is absent", input.name()));
        let set = |a: &mut ArrayD<f64>, s: f64| -> Result<(), SsdError> {
            let shape = a.shape().to_vec();
            match a.get_mut(IxDyn(index)) {
                Some(v) => {
                    *v = s;
                    Ok(())
                }
                None => Err(SsdError::invalid(
                    "index",
                    format!("{index:?} is outside {} of shape {shape:?}", input.name()),
                )),
            }
        };
        macro_rules! put {
            ($field:expr, $src:expr) => {{
                let mut a = std::mem::take(&mut $field).into_dyn();
                set(&mut a, scale(&$src))?;
                $field = a.into_dimensionality().expect("same rank");
            }};
        }
        match input {
            Input::X => put!(dir.x, p.x),
            Input::Dt => {
                let sc = u_scales(p)
                    .0
                    .into_dyn()
                    .get(IxDyn(index))
                    .copied()
                    .unwrap_or(1.0);
                let mut a = std::mem::take(&mut dir.dt).into_dyn();
                set(&mut a, sc)?;
                dir.dt = a.into_dimensionality().expect("same rank");
            }
            Input::A => {
                let s = index
                    .first()
                    .and_then(|&h| p.a.get(h))
                    .map_or(1.0, |&v| a_scale(v));
                let mut a = std::mem::take(&mut dir.a).into_dyn();
                set(&mut a, s)?;
                dir.a = a.into_dimensionality().expect("same rank");
            }
            Input::B => put!(dir.b, p.b),
            Input::C => put!(dir.c, p.c),
            Input::D => {
                let src = p.d.as_ref().ok_or_else(absent)?;
                let a = dir.d.as_mut().ok_or_else(absent)?;
                set(a, scale(src))?;
            }
            Input::Z => {
                let src = p.z.as_ref().ok_or_else(absent)?;
                put!(*dir.z.as_mut().ok_or_else(absent)?, src)
            }
            Input::DtBias => {
                p.dt_bias.as_ref().ok_or_else(absent)?;
                let s = index
                    .first()
                    .and_then(|&h| u_scales(p).1.get(h).copied())
                    .unwrap_or(1.0);
                let mut a = std::mem::take(dir.dt_bias.as_mut().ok_or_else(absent)?).into_dyn();
                set(&mut a, s)?;
                dir.dt_bias = Some(a.into_dimensionality().expect("same rank"));
            }
            Input::InitialStates => {
                let src = p.initial_states.as_ref().ok_or_else(absent)?;
                put!(*dir.initial_states.as_mut().ok_or_else(absent)?, src)
            }
        }
        Ok(dir)
    }

    /// The same direction with every input but `keep` set to 0.
    pub fn only(mut self, keep: &[Input]) -> Self {
        let k = |i: Input| keep.contains(&i);
        if !k(Input::X) {
            self.x.fill(0.0);
        }
        if !k(Input::Dt) {
            self.dt.fill(0.0);
        }
        if !k(Input::A) {
            self.a.fill(0.0);
        }
        if !k(Input::B) {
            self.b.fill(0.0);
        }
        if !k(Input::C) {
            self.c.fill(0.0);
        }
        if !k(Input::D) {
            self.d.iter_mut().for_each(|v| v.fill(0.0));
        }
        if !k(Input::Z) {
            self.z.iter_mut().for_each(|v| v.fill(0.0));
        }
        if !k(Input::DtBias) {
            self.dt_bias.iter_mut().for_each(|v| v.fill(0.0));
        }
        if !k(Input::InitialStates) {
            self.initial_states.iter_mut().for_each(|v| v.fill(0.0));
        }
        self
    }

    /// `p + t·self` (options and `seq_idx` unchanged).
    pub fn apply(&self, p: &Problem<f64>, t: f64) -> Problem<f64> {
        fn add<D: Dimension>(a: &Array<f64, D>, v: &Array<f64, D>, t: f64) -> Array<f64, D> {
            let mut out = a.clone();
            out.zip_mut_with(v, |o, &dv| *o += t * dv);
            out
        }
        fn add_opt<D: Dimension>(
            a: &Option<Array<f64, D>>,
            v: &Option<Array<f64, D>>,
            t: f64,
        ) -> Option<Array<f64, D>> {
            match (a, v) {
                (Some(a), Some(v)) => Some(add(a, v, t)),
                (a, _) => a.clone(),
            }
        }
        Problem {
            x: add(&p.x, &self.x, t),
            dt: add(&p.dt, &self.dt, t),
            a: add(&p.a, &self.a, t),
            b: add(&p.b, &self.b, t),
            c: add(&p.c, &self.c, t),
            d: add_opt(&p.d, &self.d, t),
            z: add_opt(&p.z, &self.z, t),
            dt_bias: add_opt(&p.dt_bias, &self.dt_bias, t),
            initial_states: add_opt(&p.initial_states, &self.initial_states, t),
            seq_idx: p.seq_idx.clone(),
            options: p.options,
        }
    }

    /// `⟨gradients, self⟩`: the directional derivative the gradients predict.
    pub fn dot(&self, g: &Gradients<f64>) -> f64 {
        fn d<D: Dimension>(a: &Array<f64, D>, b: &Array<f64, D>) -> f64 {
            a.iter().zip(b.iter()).map(|(x, y)| x * y).sum()
        }
        fn d_opt<D: Dimension>(a: &Option<Array<f64, D>>, b: &Option<Array<f64, D>>) -> f64 {
            match (a, b) {
                (Some(a), Some(b)) => d(a, b),
                _ => 0.0,
            }
        }
        d(&self.x, &g.dx)
            + d(&self.dt, &g.ddt)
            + d(&self.a, &g.da)
            + d(&self.b, &g.db)
            + d(&self.c, &g.dc)
            + d_opt(&self.d, &g.dd)
            + d_opt(&self.z, &g.dz)
            + d_opt(&self.dt_bias, &g.ddt_bias)
            + d_opt(&self.initial_states, &g.dinitial_states)
    }

    /// Removes the motion of `u = dt + dt_bias` at every element where a central difference of
    /// step `h` could cross a kink of the dt processing (see the module docs); returns how many
    /// elements it changed.
    pub fn keep_off_kinks(&mut self, p: &Problem<f64>, h: f64) -> usize {
        let (lo, hi) = p.options.dt_limit;
        let softplus = p.options.dt_softplus;
        // Which smooth piece of the dt processing `u` lies on.
        let piece = |u: f64| {
            let v = if softplus && u <= 20.0 {
                u.exp().ln_1p()
            } else {
                u
            };
            (softplus && u <= 20.0, v < lo, v > hi)
        };
        let (nb, l, nh) = p.dt.dim();
        let mut changed = 0;
        for b in 0..nb {
            for t in 0..l {
                for hh in 0..nh {
                    let bias = p.dt_bias.as_ref().map_or(0.0, |v| v[hh]);
                    let vb = self.dt_bias.as_ref().map_or(0.0, |v| v[hh]);
                    let u = p.dt[[b, t, hh]] + bias;
                    let du = 2.0 * h * (self.dt[[b, t, hh]] + vb).abs();
                    if du == 0.0 {
                        continue;
                    }
                    let here = piece(u);
                    if piece(u - du) != here || piece(u + du) != here {
                        self.dt[[b, t, hh]] = -vb;
                        changed += 1;
                    }
                }
            }
        }
        changed
    }
}

/// `Σ out·dout + Σ final_states·dfinal_states`: the loss whose gradient the backward computes.
pub fn ssd_loss(
    outputs: &Outputs<f64>,
    dout: &Array4<f64>,
    dfinal_states: Option<&Array4<f64>>,
) -> f64 {
    let mut s: f64 = outputs
        .out
        .iter()
        .zip(dout.iter())
        .map(|(a, b)| a * b)
        .sum();
    if let Some(df) = dfinal_states {
        s += outputs
            .final_states
            .iter()
            .zip(df.iter())
            .map(|(a, b)| a * b)
            .sum::<f64>();
    }
    s
}

/// The derivative of `f` at `p` along `dir` by [`central_difference`] with step `h` (use
/// [`STEP`] for scaled directions).
pub fn directional_derivative(
    p: &Problem<f64>,
    dir: &Direction,
    h: f64,
    mut f: impl FnMut(&Problem<f64>) -> f64,
) -> f64 {
    central_difference(|t| f(&dir.apply(p, t)), h)
}

/// `|got − want| / |want|` (0 when both are 0): the relative error of a directional derivative.
pub fn relative_error(got: f64, want: f64) -> f64 {
    let d = (got - want).abs();
    if d == 0.0 {
        0.0
    } else {
        d / want.abs()
    }
}

/// `Σ|out·dout| + Σ|final_states·dfinal_states|`: the magnitude of the terms of [`ssd_loss`],
/// which sets the rounding of its finite differences.
pub fn ssd_loss_magnitude(
    outputs: &Outputs<f64>,
    dout: &Array4<f64>,
    dfinal_states: Option<&Array4<f64>>,
) -> f64 {
    let mut s: f64 = outputs
        .out
        .iter()
        .zip(dout.iter())
        .map(|(a, b)| (a * b).abs())
        .sum();
    if let Some(df) = dfinal_states {
        s += outputs
            .final_states
            .iter()
            .zip(df.iter())
            .map(|(a, b)| (a * b).abs())
            .sum::<f64>();
    }
    s
}

/// The smallest directional derivative [`central_difference`] with step `h` resolves for a
/// function whose terms sum (in magnitude) to `magnitude`:
/// `tolerance::FD_ROUNDING · ε · magnitude / h`.
pub fn rounding_floor(magnitude: f64, h: f64) -> f64 {
    crate::tolerance::FD_ROUNDING * f64::EPSILON * magnitude / h
}

/// The relative error of a finite difference `fd` against the predicted `want` beyond the
/// difference's own rounding floor: `max(0, |fd − want| − floor) / |want|` (0 when within the
/// floor; compare with `tolerance::FD_DIRECTIONAL`).
pub fn relative_error_beyond(fd: f64, want: f64, floor: f64) -> f64 {
    let d = (fd - want).abs() - floor;
    if d <= 0.0 {
        0.0
    } else {
        d / want.abs()
    }
}
