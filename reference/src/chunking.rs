//! Index helpers shared by the chunked kernels: chunk bounds and `seq_idx` look-ups.

use ndarray::ArrayView2;

/// `(start, len)` of chunk `c` of size `q` in a sequence of length `l`.
pub fn chunk_bounds(c: usize, q: usize, l: usize) -> (usize, usize) {
    let start = c * q;
    (start, q.min(l.saturating_sub(start)))
}

/// The sequence id of token `t` of row `b` (0 without `seq_idx`).
pub fn seq_id(seq_idx: Option<&ArrayView2<'_, i32>>, b: usize, t: usize) -> i32 {
    seq_idx.map_or(0, |s| s[[b, t]])
}

/// The id of the last token of chunk `c` (the id a chunk's state `S_c` belongs to).
pub fn chunk_end_id(
    seq_idx: Option<&ArrayView2<'_, i32>>,
    b: usize,
    c: usize,
    q: usize,
    l: usize,
) -> i32 {
    let (start, len) = chunk_bounds(c, q, l);
    if len == 0 {
        return 0;
    }
    seq_id(seq_idx, b, start + len - 1)
}

/// The id of the last token before chunk `c` (0 for the first chunk: the initial state belongs
/// to sequence 0). The state `P_c` entering chunk `c` reaches token `t` only if `t`'s id equals it.
pub fn prev_chunk_end_id(
    seq_idx: Option<&ArrayView2<'_, i32>>,
    b: usize,
    c: usize,
    q: usize,
) -> i32 {
    if c == 0 {
        0
    } else {
        seq_id(seq_idx, b, c * q - 1)
    }
}

/// The argument checks of `chunk_cumsum` and `chunk_cumsum_bwd` (every backend), in order: `A`
/// is (h), `dt_bias` (h), the chunk size is nonzero, `dt_limit` is valid. Returns `(nc, q)` for
/// a sequence of `l` tokens.
pub fn check_cumsum_args(
    nh: usize,
    l: usize,
    a_shape: &[usize],
    dt_bias_shape: Option<&[usize]>,
    options: &crate::Options,
) -> Result<(usize, usize), crate::SsdError> {
    crate::validate::check_shape("A", &[nh], a_shape)?;
    if let Some(bias) = dt_bias_shape {
        crate::validate::check_shape("dt_bias", &[nh], bias)?;
    }
    if options.chunk_size == 0 {
        return Err(crate::SsdError::ZeroChunkSize);
    }
    crate::validate::check_dt_limit(options.dt_limit)?;
    let q = options.chunk_size;
    Ok((l.div_ceil(q), q))
}

/// The checks of `chunk_cumsum_bwd` (every backend): those of [`check_cumsum_args`], then
/// `ddA` and `ddt` (the direct part) both (b, h, c, Q) for `dt`'s (b, l, h). Returns `(nc, q)`.
pub fn check_cumsum_bwd_args(
    nb: usize,
    l: usize,
    nh: usize,
    a_shape: &[usize],
    dt_bias_shape: Option<&[usize]>,
    dda_shape: &[usize],
    ddt_direct_shape: &[usize],
    options: &crate::Options,
) -> Result<(usize, usize), crate::SsdError> {
    let (nc, q) = check_cumsum_args(nh, l, a_shape, dt_bias_shape, options)?;
    crate::validate::check_shape("ddA", &[nb, nh, nc, q], dda_shape)?;
    check_bhcq("ddt", ddt_direct_shape, nb, nh, l)?;
    crate::validate::check_shape("ddt", &[nb, nh, nc, q], ddt_direct_shape)?;
    Ok((nc, q))
}

/// Reads `(nc, q)` off a (b, h, c, Q) tensor and checks it against `(b, h, l)`.
pub fn check_bhcq(
    tensor: &'static str,
    shape: &[usize],
    nb: usize,
    nh: usize,
    l: usize,
) -> Result<(usize, usize), crate::SsdError> {
    let q = if shape.len() == 4 { shape[3] } else { 0 };
    if q == 0 {
        return Err(crate::SsdError::ZeroChunkSize);
    }
    let nc = l.div_ceil(q);
    crate::validate::check_shape(tensor, &[nb, nh, nc, q], shape)?;
    Ok((nc, q))
}

/// Value of `D` for head `h`, channel `p` (`D` is (h) or (h, p)).
pub fn d_at(d: &ndarray::ArrayViewD<'_, f64>, h: usize, p: usize) -> f64 {
    if d.ndim() == 1 {
        d[[h]]
    } else {
        d[[h, p]]
    }
}
