//! The float64 reference backend: the `ssd-reference` kernels under the names the matrix
//! compares, the float64 backward intermediates every backward kernel reads, and the truth of
//! the combined op's gradients (`ssd_recurrent_bwd`).

use super::{Backend, BackwardInputs, KernelInputs, Precision, Tensors};
use ndarray::{Array4, ArrayD};
use ssd_reference::{
    bmm_chunk, bmm_chunk_bwd, chunk_cumsum, chunk_cumsum_bwd, chunk_scan, chunk_scan_bwd_dc,
    chunk_scan_bwd_dcb, chunk_scan_bwd_ddacs_stable, chunk_scan_bwd_dstates, chunk_scan_bwd_dz,
    chunk_scan_chunk_state_bwd_dx, chunk_state, chunk_state_bwd_db, mamba_chunk_scan_combined,
    mamba_chunk_scan_combined_bwd, rmsnorm_gated, rmsnorm_gated_bwd, selective_state_update,
    ssd_recurrent_bwd, state_passing, state_passing_bwd, swiglu, swiglu_bwd, ChunkedForward,
    Gradients, Kernel, Outputs, Problem, SsdError,
};

/// The float64 reference (`ssd-reference`): the chunked kernels and the combined op.
#[derive(Debug, Clone, Copy, Default)]
pub struct Reference;

pub(crate) fn t<D: ndarray::Dimension>(
    name: &'static str,
    a: ndarray::Array<f64, D>,
) -> (&'static str, ArrayD<f64>) {
    (name, a.into_dyn())
}

impl Backend for Reference {
    fn name(&self) -> &'static str {
        "reference"
    }

    fn precision(&self) -> Precision {
        Precision::F64
    }

    fn kernel(&self, kernel: Kernel, i: &KernelInputs) -> Result<Option<Tensors>, SsdError> {
        let p = &i.problem;
        let seq = p.seq_idx.as_ref().map(|s| s.view());
        let l = p.x.dim().1;
        Ok(Some(match kernel {
            Kernel::ChunkCumsum => {
                let (dt, dacs) = chunk_cumsum(
                    p.dt.view(),
                    p.a.view(),
                    p.dt_bias.as_ref().map(|v| v.view()),
                    &p.options,
                )?;
                vec![t("dt_bhcq", dt), t("dacs_bhcq", dacs)]
            }
            Kernel::ChunkState => vec![t(
                "states_bchpn",
                chunk_state(
                    p.b.view(),
                    p.x.view(),
                    i.dt_bhcq.view(),
                    i.dacs_bhcq.view(),
                    seq,
                )?,
            )],
            Kernel::StatePassing => {
                let (prev, fin) = state_passing(
                    i.states_bchpn.view(),
                    i.dacs_bhcq.view(),
                    p.initial_states.as_ref().map(|v| v.view()),
                    seq,
                    l,
                )?;
                vec![t("prev_states_bchpn", prev), t("final_states_bhpn", fin)]
            }
            Kernel::BmmChunk => vec![t(
                "cb_bcgqq",
                bmm_chunk(p.c.view(), p.b.view(), p.options.chunk_size, seq)?,
            )],
            Kernel::ChunkScan => {
                let (out, y) = chunk_scan(
                    i.cb_bcgqq.view(),
                    p.x.view(),
                    i.dt_bhcq.view(),
                    i.dacs_bhcq.view(),
                    p.c.view(),
                    i.prev_states_bchpn.view(),
                    p.d.as_ref().map(|v| v.view()),
                    p.z.as_ref().map(|v| v.view()),
                    seq,
                )?;
                let mut v = vec![t("out_blhp", out)];
                if let Some(y) = y {
                    v.push(t("y_blhp", y));
                }
                v
            }
            Kernel::SelectiveStateUpdate => {
                let dc = &i.decode;
                let mut state = dc.state.clone();
                let out = selective_state_update(state.view_mut(), &dc.inputs(), &dc.options)?;
                vec![t("out_bhp", out), t("state", state)]
            }
            Kernel::RmsnormGated => {
                let n = &i.norm;
                vec![t(
                    "out",
                    rmsnorm_gated(
                        n.x.view(),
                        n.weight.view(),
                        n.z.as_ref().map(|v| v.view()),
                        &n.options,
                    )?,
                )]
            }
            Kernel::Swiglu => vec![t("out", swiglu(i.swiglu.x.view(), i.swiglu.y.view())?)],
            Kernel::RmsnormGatedBwd => {
                let n = &i.norm;
                let (dx, dw, dz) = rmsnorm_gated_bwd(
                    n.x.view(),
                    n.weight.view(),
                    n.z.as_ref().map(|v| v.view()),
                    n.dout.view(),
                    &n.options,
                )?;
                let mut v = vec![t("dx", dx), t("dweight", dw)];
                if let Some(dz) = dz {
                    v.push(t("dz", dz));
                }
                v
            }
            Kernel::SwigluBwd => {
                let sw = &i.swiglu;
                let (dx, dy) = swiglu_bwd(sw.x.view(), sw.y.view(), sw.dout.view())?;
                vec![t("dx", dx), t("dy", dy)]
            }
            k => {
                let bw = match &i.backward {
                    Some(bw) => bw,
                    None => return Ok(None),
                };
                backward_kernel(k, i, bw)?
            }
        }))
    }

    fn forward(&self, problem: &Problem<f64>) -> Result<Outputs<f64>, SsdError> {
        mamba_chunk_scan_combined(&problem.inputs(), &problem.options)
    }

    fn backward(
        &self,
        problem: &Problem<f64>,
        dout: &Array4<f64>,
        dfinal_states: Option<&Array4<f64>>,
    ) -> Result<Option<Gradients<f64>>, SsdError> {
        let (g, _) = mamba_chunk_scan_combined_bwd(
            &problem.inputs(),
            &problem.options,
            dout.view(),
            dfinal_states.map(|v| v.view()),
        )?;
        Ok(Some(g))
    }
}

