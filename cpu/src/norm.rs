//! `rmsnorm_gated` [RMSNormGated] and `swiglu` [swiglu], forward, SIMD along the features.
//!
//! `rmsnorm_gated`: over each group of `group_size` consecutive features of a row,
//! `norm(v) = v / sqrt(mean(v²) + eps)`; with `norm_before_gate`: `out = norm(x) ⊙ w ⊙ silu(z)`,
//! otherwise `out = norm(x ⊙ silu(z)) ⊙ w`. `swiglu(x, y) = silu(x) ⊙ y`.

use crate::geom::flat;
use crate::par::{for_each_tile, Par};
use crate::simd::{load_partial, silu, store_partial, V, W};
use crate::SsdError;
use ndarray::{Array2, ArrayD, ArrayView1, ArrayView2, ArrayViewD};
use ssd_reference::validate::{check_finite, check_shape};
use ssd_reference::{validate_rmsnorm, RmsNormOptions};

/// Rows per tile of `rmsnorm_gated`, elements per tile of `swiglu`.
const ROWS: usize = 16;
const ELEMS: usize = 1 << 14;

/// Gated RMSNorm over the rows of `x` (rows, d); `weight` (d); `z` (rows, d).
///
/// ```
/// use ndarray::{array, Array1};
/// use ssd_cpu::{rmsnorm_gated, Par};
/// use ssd_reference::RmsNormOptions;
/// let x = array![[1.0f32, -2.0, 3.0, -4.0]];
/// let w = Array1::<f32>::ones(4);
/// let out = rmsnorm_gated(x.view(), w.view(), None, &RmsNormOptions::default(), Par::Seq)?;
/// let rms = (30.0f32 / 4.0 + 1e-5).sqrt();
/// assert!((out[[0, 3]] + 4.0 / rms).abs() < 1e-6);
/// # Ok::<(), ssd_cpu::SsdError>(())
/// ```
pub fn rmsnorm_gated(
    x: ArrayView2<'_, f32>,
    weight: ArrayView1<'_, f32>,
    z: Option<ArrayView2<'_, f32>>,
    options: &RmsNormOptions,
    par: Par,
) -> Result<Array2<f32>, SsdError> {
    let gs = validate_rmsnorm(&x, &weight, z.as_ref(), options)?;
    let (rows, nd) = x.dim();
    let mut out = Array2::<f32>::zeros((rows, nd));
    if rows == 0 || nd == 0 {
        return Ok(out);
    }
    let (xf, wf) = (flat(&x), flat(&weight));
    let zf = z.as_ref().map(flat);
    let tiles: Vec<_> = out
        .as_slice_mut()
        .expect("owned array is contiguous")
        .chunks_mut(ROWS * nd)
        .enumerate()
        .collect();
    for_each_tile(
        par,
        tiles,
        || (),
        |_, (ti, o)| {
            for (ri, orow) in o.chunks_mut(nd).enumerate() {
                let r = ti * ROWS + ri;
                let xrow = &xf[r * nd..][..nd];
                let zrow = zf.as_deref().map(|z| &z[r * nd..][..nd]);
                for g0 in (0..nd).step_by(gs) {
                    let end = g0 + gs;
                    let mut ss = V::ZERO;
                    for j in (g0..end).step_by(W) {
                        let mut v = load_partial(&xrow[j..end]);
                        if let (Some(zr), false) = (zrow, options.norm_before_gate) {
                            v *= silu(load_partial(&zr[j..end]));
                        }
                        ss = v.mul_add(v, ss);
                        store_partial(&mut orow[j..end], v);
                    }
                    let ms = ss.reduce_add() as f64 / gs as f64;
                    let rstd = V::splat((1.0 / (ms + options.eps).sqrt()) as f32);
                    for j in (g0..end).step_by(W) {
                        let mut v = load_partial(&orow[j..end]) * rstd * load_partial(&wf[j..end]);
                        if let (Some(zr), true) = (zrow, options.norm_before_gate) {
                            v *= silu(load_partial(&zr[j..end]));
                        }
                        store_partial(&mut orow[j..end], v);
                    }
                }
            }
        },
    );
    Ok(out)
}

/// `silu(x) ⊙ y` over two arrays of one shape.
///
/// ```
/// use ndarray::array;
/// use ssd_cpu::{swiglu, Par};
/// let x = array![0.0f32, 1.0].into_dyn();
/// let y = array![2.0f32, 3.0].into_dyn();
/// let out = swiglu(x.view(), y.view(), Par::Seq)?;
/// assert_eq!(out[[0]], 0.0);
/// assert!((out[[1]] - 3.0 / (1.0 + (-1.0f32).exp())).abs() < 1e-6);
/// # Ok::<(), ssd_cpu::SsdError>(())
/// ```
pub fn swiglu(
    x: ArrayViewD<'_, f32>,
    y: ArrayViewD<'_, f32>,
    par: Par,
) -> Result<ArrayD<f32>, SsdError> {
    check_shape("y", x.shape(), y.shape())?;
    check_finite("x", &x)?;
    check_finite("y", &y)?;
    let mut out = ArrayD::<f32>::zeros(x.raw_dim());
    let (xf, yf) = (flat(&x), flat(&y));
    let tiles: Vec<_> = out
        .as_slice_mut()
        .expect("owned array is contiguous")
        .chunks_mut(ELEMS)
        .enumerate()
        .collect();
    for_each_tile(
        par,
        tiles,
        || (),
        |_, (ti, o)| {
            let (xs, ys) = (&xf[ti * ELEMS..], &yf[ti * ELEMS..]);
            for j in (0..o.len()).step_by(W) {
                let end = o.len();
                let v = silu(load_partial(&xs[j..end])) * load_partial(&ys[j..end]);
                store_partial(&mut o[j..end], v);
            }
        },
    );
    Ok(out)
}
