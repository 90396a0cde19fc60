//! proptest strategies of whole SSD problems (DESIGN.md §4): b 1–3, l 1–300, h 1–8 with g | h,
//! p and n 1–32, Q 1–300 (Q > l and Q ∤ l included), every option on and off, `seq_idx` with
//! random cuts; and strategies of broken problems with the error each must produce.

use crate::gen::{DKind, ProblemSpec};
use crate::rng::Rng;
use ndarray::{Array1, Array2, Array3, Array4, ArrayD, IxDyn};
use proptest::prelude::*;
use ssd_reference::{Dims, Options, Problem, SsdError};

/// Upper bounds of a drawn problem (the DESIGN.md ranges by default).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// max b
    pub batch: usize,
    /// max l
    pub seqlen: usize,
    /// max h
    pub nheads: usize,
    /// max p
    pub headdim: usize,
    /// max n
    pub dstate: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            batch: 3,
            seqlen: 300,
            nheads: 8,
            headdim: 32,
            dstate: 32,
        }
    }
}

impl Limits {
    /// Smaller problems (b ≤ 2, l ≤ 64, h ≤ 4, p, n ≤ 8), for costly checks such as finite
    /// differences along many coordinates.
    pub fn small() -> Self {
        Limits {
            batch: 2,
            seqlen: 64,
            nheads: 4,
            headdim: 8,
            dstate: 8,
        }
    }
}

fn divisors(h: usize) -> Vec<usize> {
    (1..=h).filter(|g| h.is_multiple_of(*g)).collect()
}

/// Chunk size from a drawn kind: small, anywhere in 1–300, or larger than `l`.
fn chunk_size(kind: u8, raw: usize, l: usize) -> usize {
    match kind {
        0 => 1 + raw % 8,
        1 => 1 + raw % 300,
        2 => l + 1 + raw % 20,
        _ => 1 + raw % l.max(1),
    }
}

/// Valid problem specs within `limits`, every option on and off.
pub fn spec_within(limits: Limits) -> impl Strategy<Value = ProblemSpec> {
    (
        (
            1..=limits.batch,
            1..=limits.seqlen,
            1..=limits.nheads,
            any::<usize>(),
            1..=limits.headdim,
            1..=limits.dstate,
        ),
        (0u8..4, any::<usize>()),
        (0u8..3, any::<bool>(), any::<bool>(), any::<bool>()),
        (any::<bool>(), any::<bool>(), any::<bool>()),
        any::<u64>(),
    )
        .prop_map(
            |((nb, l, nh, gsel, np, nn), (qk, qraw), (dk, z, bias, sp), (lim, init, seq), seed)| {
                let divs = divisors(nh);
                let ng = divs[gsel % divs.len()];
                let mut rng = Rng::new(seed ^ 0xD1CE);
                let dt_limit = if lim {
                    (rng.range(0.0, 0.015), rng.range(0.03, 0.12))
                } else {
                    (0.0, f64::INFINITY)
                };
                ProblemSpec {
                    dims: Dims {
                        batch: nb,
                        seqlen: l,
                        nheads: nh,
                        headdim: np,
                        ngroups: ng,
                        dstate: nn,
                    },
                    options: Options {
                        chunk_size: chunk_size(qk, qraw, l),
                        dt_softplus: sp,
                        dt_limit,
                    },
                    d: [DKind::None, DKind::PerHead, DKind::PerChannel][dk as usize],
                    z,
                    dt_bias: bias,
                    initial_states: init,
                    seq_idx: seq,
                    seed,
                }
            },
        )
}

/// Valid problem specs with the DESIGN.md ranges.
pub fn spec() -> impl Strategy<Value = ProblemSpec> {
    spec_within(Limits::default())
}

/// Valid whole problems (float64) with the DESIGN.md ranges.
pub fn problem() -> impl Strategy<Value = Problem<f64>> {
    spec().prop_map(|s| s.build())
}

