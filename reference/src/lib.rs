//! # ssd-reference
//!
//! The float64 truth of the Mamba-2 SSD layer (state space duality): problem types, the one
//! validation entry point, and float64 ndarray implementations of every kernel.
//!
//! Per batch row and head, with state `H` (p, n):
//! `H_t = exp(Δ_t A) H_{t−1} + Δ_t x_t ⊗ B_t`, `y_t = H_t C_t + D ⊙ x_t`, `out_t = y_t ⊙ silu(z_t)`.
//!
//! Three forms compute it: [`ssd_recurrent`] (the literal definition), [`ssd_quadratic`] (masked
//! attention, `y = (L ∘ C Bᵀ)(Δ ⊙ x)`), and [`ssd_chunked`], composed of the five forward kernels
//! [`chunk_cumsum`], [`chunk_state`], [`state_passing`], [`bmm_chunk`], [`chunk_scan`].
//!
//! ```
//! use ndarray::{Array, Array1};
//! use ssd_reference::{ssd_chunked, ssd_recurrent, Options, Problem};
//! let (b, l, h, p, g, n) = (1, 10, 2, 3, 1, 4);
//! let f = |i: usize| ((i * 7919 % 101) as f64 / 101.0) - 0.5;
//! let problem = Problem {
//!     x: Array::from_shape_fn((b, l, h, p), |(i, j, k, m)| f(i + 3 * j + 5 * k + 7 * m)),
//!     dt: Array::from_elem((b, l, h), 0.1),
//!     a: Array1::from(vec![-1.0, -0.5]),
//!     b: Array::from_shape_fn((b, l, g, n), |(i, j, k, m)| f(11 + i + j + k + 13 * m)),
//!     c: Array::from_shape_fn((b, l, g, n), |(i, j, k, m)| f(17 + i + 2 * j + k + 3 * m)),
//!     d: None, z: None, dt_bias: None, initial_states: None, seq_idx: None,
//!     options: Options::with_chunk_size(4),
//! };
//! let chunked = ssd_chunked(&problem.inputs(), &problem.options)?;
//! let recurrent = ssd_recurrent(&problem.inputs(), &problem.options)?;
//! let err = (&chunked.out - &recurrent.out).mapv(f64::abs).fold(0.0f64, |m, &v| m.max(v));
//! assert!(err < 1e-13);
//! # Ok::<(), ssd_reference::SsdError>(())
//! ```

pub mod backward;
pub mod chunking;
mod decode;
mod error;
mod forms;
pub mod forward;
mod kernel;
mod norm;
mod norm_bwd;
mod problem;
pub mod validate;

pub use backward::{
    bmm_chunk_bwd, chunk_cumsum_bwd, chunk_scan_bwd_dc, chunk_scan_bwd_dcb,
    chunk_scan_bwd_ddacs_stable, chunk_scan_bwd_dstates, chunk_scan_bwd_dz,
    chunk_scan_chunk_state_bwd_dx, chunk_state_bwd_db, mamba_chunk_scan_combined_bwd,
    ssd_chunked_bwd, ssd_recurrent_bwd, ssd_recurrent_bwd_with_dda, state_passing_bwd,
};
pub use decode::{
    selective_state_update, validate_decode, DecodeDims, DecodeInputs, DecodeOptions,
};
pub use error::{ErrorKind, SsdError};
pub use forms::{
    mamba_chunk_scan_combined, ssd_chunked, ssd_quadratic, ssd_recurrent, ChunkedForward,
};
pub use forward::{bmm_chunk, chunk_cumsum, chunk_scan, chunk_state, state_passing};
pub use kernel::Kernel;
pub use norm::{rmsnorm_gated, swiglu, validate_rmsnorm, RmsNormOptions};
pub use norm_bwd::{rmsnorm_gated_bwd, swiglu_bwd};
pub use problem::{
    process_dt, process_dt_grad, sigmoid, silu, AAdjoint, Dims, Gradients, Inputs, Options,
    Outputs, Problem,
};
pub use validate::validate;
