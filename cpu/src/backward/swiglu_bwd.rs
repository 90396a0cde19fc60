//! `swiglu_bwd`: the backward of `swiglu`, `out = silu(x) ⊙ y`:
//! `dx = dout ⊙ y ⊙ σ(x)(1 + x(1 − σ(x)))`, `dy = dout ⊙ silu(x)`. Elementwise (SIMD), tiles of
//! consecutive elements.

use super::chunk_scan_bwd_dz::sigmoid;
use crate::geom::flat;
use crate::par::{for_each_tile, Par};
use crate::simd::{load_partial, store_partial, V, W};
use crate::SsdError;
use ndarray::{ArrayD, ArrayViewD};
use ssd_reference::validate::{check_finite, check_shape};

/// Elements per tile.
const ELEMS: usize = 1 << 14;

/// SwiGLU backward: returns `(dx, dy)` for `out = silu(x) ⊙ y`.
///
/// Errors: shapes (`y`, `dout`), non-finite inputs.
///
/// ```
/// use ndarray::array;
/// use ssd_cpu::{swiglu_bwd, Par};
/// let x = array![0.0f32, 1.0].into_dyn();
/// let y = array![2.0f32, 3.0].into_dyn();
/// let g = array![1.0f32, 1.0].into_dyn();
/// let (dx, dy) = swiglu_bwd(x.view(), y.view(), g.view(), Par::Seq)?;
/// assert!((dx[[0]] - 1.0).abs() < 1e-6); // y · silu'(0) = 2 · ½
/// assert_eq!(dy[[0]], 0.0);
/// # Ok::<(), ssd_cpu::SsdError>(())
/// ```
pub fn swiglu_bwd(
    x: ArrayViewD<'_, f32>,
    y: ArrayViewD<'_, f32>,
    dout: ArrayViewD<'_, f32>,
    par: Par,
) -> Result<(ArrayD<f32>, ArrayD<f32>), SsdError> {
    check_shape("y", x.shape(), y.shape())?;
    check_shape("dout", x.shape(), dout.shape())?;
    check_finite("x", &x)?;
    check_finite("y", &y)?;
    check_finite("dout", &dout)?;
    let mut dx = ArrayD::<f32>::zeros(x.raw_dim());
    let mut dy = ArrayD::<f32>::zeros(x.raw_dim());
    let (xf, yf, gf) = (flat(&x), flat(&y), flat(&dout));
    let tiles: Vec<_> = dx
        .as_slice_mut()
        .expect("owned array is contiguous")
        .chunks_mut(ELEMS)
        .zip(
            dy.as_slice_mut()
                .expect("owned array is contiguous")
                .chunks_mut(ELEMS),
        )
        .enumerate()
        .collect();
    for_each_tile(
        par,
        tiles,
        || (),
        |_, (ti, (dxt, dyt))| {
            let o = ti * ELEMS;
            let n = dxt.len();
            let (xs, ys, gs) = (&xf[o..o + n], &yf[o..o + n], &gf[o..o + n]);
            for j in (0..n).step_by(W) {
                let xv = load_partial(&xs[j..]);
                let g = load_partial(&gs[j..]);
                let s = sigmoid(xv);
                let ds = s * (V::ONE + xv * (V::ONE - s));
                store_partial(&mut dxt[j..], g * load_partial(&ys[j..]) * ds);
                store_partial(&mut dyt[j..], g * xv * s);
            }
        },
    );
    Ok((dx, dy))
}
