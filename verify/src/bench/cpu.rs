//! The CPU benchmark of docs/design.md §6 (`ssd-verify bench cpu`): the combined forward of
//! `ssd-cpu` at S1–S3 and its decode step at D1, each figure beside a ceiling measured in the
//! same run on all threads of the global rayon pool:
//!
//! - forward: GFLOP/s by [`Shape::forward_flops`] against f32 GEMM at 2048³ through the `gemm`
//!   crate (which dispatches to its AVX-512 kernels at run time where the CPU has them);
//! - decode: bytes/s of state read + written against a parallel copy of the same bytes.
//!
//! Medians of `reps` timed runs after one warm-up; inputs are drawn like upstream's
//! ([`crate::ProblemSpec::plain`]) and rounded to f32.

use super::{median, BenchRow, Shape};
use crate::ProblemSpec;
use ndarray::{s, Array1, Array3, Array4};
use rayon::prelude::*;
use ssd_cpu::{Par, Workspace};
use ssd_reference::{DecodeInputs, DecodeOptions, SsdError};
use std::time::Instant;

/// ggml's recurrent CPU SSM_SCAN forward on this machine kind (2 threads), ms (docs/design.md §6).
pub fn ggml_ms(shape: &str) -> Option<f64> {
    match shape {
        "S1" => Some(3.8),
        "S2" => Some(59.0),
        "S3" => Some(53.0),
        _ => None,
    }
}

/// Side of the square f32 GEMM that sets the FLOP ceiling.
pub const GEMM_SIZE: usize = 2048;

/// Runs the CPU benchmark: one `forward` row per shape of `shapes`, one `decode` row for
/// `decode` (a shape with l = 1, e.g. [`super::D1`]), each a median of `reps` timed runs.
///
/// Extra figures per row: `gemm_gflops` (the ceiling); for forward rows `cpu_ms` (median CPU
/// time of all threads per call: on a loaded machine `cpu_ms / threads` estimates the wall time
/// with the cores to itself), `ms_alloc` (the owned-output API, allocating its outputs and
/// intermediates, against the `_into` API with a reused workspace that `median_ms` reports),
/// `chunked_ms` and `recurrent_ms` (the two algorithms forced, owned-output API), `avx512` (1
/// where the recurrence's 16-lane register block runs) and then `recurrent_avx2_ms` (the
/// recurrence with its 8-lane block only), `ggml_ms` and
/// `ggml_ratio` (> 1: faster than ggml's recurrent scan); for the decode row
/// `bytes_per_s`, `copy_bytes_per_s` and `copy_ms`.
pub fn run(
    shapes: &[Shape],
    decode: Option<Shape>,
    reps: usize,
) -> Result<Vec<BenchRow>, SsdError> {
    let reps = reps.max(1);
    let par = Par::rayon(0);
    let gemm = gemm_gflops(GEMM_SIZE, reps.min(5));
    let mut rows = Vec::new();
    for sh in shapes {
        rows.push(forward_row(sh, reps, par, gemm)?);
    }
    if let Some(sh) = decode {
        rows.push(decode_row(&sh, reps.max(20), par, gemm)?);
    }
    Ok(rows)
}

/// Median wall time of `f` in ms (`reps` timed runs after one warm-up).
fn time_ms(reps: usize, f: impl FnMut() -> Result<(), SsdError>) -> Result<f64, SsdError> {
    Ok(time_ms_cpu(reps, f)?.0)
}

/// Median wall time and median CPU time (all threads of the process) of `f`, in ms.
fn time_ms_cpu(
    reps: usize,
    mut f: impl FnMut() -> Result<(), SsdError>,
) -> Result<(f64, f64), SsdError> {
    f()?;
    let mut t = Vec::with_capacity(reps);
    let mut c = Vec::with_capacity(reps);
    for _ in 0..reps {
        let c0 = process_cpu_ns();
        let t0 = Instant::now();
        f()?;
        t.push(t0.elapsed().as_secs_f64() * 1e3);
        c.push((process_cpu_ns() - c0) * 1e-6);
    }
    Ok((median(&mut t), median(&mut c)))
}

