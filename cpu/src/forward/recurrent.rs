//! The literal recurrence in f32 [`ssd_reference::ssd_recurrent`], token by token:
//! `H_t = exp(Δ_t A) H_{t−1} + Δ_t x_t ⊗ B_t`, `y_t = H_t C_t + D ⊙ x_t`, `out_t = y_t ⊙ silu(z_t)`;
//! with `seq_idx`, `H` restarts from 0 at every change of id (the decay of that token is 0) and
//! the initial state applies only if the row's first id is 0.
//!
//! Register-blocked: the rows of `H` (one per p) evolve independently, so a block of
//! [`KN`] state columns × [`MP`]·8 rows lives in registers, transposed (vectors along p), for
//! [`TB`] tokens at a time, with no load or store of `H` per token.
//!
//! Rescaled within segments (see [`Segment`]): with `P_t = exp(Σ_{s < i ≤ t} Δ_i A)` since the
//! segment's start `s`, `H_t = P_t G_t`, `G_t = G_{t−1} + B_t ⊗ (Δ_t x_t / P_t)` and
//! `y_t = P_t (G_t C_t)`: per token and block `G += B_n (Δx/P)`, `y += C_n G` — 2 FMAs per
//! state element instead of 3 for `H·a + B (Δx)` (`4np` FLOPs per token and head like the
//! chunked form's state part, without its `2Qp`). `Δx/P` and the factor `P_t` of `y` are
//! per (token, p), outside the loop over n. A segment ends before `|log P|` passes
//! [`LOG_P_MAX`] and at every change of `seq_idx`, so `G` stays within `e^{20}` of the inputs'
//! scale whatever the decay. `y` of the time block (TB × p) accumulates over the column blocks
//! in L1.
//!
//! Tiles: (b, range of heads, range of p) — the rows of `H` never interact, so the tile layout
//! (chosen from the thread count) does not change any arithmetic.

#[cfg(target_arch = "x86_64")]
mod avx512;

use crate::geom::{flat, Geom, Seq};
use crate::par::{for_each_tile, Par};
use crate::simd::{
    avx512_in_use, load, load_partial, pad, prefetch_range, process_dt, silu, store, store_partial,
    V, W,
};
use ndarray::{s, ArrayViewMut3, ArrayViewMut4, Axis};
use ssd_reference::{Inputs, Options};

/// State columns (n) per register block.
const KN: usize = 4;
/// Vectors of 8 rows (p) per register block.
const MP: usize = 2;
/// Tokens per time block.
const TB: usize = 64;

/// Per-worker scratch.
struct Scratch {
    /// `H` of the tile's heads, transposed: (heads, n padded to KN, rows padded to 8)
    hs: Vec<f32>,
    /// `Δ_t x_t` of the time block: (TB, rows padded)
    dx: Vec<f32>,
    /// `y` of the time block: (TB, rows padded)
    y: Vec<f32>,
    /// `P_t`, the decay since the start of the token's segment (see [`segments`])
    pk: Vec<f32>,
    /// log-decays `Δ_t A` of the time block
    la: Vec<f64>,
    /// segments of the time block
    segs: Vec<Segment>,
    /// `B` and `C` of the time block packed per column block: (n / KN, TB, [B; KN], [C; KN])
    bc: Vec<f32>,
}

/// One tile: batch row `b`, heads `h0..h0 + nh`, rows `p0..p0 + np` of their `H`; its view of
/// `out` ((l, nh, np)) and its part of `final_states` ((nh, np, n), contiguous because a tile
/// has either whole heads or one head).
struct Tile<'a> {
    b: usize,
    h0: usize,
    p0: usize,
    out: ArrayViewMut3<'a, f32>,
    fin: &'a mut [f32],
}

