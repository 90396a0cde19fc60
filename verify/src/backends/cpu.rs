//! The CPU backend (`ssd-cpu`, f32, SIMD + rayon on every thread of the global pool): every
//! kernel of [`Kernel::ALL`] and the combined op, inputs rounded to f32, results widened to f64.

use super::reference::t;
use super::{f32s, f64s, Backend, DecodeF32, KernelInputs, Precision, Tensors};
use ndarray::Array4;
use ssd_cpu::Par;
use ssd_reference::{Gradients, Kernel, Outputs, Problem, SsdError};

/// The CPU backend.
#[derive(Debug, Clone, Copy)]
pub struct Cpu {
    par: Par,
}

impl Cpu {
    /// On every thread of the current rayon pool.
    pub fn new() -> Self {
        Cpu { par: Par::rayon(0) }
    }
}

impl Default for Cpu {
    fn default() -> Self {
        Cpu::new()
    }
}

impl Backend for Cpu {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn precision(&self) -> Precision {
        Precision::F32
    }

    fn kernel(&self, kernel: Kernel, i: &KernelInputs) -> Result<Option<Tensors>, SsdError> {
        let par = self.par;
        let p32 = i.problem.to_f32();
        let p = &p32;
        let seq = || p.seq_idx.as_ref().map(|s| s.view());
        let l = p.x.dim().1;
        let (dt, dacs) = (f32s(&i.dt_bhcq), f32s(&i.dacs_bhcq));
        Ok(Some(match kernel {
            Kernel::ChunkCumsum => {
                let (o1, o2) = ssd_cpu::chunk_cumsum(
                    p.dt.view(),
                    p.a.view(),
                    p.dt_bias.as_ref().map(|v| v.view()),
                    &p.options,
                    par,
                )?;
                vec![t("dt_bhcq", f64s(o1)), t("dacs_bhcq", f64s(o2))]
            }
            Kernel::ChunkState => vec![t(
                "states_bchpn",
                f64s(ssd_cpu::chunk_state(
                    p.b.view(),
                    p.x.view(),
                    dt.view(),
                    dacs.view(),
                    seq(),
                    par,
                )?),
            )],
            Kernel::StatePassing => {
                let (prev, fin) = ssd_cpu::state_passing(
                    f32s(&i.states_bchpn).view(),
                    dacs.view(),
                    p.initial_states.as_ref().map(|v| v.view()),
                    seq(),
                    l,
                    par,
                )?;
                vec![
                    t("prev_states_bchpn", f64s(prev)),
                    t("final_states_bhpn", f64s(fin)),
                ]
            }
            Kernel::BmmChunk => vec![t(
                "cb_bcgqq",
                f64s(ssd_cpu::bmm_chunk(
                    p.c.view(),
                    p.b.view(),
                    p.options.chunk_size,
                    seq(),
                    par,
                )?),
            )],
            Kernel::ChunkScan => {
                let (out, y) = ssd_cpu::chunk_scan(
                    f32s(&i.cb_bcgqq).view(),
                    p.x.view(),
                    dt.view(),
                    dacs.view(),
                    p.c.view(),
                    f32s(&i.prev_states_bchpn).view(),
                    p.d.as_ref().map(|v| v.view()),
                    p.z.as_ref().map(|v| v.view()),
                    seq(),
                    par,
                )?;
                let mut v = vec![t("out_blhp", f64s(out))];
                if let Some(y) = y {
                    v.push(t("y_blhp", f64s(y)));
                }
                v
            }
            Kernel::SelectiveStateUpdate => {
                let dc = &i.decode;
                let d32 = DecodeF32::new(dc);
                let inputs = d32.inputs(dc);
                let mut state = f32s(&dc.state);
                let out =
                    ssd_cpu::selective_state_update(state.view_mut(), &inputs, &dc.options, par)?;
                vec![t("out_bhp", f64s(out)), t("state", f64s(state))]
            }
            Kernel::RmsnormGated => {
                let n = &i.norm;
                let z = n.z.as_ref().map(f32s);
                vec![t(
                    "out",
                    f64s(ssd_cpu::rmsnorm_gated(
                        f32s(&n.x).view(),
                        f32s(&n.weight).view(),
                        z.as_ref().map(|v| v.view()),
                        &n.options,
                        par,
                    )?),
                )]
            }
            Kernel::Swiglu => vec![t(
                "out",
                f64s(ssd_cpu::swiglu(
                    f32s(&i.swiglu.x).view(),
                    f32s(&i.swiglu.y).view(),
                    par,
                )?),
            )],
            Kernel::RmsnormGatedBwd => {
                let n = &i.norm;
                let z = n.z.as_ref().map(f32s);
                let (dx, dw, dz) = ssd_cpu::rmsnorm_gated_bwd(
                    f32s(&n.x).view(),
                    f32s(&n.weight).view(),
                    z.as_ref().map(|v| v.view()),
                    f32s(&n.dout).view(),
                    &n.options,
                    par,
                )?;
                let mut v = vec![t("dx", f64s(dx)), t("dweight", f64s(dw))];
                if let Some(dz) = dz {
                    v.push(t("dz", f64s(dz)));
                }
                v
            }
            Kernel::SwigluBwd => {
                let sw = &i.swiglu;
                let (dx, dy) = ssd_cpu::swiglu_bwd(
                    f32s(&sw.x).view(),
                    f32s(&sw.y).view(),
                    f32s(&sw.dout).view(),
                    par,
                )?;
                vec![t("dx", f64s(dx)), t("dy", f64s(dy))]
            }
            k => {
                let bw = match &i.backward {
                    Some(bw) => bw,
                    None => return Ok(None),
                };
                let dy = f32s(&bw.dy);
                let cb = f32s(&i.cb_bcgqq);
                let prev = f32s(&i.prev_states_bchpn);
                let dstates = f32s(&bw.dstates);
                match k {
                    Kernel::ChunkScanBwdDz => {
                        let y = i.y.as_ref().map(f32s);
                        let (dy, dz, dd) = ssd_cpu::chunk_scan_bwd_dz(
                            f32s(&bw.dout).view(),
                            p.x.view(),
                            y.as_ref().map(|v| v.view()),
                            p.z.as_ref().map(|v| v.view()),
                            p.d.as_ref().map(|v| v.view()),
                            par,
                        )?;
                        let mut v = vec![t("dy_blhp", f64s(dy))];
                        if let Some(dz) = dz {
                            v.push(t("dz_blhp", f64s(dz)));
                        }
                        if let Some(dd) = dd {
                            v.push(t("dd", f64s(dd)));
                        }
                        v
                    }
                    Kernel::ChunkScanBwdDstates => vec![t(
                        "dprev_states_bchpn",
                        f64s(ssd_cpu::chunk_scan_bwd_dstates(
                            p.c.view(),
                            dy.view(),
                            dacs.view(),
                            seq(),
                            par,
                        )?),
                    )],
                    Kernel::StatePassingBwd => {
                        let dfin = bw.dfinal_states.as_ref().map(f32s);
                        let (ds, dinit, ddac) = ssd_cpu::state_passing_bwd(
                            prev.view(),
                            dacs.view(),
                            f32s(&bw.dprev_states).view(),
                            dfin.as_ref().map(|v| v.view()),
                            seq(),
                            l,
                            par,
                        )?;
                        vec![
                            t("dstates_bchpn", f64s(ds)),
                            t("dinitial_states_bhpn", f64s(dinit)),
                            t("dda_chunk_bhc", f64s(ddac)),
                        ]
                    }
                    Kernel::ChunkScanChunkStateBwdDx => {
                        let (dx, ddt) = ssd_cpu::chunk_scan_chunk_state_bwd_dx(
                            p.x.view(),
                            dt.view(),
                            dacs.view(),
                            p.b.view(),
                            cb.view(),
                            dy.view(),
                            dstates.view(),
                            p.d.as_ref().map(|v| v.view()),
                            seq(),
                            par,
                        )?;
                        vec![t("dx_blhp", f64s(dx)), t("ddt_direct_bhcq", f64s(ddt))]
                    }
                    Kernel::ChunkStateBwdDb => {
                        let (db, next) = ssd_cpu::chunk_state_bwd_db(
                            p.x.view(),
                            p.b.view(),
                            dt.view(),
                            dacs.view(),
                            dstates.view(),
                            seq(),
                            par,
                        )?;
                        vec![t("db_blgn", f64s(db)), t("dda_next_bhcq", f64s(next))]
                    }
                    Kernel::ChunkScanBwdDc => {
                        let (dc, vprev) = ssd_cpu::chunk_scan_bwd_dc(
                            prev.view(),
                            dacs.view(),
                            p.c.view(),
                            dy.view(),
                            seq(),
                            par,
                        )?;
                        vec![t("dc_blgn", f64s(dc)), t("ddacs_prev_bhcq", f64s(vprev))]
                    }
                    Kernel::ChunkScanBwdDcb => vec![t(
                        "dcb_bcgqq",
                        f64s(ssd_cpu::chunk_scan_bwd_dcb(
                            p.x.view(),
                            dt.view(),
                            dacs.view(),
                            dy.view(),
                            p.dims().ngroups,
                            par,
                        )?),
                    )],
                    Kernel::BmmChunkBwd => {
                        let (db, dc) = ssd_cpu::bmm_chunk_bwd(
                            p.c.view(),
                            p.b.view(),
                            f32s(&bw.dcb).view(),
                            seq(),
                            par,
                        )?;
                        vec![t("db_blgn", f64s(db)), t("dc_blgn", f64s(dc))]
                    }
                    Kernel::ChunkScanBwdDdacsStable => vec![t(
                        "dda_intra_bhcq",
                        f64s(ssd_cpu::chunk_scan_bwd_ddacs_stable(
                            p.x.view(),
                            dt.view(),
                            dacs.view(),
                            dy.view(),
                            cb.view(),
                            par,
                        )?),
                    )],
                    Kernel::ChunkCumsumBwd => {
                        let (ddt, da, dbias) = ssd_cpu::chunk_cumsum_bwd(
                            f32s(&bw.dda).view(),
                            f32s(&bw.ddt_direct).view(),
                            p.dt.view(),
                            p.a.view(),
                            p.dt_bias.as_ref().map(|v| v.view()),
                            &p.options,
                            par,
                        )?;
                        let mut v = vec![t("ddt_blh", f64s(ddt)), t("da_h", f64s(da))];
                        if let Some(db) = dbias {
                            v.push(t("ddt_bias_h", f64s(db)));
                        }
                        v
                    }
                    _ => return Ok(None),
                }
            }
        }))
    }

    fn forward(&self, problem: &Problem<f64>) -> Result<Outputs<f64>, SsdError> {
        let p = problem.to_f32();
        let o = ssd_cpu::mamba_chunk_scan_combined(&p.inputs(), &p.options, self.par)?;
        Ok(Outputs {
            out: f64s(o.out),
            final_states: f64s(o.final_states),
        })
    }

    fn backward(
        &self,
        problem: &Problem<f64>,
        dout: &Array4<f64>,
        dfinal_states: Option<&Array4<f64>>,
    ) -> Result<Option<Gradients<f64>>, SsdError> {
        let p = problem.to_f32();
        let dout = f32s(dout);
        let dfin = dfinal_states.map(f32s);
        let (g, _) = ssd_cpu::mamba_chunk_scan_combined_bwd(
            &p.inputs(),
            &p.options,
            dout.view(),
            dfin.as_ref().map(|v| v.view()),
            self.par,
        )?;
        Ok(Some(super::cuda::widen_gradients(g)))
    }
}
