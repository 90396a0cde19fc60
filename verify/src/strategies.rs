//! proptest strategies of whole SSD problems, of three kinds:
//!
//! - [`problem`] / [`spec_within`] (docs/design.md §4.8): small ragged problems, b 1–3, l 1–300,
//!   h 1–8 with g | h, p and n 1–32, Q 1–300 (Q > l and Q ∤ l included), every option on and
//!   off, `seq_idx` with random cuts: every edge of the chunking;
//! - [`client_problem`] / [`client_spec`]: problems the way real clients (mamba_ssm users) draw
//!   them: whole chunks (Q ∈ {64, 128, 256}, l = k·Q from 1024 to 4096), p = 64, n ∈ {64, 128},
//!   several groups, every option on together most of the time, `seq_idx` mostly off (issue 20:
//!   the small ragged problems never reached the whole-chunk fast paths at realistic sizes);
//! - [`broken_problem`]: broken problems with the error each must produce.
//!
//! Values are always upstream's ranges ([`crate::gen`]).

use crate::gen::{DKind, ProblemSpec};
use crate::rng::Rng;
use ndarray::{Array1, Array2, Array3, Array4, ArrayD, IxDyn};
use proptest::prelude::*;
use ssd_reference::{Dims, Options, Problem, SsdError};

/// Upper bounds of a drawn problem (the ranges of docs/design.md §4.8 by default).
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

/// Valid problem specs with the ranges of docs/design.md §4.8.
pub fn spec() -> impl Strategy<Value = ProblemSpec> {
    spec_within(Limits::default())
}

/// Valid whole problems (float64) with the ranges of docs/design.md §4.8.
pub fn problem() -> impl Strategy<Value = Problem<f64>> {
    spec().prop_map(|s| s.build())
}

/// Upper bound of `b·l·h·p·n` of a [`client_spec`] problem (2²⁶ ≈ 6.7e7). The float64
/// reference runs on one core at ≈ 35 ns per element for its chunked forward, literal
/// recurrence and backward together (measured at Q = 256, n = 128; less at smaller Q), so a
/// case stays under ≈ 2.5 s however the sizes fall: many heads come with short sequences
/// (h = 16 with b = 1, n = 64, l = 1024), long sequences with few heads (l = 4096 with
/// b·h·n ≤ 256).
pub const CLIENT_MAX_ELEMENTS: usize = 1 << 26;

/// Problem specs the way real clients draw them (issue 20): whole chunks at realistic sizes.
///
/// - Q ∈ {64, 128, 256} and l = k·Q with 1024 ≤ l ≤ 4096 (no ragged last chunk);
/// - b 1–2, p = 64, n ∈ {64, 128}, h 1–16, g ∈ {1, 2, 4} dividing h, within the budget
///   `b·l·h·p·n ≤` [`CLIENT_MAX_ELEMENTS`]: half the cases draw l first and lower h to fit
///   (long sequences), half draw h first (lowered only where l = 1024 does not fit) and then l
///   up to what fits (many heads);
/// - seven cases in eight have every option on together: `D` (per head or per channel), `z`,
///   `dt_bias`, softplus, initial states; the eighth draws each on or off;
/// - `dt_limit` off, (0.01, 0.1) or (0.002, 0.2), a third each;
/// - `seq_idx` (random cuts) in one case in four: the whole-chunk fast paths need it off;
/// - the seed of the values drawn.
pub fn client_spec() -> impl Strategy<Value = ProblemSpec> {
    (
        (
            0usize..3,
            any::<prop::sample::Index>(),
            1usize..=2,
            1usize..=16,
            any::<prop::sample::Index>(),
            (any::<bool>(), any::<bool>()),
        ),
        (
            prop::bool::weighted(0.875),
            (
                0u8..3,
                any::<bool>(),
                any::<bool>(),
                any::<bool>(),
                any::<bool>(),
            ),
            0u8..3,
            prop::bool::weighted(0.25),
        ),
        any::<u64>(),
    )
        .prop_map(
            |(
                (qi, k, nb, h, gsel, (big_n, long)),
                (all_on, (dk, z, bias, sp, init), lim, seq),
                seed,
            )| {
                let q = [64, 128, 256][qi];
                let (np, nn) = (64, if big_n { 128 } else { 64 });
                let per_token = nb * np * nn;
                let kmin = 1024 / q;
                let (l, nh) = if long {
                    // l = k·Q from 1024 to 4096, then h as drawn or what the budget leaves (≥ 1)
                    let l = q * (kmin + k.index(4096 / q - kmin + 1));
                    (l, h.min(CLIENT_MAX_ELEMENTS / (per_token * l)))
                } else {
                    // h as drawn or what l = 1024 leaves of the budget (≥ 4), then l = k·Q from
                    // 1024 to 4096 or the budget
                    let nh = h.min(CLIENT_MAX_ELEMENTS / (per_token * 1024));
                    let kmax = (4096 / q).min(CLIENT_MAX_ELEMENTS / (per_token * nh * q));
                    (q * (kmin + k.index(kmax - kmin + 1)), nh)
                };
                let groups: Vec<usize> = [1, 2, 4]
                    .into_iter()
                    .filter(|g| nh.is_multiple_of(*g))
                    .collect();
                let ng = groups[gsel.index(groups.len())];
                let d = match (all_on, dk) {
                    // per head (upstream's default) two times in three
                    (true, 1) => DKind::PerChannel,
                    (true, _) => DKind::PerHead,
                    (false, _) => [DKind::None, DKind::PerHead, DKind::PerChannel][dk as usize],
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
                        chunk_size: q,
                        dt_softplus: all_on || sp,
                        dt_limit: [(0.0, f64::INFINITY), (0.01, 0.1), (0.002, 0.2)][lim as usize],
                    },
                    d,
                    z: all_on || z,
                    dt_bias: all_on || bias,
                    initial_states: all_on || init,
                    seq_idx: seq,
                    seed,
                }
            },
        )
}

/// Whole problems (float64) from [`client_spec`]. A failing case prints the problem's arrays,
/// millions of values: tests that want a readable report draw [`client_spec`] and build it.
pub fn client_problem() -> impl Strategy<Value = Problem<f64>> {
    client_spec().prop_map(|s| s.build())
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