/// Runs every (b, heads, rows) tile; writes `out` (standard layout) and `final_states`
/// ((b, h, p, n)).
///
/// `x`, `z` and `out` rows are `h·p` floats apart, a new page per token at S2 where the
/// hardware prefetchers stop: a tile takes several heads and, per time block, walks them in
/// turn, so the pages of a token are shared by its heads; the rows of the next head are
/// requested while one head runs. Without both, the misses and page walks of those rows cost
/// as much as the arithmetic at S2 (perf, one thread).
pub(crate) fn recurrent_core(
    g: &Geom,
    inputs: &Inputs<'_, f32>,
    options: &Options,
    mut out: ArrayViewMut4<'_, f32>,
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
    // One tile per thread: whole heads in ranges when there are enough (b, h) pairs, otherwise
    // single heads split by rows. Never changes the arithmetic of any element. Every tile walks
    // every token's page of `x` and `out` (a token's heads share it), so fewer, wider tiles
    // mean fewer page walks and one packing of `B`/`C` for more heads: two tiles per thread
    // (for balance) were ≈ 5% slower at S1 and S3, the same at S2 (2 threads, same process).
    let want = par.degree();
    let (hpt, rows) = if g.nb * g.nh >= want {
        let ranges = want.div_ceil(g.nb).min(g.nh);
        (g.nh.div_ceil(ranges), g.np)
    } else {
        let splits = want
            .div_ceil((g.nb * g.nh).max(1))
            .clamp(1, g.np.div_ceil(MP * W).max(1));
        (1, g.np.div_ceil(splits).div_ceil(W) * W)
    };
    let mut tiles: Vec<Tile<'_>> = Vec::new();
    let mut rest = out.view_mut();
    let mut fin_rest = &mut final_states[..];
    for b in 0..g.nb {
        let (head, tail) = rest.split_at(Axis(0), 1);
        rest = tail;
        let mut vb = head.index_axis_move(Axis(0), 0);
        let mut h0 = 0;
        while h0 < g.nh {
            let hn = hpt.min(g.nh - h0);
            let (mut vh, t) = vb.split_at(Axis(1), hn);
            vb = t;
            let mut p0 = 0;
            while p0 < g.np {
                let take = rows.min(g.np - p0);
                let (piece, t) = vh.split_at(Axis(2), take);
                vh = t;
                let (fin, t) = std::mem::take(&mut fin_rest).split_at_mut(hn * take * g.nn);
                fin_rest = t;
                tiles.push(Tile {
                    b,
                    h0,
                    p0,
                    out: piece,
                    fin,
                });
                p0 += take;
            }
            h0 += hn;
        }
    }
    // n padded to a multiple of KN: the padded columns have B = C = 0, so their H stays 0.
    let nk = g.nn.div_ceil(KN) * KN;
    let rows_p = pad(rows);
    let scratch = || Scratch {
        hs: vec![0.0; hpt * nk * rows_p],
        dx: vec![0.0; TB * rows_p],
        y: vec![0.0; TB * rows_p],
        pk: vec![0.0; TB],
        la: vec![0.0; TB],
        segs: Vec::with_capacity(TB),
        bc: vec![0.0; 2 * nk * TB],
    };
    let (nn, pn) = (g.nn, g.np * g.nn);
    // the 16-lane register block where the CPU has AVX-512F: same bits (see `avx512`)
    #[cfg(target_arch = "x86_64")]
    let wide16 = avx512_in_use();
    for_each_tile(par, tiles, scratch, |s, tile| {
        let Tile {
            b,
            h0,
            p0,
            mut out,
            fin,
        } = tile;
        let (hn, nr) = (out.dim().1, out.dim().2);
        let rp = pad(nr);
        let slab = nk * rp;
        let hs = &mut s.hs[..hn * slab];
        hs.fill(0.0);
        let first_id = if g.l > 0 { seq.id(b, 0) } else { 0 };
        if let (Some(init), 0) = (&init, first_id) {
            for (j, st) in hs.chunks_exact_mut(slab).enumerate() {
                let i = b * g.nh + h0 + j;
                for r in 0..nr {
                    for n in 0..nn {
                        st[n * rp + r] = init[i * pn + (p0 + r) * nn + n];
                    }
                }
            }
        }
        let mut t0 = 0;
        while t0 < g.l {
            let len = TB.min(g.l - t0);
            // changes of seq_idx: the same tokens for every head of the tile
            let mut restart = [false; TB];
            if seq.ids.is_some() {
                for (k, r) in restart[..len].iter_mut().enumerate() {
                    let t = t0 + k;
                    *r = t > 0 && seq.id(b, t) != seq.id(b, t - 1);
                }
            }
            let mut packed_group = usize::MAX;
            for j in 0..hn {
                let h = h0 + j;
                let gg = h / g.hpg();
                if gg != packed_group {
                    pack_bc(&mut s.bc, &bm, &cm, g, b, t0, len, gg, nk);
                    packed_group = gg;
                }
                // rows of x, z and out of the next (head, time block), a page apart per token
                let (tn, jn) = if j + 1 < hn {
                    (t0, j + 1)
                } else {
                    (t0 + TB, 0)
                };
                let tend = (tn + TB).min(g.l);
                for t in tn..tend {
                    let xo = g.x_at(b, t, h0 + jn) + p0;
                    prefetch_range(&x, xo, nr);
                    if let Some(z) = &z {
                        prefetch_range(z, xo, nr);
                    }
                }
                if tn < tend {
                    for row in out.slice(s![tn..tend, jn, ..]).outer_iter() {
                        prefetch_range(row.as_slice().expect("rows are contiguous"), 0, nr);
                    }
                }
                let bias = bias.as_deref().map_or(0.0, |v| v[h]);
                let mut dl = [0.0f32; TB];
                for k in 0..len {
                    let t = t0 + k;
                    let delta = process_dt(
                        dt[(b * g.l + t) * g.nh + h],
                        bias,
                        options.dt_softplus,
                        options.dt_limit,
                    );
                    s.la[k] = delta * a[h] as f64;
                    dl[k] = delta as f32;
                }
                let inv = segments(&s.la[..len], &restart[..len], &mut s.pk, &mut s.segs);
                for k in 0..len {
                    // Δ_t x_t / P_t
                    let f = dl[k] * inv[k];
                    let xrow = &x[g.x_at(b, t0 + k, h) + p0..][..nr];
                    let dxrow = &mut s.dx[k * rp..(k + 1) * rp];
                    for (d, &xv) in dxrow.iter_mut().zip(xrow) {
                        *d = f * xv;
                    }
                    dxrow[nr..].fill(0.0);
                }
                let blk = Block {
                    dx: &s.dx[..len * rp],
                    segs: &s.segs,
                    len,
                    bc: &s.bc[..2 * nk * len],
                    rp,
                };
                let y = &mut s.y[..len * rp];
                let st = &mut hs[j * slab..(j + 1) * slab];
                let mut r = 0;
                #[cfg(target_arch = "x86_64")]
                if wide16 {
                    use avx512::{scan_rows16, W16};
                    while r + 2 * W16 <= rp {
                        // SAFETY: `wide16` is set only where the CPU has AVX-512F.
                        unsafe { scan_rows16::<2>(&blk, st, y, r) };
                        r += 2 * W16;
                    }
                    if r + W16 <= rp {
                        // SAFETY: as above.
                        unsafe { scan_rows16::<1>(&blk, st, y, r) };
                        r += W16;
                    }
                }
                while r + MP * W <= rp {
                    scan_rows::<MP>(&blk, st, y, r);
                    r += MP * W;
                }
                while r < rp {
                    scan_rows::<1>(&blk, st, y, r);
                    r += W;
                }
                // epilogue: + D x, z gate, into out
                let mut oh = out.slice_mut(s![t0..t0 + len, j, ..]);
                for (k, mut orow) in oh.outer_iter_mut().enumerate() {
                    let t = t0 + k;
                    let xo = g.x_at(b, t, h) + p0;
                    let orow = orow.as_slice_mut().expect("rows are contiguous");
                    let pk = V::splat(s.pk[k]);
                    for q in (0..nr).step_by(W) {
                        let mut yv = load(&y[k * rp + q..]) * pk;
                        if let Some(dt) = &dtab {
                            yv = load(&dt[h * g.pp + p0 + q..])
                                .mul_add(load_partial(&x[xo + q..xo + nr]), yv);
                        }
                        if let Some(z) = &z {
                            yv *= silu(load_partial(&z[xo + q..xo + nr]));
                        }
                        store_partial(&mut orow[q..nr], yv);
                    }
                }
            }
            t0 += len;
        }
        for (j, st) in hs.chunks_exact(slab).enumerate() {
            let f = &mut fin[j * nr * nn..(j + 1) * nr * nn];
            for r in 0..nr {
                for n in 0..nn {
                    f[r * nn + n] = st[n * rp + r];
                }
            }
        }
    });
}

