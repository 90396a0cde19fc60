//! The problem every section of the notebook differentiates: one batch row, `h` heads whose
//! decay rates `A_h` run geometrically from −1 to −16 (the range upstream draws from), values
//! otherwise as upstream draws them (`ssd_verify::gen`), an initial state of the size the
//! sequence's own state reaches, and the loss
//! `L = Σ out·dout + Σ final_states·dfinal_states` with random seeds `dout`, `dfinal_states`, so
//! that all four producers of the A adjoint carry something.

use ndarray::{Array1, Array3, Array4, ArrayView4, Ix4};
use ssd_reference::{AAdjoint, Gradients, Problem, SsdError};
use ssd_verify::gen::{random_array, ProblemSpec};

/// Sizes and seed of the notebook's problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowSpec {
    /// l: sequence length.
    pub seqlen: usize,
    /// h: heads (one group).
    pub nheads: usize,
    /// p: head dimension.
    pub headdim: usize,
    /// n: state dimension.
    pub dstate: usize,
    /// Q: chunk size of the chunked backward.
    pub chunk_size: usize,
    /// Seed of every value.
    pub seed: u64,
}

impl FlowSpec {
    /// The size the notebook is rendered at: l = 1024, Q = 64 (16 chunks), 4 heads.
    pub const FULL: FlowSpec = FlowSpec {
        seqlen: 1024,
        nheads: 4,
        headdim: 16,
        dstate: 16,
        chunk_size: 64,
        seed: 8,
    };

    /// A size for tests: l = 100 with Q = 16 (a ragged last chunk of 4), 3 heads.
    pub const SMALL: FlowSpec = FlowSpec {
        seqlen: 100,
        nheads: 3,
        headdim: 4,
        dstate: 4,
        chunk_size: 16,
        seed: 8,
    };

    /// Draws the problem and the seeds of the loss.
    pub fn build(&self) -> FlowProblem {
        let mut spec = ProblemSpec::plain(
            1,
            self.seqlen,
            self.nheads,
            self.headdim,
            1,
            self.dstate,
            self.chunk_size,
        )
        .seed(self.seed);
        spec.initial_states = true;
        let mut problem = spec.build();
        problem.a = decay_rates(self.nheads);
        // The generator's initial state (N(0, 0.5²)) is ~10× the state the sequence itself
        // builds up (≈ √(memory) · Δ · |x| · |B| ≈ 0.03); at that size it would dominate the
        // first chunks. Scale it to the steady state's size.
        if let Some(s) = problem.initial_states.as_mut() {
            s.mapv_inplace(|v| 0.06 * v);
        }
        let dout = random_array(
            &[1, self.seqlen, self.nheads, self.headdim],
            self.seed ^ 0xD0,
        )
        .into_dimensionality::<Ix4>()
        .expect("rank 4");
        let dfinal_states = random_array(
            &[1, self.nheads, self.headdim, self.dstate],
            self.seed ^ 0xF1,
        )
        .into_dimensionality::<Ix4>()
        .expect("rank 4");
        FlowProblem {
            problem,
            dout,
            dfinal_states,
        }
    }
}

/// `A_h = −16^{h/(H−1)}`: from −1 (long memory) to −16 (short), geometrically.
pub fn decay_rates(nheads: usize) -> Array1<f64> {
    Array1::from_shape_fn(nheads, |h| {
        let t = if nheads > 1 {
            h as f64 / (nheads - 1) as f64
        } else {
            0.0
        };
        -(16f64.powf(t))
    })
}

/// A problem with the seeds of its loss.
#[derive(Debug, Clone)]
pub struct FlowProblem {
    /// The inputs (float64), one batch row.
    pub problem: Problem<f64>,
    /// Seed of the outputs, (b, l, h, p).
    pub dout: Array4<f64>,
    /// Seed of the final states, (b, h, p, n).
    pub dfinal_states: Array4<f64>,
}

impl FlowProblem {
    /// The same problem with chunk size `q`.
    pub fn with_chunk_size(&self, q: usize) -> FlowProblem {
        let mut p = self.clone();
        p.problem.options.chunk_size = q;
        p
    }

