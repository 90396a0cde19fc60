//! The CUDA backend (`ssd-gpu`, f32): every kernel of [`Kernel::ALL`] and the combined op on the
//! device, with inputs rounded to f32 on upload and results widened to f64 on download.

use super::reference::t;
use super::{f32s, f64s, Backend, DecodeF32, KernelInputs, Precision, Tensors};
use ndarray::{Array, Array4, Dimension};
use ssd_gpu::{DeviceArray, DeviceDecodeInputs, Gpu};
use ssd_reference::{Gradients, Kernel, Outputs, Problem, SsdError};

/// The CUDA backend on device 0.
#[derive(Debug, Clone)]
pub struct Cuda {
    gpu: Gpu,
}

impl Cuda {
    /// A handle on device 0; `Err(NoCudaDriver | NoCudaDevice)` where there is none (never a
    /// panic).
    pub fn new() -> Result<Self, SsdError> {
        Ok(Cuda { gpu: Gpu::new()? })
    }

    /// The device's name.
    pub fn device_name(&self) -> &str {
        self.gpu.name()
    }
}

impl Cuda {
    fn up<D: Dimension>(&self, a: &Array<f64, D>) -> Result<DeviceArray<f32, D>, SsdError> {
        self.gpu.upload(&f32s(a))
    }

    fn down<D: Dimension>(&self, a: &DeviceArray<f32, D>) -> Result<Array<f64, D>, SsdError> {
        Ok(f64s(self.gpu.download(a)?))
    }
}

