//! The embedded default problem set of the matrix, and the inputs of every kernel built from a
//! problem by the float64 chunked pipeline.
//!
//! Every float of a case is rounded to an f32-representable value first, so an f32 backend and
//! the float64 reference read exactly the same numbers and the measured error is the backend's
//! own arithmetic. Per-kernel inputs (Δ, cumsums, states, `CB`, backward intermediates) are
//! rounded again after the float64 pipeline computes them (`rounded`); the float64 checks of the
//! reference itself use the unrounded, mutually consistent intermediates (`exact`).

use crate::backends::{BackwardInputs, DecodeCase, KernelInputs, NormCase, SwigluCase};
use crate::gen::{DKind, ProblemSpec};
use crate::rng::Rng;
use ndarray::{Array, Array1, Array2, Array3, Array4, ArrayD, Dimension, IxDyn};
use ssd_reference::{ChunkedForward, DecodeOptions, Problem, RmsNormOptions, SsdError};

/// One problem of the default set.
#[derive(Debug, Clone)]
pub struct CaseSpec {
    /// Short label in reports (`P1`, …).
    pub label: &'static str,
    /// The SSD problem.
    pub spec: ProblemSpec,
    /// With a `dfinal_states` seed.
    pub dfinal: bool,
    /// The decode step reads a state pool through `state_batch_indices` (with a padding row).
    pub state_pool: bool,
    /// `rmsnorm_gated` normalises before the gate.
    pub norm_before_gate: bool,
    /// `rmsnorm_gated` normalises groups of `p` features (else the whole row).
    pub norm_groups: bool,
}

impl CaseSpec {
    /// A one-line description: sizes and options.
    pub fn describe(&self) -> String {
        let s = &self.spec;
        let d = s.dims;
        let mut opts = Vec::new();
        match s.d {
            DKind::None => {}
            DKind::PerHead => opts.push("D(h)"),
            DKind::PerChannel => opts.push("D(h,p)"),
        }
        if s.z {
            opts.push("z");
        }
        if s.dt_bias {
            opts.push("dt_bias");
        }
        if s.options.dt_softplus {
            opts.push("softplus");
        }
        if s.options.dt_limit != (0.0, f64::INFINITY) {
            opts.push("dt_limit");
        }
        if s.initial_states {
            opts.push("initial_states");
        }
        if s.seq_idx {
            opts.push("seq_idx");
        }
        if self.dfinal {
            opts.push("dfinal_states");
        }
        if self.state_pool {
            opts.push("state_batch_indices");
        }
        format!(
            "b{} l{} h{} p{} g{} n{} Q{}  {}",
            d.batch,
            d.seqlen,
            d.nheads,
            d.headdim,
            d.ngroups,
            d.dstate,
            s.options.chunk_size,
            if opts.is_empty() {
                "no options".to_string()
            } else {
                opts.join(" ")
            }
        )
    }
}

/// The default problem set: ragged and dividing chunks, Q = 1 and Q > l, g = 1 and g > 1,
/// every option on in at least one problem, and one problem of whole chunks shaped like a
/// client's (p 64, n 64, every option but `seq_idx` on).
pub fn default_specs() -> Vec<CaseSpec> {
    let mut p3 = ProblemSpec::plain(1, 50, 2, 8, 1, 8, 64).seed(3);
    p3.d = DKind::PerHead;
    p3.dt_bias = true;
    p3.initial_states = true;
    p3.options.dt_softplus = true;
    let mut p4 = ProblemSpec::plain(3, 96, 6, 4, 3, 12, 32).seed(4);
    p4.z = true;
    p4.seq_idx = true;
    p4.options.dt_softplus = true;
    p4.options.dt_limit = (0.0, 0.1);
    let mut p5 = ProblemSpec::plain(1, 7, 1, 3, 1, 2, 1).seed(5);
    p5.d = DKind::PerChannel;
    p5.initial_states = true;
    p5.z = true;
    // A problem shaped the way clients draw them (whole chunks, p 64, n 64, several groups, every
    // option but `seq_idx` on, upstream's value ranges): the whole-tile fast forms of the GPU
    // kernels run only on such shapes (issue 20: the CUDA forward once returned NaN in `out` on
    // them). Kept to l 512, h 4, since the matrix's float64 checks cost about 0.6 µs per element
    // of b·l·h·p·n on one core; the client-sized problems themselves are in the tests
    // (`gen::client_regressions`, `strategies::client_spec`).
    let mut p6 = ProblemSpec::plain(1, 512, 4, 64, 2, 64, 128).seed(6);
    p6.d = DKind::PerHead;
    p6.z = true;
    p6.dt_bias = true;
    p6.initial_states = true;
    p6.options.dt_softplus = true;
    p6.options.dt_limit = (0.01, 0.1);
    vec![
        CaseSpec {
            label: "P1",
            spec: ProblemSpec::plain(2, 200, 4, 16, 2, 16, 64).seed(1),
            dfinal: false,
            state_pool: false,
            norm_before_gate: false,
            norm_groups: false,
        },
        CaseSpec {
            label: "P2",
            spec: ProblemSpec::plain(2, 130, 4, 8, 2, 16, 37)
                .all_options()
                .seed(2),
            dfinal: true,
            state_pool: true,
            norm_before_gate: false,
            norm_groups: true,
        },
        CaseSpec {
            label: "P3",
            spec: p3,
            dfinal: true,
            state_pool: false,
            norm_before_gate: true,
            norm_groups: false,
        },
        CaseSpec {
            label: "P4",
            spec: p4,
            dfinal: false,
            state_pool: true,
            norm_before_gate: true,
            norm_groups: true,
        },
        CaseSpec {
            label: "P5",
            spec: p5,
            dfinal: true,
            state_pool: false,
            norm_before_gate: false,
            norm_groups: false,
        },
        CaseSpec {
            label: "P6",
            spec: p6,
            dfinal: true,
            state_pool: false,
            norm_before_gate: false,
            norm_groups: true,
        },
    ]
}

