//! The five forward kernels of the chunked SSD on the device (docs/design.md §2.5), with the
//! argument lists of docs/design.md §5.1 (device buffers in place of ndarray views). Shapes are
//! checked as in the float64 reference; values (finiteness, `seq_idx` order, the sign of `A`)
//! are the caller's to guarantee at this level — [`crate::DeviceInputs::upload`] validates them
//! for the combined op.
//!
//! | kernel | CUDA | work decomposition |
//! |---|---|---|
//! | `chunk_cumsum` | `chunk_cumsum_kernel` | block per (b, h, c), block-parallel scan |
//! | `chunk_state` | `chunk_state_kernel` | 64 × 64 (p, n) tiles, f64 tensor cores (8 warps), per (b, c, h), K = tokens |
//! | `state_passing` | `state_passing_kernel` | thread per (b, h, p·n), sequential over chunks |
//! | `bmm_chunk` | `bmm_chunk_kernel` | 64 × 64 (l, s) tiles, f64 tensor cores (8 warps), per (b, c, g), K = n |
//! | `chunk_scan` | `chunk_scan_kernel` | 64 × 64 (l, p) tiles per (b, c, h), K = n then s ≤ l, f64 tensor cores |

use crate::array::{
    DeviceArray1, DeviceArray2, DeviceArray3, DeviceArray4, DeviceArray5, DeviceArrayD,
};
use crate::device::{opt_arg, Arg, Gpu, NT};
use ssd_reference::chunking::{check_bhcq, check_cumsum_args};
use ssd_reference::validate::{check_groups, check_shape};
use ssd_reference::{Options, SsdError};

pub(crate) fn tiles(n: usize) -> u64 {
    n.div_ceil(64) as u64
}

/// Number of 128-wide tiles covering `n` (the wide side of the 8 × 4 / 8 × 8 per-thread tiles).
pub(crate) fn tiles128(n: usize) -> u64 {
    n.div_ceil(128) as u64
}

pub(crate) fn i(v: usize) -> Arg<'static> {
    Arg::I(v as i64)
}

/// Checks `D`: (h) or (h, p); returns whether it is per channel.
pub(crate) fn check_d_shape(d: &DeviceArrayD, nh: usize, np: usize) -> Result<bool, SsdError> {
    if d.shape() == [nh] {
        Ok(false)
    } else if d.shape() == [nh, np] {
        Ok(true)
    } else {
        Err(SsdError::ShapeMismatch {
            tensor: "D",
            expected: if d.shape().len() == 1 {
                vec![nh]
            } else {
                vec![nh, np]
            },
            actual: d.shape().to_vec(),
        })
    }
}

pub(crate) fn check_seq(
    seq: Option<&DeviceArray2<i32>>,
    nb: usize,
    l: usize,
) -> Result<(), SsdError> {
    if let Some(s) = seq {
        check_shape("seq_idx", &[nb, l], s.shape())?;
    }
    Ok(())
}

impl Gpu {
    /// `chunk_cumsum` (upstream `_chunk_cumsum_fwd`): `(dt_bhcq, dacs_bhcq)`, Δ and its within-chunk cumsum
    /// of `Δ A`, zero-padded past l.
    pub fn chunk_cumsum(
        &self,
        dt_blh: &DeviceArray3,
        a_h: &DeviceArray1,
        dt_bias_h: Option<&DeviceArray1>,
        options: &Options,
    ) -> Result<(DeviceArray4, DeviceArray4), SsdError> {
        let (dt, dacs, _) = self.chunk_cumsum_lo(dt_blh, a_h, dt_bias_h, options, false)?;
        Ok((dt, dacs))
    }

    /// `chunk_cumsum`, and with `want_lo` the rounding error of the f64 cumsum (`dacs_lo`).
    pub(crate) fn chunk_cumsum_lo(
        &self,
        dt_blh: &DeviceArray3,
        a_h: &DeviceArray1,
        dt_bias_h: Option<&DeviceArray1>,
        options: &Options,
        want_lo: bool,
    ) -> Result<(DeviceArray4, DeviceArray4, Option<DeviceArray4>), SsdError> {
        let (nb, l, nh) = dt_blh.dim();
        let (nc, q) = check_cumsum_args(
            nh,
            l,
            a_h.shape(),
            dt_bias_h.as_ref().map(|v| v.shape()),
            options,
        )?;
        let dt_bhcq = self.alloc_out(ndarray::Ix4(nb, nh, nc, q))?;
        let dacs_bhcq = self.alloc_out(ndarray::Ix4(nb, nh, nc, q))?;
        let lo = if want_lo {
            Some(self.alloc_out(ndarray::Ix4(nb, nh, nc, q))?)
        } else {
            None
        };
        self.launch(
            "chunk_cumsum_kernel",
            (nb * nh * nc) as u64,
            NT,
            &[
                dt_blh.arg(),
                a_h.arg(),
                opt_arg(dt_bias_h),
                dt_bhcq.arg(),
                dacs_bhcq.arg(),
                opt_arg(lo.as_ref()),
                i(nb),
                i(l),
                i(nh),
                i(q),
                i(nc),
                Arg::I32(options.dt_softplus as i32),
                Arg::F(options.dt_limit.0 as f32),
                Arg::F(options.dt_limit.1 as f32),
            ],
        )?;
        Ok((dt_bhcq, dacs_bhcq, lo))
    }

