//! `rmsnorm_gated_bwd`: the backward of `rmsnorm_gated`, by the chain rule.
//!
//! Per normalisation group of `v` (`v = x ⊙ silu(z)`, or `v = x` with `norm_before_gate`),
//! `r = (mean(v²) + eps)^{−1/2}`, `n = v r`: with `dn` the gradient of `n`,
//! `dv_j = r dn_j − r³ v_j Σ_k dn_k v_k / group_size` (for a group of one, the equal
//! `dn eps r³`, which does not cancel). Gate after the norm
//! (`out = n ⊙ w ⊙ silu(z)`): `dn = dout ⊙ w ⊙ silu(z)`, `dw = Σ_rows dout ⊙ n ⊙ silu(z)`,
//! `dz = dout ⊙ n ⊙ w ⊙ silu'(z)`, `dx = dv`. Gate before the norm (`out = n ⊙ w`):
//! `dn = dout ⊙ w`, `dw = Σ_rows dout ⊙ n`, `dx = dv ⊙ silu(z)`, `dz = dv ⊙ x ⊙ silu'(z)`.
//! `silu'(z) = σ(z)(1 + z(1 − σ(z)))`.
//!
//! Tiles of rows, SIMD along the features; `dw` is summed per tile in f32 and over the tiles in
//! f64 in tile order.

use super::chunk_scan_bwd_dz::sigmoid;
use crate::geom::flat;
use crate::par::{for_each_tile, split_mut, Par};
use crate::simd::{load_partial, store_partial, V, W};
use crate::SsdError;
use ndarray::{Array1, Array2, ArrayView1, ArrayView2};
use ssd_reference::validate::{check_finite, check_shape};
use ssd_reference::{validate_rmsnorm, RmsNormOptions};

/// Rows per tile.
const ROWS: usize = 16;

