//! Section 2: `dA_h = Σ_t ∂L/∂(Δ_t A_h) · Δ_t` split by producing kernel, beside a central finite
//! difference of the float64 literal recurrence.
//!
//! The finite difference moves `A_h` by `±δ` with `δ = FD_STEP · |A_h|`: along the direction
//! scaled to the size of `A_h` the truncation error is `δ²|L'''|/6` and the rounding error
//! `ε Σ|terms of L| / δ`; both are ≈ ε^{2/3} ≈ 4e-11 of the derivative's scale at
//! `FD_STEP ≈ ε^{1/3}` (the argument of `ssd_verify`'s finite differences).

use super::problem::{parts_along, times_delta, FlowProblem};
use ssd_reference::SsdError;

mod figure;
pub use figure::SplitFigure;

/// Relative step of the finite difference in `A_h`: ≈ ε^{1/3} (see the module docs).
pub const FD_STEP: f64 = 6e-6;

/// The four producers, in the order of every `[f64; 4]` of this notebook.
pub const KERNELS: [&str; 4] = [
    "intra: chunk_scan_bwd_ddacs_stable",
    "next: chunk_state_bwd_db",
    "prev: chunk_scan_bwd_dc",
    "chunk: state_passing_bwd",
];

/// Short names of the four producers, in [`KERNELS`] order.
pub const SHORT: [&str; 4] = ["intra", "next", "prev", "chunk"];

/// One head's `dA_h`, split by kernel.
#[derive(Debug, Clone, PartialEq)]
pub struct HeadSplit {
    /// The head.
    pub head: usize,
    /// Its `A_h`.
    pub a: f64,
    /// `Σ_t contribution_t · Δ_t` per kernel ([`KERNELS`] order).
    pub by_kernel: [f64; 4],
    /// The sum of `by_kernel`.
    pub sum: f64,
    /// `dA_h` as the combined backward returns it (`chunk_cumsum_bwd`).
    pub backward: f64,
    /// Central finite difference of the float64 literal recurrence.
    pub finite_difference: f64,
    /// `Σ_t |ddA_t Δ_t|`: the size of the terms `dA_h` is summed from.
    pub magnitude: f64,
}

impl HeadSplit {
    /// `|sum − finite_difference| / |finite_difference|`.
    pub fn fd_error(&self) -> f64 {
        (self.sum - self.finite_difference).abs() / self.finite_difference.abs()
    }
}

/// `dA_h` of every head, split by kernel, with its finite difference.
pub fn head_split(fp: &FlowProblem) -> Result<Vec<HeadSplit>, SsdError> {
    let p = &fp.problem;
    let (_, l, nh, _) = p.x.dim();
    let (grads, adj) = fp.chunked_backward()?;
    let mut out = Vec::with_capacity(nh);
    for h in 0..nh {
        let delta = fp.delta(h);
        let parts = parts_along(&adj, h, l);
        let by_kernel = parts.each_ref().map(|v| times_delta(v, &delta));
        let magnitude = (0..l)
            .map(|t| (parts.iter().map(|v| v[t]).sum::<f64>() * delta[t]).abs())
            .sum();
        let step = FD_STEP * p.a[h].abs();
        let moved = |s: f64| {
            let mut q = p.clone();
            q.a[h] += s;
            fp.loss(&q)
        };
        let finite_difference = (moved(step)? - moved(-step)?) / (2.0 * step);
        out.push(HeadSplit {
            head: h,
            a: p.a[h],
            by_kernel,
            sum: by_kernel.iter().sum(),
            backward: grads.da[h],
            finite_difference,
            magnitude,
        });
    }
    Ok(out)
}
