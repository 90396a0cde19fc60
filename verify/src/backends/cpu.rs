//! The CPU backend (`ssd-cpu`, f32, SIMD + rayon on every thread of the global pool): inputs
//! rounded to f32, results widened to f64.

use super::reference::t;
use super::{Backend, KernelInputs, Precision, Tensors};
use ndarray::{Array, Array4, Dimension};
use ssd_cpu::Par;
use ssd_reference::{DecodeInputs, Gradients, Kernel, Outputs, Problem, SsdError};

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

fn f32s<D: Dimension>(a: &Array<f64, D>) -> Array<f32, D> {
    a.mapv(|v| v as f32)
}

fn f64s<D: Dimension>(a: Array<f32, D>) -> Array<f64, D> {
    a.mapv(f64::from)
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
                let (x3, dt2, a1, b3, c3) = (
                    f32s(&dc.x),
                    f32s(&dc.dt),
                    f32s(&dc.a),
                    f32s(&dc.b),
                    f32s(&dc.c),
                );
                let (d32, z32, bias32) = (
                    dc.d.as_ref().map(f32s),
                    dc.z.as_ref().map(f32s),
                    dc.dt_bias.as_ref().map(f32s),
                );
                let inputs = DecodeInputs {
                    x: x3.view(),
                    dt: dt2.view(),
                    a: a1.view(),
                    b: b3.view(),
                    c: c3.view(),
                    d: d32.as_ref().map(|v| v.view()),
                    z: z32.as_ref().map(|v| v.view()),
                    dt_bias: bias32.as_ref().map(|v| v.view()),
                    state_batch_indices: dc.state_batch_indices.as_ref().map(|v| v.view()),
                };
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
            // The CPU backward kernels are wired here once `ssd-cpu` has them.
            _ => return Ok(None),
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
        _problem: &Problem<f64>,
        _dout: &Array4<f64>,
        _dfinal_states: Option<&Array4<f64>>,
    ) -> Result<Option<Gradients<f64>>, SsdError> {
        // `ssd-cpu` has no backward yet; the matrix reports it as MISSING.
        Ok(None)
    }
}
