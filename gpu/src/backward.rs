//! The backward kernels of the chunked SSD on the device (docs/design.md §2.6, §5.1).
//! Cross-block reductions (dD, the A-adjoint pieces, dA, ddt_bias, ddA_chunk) go through
//! per-block partials summed in a fixed order: results are bit-identical run to run.
//!
//! | kernel | CUDA | work decomposition |
//! |---|---|---|
//! | `chunk_scan_bwd_dz` | `bwd_dz_kernel` + `sum_rows*` | thread per (h, p) column over 64-row runs |
//! | `chunk_scan_bwd_dstates` | `chunk_state_kernel` (mode 1) | 64 × 64 (p, n) tiles, f64 tensor cores (8 warps), K = tokens |
//! | `state_passing_bwd` | `state_passing_bwd_kernel` + reduce | (b, h, p·n slice), reverse over chunks |
//! | `chunk_scan_chunk_state_bwd_dx` | `bwd_dx_kernel` | 64 tokens × all p, K = n then l ≥ s |
//! | `chunk_state_bwd_db` | `bwd_dbc_kernel` (mode 0) + prefix | 64 × 64 (s, n) tiles, heads of the group in turn |
//! | `chunk_scan_bwd_dc` | `bwd_dbc_kernel` (mode 1) + sum | 64 × 64 (l, n) tiles, heads of the group in turn |
//! | `chunk_scan_bwd_dcb` | `bwd_dcb_kernel` | 64 × 64 (l, s) tiles, s ≤ l, heads in turn |
//! | `bmm_chunk_bwd` | `bmm_chunk_bwd_kernel` ×2 | 64 × 128 (token, n) tiles (128 threads), K = tokens |
//! | `chunk_scan_bwd_ddacs_stable` | `bwd_ddacs_kernel` + sum | per (b, c, h, l tile), s tiles in turn |
//! | `chunk_cumsum_bwd` | `chunk_cumsum_bwd_kernel` + reduce | block per (b, h) |
//!
//! The combined backward runs `chunk_scan_bwd_dcb` and `chunk_scan_bwd_ddacs_stable` as one
//! pass, `bwd_dcb_ddacs_kernel` (+ `dcb_sum_parts_kernel`): both are built on `⟨dy_l, x_s⟩`
//! per head, which it forms once (per (b, c, g, l tile, range of ≤ 16 heads), s tiles in turn).

use crate::array::{
    DeviceArray1, DeviceArray2, DeviceArray3, DeviceArray4, DeviceArray5, DeviceArrayD,
};
use crate::device::{opt_arg, Arg, Gpu, NT, NT8};
use crate::forward::{check_d_shape, check_seq, i, tiles, tiles128};
use ndarray::{Ix1, Ix2, Ix3, Ix4, Ix5, IxDyn};
use ssd_reference::chunking::{check_bhcq, check_cumsum_bwd_args};
use ssd_reference::validate::{check_groups, check_shape};
use ssd_reference::{Options, SsdError};

/// Rows per partial of `chunk_scan_bwd_dz`'s dD and of the row-sum tree.
const ROWS_PER: usize = 64;
/// p·n elements per block of `state_passing_bwd` (NT threads × 8).
const SP_SLICE: usize = 256 * 8;

impl Gpu {
    /// Sums the rows of `part` (nparts, len) in a fixed order (a tree of runs of 64 rows), then
    /// `group` consecutive columns: returns (len / group).
    pub(crate) fn sum_rows(
        &self,
        part: DeviceArray2,
        group: usize,
    ) -> Result<DeviceArray1, SsdError> {
        let (mut nparts, len) = part.dim();
        let mut cur = part;
        while nparts > ROWS_PER {
            let npc = nparts.div_ceil(ROWS_PER);
            let next = self.alloc_out(Ix2(npc, len))?;
            self.launch(
                "sum_rows_chunked_kernel",
                (len.div_ceil(NT as usize) * npc) as u64,
                NT,
                &[cur.arg(), next.arg(), i(nparts), i(len), i(ROWS_PER)],
            )?;
            cur = next;
            nparts = npc;
        }
        let out = self.alloc_out(Ix1(len / group))?;
        self.launch(
            "sum_rows_kernel",
            (len / group).div_ceil(NT as usize) as u64,
            NT,
            &[cur.arg(), out.arg(), i(nparts), i(len), i(group)],
        )?;
        Ok(out)
    }

