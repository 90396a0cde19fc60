//! The combined backward [_mamba_chunk_scan_combined_bwd]: recompute the forward intermediates
//! from the inputs, then the backward kernels, fused into five passes:
//!
//! 1. forward recompute: `chunk_cumsum` (tiles (b, h)), `chunk_state` (tiles (b, c, h)),
//!    `state_passing` (tiles (b, h)) — the states entering each chunk, `P_c`;
//! 2. tiles (b, c, g): `CB` of the group, then per head the pre-gate `y` (only with `z`),
//!    `chunk_scan_bwd_dz` (`dy`, `dz`, `dD` partial sums) and `chunk_scan_bwd_dstates` (`dP_c`);
//! 3. `state_passing_bwd` (tiles (b, h)): `dS_c`, `dinitial_states`, `ddA_chunk`;
//! 4. tiles (b, c, g): `CB` again, then per head `chunk_scan_bwd_dcb` (+ `W` for
//!    `chunk_scan_bwd_ddacs_stable`), `chunk_scan_chunk_state_bwd_dx`, `chunk_state_bwd_db`,
//!    `chunk_scan_bwd_dc`, the heads' `dB`, `dC`, `dCB` summed in head order inside the tile;
//!    then `bmm_chunk_bwd` on the group's `dCB`;
//! 5. tiles (b, h): the assembly of the A adjoint, `V[last] += ddA_chunk`, `ddA_prev` = reverse
//!    cumsum of `V`, `ddA = ddA_intra + ddA_next + ddA_prev` (f64), and `chunk_cumsum_bwd`.
//!
//! Sums over chunks and batch rows (`dD`, `dA`, `ddt_bias`) are formed from per-tile partial
//! sums in tile order, in f64: the results do not depend on the thread count.

use super::bmm_chunk_bwd::{bmm_bwd_group, mask_dcb};
use super::chunk_cumsum_bwd::{cumsum_bwd_row, finish};
use super::chunk_scan_bwd_dc::dc_head;
use super::chunk_scan_bwd_dcb::dcb_head;
use super::chunk_scan_bwd_ddacs_stable::intra_head;
use super::chunk_scan_bwd_dstates::dstates_tile;
use super::chunk_scan_bwd_dz::{dd_from_partials, dd_row, gate_row};
use super::chunk_scan_chunk_state_bwd_dx::{dx_head, DxArgs};
use super::chunk_state_bwd_db::db_head;
use super::pack::{
    decay_matrix, exclusive_prefix, group_tiles, local_geom, nnp, pack_rows, prefetch_rows,
    slab_to_pn_padded, transpose_packed, unpack_rows, Cum, Scratch,
};
use super::state_passing_bwd::state_passing_bwd_core;
use crate::forward::chunk_cumsum::chunk_cumsum_core;
use crate::forward::chunk_scan::d_table;
use crate::forward::chunk_state::{chunk_state_core, StateArgs};
use crate::forward::state_passing::state_passing_core;
use crate::geom::{ensure, flat, Geom, Seq};
use crate::par::{for_each_tile, split_mut, Par};
use crate::simd::{load, load_partial, prefetch_range, store, store_partial, V, W};
use crate::tile::{fma_rows, for_tiles, TileOp};
use crate::validate::{finite, validate};
use crate::SsdError;
use ndarray::{Array4, ArrayView4, ArrayViewMut2, ArrayViewMut3, Axis};
use ssd_reference::validate::check_shape;
use ssd_reference::{AAdjoint, Gradients, Inputs, Options};

