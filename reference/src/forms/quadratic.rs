//! The quadratic (masked attention) form: the duality side of the SSD.
//!
//! `y = (L ∘ (C Bᵀ)) (Δ ⊙ x) + D x + exp(a_t) C_t · H_{−1}` with `L[t, s] = exp(a_t − a_s)` for
//! `s ≤ t` within one `seq_idx` segment (0 otherwise). The segment sums `a_t − a_s =
//! Σ_{s<k≤t} Δ_k A` are accumulated directly, never as a difference of two large cumsums, and
//! only `s ≤ t` is exponentiated. The initial-state term reaches tokens of sequence id 0.

use crate::chunking::d_at;
use crate::{process_dt, silu, validate, Inputs, Options, Outputs, SsdError};
use ndarray::{Array1, Array4};

/// The SSD forward by the quadratic form.
pub fn ssd_quadratic(
    inputs: &Inputs<'_, f64>,
    options: &Options,
) -> Result<Outputs<f64>, SsdError> {
    let dims = validate(inputs, options)?;
    let (nb, l, nh, np) = inputs.x.dim();
    let nn = dims.dstate;
    let hpg = dims.heads_per_group();
    let mut out = Array4::<f64>::zeros((nb, l, nh, np));
    let mut fin = Array4::<f64>::zeros((nb, nh, np, nn));
    let id = |b: usize, t: usize| inputs.seq_idx.as_ref().map_or(0, |s| s[[b, t]]);
    for b in 0..nb {
        for h in 0..nh {
            let g = h / hpg;
            let bias = inputs.dt_bias.as_ref().map_or(0.0, |v| v[h]);
            let delta: Array1<f64> = (0..l)
                .map(|t| {
                    process_dt(
                        inputs.dt[[b, t, h]],
                        bias,
                        options.dt_softplus,
                        options.dt_limit,
                    )
                })
                .collect();
            let da: Array1<f64> = delta.mapv(|d| d * inputs.a[h]);
            let mut seg = vec![0.0; l];
            for t in 0..l {
                // seg[s] = Σ_{s<k≤t} Δ_k A for s ≤ t, accumulated from s = t downward.
                seg[t] = 0.0;
                for s in (0..t).rev() {
                    seg[s] = seg[s + 1] + da[s + 1];
                }
                // a_t = Σ_{k≤t} Δ_k A: the decay of the initial state.
                let a_t = seg[0] + da[0];
                let init_reaches = inputs.initial_states.is_some() && id(b, t) == 0;
                let mut cb = vec![0.0; t + 1];
                for s in 0..=t {
                    if id(b, s) != id(b, t) {
                        continue;
                    }
                    let mut dot = 0.0;
                    for n in 0..nn {
                        dot += inputs.c[[b, t, g, n]] * inputs.b[[b, s, g, n]];
                    }
                    cb[s] = dot * seg[s].exp() * delta[s];
                }
                for p in 0..np {
                    let mut yv = 0.0;
                    for s in 0..=t {
                        yv += cb[s] * inputs.x[[b, s, h, p]];
                    }
                    if init_reaches {
                        let init = inputs.initial_states.as_ref().unwrap();
                        let mut dot = 0.0;
                        for n in 0..nn {
                            dot += inputs.c[[b, t, g, n]] * init[[b, h, p, n]];
                        }
                        yv += a_t.exp() * dot;
                    }
                    if let Some(d) = &inputs.d {
                        yv += d_at(d, h, p) * inputs.x[[b, t, h, p]];
                    }
                    if let Some(z) = &inputs.z {
                        yv *= silu(z[[b, t, h, p]]);
                    }
                    out[[b, t, h, p]] = yv;
                }
                if t + 1 == l {
                    // final state: Σ_s L[l−1, s] Δ_s x_s ⊗ B_s (+ decayed initial state).
                    for s in 0..l {
                        if id(b, s) != id(b, t) {
                            continue;
                        }
                        let w = seg[s].exp() * delta[s];
                        for p in 0..np {
                            for n in 0..nn {
                                fin[[b, h, p, n]] +=
                                    w * inputs.x[[b, s, h, p]] * inputs.b[[b, s, g, n]];
                            }
                        }
                    }
                    if init_reaches {
                        let init = inputs.initial_states.as_ref().unwrap();
                        for p in 0..np {
                            for n in 0..nn {
                                fin[[b, h, p, n]] += a_t.exp() * init[[b, h, p, n]];
                            }
                        }
                    }
                }
            }
            if l == 0 {
                if let Some(init) = &inputs.initial_states {
                    for p in 0..np {
                        for n in 0..nn {
                            fin[[b, h, p, n]] = init[[b, h, p, n]];
                        }
                    }
                }
            }
        }
    }
    Ok(Outputs {
        out,
        final_states: fin,
    })
}
