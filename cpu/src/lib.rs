//! # ssd-cpu
//!
//! The Mamba-2 SSD layer (state space duality) on the CPU, in f32: SIMD along the contiguous
//! axis (`wide::f32x8`) and threads over independent (batch, chunk, head) or (batch, head)
//! tiles (rayon).
//! The same kernels, names and semantics as the float64 truth in [`ssd_reference`]; see
//! docs/design.md §2 (the math) and §5.1 (the signatures).
//!
//! Per batch row and head, with state `H` (p, n):
//! `H_t = exp(Δ_t A) H_{t−1} + Δ_t x_t ⊗ B_t`, `y_t = H_t C_t + D ⊙ x_t`, `out_t = y_t ⊙ silu(z_t)`.
//!
//! - The combined forward [`mamba_chunk_scan_combined`] (and [`mamba_chunk_scan_combined_into`]
//!   with caller buffers and a reusable [`Workspace`]), which runs the register-blocked
//!   recurrence [`ssd_recurrent`] (fastest on a CPU at every shape measured); the five chunked
//!   kernels [`chunk_cumsum`], [`chunk_state`], [`state_passing`], [`bmm_chunk`],
//!   [`chunk_scan`] and their composition [`ssd_chunked`] (the last three fused per
//!   (batch, head), in chunks of `min(Q, 64)` tokens);
//! - the decode step [`selective_state_update`] (state in place, slots, padding rows);
//! - [`rmsnorm_gated`] and [`swiglu`].
//!
//! Inputs are ndarray views of any layout (the kernels copy non-contiguous ones once), outputs
//! are owned arrays or caller buffers, every public function validates once and returns
//! [`SsdError`] on malformed input, and parallelism is the explicit last argument [`Par`].
//! Results are bit-identical run after run and for every [`Par`].
//!
//! The workspace builds for `x86-64-v3` (AVX2 + FMA, which `wide` needs to emit 256-bit FMA).
//! Where the CPU has AVX-512F (detected at run time), the recurrence's register block runs on
//! 16 lanes with the same per-lane operations, so the bits do not depend on it
//! ([`avx512_in_use`], [`set_avx512_allowed`]).
//!
//! Performance (docs/design.md §6; `ssd-verify bench cpu`): the recurrence does 3 `f32x8`
//! operations per 8 state elements and token (`H·a + B·Δx`, `y += C·H`) with blocks of `H` in
//! registers; the chunked form does `≈ 4np` FLOPs per token and head for the state plus
//! `≈ Q·p` inside a chunk, as register-blocked products (6 × 16 tiles of `f32x8` FMAs). The
//! decode step streams the state once and runs at a large fraction of a copy's bandwidth.

mod backward;
mod decode;
mod forward;
mod geom;
mod norm;
mod par;
mod simd;
mod tile;
mod validate;

pub use backward::bmm_chunk_bwd::bmm_chunk_bwd;
pub use backward::chunk_cumsum_bwd::chunk_cumsum_bwd;
pub use backward::chunk_scan_bwd_dc::chunk_scan_bwd_dc;
pub use backward::chunk_scan_bwd_dcb::chunk_scan_bwd_dcb;
pub use backward::chunk_scan_bwd_ddacs_stable::chunk_scan_bwd_ddacs_stable;
pub use backward::chunk_scan_bwd_dstates::chunk_scan_bwd_dstates;
pub use backward::chunk_scan_bwd_dz::chunk_scan_bwd_dz;
pub use backward::chunk_scan_chunk_state_bwd_dx::chunk_scan_chunk_state_bwd_dx;
pub use backward::chunk_state_bwd_db::chunk_state_bwd_db;
pub use backward::combined::{
    mamba_chunk_scan_combined_bwd, mamba_chunk_scan_combined_bwd_with, BackwardWorkspace,
};
pub use backward::rmsnorm_gated_bwd::rmsnorm_gated_bwd;
pub use backward::state_passing_bwd::state_passing_bwd;
pub use backward::swiglu_bwd::swiglu_bwd;
pub use decode::{selective_state_update, selective_state_update_into};
pub use forward::bmm_chunk::bmm_chunk;
pub use forward::chunk_cumsum::chunk_cumsum;
pub use forward::chunk_scan::chunk_scan;
pub use forward::chunk_state::chunk_state;
pub use forward::combined::{
    mamba_chunk_scan_combined, mamba_chunk_scan_combined_into, ssd_chunked, ssd_recurrent,
    Workspace,
};
pub use forward::state_passing::state_passing;
pub use norm::{rmsnorm_gated, swiglu};
pub use par::Par;
pub use simd::{avx512_in_use, set_avx512_allowed};
pub use ssd_reference::{
    AAdjoint, DecodeInputs, DecodeOptions, Gradients, Inputs, Options, Outputs, RmsNormOptions,
    SsdError,
};