/// `v` rounded to the nearest f32 (and back).
pub fn r32(v: f64) -> f64 {
    v as f32 as f64
}

fn round<D: Dimension>(a: &Array<f64, D>) -> Array<f64, D> {
    a.mapv(r32)
}

/// A built case: the problem, its seeds and the inputs of every kernel.
#[derive(Debug, Clone)]
pub struct Case {
    /// `P1`, …
    pub label: String,
    /// Sizes and options.
    pub description: String,
    /// The problem (f32-representable values).
    pub problem: Problem<f64>,
    /// Seed of the backward.
    pub dout: Array4<f64>,
    /// Optional seed on the final states.
    pub dfinal_states: Option<Array4<f64>>,
    /// Kernel inputs from the float64 pipeline, unrounded (consistent with each other).
    pub exact: KernelInputs,
    /// The same inputs rounded to f32-representable values (what backends are compared on).
    pub rounded: KernelInputs,
}

/// Builds a case from its spec.
pub fn build_case(cs: &CaseSpec) -> Result<Case, SsdError> {
    let problem = cs.spec.build().map(r32);
    let dims = problem.dims();
    let mut rng = Rng::new(cs.spec.seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ 0xD0);
    let (nb, l, nh, np, nn) = (
        dims.batch,
        dims.seqlen,
        dims.nheads,
        dims.headdim,
        dims.dstate,
    );
    let dout = Array4::from_shape_simple_fn((nb, l, nh, np), || r32(rng.normal()));
    let dfinal_states = cs
        .dfinal
        .then(|| Array4::from_shape_simple_fn((nb, nh, np, nn), || r32(rng.normal())));
    let decode = decode_case(&problem, cs.state_pool, &mut rng);
    let norm = norm_case(&problem, cs, &mut rng);
    let sw_shape = IxDyn(&[nb, l.min(16), nh, np]);
    let swiglu = SwigluCase {
        x: ArrayD::from_shape_simple_fn(sw_shape.clone(), || r32(2.0 * rng.normal())),
        y: ArrayD::from_shape_simple_fn(sw_shape.clone(), || r32(rng.normal())),
        dout: ArrayD::from_shape_simple_fn(sw_shape, || r32(rng.normal())),
    };
    let exact = kernel_inputs(
        &problem,
        &dout,
        dfinal_states.as_ref(),
        decode,
        norm,
        swiglu,
    )?;
    let rounded = round_inputs(&exact);
    Ok(Case {
        label: cs.label.to_string(),
        description: cs.describe(),
        problem,
        dout,
        dfinal_states,
        exact,
        rounded,
    })
}

