//! `selective_state_update` [selective_state_update]: one decode step, state updated in place.
//!
//! For each row `b` (state slot `i = state_batch_indices[b]`, or `b`) and head `h`:
//! `H = exp(Δ A) H + Δ x ⊗ B`, `y = H C + D ⊙ x`, `out = y ⊙ silu(z)`, with the chunked op's dt
//! processing. A negative slot marks a padding row: its output is 0 and no state is touched.
//!
//! Per (row, head) tile, SIMD along n; the step streams the state once (read and write), so it
//! is bound by memory bandwidth.

use crate::geom::flat;
use crate::par::{for_each_tile, Par};
use crate::simd::{load, load_partial, process_dt, silu, store, store_partial, V, W};
use crate::SsdError;
use ndarray::{Array3, ArrayViewMut3, ArrayViewMut4};
use ssd_reference::validate::check_shape;
use ssd_reference::{validate_decode, DecodeInputs, DecodeOptions};

/// One decode step: updates `state` (pool, h, p, n) in place and returns `out` (b, h, p).
///
/// Errors: everything [`ssd_reference::validate_decode`] checks (shapes, groups, `A > 0`,
/// non-finite inputs, `dt_limit`, slots out of range or used twice).
///
/// A decode loop (one token per step, the state carried in place):
///
/// ```
/// use ndarray::{Array1, Array2, Array3, Array4};
/// use ssd_cpu::{selective_state_update, Par};
/// use ssd_reference::{DecodeInputs, DecodeOptions};
///
/// let (b, h, p, g, n) = (2, 4, 8, 1, 16);
/// let a = Array1::<f32>::from_elem(h, -1.0);
/// let mut state = Array4::<f32>::zeros((b, h, p, n));
/// let options = DecodeOptions { dt_softplus: true, ..DecodeOptions::default() };
/// for t in 0..5 {
///     let x = Array3::<f32>::from_elem((b, h, p), 0.1 * t as f32);
///     let dt = Array2::<f32>::from_elem((b, h), -2.0);
///     let bm = Array3::<f32>::from_elem((b, g, n), 0.2);
///     let cm = Array3::<f32>::from_elem((b, g, n), 0.3);
///     let inputs = DecodeInputs {
///         x: x.view(), dt: dt.view(), a: a.view(), b: bm.view(), c: cm.view(),
///         d: None, z: None, dt_bias: None, state_batch_indices: None,
///     };
///     let y = selective_state_update(state.view_mut(), &inputs, &options, Par::Seq)?;
///     assert_eq!(y.dim(), (b, h, p));
/// }
/// assert!(state.iter().all(|v| v.is_finite()) && state[[0, 0, 0, 0]] > 0.0);
/// # Ok::<(), ssd_cpu::SsdError>(())
/// ```
pub fn selective_state_update(
    state: ArrayViewMut4<'_, f32>,
    inputs: &DecodeInputs<'_, f32>,
    options: &DecodeOptions,
    par: Par,
) -> Result<Array3<f32>, SsdError> {
    let (nb, nh, np) = inputs.x.dim();
    let mut out = Array3::<f32>::zeros((nb, nh, np));
    selective_state_update_into(state, inputs, options, out.view_mut(), par)?;
    Ok(out)
}

/// [`selective_state_update`] writing `out` (b, h, p) into a caller buffer.
pub fn selective_state_update_into(
    mut state: ArrayViewMut4<'_, f32>,
    inputs: &DecodeInputs<'_, f32>,
    options: &DecodeOptions,
    mut out: ArrayViewMut3<'_, f32>,
    par: Par,
) -> Result<(), SsdError> {
    let d = validate_decode(inputs, state.shape(), options)?;
    check_shape("out", &[d.batch, d.nheads, d.headdim], out.shape())?;
    let mut state_tmp = None;
    let st: &mut [f32] = match state.as_slice_mut() {
        Some(s) => s,
        None => state_tmp.insert(state.iter().copied().collect::<Vec<f32>>()),
    };
    let mut out_tmp = None;
    let o: &mut [f32] = match out.as_slice_mut() {
        Some(s) => s,
        None => out_tmp.insert(vec![0.0f32; out.len()]),
    };
    step(d, st, inputs, options, o, par);
    if let Some(s) = state_tmp {
        for (dst, v) in state.iter_mut().zip(s) {
            *dst = v;
        }
    }
    if let Some(s) = out_tmp {
        for (dst, v) in out.iter_mut().zip(s) {
            *dst = v;
        }
    }
    Ok(())
}

