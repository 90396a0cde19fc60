//! The literal recurrence, token by token (the definition every other form is checked against).
//!
//! Per row and head, with state `H` (p, n): `H_t = exp(Δ_t A) H_{t−1} + Δ_t x_t ⊗ B_t`,
//! `y_t = H_t C_t + D ⊙ x_t`, `out_t = y_t ⊙ silu(z_t)`. With `seq_idx`, `H` restarts from 0 at
//! every change of id, and the initial state applies only if the row's first id is 0.

use crate::chunking::d_at;
use crate::{process_dt, silu, validate, Inputs, Options, Outputs, SsdError};
use ndarray::{s, Array2, Array4};

/// The SSD forward by the literal recurrence.
pub fn ssd_recurrent(
    inputs: &Inputs<'_, f64>,
    options: &Options,
) -> Result<Outputs<f64>, SsdError> {
    let dims = validate(inputs, options)?;
    let (nb, l, nh, np) = inputs.x.dim();
    let nn = dims.dstate;
    let hpg = dims.heads_per_group();
    let mut out = Array4::<f64>::zeros((nb, l, nh, np));
    let mut fin = Array4::<f64>::zeros((nb, nh, np, nn));
    for b in 0..nb {
        for h in 0..nh {
            let g = h / hpg;
            let bias = inputs.dt_bias.as_ref().map_or(0.0, |v| v[h]);
            let first_id = inputs
                .seq_idx
                .as_ref()
                .map_or(0, |s| if l > 0 { s[[b, 0]] } else { 0 });
            let mut hs = match (&inputs.initial_states, first_id) {
                (Some(init), 0) => init.slice(s![b, h, .., ..]).to_owned(),
                _ => Array2::<f64>::zeros((np, nn)),
            };
            for t in 0..l {
                if let Some(sq) = &inputs.seq_idx {
                    if t > 0 && sq[[b, t]] != sq[[b, t - 1]] {
                        hs.fill(0.0);
                    }
                }
                let delta = process_dt(
                    inputs.dt[[b, t, h]],
                    bias,
                    options.dt_softplus,
                    options.dt_limit,
                );
                let decay = (delta * inputs.a[h]).exp();
                for p in 0..np {
                    let xv = inputs.x[[b, t, h, p]];
                    let mut yv = 0.0;
                    for n in 0..nn {
                        let v = decay * hs[[p, n]] + delta * xv * inputs.b[[b, t, g, n]];
                        hs[[p, n]] = v;
                        yv += v * inputs.c[[b, t, g, n]];
                    }
                    if let Some(d) = &inputs.d {
                        yv += d_at(d, h, p) * xv;
                    }
                    if let Some(z) = &inputs.z {
                        yv *= silu(z[[b, t, h, p]]);
                    }
                    out[[b, t, h, p]] = yv;
                }
            }
            fin.slice_mut(s![b, h, .., ..]).assign(&hs);
        }
    }
    Ok(Outputs {
        out,
        final_states: fin,
    })
}
