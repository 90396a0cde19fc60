//! Section 1: the four contributions to `∂L/∂(Δ_t A_h)` at every position t of one head, from the
//! chunked float64 backward, and their sum beside the per-step adjoint of the literal recurrence
//! (backpropagation through time, `ddA_t = exp(Δ_t A) ⟨G_t, H_{t−1}⟩`).

use super::problem::{parts_along, FlowProblem};
use ssd_reference::SsdError;

mod figure;
pub use figure::SequenceFigure;

/// The head whose sequence the figures show: A = −1, the longest memory, where all four paths
/// carry a visible share.
pub const SHOWN_HEAD: usize = 0;

/// One head's A adjoint along the sequence, split by producing kernel.
#[derive(Debug, Clone, PartialEq)]
pub struct SequenceFlow {
    /// The head.
    pub head: usize,
    /// Its `A_h`.
    pub a: f64,
    /// Q of the chunked backward.
    pub chunk_size: usize,
    /// From `chunk_scan_bwd_ddacs_stable`: pairs (l, s) inside one chunk whose decay spans t.
    pub intra: Vec<f64>,
    /// From `chunk_state_bwd_db`: tokens of the chunk reaching its own final state `S_c`.
    pub next: Vec<f64>,
    /// From `chunk_scan_bwd_dc`: the state entering the chunk, decayed to each token.
    pub prev: Vec<f64>,
    /// From `state_passing_bwd`: the decay of the whole chunk in the inter-chunk recurrence.
    pub chunk: Vec<f64>,
    /// `intra + next + prev + chunk`.
    pub sum: Vec<f64>,
    /// The same adjoint from the literal recurrence (float64 BPTT).
    pub recurrent: Vec<f64>,
    /// `max_t |sum − recurrent| / max_t |recurrent|`.
    pub max_deviation: f64,
}

/// The A adjoint of every head along the sequence.
pub fn sequence_flow(fp: &FlowProblem) -> Result<Vec<SequenceFlow>, SsdError> {
    let p = &fp.problem;
    let (_, l, nh, _) = p.x.dim();
    let (_, adj) = fp.chunked_backward()?;
    let (_, dda_blh) = fp.recurrent_backward()?;
    Ok((0..nh)
        .map(|h| {
            let [intra, next, prev, chunk] = parts_along(&adj, h, l);
            let sum: Vec<f64> = (0..l)
                .map(|t| intra[t] + next[t] + prev[t] + chunk[t])
                .collect();
            let recurrent: Vec<f64> = (0..l).map(|t| dda_blh[[0, t, h]]).collect();
            let scale = recurrent.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            let dev = sum
                .iter()
                .zip(&recurrent)
                .fold(0.0f64, |m, (s, r)| m.max((s - r).abs()));
            SequenceFlow {
                head: h,
                a: p.a[h],
                chunk_size: p.options.chunk_size,
                intra,
                next,
                prev,
                chunk,
                sum,
                recurrent,
                max_deviation: if dev == 0.0 { 0.0 } else { dev / scale },
            }
        })
        .collect())
}