/// Gated RMSNorm backward over rows of `x` (rows, d): returns `(dx, dweight, dz?)`, `dz` when
/// `z` is given.
///
/// Errors: shapes (`weight`, `z`, `dout`), `eps ≤ 0`, a group size that does not divide d,
/// non-finite inputs.
///
/// ```
/// use ndarray::{array, Array1};
/// use ssd_cpu::{rmsnorm_gated_bwd, Par};
/// use ssd_reference::RmsNormOptions;
/// let x = array![[1.0f32, -2.0, 3.0, -4.0]];
/// let w = Array1::<f32>::ones(4);
/// let dout = array![[1.0f32, 0.0, 0.0, 0.0]];
/// let (dx, dw, dz) = rmsnorm_gated_bwd(x.view(), w.view(), None, dout.view(),
///     &RmsNormOptions::default(), Par::Seq)?;
/// assert!(dz.is_none());
/// let r = 1.0 / (30.0f32 / 4.0 + 1e-5).sqrt();
/// assert!((dw[0] - r).abs() < 1e-6);
/// assert!((dx[[0, 0]] - (r - r * r * r / 4.0)).abs() < 1e-6);
/// # Ok::<(), ssd_cpu::SsdError>(())
/// ```
pub fn rmsnorm_gated_bwd(
    x: ArrayView2<'_, f32>,
    weight: ArrayView1<'_, f32>,
    z: Option<ArrayView2<'_, f32>>,
    dout: ArrayView2<'_, f32>,
    options: &RmsNormOptions,
    par: Par,
) -> Result<(Array2<f32>, Array1<f32>, Option<Array2<f32>>), SsdError> {
    let gs = validate_rmsnorm(&x, &weight, z.as_ref(), options)?;
    check_shape("dout", x.shape(), dout.shape())?;
    check_finite("dout", &dout)?;
    let (rows, nd) = x.dim();
    let mut dx = Array2::<f32>::zeros((rows, nd));
    let mut dz = z.as_ref().map(|_| Array2::<f32>::zeros((rows, nd)));
    if rows == 0 || nd == 0 {
        return Ok((dx, Array1::zeros(nd), dz));
    }
    let (xf, wf, gf) = (flat(&x), flat(&weight), flat(&dout));
    let zf = z.as_ref().map(flat);
    let ntiles = rows.div_ceil(ROWS);
    let mut parts = vec![0.0f32; ntiles * nd];
    let dz_tiles: Vec<Option<&mut [f32]>> = match dz.as_mut() {
        Some(a) => a
            .as_slice_mut()
            .expect("owned array is contiguous")
            .chunks_mut(ROWS * nd)
            .map(Some)
            .collect(),
        None => (0..ntiles).map(|_| None).collect(),
    };
    let tiles: Vec<_> = dx
        .as_slice_mut()
        .expect("owned array is contiguous")
        .chunks_mut(ROWS * nd)
        .zip(dz_tiles)
        .zip(split_mut(&mut parts, ntiles, nd))
        .enumerate()
        .collect();
    let nbg = options.norm_before_gate;
    for_each_tile(
        par,
        tiles,
        || (vec![0.0f32; gs], vec![0.0f32; gs]),
        |(vb, dnb), (ti, ((dxt, mut dzt), dw))| {
            for (ri, dxr) in dxt.chunks_mut(nd).enumerate() {
                let r = ti * ROWS + ri;
                let xr = &xf[r * nd..][..nd];
                let gr = &gf[r * nd..][..nd];
                let zr = zf.as_deref().map(|z| &z[r * nd..][..nd]);
                let mut dzr = dzt.as_deref_mut().map(|d| &mut d[ri * nd..][..nd]);
                for g0 in (0..nd).step_by(gs) {
                    let end = g0 + gs;
                    // v and its mean square
                    let mut ss = V::ZERO;
                    for j in (g0..end).step_by(W) {
                        let mut v = load_partial(&xr[j..end]);
                        if let (Some(zr), false) = (zr, nbg) {
                            let zv = load_partial(&zr[j..end]);
                            v *= zv * sigmoid(zv);
                        }
                        ss = v.mul_add(v, ss);
                        store_partial(&mut vb[j - g0..], v);
                    }
                    let ms = ss.reduce_add() as f64 / gs as f64;
                    let rstd = 1.0 / (ms + options.eps).sqrt();
                    let r1 = V::splat(rstd as f32);
                    // dn, dw, dz (gate after the norm), Σ dn v
                    let mut dot = V::ZERO;
                    for j in (g0..end).step_by(W) {
                        let k = j - g0;
                        let v = load_partial(&vb[k..gs]);
                        let go = load_partial(&gr[j..end]);
                        let wv = load_partial(&wf[j..end]);
                        let nv = v * r1;
                        let dn = if nbg {
                            let (gate, dgate) = match zr {
                                Some(zr) => {
                                    let zv = load_partial(&zr[j..end]);
                                    let s = sigmoid(zv);
                                    (zv * s, s * (V::ONE + zv * (V::ONE - s)))
                                }
                                None => (V::ONE, V::ZERO),
                            };
                            let o = load_partial(&dw[j..end]);
                            store_partial(&mut dw[j..end], (go * nv).mul_add(gate, o));
                            if let Some(dzr) = dzr.as_deref_mut() {
                                store_partial(&mut dzr[j..end], go * nv * wv * dgate);
                            }
                            go * wv * gate
                        } else {
                            let o = load_partial(&dw[j..end]);
                            store_partial(&mut dw[j..end], go.mul_add(nv, o));
                            go * wv
                        };
                        dot = dn.mul_add(v, dot);
                        store_partial(&mut dnb[k..], dn);
                    }
                    let r3 = V::splat((rstd * rstd * rstd / gs as f64) as f32);
                    let dotv = V::splat(dot.reduce_add());
                    // One feature per group: dv = r dn (1 − v² r²) = dn eps r³ exactly; the
                    // difference form would cancel to eps / (v² + eps) of its terms.
                    let r_eps = V::splat((options.eps * rstd * rstd * rstd) as f32);
                    for j in (g0..end).step_by(W) {
                        let k = j - g0;
                        let v = load_partial(&vb[k..gs]);
                        let dv = if gs == 1 {
                            load_partial(&dnb[k..gs]) * r_eps
                        } else {
                            r1 * load_partial(&dnb[k..gs]) - r3 * v * dotv
                        };
                        match (zr, nbg) {
                            (Some(zr), false) => {
                                let zv = load_partial(&zr[j..end]);
                                let s = sigmoid(zv);
                                store_partial(&mut dxr[j..end], dv * zv * s);
                                if let Some(dzr) = dzr.as_deref_mut() {
                                    let ds = s * (V::ONE + zv * (V::ONE - s));
                                    let xv = load_partial(&xr[j..end]);
                                    store_partial(&mut dzr[j..end], dv * xv * ds);
                                }
                            }
                            _ => store_partial(&mut dxr[j..end], dv),
                        }
                    }
                }
            }
        },
    );
    let mut dw = Array1::<f32>::zeros(nd);
    for j in 0..nd {
        let mut acc = 0.0f64;
        for t in 0..ntiles {
            acc += parts[t * nd + j] as f64;
        }
        dw[j] = acc as f32;
    }
    Ok((dx, dw, dz))
}