    /// Per (b, h, c): sums `part` (b·h·c, nparts, q) over its parts; mode 0 as is, 1 exclusive
    /// prefix, 2 reverse inclusive cumsum. Returns (b, h, c, q).
    pub(crate) fn reduce_parts(
        &self,
        part: &DeviceArray3,
        dims: (usize, usize, usize, usize),
        mode: i32,
        seqlen: usize,
    ) -> Result<DeviceArray4, SsdError> {
        let (nb, nh, nc, q) = dims;
        let (_, nparts, _) = part.dim();
        let out = self.alloc_out(Ix4(nb, nh, nc, q))?;
        self.launch(
            "reduce_parts_kernel",
            (nb * nh * nc) as u64,
            NT,
            &[
                part.arg(),
                out.arg(),
                i(nparts),
                i(q),
                Arg::I32(mode),
                i(seqlen),
                i(nc),
            ],
        )?;
        Ok(out)
    }

    /// `chunk_scan_bwd_dz`: `(dy, dz?, dD?)`. `y` (the output before the gate) is needed iff `z`
    /// is given; `dD` has `D`'s shape.
    pub fn chunk_scan_bwd_dz(
        &self,
        dout_blhp: &DeviceArray4,
        x_blhp: &DeviceArray4,
        y_blhp: Option<&DeviceArray4>,
        z_blhp: Option<&DeviceArray4>,
        d: Option<&DeviceArrayD>,
    ) -> Result<(DeviceArray4, Option<DeviceArray4>, Option<DeviceArrayD>), SsdError> {
        let (dy, dz, dd) = self.bwd_dz_lo(dout_blhp, x_blhp, y_blhp, z_blhp, d, true)?;
        let dy = dy.expect("dy is stored when asked for");
        Ok((dy, dz, dd))
    }

    /// [`chunk_scan_bwd_dz`](Self::chunk_scan_bwd_dz), storing `dy` only when `store_dy` or
    /// `z` is given (without `z`, `dy = dout` and the combined backward reads `dout`; that
    /// saves a write and a read of (b, l, h, p) floats).
    pub(crate) fn bwd_dz_lo(
        &self,
        dout_blhp: &DeviceArray4,
        x_blhp: &DeviceArray4,
        y_blhp: Option<&DeviceArray4>,
        z_blhp: Option<&DeviceArray4>,
        d: Option<&DeviceArrayD>,
        store_dy: bool,
    ) -> Result<
        (
            Option<DeviceArray4>,
            Option<DeviceArray4>,
            Option<DeviceArrayD>,
        ),
        SsdError,
    > {
        let (nb, l, nh, np) = x_blhp.dim();
        check_shape("dout", &[nb, l, nh, np], dout_blhp.shape())?;
        if let Some(z) = z_blhp {
            check_shape("z", &[nb, l, nh, np], z.shape())?;
            match y_blhp {
                Some(y) => check_shape("y", &[nb, l, nh, np], y.shape())?,
                None => {
                    return Err(SsdError::invalid(
                        "y",
                        "the output before the gate is needed when z is given",
                    ))
                }
            }
        }
        let per_channel = match d {
            Some(d) => Some(check_d_shape(d, nh, np)?),
            None => None,
        };
        let rows = nb * l;
        let hp = nh * np;
        let nrc = rows.div_ceil(ROWS_PER);
        let dy = if store_dy || z_blhp.is_some() {
            Some(self.alloc_out(Ix4(nb, l, nh, np))?)
        } else {
            None
        };
        let dz = match z_blhp {
            Some(_) => Some(self.alloc_out(Ix4(nb, l, nh, np))?),
            None => None,
        };
        let part = match d {
            Some(_) => Some(self.alloc_out(Ix2(nrc.max(1), hp))?),
            None => None,
        };
        if rows == 0 {
            if let Some(p) = &part {
                self.fill(p, 0.0)?;
            }
        }
        if dy.is_none() && part.is_none() {
            return Ok((None, None, None));
        }
        self.launch(
            "bwd_dz_kernel",
            (hp.div_ceil(NT as usize) * nrc) as u64,
            NT,
            &[
                dout_blhp.arg(),
                x_blhp.arg(),
                if z_blhp.is_some() {
                    opt_arg(y_blhp)
                } else {
                    Arg::Null
                },
                opt_arg(z_blhp),
                opt_arg(dy.as_ref()),
                opt_arg(dz.as_ref()),
                opt_arg(part.as_ref()),
                i(rows),
                i(hp),
                i(ROWS_PER),
            ],
        )?;
        let dd = match (part, per_channel) {
            (Some(part), Some(pc)) => {
                let s = self.sum_rows(part, if pc { 1 } else { np })?;
                Some(if pc {
                    s.into_shape(IxDyn(&[nh, np]))?
                } else {
                    s.into_shape(IxDyn(&[nh]))?
                })
            }
            _ => None,
        };
        Ok((dy, dz, dd))
    }

