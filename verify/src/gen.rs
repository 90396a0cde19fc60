//! Seeded, deterministic problem generators with upstream-like values:
//! `x, z ~ N(0, 1)`, `dt = randn − 4` before softplus (its softplus when softplus is off, so Δ
//! has the same distribution), `A = −exp(U(0, ln 16))`, `B, C ~ N(0, 1)/5`, `D ~ N(0, 1)`,
//! `dt_bias ~ N(0, 0.5²)`, `initial_states ~ N(0, 0.5²)`, `seq_idx` with random cuts.

use crate::rng::Rng;
use ndarray::{Array, Array1, Array2, Array4, ArrayD, IxDyn};
use ssd_reference::{Dims, Options, Problem};

/// Which `D` a problem has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DKind {
    /// No skip connection.
    None,
    /// `D` of shape (h).
    PerHead,
    /// `D` of shape (h, p).
    PerChannel,
}

/// Everything that determines a generated problem.
#[derive(Debug, Clone, PartialEq)]
pub struct ProblemSpec {
    /// Sizes.
    pub dims: Dims,
    /// Chunk size, softplus, limits.
    pub options: Options,
    /// The skip term.
    pub d: DKind,
    /// With a `z` gate.
    pub z: bool,
    /// With `dt_bias`.
    pub dt_bias: bool,
    /// With `initial_states`.
    pub initial_states: bool,
    /// With `seq_idx` (random cuts per row).
    pub seq_idx: bool,
    /// Seed of the values.
    pub seed: u64,
}

impl ProblemSpec {
    /// A plain problem of the given sizes: no options on, chunk size `q`.
    pub fn plain(b: usize, l: usize, h: usize, p: usize, g: usize, n: usize, q: usize) -> Self {
        ProblemSpec {
            dims: Dims {
                batch: b,
                seqlen: l,
                nheads: h,
                headdim: p,
                ngroups: g,
                dstate: n,
            },
            options: Options::with_chunk_size(q),
            d: DKind::None,
            z: false,
            dt_bias: false,
            initial_states: false,
            seq_idx: false,
            seed: 0,
        }
    }

    /// The same sizes with every option on: `D` (h, p), `z`, `dt_bias`, softplus, `dt_limit`,
    /// initial states and `seq_idx`.
    pub fn all_options(mut self) -> Self {
        self.d = DKind::PerChannel;
        self.z = true;
        self.dt_bias = true;
        self.initial_states = true;
        self.seq_idx = true;
        self.options.dt_softplus = true;
        self.options.dt_limit = (0.002, 0.2);
        self
    }

    /// With a different seed.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Draws the problem.
    pub fn build(&self) -> Problem<f64> {
        let Dims {
            batch: nb,
            seqlen: l,
            nheads: nh,
            headdim: np,
            ngroups: ng,
            dstate: nn,
        } = self.dims;
        let mut rng = Rng::new(self.seed);
        let x = Array4::from_shape_simple_fn((nb, l, nh, np), || rng.normal());
        let softplus = self.options.dt_softplus;
        let dt = Array::from_shape_simple_fn((nb, l, nh), || {
            let v = rng.normal() - 4.0;
            if softplus {
                v
            } else {
                v.exp().ln_1p()
            }
        });
        let a = Array1::from_shape_simple_fn(nh, || -rng.range(0.0, 16f64.ln()).exp());
        let b = Array4::from_shape_simple_fn((nb, l, ng, nn), || rng.normal() / 5.0);
        let c = Array4::from_shape_simple_fn((nb, l, ng, nn), || rng.normal() / 5.0);
        let d = match self.d {
            DKind::None => None,
            DKind::PerHead => Some(ArrayD::from_shape_simple_fn(IxDyn(&[nh]), || rng.normal())),
            DKind::PerChannel => Some(ArrayD::from_shape_simple_fn(IxDyn(&[nh, np]), || {
                rng.normal()
            })),
        };
        let z = self
            .z
            .then(|| Array4::from_shape_simple_fn((nb, l, nh, np), || rng.normal()));
        let dt_bias = self
            .dt_bias
            .then(|| Array1::from_shape_simple_fn(nh, || 0.5 * rng.normal()));
        let initial_states = self
            .initial_states
            .then(|| Array4::from_shape_simple_fn((nb, nh, np, nn), || 0.5 * rng.normal()));
        let seq_idx = self.seq_idx.then(|| random_seq_idx(&mut rng, nb, l));
        Problem {
            x,
            dt,
            a,
            b,
            c,
            d,
            z,
            dt_bias,
            initial_states,
            seq_idx,
            options: self.options,
        }
    }
}