/// CPU time of every thread of this process so far, ns (Linux `schedstat`; NaN elsewhere).
/// On a loaded machine the wall time includes waiting for a core; the CPU time does not.
pub fn process_cpu_ns() -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return f64::NAN;
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| std::fs::read_to_string(e.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .sum()
}

/// f32 GEMM `n × n × n` on every thread of the global pool, GFLOP/s (median).
pub fn gemm_gflops(n: usize, reps: usize) -> f64 {
    let a: Vec<f32> = (0..n * n)
        .map(|i| ((i * 7 % 13) as f32) / 13.0 - 0.5)
        .collect();
    let b: Vec<f32> = (0..n * n)
        .map(|i| ((i * 5 % 11) as f32) / 11.0 - 0.5)
        .collect();
    let mut c = vec![0.0f32; n * n];
    let threads = rayon::current_num_threads();
    let ms = time_ms(reps.max(1), || {
        // SAFETY: `a`, `b`, `c` hold n × n f32 each, row-major (row stride n, column stride 1);
        // `c` does not alias `a` or `b`.
        unsafe {
            gemm::gemm(
                n,
                n,
                n,
                c.as_mut_ptr(),
                1,
                n as isize,
                false,
                a.as_ptr(),
                1,
                n as isize,
                b.as_ptr(),
                1,
                n as isize,
                0.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::Rayon(threads),
            );
        }
        Ok(())
    })
    .unwrap_or(f64::NAN);
    2.0 * (n as f64).powi(3) / (ms * 1e-3) / 1e9
}