    /// `chunk_scan_bwd_dstates`: `dP_c = Σ_l [id_l = id_prev] exp(a_l) dy_l ⊗ C_l`, (b, c, h, p, n).
    pub fn chunk_scan_bwd_dstates(
        &self,
        c_blgn: &DeviceArray4,
        dy_blhp: &DeviceArray4,
        dacs_bhcq: &DeviceArray4,
        seq_idx: Option<&DeviceArray2<i32>>,
    ) -> Result<DeviceArray5, SsdError> {
        self.chunk_scan_bwd_dstates_lo(c_blgn, dy_blhp, dacs_bhcq, None, seq_idx)
    }

    pub(crate) fn chunk_scan_bwd_dstates_lo(
        &self,
        c_blgn: &DeviceArray4,
        dy_blhp: &DeviceArray4,
        dacs_bhcq: &DeviceArray4,
        dlo: Option<&DeviceArray4>,
        seq_idx: Option<&DeviceArray2<i32>>,
    ) -> Result<DeviceArray5, SsdError> {
        let (nb, l, nh, np) = dy_blhp.dim();
        let (_, _, ng, nn) = c_blgn.dim();
        check_shape("C", &[nb, l, ng, nn], c_blgn.shape())?;
        check_groups(nh, ng)?;
        let (nc, q) = check_bhcq("dA_cumsum", dacs_bhcq.shape(), nb, nh, l)?;
        check_seq(seq_idx, nb, l)?;
        let out = self.alloc_out(Ix5(nb, nc, nh, np, nn))?;
        self.chunk_state_like(
            1, c_blgn, dy_blhp, dacs_bhcq, dacs_bhcq, dlo, seq_idx, &out, ng, nn, q, nc,
        )?;
        Ok(out)
    }

    /// `state_passing_bwd`: `(dstates_bchpn, dinitial_states_bhpn, ddA_chunk_bhc)`.
    pub fn state_passing_bwd(
        &self,
        prev_states_bchpn: &DeviceArray5,
        dacs_bhcq: &DeviceArray4,
        dprev_states_bchpn: &DeviceArray5,
        dfinal_states_bhpn: Option<&DeviceArray4>,
        seq_idx: Option<&DeviceArray2<i32>>,
        seqlen: usize,
    ) -> Result<(DeviceArray5, DeviceArray4, DeviceArray3), SsdError> {
        self.state_passing_bwd_lo(
            prev_states_bchpn,
            dacs_bhcq,
            None,
            dprev_states_bchpn,
            dfinal_states_bhpn,
            seq_idx,
            seqlen,
        )
    }

    pub(crate) fn state_passing_bwd_lo(
        &self,
        prev_states_bchpn: &DeviceArray5,
        dacs_bhcq: &DeviceArray4,
        dlo: Option<&DeviceArray4>,
        dprev_states_bchpn: &DeviceArray5,
        dfinal_states_bhpn: Option<&DeviceArray4>,
        seq_idx: Option<&DeviceArray2<i32>>,
        seqlen: usize,
    ) -> Result<(DeviceArray5, DeviceArray4, DeviceArray3), SsdError> {
        let (nb, nc, nh, np, nn) = prev_states_bchpn.dim();
        let (nc2, q) = check_bhcq("dA_cumsum", dacs_bhcq.shape(), nb, nh, seqlen)?;
        check_shape("states", &[nb, nc2, nh, np, nn], prev_states_bchpn.shape())?;
        check_shape("dstates", &[nb, nc, nh, np, nn], dprev_states_bchpn.shape())?;
        if let Some(f) = dfinal_states_bhpn {
            check_shape("dfinal_states", &[nb, nh, np, nn], f.shape())?;
        }
        check_seq(seq_idx, nb, seqlen)?;
        let pn = np * nn;
        let nsplit = pn.div_ceil(SP_SLICE).max(1);
        let dstates = self.alloc_out(Ix5(nb, nc, nh, np, nn))?;
        let dinit = self.alloc_out(Ix4(nb, nh, np, nn))?;
        let part = self.alloc_out(Ix1(nb * nh * nc * nsplit))?;
        let dda_chunk = self.alloc_out(Ix3(nb, nh, nc))?;
        self.launch(
            "state_passing_bwd_kernel",
            (nsplit * nh * nb) as u64,
            NT,
            &[
                prev_states_bchpn.arg(),
                dacs_bhcq.arg(),
                opt_arg(dlo),
                dprev_states_bchpn.arg(),
                opt_arg(dfinal_states_bhpn),
                opt_arg(seq_idx),
                dstates.arg(),
                dinit.arg(),
                part.arg(),
                i(nb),
                i(seqlen),
                i(nh),
                i(pn),
                i(q),
                i(nc),
                i(nsplit),
            ],
        )?;
        self.launch(
            "state_passing_bwd_reduce_kernel",
            (nb * nh * nc).div_ceil(NT as usize) as u64,
            NT,
            &[
                part.arg(),
                dacs_bhcq.arg(),
                opt_arg(dlo),
                opt_arg(seq_idx),
                dda_chunk.arg(),
                i(nb),
                i(seqlen),
                i(nh),
                i(q),
                i(nc),
                i(nsplit),
            ],
        )?;
        Ok((dstates, dinit, dda_chunk))
    }