/// Gradients of the SSD op w.r.t. every input, and the four contributions to the adjoint of the
/// per-step log decay `Δ_k A` (each (b, h, c, Q), 0 at padded positions), by the chunked
/// algorithm at `options.chunk_size`.
///
/// `dout` is (b, l, h, p); `dfinal_states` (b, h, p, n) seeds the final states (0 if absent):
/// the gradients are those of `Σ out · dout + Σ final_states · dfinal_states`. Like upstream's
/// backward it needs only the inputs: every forward intermediate is recomputed. Optional
/// gradients are present exactly when the input is (`dD` in the shape of `D`).
/// `ddA = intra + next + prev + chunk` and `dA_h = Σ ddA · Δ`.
///
/// Validates once (the checks and errors of [`ssd_reference::validate()`], the shapes of `dout`
/// and `dfinal_states`, and their finiteness); bad input is an [`SsdError`], never a panic.
///
/// A training step — forward, a loss, backward, one step of gradient descent:
///
/// ```
/// use ndarray::{Array1, Array3, Array4};
/// use ssd_cpu::{mamba_chunk_scan_combined, mamba_chunk_scan_combined_bwd, Par, SsdError};
/// use ssd_reference::{Inputs, Options};
///
/// let (b, l, h, p, g, n) = (1, 24, 2, 4, 1, 8);
/// let f = |i: usize| ((i * 7919 % 101) as f32 / 101.0) - 0.5;
/// let x = Array4::from_shape_fn((b, l, h, p), |(i, t, j, k)| f(i + 3 * t + 5 * j + 7 * k));
/// let dt = Array3::from_elem((b, l, h), 0.1f32);
/// let mut a = Array1::from_vec(vec![-1.0f32, -0.5]);
/// let mut bm = Array4::from_shape_fn((b, l, g, n), |(_, t, _, k)| f(11 + t + 13 * k) / 2.0);
/// let mut cm = Array4::from_shape_fn((b, l, g, n), |(_, t, _, k)| f(17 + 2 * t + 3 * k) / 2.0);
/// let target = Array4::from_shape_fn((b, l, h, p), |(_, t, j, k)| f(5 * t + j + 2 * k) / 4.0);
/// let options = Options::with_chunk_size(8);
///
/// // loss = ½ ‖out − target‖², so dout = out − target.
/// let step = |a: &Array1<f32>, bm: &Array4<f32>, cm: &Array4<f32>| {
///     let inputs = Inputs {
///         x: x.view(), dt: dt.view(), a: a.view(), b: bm.view(), c: cm.view(),
///         d: None, z: None, dt_bias: None, initial_states: None, seq_idx: None,
///     };
///     let fwd = mamba_chunk_scan_combined(&inputs, &options, Par::rayon(0))?;
///     let dout = &fwd.out - &target;
///     let loss = 0.5 * dout.iter().map(|v| v * v).sum::<f32>();
///     let (grads, adjoint) =
///         mamba_chunk_scan_combined_bwd(&inputs, &options, dout.view(), None, Par::rayon(0))?;
///     assert_eq!(adjoint.intra.dim(), (b, h, 3, 8));
///     Ok::<_, SsdError>((loss, grads))
/// };
/// let (loss0, grads) = step(&a, &bm, &cm)?;
/// let lr = 0.05;
/// a.zip_mut_with(&grads.da, |v, g| *v = (*v - lr * g).min(0.0)); // A stays ≤ 0
/// bm.zip_mut_with(&grads.db, |v, g| *v -= lr * g);
/// cm.zip_mut_with(&grads.dc, |v, g| *v -= lr * g);
/// let (loss1, _) = step(&a, &bm, &cm)?;
/// assert!(loss1 < loss0);
/// # Ok::<(), SsdError>(())
/// ```
pub fn mamba_chunk_scan_combined_bwd(
    inputs: &Inputs<'_, f32>,
    options: &Options,
    dout: ArrayView4<'_, f32>,
    dfinal_states: Option<ArrayView4<'_, f32>>,
    par: Par,
) -> Result<(Gradients<f32>, AAdjoint<f32>), SsdError> {
    mamba_chunk_scan_combined_bwd_with(
        inputs,
        options,
        dout,
        dfinal_states,
        &mut BackwardWorkspace::new(),
        par,
    )
}

/// Intermediate buffers of the combined backward (the recomputed Δ, cumsum and entering states,
/// `dS_c`, the per-head rows of the A adjoint, …), kept between calls of
/// [`mamba_chunk_scan_combined_bwd_with`] so that a training loop does not allocate and
/// first-touch tens of MiB per step. Any workspace works for any problem; it grows as needed.
#[derive(Debug, Default)]
pub struct BackwardWorkspace {
    dt: Vec<f32>,
    hi: Vec<f32>,
    lo: Vec<f32>,
    prev: Vec<f32>,
    ds: Vec<f32>,
    fin: Vec<f32>,
    dinit: Vec<f32>,
    dda_chunk: Vec<f32>,
    dd_parts: Vec<f32>,
    ddt_dir: Vec<f32>,
    intra: Vec<f32>,
    next: Vec<f32>,
    v: Vec<f32>,
    ddt_bhl: Vec<f32>,
}