fn decode_case(p: &Problem<f64>, pool: bool, rng: &mut Rng) -> DecodeCase {
    let d = p.dims();
    let (nb, nh, np, ng, nn) = (d.batch, d.nheads, d.headdim, d.ngroups, d.dstate);
    let npool = if pool { nb + 2 } else { nb };
    let state = Array4::from_shape_simple_fn((npool, nh, np, nn), || r32(0.5 * rng.normal()));
    let softplus = p.options.dt_softplus;
    let dt = Array2::from_shape_simple_fn((nb, nh), || {
        let v = rng.normal() - 4.0;
        r32(if softplus { v } else { v.exp().ln_1p() })
    });
    let idx = pool.then(|| {
        // a reversed assignment into the pool; the last row (when b > 1) is padding
        Array1::from_shape_fn(nb, |b| {
            if nb > 1 && b == nb - 1 {
                -1
            } else {
                (npool - 1 - b) as i32
            }
        })
    });
    DecodeCase {
        state,
        x: Array3::from_shape_simple_fn((nb, nh, np), || r32(rng.normal())),
        dt,
        a: p.a.clone(),
        b: Array3::from_shape_simple_fn((nb, ng, nn), || r32(rng.normal() / 5.0)),
        c: Array3::from_shape_simple_fn((nb, ng, nn), || r32(rng.normal() / 5.0)),
        d: p.d.clone(),
        z: p.z
            .is_some()
            .then(|| Array3::from_shape_simple_fn((nb, nh, np), || r32(rng.normal()))),
        dt_bias: p.dt_bias.clone(),
        state_batch_indices: idx,
        options: DecodeOptions::from(&p.options),
    }
}

fn norm_case(p: &Problem<f64>, cs: &CaseSpec, rng: &mut Rng) -> NormCase {
    let d = p.dims();
    let rows = (d.batch * d.seqlen).min(64);
    let nd = d.nheads * d.headdim;
    NormCase {
        x: Array2::from_shape_simple_fn((rows, nd), || r32(rng.normal())),
        weight: Array1::from_shape_simple_fn(nd, || r32(1.0 + 0.2 * rng.normal())),
        z: p.z
            .is_some()
            .then(|| Array2::from_shape_simple_fn((rows, nd), || r32(rng.normal()))),
        options: RmsNormOptions {
            eps: 1e-5,
            group_size: cs.norm_groups.then_some(d.headdim),
            norm_before_gate: cs.norm_before_gate,
        },
        dout: Array2::from_shape_simple_fn((rows, nd), || r32(rng.normal())),
    }
}

/// Runs the float64 chunked forward (and, once it exists, the float64 backward kernels) to get
/// the inputs of every kernel.
pub fn kernel_inputs(
    problem: &Problem<f64>,
    dout: &Array4<f64>,
    dfinal_states: Option<&Array4<f64>>,
    decode: DecodeCase,
    norm: NormCase,
    swiglu: SwigluCase,
) -> Result<KernelInputs, SsdError> {
    let f = ChunkedForward::run(&problem.inputs(), &problem.options)?;
    let backward = crate::backends::reference_backward_inputs(problem, &f, dout, dfinal_states)?;
    Ok(KernelInputs {
        problem: problem.clone(),
        dt_bhcq: f.dt_bhcq,
        dacs_bhcq: f.dacs_bhcq,
        states_bchpn: f.states_bchpn,
        prev_states_bchpn: f.prev_states_bchpn,
        cb_bcgqq: f.cb_bcgqq,
        y: f.y,
        backward,
        decode,
        norm,
        swiglu,
    })
}

/// Every float of `i` rounded to f32-representable values.
pub fn round_inputs(i: &KernelInputs) -> KernelInputs {
    let ro = |a: &Option<Array4<f64>>| a.as_ref().map(round);
    KernelInputs {
        problem: i.problem.map(r32),
        dt_bhcq: round(&i.dt_bhcq),
        dacs_bhcq: round(&i.dacs_bhcq),
        states_bchpn: round(&i.states_bchpn),
        prev_states_bchpn: round(&i.prev_states_bchpn),
        cb_bcgqq: round(&i.cb_bcgqq),
        y: ro(&i.y),
        backward: i.backward.as_ref().map(|b| BackwardInputs {
            dout: round(&b.dout),
            dfinal_states: ro(&b.dfinal_states),
            dy: round(&b.dy),
            dprev_states: round(&b.dprev_states),
            dstates: round(&b.dstates),
            dcb: round(&b.dcb),
            dda: round(&b.dda),
            ddt_direct: round(&b.ddt_direct),
        }),
        decode: DecodeCase {
            state: round(&i.decode.state),
            x: round(&i.decode.x),
            dt: round(&i.decode.dt),
            a: round(&i.decode.a),
            b: round(&i.decode.b),
            c: round(&i.decode.c),
            d: i.decode.d.as_ref().map(round),
            z: i.decode.z.as_ref().map(round),
            dt_bias: i.decode.dt_bias.as_ref().map(round),
            state_batch_indices: i.decode.state_batch_indices.clone(),
            options: i.decode.options,
        },
        norm: NormCase {
            x: round(&i.norm.x),
            weight: round(&i.norm.weight),
            z: i.norm.z.as_ref().map(round),
            options: i.norm.options,
            dout: round(&i.norm.dout),
        },
        swiglu: SwigluCase {
            x: round(&i.swiglu.x),
            y: round(&i.swiglu.y),
            dout: round(&i.swiglu.dout),
        },
    }
}
