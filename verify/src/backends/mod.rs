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

mod cpu;
mod cuda;
mod reference;

pub use cpu::Cpu;
pub use cuda::Cuda;
pub use reference::{recurrent_backward, reference_backward_inputs, Reference};

use ndarray::{Array1, Array2, Array3, Array4, Array5, ArrayD};
use ssd_reference::{
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

/// The values of a [`DecodeCase`] rounded to f32, owned, for the f32 backends.
pub(crate) struct DecodeF32 {
    x: Array3<f32>,
    dt: Array2<f32>,
    a: Array1<f32>,
    b: Array3<f32>,
    c: Array3<f32>,
    d: Option<ArrayD<f32>>,
    z: Option<Array3<f32>>,
    dt_bias: Option<Array1<f32>>,
}

impl DecodeF32 {
    pub(crate) fn new(dc: &DecodeCase) -> Self {
        DecodeF32 {
            x: f32s(&dc.x),
            dt: f32s(&dc.dt),
            a: f32s(&dc.a),
            b: f32s(&dc.b),
            c: f32s(&dc.c),
            d: dc.d.as_ref().map(f32s),
            z: dc.z.as_ref().map(f32s),
            dt_bias: dc.dt_bias.as_ref().map(f32s),
        }
    }

    /// The step's inputs (`state_batch_indices` borrowed from `dc`).
    pub(crate) fn inputs<'a>(&'a self, dc: &'a DecodeCase) -> DecodeInputs<'a, f32> {
        DecodeInputs {
            x: self.x.view(),
            dt: self.dt.view(),
            a: self.a.view(),
            b: self.b.view(),
            c: self.c.view(),
            d: self.d.as_ref().map(|v| v.view()),
            z: self.z.as_ref().map(|v| v.view()),
            dt_bias: self.dt_bias.as_ref().map(|v| v.view()),
            state_batch_indices: dc.state_batch_indices.as_ref().map(|v| v.view()),
        }
    }
}

/// `a` rounded to f32.
pub(crate) fn f32s<D: ndarray::Dimension>(a: &ndarray::Array<f64, D>) -> ndarray::Array<f32, D> {
    a.mapv(|v| v as f32)
}

/// `a` widened to f64.
pub(crate) fn f64s<D: ndarray::Dimension>(a: ndarray::Array<f32, D>) -> ndarray::Array<f64, D> {
    a.mapv(f64::from)
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
        BackendKind::Cpu => Ok(Box::new(Cpu::new())),
        BackendKind::Cuda => Ok(Box::new(Cuda::new()?)),
    }
}

/// Every backend kind with the backend, or why it cannot run here.
pub fn backend_status() -> Vec<(BackendKind, Result<Box<dyn Backend>, SsdError>)> {
    [BackendKind::Reference, BackendKind::Cpu, BackendKind::Cuda]
        .into_iter()
        .map(|k| (k, backend(k)))
        .collect()
}

/// Every backend that can run here: the reference and the CPU backend always, CUDA only when a
/// driver and a device are present.
pub fn available_backends() -> Vec<Box<dyn Backend>> {
    backend_status()
        .into_iter()
        .filter_map(|(_, b)| b.ok())
        .collect()
}
