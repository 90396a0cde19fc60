//! The literal recurrence in f32 [`ssd_reference::ssd_recurrent`], token by token:
//! `H_t = exp(Δ_t A) H_{t−1} + Δ_t x_t ⊗ B_t`, `y_t = H_t C_t + D ⊙ x_t`, `out_t = y_t ⊙ silu(z_t)`;
//! with `seq_idx`, `H` restarts from 0 at every change of id and the initial state applies only
//! if the row's first id is 0.
//!
//! Per (batch, head) tile, the state (p × n, n padded to 8) stays in L1; per token and row of
//! `H` one pass over n with SIMD (two rows at a time share the loads of `B` and `C`). It does
//! `≈ 4np` FLOPs per token and head like the chunked form, but as streaming updates of the
//! state instead of register-blocked products.

use super::{flat, Geom, Seq};
use crate::par::{for_each_tile, split_mut, Par};
use crate::simd::{load, load_partial, pad, process_dt, silu, store, store_partial, V, W};
use ndarray::{ArrayViewMut2, ArrayViewMut4, Axis};
use ssd_reference::{Inputs, Options};

/// Runs every (b, h) tile; writes `out` (standard layout) and `final_states` ((b, h, p, n)).
pub(crate) fn recurrent_core(
    g: &Geom,
    inputs: &Inputs<'_, f32>,
    options: &Options,
    out: ArrayViewMut4<'_, f32>,
    final_states: &mut [f32],
    par: Par,
) {
    let (x, dt, a, bm, cm) = (
        flat(&inputs.x),
        flat(&inputs.dt),
        flat(&inputs.a),
        flat(&inputs.b),
        flat(&inputs.c),
    );
    let z = inputs.z.as_ref().map(flat);
    let bias = inputs.dt_bias.as_ref().map(flat);
    let init = inputs.initial_states.as_ref().map(flat);
    let ids = inputs.seq_idx.as_ref().map(flat);
    let seq = Seq {
        ids: ids.as_deref(),
        l: g.l,
        q: 1,
    };
    let dtab = inputs
        .d
        .as_ref()
        .map(|d| super::chunk_scan::d_table(d, g.nh, g.np, g.pp));
    let np_ = pad(g.nn);
    let pn = g.np * g.nn;
    let mut views: Vec<ArrayViewMut2<'_, f32>> = Vec::with_capacity(g.nb * g.nh);
    let mut rest = out;
    for _ in 0..g.nb {
        let (head, tail) = rest.split_at(Axis(0), 1);
        rest = tail;
        let mut vb = head.index_axis_move(Axis(0), 0);
        for _ in 0..g.nh {
            let (vh, t) = vb.split_at(Axis(1), 1);
            vb = t;
            views.push(vh.index_axis_move(Axis(1), 0));
        }
    }
    let tiles: Vec<_> = views
        .into_iter()
        .zip(split_mut(final_states, g.nb * g.nh, pn))
        .enumerate()
        .collect();
    let scratch = || {
        (
            vec![0.0f32; g.np * np_],
            vec![0.0f32; np_],
            vec![0.0f32; np_],
            vec![0.0f32; g.pp],
        )
    };
    for_each_tile(
        par,
        tiles,
        scratch,
        |(hs, brow, crow, y), (i, (mut out, fin))| {
            let (b, h) = (i / g.nh, i % g.nh);
            let gg = h / g.hpg();
            let first_id = if g.l > 0 { seq.id(b, 0) } else { 0 };
            hs.fill(0.0);
            if let (Some(init), 0) = (&init, first_id) {
                for p in 0..g.np {
                    hs[p * np_..p * np_ + g.nn].copy_from_slice(&init[i * pn + p * g.nn..][..g.nn]);
                }
            }
            let bias = bias.as_deref().map_or(0.0, |v| v[h]);
            for t in 0..g.l {
                if t > 0 && seq.ids.is_some() && seq.id(b, t) != seq.id(b, t - 1) {
                    hs.fill(0.0);
                }
                let delta = process_dt(
                    dt[(b * g.l + t) * g.nh + h],
                    bias,
                    options.dt_softplus,
                    options.dt_limit,
                );
                let decay = V::splat((delta * a[h] as f64).exp() as f32);
                let delta = delta as f32;
                let bc = g.bc_at(b, t, gg);
                brow[..g.nn].copy_from_slice(&bm[bc..bc + g.nn]);
                crow[..g.nn].copy_from_slice(&cm[bc..bc + g.nn]);
                let xrow = &x[g.x_at(b, t, h)..][..g.np];
                let mut p = 0;
                while p + 2 <= g.np {
                    let (d0, d1) = (V::splat(delta * xrow[p]), V::splat(delta * xrow[p + 1]));
                    let (r0, r1) = hs[p * np_..(p + 2) * np_].split_at_mut(np_);
                    let (mut a0, mut a1) = ([V::ZERO; 2], [V::ZERO; 2]);
                    for (k, j) in (0..np_).step_by(W).enumerate() {
                        let (bv, cv) = (load(&brow[j..]), load(&crow[j..]));
                        let h0 = bv.mul_add(d0, load(&r0[j..]) * decay);
                        let h1 = bv.mul_add(d1, load(&r1[j..]) * decay);
                        store(&mut r0[j..], h0);
                        store(&mut r1[j..], h1);
                        a0[k % 2] = h0.mul_add(cv, a0[k % 2]);
                        a1[k % 2] = h1.mul_add(cv, a1[k % 2]);
                    }
                    y[p] = (a0[0] + a0[1]).reduce_add();
                    y[p + 1] = (a1[0] + a1[1]).reduce_add();
                    p += 2;
                }
                if p < g.np {
                    let d0 = V::splat(delta * xrow[p]);
                    let r0 = &mut hs[p * np_..(p + 1) * np_];
                    let mut a0 = V::ZERO;
                    for j in (0..np_).step_by(W) {
                        let h0 = load(&brow[j..]).mul_add(d0, load(&r0[j..]) * decay);
                        store(&mut r0[j..], h0);
                        a0 = h0.mul_add(load(&crow[j..]), a0);
                    }
                    y[p] = a0.reduce_add();
                }
                let mut orow = out.row_mut(t);
                let orow = orow.as_slice_mut().expect("tile rows are contiguous");
                let xo = g.x_at(b, t, h);
                for j in (0..g.pp).step_by(W) {
                    let mut yv = load(&y[j..]);
                    if let Some(dt) = &dtab {
                        yv = load(&dt[h * g.pp + j..]).mul_add(load_partial(&xrow[j..]), yv);
                    }
                    if let Some(z) = &z {
                        yv *= silu(load_partial(&z[xo + j..xo + g.np]));
                    }
                    store_partial(&mut orow[j..], yv);
                }
            }
            for p in 0..g.np {
                fin[p * g.nn..(p + 1) * g.nn].copy_from_slice(&hs[p * np_..p * np_ + g.nn]);
            }
        },
    );
}