/// A way to break a valid problem, and so the error it must give.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Breakage {
    /// Wrong shape of the named tensor.
    Shape(&'static str),
    /// `B`/`C` with a group count that does not divide h.
    Groups,
    /// `chunk_size = 0`.
    ZeroChunk,
    /// A negative `seq_idx` entry.
    SeqIdxNegative,
    /// A decreasing `seq_idx` row.
    SeqIdxDecreasing,
    /// A positive `A` entry.
    PositiveA,
    /// NaN or ∞ in the named tensor.
    NonFinite(&'static str),
    /// `dt_min > dt_max`.
    DtLimit,
}

impl Breakage {
    /// Every breakage.
    pub const ALL: [Breakage; 22] = [
        Breakage::Shape("dt"),
        Breakage::Shape("A"),
        Breakage::Shape("B"),
        Breakage::Shape("C"),
        Breakage::Shape("D"),
        Breakage::Shape("z"),
        Breakage::Shape("dt_bias"),
        Breakage::Shape("initial_states"),
        Breakage::Shape("seq_idx"),
        Breakage::Groups,
        Breakage::ZeroChunk,
        Breakage::SeqIdxNegative,
        Breakage::SeqIdxDecreasing,
        Breakage::PositiveA,
        Breakage::NonFinite("x"),
        Breakage::NonFinite("dt"),
        Breakage::NonFinite("B"),
        Breakage::NonFinite("C"),
        Breakage::NonFinite("z"),
        Breakage::NonFinite("initial_states"),
        Breakage::NonFinite("dt_bias"),
        Breakage::DtLimit,
    ];

    /// Whether `err` is the error this breakage must produce.
    pub fn matches(self, err: &SsdError) -> bool {
        match (self, err) {
            (Breakage::Shape(t), SsdError::ShapeMismatch { tensor, .. }) => *tensor == t,
            (Breakage::Groups, SsdError::GroupsDoNotDivideHeads { .. }) => true,
            (Breakage::ZeroChunk, SsdError::ZeroChunkSize) => true,
            (Breakage::SeqIdxNegative, SsdError::SeqIdxNegative { .. }) => true,
            (Breakage::SeqIdxDecreasing, SsdError::SeqIdxDecreasing { .. }) => true,
            (Breakage::PositiveA, SsdError::PositiveA { .. }) => true,
            (Breakage::NonFinite(t), SsdError::NonFinite { tensor, .. }) => *tensor == t,
            (Breakage::DtLimit, SsdError::InvalidDtLimit { .. }) => true,
            _ => false,
        }
    }

    /// Applies the breakage to a valid problem (with l ≥ 2).
    pub fn apply(self, p: &Problem<f64>, seed: u64) -> Problem<f64> {
        let mut q = p.clone();
        let mut rng = Rng::new(seed);
        let dims = p.dims();
        let (nb, l, nh, np, ng, nn) = (
            dims.batch,
            dims.seqlen,
            dims.nheads,
            dims.headdim,
            dims.ngroups,
            dims.dstate,
        );
        let t = rng.int(0, l.saturating_sub(1));
        match self {
            Breakage::Shape("dt") => q.dt = Array3::zeros((nb, l, nh + 1)),
            Breakage::Shape("A") => q.a = Array1::from_elem(nh + 1, -1.0),
            Breakage::Shape("B") => q.b = Array4::zeros((nb, l + 1, ng, nn)),
            Breakage::Shape("C") => q.c = Array4::zeros((nb, l, ng, nn + 1)),
            Breakage::Shape("D") => q.d = Some(ArrayD::zeros(IxDyn(&[nh, np + 1]))),
            Breakage::Shape("z") => q.z = Some(Array4::zeros((nb, l, nh, np + 1))),
            Breakage::Shape("dt_bias") => q.dt_bias = Some(Array1::zeros(nh + 2)),
            Breakage::Shape("initial_states") => {
                q.initial_states = Some(Array4::zeros((nb, nh, np, nn + 1)))
            }
            Breakage::Shape("seq_idx") => q.seq_idx = Some(Array2::zeros((nb, l + 1))),
            Breakage::Shape(other) => panic!("no shape breakage for {other}"),
            Breakage::Groups => {
                q.b = Array4::zeros((nb, l, nh + 1, nn));
                q.c = Array4::zeros((nb, l, nh + 1, nn));
            }
            Breakage::ZeroChunk => q.options.chunk_size = 0,
            Breakage::SeqIdxNegative => {
                let mut s = Array2::<i32>::zeros((nb, l));
                s[[rng.int(0, nb - 1), 0]] = -1;
                // keep the row non-decreasing apart from the negative entry
                q.seq_idx = Some(s);
            }
            Breakage::SeqIdxDecreasing => {
                let mut s = Array2::<i32>::from_elem((nb, l), 3);
                let tt = t.max(1);
                s[[rng.int(0, nb - 1), tt]] = 2;
                q.seq_idx = Some(s);
            }
            Breakage::PositiveA => q.a[rng.int(0, nh - 1)] = rng.range(1e-6, 1.0),
            Breakage::NonFinite(name) => {
                let bad = [f64::NAN, f64::INFINITY, f64::NEG_INFINITY][rng.int(0, 2)];
                match name {
                    "x" => q.x[[0, t, 0, 0]] = bad,
                    "dt" => q.dt[[0, t, 0]] = bad,
                    "B" => q.b[[0, t, 0, 0]] = bad,
                    "C" => q.c[[0, t, 0, 0]] = bad,
                    "z" => {
                        let mut z = Array4::zeros((nb, l, nh, np));
                        z[[0, t, 0, 0]] = bad;
                        q.z = Some(z);
                    }
                    "initial_states" => {
                        let mut v = Array4::zeros((nb, nh, np, nn));
                        v[[0, 0, 0, 0]] = bad;
                        q.initial_states = Some(v);
                    }
                    "dt_bias" => {
                        let mut v = Array1::zeros(nh);
                        v[0] = bad;
                        q.dt_bias = Some(v);
                    }
                    other => panic!("no non-finite breakage for {other}"),
                }
            }
            Breakage::DtLimit => q.options.dt_limit = (0.2, 0.1),
        }
        q
    }
}

/// A broken problem and the breakage behind it.
pub fn broken_problem() -> impl Strategy<Value = (Problem<f64>, Breakage)> {
    let small = Limits {
        seqlen: 40,
        ..Limits::small()
    };
    (spec_within(small), 0..Breakage::ALL.len(), any::<u64>()).prop_map(|(mut spec, k, seed)| {
        spec.dims.seqlen = spec.dims.seqlen.max(2);
        let p = spec.build();
        let br = Breakage::ALL[k];
        (br.apply(&p, seed), br)
    })
}