impl BackwardWorkspace {
    /// An empty workspace.
    pub fn new() -> Self {
        Self::default()
    }
}

/// [`mamba_chunk_scan_combined_bwd`] with its intermediates in a reusable
/// [`BackwardWorkspace`] (the results are the same, bit for bit).
///
/// ```
/// # use ndarray::{Array1, Array3, Array4};
/// # use ssd_reference::{Inputs, Options};
/// use ssd_cpu::{mamba_chunk_scan_combined_bwd_with, BackwardWorkspace, Par};
/// # let (b, l, h, p, g, n) = (1, 16, 2, 4, 1, 8);
/// # let x = Array4::<f32>::ones((b, l, h, p));
/// # let dt = Array3::<f32>::from_elem((b, l, h), 0.1);
/// # let a = Array1::<f32>::from_elem(h, -1.0);
/// # let bm = Array4::<f32>::from_elem((b, l, g, n), 0.2);
/// # let inputs = Inputs { x: x.view(), dt: dt.view(), a: a.view(), b: bm.view(), c: bm.view(),
/// #     d: None, z: None, dt_bias: None, initial_states: None, seq_idx: None };
/// let dout = Array4::<f32>::ones((b, l, h, p));
/// let mut ws = BackwardWorkspace::new();
/// for _step in 0..3 {
///     let (grads, _) = mamba_chunk_scan_combined_bwd_with(
///         &inputs, &Options::with_chunk_size(8), dout.view(), None, &mut ws, Par::Seq)?;
///     assert_eq!(grads.dx.dim(), (b, l, h, p));
/// }
/// # Ok::<(), ssd_cpu::SsdError>(())
/// ```
pub fn mamba_chunk_scan_combined_bwd_with(
    inputs: &Inputs<'_, f32>,
    options: &Options,
    dout: ArrayView4<'_, f32>,
    dfinal_states: Option<ArrayView4<'_, f32>>,
    ws: &mut BackwardWorkspace,
    par: Par,
) -> Result<(Gradients<f32>, AAdjoint<f32>), SsdError> {
    let dims = validate(inputs, options, par)?;
    let (nb, l, nh, np, ng, nn) = (
        dims.batch,
        dims.seqlen,
        dims.nheads,
        dims.headdim,
        dims.ngroups,
        dims.dstate,
    );
    check_shape("dout", &[nb, l, nh, np], dout.shape())?;
    finite("dout", &dout, par)?;
    if let Some(v) = &dfinal_states {
        check_shape("dfinal_states", &[nb, nh, np, nn], v.shape())?;
        finite("dfinal_states", v, par)?;
    }
    let g = local_geom(dims, options.chunk_size);
    let (nc, q) = (g.nc, g.q);
    let x = flat(&inputs.x);
    let dt_in = flat(&inputs.dt);
    let a = flat(&inputs.a);
    let bm = flat(&inputs.b);
    let cm = flat(&inputs.c);
    let bias = inputs.dt_bias.as_ref().map(flat);
    let z = inputs.z.as_ref().map(flat);
    let init = inputs.initial_states.as_ref().map(flat);
    let ids = inputs.seq_idx.as_ref().map(flat);
    let dout = flat(&dout);
    let dfinal = dfinal_states.as_ref().map(flat);
    let dtab = inputs.d.as_ref().map(|d| d_table(d, nh, np, g.pp));
    let seq = Seq {
        ids: ids.as_deref(),
        l,
        q,
    };
    let (hpg, slab, nbchq) = (g.hpg(), g.slab(), nb * nc * nh * q);

    // 1. Forward intermediates: Δ, the cumsum pair, and the states entering each chunk.
    let BackwardWorkspace {
        dt,
        hi,
        lo,
        prev,
        ds,
        fin,
        dinit,
        dda_chunk,
        dd_parts,
        ddt_dir,
        intra,
        next,
        v: vv,
        ddt_bhl,
    } = ws;
    let dt = ensure(dt, nbchq);
    let hi = ensure(hi, nbchq);
    let lo = ensure(lo, nbchq);
    chunk_cumsum_core(&g, &dt_in, &a, bias.as_deref(), options, dt, hi, lo, par);
    let (dt, hi, lo) = (&*dt, &*hi, &*lo);
    let prev = ensure(prev, nb * nc * nh * slab);
    let sargs = StateArgs {
        x: &x,
        b: &bm,
        dt,
        hi,
        lo: Some(lo),
        seq,
    };
    chunk_state_core(&g, &sargs, prev, par);
    let fin = ensure(fin, nb * nh * np * nn);
    state_passing_core(&g, prev, hi, Some(lo), init.as_deref(), seq, fin, par);
    let prev = &*prev;
    let cx = Ctx {
        g,
        seq,
        cum: Cum {
            dt,
            hi,
            lo: Some(lo),
        },
        x: &x,
        bm: &bm,
        cm: &cm,
        z: z.as_deref(),
        dout: &dout,
        dtab: dtab.as_deref(),
        prev,
    };

    // 2. dy, dz, dD partial sums, dP_c.
    let mut dx = Array4::<f32>::zeros((nb, l, nh, np));
    let mut dz = z.as_ref().map(|_| Array4::<f32>::zeros((nb, l, nh, np)));
    let ds = ensure(ds, nb * nc * nh * slab);
    let ntiles = nb * nc * ng;
    let dd_parts = ensure(dd_parts, if dtab.is_some() { nbchq / q * g.pp } else { 0 });
    {
        let dz_tiles: Vec<Option<ArrayViewMut3<'_, f32>>> = match dz.as_mut() {
            Some(v) => group_tiles(&g, v.view_mut(), hpg)
                .into_iter()
                .map(Some)
                .collect(),
            None => (0..ntiles).map(|_| None).collect(),
        };
        let dd_len = if dtab.is_some() { hpg * g.pp } else { 0 };
        let tiles: Vec<_> = group_tiles(&g, dx.view_mut(), hpg)
            .into_iter()
            .zip(dz_tiles)
            .zip(split_mut(ds, ntiles, hpg * slab))
            .zip(split_mut(dd_parts, ntiles, dd_len))
            .enumerate()
            .collect();
        for_each_tile(
            par,
            tiles,
            || Scratch::new(&cx.g),
            |s, (i, (((dxt, dzt), dst), ddp))| {
                dout_tile(&cx, s, i, dxt, dzt, dst, ddp);
            },
        );
    }

    // 3. dS_c, dinitial_states, ddA_chunk.
    let dinit = ensure(dinit, nb * nh * np * nn);
    let dda_chunk = ensure(dda_chunk, nb * nh * nc);
    state_passing_bwd_core(
        &g,
        ds,
        prev,
        hi,
        Some(lo),
        dfinal.as_deref(),
        seq,
        dinit,
        dda_chunk,
        par,
    );
    let ds = &*ds;

    // 4. dx, ddt_direct, dB, dC, ddA_next, V, ddA_intra.
    let mut db = Array4::<f32>::zeros((nb, l, ng, nn));
    let mut dc = Array4::<f32>::zeros((nb, l, ng, nn));
    let ddt_dir = ensure(ddt_dir, nbchq);
    let intra = ensure(intra, nbchq);
    let next = ensure(next, nbchq);
    let vv = ensure(vv, nbchq);
    {
        let per = hpg * q;
        let rows: Vec<_> = split_mut(ddt_dir, ntiles, per)
            .into_iter()
            .zip(split_mut(intra, ntiles, per))
            .zip(split_mut(next, ntiles, per))
            .zip(split_mut(vv, ntiles, per))
            .map(|(((ddt, intra), next), v)| HeadRows {
                ddt,
                intra,
                next,
                v,
            })
            .collect();
        let tiles: Vec<_> = group_tiles(&g, dx.view_mut(), hpg)
            .into_iter()
            .zip(group_tiles(&g, db.view_mut(), 1))
            .zip(group_tiles(&g, dc.view_mut(), 1))
            .zip(rows)
            .enumerate()
            .collect();
        for_each_tile(
            par,
            tiles,
            || Scratch::new(&cx.g),
            |s, (i, (((dxt, dbt), dct), rows))| {
                grad_tile(&cx, s, i, dxt, dbt, dct, rows, ds);
            },
        );
    }

    // 5. The A adjoint and chunk_cumsum_bwd.
    let shape = (nb, nh, nc, q);
    let mut a_intra = Array4::<f32>::zeros(shape);
    let mut a_next = Array4::<f32>::zeros(shape);
    let mut a_prev = Array4::<f32>::zeros(shape);
    let mut a_chunk = Array4::<f32>::zeros(shape);
    let ddt_bhl = ensure(ddt_bhl, nb * nh * l);
    let mut sums = vec![(0.0f64, 0.0f64); nb * nh];
    {
        let row = nc * q;
        fn sl(v: &mut Array4<f32>, count: usize, row: usize) -> Vec<&mut [f32]> {
            split_mut(
                v.as_slice_mut().expect("owned array is contiguous"),
                count,
                row,
            )
        }
        let (ti, tn, tp, tc) = (
            sl(&mut a_intra, nb * nh, row),
            sl(&mut a_next, nb * nh, row),
            sl(&mut a_prev, nb * nh, row),
            sl(&mut a_chunk, nb * nh, row),
        );
        let tiles: Vec<_> = ti
            .into_iter()
            .zip(tn)
            .zip(tp)
            .zip(tc)
            .zip(split_mut(ddt_bhl, nb * nh, l))
            .zip(sums.iter_mut())
            .enumerate()
            .collect();
        let (intra, next, vv, ddt_dir) = (&*intra, &*next, &*vv, &*ddt_dir);
        let (dda_chunk, dt_in, a, bias) = (&*dda_chunk, &dt_in, &a, &bias);
        for_each_tile(
            par,
            tiles,
            || (vec![0.0f64; row], vec![0.0f32; row]),
            |(dda, ddtd), (i, (((((oi, on), op), oc), ddt_l), sum))| {
                let (b, h) = (i / nh, i % nh);
                for c in 0..nc {
                    let (_, len) = g.chunk(c);
                    let src = ((b * nc + c) * nh + h) * q;
                    let ch = dda_chunk[(b * nh + h) * nc + c];
                    let mut acc_v = 0.0f64;
                    for k in (0..len).rev() {
                        let j = c * q + k;
                        acc_v += vv[src + k] as f64;
                        oi[j] = intra[src + k];
                        on[j] = next[src + k];
                        op[j] = acc_v as f32;
                        oc[j] = ch;
                        dda[j] = intra[src + k] as f64 + next[src + k] as f64 + acc_v + ch as f64;
                        ddtd[j] = ddt_dir[src + k];
                    }
                }
                *sum = cumsum_bwd_row(
                    &g,
                    dt_in,
                    b,
                    h,
                    a[h] as f64,
                    bias.as_deref().map_or(0.0, |v| v[h] as f64),
                    options,
                    dda,
                    ddtd,
                    ddt_l,
                );
            },
        );
    }
    let (ddt, da, ddt_bias) = finish(&g, ddt_bhl, &sums, inputs.dt_bias.is_some());
    let dd = inputs.d.as_ref().map(|d| {
        dd_from_partials(
            d.shape(),
            nh,
            np,
            (0..nb * nc * nh).map(|t| (t % nh, &dd_parts[t * g.pp..(t + 1) * g.pp])),
        )
    });
    let dinitial_states = inputs.initial_states.as_ref().map(|_| {
        Array4::from_shape_vec((nb, nh, np, nn), dinit.to_vec())
            .expect("dinit has b·h·p·n elements")
    });
    let grads = Gradients {
        dx,
        ddt,
        da,
        db,
        dc,
        dd,
        dz,
        ddt_bias,
        dinitial_states,
    };
    let adjoint = AAdjoint {
        intra: a_intra,
        next: a_next,
        prev: a_prev,
        chunk: a_chunk,
    };
    Ok((grads, adjoint))
}

