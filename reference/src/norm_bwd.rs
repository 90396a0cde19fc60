//! `rmsnorm_gated_bwd` and `swiglu_bwd`: the backward of [`crate::rmsnorm_gated`] and
//! [`crate::swiglu`], by the chain rule.
//!
//! Per normalisation group of `v` (`v = x ⊙ silu(z)`, or `v = x` with `norm_before_gate`),
//! `r = (mean(v²) + eps)^{−1/2}`, `n = v r`: with `dn` the gradient of `n`,
//! `dv_j = r dn_j − r³ v_j Σ_k dn_k v_k / group_size`. Gate after the norm
//! (`out = n ⊙ w ⊙ silu(z)`): `dn = dout ⊙ w ⊙ silu(z)`, `dw = Σ_rows dout ⊙ n ⊙ silu(z)`,
//! `dz = dout ⊙ n ⊙ w ⊙ silu'(z)`, `dx = dv`. Gate before the norm (`out = n ⊙ w`):
//! `dn = dout ⊙ w`, `dw = Σ_rows dout ⊙ n`, `dx = dv ⊙ silu(z)`, `dz = dv ⊙ x ⊙ silu'(z)`.
//! `silu'(z) = σ(z)(1 + z(1 − σ(z)))`.
//!
//! `swiglu`: `out = silu(x) ⊙ y`; `dx = dout ⊙ y ⊙ silu'(x)`, `dy = dout ⊙ silu(x)`.

use crate::validate::{check_finite, check_shape};
use crate::{sigmoid, silu, validate_rmsnorm, RmsNormOptions, SsdError};
use ndarray::{Array1, Array2, ArrayD, ArrayView1, ArrayView2, ArrayViewD, Zip};

fn dsilu(v: f64) -> f64 {
    let s = sigmoid(v);
    s * (1.0 + v * (1.0 - s))
}

/// Gated RMSNorm backward over rows of `x` (rows, d): returns `(dx, dweight, dz?)`, `dz` when
/// `z` is given.
pub fn rmsnorm_gated_bwd(
    x: ArrayView2<'_, f64>,
    weight: ArrayView1<'_, f64>,
    z: Option<ArrayView2<'_, f64>>,
    dout: ArrayView2<'_, f64>,
    options: &RmsNormOptions,
) -> Result<(Array2<f64>, Array1<f64>, Option<Array2<f64>>), SsdError> {
    let gs = validate_rmsnorm(&x, &weight, z.as_ref(), options)?;
    check_shape("dout", x.shape(), dout.shape())?;
    check_finite("dout", &dout)?;
    let (rows, nd) = x.dim();
    let mut dx = Array2::<f64>::zeros((rows, nd));
    let mut dw = Array1::<f64>::zeros(nd);
    let mut dz = z.as_ref().map(|_| Array2::<f64>::zeros((rows, nd)));
    let mut v = vec![0.0; gs];
    let mut dn = vec![0.0; gs];
    for r in 0..rows {
        let gate = |j: usize| z.as_ref().map_or(1.0, |z| silu(z[[r, j]]));
        for g0 in (0..nd).step_by(gs) {
            for k in 0..gs {
                let j = g0 + k;
                v[k] = if options.norm_before_gate {
                    x[[r, j]]
                } else {
                    x[[r, j]] * gate(j)
                };
            }
            let ms = v.iter().map(|a| a * a).sum::<f64>() / gs as f64;
            let rstd = 1.0 / (ms + options.eps).sqrt();
            let mut dot = 0.0;
            for k in 0..gs {
                let j = g0 + k;
                let nv = v[k] * rstd;
                let go = dout[[r, j]];
                if options.norm_before_gate {
                    let gv = gate(j);
                    dn[k] = go * weight[j] * gv;
                    dw[j] += go * nv * gv;
                    if let (Some(z), Some(dz)) = (&z, &mut dz) {
                        dz[[r, j]] = go * nv * weight[j] * dsilu(z[[r, j]]);
                    }
                } else {
                    dn[k] = go * weight[j];
                    dw[j] += go * nv;
                }
                dot += dn[k] * v[k];
            }
            let r3 = rstd * rstd * rstd / gs as f64;
            for k in 0..gs {
                let j = g0 + k;
                let dv = rstd * dn[k] - r3 * v[k] * dot;
                if options.norm_before_gate {
                    dx[[r, j]] = dv;
                } else {
                    dx[[r, j]] = dv * gate(j);
                    if let (Some(z), Some(dz)) = (&z, &mut dz) {
                        dz[[r, j]] = dv * x[[r, j]] * dsilu(z[[r, j]]);
                    }
                }
            }
        }
    }
    Ok((dx, dw, dz))
}

/// SwiGLU backward: returns `(dx, dy)` for `out = silu(x) ⊙ y`.
pub fn swiglu_bwd(
    x: ArrayViewD<'_, f64>,
    y: ArrayViewD<'_, f64>,
    dout: ArrayViewD<'_, f64>,
) -> Result<(ArrayD<f64>, ArrayD<f64>), SsdError> {
    check_shape("y", x.shape(), y.shape())?;
    check_shape("dout", x.shape(), dout.shape())?;
    check_finite("x", &x)?;
    check_finite("y", &y)?;
    check_finite("dout", &dout)?;
    let mut dx = ArrayD::<f64>::zeros(x.raw_dim());
    let mut dy = ArrayD::<f64>::zeros(x.raw_dim());
    Zip::from(&mut dx)
        .and(&mut dy)
        .and(&x)
        .and(&y)
        .and(&dout)
        .for_each(|dxv, dyv, &a, &b, &g| {
            *dxv = g * b * dsilu(a);
            *dyv = g * silu(a);
        });
    Ok((dx, dy))
}