/// The float64 backward kernels of the chunked SSD on `i` (with its backward intermediates).
fn backward_kernel(
    kernel: Kernel,
    i: &KernelInputs,
    bw: &BackwardInputs,
) -> Result<Tensors, SsdError> {
    let p = &i.problem;
    let seq = p.seq_idx.as_ref().map(|s| s.view());
    let l = p.x.dim().1;
    Ok(match kernel {
        Kernel::ChunkScanBwdDz => {
            let (dy, dz, dd) = chunk_scan_bwd_dz(
                bw.dout.view(),
                p.x.view(),
                i.y.as_ref().map(|v| v.view()),
                p.z.as_ref().map(|v| v.view()),
                p.d.as_ref().map(|v| v.view()),
            )?;
            let mut v = vec![t("dy_blhp", dy)];
            if let Some(dz) = dz {
                v.push(t("dz_blhp", dz));
            }
            if let Some(dd) = dd {
                v.push(t("dd", dd));
            }
            v
        }
        Kernel::ChunkScanBwdDstates => vec![t(
            "dprev_states_bchpn",
            chunk_scan_bwd_dstates(p.c.view(), bw.dy.view(), i.dacs_bhcq.view(), seq)?,
        )],
        Kernel::StatePassingBwd => {
            let (ds, dinit, ddac) = state_passing_bwd(
                i.prev_states_bchpn.view(),
                i.dacs_bhcq.view(),
                bw.dprev_states.view(),
                bw.dfinal_states.as_ref().map(|v| v.view()),
                seq,
                l,
            )?;
            vec![
                t("dstates_bchpn", ds),
                t("dinitial_states_bhpn", dinit),
                t("dda_chunk_bhc", ddac),
            ]
        }
        Kernel::ChunkScanChunkStateBwdDx => {
            let (dx, ddt) = chunk_scan_chunk_state_bwd_dx(
                p.x.view(),
                i.dt_bhcq.view(),
                i.dacs_bhcq.view(),
                p.b.view(),
                i.cb_bcgqq.view(),
                bw.dy.view(),
                bw.dstates.view(),
                p.d.as_ref().map(|v| v.view()),
                seq,
            )?;
            vec![t("dx_blhp", dx), t("ddt_direct_bhcq", ddt)]
        }
        Kernel::ChunkStateBwdDb => {
            let (db, next) = chunk_state_bwd_db(
                p.x.view(),
                p.b.view(),
                i.dt_bhcq.view(),
                i.dacs_bhcq.view(),
                bw.dstates.view(),
                seq,
            )?;
            vec![t("db_blgn", db), t("dda_next_bhcq", next)]
        }
        Kernel::ChunkScanBwdDc => {
            let (dc, prev) = chunk_scan_bwd_dc(
                i.prev_states_bchpn.view(),
                i.dacs_bhcq.view(),
                p.c.view(),
                bw.dy.view(),
                seq,
            )?;
            vec![t("dc_blgn", dc), t("ddacs_prev_bhcq", prev)]
        }
        Kernel::ChunkScanBwdDcb => vec![t(
            "dcb_bcgqq",
            chunk_scan_bwd_dcb(
                p.x.view(),
                i.dt_bhcq.view(),
                i.dacs_bhcq.view(),
                bw.dy.view(),
                p.dims().ngroups,
            )?,
        )],
        Kernel::BmmChunkBwd => {
            let (db, dc) = bmm_chunk_bwd(p.c.view(), p.b.view(), bw.dcb.view(), seq)?;
            vec![t("db_blgn", db), t("dc_blgn", dc)]
        }
        Kernel::ChunkScanBwdDdacsStable => vec![t(
            "dda_intra_bhcq",
            chunk_scan_bwd_ddacs_stable(
                p.x.view(),
                i.dt_bhcq.view(),
                i.dacs_bhcq.view(),
                bw.dy.view(),
                i.cb_bcgqq.view(),
            )?,
        )],
        Kernel::ChunkCumsumBwd => {
            let (ddt, da, dbias) = chunk_cumsum_bwd(
                bw.dda.view(),
                bw.ddt_direct.view(),
                p.dt.view(),
                p.a.view(),
                p.dt_bias.as_ref().map(|v| v.view()),
                &p.options,
            )?;
            let mut v = vec![t("ddt_blh", ddt), t("da_h", da)];
            if let Some(db) = dbias {
                v.push(t("ddt_bias_h", db));
            }
            v
        }
        k => {
            return Err(SsdError::invalid(
                "kernel",
                format!("{k} is not a chunked backward kernel"),
            ))
        }
    })
}

