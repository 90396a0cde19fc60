//! The gradient of the literal recurrence by hand-written reverse mode (backpropagation through
//! time); the truth every other backward is checked against.
//!
//! Forward, per row and head: `H_t = exp(Δ_t A) H_{t−1} + Δ_t x_t ⊗ B_t`,
//! `y_t = H_t C_t + D ⊙ x_t`, `out_t = y_t ⊙ silu(z_t)`. Backward, from `G = dfinal` and
//! `t = l − 1` down to 0, with `dy_t = dout_t ⊙ silu(z_t)`:
//! `dC_t = Σ_p dy_t[p] H_t[p, :]`; `G += dy_t ⊗ C_t` (now the adjoint of `H_t`);
//! `dx_t = Δ_t G B_t + D dy_t`; `dB_t = Δ_t Gᵀ x_t`; `dΔ_t = ⟨G, x_t ⊗ B_t⟩ + ddA_t A`;
//! `ddA_t = exp(Δ_t A) ⟨G, H_{t−1}⟩` (the adjoint of the log decay `Δ_t A`); `dA += ddA_t Δ_t`;
//! then `G ← exp(Δ_t A) G` (the adjoint of `H_{t−1}`), or `G ← 0` where `seq_idx` restarts the
//! state at `t`. `dinitial = G` at the end if the row's first id is 0, else 0. `ddt` is `dΔ`
//! through the dt processing (0 where clamped, `σ(u)` through the softplus).

use crate::chunking::d_at;
use crate::validate::check_shape;
use crate::{
    process_dt, process_dt_grad, sigmoid, silu, validate, Gradients, Inputs, Options, SsdError,
};
use ndarray::{s, Array1, Array2, Array3, Array4, ArrayD, ArrayView4, IxDyn};

/// Gradients of the SSD op through the literal recurrence.
///
/// `dout` is (b, l, h, p); `dfinal_states` (b, h, p, n) seeds the final states (0 if absent).
pub fn ssd_recurrent_bwd(
    inputs: &Inputs<'_, f64>,
    options: &Options,
    dout: ArrayView4<'_, f64>,
    dfinal_states: Option<ArrayView4<'_, f64>>,
) -> Result<Gradients<f64>, SsdError> {
    ssd_recurrent_bwd_with_dda(inputs, options, dout, dfinal_states).map(|(g, _)| g)
}