    /// `chunk_state` (upstream `_chunk_state_fwd`): `S_c = Σ_s exp(a_last − a_s) Δ_s x_s ⊗ B_s` over the
    /// tokens of chunk c with the id of its last token; (b, c, h, p, n).
    pub fn chunk_state(
        &self,
        b_blgn: &DeviceArray4,
        x_blhp: &DeviceArray4,
        dt_bhcq: &DeviceArray4,
        dacs_bhcq: &DeviceArray4,
        seq_idx: Option<&DeviceArray2<i32>>,
    ) -> Result<DeviceArray5, SsdError> {
        let (nb, l, nh, np) = x_blhp.dim();
        let (_, _, ng, nn) = b_blgn.dim();
        check_shape("B", &[nb, l, ng, nn], b_blgn.shape())?;
        check_groups(nh, ng)?;
        let (nc, q) = check_bhcq("dt", dt_bhcq.shape(), nb, nh, l)?;
        check_shape("dA_cumsum", dt_bhcq.shape(), dacs_bhcq.shape())?;
        check_seq(seq_idx, nb, l)?;
        let out = self.alloc_out(ndarray::Ix5(nb, nc, nh, np, nn))?;
        self.chunk_state_like(
            0, b_blgn, x_blhp, dt_bhcq, dacs_bhcq, None, seq_idx, &out, ng, nn, q, nc,
        )?;
        Ok(out)
    }

    /// Mode 0: chunk_state; mode 1: chunk_scan_bwd_dstates (X = dy, Y = C).
    pub(crate) fn chunk_state_like(
        &self,
        mode: i32,
        y_blgn: &DeviceArray4,
        x_blhp: &DeviceArray4,
        dt_bhcq: &DeviceArray4,
        dacs_bhcq: &DeviceArray4,
        dlo: Option<&DeviceArray4>,
        seq_idx: Option<&DeviceArray2<i32>>,
        out: &DeviceArray5,
        ng: usize,
        nn: usize,
        q: usize,
        nc: usize,
    ) -> Result<(), SsdError> {
        let (nb, l, nh, np) = x_blhp.dim();
        self.launch(
            "chunk_state_kernel",
            tiles(nn) * tiles(np) * (nh * nc * nb) as u64,
            NT,
            &[
                Arg::I32(mode),
                y_blgn.arg(),
                x_blhp.arg(),
                dt_bhcq.arg(),
                dacs_bhcq.arg(),
                opt_arg(dlo),
                opt_arg(seq_idx),
                out.arg(),
                i(nb),
                i(l),
                i(nh),
                i(np),
                i(ng),
                i(nn),
                i(q),
                i(nc),
            ],
        )
    }

    /// `state_passing` (upstream `_state_passing_fwd`): `(prev_states_bchpn, final_states_bhpn)`.
    pub fn state_passing(
        &self,
        states_bchpn: &DeviceArray5,
        dacs_bhcq: &DeviceArray4,
        initial_states_bhpn: Option<&DeviceArray4>,
        seq_idx: Option<&DeviceArray2<i32>>,
        seqlen: usize,
    ) -> Result<(DeviceArray5, DeviceArray4), SsdError> {
        self.state_passing_lo(
            states_bchpn,
            dacs_bhcq,
            None,
            initial_states_bhpn,
            seq_idx,
            seqlen,
        )
    }