/// Everything the per-tile passes read.
struct Ctx<'a> {
    g: Geom,
    seq: Seq<'a>,
    cum: Cum<'a>,
    x: &'a [f32],
    bm: &'a [f32],
    cm: &'a [f32],
    z: Option<&'a [f32]>,
    dout: &'a [f32],
    /// `D` as (h, pp)
    dtab: Option<&'a [f32]>,
    /// the `P_c` slabs (b, c, h, n, pp)
    prev: &'a [f32],
}

/// The per-head (b, c, h, Q) rows of one (b, c, g) tile (hpg · Q each).
struct HeadRows<'a> {
    ddt: &'a mut [f32],
    intra: &'a mut [f32],
    next: &'a mut [f32],
    v: &'a mut [f32],
}

/// `CB[l, s] = C_l · B_s` of the group for `s ≤ l` (whole register tiles), 0 between different
/// ids, into `s.cb`; `s.bp` must hold the group's `B` rows.
fn cb_group(cx: &Ctx<'_>, s: &mut Scratch, b: usize, c: usize, hg: usize) {
    let g = &cx.g;
    let (t0, len) = g.chunk(c);
    transpose_packed(&s.bp, len, g.nn, nnp(g), g.qp, &mut s.bt);
    let mut op = CbOp {
        c_rows: &cx.cm[g.bc_at(b, t0, hg)..],
        rs: g.ng * g.nn,
        nn: g.nn,
        bt: &s.bt,
        qp: g.qp,
        cb: &mut s.cb,
    };
    for_tiles(&mut op, len, g.qp / W);
    if cx.seq.ids.is_some() {
        for li in 0..len {
            let id = cx.seq.id(b, t0 + li);
            for si in 0..=li {
                if cx.seq.id(b, t0 + si) != id {
                    s.cb[li * g.qp + si] = 0.0;
                }
            }
        }
    }
}

