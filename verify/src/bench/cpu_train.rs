//! The CPU training benchmark of docs/design.md §6 (`ssd-verify bench cpu`'s `forward_backward`
//! rows): one training step of `ssd-cpu`'s SSD layer, the combined forward
//! ([`ssd_cpu::mamba_chunk_scan_combined_into`] with a reused workspace) and the combined
//! backward ([`ssd_cpu::mamba_chunk_scan_combined_bwd_with`] with a reused workspace; it
//! recomputes the forward intermediates from the inputs, as upstream's), at S1–S3.
//!
//! FLOPs are 3 × [`Shape::forward_flops`]; the ceiling is f32 GEMM at 2048³ through the `gemm`
//! crate on every thread of the global rayon pool ([`super::cpu::gemm_gflops`]), measured in
//! the same run. Medians of `reps` timed steps after one warm-up; inputs are drawn like
//! upstream's ([`crate::ProblemSpec::plain`]) and rounded to f32, `dout` ~ N(0, 1).

use super::cpu::{gemm_gflops, GEMM_SIZE};
use super::{median, BenchRow, Shape};
use crate::gen::random_array;
use crate::ProblemSpec;
use ndarray::{Array4, Ix4};
use ssd_cpu::{BackwardWorkspace, Par, Workspace};
use ssd_reference::{AAdjoint, Gradients, Problem, SsdError};
use std::time::Instant;

/// JAX's chunked SSD forward+backward (XLA, fp32, 2 threads) on this machine kind, ms
/// (docs/design.md §6).
pub fn jax_train_ms(shape: &str) -> Option<f64> {
    match shape {
        "S1" => Some(65.0),
        "S2" => Some(1339.0),
        "S3" => Some(1320.0),
        _ => None,
    }
}

/// The f32 problem of a benchmark shape and its output seed `dout` (b, l, h, p).
#[derive(Debug, Clone)]
pub struct TrainProblem {
    /// The inputs and options.
    pub problem: Problem<f32>,
    /// The seed of the backward.
    pub dout: Array4<f32>,
}

impl TrainProblem {
    /// The problem of `sh` (upstream-like values, no options on, seed 1).
    pub fn new(sh: &Shape) -> TrainProblem {
        let problem = ProblemSpec::plain(
            sh.batch,
            sh.seqlen,
            sh.nheads,
            sh.headdim,
            sh.ngroups,
            sh.dstate,
            sh.chunk_size,
        )
        .seed(1)
        .build()
        .to_f32();
        let dout = random_array(&[sh.batch, sh.seqlen, sh.nheads, sh.headdim], 2)
            .into_dimensionality::<Ix4>()
            .expect("four axes")
            .mapv(|v| v as f32);
        TrainProblem { problem, dout }
    }

    /// The backward of this problem (all threads of the current pool).
    pub fn backward(&self, par: Par) -> Result<(Gradients<f32>, AAdjoint<f32>), SsdError> {
        ssd_cpu::mamba_chunk_scan_combined_bwd(
            &self.problem.inputs(),
            &self.problem.options,
            self.dout.view(),
            None,
            par,
        )
    }
}

/// Bytes held by the gradient tensors of `g`.
pub fn gradient_bytes(g: &Gradients<f32>) -> usize {
    4 * (g.dx.len()
        + g.ddt.len()
        + g.da.len()
        + g.db.len()
        + g.dc.len()
        + g.dd.as_ref().map_or(0, |v| v.len())
        + g.dz.as_ref().map_or(0, |v| v.len())
        + g.ddt_bias.as_ref().map_or(0, |v| v.len())
        + g.dinitial_states.as_ref().map_or(0, |v| v.len()))
}

/// Bytes held by the four A-adjoint arrays of `a`.
pub fn adjoint_bytes(a: &AAdjoint<f32>) -> usize {
    4 * (a.intra.len() + a.next.len() + a.prev.len() + a.chunk.len())
}

/// Runs the training benchmark: one `forward_backward` row per shape, each a median of `reps`
/// timed steps (forward then backward).
///
/// Extra figures per row: `gemm_gflops` (the ceiling), `forward_ms` and `backward_ms` (medians
/// of the two halves), `backward_alloc_ms` (the owned-output backward, allocating its
/// intermediates each call, vs the reused workspace of `backward_ms`), `jax_ms` and `jax_ratio`
/// (> 1: faster than JAX's forward+backward).
pub fn run(shapes: &[Shape], reps: usize) -> Result<Vec<BenchRow>, SsdError> {
    let reps = reps.max(1);
    let par = Par::rayon(0);
    let gemm = gemm_gflops(GEMM_SIZE, reps.min(5));
    let mut rows = Vec::new();
    for sh in shapes {
        let tp = TrainProblem::new(sh);
        let inputs = tp.problem.inputs();
        let mut ws = Workspace::new();
        let mut bws = BackwardWorkspace::new();
        let mut out = Array4::<f32>::zeros(tp.problem.x.raw_dim());
        let mut fin = Array4::<f32>::zeros((sh.batch, sh.nheads, sh.headdim, sh.dstate));
        let mut step = |times: Option<&mut (Vec<f64>, Vec<f64>, Vec<f64>)>| {
            let t0 = Instant::now();
            ssd_cpu::mamba_chunk_scan_combined_into(
                &inputs,
                &tp.problem.options,
                out.view_mut(),
                fin.view_mut(),
                &mut ws,
                par,
            )?;
            let t1 = Instant::now();
            let grads = ssd_cpu::mamba_chunk_scan_combined_bwd_with(
                &inputs,
                &tp.problem.options,
                tp.dout.view(),
                None,
                &mut bws,
                par,
            )?;
            let t2 = Instant::now();
            drop(grads);
            if let Some((f, b, all)) = times {
                f.push((t1 - t0).as_secs_f64() * 1e3);
                b.push((t2 - t1).as_secs_f64() * 1e3);
                all.push((t2 - t0).as_secs_f64() * 1e3);
            }
            Ok::<(), SsdError>(())
        };
        step(None)?;
        let mut times = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..reps {
            step(Some(&mut times))?;
        }
        let (mut f, mut b, mut all) = times;
        let ms = median(&mut all);
        let mut alloc = Vec::with_capacity(reps);
        for _ in 0..reps.div_ceil(2) {
            let t0 = Instant::now();
            drop(tp.backward(par)?);
            alloc.push(t0.elapsed().as_secs_f64() * 1e3);
        }
        let gflops = 3.0 * sh.forward_flops() / (ms * 1e-3) / 1e9;
        let mut extra = vec![
            ("gemm_gflops".to_string(), gemm),
            ("forward_ms".into(), median(&mut f)),
            ("backward_ms".into(), median(&mut b)),
            ("backward_alloc_ms".into(), median(&mut alloc)),
        ];
        if let Some(j) = jax_train_ms(sh.name) {
            extra.push(("jax_ms".into(), j));
            extra.push(("jax_ratio".into(), j / ms));
        }
        rows.push(BenchRow {
            shape: sh.name.to_string(),
            backend: "cpu".into(),
            op: "forward_backward".into(),
            median_ms: ms,
            gflops: Some(gflops),
            ceiling_ratio: gflops / gemm,
            triton_ms: None,
            triton_ratio: None,
            extra,
        });
    }
    Ok(rows)
}
