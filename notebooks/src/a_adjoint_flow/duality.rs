//! Section 3: state space duality seen through the gradient. Q = 1 is the recurrence (every
//! token its own chunk: the A adjoint flows through the states, `prev` and `chunk`); Q = l is the
//! quadratic, attention-like form (one chunk: it flows through `intra` and, from the final
//! state, `next`). In between the four kernels share `dA_h` differently, and the total stays the
//! float64 gradient of the literal recurrence up to rounding.

use super::problem::{parts_along, times_delta, FlowProblem};
use ssd_reference::SsdError;

mod figure;
pub use figure::DualityFigure;

/// `dA_h` of every head at one chunk size.
#[derive(Debug, Clone, PartialEq)]
pub struct DualityRow {
    /// Q.
    pub chunk_size: usize,
    /// Per head: `Σ_t contribution_t · Δ_t` per kernel (`split::KERNELS` order).
    pub by_kernel: Vec<[f64; 4]>,
    /// Per head: the sum of `by_kernel`.
    pub total: Vec<f64>,
}

/// The sweep over chunk sizes.
#[derive(Debug, Clone, PartialEq)]
pub struct DualitySweep {
    /// One row per chunk size, ascending.
    pub rows: Vec<DualityRow>,
    /// Per head: `dA_h` of the literal recurrence (float64 BPTT).
    pub recurrent: Vec<f64>,
    /// Per head: `Σ_t |ddA_t Δ_t|` of the recurrence, the size of the terms of `dA_h`.
    pub magnitude: Vec<f64>,
}

impl DualitySweep {
    /// `max_{Q,h} |total − recurrent| / Σ_t |ddA_t Δ_t|`: the largest deviation of the total,
    /// relative to the size of the terms it is summed from.
    pub fn max_deviation(&self) -> f64 {
        self.deviation(|h| self.magnitude[h])
    }

    /// `max_{Q,h} |total − recurrent| / |recurrent|`.
    pub fn max_relative_deviation(&self) -> f64 {
        self.deviation(|h| self.recurrent[h].abs())
    }

    fn deviation(&self, scale: impl Fn(usize) -> f64) -> f64 {
        self.rows
            .iter()
            .flat_map(|r| {
                r.total
                    .iter()
                    .enumerate()
                    .map(|(h, t)| (t - self.recurrent[h]).abs() / scale(h))
                    .collect::<Vec<_>>()
            })
            .fold(0.0, f64::max)
    }
}

/// Chunk sizes from 1 to l: the powers of two below l, l itself, and sizes that do not divide
/// l (3, 48, 100, 333, where they are below l).
pub fn chunk_sizes(l: usize) -> Vec<usize> {
    let mut qs: Vec<usize> = std::iter::successors(Some(1usize), |q| Some(q * 2))
        .take_while(|&q| q < l)
        .chain([3, 48, 100, 333].into_iter().filter(|&q| q < l))
        .chain([l])
        .collect();
    qs.sort_unstable();
    qs.dedup();
    qs
}

/// `dA_h` by kernel at every chunk size of `qs`.
pub fn duality_sweep(fp: &FlowProblem, qs: &[usize]) -> Result<DualitySweep, SsdError> {
    let p = &fp.problem;
    let (_, l, nh, _) = p.x.dim();
    let deltas: Vec<Vec<f64>> = (0..nh).map(|h| fp.delta(h)).collect();
    let (grads, dda_blh) = fp.recurrent_backward()?;
    let magnitude = (0..nh)
        .map(|h| {
            (0..l)
                .map(|t| (dda_blh[[0, t, h]] * deltas[h][t]).abs())
                .sum()
        })
        .collect();
    let mut rows = Vec::with_capacity(qs.len());
    for &q in qs {
        let fq = fp.with_chunk_size(q);
        let (_, adj) = fq.chunked_backward()?;
        let by_kernel: Vec<[f64; 4]> = (0..nh)
            .map(|h| parts_along(&adj, h, l).map(|v| times_delta(&v, &deltas[h])))
            .collect();
        let total = by_kernel.iter().map(|k| k.iter().sum()).collect();
        rows.push(DualityRow {
            chunk_size: q,
            by_kernel,
            total,
        });
    }
    Ok(DualitySweep {
        rows,
        recurrent: grads.da.to_vec(),
        magnitude,
    })
}