struct CbOp<'a> {
    c_rows: &'a [f32],
    rs: usize,
    nn: usize,
    bt: &'a [f32],
    qp: usize,
    cb: &'a mut [f32],
}

impl TileOp for CbOp<'_> {
    #[inline(always)]
    fn tile<const R: usize, const NV: usize>(&mut self, r0: usize, v0: usize) {
        if v0 * W > r0 + R - 1 {
            return;
        }
        let rows: [&[f32]; R] =
            std::array::from_fn(|r| &self.c_rows[(r0 + r) * self.rs..][..self.nn]);
        let mut acc = [[V::ZERO; NV]; R];
        fma_rows(&mut acc, rows, &self.bt[v0 * W..], self.qp, self.nn);
        for r in 0..R {
            for v in 0..NV {
                store(&mut self.cb[(r0 + r) * self.qp + (v0 + v) * W..], acc[r][v]);
            }
        }
    }
}

/// The pre-gate output `y = diag(e_prev) C Pᵀ + M (diag(Δ) X) + D ⊙ X` of one head into `y`
/// (len × p), as `chunk_scan` computes it; `s.xp` holds `diag(Δ) X`, `s.mmat` `CB ∘ E`.
struct YOp<'a, 'o> {
    g: &'a Geom,
    c_rows: &'a [f32],
    prev: &'a [f32],
    any_prev: bool,
    e_prev: &'a [f32],
    mmat: &'a [f32],
    xd: &'a [f32],
    x_rows: &'a [f32],
    d: Option<&'a [f32]>,
    y: &'a mut ArrayViewMut2<'o, f32>,
}