impl Backend for Cuda {
    fn name(&self) -> &'static str {
        "cuda"
    }

    fn precision(&self) -> Precision {
        Precision::F32
    }

    fn kernel(&self, kernel: Kernel, i: &KernelInputs) -> Result<Option<Tensors>, SsdError> {
        let g = &self.gpu;
        let p = &i.problem;
        let l = p.x.dim().1;
        let seq = p.seq_idx.as_ref().map(|s| g.upload(s)).transpose()?;
        let seq = seq.as_ref();
        let x = self.up(&p.x)?;
        let b = self.up(&p.b)?;
        let c = self.up(&p.c)?;
        let d = p.d.as_ref().map(|v| self.up(v)).transpose()?;
        let z = p.z.as_ref().map(|v| self.up(v)).transpose()?;
        let dt = self.up(&i.dt_bhcq)?;
        let dacs = self.up(&i.dacs_bhcq)?;
        Ok(Some(match kernel {
            Kernel::ChunkCumsum => {
                let bias = p.dt_bias.as_ref().map(|v| self.up(v)).transpose()?;
                let (o1, o2) =
                    g.chunk_cumsum(&self.up(&p.dt)?, &self.up(&p.a)?, bias.as_ref(), &p.options)?;
                vec![
                    t("dt_bhcq", self.down(&o1)?),
                    t("dacs_bhcq", self.down(&o2)?),
                ]
            }
            Kernel::ChunkState => vec![t(
                "states_bchpn",
                self.down(&g.chunk_state(&b, &x, &dt, &dacs, seq)?)?,
            )],
            Kernel::StatePassing => {
                let init = p.initial_states.as_ref().map(|v| self.up(v)).transpose()?;
                let (prev, fin) =
                    g.state_passing(&self.up(&i.states_bchpn)?, &dacs, init.as_ref(), seq, l)?;
                vec![
                    t("prev_states_bchpn", self.down(&prev)?),
                    t("final_states_bhpn", self.down(&fin)?),
                ]
            }
            Kernel::BmmChunk => vec![t(
                "cb_bcgqq",
                self.down(&g.bmm_chunk(&c, &b, p.options.chunk_size, seq)?)?,
            )],
            Kernel::ChunkScan => {
                let (out, y) = g.chunk_scan(
                    &self.up(&i.cb_bcgqq)?,
                    &x,
                    &dt,
                    &dacs,
                    &c,
                    &self.up(&i.prev_states_bchpn)?,
                    d.as_ref(),
                    z.as_ref(),
                    seq,
                )?;
                let mut v = vec![t("out_blhp", self.down(&out)?)];
                if let Some(y) = y {
                    v.push(t("y_blhp", self.down(&y)?));
                }
                v
            }
            Kernel::SelectiveStateUpdate => {
                let dc = &i.decode;
                let d32 = DecodeF32::new(dc);
                let inputs = d32.inputs(dc);
                let dev = DeviceDecodeInputs::upload(g, &inputs, dc.state.shape(), &dc.options)?;
                let mut state = self.up(&dc.state)?;
                let out = g.selective_state_update(&mut state, &dev, &dc.options)?;
                vec![
                    t("out_bhp", self.down(&out)?),
                    t("state", self.down(&state)?),
                ]
            }
            Kernel::RmsnormGated => {
                let n = &i.norm;
                let zz = n.z.as_ref().map(|v| self.up(v)).transpose()?;
                vec![t(
                    "out",
                    self.down(&g.rmsnorm_gated(
                        &self.up(&n.x)?,
                        &self.up(&n.weight)?,
                        zz.as_ref(),
                        &n.options,
                    )?)?,
                )]
            }
            Kernel::Swiglu => vec![t(
                "out",
                self.down(&g.swiglu(&self.up(&i.swiglu.x)?, &self.up(&i.swiglu.y)?)?)?,
            )],
            Kernel::RmsnormGatedBwd => {
                let n = &i.norm;
                let zz = n.z.as_ref().map(|v| self.up(v)).transpose()?;
                let (dx, dw, dz) = g.rmsnorm_gated_bwd(
                    &self.up(&n.x)?,
                    &self.up(&n.weight)?,
                    zz.as_ref(),
                    &self.up(&n.dout)?,
                    &n.options,
                )?;
                let mut v = vec![t("dx", self.down(&dx)?), t("dweight", self.down(&dw)?)];
                if let Some(dz) = dz {
                    v.push(t("dz", self.down(&dz)?));
                }
                v
            }
            Kernel::SwigluBwd => {
                let sw = &i.swiglu;
                let (dx, dy) =
                    g.swiglu_bwd(&self.up(&sw.x)?, &self.up(&sw.y)?, &self.up(&sw.dout)?)?;
                vec![t("dx", self.down(&dx)?), t("dy", self.down(&dy)?)]
            }
            k => {
                let bw = match &i.backward {
                    Some(bw) => bw,
                    None => return Ok(None),
                };
                let dy = self.up(&bw.dy)?;
                match k {
                    Kernel::ChunkScanBwdDz => {
                        let y = i.y.as_ref().map(|v| self.up(v)).transpose()?;
                        let (dy, dz, dd) = g.chunk_scan_bwd_dz(
                            &self.up(&bw.dout)?,
                            &x,
                            y.as_ref(),
                            z.as_ref(),
                            d.as_ref(),
                        )?;
                        let mut v = vec![t("dy_blhp", self.down(&dy)?)];
                        if let Some(dz) = dz {
                            v.push(t("dz_blhp", self.down(&dz)?));
                        }
                        if let Some(dd) = dd {
                            v.push(t("dd", self.down(&dd)?));
                        }
                        v
                    }
                    Kernel::ChunkScanBwdDstates => vec![t(
                        "dprev_states_bchpn",
                        self.down(&g.chunk_scan_bwd_dstates(&c, &dy, &dacs, seq)?)?,
                    )],
                    Kernel::StatePassingBwd => {
                        let dfin = bw.dfinal_states.as_ref().map(|v| self.up(v)).transpose()?;
                        let (ds, dinit, ddac) = g.state_passing_bwd(
                            &self.up(&i.prev_states_bchpn)?,
                            &dacs,
                            &self.up(&bw.dprev_states)?,
                            dfin.as_ref(),
                            seq,
                            l,
                        )?;
                        vec![
                            t("dstates_bchpn", self.down(&ds)?),
                            t("dinitial_states_bhpn", self.down(&dinit)?),
                            t("dda_chunk_bhc", self.down(&ddac)?),
                        ]
                    }
                    Kernel::ChunkScanChunkStateBwdDx => {
                        let (dx, ddt) = g.chunk_scan_chunk_state_bwd_dx(
                            &x,
                            &dt,
                            &dacs,
                            &b,
                            &self.up(&i.cb_bcgqq)?,
                            &dy,
                            &self.up(&bw.dstates)?,
                            d.as_ref(),
                            seq,
                        )?;
                        vec![
                            t("dx_blhp", self.down(&dx)?),
                            t("ddt_direct_bhcq", self.down(&ddt)?),
                        ]
                    }
                    Kernel::ChunkStateBwdDb => {
                        let (db, next) =
                            g.chunk_state_bwd_db(&x, &b, &dt, &dacs, &self.up(&bw.dstates)?, seq)?;
                        vec![
                            t("db_blgn", self.down(&db)?),
                            t("dda_next_bhcq", self.down(&next)?),
                        ]
                    }
                    Kernel::ChunkScanBwdDc => {
                        let (dc, prev) = g.chunk_scan_bwd_dc(
                            &self.up(&i.prev_states_bchpn)?,
                            &dacs,
                            &c,
                            &dy,
                            seq,
                        )?;
                        vec![
                            t("dc_blgn", self.down(&dc)?),
                            t("ddacs_prev_bhcq", self.down(&prev)?),
                        ]
                    }
                    Kernel::ChunkScanBwdDcb => vec![t(
                        "dcb_bcgqq",
                        self.down(&g.chunk_scan_bwd_dcb(&x, &dt, &dacs, &dy, p.dims().ngroups)?)?,
                    )],
                    Kernel::BmmChunkBwd => {
                        let (db, dc) = g.bmm_chunk_bwd(&c, &b, &self.up(&bw.dcb)?, seq)?;
                        vec![t("db_blgn", self.down(&db)?), t("dc_blgn", self.down(&dc)?)]
                    }
                    Kernel::ChunkScanBwdDdacsStable => vec![t(
                        "dda_intra_bhcq",
                        self.down(&g.chunk_scan_bwd_ddacs_stable(
                            &x,
                            &dt,
                            &dacs,
                            &dy,
                            &self.up(&i.cb_bcgqq)?,
                        )?)?,
                    )],
                    Kernel::ChunkCumsumBwd => {
                        let bias = p.dt_bias.as_ref().map(|v| self.up(v)).transpose()?;
                        let (ddt, da, dbias) = g.chunk_cumsum_bwd(
                            &self.up(&bw.dda)?,
                            &self.up(&bw.ddt_direct)?,
                            &self.up(&p.dt)?,
                            &self.up(&p.a)?,
                            bias.as_ref(),
                            &p.options,
                        )?;
                        let mut v =
                            vec![t("ddt_blh", self.down(&ddt)?), t("da_h", self.down(&da)?)];
                        if let Some(db) = dbias {
                            v.push(t("ddt_bias_h", self.down(&db)?));
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
        let o = self
            .gpu
            .mamba_chunk_scan_combined_host(&p.inputs(), &p.options)?;
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
        let (g, _) = self.gpu.mamba_chunk_scan_combined_bwd_host(
            &p.inputs(),
            &p.options,
            dout.view(),
            dfin.as_ref().map(|v| v.view()),
        )?;
        Ok(Some(widen_gradients(g)))
    }
}

/// f32 gradients widened to f64.
pub(crate) fn widen_gradients(g: Gradients<f32>) -> Gradients<f64> {
    Gradients {
        dx: f64s(g.dx),
        ddt: f64s(g.ddt),
        da: f64s(g.da),
        db: f64s(g.db),
        dc: f64s(g.dc),
        dd: g.dd.map(f64s),
        dz: g.dz.map(f64s),
        ddt_bias: g.ddt_bias.map(f64s),
        dinitial_states: g.dinitial_states.map(f64s),
    }
}