    /// `chunk_scan_chunk_state_bwd_dx`: `(dx_blhp, ddt_direct_bhcq)`.
    pub fn chunk_scan_chunk_state_bwd_dx(
        &self,
        x_blhp: &DeviceArray4,
        dt_bhcq: &DeviceArray4,
        dacs_bhcq: &DeviceArray4,
        b_blgn: &DeviceArray4,
        cb_bcgqq: &DeviceArray5,
        dy_blhp: &DeviceArray4,
        dstates_bchpn: &DeviceArray5,
        d: Option<&DeviceArrayD>,
        seq_idx: Option<&DeviceArray2<i32>>,
    ) -> Result<(DeviceArray4, DeviceArray4), SsdError> {
        self.bwd_dx_lo(
            x_blhp,
            dt_bhcq,
            dacs_bhcq,
            None,
            b_blgn,
            cb_bcgqq,
            dy_blhp,
            dstates_bchpn,
            d,
            seq_idx,
        )
    }

    pub(crate) fn bwd_dx_lo(
        &self,
        x_blhp: &DeviceArray4,
        dt_bhcq: &DeviceArray4,
        dacs_bhcq: &DeviceArray4,
        dlo: Option<&DeviceArray4>,
        b_blgn: &DeviceArray4,
        cb_bcgqq: &DeviceArray5,
        dy_blhp: &DeviceArray4,
        dstates_bchpn: &DeviceArray5,
        d: Option<&DeviceArrayD>,
        seq_idx: Option<&DeviceArray2<i32>>,
    ) -> Result<(DeviceArray4, DeviceArray4), SsdError> {
        let (nb, l, nh, np) = x_blhp.dim();
        let (_, _, ng, nn) = b_blgn.dim();
        check_shape("B", &[nb, l, ng, nn], b_blgn.shape())?;
        check_groups(nh, ng)?;
        let (nc, q) = check_bhcq("dt", dt_bhcq.shape(), nb, nh, l)?;
        check_shape("dA_cumsum", dt_bhcq.shape(), dacs_bhcq.shape())?;
        check_shape("CB", &[nb, nc, ng, q, q], cb_bcgqq.shape())?;
        check_shape("dy", &[nb, l, nh, np], dy_blhp.shape())?;
        check_shape("dstates", &[nb, nc, nh, np, nn], dstates_bchpn.shape())?;
        let per_channel = match d {
            Some(d) => check_d_shape(d, nh, np)?,
            None => false,
        };
        check_seq(seq_idx, nb, l)?;
        let dx = self.alloc_out(Ix4(nb, l, nh, np))?;
        let ddt = self.alloc_out(Ix4(nb, nh, nc, q))?;
        self.launch(
            "bwd_dx_kernel",
            tiles(q) * (nh * nc * nb) as u64,
            NT,
            &[
                x_blhp.arg(),
                dt_bhcq.arg(),
                dacs_bhcq.arg(),
                opt_arg(dlo),
                b_blgn.arg(),
                cb_bcgqq.arg(),
                dy_blhp.arg(),
                dstates_bchpn.arg(),
                opt_arg(d),
                Arg::I32(per_channel as i32),
                opt_arg(seq_idx),
                dx.arg(),
                ddt.arg(),
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
        Ok((dx, ddt))
    }

    /// Launches `bwd_dbc_kernel`; returns the partials (b·h·c, n tiles, q).
    pub(crate) fn dbc(
        &self,
        mode: i32,
        x_like: &DeviceArray4,
        m_like: &DeviceArray5,
        y_like: &DeviceArray4,
        dt_bhcq: &DeviceArray4,
        dacs_bhcq: &DeviceArray4,
        dlo: Option<&DeviceArray4>,
        seq_idx: Option<&DeviceArray2<i32>>,
        out: &DeviceArray4,
        accumulate: bool,
    ) -> Result<DeviceArray3, SsdError> {
        let (nb, l, nh, np) = x_like.dim();
        let (_, _, ng, nn) = y_like.dim();
        let (_, _, nc, q) = dacs_bhcq.dim();
        let tn = nn.div_ceil(64);
        let part = self.alloc_out(Ix3(nb * nh * nc, tn, q))?;
        self.launch(
            "bwd_dbc_kernel",
            tn as u64 * tiles(q) * (ng * nc * nb) as u64,
            NT,
            &[
                Arg::I32(mode),
                x_like.arg(),
                m_like.arg(),
                y_like.arg(),
                dt_bhcq.arg(),
                dacs_bhcq.arg(),
                opt_arg(dlo),
                opt_arg(seq_idx),
                out.arg(),
                part.arg(),
                Arg::I32(accumulate as i32),
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
        if tn == 0 {
            self.fill(&part, 0.0)?;
        }
        Ok(part)
    }

    /// `chunk_state_bwd_db`: `(db_blgn, ddA_next_bhcq)`, the chunk-state path of dB and the
    /// exclusive prefix over s of `U_s = Δ_s exp(a_last − a_s) ⟨x_s ⊗ B_s, dS_c⟩`.
    pub fn chunk_state_bwd_db(
        &self,
        x_blhp: &DeviceArray4,
        b_blgn: &DeviceArray4,
        dt_bhcq: &DeviceArray4,
        dacs_bhcq: &DeviceArray4,
        dstates_bchpn: &DeviceArray5,
        seq_idx: Option<&DeviceArray2<i32>>,
    ) -> Result<(DeviceArray4, DeviceArray4), SsdError> {
        let (nb, l, nh, np) = x_blhp.dim();
        let (_, _, ng, nn) = b_blgn.dim();
        check_shape("B", &[nb, l, ng, nn], b_blgn.shape())?;
        check_groups(nh, ng)?;
        let (nc, q) = check_bhcq("dt", dt_bhcq.shape(), nb, nh, l)?;
        check_shape("dA_cumsum", dt_bhcq.shape(), dacs_bhcq.shape())?;
        check_shape("dstates", &[nb, nc, nh, np, nn], dstates_bchpn.shape())?;
        check_seq(seq_idx, nb, l)?;
        let db = self.alloc_out(Ix4(nb, l, ng, nn))?;
        let part = self.dbc(
            0,
            x_blhp,
            dstates_bchpn,
            b_blgn,
            dt_bhcq,
            dacs_bhcq,
            None,
            seq_idx,
            &db,
            false,
        )?;
        let next = self.reduce_parts(&part, (nb, nh, nc, q), 1, l)?;
        Ok((db, next))
    }

    /// `chunk_scan_bwd_dc`: `(dc_blgn, ddacs_prev_bhcq)`, the entering-state path of dC and
    /// `V_l = [id_l = id_prev] exp(a_l) ⟨dy_l ⊗ C_l, P_c⟩` (w.r.t. the cumsum `a_l`).
    pub fn chunk_scan_bwd_dc(
        &self,
        prev_states_bchpn: &DeviceArray5,
        dacs_bhcq: &DeviceArray4,
        c_blgn: &DeviceArray4,
        dy_blhp: &DeviceArray4,
        seq_idx: Option<&DeviceArray2<i32>>,
    ) -> Result<(DeviceArray4, DeviceArray4), SsdError> {
        let (nb, l, nh, np) = dy_blhp.dim();
        let (_, _, ng, nn) = c_blgn.dim();
        check_shape("C", &[nb, l, ng, nn], c_blgn.shape())?;
        check_groups(nh, ng)?;
        let (nc, q) = check_bhcq("dA_cumsum", dacs_bhcq.shape(), nb, nh, l)?;
        check_shape("states", &[nb, nc, nh, np, nn], prev_states_bchpn.shape())?;
        check_seq(seq_idx, nb, l)?;
        let dc = self.alloc_out(Ix4(nb, l, ng, nn))?;
        let part = self.dbc(
            1,
            dy_blhp,
            prev_states_bchpn,
            c_blgn,
            dacs_bhcq,
            dacs_bhcq,
            None,
            seq_idx,
            &dc,
            false,
        )?;
        let v = self.reduce_parts(&part, (nb, nh, nc, q), 0, l)?;
        Ok((dc, v))
    }

    /// `chunk_scan_bwd_dcb`: `dCB[l, s] = Σ_{h in g} ⟨dy_l, x_s⟩ Δ_s exp(a_l − a_s)` for s ≤ l
    /// (0 above the diagonal); (b, c, g, Q, Q).
    pub fn chunk_scan_bwd_dcb(
        &self,
        x_blhp: &DeviceArray4,
        dt_bhcq: &DeviceArray4,
        dacs_bhcq: &DeviceArray4,
        dy_blhp: &DeviceArray4,
        ngroups: usize,
    ) -> Result<DeviceArray5, SsdError> {
        self.chunk_scan_bwd_dcb_lo(x_blhp, dt_bhcq, dacs_bhcq, None, dy_blhp, ngroups)
    }

    pub(crate) fn chunk_scan_bwd_dcb_lo(
        &self,
        x_blhp: &DeviceArray4,
        dt_bhcq: &DeviceArray4,
        dacs_bhcq: &DeviceArray4,
        dlo: Option<&DeviceArray4>,
        dy_blhp: &DeviceArray4,
        ngroups: usize,
    ) -> Result<DeviceArray5, SsdError> {
        let (nb, l, nh, np) = x_blhp.dim();
        check_groups(nh, ngroups)?;
        let (nc, q) = check_bhcq("dt", dt_bhcq.shape(), nb, nh, l)?;
        check_shape("dA_cumsum", dt_bhcq.shape(), dacs_bhcq.shape())?;
        check_shape("dy", &[nb, l, nh, np], dy_blhp.shape())?;
        let ng = ngroups;
        let dcb = self.alloc_out(Ix5(nb, nc, ng, q, q))?;
        self.launch(
            "bwd_dcb_kernel",
            tiles(q) * tiles(q) * (ng * nc * nb) as u64,
            NT,
            &[
                x_blhp.arg(),
                dt_bhcq.arg(),
                dacs_bhcq.arg(),
                opt_arg(dlo),
                dy_blhp.arg(),
                dcb.arg(),
                i(nb),
                i(l),
                i(nh),
                i(np),
                i(ng),
                i(q),
                i(nc),
            ],
        )?;
        Ok(dcb)
    }

    /// `bmm_chunk_bwd`: `(db_blgn, dc_blgn)`, the adjoint of `bmm_chunk` (id mask included).
    pub fn bmm_chunk_bwd(
        &self,
        c_blgn: &DeviceArray4,
        b_blgn: &DeviceArray4,
        dcb_bcgqq: &DeviceArray5,
        seq_idx: Option<&DeviceArray2<i32>>,
    ) -> Result<(DeviceArray4, DeviceArray4), SsdError> {
        let (nb, l, ng, nn) = c_blgn.dim();
        check_shape("B", c_blgn.shape(), b_blgn.shape())?;
        let (_, nc, _, q, _) = dcb_bcgqq.dim();
        if q == 0 {
            return Err(SsdError::ZeroChunkSize);
        }
        check_shape("dCB", &[nb, l.div_ceil(q), ng, q, q], dcb_bcgqq.shape())?;
        check_seq(seq_idx, nb, l)?;
        let db = self.alloc_out(Ix4(nb, l, ng, nn))?;
        let dc = self.alloc_out(Ix4(nb, l, ng, nn))?;
        self.bmm_bwd_into(
            dcb_bcgqq, c_blgn, b_blgn, seq_idx, &db, &dc, false, false, nc, q,
        )?;
        Ok((db, dc))
    }

    pub(crate) fn bmm_bwd_into(
        &self,
        dcb: &DeviceArray5,
        c_blgn: &DeviceArray4,
        b_blgn: &DeviceArray4,
        seq_idx: Option<&DeviceArray2<i32>>,
        db: &DeviceArray4,
        dc: &DeviceArray4,
        accumulate: bool,
        causal: bool,
        nc: usize,
        q: usize,
    ) -> Result<(), SsdError> {
        let (nb, l, ng, nn) = c_blgn.dim();
        for (mode, y, out) in [(0, c_blgn, db), (1, b_blgn, dc)] {
            self.launch(
                "bmm_chunk_bwd_kernel",
                tiles128(nn) * tiles(q) * (ng * nc * nb) as u64,
                NT8,
                &[
                    Arg::I32(mode),
                    dcb.arg(),
                    y.arg(),
                    opt_arg(seq_idx),
                    out.arg(),
                    Arg::I32(accumulate as i32),
                    Arg::I32(causal as i32),
                    i(nb),
                    i(l),
                    i(ng),
                    i(nn),
                    i(q),
                    i(nc),
                ],
            )?;
        }
        Ok(())
    }

    /// Launches `bwd_ddacs_kernel`; returns the partials (b·h·c, l tiles, q).
    pub(crate) fn ddacs_parts(
        &self,
        x_blhp: &DeviceArray4,
        dt_bhcq: &DeviceArray4,
        dacs_bhcq: &DeviceArray4,
        dlo: Option<&DeviceArray4>,
        dy_blhp: &DeviceArray4,
        cb_bcgqq: &DeviceArray5,
    ) -> Result<DeviceArray3, SsdError> {
        let (nb, l, nh, np) = x_blhp.dim();
        let (_, nc, ng, q, _) = cb_bcgqq.dim();
        let tq = q.div_ceil(64);
        let part = self.alloc_out(Ix3(nb * nh * nc, tq, q))?;
        self.launch(
            "bwd_ddacs_kernel",
            tq as u64 * (nh * nc * nb) as u64,
            NT,
            &[
                x_blhp.arg(),
                dt_bhcq.arg(),
                dacs_bhcq.arg(),
                opt_arg(dlo),
                dy_blhp.arg(),
                cb_bcgqq.arg(),
                part.arg(),
                i(nb),
                i(l),
                i(nh),
                i(np),
                i(ng),
                i(q),
                i(nc),
            ],
        )?;
        Ok(part)
    }

    /// `chunk_scan_bwd_dcb` and the partials of `chunk_scan_bwd_ddacs_stable` in one pass
    /// (`bwd_dcb_ddacs_kernel`): both are built on `⟨dy_l, x_s⟩` per head, formed once here.
    /// Returns `(dCB (b, c, g, Q, Q), ddacs partials (b·h·c, l tiles, Q))`. The group's heads
    /// are split into ranges of at most 16 so that there are about 1024 blocks (a count that
    /// depends on the shape only, so the bits do not depend on the device). When the (b, c, g,
    /// l tile) blocks alone are that many, the ranges run in turn, each added into `dCB`;
    /// otherwise in one launch into slices that `dcb_sum_parts_kernel` sums in order (the same
    /// sums either way).
    pub(crate) fn dcb_ddacs_lo(
        &self,
        x_blhp: &DeviceArray4,
        dt_bhcq: &DeviceArray4,
        dacs_bhcq: &DeviceArray4,
        dlo: Option<&DeviceArray4>,
        dy_blhp: &DeviceArray4,
        cb_bcgqq: &DeviceArray5,
    ) -> Result<(DeviceArray5, DeviceArray3), SsdError> {
        // heads per range: the kernel's shared `carry` holds DDC_MAXH = 16 (backward.cu)
        const MAX_HEADS: usize = 16;
        const TARGET_BLOCKS: usize = 1024;
        let (nb, l, nh, np) = x_blhp.dim();
        let (_, nc, ng, q, _) = cb_bcgqq.dim();
        let tq = q.div_ceil(64);
        let hpg = nh / ng;
        let base = (nb * nc * ng * tq).max(1);
        let nsplit = TARGET_BLOCKS
            .div_ceil(base)
            .max(hpg.div_ceil(MAX_HEADS))
            .clamp(1, hpg.max(1));
        let hper = hpg.div_ceil(nsplit).max(1);
        let nsplit = hpg.div_ceil(hper).max(1);
        let part = self.alloc_out(Ix3(nb * nh * nc, tq, q))?;
        let dcb = self.alloc_out(Ix5(nb, nc, ng, q, q))?;
        let args = |out, ngrid: usize, hs0: usize, direct: bool, accumulate: bool| {
            [
                x_blhp.arg(),
                dt_bhcq.arg(),
                dacs_bhcq.arg(),
                opt_arg(dlo),
                dy_blhp.arg(),
                cb_bcgqq.arg(),
                out,
                part.arg(),
                i(nb),
                i(l),
                i(nh),
                i(np),
                i(ng),
                i(q),
                i(nc),
                i(ngrid),
                i(hs0),
                i(hper),
                Arg::I32(direct as i32),
                Arg::I32(accumulate as i32),
            ]
        };
        if nsplit == 1 || base >= TARGET_BLOCKS {
            // enough blocks per range: the ranges in turn, each added into dCB (no slices, whose
            // memory would be nsplit × dCB on long sequences)
            for hs in 0..nsplit {
                self.launch(
                    "bwd_dcb_ddacs_kernel",
                    base as u64,
                    NT,
                    &args(dcb.arg(), 1, hs, true, hs > 0),
                )?;
            }
        } else {
            let slices = self.alloc_out(Ix5(nsplit * nb, nc, ng, q, q))?;
            self.launch(
                "bwd_dcb_ddacs_kernel",
                (nsplit * base) as u64,
                NT,
                &args(slices.arg(), nsplit, 0, false, false),
            )?;
            let n = nb * nc * ng * q * q;
            self.launch(
                "dcb_sum_parts_kernel",
                n.div_ceil(NT as usize) as u64,
                NT,
                &[slices.arg(), dcb.arg(), i(nsplit), i(n), i(q)],
            )?;
        }
        Ok((dcb, part))
    }

    /// `chunk_scan_bwd_ddacs_stable`: `ddA_intra_k = Σ_{l ≥ k > s} ⟨dy_l, x_s⟩ Δ_s CB[l, s]
    /// exp(a_l − a_s)`, (b, h, c, Q), from sums of products.
    pub fn chunk_scan_bwd_ddacs_stable(
        &self,
        x_blhp: &DeviceArray4,
        dt_bhcq: &DeviceArray4,
        dacs_bhcq: &DeviceArray4,
        dy_blhp: &DeviceArray4,
        cb_bcgqq: &DeviceArray5,
    ) -> Result<DeviceArray4, SsdError> {
        let (nb, l, nh, _) = x_blhp.dim();
        let (nc, q) = check_intra_args(x_blhp, dt_bhcq, dacs_bhcq, dy_blhp, cb_bcgqq)?;
        let part = self.ddacs_parts(x_blhp, dt_bhcq, dacs_bhcq, None, dy_blhp, cb_bcgqq)?;
        self.reduce_parts(&part, (nb, nh, nc, q), 0, l)
    }

    /// [`chunk_scan_bwd_dcb`](Self::chunk_scan_bwd_dcb) and
    /// [`chunk_scan_bwd_ddacs_stable`](Self::chunk_scan_bwd_ddacs_stable) in one pass, as the
    /// combined backward runs them: `(dCB (b, c, g, Q, Q), ddA_intra (b, h, c, Q))`, with one
    /// `⟨dy_l, x_s⟩` product per head for both; `ngroups` is `CB`'s.
    pub fn chunk_scan_bwd_dcb_ddacs_stable(
        &self,
        x_blhp: &DeviceArray4,
        dt_bhcq: &DeviceArray4,
        dacs_bhcq: &DeviceArray4,
        dy_blhp: &DeviceArray4,
        cb_bcgqq: &DeviceArray5,
    ) -> Result<(DeviceArray5, DeviceArray4), SsdError> {
        let (nb, l, nh, _) = x_blhp.dim();
        let (nc, q) = check_intra_args(x_blhp, dt_bhcq, dacs_bhcq, dy_blhp, cb_bcgqq)?;
        let (dcb, part) = self.dcb_ddacs_lo(x_blhp, dt_bhcq, dacs_bhcq, None, dy_blhp, cb_bcgqq)?;
        Ok((dcb, self.reduce_parts(&part, (nb, nh, nc, q), 0, l)?))
    }

    /// `chunk_cumsum_bwd`: `(ddt_blh, da_h, ddt_bias_h?)` from the total `ddA` (w.r.t. each
    /// `Δ_k A`) and `ddt_direct`.
    pub fn chunk_cumsum_bwd(
        &self,
        dda_bhcq: &DeviceArray4,
        ddt_direct_bhcq: &DeviceArray4,
        dt_blh: &DeviceArray3,
        a_h: &DeviceArray1,
        dt_bias_h: Option<&DeviceArray1>,
        options: &Options,
    ) -> Result<(DeviceArray3, DeviceArray1, Option<DeviceArray1>), SsdError> {
        let (nb, l, nh) = dt_blh.dim();
        let (nc, q) = check_cumsum_bwd_args(
            nb,
            l,
            nh,
            a_h.shape(),
            dt_bias_h.as_ref().map(|v| v.shape()),
            dda_bhcq.shape(),
            ddt_direct_bhcq.shape(),
            options,
        )?;
        let ddt = self.alloc_out(Ix3(nb, l, nh))?;
        let part = self.alloc_out(Ix1(nb * nh * 2))?;
        let da = self.alloc_out(Ix1(nh))?;
        let dbias = match dt_bias_h {
            Some(_) => Some(self.alloc_out(Ix1(nh))?),
            None => None,
        };
        self.launch(
            "chunk_cumsum_bwd_kernel",
            (nb * nh) as u64,
            NT,
            &[
                dda_bhcq.arg(),
                ddt_direct_bhcq.arg(),
                dt_blh.arg(),
                a_h.arg(),
                opt_arg(dt_bias_h),
                ddt.arg(),
                part.arg(),
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
        self.launch(
            "chunk_cumsum_bwd_reduce_kernel",
            nh.div_ceil(NT as usize) as u64,
            NT,
            &[part.arg(), da.arg(), opt_arg(dbias.as_ref()), i(nb), i(nh)],
        )?;
        Ok((ddt, da, dbias))
    }
}

/// The argument checks of `chunk_scan_bwd_ddacs_stable` (and of its one pass with dcb): `dt`
/// and `dA_cumsum` (b, h, c, Q) for `x`'s (b, l, h), `dy` as `x`, `CB` (b, c, g, Q, Q) with g
/// dividing h. Returns `(c, Q)`.
fn check_intra_args(
    x_blhp: &DeviceArray4,
    dt_bhcq: &DeviceArray4,
    dacs_bhcq: &DeviceArray4,
    dy_blhp: &DeviceArray4,
    cb_bcgqq: &DeviceArray5,
) -> Result<(usize, usize), SsdError> {
    let (nb, l, nh, np) = x_blhp.dim();
    let (nc, q) = check_bhcq("dt", dt_bhcq.shape(), nb, nh, l)?;
    check_shape("dA_cumsum", dt_bhcq.shape(), dacs_bhcq.shape())?;
    check_shape("dy", &[nb, l, nh, np], dy_blhp.shape())?;
    let ng = cb_bcgqq.shape()[2];
    check_groups(nh, ng)?;
    check_shape("CB", &[nb, nc, ng, q, q], cb_bcgqq.shape())?;
    Ok((nc, q))
}
