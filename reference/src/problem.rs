//! Problem types: dimensions, options, inputs (borrowed views), owned problems, outputs and
//! gradients. Layouts are `mamba_chunk_scan_combined`'s, so arrays saved from PyTorch load as
//! they are.
//!
//! | tensor | shape |
//! |---|---|
//! | `x`, `z`, `out` | (b, l, h, p) |
//! | `dt` | (b, l, h) |
//! | `A` | (h) |
//! | `B`, `C` | (b, l, g, n) |
//! | `D` | (h) or (h, p) |
//! | `dt_bias` | (h) |
//! | `initial_states`, `final_states` | (b, h, p, n) |
//! | `seq_idx` | (b, l) |

use ndarray::{
    Array1, Array2, Array3, Array4, ArrayD, ArrayView1, ArrayView2, ArrayView3, ArrayView4,
    ArrayViewD,
};

/// Sizes of one SSD problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Dims {
    /// b: batch rows.
    pub batch: usize,
    /// l: sequence length.
    pub seqlen: usize,
    /// h: heads.
    pub nheads: usize,
    /// p: head dimension.
    pub headdim: usize,
    /// g: groups of B and C (divides h).
    pub ngroups: usize,
    /// n: state dimension.
    pub dstate: usize,
}

impl Dims {
    /// Heads per group, `h / g`.
    pub fn heads_per_group(&self) -> usize {
        self.nheads / self.ngroups
    }
    /// The group head `hh` reads B and C from.
    pub fn group_of(&self, head: usize) -> usize {
        head / self.heads_per_group()
    }
    /// Number of chunks of size `q` covering the sequence, `ceil(l / q)`.
    pub fn nchunks(&self, q: usize) -> usize {
        self.seqlen.div_ceil(q)
    }
}

/// Options of the SSD op.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Options {
    /// Q: chunk length of the chunked algorithm (any value ≥ 1; need not divide l).
    pub chunk_size: usize,
    /// Apply softplus to `dt + dt_bias` (for values ≤ 20; identity above).
    pub dt_softplus: bool,
    /// `(dt_min, dt_max)`: the processed Δ is clamped to this interval.
    pub dt_limit: (f64, f64),
}

impl Default for Options {
    /// Q = 256, no softplus, `dt_limit` = (0, ∞): upstream's defaults.
    fn default() -> Self {
        Options {
            chunk_size: 256,
            dt_softplus: false,
            dt_limit: (0.0, f64::INFINITY),
        }
    }
}

impl Options {
    /// Options with the given chunk size and the other defaults.
    pub fn with_chunk_size(chunk_size: usize) -> Self {
        Options {
            chunk_size,
            ..Options::default()
        }
    }
}

/// Borrowed inputs of the SSD op, in upstream's layouts. Build one from a [`Problem`] with
/// [`Problem::inputs`], or directly from your own arrays.
#[derive(Debug, Clone)]
pub struct Inputs<'a, T> {
    /// (b, l, h, p)
    pub x: ArrayView4<'a, T>,
    /// (b, l, h), raw (before bias, softplus and clamp)
    pub dt: ArrayView3<'a, T>,
    /// (h), every entry ≤ 0
    pub a: ArrayView1<'a, T>,
    /// (b, l, g, n)
    pub b: ArrayView4<'a, T>,
    /// (b, l, g, n)
    pub c: ArrayView4<'a, T>,
    /// (h) or (h, p)
    pub d: Option<ArrayViewD<'a, T>>,
    /// (b, l, h, p)
    pub z: Option<ArrayView4<'a, T>>,
    /// (h)
    pub dt_bias: Option<ArrayView1<'a, T>>,
    /// (b, h, p, n)
    pub initial_states: Option<ArrayView4<'a, T>>,
    /// (b, l), non-negative and non-decreasing per row
    pub seq_idx: Option<ArrayView2<'a, i32>>,
}

/// An owned SSD problem: inputs plus options. Generators, `.npz` files and tests use this.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem<T = f64> {
    /// (b, l, h, p)
    pub x: Array4<T>,
    /// (b, l, h)
    pub dt: Array3<T>,
    /// (h)
    pub a: Array1<T>,
    /// (b, l, g, n)
    pub b: Array4<T>,
    /// (b, l, g, n)
    pub c: Array4<T>,
    /// (h) or (h, p)
    pub d: Option<ArrayD<T>>,
    /// (b, l, h, p)
    pub z: Option<Array4<T>>,
    /// (h)
    pub dt_bias: Option<Array1<T>>,
    /// (b, h, p, n)
    pub initial_states: Option<Array4<T>>,
    /// (b, l)
    pub seq_idx: Option<Array2<i32>>,
    /// Chunk size, softplus, dt limits.
    pub options: Options,
}