/// The problems a real client ran when our CUDA backend returned NaN (issue 20), each under a
/// short name, with fixed seeds (the client's own values are not known; ours are drawn from the
/// same upstream ranges as every generated problem).
///
/// They exist because the property tests of docs/design.md §4.8 draw small, ragged problems (l ≤
/// 300, p, n ≤ 32) and so never reached what mamba_ssm users run: whole chunks of Q = 64 or 256
/// over thousands of tokens, p = 64, n = 64 or 128, several groups, with `D` per head, `z`,
/// `dt_bias`, softplus, `dt_limit` and initial states all on at once. Both are kept as regression
/// cases on every backend; [`crate::strategies::client_spec`] draws more like them.
///
/// - `issue20-l2048-h16-g4-n128-q256`: b 1, l 2048, h 16, p 64, g 4, n 128, Q 256,
///   `dt_limit = (0.01, 0.1)`;
/// - `issue20-l16384-h4-g1-n64-q64`: b 1, l 16384, h 4, p 64, g 1, n 64, Q 64, no `dt_limit`
///   (the default (0, ∞)).
///
/// Both: `D` (h), `z`, `dt_bias`, softplus, initial states; no `seq_idx`.
pub fn client_regressions() -> Vec<(&'static str, ProblemSpec)> {
    let client = |(b, l, h, p, g, n, q): (usize, usize, usize, usize, usize, usize, usize),
                  dt_limit: (f64, f64),
                  seed: u64| {
        let mut s = ProblemSpec::plain(b, l, h, p, g, n, q).seed(seed);
        s.d = DKind::PerHead;
        s.z = true;
        s.dt_bias = true;
        s.initial_states = true;
        s.seq_idx = false;
        s.options.dt_softplus = true;
        s.options.dt_limit = dt_limit;
        s
    };
    vec![
        (
            "issue20-l2048-h16-g4-n128-q256",
            client((1, 2048, 16, 64, 4, 128, 256), (0.01, 0.1), 2001),
        ),
        (
            "issue20-l16384-h4-g1-n64-q64",
            client((1, 16384, 4, 64, 1, 64, 64), (0.0, f64::INFINITY), 2002),
        ),
    ]
}

/// `seq_idx` (b, l) with 0–3 random cuts per row; one row in eight starts at a non-zero id (so
/// the initial state does not apply to it) and ids may skip values.
pub fn random_seq_idx(rng: &mut Rng, nb: usize, l: usize) -> Array2<i32> {
    let mut s = Array2::<i32>::zeros((nb, l));
    for b in 0..nb {
        let mut id: i32 = if rng.int(0, 7) == 0 { 1 } else { 0 };
        let ncuts = if l > 1 { rng.int(0, 3) } else { 0 };
        let mut cuts: Vec<usize> = (0..ncuts).map(|_| rng.int(1, l - 1)).collect();
        cuts.sort_unstable();
        let mut next = 0;
        for t in 0..l {
            while next < cuts.len() && cuts[next] == t {
                id += rng.int(1, 2) as i32;
                next += 1;
            }
            s[[b, t]] = id;
        }
    }
    s
}

/// A random `dout`-like tensor of `shape` (N(0, 1)) from `seed`.
pub fn random_array(shape: &[usize], seed: u64) -> ArrayD<f64> {
    let mut rng = Rng::new(seed);
    ArrayD::from_shape_simple_fn(IxDyn(shape), || rng.normal())
}
