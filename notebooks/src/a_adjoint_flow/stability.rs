//! Section 4: why the stable kernel exists. Inside one chunk, with
//! `W[l, s] = ⟨dy_l, x_s⟩ Δ_s CB[l, s] exp(a_l − a_s)` (s ≤ l), the intra-chunk adjoint of the
//! per-step log decay is `ddA_intra_k = Σ_{l ≥ k > s} W[l, s]`: every pair whose decay segment
//! contains step k.
//!
//! - **Closed form** (upstream's old `_chunk_scan_bwd_ddAcs_unstable`): the gradient w.r.t. the
//!   cumsum value `a_j` is the row sum minus the column sum of W, both of which the forward and
//!   backward already have: `Σ_p out_x_j·dy_j − ddt_j·Δ_j`, with `out_x` the intra-chunk part of
//!   the output and `ddt_j = Σ_p x_j[p] Σ_{l ≥ j} CB[l, j] exp(a_l − a_j) dy_l[p]` its adjoint
//!   through `Δ_j`; a reverse cumsum within the chunk turns it into `ddA_intra_k`. (Upstream's
//!   `out_x` also holds the state term `exp(a_l) C_l·P_c`, so its closed form equals
//!   `intra + prev`; `tests/tests/reference_backward.rs` checks that one. The state term adds no
//!   cancellation, so here the intra part alone is compared with the intra kernel.) Row and column
//!   share the diagonal `W[j, j]` and cancel it: when the decay is strong the off-diagonal pairs
//!   are smaller than the diagonal by `exp(−Δ|A|)`, so the answer is a small difference of large,
//!   nearly equal numbers, and each rounding of size `ε |W[j, j]|` survives.
//! - **Stable** (`chunk_scan_bwd_ddacs_stable`): the same sum formed from products only (a running
//!   prefix over s of row l, added to every k ≤ l), so every rounding is relative to a term that
//!   belongs to the answer.
//!
//! Both are written here once, generic over the float type, and evaluated in f64 and f32 on the
//! same f32-representable problem; the float64 truth is the reference kernel on that problem.
//! A chunk is one whole sequence (Q = l), so the chunk length is the sequence length, and the
//! decay strength κ is the mean per-step decay `Δ|A|` (each head's `A_h = −κ / mean Δ`).

use super::problem::Backend;
use ndarray::{Array1, Array4, Ix4};
use ssd_reference::{
    bmm_chunk, chunk_cumsum, chunk_scan_bwd_ddacs_stable, process_dt, Problem, SsdError,
};
use ssd_verify::gen::{random_array, ProblemSpec};
use ssd_verify::tolerance::rel_l2;
use std::ops::{Add, AddAssign, Mul, Sub};

mod figure;
pub use figure::StabilityFigure;

/// Uniform time step of the first stability sweep (the mean of upstream's Δ distribution).
pub const UNIFORM_DT: f64 = 0.03;

/// The arithmetic both forms need, in f32 or f64.
pub trait Real:
    Copy + Add<Output = Self> + Sub<Output = Self> + Mul<Output = Self> + AddAssign + Into<f64>
{
    /// 0.
    const ZERO: Self;
    /// `v` rounded to this type.
    fn of(v: f64) -> Self;
    /// `e^self` in this type.
    fn exp(self) -> Self;
}

impl Real for f32 {
    const ZERO: f32 = 0.0;
    fn of(v: f64) -> f32 {
        v as f32
    }
    fn exp(self) -> f32 {
        f32::exp(self)
    }
}

impl Real for f64 {
    const ZERO: f64 = 0.0;
    fn of(v: f64) -> f64 {
        v
    }
    fn exp(self) -> f64 {
        f64::exp(self)
    }
}

/// One (batch row, head, chunk) of the intra-chunk term, in type T.
struct ChunkTerm<T> {
    len: usize,
    np: usize,
    /// Δ_j
    delta: Vec<T>,
    /// a_j = Σ_{k ≤ j} Δ_k A within the chunk (accumulated in T)
    a: Vec<T>,
    /// CB[i, j] = C_i · B_j, row-major len × len (accumulated in T)
    cb: Vec<T>,
    /// x_j[p], row-major len × p
    x: Vec<T>,
    /// dy_i[p], row-major len × p
    dy: Vec<T>,
}

