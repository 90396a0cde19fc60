//! `chunk_scan_bwd_dcb` [_chunk_scan_bwd_dcb]: the adjoint of `chunk_scan` w.r.t. `CB`.
//!
//! `dCB[l, s] = Σ_{heads of the group} ⟨dy_l, x_s⟩ Δ_s exp(a_l − a_s)` for `s ≤ l` (the lower
//! triangle `chunk_scan` reads), 0 above the diagonal and at padded rows and columns. The
//! `seq_idx` mask belongs to `bmm_chunk` and is applied by [`crate::bmm_chunk_bwd`].

use crate::chunking::{check_bhcq, chunk_bounds};
use crate::validate::{check_groups, check_shape};
use crate::SsdError;
use ndarray::{Array5, ArrayView4};

/// Returns `dcb_bcgqq`.
pub fn chunk_scan_bwd_dcb(
    x_blhp: ArrayView4<'_, f64>,
    dt_bhcq: ArrayView4<'_, f64>,
    dacs_bhcq: ArrayView4<'_, f64>,
    dy_blhp: ArrayView4<'_, f64>,
    ngroups: usize,
) -> Result<Array5<f64>, SsdError> {
    let (nb, l, nh, np) = x_blhp.dim();
    check_groups(nh, ngroups)?;
    let (nc, q) = check_bhcq("dt", dt_bhcq.shape(), nb, nh, l)?;
    check_shape("dA_cumsum", dt_bhcq.shape(), dacs_bhcq.shape())?;
    check_shape("dout", &[nb, l, nh, np], dy_blhp.shape())?;
    let hpg = nh / ngroups;
    let mut dcb = Array5::<f64>::zeros((nb, nc, ngroups, q, q));
    for b in 0..nb {
        for c in 0..nc {
            let (start, len) = chunk_bounds(c, q, l);
            for h in 0..nh {
                let g = h / hpg;
                for i in 0..len {
                    let a_i = dacs_bhcq[[b, h, c, i]];
                    for j in 0..=i {
                        let mut dot = 0.0;
                        for p in 0..np {
                            dot += dy_blhp[[b, start + i, h, p]] * x_blhp[[b, start + j, h, p]];
                        }
                        dcb[[b, c, g, i, j]] +=
                            dot * dt_bhcq[[b, h, c, j]] * (a_i - dacs_bhcq[[b, h, c, j]]).exp();
                    }
                }
            }
        }
    }
    Ok(dcb)
}
