//! The register-blocked product shared by `chunk_state_bwd_db` and `chunk_scan_bwd_dc`: for a
//! head's packed rows `A` (len × p) and a state-shaped `M` (p × n, n padded), the rows
//! `G_r = s_r · (A_r M)` added to `out` (len × n) and `dots_r = ⟨G_r, O_r⟩` against a second
//! (len × n) matrix `O` — `dB_h = diag(w) X dS` with `U = rowsum(dB_h ⊙ B)`, and
//! `dC_h = diag(e) dY P` with `V = rowsum(dC_h ⊙ C)`.

use super::pack::nnp;
use crate::geom::Geom;
use crate::simd::{load, store, V, W};
use crate::tile::{fma_rows, for_tiles, TileOp};

/// Operands of [`scaled_rows_product`] (see the module docs).
pub(super) struct RowScaled<'a> {
    /// `A`, packed rows of stride `pp`
    pub(super) rows: &'a [f32],
    /// `M` as (p, n padded)
    pub(super) m: &'a [f32],
    /// `s` (len)
    pub(super) scale: &'a [f32],
    /// `O` (len × n padded)
    pub(super) other: &'a [f32],
    /// `out` (len × n padded), added to
    pub(super) out: &'a mut [f32],
    /// `dots` (len), overwritten
    pub(super) dots: &'a mut [f32],
}

struct Op<'a> {
    ops: RowScaled<'a>,
    pp: usize,
    np: usize,
    nnp: usize,
}

impl TileOp for Op<'_> {
    #[inline(always)]
    fn tile<const R: usize, const NV: usize>(&mut self, r0: usize, v0: usize) {
        let (pp, np, nnp) = (self.pp, self.np, self.nnp);
        let o = &mut self.ops;
        let rows: [&[f32]; R] = std::array::from_fn(|r| &o.rows[(r0 + r) * pp..][..np]);
        let mut acc = [[V::ZERO; NV]; R];
        fma_rows(&mut acc, rows, &o.m[v0 * W..], nnp, np);
        for r in 0..R {
            let row = r0 + r;
            let s = V::splat(o.scale[row]);
            let mut part = V::ZERO;
            for v in 0..NV {
                let col = row * nnp + (v0 + v) * W;
                let a = acc[r][v] * s;
                part = a.mul_add(load(&o.other[col..]), part);
                let prev = load(&o.out[col..]);
                store(&mut o.out[col..], prev + a);
            }
            o.dots[row] += part.reduce_add();
        }
    }
}

/// Adds `diag(s) A M` of one head (rows `0..len`) to `out` and writes `dots[..len]`; with
/// `any = false` (no row has a nonzero scale) only `dots[..len] = 0`.
pub(super) fn scaled_rows_product(g: &Geom, len: usize, ops: RowScaled<'_>, any: bool) {
    ops.dots[..len].fill(0.0);
    if !any {
        return;
    }
    let nnp = nnp(g);
    let mut op = Op {
        ops,
        pp: g.pp,
        np: g.np,
        nnp,
    };
    for_tiles(&mut op, len, nnp / W);
}
