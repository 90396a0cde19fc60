//! `chunk_scan_bwd_dz` [_chunk_scan_bwd_dz]: the gradient through the `z` gate and the skip `D`.
//!
//! With `out = y ⊙ silu(z)` (`y` the pre-gate output, `D x` included):
//! `dy = dout ⊙ silu(z)`, `dz = dout ⊙ y ⊙ σ(z)(1 + z(1 − σ(z)))`, and
//! `dD = Σ_{b,l} dy ⊙ x` (summed over p too when `D` is (h)). Without `z`, `dy = dout`.
//!
//! Elementwise along p (SIMD); `dD` is summed per tile in f32 lanes and the tiles' partial sums
//! in f64 in tile order.

use crate::geom::flat;
use crate::par::{for_each_tile, split_mut, Par};
use crate::simd::{load_partial, pad, store_partial, V, W};
use crate::SsdError;
use ndarray::{Array4, ArrayD, ArrayView4, ArrayViewD, IxDyn};
use ssd_reference::validate::{check_d, check_shape};

/// Rows of (b·l) per tile of the standalone kernel.
const ROWS: usize = 64;

/// `σ(v)` with the exponent capped as in `crate::simd::silu`.
#[inline(always)]
pub(crate) fn sigmoid(v: V) -> V {
    V::ONE / (V::ONE + (-v).fast_min(V::splat(87.0)).exp())
}

/// One row of channels, in place: `buf` holds `y` on entry and `dy = dout ⊙ silu(z)` on exit;
/// `dz = dout ⊙ y ⊙ σ(z)(1 + z(1 − σ(z)))`.
#[inline]
pub(crate) fn gate_row(dout: &[f32], z: &[f32], buf: &mut [f32], dz: &mut [f32]) {
    let n = buf.len();
    for j in (0..n).step_by(W) {
        let g = load_partial(&dout[j..n]);
        let zv = load_partial(&z[j..n]);
        let y = load_partial(&buf[j..n]);
        let s = sigmoid(zv);
        store_partial(&mut buf[j..n], g * zv * s);
        let ds = s * (V::ONE + zv * (V::ONE - s));
        store_partial(&mut dz[j..n], g * y * ds);
    }
}

/// `acc[v] += dy[8v..] ⊙ x[8v..]` over one row.
#[inline]
pub(crate) fn dd_row(dy: &[f32], x: &[f32], acc: &mut [f32]) {
    let n = dy.len();
    for j in (0..n).step_by(W) {
        let a = load_partial(&acc[j..]);
        let v = load_partial(&dy[j..n]).mul_add(load_partial(&x[j..n]), a);
        store_partial(&mut acc[j..], v);
    }
}

/// `dD` in the shape of `D` ((h) or (h, p)) from partial sums `(head, sums over p)` given in a
/// fixed order, summed in f64.
pub(crate) fn dd_from_partials<'a>(
    d_shape: &[usize],
    nh: usize,
    np: usize,
    parts: impl Iterator<Item = (usize, &'a [f32])>,
) -> ArrayD<f32> {
    let mut acc = vec![0.0f64; nh * np];
    for (h, part) in parts {
        for p in 0..np {
            acc[h * np + p] += part[p] as f64;
        }
    }
    let mut dd = ArrayD::<f32>::zeros(IxDyn(d_shape));
    if d_shape.len() == 1 {
        for h in 0..nh {
            dd[[h]] = acc[h * np..(h + 1) * np].iter().sum::<f64>() as f32;
        }
    } else {
        for h in 0..nh {
            for p in 0..np {
                dd[[h, p]] = acc[h * np + p] as f32;
            }
        }
    }
    dd
}

/// Returns `(dy_blhp, dz_blhp?, dd?)`: `dz` when `z` is given, `dd` (the shape of `D`) when `D`
/// is. `y_blhp` (the output before the gate) is needed iff `z` is given.
///
/// Errors: shapes (`dout`, `y`, `z`, `D`), `z` without `y`.
pub fn chunk_scan_bwd_dz(
    dout_blhp: ArrayView4<'_, f32>,
    x_blhp: ArrayView4<'_, f32>,
    y_blhp: Option<ArrayView4<'_, f32>>,
    z_blhp: Option<ArrayView4<'_, f32>>,
    d: Option<ArrayViewD<'_, f32>>,
    par: Par,
) -> Result<(Array4<f32>, Option<Array4<f32>>, Option<ArrayD<f32>>), SsdError> {
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
    let (dout, x) = (flat(&dout_blhp), flat(&x_blhp));
    let z = z_blhp.as_ref().map(flat);
    let mut dy = match (&z_blhp, &y_blhp) {
        (Some(_), Some(y)) => y.as_standard_layout().into_owned(),
        _ => dout_blhp.as_standard_layout().into_owned(),
    };
    let mut dz = z_blhp
        .as_ref()
        .map(|_| Array4::<f32>::zeros((nb, l, nh, np)));
    let row = nh * np;
    let nrows = nb * l;
    let ntiles = nrows.div_ceil(ROWS);
    let pp = pad(np);
    let mut parts = vec![0.0f32; ntiles * nh * pp];
    if row > 0 && (z.is_some() || d.is_some()) {
        let dy_s = dy.as_slice_mut().expect("owned array is contiguous");
        let dz_tiles: Vec<Option<&mut [f32]>> = match dz.as_mut() {
            Some(a) => a
                .as_slice_mut()
                .expect("owned array is contiguous")
                .chunks_mut(ROWS * row)
                .map(Some)
                .collect(),
            None => (0..ntiles).map(|_| None).collect(),
        };
        let tiles: Vec<_> = dy_s
            .chunks_mut(ROWS * row)
            .zip(dz_tiles)
            .zip(split_mut(&mut parts, ntiles, nh * pp))
            .enumerate()
            .collect();
        let with_d = d.is_some();
        for_each_tile(
            par,
            tiles,
            || (),
            |_, (ti, ((dyt, mut dzt), part))| {
                for (ri, dyr) in dyt.chunks_mut(row).enumerate() {
                    let r = ti * ROWS + ri;
                    for h in 0..nh {
                        let o = r * row + h * np;
                        let dyh = &mut dyr[h * np..(h + 1) * np];
                        if let (Some(z), Some(dzt)) = (z.as_deref(), dzt.as_deref_mut()) {
                            let dzh = &mut dzt[ri * row + h * np..][..np];
                            gate_row(&dout[o..o + np], &z[o..o + np], dyh, dzh);
                        }
                        if with_d {
                            dd_row(dyh, &x[o..o + np], &mut part[h * pp..(h + 1) * pp]);
                        }
                    }
                }
            },
        );
    }
    let dd = d.as_ref().map(|d| {
        dd_from_partials(
            d.shape(),
            nh,
            np,
            (0..ntiles).flat_map(|t| {
                let parts = &parts;
                (0..nh).map(move |h| (h, &parts[(t * nh + h) * pp..][..pp]))
            }),
        )
    });
    Ok((dy, dz, dd))
}
