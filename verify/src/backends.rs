//! The backends the verification matrix compares with the float64 truth, behind one trait.
//!
//! A [`Backend`] takes float64 inputs (already rounded to f32-representable values by the
//! matrix, so an f32 backend and the reference see the same numbers), runs one kernel or the
//! combined op in its own precision, and returns float64 arrays. The matrix compares them with
//! [`Reference`] on the same inputs (per kernel) and with the literal recurrence (combined op).
//!
//! Plugging a backend in: implement [`Backend`] (usually by converting [`KernelInputs`] to the
//! backend's precision and calling its kernel of the same name) and list it in
//! [`available_backends`]. A kernel the backend does not implement returns `Ok(None)`, which the
//! matrix reports as `MISSING` (a failure, never a pass).

use ndarray::{Array1, Array2, Array3, Array4, Array5, ArrayD};
use ssd_reference::{
    bmm_chunk, bmm_chunk_bwd, chunk_cumsum, chunk_cumsum_bwd, chunk_scan, chunk_scan_bwd_dc,
    chunk_scan_bwd_dcb, chunk_scan_bwd_ddacs_stable, chunk_scan_bwd_dstates, chunk_scan_bwd_dz,
    chunk_scan_chunk_state_bwd_dx, chunk_state, chunk_state_bwd_db, mamba_chunk_scan_combined,
    mamba_chunk_scan_combined_bwd, rmsnorm_gated, rmsnorm_gated_bwd, selective_state_update,
    ssd_recurrent_bwd, state_passing, state_passing_bwd, swiglu, swiglu_bwd, ChunkedForward,
    DecodeInputs, DecodeOptions, Gradients, Kernel, Outputs, Problem, RmsNormOptions, SsdError,
};

/// Named result tensors of one kernel run, in the kernel's output order.
pub type Tensors = Vec<(&'static str, ArrayD<f64>)>;

/// The arithmetic a backend computes in; it selects the thresholds it is judged by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    /// float64: judged by the float64 thresholds (forms agree to 1e-12, gradients to 1e-10).
    F64,
    /// float32: judged by the f32 thresholds (forward 1e-5, gradients 1e-4).
    F32,
}

/// A decode step: a state pool and one token per row.
#[derive(Debug, Clone)]
pub struct DecodeCase {
    /// (pool, h, p, n), before the step
    pub state: Array4<f64>,
    /// (b, h, p)
    pub x: Array3<f64>,
    /// (b, h)
    pub dt: Array2<f64>,
    /// (h)
    pub a: Array1<f64>,
    /// (b, g, n)
    pub b: Array3<f64>,
    /// (b, g, n)
    pub c: Array3<f64>,
    /// (h) or (h, p)
    pub d: Option<ArrayD<f64>>,
    /// (b, h, p)
    pub z: Option<Array3<f64>>,
    /// (h)
    pub dt_bias: Option<Array1<f64>>,
    /// (b); < 0 marks a padding row
    pub state_batch_indices: Option<Array1<i32>>,
    /// softplus and limits
    pub options: DecodeOptions,
}

impl DecodeCase {
    /// Borrowed inputs of the step.
    pub fn inputs(&self) -> DecodeInputs<'_, f64> {
        DecodeInputs {
            x: self.x.view(),
            dt: self.dt.view(),
            a: self.a.view(),
            b: self.b.view(),
            c: self.c.view(),
            d: self.d.as_ref().map(|v| v.view()),
            z: self.z.as_ref().map(|v| v.view()),
            dt_bias: self.dt_bias.as_ref().map(|v| v.view()),
            state_batch_indices: self.state_batch_indices.as_ref().map(|v| v.view()),
        }
    }
}

/// A gated RMSNorm problem (rows, d).
#[derive(Debug, Clone)]
pub struct NormCase {
    /// (rows, d)
    pub x: Array2<f64>,
    /// (d)
    pub weight: Array1<f64>,
    /// (rows, d)
    pub z: Option<Array2<f64>>,
    /// eps, group size, gate order
    pub options: RmsNormOptions,
    /// seed of the backward, (rows, d)
    pub dout: Array2<f64>,
}

/// A SwiGLU problem.
#[derive(Debug, Clone)]
pub struct SwigluCase {
    /// any shape
    pub x: ArrayD<f64>,
    /// the shape of `x`
    pub y: ArrayD<f64>,
    /// seed of the backward, the shape of `x`
    pub dout: ArrayD<f64>,
}

