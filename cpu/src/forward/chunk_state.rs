//! `chunk_state` [_chunk_state_fwd]: the state each chunk builds from its own tokens.
//!
//! `S_c[p, n] = Σ_s exp(a_last − a_s) Δ_s x_s[p] B_s[n]` over the tokens `s` of chunk `c` whose
//! `seq_idx` equals that of the chunk's last token. Output (b, c, h, p, n).
//!
//! Per (batch, chunk, head) tile: `w_s = exp(a_last − a_s) Δ_s`, `Xw = diag(w) X` (len × p,
//! packed), then `Sᵀ (n × p) = Bᵀ Xw`, a register-blocked product with p along the vectors.

use crate::geom::{flat, Geom, Seq};
use crate::par::{for_each_tile, split_mut, Par};
use crate::simd::{load_partial, store, V, W};
use crate::tile::product_cols_into;
use crate::SsdError;
use ndarray::{Array5, ArrayView2, ArrayView4};
use ssd_reference::chunking::check_bhcq;
use ssd_reference::validate::{check_groups, check_shape};

/// Inputs of [`chunk_state_core`], flat.
pub(crate) struct StateArgs<'a> {
    pub(crate) x: &'a [f32],
    pub(crate) b: &'a [f32],
    pub(crate) dt: &'a [f32],
    pub(crate) hi: &'a [f32],
    pub(crate) lo: Option<&'a [f32]>,
    pub(crate) seq: Seq<'a>,
}

/// Writes `Sᵀ` of every (b, c, h) into `states` ((b, c, h, n, pp) slabs).
pub(crate) fn chunk_state_core(g: &Geom, a: &StateArgs<'_>, states: &mut [f32], par: Par) {
    let tiles: Vec<_> = split_mut(states, g.nb * g.nc * g.nh, g.slab())
        .into_iter()
        .enumerate()
        .collect();
    let scratch = || (vec![0.0f32; g.q * g.pp], vec![0.0f32; g.q]);
    for_each_tile(par, tiles, scratch, |(xw, w), (i, slab)| {
        let (b, c, h) = (i / (g.nc * g.nh), (i / g.nh) % g.nc, i % g.nh);
        state_tile(g, a, b, c, h, xw, w, slab);
    });
}

#[allow(clippy::too_many_arguments)]
fn state_tile(
    g: &Geom,
    a: &StateArgs<'_>,
    b: usize,
    c: usize,
    h: usize,
    xw: &mut [f32],
    w: &mut [f32],
    slab: &mut [f32],
) {
    let (t0, len) = g.chunk(c);
    let base = g.bhcq_at(b, h, c);
    let last_id = a.seq.chunk_end(b, c);
    let hi_last = a.hi[base + g.q - 1];
    let lo_last = a.lo.map_or(0.0, |lo| lo[base + g.q - 1]);
    for s in 0..len {
        w[s] = if a.seq.id(b, t0 + s) == last_id {
            let lo_s = a.lo.map_or(0.0, |lo| lo[base + s]);
            let e = (hi_last - a.hi[base + s]) as f64 + (lo_last as f64 - lo_s as f64);
            (e.min(0.0).exp() * a.dt[base + s] as f64) as f32
        } else {
            0.0
        };
    }
    for s in 0..len {
        let row = &a.x[g.x_at(b, t0 + s, h)..][..g.np];
        let ws = V::splat(w[s]);
        for v in (0..g.pp).step_by(W) {
            let xv = load_partial(&row[v.min(g.np)..]);
            store(&mut xw[s * g.pp + v..], xv * ws);
        }
    }
    let hg = h / g.hpg();
    product_cols_into(
        &a.b[g.bc_at(b, t0, hg)..],
        g.ng * g.nn,
        &xw[..len * g.pp],
        g.pp,
        len,
        slab,
        g.nn,
        g.pp / W,
    );
}

/// Transposes internal (n, pp) slabs into (p, n) blocks.
pub(crate) fn slabs_to_pn(g: &Geom, slabs: &[f32], out: &mut [f32]) {
    let pn = g.np * g.nn;
    if pn == 0 {
        return;
    }
    for (slab, dst) in slabs.chunks(g.slab()).zip(out.chunks_mut(pn)) {
        for p in 0..g.np {
            for n in 0..g.nn {
                dst[p * g.nn + n] = slab[n * g.pp + p];
            }
        }
    }
}

/// Transposes (p, n) blocks into internal (n, pp) slabs (padding columns 0).
pub(crate) fn pn_to_slabs(g: &Geom, src: &[f32], slabs: &mut [f32]) {
    let pn = g.np * g.nn;
    if pn == 0 {
        return;
    }
    for (blk, slab) in src.chunks(pn).zip(slabs.chunks_mut(g.slab())) {
        for n in 0..g.nn {
            for p in 0..g.pp {
                slab[n * g.pp + p] = if p < g.np { blk[p * g.nn + n] } else { 0.0 };
            }
        }
    }
}

/// Returns `states_bchpn`, (b, c, h, p, n).
///
/// Errors: shapes (`B`, `dt`, `dA_cumsum`, `seq_idx`), groups that do not divide the heads.
pub fn chunk_state(
    b_blgn: ArrayView4<'_, f32>,
    x_blhp: ArrayView4<'_, f32>,
    dt_bhcq: ArrayView4<'_, f32>,
    dacs_bhcq: ArrayView4<'_, f32>,
    seq_idx: Option<ArrayView2<'_, i32>>,
    par: Par,
) -> Result<Array5<f32>, SsdError> {
    let (nb, l, nh, np) = x_blhp.dim();
    let (_, _, ng, nn) = b_blgn.dim();
    check_shape("B", &[nb, l, ng, nn], b_blgn.shape())?;
    check_groups(nh, ng)?;
    let (nc, q) = check_bhcq("dt", dt_bhcq.shape(), nb, nh, l)?;
    check_shape("dA_cumsum", dt_bhcq.shape(), dacs_bhcq.shape())?;
    if let Some(s) = &seq_idx {
        check_shape("seq_idx", &[nb, l], s.shape())?;
    }
    let g = Geom::new(
        ssd_reference::Dims {
            batch: nb,
            seqlen: l,
            nheads: nh,
            headdim: np,
            ngroups: ng,
            dstate: nn,
        },
        q,
    );
    let (x, bm, dt, hi) = (
        flat(&x_blhp),
        flat(&b_blgn),
        flat(&dt_bhcq),
        flat(&dacs_bhcq),
    );
    let ids = seq_idx.as_ref().map(flat);
    let args = StateArgs {
        x: &x,
        b: &bm,
        dt: &dt,
        hi: &hi,
        lo: None,
        seq: Seq {
            ids: ids.as_deref(),
            l,
            q,
        },
    };
    let mut slabs = vec![0.0f32; nb * nc * nh * g.slab()];
    chunk_state_core(&g, &args, &mut slabs, par);
    let mut out = Array5::<f32>::zeros((nb, nc, nh, np, nn));
    slabs_to_pn(
        &g,
        &slabs,
        out.as_slice_mut().expect("owned array is contiguous"),
    );
    Ok(out)
}
