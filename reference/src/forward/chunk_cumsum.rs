//! `chunk_cumsum` [_chunk_cumsum_fwd]: processed time steps and their within-chunk cumsum.
//!
//! `Δ_t = clamp(softplus?(dt_t + dt_bias))`, `a_l = Σ_{k ≤ l, k in chunk} Δ_k A_h`.
//! Outputs `dt_bhcq` and `dacs_bhcq`, both (b, h, c, Q), zero-padded (Δ = 0) past l.

use crate::chunking::check_cumsum_args;
use crate::{process_dt, Options, SsdError};
use ndarray::{Array4, ArrayView1, ArrayView3};

/// Returns `(dt_bhcq, dacs_bhcq)`.
pub fn chunk_cumsum(
    dt_blh: ArrayView3<'_, f64>,
    a_h: ArrayView1<'_, f64>,
    dt_bias_h: Option<ArrayView1<'_, f64>>,
    options: &Options,
) -> Result<(Array4<f64>, Array4<f64>), SsdError> {
    let (nb, l, nh) = dt_blh.dim();
    let (nc, q) = check_cumsum_args(
        nh,
        l,
        a_h.shape(),
        dt_bias_h.as_ref().map(|v| v.shape()),
        options,
    )?;
    let mut dt_bhcq = Array4::<f64>::zeros((nb, nh, nc, q));
    let mut dacs_bhcq = Array4::<f64>::zeros((nb, nh, nc, q));
    for b in 0..nb {
        for h in 0..nh {
            let bias = dt_bias_h.as_ref().map_or(0.0, |v| v[h]);
            for c in 0..nc {
                let mut acc = 0.0;
                for i in 0..q {
                    let t = c * q + i;
                    let delta = if t < l {
                        process_dt(
                            dt_blh[[b, t, h]],
                            bias,
                            options.dt_softplus,
                            options.dt_limit,
                        )
                    } else {
                        0.0
                    };
                    acc += delta * a_h[h];
                    dt_bhcq[[b, h, c, i]] = delta;
                    dacs_bhcq[[b, h, c, i]] = acc;
                }
            }
        }
    }
    Ok((dt_bhcq, dacs_bhcq))
}