fn forward_row(sh: &Shape, reps: usize, par: Par, gemm: f64) -> Result<BenchRow, SsdError> {
    let p = ProblemSpec::plain(
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
    let inputs = p.inputs();
    let mut ws = Workspace::new();
    let mut out = Array4::<f32>::zeros(p.x.raw_dim());
    let mut fin = Array4::<f32>::zeros((sh.batch, sh.nheads, sh.headdim, sh.dstate));
    let (ms, cpu_ms) = time_ms_cpu(reps, || {
        ssd_cpu::mamba_chunk_scan_combined_into(
            &inputs,
            &p.options,
            out.view_mut(),
            fin.view_mut(),
            &mut ws,
            par,
        )
    })?;
    let ms_alloc = time_ms(reps.div_ceil(2), || {
        ssd_cpu::mamba_chunk_scan_combined(&inputs, &p.options, par).map(|_| ())
    })?;
    let chunked_ms = time_ms(reps.div_ceil(2), || {
        ssd_cpu::ssd_chunked(&inputs, &p.options, par).map(|_| ())
    })?;
    let recurrent_ms = time_ms(reps.div_ceil(2), || {
        ssd_cpu::ssd_recurrent(&inputs, &p.options, par).map(|_| ())
    })?;
    let gflops = sh.forward_flops() / (ms * 1e-3) / 1e9;
    let avx512 = ssd_cpu::avx512_in_use();
    let mut extra = vec![
        ("gemm_gflops".to_string(), gemm),
        ("cpu_ms".into(), cpu_ms),
        ("ms_alloc".into(), ms_alloc),
        ("chunked_ms".into(), chunked_ms),
        ("recurrent_ms".into(), recurrent_ms),
        ("avx512".into(), if avx512 { 1.0 } else { 0.0 }),
    ];
    if avx512 {
        // the same recurrence with its 8-lane register block only (same bits), same run
        ssd_cpu::set_avx512_allowed(false);
        let avx2_ms = time_ms(reps.div_ceil(2), || {
            ssd_cpu::ssd_recurrent(&inputs, &p.options, par).map(|_| ())
        });
        ssd_cpu::set_avx512_allowed(true);
        extra.push(("recurrent_avx2_ms".into(), avx2_ms?));
    }
    if let Some(g) = ggml_ms(sh.name) {
        extra.push(("ggml_ms".into(), g));
        extra.push(("ggml_ratio".into(), g / ms));
    }
    Ok(BenchRow {
        shape: sh.name.to_string(),
        backend: "cpu".into(),
        op: "forward".into(),
        median_ms: ms,
        gflops: Some(gflops),
        ceiling_ratio: gflops / gemm,
        triton_ms: None,
        triton_ratio: None,
        extra,
    })
}

fn decode_row(sh: &Shape, reps: usize, par: Par, gemm: f64) -> Result<BenchRow, SsdError> {
    let (b, h, p, g, n) = (sh.batch, sh.nheads, sh.headdim, sh.ngroups, sh.dstate);
    let prob = ProblemSpec::plain(b, 1, h, p, g, n, 1)
        .all_options()
        .seed(2)
        .build()
        .to_f32();
    let x: Array3<f32> = prob.x.slice(s![.., 0, .., ..]).to_owned();
    let dt = prob.dt.slice(s![.., 0, ..]).to_owned();
    let bm = prob.b.slice(s![.., 0, .., ..]).to_owned();
    let cm = prob.c.slice(s![.., 0, .., ..]).to_owned();
    let z = prob
        .z
        .as_ref()
        .map(|z| z.slice(s![.., 0, .., ..]).to_owned());
    let idx = Array1::from_shape_fn(b, |i| i as i32);
    let inputs = DecodeInputs {
        x: x.view(),
        dt: dt.view(),
        a: prob.a.view(),
        b: bm.view(),
        c: cm.view(),
        d: prob.d.as_ref().map(|v| v.view()),
        z: z.as_ref().map(|v| v.view()),
        dt_bias: prob.dt_bias.as_ref().map(|v| v.view()),
        state_batch_indices: Some(idx.view()),
    };
    let options = DecodeOptions::from(&prob.options);
    let mut state = Array4::<f32>::from_elem((b, h, p, n), 0.01);
    let mut out = Array3::<f32>::zeros((b, h, p));
    let ms = time_ms(reps, || {
        ssd_cpu::selective_state_update_into(
            state.view_mut(),
            &inputs,
            &options,
            out.view_mut(),
            par,
        )
    })?;
    let state_bytes = (b * h * p * n * 4) as f64;
    let bytes_per_s = 2.0 * state_bytes / (ms * 1e-3);
    // The same bytes copied (read + written) on as many threads.
    let src = vec![1.0f32; b * h * p * n];
    let mut dst = vec![0.0f32; b * h * p * n];
    let piece = src.len().div_ceil(par.degree() * 8).max(1);
    let copy_ms = time_ms(reps, || {
        dst.par_chunks_mut(piece)
            .zip(src.par_chunks(piece))
            .with_max_len(1)
            .for_each(|(d, s)| d.copy_from_slice(s));
        Ok(())
    })?;
    let copy_bytes_per_s = 2.0 * state_bytes / (copy_ms * 1e-3);
    Ok(BenchRow {
        shape: sh.name.to_string(),
        backend: "cpu".into(),
        op: "decode".into(),
        median_ms: ms,
        gflops: None,
        ceiling_ratio: bytes_per_s / copy_bytes_per_s,
        triton_ms: None,
        triton_ratio: None,
        extra: vec![
            ("gemm_gflops".into(), gemm),
            ("bytes_per_s".into(), bytes_per_s),
            ("copy_bytes_per_s".into(), copy_bytes_per_s),
            ("copy_ms".into(), copy_ms),
        ],
    })
}

/// The rows as a text table.
pub fn table(rows: &[BenchRow]) -> String {
    let mut s = format!(
        "{:<6} {:<8} {:>10} {:>9} {:>8}  extra\n",
        "shape", "op", "median_ms", "GFLOP/s", "ceiling"
    );
    for r in rows {
        let extra: Vec<String> = r
            .extra
            .iter()
            .map(|(k, v)| {
                if v.abs() >= 1e6 {
                    format!("{k}={v:.3e}")
                } else {
                    format!("{k}={v:.3}")
                }
            })
            .collect();
        s.push_str(&format!(
            "{:<6} {:<8} {:>10.3} {:>9} {:>8.3}  {}\n",
            r.shape,
            r.op,
            r.median_ms,
            r.gflops.map_or("-".into(), |g| format!("{g:.1}")),
            r.ceiling_ratio,
            extra.join(" ")
        ));
    }
    s
}
