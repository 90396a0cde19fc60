//! `chunk_scan_bwd_ddacs_stable` [_chunk_scan_bwd_ddAcs_stable]: the adjoint of the per-step log
//! decays `Δ_k A` through the intra-chunk (`CB`) term of `chunk_scan`.
//!
//! With `W[l, s] = ⟨dy_l, x_s⟩ Δ_s CB[l, s] exp(a_l − a_s)` and
//! `a_l − a_s = Σ_{s < k ≤ l} Δ_k A`, `ddA_intra_k = Σ_{l ≥ k > s} W[l, s]`: every pair whose
//! segment contains step k. It is formed as a sum of products, row by row (a running prefix sum
//! over `s` of row `l`, added to every `k ≤ l`), never as the difference of the two large sums
//! `Σ_{l ≥ k} (Σ_{s ≤ l} W[l, s] − Σ_{l' ≥ l} W[l', l])` that the closed form
//! `Σ_p out_x·dout − ddt·dt` (reverse-cumsummed) computes. `ddA_intra_0 = 0` and 0 at padded
//! positions. `CB` carries the `seq_idx` mask.

use crate::chunking::{check_bhcq, chunk_bounds};
use crate::validate::{check_groups, check_shape};
use crate::SsdError;
use ndarray::{Array4, ArrayView4, ArrayView5};

/// Returns `ddA_intra_bhcq`.
pub fn chunk_scan_bwd_ddacs_stable(
    x_blhp: ArrayView4<'_, f64>,
    dt_bhcq: ArrayView4<'_, f64>,
    dacs_bhcq: ArrayView4<'_, f64>,
    dy_blhp: ArrayView4<'_, f64>,
    cb_bcgqq: ArrayView5<'_, f64>,
) -> Result<Array4<f64>, SsdError> {
    let (nb, l, nh, np) = x_blhp.dim();
    let (nc, q) = check_bhcq("dt", dt_bhcq.shape(), nb, nh, l)?;
    check_shape("dA_cumsum", dt_bhcq.shape(), dacs_bhcq.shape())?;
    check_shape("dout", &[nb, l, nh, np], dy_blhp.shape())?;
    let ng = cb_bcgqq.shape()[2];
    check_groups(nh, ng)?;
    check_shape("CB", &[nb, nc, ng, q, q], cb_bcgqq.shape())?;
    let hpg = nh / ng;
    let mut dda = Array4::<f64>::zeros((nb, nh, nc, q));
    for b in 0..nb {
        for c in 0..nc {
            let (start, len) = chunk_bounds(c, q, l);
            for h in 0..nh {
                let g = h / hpg;
                for i in 1..len {
                    let a_i = dacs_bhcq[[b, h, c, i]];
                    // prefix = Σ_{s < k} W[i, s], added to ddA_k for k = 1..=i
                    let mut prefix = 0.0;
                    for k in 1..=i {
                        let j = k - 1;
                        let mut dot = 0.0;
                        for p in 0..np {
                            dot += dy_blhp[[b, start + i, h, p]] * x_blhp[[b, start + j, h, p]];
                        }
                        prefix += dot
                            * dt_bhcq[[b, h, c, j]]
                            * cb_bcgqq[[b, c, g, i, j]]
                            * (a_i - dacs_bhcq[[b, h, c, j]]).exp();
                        dda[[b, h, c, k]] += prefix;
                    }
                }
            }
        }
    }
    Ok(dda)
}