/// The backward intermediates every backward kernel reads, from the float64 backward.
#[derive(Debug, Clone)]
pub struct BackwardInputs {
    /// seed, (b, l, h, p)
    pub dout: Array4<f64>,
    /// optional seed on the final states, (b, h, p, n)
    pub dfinal_states: Option<Array4<f64>>,
    /// gradient of the pre-gate output, (b, l, h, p)
    pub dy: Array4<f64>,
    /// gradient of the states entering each chunk, (b, c, h, p, n)
    pub dprev_states: Array5<f64>,
    /// gradient of each chunk's own state, (b, c, h, p, n)
    pub dstates: Array5<f64>,
    /// gradient of `CB`, (b, c, g, Q, Q)
    pub dcb: Array5<f64>,
    /// the assembled adjoint of the per-step log decay `Δ_k A`, (b, h, c, Q)
    pub dda: Array4<f64>,
    /// the direct part of the gradient of Δ, (b, h, c, Q)
    pub ddt_direct: Array4<f64>,
}

/// Everything any kernel of [`Kernel::ALL`] reads, in float64.
#[derive(Debug, Clone)]
pub struct KernelInputs {
    /// The problem (inputs and options).
    pub problem: Problem<f64>,
    /// Δ, (b, h, c, Q)
    pub dt_bhcq: Array4<f64>,
    /// within-chunk cumsum of Δ A, (b, h, c, Q)
    pub dacs_bhcq: Array4<f64>,
    /// each chunk's own state, (b, c, h, p, n)
    pub states_bchpn: Array5<f64>,
    /// the state entering each chunk, (b, c, h, p, n)
    pub prev_states_bchpn: Array5<f64>,
    /// `C Bᵀ` per chunk, (b, c, g, Q, Q)
    pub cb_bcgqq: Array5<f64>,
    /// pre-gate output (when `z`), (b, l, h, p)
    pub y: Option<Array4<f64>>,
    /// backward intermediates (absent until a float64 backward provides them)
    pub backward: Option<BackwardInputs>,
    /// a decode step
    pub decode: DecodeCase,
    /// a gated RMSNorm
    pub norm: NormCase,
    /// a SwiGLU
    pub swiglu: SwigluCase,
}

/// A backend the matrix can check.
pub trait Backend {
    /// Its name in reports (`reference`, `cpu`, `cuda`).
    fn name(&self) -> &'static str;
    /// The precision it computes in.
    fn precision(&self) -> Precision;
    /// Runs `kernel` on `inputs`; `Ok(None)` if this backend does not implement it (yet).
    /// The tensors must carry the names [`Reference`] gives them.
    fn kernel(&self, kernel: Kernel, inputs: &KernelInputs) -> Result<Option<Tensors>, SsdError>;
    /// The combined forward `mamba_chunk_scan_combined`.
    fn forward(&self, problem: &Problem<f64>) -> Result<Outputs<f64>, SsdError>;
    /// The combined backward; `Ok(None)` if not implemented (yet).
    fn backward(
        &self,
        problem: &Problem<f64>,
        dout: &Array4<f64>,
        dfinal_states: Option<&Array4<f64>>,
    ) -> Result<Option<Gradients<f64>>, SsdError>;
}

/// The float64 reference (`ssd-reference`): the chunked kernels and the combined op.
#[derive(Debug, Clone, Copy, Default)]
pub struct Reference;

fn t<D: ndarray::Dimension>(
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

/// Which backend a command names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// The float64 reference.
    Reference,
    /// The f32 CPU library `ssd-cpu`.
    Cpu,
    /// The CUDA backend `ssd-gpu`.
    Cuda,
}

impl BackendKind {
    /// Parses `reference`, `cpu` or `cuda`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "reference" | "ref" => Some(BackendKind::Reference),
            "cpu" => Some(BackendKind::Cpu),
            "cuda" | "gpu" => Some(BackendKind::Cuda),
            _ => None,
        }
    }

    /// The name in reports.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Reference => "reference",
            BackendKind::Cpu => "cpu",
            BackendKind::Cuda => "cuda",
        }
    }
}

/// The backend of `kind`, or an error saying why it cannot run here.
pub fn backend(kind: BackendKind) -> Result<Box<dyn Backend>, SsdError> {
    match kind {
        BackendKind::Reference => Ok(Box::new(Reference)),
        BackendKind::Cpu => Err(SsdError::invalid(
            "backend",
            "the CPU backend (ssd-cpu) is not wired into ssd-verify yet",
        )),
        BackendKind::Cuda => Err(SsdError::invalid(
            "backend",
            "the CUDA backend (ssd-gpu) is not wired into ssd-verify yet",
        )),
    }
}

/// Every backend that can run here: the reference always, the CPU backend when it is built in,
/// CUDA only when a driver and a device are present.
pub fn available_backends() -> Vec<Box<dyn Backend>> {
    [BackendKind::Reference, BackendKind::Cpu, BackendKind::Cuda]
        .into_iter()
        .filter_map(|k| backend(k).ok())
        .collect()
}
