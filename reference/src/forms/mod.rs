//! The three float64 forms of the SSD forward: the literal recurrence, the quadratic
//! (masked attention) form and the chunked SSD composed of the five forward kernels.
//! They compute the same function; the tests prove it to `rel_l2 ≤ 1e-12`.

mod chunked;
mod quadratic;
mod recurrent;

pub use chunked::{mamba_chunk_scan_combined, ssd_chunked, ChunkedForward};
pub use quadratic::ssd_quadratic;
pub use recurrent::ssd_recurrent;