impl TileOp for YOp<'_, '_> {
    #[inline(always)]
    fn tile<const R: usize, const NV: usize>(&mut self, r0: usize, v0: usize) {
        let g = self.g;
        let (pp, qp, nn, np) = (g.pp, g.qp, g.nn, g.np);
        let mut acc = [[V::ZERO; NV]; R];
        if self.any_prev {
            let rs = g.ng * nn;
            let rows: [&[f32]; R] = std::array::from_fn(|r| &self.c_rows[(r0 + r) * rs..][..nn]);
            fma_rows(&mut acc, rows, &self.prev[v0 * W..], pp, nn);
            for r in 0..R {
                let e = V::splat(self.e_prev[r0 + r]);
                for v in 0..NV {
                    acc[r][v] *= e;
                }
            }
        }
        let rows: [&[f32]; R] = std::array::from_fn(|r| &self.mmat[(r0 + r) * qp..][..qp]);
        fma_rows(&mut acc, rows, &self.xd[v0 * W..], pp, r0 + R);
        let xs = g.nh * np;
        for r in 0..R {
            let l = r0 + r;
            let mut row = self.y.row_mut(l);
            let row = row.as_slice_mut().expect("y rows are contiguous");
            for v in 0..NV {
                let col = (v0 + v) * W;
                let mut yv = acc[r][v];
                if let Some(d) = self.d {
                    let xr = &self.x_rows[l * xs..][..np];
                    yv = load(&d[col..]).mul_add(load_partial(&xr[col..]), yv);
                }
                store_partial(&mut row[col..], yv);
            }
        }
    }
}