/// [`ssd_recurrent_bwd`], also returning the adjoint of every per-step log decay `Δ_t A_h`,
/// `ddA_blh` (b, l, h): the quantity the four [`crate::AAdjoint`] contributions of the chunked
/// backward sum to, with `dA_h = Σ_{b,t} ddA[b, t, h] Δ[b, t, h]`.
pub fn ssd_recurrent_bwd_with_dda(
    inputs: &Inputs<'_, f64>,
    options: &Options,
    dout: ArrayView4<'_, f64>,
    dfinal_states: Option<ArrayView4<'_, f64>>,
) -> Result<(Gradients<f64>, Array3<f64>), SsdError> {
    let dims = validate(inputs, options)?;
    let (nb, l, nh, np) = inputs.x.dim();
    let (ng, nn) = (dims.ngroups, dims.dstate);
    check_shape("dout", &[nb, l, nh, np], dout.shape())?;
    if let Some(v) = &dfinal_states {
        check_shape("dfinal_states", &[nb, nh, np, nn], v.shape())?;
    }
    let hpg = dims.heads_per_group();
    let id = |b: usize, t: usize| inputs.seq_idx.as_ref().map_or(0, |s| s[[b, t]]);

    let mut dx = Array4::<f64>::zeros((nb, l, nh, np));
    let mut ddt = Array3::<f64>::zeros((nb, l, nh));
    let mut dda = Array3::<f64>::zeros((nb, l, nh));
    let mut da = Array1::<f64>::zeros(nh);
    let mut db = Array4::<f64>::zeros((nb, l, ng, nn));
    let mut dc = Array4::<f64>::zeros((nb, l, ng, nn));
    let mut dd = inputs
        .d
        .as_ref()
        .map(|d| ArrayD::<f64>::zeros(IxDyn(d.shape())));
    let mut dz = inputs
        .z
        .as_ref()
        .map(|_| Array4::<f64>::zeros((nb, l, nh, np)));
    let mut dbias = inputs.dt_bias.as_ref().map(|_| Array1::<f64>::zeros(nh));
    let mut dinit = inputs
        .initial_states
        .as_ref()
        .map(|_| Array4::<f64>::zeros((nb, nh, np, nn)));

    // States H_{t} for t = −1..l−1 (index t + 1), per row and head.
    let mut hist = vec![Array2::<f64>::zeros((np, nn)); l + 1];
    let mut delta = vec![0.0; l];
    let mut dy = Array2::<f64>::zeros((l, np));
    for b in 0..nb {
        let first_id = if l > 0 { id(b, 0) } else { 0 };
        for h in 0..nh {
            let g = h / hpg;
            let a = inputs.a[h];
            let bias = inputs.dt_bias.as_ref().map_or(0.0, |v| v[h]);
            // Forward, keeping every state.
            hist[0] = match (&inputs.initial_states, first_id) {
                (Some(init), 0) => init.slice(s![b, h, .., ..]).to_owned(),
                _ => Array2::<f64>::zeros((np, nn)),
            };
            for t in 0..l {
                let restart = t > 0 && id(b, t) != id(b, t - 1);
                delta[t] = process_dt(
                    inputs.dt[[b, t, h]],
                    bias,
                    options.dt_softplus,
                    options.dt_limit,
                );
                let decay = (delta[t] * a).exp();
                let (before, after) = hist.split_at_mut(t + 1);
                let hp = &before[t];
                let hn = &mut after[0];
                for p in 0..np {
                    let xv = inputs.x[[b, t, h, p]];
                    for n in 0..nn {
                        let prevv = if restart { 0.0 } else { hp[[p, n]] };
                        hn[[p, n]] = decay * prevv + delta[t] * xv * inputs.b[[b, t, g, n]];
                    }
                }
            }
            // Gate and skip: dy, dz, dD.
            for t in 0..l {
                for p in 0..np {
                    let go = dout[[b, t, h, p]];
                    let xv = inputs.x[[b, t, h, p]];
                    let dyv = match &inputs.z {
                        Some(z) => {
                            let zv = z[[b, t, h, p]];
                            // y_t = H_t C_t + D x_t
                            let mut yv = 0.0;
                            for n in 0..nn {
                                yv += hist[t + 1][[p, n]] * inputs.c[[b, t, g, n]];
                            }
                            if let Some(d) = &inputs.d {
                                yv += d_at(d, h, p) * xv;
                            }
                            let sg = sigmoid(zv);
                            if let Some(dz) = &mut dz {
                                dz[[b, t, h, p]] = go * yv * sg * (1.0 + zv * (1.0 - sg));
                            }
                            go * silu(zv)
                        }
                        None => go,
                    };
                    dy[[t, p]] = dyv;
                    if let (Some(d), Some(dd)) = (&inputs.d, &mut dd) {
                        dx[[b, t, h, p]] += d_at(d, h, p) * dyv;
                        if d.ndim() == 1 {
                            dd[[h]] += dyv * xv;
                        } else {
                            dd[[h, p]] += dyv * xv;
                        }
                    }
                }
            }
            // Reverse sweep.
            let mut gs = match &dfinal_states {
                Some(v) => v.slice(s![b, h, .., ..]).to_owned(),
                None => Array2::<f64>::zeros((np, nn)),
            };
            for t in (0..l).rev() {
                let restart = t > 0 && id(b, t) != id(b, t - 1);
                let decay = (delta[t] * a).exp();
                // dC_t and G += dy_t ⊗ C_t
                for n in 0..nn {
                    let mut acc = 0.0;
                    for p in 0..np {
                        acc += hist[t + 1][[p, n]] * dy[[t, p]];
                    }
                    dc[[b, t, g, n]] += acc;
                }
                for p in 0..np {
                    for n in 0..nn {
                        gs[[p, n]] += dy[[t, p]] * inputs.c[[b, t, g, n]];
                    }
                }
                // Through H_t = decay H_{t−1} + Δ x ⊗ B.
                let mut ddelta = 0.0;
                let mut ddecay = 0.0;
                for p in 0..np {
                    let xv = inputs.x[[b, t, h, p]];
                    let mut gb = 0.0;
                    for n in 0..nn {
                        let gv = gs[[p, n]];
                        gb += gv * inputs.b[[b, t, g, n]];
                        if !restart {
                            ddecay += gv * hist[t][[p, n]];
                        }
                    }
                    ddelta += gb * xv;
                    dx[[b, t, h, p]] += delta[t] * gb;
                }
                for n in 0..nn {
                    let mut acc = 0.0;
                    for p in 0..np {
                        acc += gs[[p, n]] * inputs.x[[b, t, h, p]];
                    }
                    db[[b, t, g, n]] += delta[t] * acc;
                }
                let dda_t = decay * ddecay;
                dda[[b, t, h]] = dda_t;
                da[h] += dda_t * delta[t];
                ddelta += dda_t * a;
                let gv = ddelta
                    * process_dt_grad(
                        inputs.dt[[b, t, h]],
                        bias,
                        options.dt_softplus,
                        options.dt_limit,
                    );
                ddt[[b, t, h]] = gv;
                if let Some(v) = &mut dbias {
                    v[h] += gv;
                }
                // G ← adjoint of H_{t−1}
                if restart {
                    gs.fill(0.0);
                } else {
                    gs.mapv_inplace(|v| v * decay);
                }
            }
            if let Some(di) = &mut dinit {
                if first_id == 0 {
                    di.slice_mut(s![b, h, .., ..]).assign(&gs);
                }
            }
        }
    }
    Ok((
        Gradients {
            dx,
            ddt,
            da,
            db,
            dc,
            dd,
            dz,
            ddt_bias: dbias,
            dinitial_states: dinit,
        },
        dda,
    ))
}
