//! The five forward kernels of the chunked SSD, float64, one per file, each named after the
//! upstream Triton kernel it mirrors (without the leading `_` and trailing `_fwd`).
//!
//! Intermediate shapes (Q = chunk size, c = ⌈l / Q⌉ chunks):
//! `dt_bhcq`, `dacs_bhcq` (b, h, c, Q); `states_bchpn`, `prev_states_bchpn` (b, c, h, p, n);
//! `cb_bcgqq` (b, c, g, Q, Q). Padded positions of a ragged last chunk have Δ = 0, so the
//! cumsum stays flat there and `dacs[.., Q-1]` is the chunk's last value `a_last`.

mod bmm_chunk;
mod chunk_cumsum;
mod chunk_scan;
mod chunk_state;
mod state_passing;

pub use bmm_chunk::bmm_chunk;
pub use chunk_cumsum::chunk_cumsum;
pub use chunk_scan::chunk_scan;
pub use chunk_state::chunk_state;
pub use state_passing::state_passing;