    /// `L = Σ out·dout + Σ final_states·dfinal_states` by the literal recurrence (float64).
    pub fn loss(&self, problem: &Problem<f64>) -> Result<f64, SsdError> {
        let o = ssd_reference::ssd_recurrent(&problem.inputs(), &problem.options)?;
        let dot =
            |a: &Array4<f64>, b: &Array4<f64>| a.iter().zip(b).map(|(u, v)| u * v).sum::<f64>();
        Ok(dot(&o.out, &self.dout) + dot(&o.final_states, &self.dfinal_states))
    }

    /// The chunked float64 backward of the loss: the gradients and the four contributions to
    /// the A adjoint.
    pub fn chunked_backward(&self) -> Result<(Gradients<f64>, AAdjoint<f64>), SsdError> {
        let p = &self.problem;
        ssd_reference::mamba_chunk_scan_combined_bwd(
            &p.inputs(),
            &p.options,
            self.dout.view(),
            Some(self.dfinal_states.view()),
        )
    }

    /// The backward of the loss through the literal recurrence (float64 BPTT): the gradients and
    /// the per-step A adjoint `ddA` (b, l, h).
    pub fn recurrent_backward(&self) -> Result<(Gradients<f64>, Array3<f64>), SsdError> {
        let p = &self.problem;
        ssd_reference::ssd_recurrent_bwd_with_dda(
            &p.inputs(),
            &p.options,
            self.dout.view(),
            Some(self.dfinal_states.view()),
        )
    }

    /// `Δ_t` of head `h` along the sequence (row 0): the processed time step.
    pub fn delta(&self, h: usize) -> Vec<f64> {
        let p = &self.problem;
        let bias = p.dt_bias.as_ref().map_or(0.0, |v| v[h]);
        (0..p.dt.dim().1)
            .map(|t| {
                ssd_reference::process_dt(
                    p.dt[[0, t, h]],
                    bias,
                    p.options.dt_softplus,
                    p.options.dt_limit,
                )
            })
            .collect()
    }
}

/// A backward that returns the f32 gradients and the four A-adjoint contributions (the CPU or
/// CUDA backend), called with the problem in f32, `dout` and `dfinal_states`.
pub type F32Backward<'a> = dyn Fn(
        &Problem<f32>,
        ArrayView4<'_, f32>,
        Option<ArrayView4<'_, f32>>,
    ) -> Result<(Gradients<f32>, ssd_reference::AAdjoint<f32>), SsdError>
    + 'a;

/// An f32 backend under its name.
pub struct Backend<'a> {
    /// Shown in figures and tables ("CPU f32", "CUDA f32").
    pub name: String,
    /// Its combined backward.
    pub backward: Box<F32Backward<'a>>,
}

impl std::fmt::Debug for Backend<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend").field("name", &self.name).finish()
    }
}

/// Row 0, head `h` of a (b, h, c, Q) tensor laid out along the sequence (length `l`; the padded
/// tail of a ragged last chunk dropped).
pub fn along_sequence<T: Copy + Into<f64>>(t_bhcq: &Array4<T>, h: usize, l: usize) -> Vec<f64> {
    let q = t_bhcq.dim().3;
    (0..l)
        .map(|t| t_bhcq[[0, h, t / q, t % q]].into())
        .collect()
}

/// Row 0, head `h` of each of the four contributions of `adj` along the sequence (length `l`),
/// in `KERNELS` order.
pub(super) fn parts_along<T: Copy + Into<f64>>(
    adj: &AAdjoint<T>,
    h: usize,
    l: usize,
) -> [Vec<f64>; 4] {
    [&adj.intra, &adj.next, &adj.prev, &adj.chunk].map(|t| along_sequence(t, h, l))
}

/// `Σ_t c_t·Δ_t`: a contribution along the sequence, `c`, summed into `dA_h`.
pub(super) fn times_delta(c: &[f64], delta: &[f64]) -> f64 {
    c.iter().zip(delta).map(|(c, d)| c * d).sum()
}