    pub(crate) fn state_passing_lo(
        &self,
        states_bchpn: &DeviceArray5,
        dacs_bhcq: &DeviceArray4,
        dlo: Option<&DeviceArray4>,
        initial_states_bhpn: Option<&DeviceArray4>,
        seq_idx: Option<&DeviceArray2<i32>>,
        seqlen: usize,
    ) -> Result<(DeviceArray5, DeviceArray4), SsdError> {
        let (nb, nc, nh, np, nn) = states_bchpn.dim();
        let (nc2, q) = check_bhcq("dA_cumsum", dacs_bhcq.shape(), nb, nh, seqlen)?;
        check_shape("states", &[nb, nc2, nh, np, nn], states_bchpn.shape())?;
        if let Some(init) = initial_states_bhpn {
            check_shape("initial_states", &[nb, nh, np, nn], init.shape())?;
        }
        check_seq(seq_idx, nb, seqlen)?;
        let prev = self.alloc_out(ndarray::Ix5(nb, nc, nh, np, nn))?;
        let fin = self.alloc_out(ndarray::Ix4(nb, nh, np, nn))?;
        let pn = np * nn;
        self.launch(
            "state_passing_kernel",
            (pn.div_ceil(NT as usize) * nh * nb) as u64,
            NT,
            &[
                states_bchpn.arg(),
                dacs_bhcq.arg(),
                opt_arg(dlo),
                opt_arg(initial_states_bhpn),
                opt_arg(seq_idx),
                prev.arg(),
                fin.arg(),
                i(nb),
                i(seqlen),
                i(nh),
                i(pn),
                i(q),
                i(nc),
            ],
        )?;
        Ok((prev, fin))
    }

