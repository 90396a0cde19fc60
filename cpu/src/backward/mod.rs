//! The backward of the chunked SSD in f32, one kernel per file, named after the upstream Triton
//! kernels they mirror (and after `ssd_reference::backward`), plus the combined backward.
//!
//! Each kernel file has a public kernel with the reference's argument list (f32, plus `par`) and
//! crate-internal per-tile pieces that the combined backward ([`combined`]) fuses into one pass
//! over (batch, chunk, group) tiles, with the heads of a group in a fixed order inside the tile:
//! the sums over heads (`dB`, `dC`, `dCB`), over chunks and over batch rows (`dD`, `dA`,
//! `ddt_bias`) are therefore formed in one order whatever the thread count, and the results are
//! bit-identical for every [`crate::Par`].
//!
//! Internal layouts are the forward's (see `crate::forward`): states as (n, p) slabs with p
//! padded to a multiple of 8, `CB` rows padded to a multiple of 8 columns, the within-chunk
//! cumsum as an f32 pair `hi + lo`. [`pack`] holds the per-tile packing shared by the kernels.

pub(crate) mod bmm_chunk_bwd;
pub(crate) mod chunk_cumsum_bwd;
pub(crate) mod chunk_scan_bwd_dc;
pub(crate) mod chunk_scan_bwd_dcb;
pub(crate) mod chunk_scan_bwd_ddacs_stable;
pub(crate) mod chunk_scan_bwd_dstates;
pub(crate) mod chunk_scan_bwd_dz;
pub(crate) mod chunk_scan_chunk_state_bwd_dx;
pub(crate) mod chunk_state_bwd_db;
pub(crate) mod combined;
mod driver;
pub(crate) mod pack;
pub(crate) mod rmsnorm_gated_bwd;
mod row_scaled;
pub(crate) mod state_passing_bwd;
pub(crate) mod swiglu_bwd;
