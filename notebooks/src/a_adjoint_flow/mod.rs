//! # How the gradient of `A` flows through the backward kernels
//!
//! `A_h` enters the SSD only through the per-step log decays `Δ_t A_h`, so
//! `dA_h = Σ_t ∂L/∂(Δ_t A_h) · Δ_t`. The chunked backward never forms `∂L/∂(Δ_t A_h)` in one
//! place: four kernels each produce the part of it that flows through one path of the chunked
//! forward (docs/design.md §2.6, "the four producers of the A adjoint"):
//!
//! | contribution | kernel | path |
//! |---|---|---|
//! | intra | `chunk_scan_bwd_ddacs_stable` | token s → token l inside one chunk (the `CB` term), for s < t ≤ l |
//! | next | `chunk_state_bwd_db` | token s → the chunk's own final state `S_c`, for s < t |
//! | prev | `chunk_scan_bwd_dc` | the state entering the chunk `P_c` → token l, for t ≤ l (a reverse cumsum of `V`) |
//! | chunk | `state_passing_bwd` | the decay of the whole chunk `exp(a_last)` between chunk states |
//!
//! This module holds the data of the notebook as pure functions of a size: [`sequence_flow`]
//! (section 1), [`head_split`] (2), [`duality_sweep`] (3), [`stability_sweep`] (4),
//! [`backend_flow`] (5); each section's figure beside its data ([`SequenceFigure`],
//! [`SplitFigure`], [`DualityFigure`], [`StabilityFigure`], [`BackendFigure`]); the whole run
//! ([`Data`]) and the markdown [`report`]. The binary `a_adjoint_flow` runs them at full size;
//! the tests run the data functions small.

mod backends;
mod duality;
mod notebook;
mod problem;
mod report;
mod sequence;
mod split;
mod stability;

pub use backends::{available_backends, backend_flow, BackendFigure, BackendFlow};
pub use duality::{chunk_sizes, duality_sweep, DualityFigure, DualityRow, DualitySweep};
pub use notebook::{
    backend_stem, Data, Times, DUALITY_STEM, SEQUENCE_STEM, SPLIT_STEM, STABILITY_STEM,
};
pub use problem::{along_sequence, decay_rates, Backend, F32Backward, FlowProblem, FlowSpec};
pub use report::report;
pub use sequence::{sequence_flow, SequenceFigure, SequenceFlow, SHOWN_HEAD};
pub use split::{head_split, HeadSplit, SplitFigure, FD_STEP, KERNELS, SHORT};
pub use stability::{
    breakdown, intra_adjoint, intra_truth, stability_sweep, IntraForm, Real, StabilityFigure,
    StabilityRow, StabilitySpec, UNIFORM_DT,
};
