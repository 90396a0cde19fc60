//! Crate-wide geometry and layout helpers shared by the forward, backward and decode kernels:
//! the sizes of a chunked problem and the offsets into its tensors ([`Geom`]), `seq_idx`
//! look-ups ([`Seq`]), a borrowed-or-copied row-major view ([`flat`]) and growable scratch
//! ([`ensure`]).

use crate::simd::pad;
use ndarray::{ArrayView, Dimension};
use ssd_reference::Dims;
use std::borrow::Cow;

/// Sizes of a chunked problem and the padded sizes of the internal layouts.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Geom {
    pub(crate) nb: usize,
    pub(crate) l: usize,
    pub(crate) nh: usize,
    pub(crate) np: usize,
    pub(crate) ng: usize,
    pub(crate) nn: usize,
    /// chunk size Q
    pub(crate) q: usize,
    /// chunks ⌈l / Q⌉
    pub(crate) nc: usize,
    /// p padded to a multiple of 8
    pub(crate) pp: usize,
    /// Q padded to a multiple of 8
    pub(crate) qp: usize,
}

impl Geom {
    pub(crate) fn new(d: Dims, q: usize) -> Geom {
        Geom {
            nb: d.batch,
            l: d.seqlen,
            nh: d.nheads,
            np: d.headdim,
            ng: d.ngroups,
            nn: d.dstate,
            q,
            nc: d.seqlen.div_ceil(q),
            pp: pad(d.headdim),
            qp: pad(q),
        }
    }
    /// Heads per group.
    pub(crate) fn hpg(&self) -> usize {
        self.nh / self.ng.max(1)
    }
    /// `(start, len)` of chunk `c`.
    pub(crate) fn chunk(&self, c: usize) -> (usize, usize) {
        let start = c * self.q;
        (start, self.q.min(self.l.saturating_sub(start)))
    }
    /// Offset of `x[b, t, h, 0]` (also `z`, `out`).
    pub(crate) fn x_at(&self, b: usize, t: usize, h: usize) -> usize {
        ((b * self.l + t) * self.nh + h) * self.np
    }
    /// Offset of `B[b, t, g, 0]` (also `C`).
    pub(crate) fn bc_at(&self, b: usize, t: usize, g: usize) -> usize {
        ((b * self.l + t) * self.ng + g) * self.nn
    }
    /// Offset of `dt[b, h, c, 0]` in a (b, h, c, Q) tensor.
    pub(crate) fn bhcq_at(&self, b: usize, h: usize, c: usize) -> usize {
        ((b * self.nh + h) * self.nc + c) * self.q
    }
    /// Size of one internal state slab (n, pp).
    pub(crate) fn slab(&self) -> usize {
        self.nn * self.pp
    }
}

/// `seq_idx` look-ups (all ids 0 without it), as in `ssd_reference::chunking`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Seq<'a> {
    pub(crate) ids: Option<&'a [i32]>,
    pub(crate) l: usize,
    pub(crate) q: usize,
}

impl Seq<'_> {
    pub(crate) fn id(&self, b: usize, t: usize) -> i32 {
        self.ids.map_or(0, |s| s[b * self.l + t])
    }
    /// Id of the last token of chunk `c`.
    pub(crate) fn chunk_end(&self, b: usize, c: usize) -> i32 {
        let last = ((c + 1) * self.q).min(self.l);
        if last == 0 {
            0
        } else {
            self.id(b, last - 1)
        }
    }
    /// Id of the last token before chunk `c` (0 for the first).
    pub(crate) fn prev_end(&self, b: usize, c: usize) -> i32 {
        if c == 0 {
            0
        } else {
            self.id(b, c * self.q - 1)
        }
    }
}

/// The elements of `v` in logical (row-major) order, borrowed when `v` is already laid out so.
pub(crate) fn flat<'a, T: Copy, D: Dimension>(v: &'a ArrayView<'_, T, D>) -> Cow<'a, [T]> {
    match v.as_slice() {
        Some(s) => Cow::Borrowed(s),
        None => Cow::Owned(v.iter().copied().collect()),
    }
}

/// Grows `v` to at least `n` elements.
pub(crate) fn ensure(v: &mut Vec<f32>, n: usize) -> &mut [f32] {
    if v.len() < n {
        v.resize(n, 0.0);
    }
    &mut v[..n]
}