impl<T: Real> ChunkTerm<T> {
    fn new(p: &Problem<T>, dy: &Array4<T>, b: usize, h: usize, start: usize, len: usize) -> Self {
        let (_, _, nh, np) = p.x.dim();
        let (_, _, ng, nn) = p.b.dim();
        let g = h / (nh / ng);
        let bias = p.dt_bias.as_ref().map_or(0.0, |v| v[h].into());
        let delta: Vec<T> = (0..len)
            .map(|j| {
                T::of(process_dt(
                    p.dt[[b, start + j, h]].into(),
                    bias,
                    p.options.dt_softplus,
                    p.options.dt_limit,
                ))
            })
            .collect();
        let mut a = Vec::with_capacity(len);
        let mut acc = T::ZERO;
        for d in &delta {
            acc += *d * p.a[h];
            a.push(acc);
        }
        let mut cb = vec![T::ZERO; len * len];
        for i in 0..len {
            for j in 0..=i {
                let mut s = T::ZERO;
                for n in 0..nn {
                    s += p.c[[b, start + i, g, n]] * p.b[[b, start + j, g, n]];
                }
                cb[i * len + j] = s;
            }
        }
        let rows = |t: &Array4<T>| {
            let mut v = Vec::with_capacity(len * np);
            for j in 0..len {
                for q in 0..np {
                    v.push(t[[b, start + j, h, q]]);
                }
            }
            v
        };
        ChunkTerm {
            len,
            np,
            delta,
            a,
            cb,
            x: rows(&p.x),
            dy: rows(dy),
        }
    }

    /// `CB[i, j] exp(a_i − a_j)`, i ≥ j.
    fn decayed(&self, i: usize, j: usize) -> T {
        self.cb[i * self.len + j] * (self.a[i] - self.a[j]).exp()
    }

    /// The closed form: reverse cumsum of `Σ_p out_x·dy − ddt·Δ`.
    fn closed_form(&self) -> Vec<T> {
        let (len, np) = (self.len, self.np);
        let mut diff = vec![T::ZERO; len];
        let mut out_x = vec![T::ZERO; np];
        for i in 0..len {
            out_x.fill(T::ZERO);
            for j in 0..=i {
                let w = self.decayed(i, j) * self.delta[j];
                for q in 0..np {
                    out_x[q] += w * self.x[j * np + q];
                }
            }
            let mut row = T::ZERO;
            for q in 0..np {
                row += out_x[q] * self.dy[i * np + q];
            }
            diff[i] = row;
        }
        let mut back = vec![T::ZERO; np];
        for j in 0..len {
            back.fill(T::ZERO);
            for i in j..len {
                let w = self.decayed(i, j);
                for q in 0..np {
                    back[q] += w * self.dy[i * np + q];
                }
            }
            let mut ddt = T::ZERO;
            for q in 0..np {
                ddt += self.x[j * np + q] * back[q];
            }
            diff[j] = diff[j] - ddt * self.delta[j];
        }
        let mut dda = vec![T::ZERO; len];
        let mut acc = T::ZERO;
        for k in (0..len).rev() {
            acc += diff[k];
            dda[k] = acc;
        }
        dda
    }

    /// The stable form: products only, as `chunk_scan_bwd_ddacs_stable`.
    fn stable(&self) -> Vec<T> {
        let np = self.np;
        let mut dda = vec![T::ZERO; self.len];
        for i in 1..self.len {
            let mut prefix = T::ZERO;
            for k in 1..=i {
                let j = k - 1;
                let mut dot = T::ZERO;
                for q in 0..np {
                    dot += self.dy[i * np + q] * self.x[j * np + q];
                }
                prefix += dot * self.delta[j] * self.decayed(i, j);
                dda[k] += prefix;
            }
        }
        dda
    }
}

/// Which form of the intra-chunk adjoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntraForm {
    /// Reverse cumsum of `Σ_p out_x·dy − ddt·Δ`.
    ClosedForm,
    /// Sums of products (`chunk_scan_bwd_ddacs_stable`).
    Stable,
}