/// Packs `B` and `C` of group `gg`, tokens `t0..t0 + len`: column block `j`, token `k` →
/// `bc[(j·len + k)·2KN ..]`, `KN` values of `B` then `KN` of `C`, zero past `n`.
fn pack_bc(
    bc: &mut [f32],
    bm: &[f32],
    cm: &[f32],
    g: &Geom,
    b: usize,
    t0: usize,
    len: usize,
    gg: usize,
    nk: usize,
) {
    let nn = g.nn;
    let bc = &mut bc[..2 * nk * len];
    let full = nn / KN;
    for k in 0..len {
        let o = g.bc_at(b, t0 + k, gg);
        let (brow, crow) = (&bm[o..o + nn], &cm[o..o + nn]);
        for j in 0..full {
            let dst = &mut bc[(j * len + k) * 2 * KN..][..2 * KN];
            let src = j * KN..(j + 1) * KN;
            dst[..KN].copy_from_slice(&brow[src.clone()]);
            dst[KN..].copy_from_slice(&crow[src]);
        }
        if full < nk / KN {
            let dst = &mut bc[(full * len + k) * 2 * KN..][..2 * KN];
            dst.fill(0.0);
            for (u, n) in (full * KN..nn).enumerate() {
                dst[u] = brow[n];
                dst[KN + u] = crow[n];
            }
        }
    }
}

