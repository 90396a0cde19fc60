//! `rmsnorm_gated` [RMSNormGated / layer_norm_fn with z] and `swiglu` [swiglu], forward.
//!
//! `rmsnorm_gated`: over each group of `group_size` consecutive features of a row,
//! `norm(v) = v / sqrt(mean(v²) + eps)`; with `norm_before_gate`: `out = norm(x) ⊙ w ⊙ silu(z)`,
//! otherwise `out = norm(x ⊙ silu(z)) ⊙ w` (Mamba-2's default). Without `z` it is a plain RMSNorm.
//! `swiglu(x, y) = silu(x) ⊙ y`.

use crate::validate::{check_finite, check_shape};
use crate::{silu, SsdError};
use ndarray::{Array2, ArrayD, ArrayView1, ArrayView2, ArrayViewD, Zip};

/// Options of `rmsnorm_gated`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RmsNormOptions {
    /// Added to the mean square (> 0).
    pub eps: f64,
    /// Features per normalisation group (divides the feature count); `None` = the whole row.
    pub group_size: Option<usize>,
    /// `true`: `norm(x) ⊙ w ⊙ silu(z)`; `false` (default): `norm(x ⊙ silu(z)) ⊙ w`.
    pub norm_before_gate: bool,
}

impl Default for RmsNormOptions {
    fn default() -> Self {
        RmsNormOptions {
            eps: 1e-5,
            group_size: None,
            norm_before_gate: false,
        }
    }
}

/// Validates `rmsnorm_gated`'s inputs; returns the group size.
pub fn validate_rmsnorm<T: Copy + Into<f64>>(
    x: &ArrayView2<'_, T>,
    weight: &ArrayView1<'_, T>,
    z: Option<&ArrayView2<'_, T>>,
    options: &RmsNormOptions,
) -> Result<usize, SsdError> {
    let (_, nd) = x.dim();
    check_shape("weight", &[nd], weight.shape())?;
    if let Some(z) = z {
        check_shape("z", x.shape(), z.shape())?;
        check_finite("z", z)?;
    }
    if !(options.eps > 0.0 && options.eps.is_finite()) {
        return Err(SsdError::invalid(
            "eps",
            format!("{} is not > 0", options.eps),
        ));
    }
    let gs = options.group_size.unwrap_or(nd);
    if gs == 0 || (nd > 0 && nd % gs != 0) {
        return Err(SsdError::invalid(
            "group_size",
            format!("{gs} does not divide the feature count {nd}"),
        ));
    }
    check_finite("x", x)?;
    check_finite("weight", weight)?;
    Ok(gs.max(1))
}

/// Gated RMSNorm forward over rows of `x` (rows, d).
pub fn rmsnorm_gated(
    x: ArrayView2<'_, f64>,
    weight: ArrayView1<'_, f64>,
    z: Option<ArrayView2<'_, f64>>,
    options: &RmsNormOptions,
) -> Result<Array2<f64>, SsdError> {
    let gs = validate_rmsnorm(&x, &weight, z.as_ref(), options)?;
    let (rows, nd) = x.dim();
    let mut out = Array2::<f64>::zeros((rows, nd));
    for r in 0..rows {
        let gate = |j: usize| z.as_ref().map_or(1.0, |z| silu(z[[r, j]]));
        for g0 in (0..nd).step_by(gs) {
            let v: Vec<f64> = (g0..g0 + gs)
                .map(|j| {
                    if options.norm_before_gate {
                        x[[r, j]]
                    } else {
                        x[[r, j]] * gate(j)
                    }
                })
                .collect();
            let ms = v.iter().map(|a| a * a).sum::<f64>() / gs as f64;
            let rstd = 1.0 / (ms + options.eps).sqrt();
            for (k, j) in (g0..g0 + gs).enumerate() {
                let mut o = v[k] * rstd * weight[j];
                if options.norm_before_gate {
                    o *= gate(j);
                }
                out[[r, j]] = o;
            }
        }
    }
    Ok(out)
}

/// `silu(x) ⊙ y` over two arrays of one shape.
pub fn swiglu(x: ArrayViewD<'_, f64>, y: ArrayViewD<'_, f64>) -> Result<ArrayD<f64>, SsdError> {
    check_shape("y", x.shape(), y.shape())?;
    check_finite("x", &x)?;
    check_finite("y", &y)?;
    let mut out = ArrayD::<f64>::zeros(x.raw_dim());
    Zip::from(&mut out)
        .and(&x)
        .and(&y)
        .for_each(|o, &a, &b| *o = silu(a) * b);
    Ok(out)
}