impl<T: Clone> Problem<T> {
    /// Borrow the problem as [`Inputs`].
    pub fn inputs(&self) -> Inputs<'_, T> {
        Inputs {
            x: self.x.view(),
            dt: self.dt.view(),
            a: self.a.view(),
            b: self.b.view(),
            c: self.c.view(),
            d: self.d.as_ref().map(|d| d.view()),
            z: self.z.as_ref().map(|z| z.view()),
            dt_bias: self.dt_bias.as_ref().map(|v| v.view()),
            initial_states: self.initial_states.as_ref().map(|v| v.view()),
            seq_idx: self.seq_idx.as_ref().map(|v| v.view()),
        }
    }

    /// The same problem with every float converted by `f` (e.g. `|v| v as f32`).
    pub fn map<U: Clone>(&self, f: impl Fn(T) -> U + Copy) -> Problem<U> {
        Problem {
            x: self.x.mapv(f),
            dt: self.dt.mapv(f),
            a: self.a.mapv(f),
            b: self.b.mapv(f),
            c: self.c.mapv(f),
            d: self.d.as_ref().map(|v| v.mapv(f)),
            z: self.z.as_ref().map(|v| v.mapv(f)),
            dt_bias: self.dt_bias.as_ref().map(|v| v.mapv(f)),
            initial_states: self.initial_states.as_ref().map(|v| v.mapv(f)),
            seq_idx: self.seq_idx.clone(),
            options: self.options,
        }
    }

    /// Dimensions read off the arrays (not validated; see [`crate::validate()`]).
    pub fn dims(&self) -> Dims {
        let (batch, seqlen, nheads, headdim) = self.x.dim();
        let (_, _, ngroups, dstate) = self.b.dim();
        Dims {
            batch,
            seqlen,
            nheads,
            headdim,
            ngroups,
            dstate,
        }
    }
}

impl Problem<f64> {
    /// The problem in f32, as the CPU and CUDA backends take it.
    pub fn to_f32(&self) -> Problem<f32> {
        self.map(|v| v as f32)
    }
}

/// Results of the forward op.
#[derive(Debug, Clone, PartialEq)]
pub struct Outputs<T> {
    /// (b, l, h, p)
    pub out: Array4<T>,
    /// (b, h, p, n): the state after the last token of every row.
    pub final_states: Array4<T>,
}

/// Gradients of the SSD op with respect to every input, given `dout` (and optionally
/// `dfinal_states`). Optional entries are present exactly when the input is.
#[derive(Debug, Clone, PartialEq)]
pub struct Gradients<T> {
    /// (b, l, h, p)
    pub dx: Array4<T>,
    /// (b, l, h): w.r.t. the raw `dt`
    pub ddt: Array3<T>,
    /// (h)
    pub da: Array1<T>,
    /// (b, l, g, n)
    pub db: Array4<T>,
    /// (b, l, g, n)
    pub dc: Array4<T>,
    /// (h) or (h, p), the shape of `D`
    pub dd: Option<ArrayD<T>>,
    /// (b, l, h, p)
    pub dz: Option<Array4<T>>,
    /// (h)
    pub ddt_bias: Option<Array1<T>>,
    /// (b, h, p, n)
    pub dinitial_states: Option<Array4<T>>,
}

/// The four producers of the adjoint of the per-step log-decay `Δ_k A_h`, each of shape
/// (b, h, c, Q); entries at padded positions of a ragged last chunk are 0.
///
/// `ddA = intra + next + prev + chunk`, `dA_h = Σ ddA · Δ`.
#[derive(Debug, Clone, PartialEq)]
pub struct AAdjoint<T> {
    /// From `chunk_scan_bwd_ddacs_stable`: paths inside one chunk (the `CB` term).
    pub intra: Array4<T>,
    /// From `chunk_state_bwd_db`: through the chunk's own state `S_c`.
    pub next: Array4<T>,
    /// From `chunk_scan_bwd_dc`: through the state entering the chunk, `exp(a_l) C_l · P_c`.
    pub prev: Array4<T>,
    /// From `state_passing_bwd`: through the inter-chunk decay `exp(a_last)`.
    pub chunk: Array4<T>,
}

/// Processed time step: `u = dt + bias`; softplus (for `u ≤ 20`) if asked; clamp to `limit`.
pub fn process_dt(dt: f64, bias: f64, softplus: bool, limit: (f64, f64)) -> f64 {
    let mut u = dt + bias;
    if softplus && u <= 20.0 {
        u = u.exp().ln_1p();
    }
    u.clamp(limit.0, limit.1)
}

/// Derivative of [`process_dt`] with respect to `dt` (and to `bias`): 0 where clamped,
/// `σ(u)` through the softplus.
pub fn process_dt_grad(dt: f64, bias: f64, softplus: bool, limit: (f64, f64)) -> f64 {
    let u = dt + bias;
    let (v, dv) = if softplus && u <= 20.0 {
        (u.exp().ln_1p(), 1.0 / (1.0 + (-u).exp()))
    } else {
        (u, 1.0)
    };
    if v < limit.0 || v > limit.1 {
        0.0
    } else {
        dv
    }
}

/// `silu(v) = v σ(v)`.
pub fn silu(v: f64) -> f64 {
    v / (1.0 + (-v).exp())
}

/// `σ(v) = 1 / (1 + e^{-v})`.
pub fn sigmoid(v: f64) -> f64 {
    1.0 / (1.0 + (-v).exp())
}