/// Pass 2 on one (b, c, g) tile: per head, `y` (with `z`), then `dy` (into `dxt`, with `z`),
/// `dz`, the `dD` partial sums (`ddp`, pp per head) and the `dP_c` slabs (`dst`).
fn dout_tile(
    cx: &Ctx<'_>,
    s: &mut Scratch,
    i: usize,
    mut dxt: ArrayViewMut3<'_, f32>,
    mut dzt: Option<ArrayViewMut3<'_, f32>>,
    dst: &mut [f32],
    ddp: &mut [f32],
) {
    let g = &cx.g;
    let (b, c, hg) = (i / (g.nc * g.ng), (i / g.ng) % g.nc, i % g.ng);
    let (t0, len) = g.chunk(c);
    let (np, pp, hpg, slab) = (g.np, g.pp, g.hpg(), g.slab());
    let rs = g.nh * np;
    if cx.z.is_some() {
        pack_rows(
            cx.bm,
            g.bc_at(b, t0, hg),
            g.ng * g.nn,
            g.nn,
            len,
            nnp(g),
            None,
            &mut s.bp,
        );
        cb_group(cx, s, b, c, hg);
    }
    for j in 0..hpg {
        let h = hg * hpg + j;
        if j + 1 < hpg {
            let next = g.x_at(b, t0, h + 1);
            prefetch_rows(cx.dout, next, rs, np, len);
            if cx.dtab.is_some() || cx.z.is_some() {
                prefetch_rows(cx.x, next, rs, np, len);
            }
            if let Some(z) = cx.z {
                prefetch_rows(z, next, rs, np, len);
            }
        }
        s.load_head(g, cx.cum, b, h, c);
        let any_prev = s.decay_prev(g, cx.seq, b, c);
        let first = g.x_at(b, t0, h);
        let mut part = cx.dtab.map(|_| {
            let p = &mut ddp[j * pp..(j + 1) * pp];
            p.fill(0.0);
            p
        });
        match (cx.z, dzt.as_mut()) {
            (Some(z), Some(dzt)) => {
                decay_matrix(
                    &s.hi,
                    &s.lo,
                    len,
                    g.qp,
                    &mut s.emat,
                    Some((&s.cb, &mut s.mmat)),
                );
                pack_rows(cx.x, first, rs, np, len, pp, Some(&s.dt), &mut s.xp);
                let mut yv = dxt.index_axis_mut(Axis(1), j);
                let mut op = YOp {
                    g,
                    c_rows: &cx.cm[g.bc_at(b, t0, hg)..],
                    prev: &cx.prev[((b * g.nc + c) * g.nh + h) * slab..][..slab],
                    any_prev,
                    e_prev: &s.e_prev,
                    mmat: &s.mmat,
                    xd: &s.xp,
                    x_rows: &cx.x[first..],
                    d: cx.dtab.map(|t| &t[h * pp..(h + 1) * pp]),
                    y: &mut yv,
                };
                for_tiles(&mut op, len, pp / W);
                let mut dzv = dzt.index_axis_mut(Axis(1), j);
                for l in 0..len {
                    let o = first + l * rs;
                    let mut row = yv.row_mut(l);
                    let row = row.as_slice_mut().expect("dy rows are contiguous");
                    let mut dzr = dzv.row_mut(l);
                    let dzr = dzr.as_slice_mut().expect("dz rows are contiguous");
                    gate_row(&cx.dout[o..o + np], &z[o..o + np], row, dzr);
                    if let Some(part) = part.as_deref_mut() {
                        dd_row(row, &cx.x[o..o + np], part);
                    }
                    let e = V::splat(s.e_prev[l]);
                    for v in (0..pp).step_by(W) {
                        store(&mut s.dy[l * pp + v..], load_partial(&row[v.min(np)..]) * e);
                    }
                }
            }
            _ => {
                if let Some(part) = part {
                    for l in 0..len {
                        let o = first + l * rs;
                        dd_row(&cx.dout[o..o + np], &cx.x[o..o + np], part);
                    }
                }
                if any_prev {
                    pack_rows(cx.dout, first, rs, np, len, pp, Some(&s.e_prev), &mut s.dy);
                }
            }
        }
        dstates_tile(
            g,
            cx.cm,
            b,
            c,
            hg,
            &s.dy,
            any_prev,
            &mut dst[j * slab..(j + 1) * slab],
        );
    }
}