    /// `chunk_state` then `state_passing` as one kernel, for the combined forward (the
    /// states `S_c` never reach memory): `(prev_states_bchpn, final_states_bhpn)`, the results of
    /// the two kernels. `x`, `B`, `dt` and `dA_cumsum` are the caller's to have checked.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn chunk_state_passing(
        &self,
        b_blgn: &DeviceArray4,
        x_blhp: &DeviceArray4,
        dt_bhcq: &DeviceArray4,
        dacs_bhcq: &DeviceArray4,
        dlo: Option<&DeviceArray4>,
        initial_states_bhpn: Option<&DeviceArray4>,
        seq_idx: Option<&DeviceArray2<i32>>,
    ) -> Result<(DeviceArray5, DeviceArray4), SsdError> {
        let (nb, l, nh, np) = x_blhp.dim();
        let (_, _, ng, nn) = b_blgn.dim();
        let (_, _, nc, q) = dt_bhcq.dim();
        if let Some(init) = initial_states_bhpn {
            check_shape("initial_states", &[nb, nh, np, nn], init.shape())?;
        }
        check_seq(seq_idx, nb, l)?;
        let prev = self.alloc_out(ndarray::Ix5(nb, nc, nh, np, nn))?;
        let fin = self.alloc_out(ndarray::Ix4(nb, nh, np, nn))?;
        let blocks = tiles(nn) * tiles(np) * (nh * nc * nb) as u64;
        // the ticket counter, then one ready flag per (b, h, tile, c)
        let sync = self.zeros::<i32, _>(ndarray::Ix1(1 + blocks as usize))?;
        self.launch(
            "chunk_state_passing_kernel",
            blocks,
            NT,
            &[
                b_blgn.arg(),
                x_blhp.arg(),
                dt_bhcq.arg(),
                dacs_bhcq.arg(),
                opt_arg(dlo),
                opt_arg(seq_idx),
                opt_arg(initial_states_bhpn),
                prev.arg(),
                fin.arg(),
                sync.arg(),
                i(nb),
                i(l),
                i(nh),
                i(np),
                i(ng),
                i(nn),
                i(q),
                i(nc),
            ],
        )?;
        Ok((prev, fin))
    }

    /// `bmm_chunk` (upstream `_bmm_chunk_fwd`): `CB[l, s] = C_l · B_s` per chunk and group, the full Q × Q
    /// block, 0 across ids and at padding; (b, c, g, Q, Q).
    pub fn bmm_chunk(
        &self,
        c_blgn: &DeviceArray4,
        b_blgn: &DeviceArray4,
        chunk_size: usize,
        seq_idx: Option<&DeviceArray2<i32>>,
    ) -> Result<DeviceArray5, SsdError> {
        self.bmm_chunk_impl(c_blgn, b_blgn, chunk_size, seq_idx, false)
    }

    /// `causal`: only the lower triangle of tiles is computed (what the combined op reads).
    pub(crate) fn bmm_chunk_impl(
        &self,
        c_blgn: &DeviceArray4,
        b_blgn: &DeviceArray4,
        chunk_size: usize,
        seq_idx: Option<&DeviceArray2<i32>>,
        causal: bool,
    ) -> Result<DeviceArray5, SsdError> {
        let (nb, l, ng, nn) = c_blgn.dim();
        check_shape("B", c_blgn.shape(), b_blgn.shape())?;
        if chunk_size == 0 {
            return Err(SsdError::ZeroChunkSize);
        }
        check_seq(seq_idx, nb, l)?;
        let q = chunk_size;
        let nc = l.div_ceil(q);
        let cb = self.alloc_out(ndarray::Ix5(nb, nc, ng, q, q))?;
        self.launch(
            "bmm_chunk_kernel",
            tiles(q) * tiles(q) * (ng * nc * nb) as u64,
            NT,
            &[
                c_blgn.arg(),
                b_blgn.arg(),
                opt_arg(seq_idx),
                cb.arg(),
                i(nb),
                i(l),
                i(ng),
                i(nn),
                i(q),
                i(nc),
                Arg::I32(causal as i32),
            ],
        )?;
        Ok(cb)
    }

    /// `chunk_scan` (upstream `_chunk_scan_fwd`): `(out_blhp, y_blhp?)`, `y` (before the `z` gate) only
    /// when `z` is given.
    pub fn chunk_scan(
        &self,
        cb_bcgqq: &DeviceArray5,
        x_blhp: &DeviceArray4,
        dt_bhcq: &DeviceArray4,
        dacs_bhcq: &DeviceArray4,
        c_blgn: &DeviceArray4,
        prev_states_bchpn: &DeviceArray5,
        d: Option<&DeviceArrayD>,
        z_blhp: Option<&DeviceArray4>,
        seq_idx: Option<&DeviceArray2<i32>>,
    ) -> Result<(DeviceArray4, Option<DeviceArray4>), SsdError> {
        self.chunk_scan_lo(
            cb_bcgqq,
            x_blhp,
            dt_bhcq,
            dacs_bhcq,
            None,
            c_blgn,
            prev_states_bchpn,
            d,
            z_blhp,
            seq_idx,
        )
    }

    pub(crate) fn chunk_scan_lo(
        &self,
        cb_bcgqq: &DeviceArray5,
        x_blhp: &DeviceArray4,
        dt_bhcq: &DeviceArray4,
        dacs_bhcq: &DeviceArray4,
        dlo: Option<&DeviceArray4>,
        c_blgn: &DeviceArray4,
        prev_states_bchpn: &DeviceArray5,
        d: Option<&DeviceArrayD>,
        z_blhp: Option<&DeviceArray4>,
        seq_idx: Option<&DeviceArray2<i32>>,
    ) -> Result<(DeviceArray4, Option<DeviceArray4>), SsdError> {
        let (nb, l, nh, np) = x_blhp.dim();
        let (_, _, ng, nn) = c_blgn.dim();
        check_shape("C", &[nb, l, ng, nn], c_blgn.shape())?;
        check_groups(nh, ng)?;
        let (nc, q) = check_bhcq("dt", dt_bhcq.shape(), nb, nh, l)?;
        check_shape("dA_cumsum", dt_bhcq.shape(), dacs_bhcq.shape())?;
        check_shape("CB", &[nb, nc, ng, q, q], cb_bcgqq.shape())?;
        check_shape("states", &[nb, nc, nh, np, nn], prev_states_bchpn.shape())?;
        let per_channel = match d {
            Some(d) => check_d_shape(d, nh, np)?,
            None => false,
        };
        if let Some(z) = z_blhp {
            check_shape("z", &[nb, l, nh, np], z.shape())?;
        }
        check_seq(seq_idx, nb, l)?;
        let out = self.alloc_out(ndarray::Ix4(nb, l, nh, np))?;
        let y = match z_blhp {
            Some(_) => Some(self.alloc_out(ndarray::Ix4(nb, l, nh, np))?),
            None => None,
        };
        self.launch(
            "chunk_scan_kernel",
            tiles(np) * tiles(q) * (nh * nc * nb) as u64,
            NT,
            &[
                cb_bcgqq.arg(),
                x_blhp.arg(),
                dt_bhcq.arg(),
                dacs_bhcq.arg(),
                opt_arg(dlo),
                c_blgn.arg(),
                prev_states_bchpn.arg(),
                opt_arg(d),
                Arg::I32(per_channel as i32),
                opt_arg(z_blhp),
                opt_arg(seq_idx),
                out.arg(),
                opt_arg(y.as_ref()),
                i(nb),
                i(l),
                i(nh),
                i(np),
                i(ng),
                i(nn),
                i(q),
                i(nc),
            ],
        )?;
        Ok((out, y))
    }
}