fn step(
    d: ssd_reference::DecodeDims,
    state: &mut [f32],
    inputs: &DecodeInputs<'_, f32>,
    options: &DecodeOptions,
    out: &mut [f32],
    par: Par,
) {
    let (nb, nh, np, ng, nn) = (d.batch, d.nheads, d.headdim, d.ngroups, d.dstate);
    let (x, dt, a, bm, cm) = (
        flat(&inputs.x),
        flat(&inputs.dt),
        flat(&inputs.a),
        flat(&inputs.b),
        flat(&inputs.c),
    );
    let z = inputs.z.as_ref().map(flat);
    let bias = inputs.dt_bias.as_ref().map(flat);
    let idx = inputs.state_batch_indices.as_ref().map(flat);
    let pp = crate::simd::pad(np);
    let dtab = inputs
        .d
        .as_ref()
        .map(|dv| crate::forward::chunk_scan::d_table(dv, nh, np, pp));
    let slab = np * nn;
    let hpg = nh / ng.max(1);
    // Hand each row the state slots it owns (distinct, checked by validation).
    let mut slots: Vec<Option<&mut [f32]>> = if nh * slab == 0 {
        Vec::new()
    } else {
        state.chunks_mut(nh * slab).map(Some).collect()
    };
    out.fill(0.0);
    let mut tiles = Vec::with_capacity(nb * nh);
    let mut out_rows: Vec<Option<&mut [f32]>> = if nh * np == 0 {
        Vec::new()
    } else {
        out.chunks_mut(nh * np).map(Some).collect()
    };
    for b in 0..nb {
        let slot = match &idx {
            Some(ix) if ix[b] < 0 => continue,
            Some(ix) => ix[b] as usize,
            None => b,
        };
        let (Some(Some(st)), Some(Some(o))) = (
            slots.get_mut(slot).map(Option::take),
            out_rows.get_mut(b).map(Option::take),
        ) else {
            continue;
        };
        for (h, (s, oh)) in st.chunks_mut(slab).zip(o.chunks_mut(np)).enumerate() {
            tiles.push((b, h, s, oh));
        }
    }
    for_each_tile(
        par,
        tiles,
        || vec![0.0f32; pp],
        |y, (b, h, s, o)| {
            let gg = h / hpg;
            let delta = process_dt(
                dt[b * nh + h],
                bias.as_deref().map_or(0.0, |v| v[h]),
                options.dt_softplus,
                options.dt_limit,
            );
            let decay = V::splat((delta * a[h] as f64).exp() as f32);
            let delta = delta as f32;
            let brow = &bm[(b * ng + gg) * nn..][..nn];
            let crow = &cm[(b * ng + gg) * nn..][..nn];
            let xrow = &x[(b * nh + h) * np..][..np];
            let full = nn / W * W;
            for p in 0..np {
                let dx = V::splat(delta * xrow[p]);
                let row = &mut s[p * nn..][..nn];
                let mut acc = [V::ZERO; 4];
                for (k, j) in (0..full).step_by(W).enumerate() {
                    let hv = load(&row[j..]);
                    let hv = load(&brow[j..]).mul_add(dx, hv * decay);
                    store(&mut row[j..], hv);
                    acc[k % 4] = hv.mul_add(load(&crow[j..]), acc[k % 4]);
                }
                if full < nn {
                    let hv = load_partial(&row[full..]);
                    let hv = load_partial(&brow[full..]).mul_add(dx, hv * decay);
                    store_partial(&mut row[full..], hv);
                    acc[0] = hv.mul_add(load_partial(&crow[full..]), acc[0]);
                }
                y[p] = ((acc[0] + acc[1]) + (acc[2] + acc[3])).reduce_add();
            }
            for j in (0..pp).step_by(W) {
                let mut yv = load(&y[j..]);
                if let Some(dt) = &dtab {
                    yv = load(&dt[h * pp + j..]).mul_add(load_partial(&xrow[j..]), yv);
                }
                if let Some(z) = &z {
                    yv *= silu(load_partial(&z[(b * nh + h) * np + j..][..np - j]));
                }
                store_partial(&mut o[j..], yv);
            }
        },
    );
}