/// The backward intermediates of a problem from the float64 backward kernels: `dy`, `dP`, `dS`,
/// `dCB`, `ddt_direct`, and the assembled `ddA` (the sum of the four producers).
pub fn reference_backward_inputs(
    problem: &Problem<f64>,
    f: &ChunkedForward,
    dout: &Array4<f64>,
    dfinal_states: Option<&Array4<f64>>,
) -> Result<Option<BackwardInputs>, SsdError> {
    let p = problem;
    let seq = p.seq_idx.as_ref().map(|s| s.view());
    let l = p.x.dim().1;
    let (dy, _, _) = chunk_scan_bwd_dz(
        dout.view(),
        p.x.view(),
        f.y.as_ref().map(|v| v.view()),
        p.z.as_ref().map(|v| v.view()),
        p.d.as_ref().map(|v| v.view()),
    )?;
    let dprev = chunk_scan_bwd_dstates(p.c.view(), dy.view(), f.dacs_bhcq.view(), seq)?;
    let (dstates, _, _) = state_passing_bwd(
        f.prev_states_bchpn.view(),
        f.dacs_bhcq.view(),
        dprev.view(),
        dfinal_states.map(|v| v.view()),
        seq,
        l,
    )?;
    let (_, ddt_direct) = chunk_scan_chunk_state_bwd_dx(
        p.x.view(),
        f.dt_bhcq.view(),
        f.dacs_bhcq.view(),
        p.b.view(),
        f.cb_bcgqq.view(),
        dy.view(),
        dstates.view(),
        p.d.as_ref().map(|v| v.view()),
        seq,
    )?;
    let dcb = chunk_scan_bwd_dcb(
        p.x.view(),
        f.dt_bhcq.view(),
        f.dacs_bhcq.view(),
        dy.view(),
        p.dims().ngroups,
    )?;
    let (_, adj) = mamba_chunk_scan_combined_bwd(
        &p.inputs(),
        &p.options,
        dout.view(),
        dfinal_states.map(|v| v.view()),
    )?;
    let dda = &adj.intra + &adj.next + &adj.prev + &adj.chunk;
    Ok(Some(BackwardInputs {
        dout: dout.clone(),
        dfinal_states: dfinal_states.cloned(),
        dy,
        dprev_states: dprev,
        dstates,
        dcb,
        dda,
        ddt_direct,
    }))
}

/// `ssd_recurrent_bwd`: the gradients by reverse mode through the literal recurrence.
pub fn recurrent_backward(
    problem: &Problem<f64>,
    dout: &Array4<f64>,
    dfinal_states: Option<&Array4<f64>>,
) -> Result<Option<Gradients<f64>>, SsdError> {
    ssd_recurrent_bwd(
        &problem.inputs(),
        &problem.options,
        dout.view(),
        dfinal_states.map(|v| v.view()),
    )
    .map(Some)
}
