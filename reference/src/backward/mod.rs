//! The float64 backward of the SSD: the literal gradient of the recurrence
//! ([`ssd_recurrent_bwd`], reverse mode through time), the ten backward kernels of the chunked
//! algorithm, one per file, each named after the upstream Triton kernel it mirrors, and the
//! combined chunked backward ([`mamba_chunk_scan_combined_bwd`]) that composes them in upstream's
//! order.
//!
//! Seeds: `dout` (b, l, h, p) and optionally `dfinal_states` (b, h, p, n); the loss is
//! `Σ out·dout + Σ final_states·dfinal_states`. Per-step adjoints of the log decay `Δ_k A`
//! (`ddA_*`, (b, h, c, Q)) are 0 at the padded positions of a ragged last chunk.

mod bmm_chunk_bwd;
mod chunk_cumsum_bwd;
mod chunk_scan_bwd_dc;
mod chunk_scan_bwd_dcb;
mod chunk_scan_bwd_ddacs_stable;
mod chunk_scan_bwd_dstates;
mod chunk_scan_bwd_dz;
mod chunk_scan_chunk_state_bwd_dx;
mod chunk_state_bwd_db;
mod combined;
mod recurrent;
mod state_passing_bwd;

pub use bmm_chunk_bwd::bmm_chunk_bwd;
pub use chunk_cumsum_bwd::chunk_cumsum_bwd;
pub use chunk_scan_bwd_dc::chunk_scan_bwd_dc;
pub use chunk_scan_bwd_dcb::chunk_scan_bwd_dcb;
pub use chunk_scan_bwd_ddacs_stable::chunk_scan_bwd_ddacs_stable;
pub use chunk_scan_bwd_dstates::chunk_scan_bwd_dstates;
pub use chunk_scan_bwd_dz::chunk_scan_bwd_dz;
pub use chunk_scan_chunk_state_bwd_dx::chunk_scan_chunk_state_bwd_dx;
pub use chunk_state_bwd_db::chunk_state_bwd_db;
pub use combined::{mamba_chunk_scan_combined_bwd, ssd_chunked_bwd};
pub use recurrent::{ssd_recurrent_bwd, ssd_recurrent_bwd_with_dda};
pub use state_passing_bwd::state_passing_bwd;
