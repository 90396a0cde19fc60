//! `selective_state_update` [selective_state_update]: one decode step, state updated in place.
//!
//! For each row `b` (state slot `i = state_batch_indices[b]`, or `b`) and head `h`:
//! `H = exp(Δ A) H + Δ x ⊗ B`, `y = H C + D ⊙ x`, `out = y ⊙ silu(z)`, with the same dt
//! processing as the chunked op. A negative slot index marks padding: the output row is 0 and no
//! state is touched.

use crate::chunking::d_at;
use crate::validate::{check_a, check_d, check_dt_limit, check_finite, check_groups, check_shape};
use crate::{process_dt, silu, Options, SsdError};
use ndarray::{Array3, ArrayView1, ArrayView2, ArrayView3, ArrayViewD, ArrayViewMut4};

/// Options of the decode step (the chunk size plays no part).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DecodeOptions {
    /// Apply softplus to `dt + dt_bias`.
    pub dt_softplus: bool,
    /// Clamp of the processed Δ.
    pub dt_limit: (f64, f64),
}

impl Default for DecodeOptions {
    fn default() -> Self {
        DecodeOptions {
            dt_softplus: false,
            dt_limit: (0.0, f64::INFINITY),
        }
    }
}

impl From<&Options> for DecodeOptions {
    fn from(o: &Options) -> Self {
        DecodeOptions {
            dt_softplus: o.dt_softplus,
            dt_limit: o.dt_limit,
        }
    }
}

/// Borrowed inputs of one decode step.
#[derive(Debug, Clone)]
pub struct DecodeInputs<'a, T> {
    /// (b, h, p)
    pub x: ArrayView3<'a, T>,
    /// (b, h), raw
    pub dt: ArrayView2<'a, T>,
    /// (h)
    pub a: ArrayView1<'a, T>,
    /// (b, g, n)
    pub b: ArrayView3<'a, T>,
    /// (b, g, n)
    pub c: ArrayView3<'a, T>,
    /// (h) or (h, p)
    pub d: Option<ArrayViewD<'a, T>>,
    /// (b, h, p)
    pub z: Option<ArrayView3<'a, T>>,
    /// (h)
    pub dt_bias: Option<ArrayView1<'a, T>>,
    /// (b): the state slot of each row; < 0 marks a padding row.
    pub state_batch_indices: Option<ArrayView1<'a, i32>>,
}

/// Sizes of one decode step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeDims {
    /// rows in the step
    pub batch: usize,
    /// states in the pool (= batch without `state_batch_indices`)
    pub pool: usize,
    /// h
    pub nheads: usize,
    /// p
    pub headdim: usize,
    /// g
    pub ngroups: usize,
    /// n
    pub dstate: usize,
}

/// Validates a decode step against a state pool of shape `state_shape` (pool, h, p, n).
pub fn validate_decode<T: Copy + Into<f64>>(
    inputs: &DecodeInputs<'_, T>,
    state_shape: &[usize],
    options: &DecodeOptions,
) -> Result<DecodeDims, SsdError> {
    let (nb, nh, np) = inputs.x.dim();
    let (_, ng, nn) = inputs.b.dim();
    check_dt_limit(options.dt_limit)?;
    check_shape("dt", &[nb, nh], inputs.dt.shape())?;
    check_shape("A", &[nh], inputs.a.shape())?;
    check_shape("B", &[nb, ng, nn], inputs.b.shape())?;
    check_groups(nh, ng)?;
    check_shape("C", &[nb, ng, nn], inputs.c.shape())?;
    if let Some(d) = &inputs.d {
        check_d(d, nh, np)?;
    }
    if let Some(z) = &inputs.z {
        check_shape("z", &[nb, nh, np], z.shape())?;
    }
    if let Some(v) = &inputs.dt_bias {
        check_shape("dt_bias", &[nh], v.shape())?;
    }
    let pool = state_shape.first().copied().unwrap_or(0);
    match &inputs.state_batch_indices {
        None => check_shape("state", &[nb, nh, np, nn], state_shape)?,
        Some(idx) => {
            check_shape("state", &[pool, nh, np, nn], state_shape)?;
            check_shape("state_batch_indices", &[nb], idx.shape())?;
            let mut owner = std::collections::HashMap::new();
            for (b, &i) in idx.iter().enumerate() {
                if i < 0 {
                    continue;
                }
                if i as usize >= pool {
                    return Err(SsdError::StateIndexOutOfRange {
                        batch: b,
                        index: i as i64,
                        pool,
                    });
                }
                if let Some(first) = owner.insert(i, b) {
                    return Err(SsdError::DuplicateStateIndex {
                        first,
                        second: b,
                        index: i as i64,
                    });
                }
            }
        }
    }
    check_a(&inputs.a)?;
    check_finite("x", &inputs.x)?;
    check_finite("dt", &inputs.dt)?;
    check_finite("B", &inputs.b)?;
    check_finite("C", &inputs.c)?;
    if let Some(d) = &inputs.d {
        check_finite("D", d)?;
    }
    if let Some(z) = &inputs.z {
        check_finite("z", z)?;
    }
    if let Some(v) = &inputs.dt_bias {
        check_finite("dt_bias", v)?;
    }
    Ok(DecodeDims {
        batch: nb,
        pool,
        nheads: nh,
        headdim: np,
        ngroups: ng,
        dstate: nn,
    })
}

/// One decode step in float64; updates `state` (pool, h, p, n) in place and returns `out`
/// (b, h, p).
pub fn selective_state_update(
    mut state: ArrayViewMut4<'_, f64>,
    inputs: &DecodeInputs<'_, f64>,
    options: &DecodeOptions,
) -> Result<Array3<f64>, SsdError> {
    let dims = validate_decode(inputs, state.shape(), options)?;
    let hpg = dims.nheads / dims.ngroups;
    let mut out = Array3::<f64>::zeros((dims.batch, dims.nheads, dims.headdim));
    for b in 0..dims.batch {
        let slot = match &inputs.state_batch_indices {
            Some(idx) if idx[b] < 0 => continue,
            Some(idx) => idx[b] as usize,
            None => b,
        };
        for h in 0..dims.nheads {
            let g = h / hpg;
            let bias = inputs.dt_bias.as_ref().map_or(0.0, |v| v[h]);
            let delta = process_dt(
                inputs.dt[[b, h]],
                bias,
                options.dt_softplus,
                options.dt_limit,
            );
            let decay = (delta * inputs.a[h]).exp();
            for p in 0..dims.headdim {
                let xv = inputs.x[[b, h, p]];
                let mut y = 0.0;
                for n in 0..dims.dstate {
                    let v = decay * state[[slot, h, p, n]] + delta * xv * inputs.b[[b, g, n]];
                    state[[slot, h, p, n]] = v;
                    y += v * inputs.c[[b, g, n]];
                }
                if let Some(d) = &inputs.d {
                    y += d_at(d, h, p) * xv;
                }
                if let Some(z) = &inputs.z {
                    y *= silu(z[[b, h, p]]);
                }
                out[[b, h, p]] = y;
            }
        }
    }
    Ok(out)
}