/// `ddA_intra` (b, h, c, Q) of `p` with `dy = dout` (no `z`, no `D` needed: the intra term does
/// not see them), computed in type T by `form`; returned in f64.
pub fn intra_adjoint<T: Real>(p: &Problem<T>, dout: &Array4<T>, form: IntraForm) -> Array4<f64> {
    let (nb, l, nh, _) = p.x.dim();
    let q = p.options.chunk_size;
    let nc = l.div_ceil(q);
    let mut out = Array4::<f64>::zeros((nb, nh, nc, q));
    for b in 0..nb {
        for h in 0..nh {
            for c in 0..nc {
                let (start, len) = ssd_reference::chunking::chunk_bounds(c, q, l);
                let term = ChunkTerm::new(p, dout, b, h, start, len);
                let v = match form {
                    IntraForm::ClosedForm => term.closed_form(),
                    IntraForm::Stable => term.stable(),
                };
                for (i, x) in v.into_iter().enumerate() {
                    out[[b, h, c, i]] = x.into();
                }
            }
        }
    }
    out
}

/// The float64 truth: the reference `chunk_scan_bwd_ddacs_stable` (with the reference's
/// `chunk_cumsum` and `bmm_chunk`), `dy = dout`.
pub fn intra_truth(p: &Problem<f64>, dout: &Array4<f64>) -> Result<Array4<f64>, SsdError> {
    let i = p.inputs();
    let (dt, dacs) = chunk_cumsum(i.dt, i.a, i.dt_bias, &p.options)?;
    let cb = bmm_chunk(i.c, i.b, p.options.chunk_size, i.seq_idx)?;
    chunk_scan_bwd_ddacs_stable(i.x, dt.view(), dacs.view(), dout.view(), cb.view())
}

/// Sizes of the sweep.
#[derive(Debug, Clone, PartialEq)]
pub struct StabilitySpec {
    /// Sequence (= chunk) lengths.
    pub seqlens: Vec<usize>,
    /// Mean per-step decays κ = mean Δ|A|.
    pub kappas: Vec<f64>,
    /// h.
    pub nheads: usize,
    /// p.
    pub headdim: usize,
    /// n.
    pub dstate: usize,
    /// `Some(Δ)`: every time step equal to Δ, so every step decays by the same `e^{−κ}`;
    /// `None`: Δ drawn as upstream (`softplus(N(0, 1) − 4)`, many steps far below the mean).
    pub uniform_dt: Option<f64>,
    /// Seed.
    pub seed: u64,
}

impl StabilitySpec {
    /// The rendered size: l = 64, 256, 1024; κ from 10⁻³ to 30.
    pub fn full() -> Self {
        StabilitySpec {
            seqlens: vec![64, 256, 1024],
            kappas: vec![
                1e-3, 1e-2, 0.1, 0.3, 1.0, 2.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0, 32.0,
            ],
            nheads: 2,
            headdim: 16,
            dstate: 16,
            uniform_dt: None,
            seed: 4,
        }
    }

    /// A size for tests.
    pub fn small() -> Self {
        StabilitySpec {
            seqlens: vec![48],
            kappas: vec![0.01, 10.0],
            nheads: 2,
            headdim: 4,
            dstate: 4,
            uniform_dt: None,
            seed: 4,
        }
    }

    /// The problem at (l, κ), already rounded to f32 (so f32 and f64 see the same inputs), and
    /// its `dout`.
    pub fn problem(&self, l: usize, kappa: f64) -> (Problem<f32>, Array4<f32>) {
        let mut p = ProblemSpec::plain(1, l, self.nheads, self.headdim, 1, self.dstate, l)
            .seed(self.seed)
            .build();
        if let Some(dt) = self.uniform_dt {
            p.dt.fill(dt);
        }
        p.a = Array1::from_shape_fn(self.nheads, |h| {
            let mean = p.dt.slice(ndarray::s![0, .., h]).mean().unwrap_or(1.0);
            -kappa / mean
        });
        let dout = random_array(&[1, l, self.nheads, self.headdim], self.seed ^ 0xD0)
            .into_dimensionality::<Ix4>()
            .expect("rank 4");
        (p.to_f32(), dout.mapv(|v| v as f32))
    }
}