/// A run of tokens `start..end` of a time block over which the state is carried rescaled:
/// `H_t = P_t G_t` with `P_t = exp(Σ_{start < i ≤ t} Δ_i A)`, so that
/// `G_t = G_{t−1} + B_t ⊗ (Δ_t x_t / P_t)` and `y_t = P_t (C_t · G_t)` — 2 FMAs per state
/// element and token instead of 3. On entry `G = scale_in · H` (`scale_in` = the previous
/// segment's `P` at its end times this token's decay, 0 at a change of `seq_idx`).
#[derive(Debug, Clone, Copy)]
struct Segment {
    start: usize,
    end: usize,
    scale_in: f32,
}

/// Largest `|log P_t|` inside a segment: `1/P_t ≤ e^20 ≈ 5·10⁸`, so `G` stays within a factor
/// 5·10⁸ of the inputs' scale (no overflow before `H` itself would) while strong decay
/// (`Δ|A|` of 1.6 per token) still leaves segments of ≈ 12 tokens.
const LOG_P_MAX: f64 = 20.0;

/// Splits a time block with log-decays `la` into [`Segment`]s (a new one at its first token, at
/// every restart of `seq_idx` and where `|log P|` would pass [`LOG_P_MAX`]); writes `P_t` into
/// `pk` and returns `1/P_t` per token. The last segment's `scale_out` (`P` at its end) is
/// returned in `segs` as a final segment `start = end = len`.
fn segments(la: &[f64], restart: &[bool], pk: &mut [f32], segs: &mut Vec<Segment>) -> [f32; TB] {
    let mut inv = [0.0f32; TB];
    segs.clear();
    let mut cum = 0.0f64;
    let mut p_end = 1.0f64;
    for k in 0..la.len() {
        if k == 0 || restart[k] || (cum + la[k]).abs() > LOG_P_MAX {
            if let Some(last) = segs.last_mut() {
                last.end = k;
                p_end = cum.exp();
            }
            let decay = if restart[k] { 0.0 } else { la[k].exp() };
            segs.push(Segment {
                start: k,
                end: la.len(),
                scale_in: (p_end * decay) as f32,
            });
            cum = 0.0;
        } else {
            cum += la[k];
        }
        let p = cum.exp();
        pk[k] = p as f32;
        inv[k] = (1.0 / p) as f32;
    }
    segs.push(Segment {
        start: la.len(),
        end: la.len(),
        scale_in: cum.exp() as f32,
    });
    inv
}

