//! The five forward kernels of the chunked SSD in f32, one per file, named after the upstream
//! Triton kernels they mirror (and after `ssd_reference::forward`), plus the combined forward.
//!
//! Each file has a public kernel with the reference's argument list (f32, plus `par`) and a
//! crate-internal `*_core` working on flat slices in the layouts the combined forward keeps:
//! states transposed to (n, p) with p padded to a multiple of 8, `CB` rows padded to a multiple
//! of 8 columns, the within-chunk cumsum split into an f32 pair `hi + lo` (see
//! [`chunk_cumsum`](mod@chunk_cumsum)).

pub(crate) mod bmm_chunk;
pub(crate) mod chunk_cumsum;
pub(crate) mod chunk_scan;
pub(crate) mod chunk_state;
pub(crate) mod combined;
pub(crate) mod fused;
pub(crate) mod recurrent;
pub(crate) mod state_passing;
