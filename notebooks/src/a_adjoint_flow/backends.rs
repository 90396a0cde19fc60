//! Section 5: the four contributions from the f32 backends (CPU, and CUDA where a device is
//! present) laid over the float64 ones. Each backend gets the problem rounded to f32; its
//! contributions are compared with the float64 reference's on the float64 problem.

use super::problem::{along_sequence, parts_along, Backend, FlowProblem};
use ndarray::Array4;
use ssd_reference::{AAdjoint, SsdError};
use ssd_verify::tolerance::{rel_l2, rel_to_magnitude};

mod figure;
pub use figure::BackendFigure;

/// One backend's A adjoint against the float64 one.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendFlow {
    /// The backend.
    pub name: String,
    /// rel_l2 over every (head, position) of each contribution (`split::KERNELS` order).
    pub rel_l2: [f64; 4],
    /// rel_l2 of their sum, `ddA`.
    pub rel_l2_sum: f64,
    /// Per head: `|dA_h(f32) − dA_h(f64)| / Σ_t |ddA_t Δ_t|`.
    pub da_error: Vec<f64>,
    /// Per head, per contribution: the backend's values along the sequence.
    pub along: Vec<[Vec<f64>; 4]>,
}

fn sum4<T: Copy + Into<f64>>(a: &AAdjoint<T>) -> Array4<f64> {
    let mut s = a.intra.mapv(Into::into);
    for t in [&a.next, &a.prev, &a.chunk] {
        s.zip_mut_with(t, |x, &y| *x += y.into());
    }
    s
}

/// Runs `backend` on the problem in f32 and compares with the float64 reference.
pub fn backend_flow(fp: &FlowProblem, backend: &Backend<'_>) -> Result<BackendFlow, SsdError> {
    let p = &fp.problem;
    let (_, l, nh, _) = p.x.dim();
    let (g64, a64) = fp.chunked_backward()?;
    let p32 = p.to_f32();
    let dout = fp.dout.mapv(|v| v as f32);
    let dfinal = fp.dfinal_states.mapv(|v| v as f32);
    let (g32, a32) = (backend.backward)(&p32, dout.view(), Some(dfinal.view()))?;
    let pairs = [
        (&a32.intra, &a64.intra),
        (&a32.next, &a64.next),
        (&a32.prev, &a64.prev),
        (&a32.chunk, &a64.chunk),
    ];
    let da_error = (0..nh)
        .map(|h| {
            let delta = fp.delta(h);
            let dda = along_sequence(&sum4(&a64), h, l);
            let magnitude: f64 = dda.iter().zip(&delta).map(|(a, d)| (a * d).abs()).sum();
            rel_to_magnitude(f64::from(g32.da[h]), g64.da[h], magnitude)
        })
        .collect();
    Ok(BackendFlow {
        name: backend.name.clone(),
        rel_l2: pairs.map(|(got, want)| rel_l2(got, want)),
        rel_l2_sum: rel_l2(&sum4(&a32), &sum4(&a64)),
        da_error,
        along: (0..nh).map(|h| parts_along(&a32, h, l)).collect(),
    })
}

impl Backend<'static> {
    /// The CPU backend, `ssd_cpu` on `par`.
    pub fn cpu(par: ssd_cpu::Par) -> Self {
        Backend {
            name: "CPU f32 (ssd-cpu)".to_string(),
            backward: Box::new(move |p, dout, dfinal| {
                ssd_cpu::mamba_chunk_scan_combined_bwd(&p.inputs(), &p.options, dout, dfinal, par)
            }),
        }
    }
}

/// The f32 backends present (the CPU on every core, CUDA where a device is), and a line for each
/// one that is not.
pub fn available_backends() -> (Vec<Backend<'static>>, Vec<String>) {
    let mut list = vec![Backend::cpu(ssd_cpu::Par::rayon(0))];
    let mut notes = Vec::new();
    match ssd_gpu::Gpu::new() {
        Ok(gpu) => {
            let name = format!("CUDA f32 ({})", gpu.name());
            list.push(Backend {
                name,
                backward: Box::new(move |p, dout, dfinal| {
                    gpu.mamba_chunk_scan_combined_bwd_host(&p.inputs(), &p.options, dout, dfinal)
                }),
            });
        }
        Err(e) => notes.push(format!("CUDA f32: not run ({e})")),
    }
    (list, notes)
}