/// Pass 4 on one (b, c, g) tile: per head `dCB`, `W` → `ddA_intra`, `dx` (over `dy` in `dxt`
/// when `z`), `ddt_direct`, `dB` + `U` → `ddA_next`, `dC` + `V`; then `bmm_chunk_bwd`.
#[allow(clippy::too_many_arguments)]
fn grad_tile(
    cx: &Ctx<'_>,
    s: &mut Scratch,
    i: usize,
    mut dxt: ArrayViewMut3<'_, f32>,
    dbt: ArrayViewMut3<'_, f32>,
    dct: ArrayViewMut3<'_, f32>,
    rows: HeadRows<'_>,
    ds: &[f32],
) {
    let g = &cx.g;
    let (b, c, hg) = (i / (g.nc * g.ng), (i / g.ng) % g.nc, i % g.ng);
    let (t0, len) = g.chunk(c);
    let (np, nn, pp, qp, q, hpg, slab) = (g.np, g.nn, g.pp, g.qp, g.q, g.hpg(), g.slab());
    let nnp = nnp(g);
    let rs = g.nh * np;
    let brow = g.bc_at(b, t0, hg);
    pack_rows(cx.bm, brow, g.ng * nn, nn, len, nnp, None, &mut s.bp);
    pack_rows(cx.cm, brow, g.ng * nn, nn, len, nnp, None, &mut s.cp);
    cb_group(cx, s, b, c, hg);
    s.dcb[..len * qp].fill(0.0);
    s.db[..len * nnp].fill(0.0);
    s.dc[..len * nnp].fill(0.0);
    for j in 0..hpg {
        let h = hg * hpg + j;
        if j + 1 < hpg {
            let next = g.x_at(b, t0, h + 1);
            prefetch_rows(cx.x, next, rs, np, len);
            match cx.z {
                Some(_) => {
                    let v = dxt.index_axis(Axis(1), j + 1);
                    for row in v.rows() {
                        if let Some(r) = row.as_slice() {
                            prefetch_range(r, 0, np);
                        }
                    }
                }
                None => prefetch_rows(cx.dout, next, rs, np, len),
            }
        }
        let at = ((b * g.nc + c) * g.nh + h) * slab;
        s.load_head(g, cx.cum, b, h, c);
        let any_prev = s.decay_prev(g, cx.seq, b, c);
        let any_state = s.decay_state(g, cx.seq, b, c);
        decay_matrix(
            &s.hi,
            &s.lo,
            len,
            qp,
            &mut s.emat,
            Some((&s.cb, &mut s.mmat)),
        );
        let first = g.x_at(b, t0, h);
        let mut dxh = dxt.index_axis_mut(Axis(1), j);
        if cx.z.is_some() {
            for l in 0..len {
                let row = dxh.row(l);
                let row = row.as_slice().expect("dy rows are contiguous");
                for v in (0..pp).step_by(W) {
                    store(&mut s.dy[l * pp + v..], load_partial(&row[v.min(np)..]));
                }
            }
        } else {
            pack_rows(cx.dout, first, rs, np, len, pp, None, &mut s.dy);
        }
        pack_rows(cx.x, first, rs, np, len, pp, None, &mut s.xp);
        transpose_packed(&s.xp, len, np, pp, qp, &mut s.xt);
        dcb_head(g, len, s, None, true);
        intra_head(
            &s.wmat,
            qp,
            len,
            &mut s.colacc,
            &mut rows.intra[j * q..(j + 1) * q],
        );
        let ds_slab = &ds[at..at + slab];
        let args = DxArgs {
            bm: &cx.bm[brow..],
            brs: g.ng * nn,
            ds: ds_slab,
            any_state,
            d: cx.dtab.map(|t| &t[h * pp..(h + 1) * pp]),
        };
        dx_head(g, len, s, &args, &mut dxh);
        rows.ddt[j * q..j * q + len].copy_from_slice(&s.ddt[..len]);
        if any_state {
            slab_to_pn_padded(ds_slab, nn, np, pp, nnp, &mut s.ds_t);
        }
        db_head(g, len, s, any_state);
        exclusive_prefix(&s.u, len, &mut rows.next[j * q..(j + 1) * q]);
        if any_prev {
            slab_to_pn_padded(&cx.prev[at..at + slab], nn, np, pp, nnp, &mut s.p_t);
        }
        dc_head(g, len, s, any_prev);
        rows.v[j * q..j * q + len].copy_from_slice(&s.v[..len]);
    }
    mask_dcb(&mut s.dcb, qp, len, cx.seq, b, t0);
    bmm_bwd_group(g, len, s, true);
    unpack_rows(&s.db, nnp, &mut dbt.index_axis_move(Axis(1), 0));
    unpack_rows(&s.dc, nnp, &mut dct.index_axis_move(Axis(1), 0));
}