/// rel_l2 of each way of computing `ddA_intra` against the float64 truth, at one (l, κ).
#[derive(Debug, Clone, PartialEq)]
pub struct StabilityRow {
    /// l (= Q).
    pub seqlen: usize,
    /// κ = mean Δ|A|.
    pub kappa: f64,
    /// Closed form in f64.
    pub closed_f64: f64,
    /// Closed form in f32.
    pub closed_f32: f64,
    /// Stable form in f64 (this module's loop; checks it against the reference kernel).
    pub stable_f64: f64,
    /// Stable form in f32.
    pub stable_f32: f64,
    /// Each backend's `AAdjoint::intra` from its combined backward, by name (or the error text).
    pub backends: Vec<(String, Result<f64, String>)>,
    /// `‖ddA_intra‖₂ / Σ|W|-scale`: the truth's RMS over the RMS of the diagonal terms
    /// `W[j, j]` that the closed form cancels.
    pub signal_ratio: f64,
}

/// The sweep over (l, κ).
pub fn stability_sweep(
    spec: &StabilitySpec,
    backends: &[Backend<'_>],
) -> Result<Vec<StabilityRow>, SsdError> {
    let mut rows = Vec::new();
    for &l in &spec.seqlens {
        for &kappa in &spec.kappas {
            let (p32, dout32) = spec.problem(l, kappa);
            let p64 = p32.map(f64::from);
            let dout64 = dout32.mapv(f64::from);
            let truth = intra_truth(&p64, &dout64)?;
            let err = |got: Array4<f64>| rel_l2(&got, &truth);
            let backends = backends
                .iter()
                .map(|be| {
                    let r = (be.backward)(&p32, dout32.view(), None)
                        .map(|(_, adj)| rel_l2(&adj.intra, &truth))
                        .map_err(|e| e.to_string());
                    (be.name.clone(), r)
                })
                .collect();
            rows.push(StabilityRow {
                seqlen: l,
                kappa,
                closed_f64: err(intra_adjoint(&p64, &dout64, IntraForm::ClosedForm)),
                closed_f32: err(intra_adjoint(&p32, &dout32, IntraForm::ClosedForm)),
                stable_f64: err(intra_adjoint(&p64, &dout64, IntraForm::Stable)),
                stable_f32: err(intra_adjoint(&p32, &dout32, IntraForm::Stable)),
                backends,
                signal_ratio: signal_ratio(&p64, &dout64, &truth),
            });
        }
    }
    Ok(rows)
}

/// RMS of the truth over the RMS of the diagonal terms `W[j, j] = ⟨dy_j, x_j⟩ Δ_j CB[j, j]`.
fn signal_ratio(p: &Problem<f64>, dout: &Array4<f64>, truth: &Array4<f64>) -> f64 {
    let (nb, l, nh, np) = p.x.dim();
    let (_, _, ng, nn) = p.b.dim();
    let mut diag = 0.0;
    for b in 0..nb {
        for t in 0..l {
            for h in 0..nh {
                let g = h / (nh / ng);
                let dot: f64 = (0..np)
                    .map(|q| dout[[b, t, h, q]] * p.x[[b, t, h, q]])
                    .sum();
                let cb: f64 = (0..nn).map(|n| p.c[[b, t, g, n]] * p.b[[b, t, g, n]]).sum();
                let bias = p.dt_bias.as_ref().map_or(0.0, |v| v[h]);
                let o = &p.options;
                let delta = process_dt(p.dt[[b, t, h]], bias, o.dt_softplus, o.dt_limit);
                diag += (dot * delta * cb).powi(2);
            }
        }
    }
    let rms_truth = (truth.iter().map(|v| v * v).sum::<f64>() / (nb * l * nh) as f64).sqrt();
    rms_truth / (diag / (nb * l * nh) as f64).sqrt()
}

/// The κ of the first row whose closed-form f32 error exceeds `threshold`, per l.
pub fn breakdown(rows: &[StabilityRow], threshold: f64) -> Vec<(usize, Option<f64>)> {
    let mut ls: Vec<usize> = rows.iter().map(|r| r.seqlen).collect();
    ls.dedup();
    ls.into_iter()
        .map(|l| {
            let k = rows
                .iter()
                .filter(|r| r.seqlen == l && r.closed_f32 > threshold)
                .map(|r| r.kappa)
                .next();
            (l, k)
        })
        .collect()
}