/// The inputs of one time block shared by its register blocks.
struct Block<'a> {
    /// `Δ_t x_t / P_t`, (len, rp)
    dx: &'a [f32],
    /// the segments, then `P` at the end of the last one (see [`segments`])
    segs: &'a [Segment],
    len: usize,
    /// packed `B`, `C` (see [`Scratch::bc`])
    bc: &'a [f32],
    /// padded rows
    rp: usize,
}

/// Rows `r..r + M·8` of `H` (all n, [`KN`] columns at a time in registers) over the time block;
/// `y` rows (`C_t · G_t`) are set by the first column block and accumulated by the others.
fn scan_rows<const M: usize>(blk: &Block<'_>, hs: &mut [f32], y: &mut [f32], r: usize) {
    for (j, bc) in blk.bc.chunks_exact(2 * KN * blk.len).enumerate() {
        scan_block::<M>(blk, bc, hs, y, r, j * KN);
    }
}

/// The hot loop: [`KN`] columns × `M` vectors of `G` in registers for every token of the block,
/// `G += B_t (Δx/P)_t`, `y_t += C_t G`.
#[inline(always)]
fn scan_block<const M: usize>(
    blk: &Block<'_>,
    bc: &[f32],
    hs: &mut [f32],
    y: &mut [f32],
    r: usize,
    n0: usize,
) {
    let rp = blk.rp;
    let first = n0 == 0;
    let mut hr = [[V::ZERO; M]; KN];
    for (k, row) in hr.iter_mut().enumerate() {
        for (m, v) in row.iter_mut().enumerate() {
            *v = load(&hs[(n0 + k) * rp + r + m * W..]);
        }
    }
    for seg in blk.segs {
        let f = V::splat(seg.scale_in);
        for row in hr.iter_mut() {
            for v in row.iter_mut() {
                *v *= f;
            }
        }
        let (s, e) = (seg.start, seg.end);
        let rows = y[s * rp..e * rp]
            .chunks_exact_mut(rp)
            .zip(blk.dx[s * rp..e * rp].chunks_exact(rp));
        for ((yr, dxr), bct) in rows.zip(bc[s * 2 * KN..e * 2 * KN].chunks_exact(2 * KN)) {
            let yr = &mut yr[r..r + M * W];
            let dxr = &dxr[r..r + M * W];
            let mut dx = [V::ZERO; M];
            // two accumulators per vector (even and odd columns) halve the FMA chain of `y`
            let mut acc = [[V::ZERO; M]; 2];
            for m in 0..M {
                dx[m] = load(&dxr[m * W..]);
                if !first {
                    acc[0][m] = load(&yr[m * W..]);
                }
            }
            for k in 0..KN {
                let (bv, cv) = (V::splat(bct[k]), V::splat(bct[KN + k]));
                for m in 0..M {
                    hr[k][m] = bv.mul_add(dx[m], hr[k][m]);
                    acc[k % 2][m] = cv.mul_add(hr[k][m], acc[k % 2][m]);
                }
            }
            for m in 0..M {
                store(&mut yr[m * W..], acc[0][m] + acc[1][m]);
            }
        }
    }
    for (k, row) in hr.iter().enumerate() {
        for (m, v) in row.iter().enumerate() {
            store(&mut hs[(n0 + k) * rp + r + m * W..], *v);
        }
    }
}
