//! `chunk_scan_bwd_dz` [_chunk_scan_bwd_dz]: the gradient through the `z` gate and the skip `D`.
//!
//! With `out = y ⊙ silu(z)` (`y` the pre-gate output, `D x` included):
//! `dy = dout ⊙ silu(z)`, `dz = dout ⊙ y ⊙ σ(z)(1 + z(1 − σ(z)))`, and
//! `dD = Σ_{b,l} dy ⊙ x` (summed over p too when `D` is (h)). Without `z`, `dy = dout`.

use crate::validate::{check_d, check_shape};
use crate::{sigmoid, silu, SsdError};
use ndarray::{Array4, ArrayD, ArrayView4, ArrayViewD, IxDyn};

/// Returns `(dy_blhp, dz_blhp?, dd?)`: `dz` when `z` is given, `dd` (the shape of `D`) when `D`
/// is. `y_blhp` (the output before the gate) is needed iff `z` is given.
pub fn chunk_scan_bwd_dz(
    dout_blhp: ArrayView4<'_, f64>,
    x_blhp: ArrayView4<'_, f64>,
    y_blhp: Option<ArrayView4<'_, f64>>,
    z_blhp: Option<ArrayView4<'_, f64>>,
    d: Option<ArrayViewD<'_, f64>>,
) -> Result<(Array4<f64>, Option<Array4<f64>>, Option<ArrayD<f64>>), SsdError> {
    let (nb, l, nh, np) = x_blhp.dim();
    let shape = [nb, l, nh, np];
    check_shape("dout", &shape, dout_blhp.shape())?;
    if let Some(y) = &y_blhp {
        check_shape("y", &shape, y.shape())?;
    }
    if let Some(z) = &z_blhp {
        check_shape("z", &shape, z.shape())?;
        if y_blhp.is_none() {
            return Err(SsdError::invalid(
                "y",
                "the pre-gate output is needed when z is given",
            ));
        }
    }
    if let Some(d) = &d {
        check_d(d, nh, np)?;
    }
    let mut dy = Array4::<f64>::zeros((nb, l, nh, np));
    let mut dz = z_blhp
        .as_ref()
        .map(|_| Array4::<f64>::zeros((nb, l, nh, np)));
    for b in 0..nb {
        for t in 0..l {
            for h in 0..nh {
                for p in 0..np {
                    let g = dout_blhp[[b, t, h, p]];
                    match (&z_blhp, &y_blhp, &mut dz) {
                        (Some(z), Some(y), Some(dz)) => {
                            let zv = z[[b, t, h, p]];
                            let s = sigmoid(zv);
                            dy[[b, t, h, p]] = g * silu(zv);
                            dz[[b, t, h, p]] = g * y[[b, t, h, p]] * s * (1.0 + zv * (1.0 - s));
                        }
                        _ => dy[[b, t, h, p]] = g,
                    }
                }
            }
        }
    }
    let dd = d.as_ref().map(|d| {
        let mut dd = ArrayD::<f64>::zeros(IxDyn(d.shape()));
        for h in 0..nh {
            for p in 0..np {
                let mut acc = 0.0;
                for b in 0..nb {
                    for t in 0..l {
                        acc += dy[[b, t, h, p]] * x_blhp[[b, t, h, p]];
                    }
                }
                if d.ndim() == 1 {
                    dd[[h]] += acc;
                } else {
                    dd[[h, p]] = acc;
                }
            }
        }
        dd
    });
    Ok((dy, dz, dd))
}
