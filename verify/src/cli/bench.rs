//! `ssd-verify bench cpu|cuda`: the benchmark protocol of docs/design.md §6, run by the benchmark
//! code of each backend ([`crate::bench::cpu`], [`crate::bench::cpu_train`],
//! [`crate::bench::cuda`]), printed as a table or as one JSON array of rows
//! ([`crate::bench::BenchRow::to_json`]).
//!
//! Rows: `forward` and `forward_backward` per shape, `decode` at the backend's decode shape
//! (`--op` picks among them). On the CPU the `forward_backward` rows are the training step of
//! [`crate::bench::cpu_train`], each with the backward's peak extra memory (`extra_bytes`,
//! `adjoint_bytes`, [`crate::bench::alloc`]) measured in one more backward call. On CUDA,
//! `--resources` prints the kernels' resource report (registers, local and shared memory) and
//! `--breakdown` the time of every kernel per shape ([`crate::bench::cuda::breakdown`]), both
//! to stderr before the rows.

use super::args::{positive, Flag, Matches, Spec};
use super::{emit, CliError};
use crate::backends::BackendKind;
use crate::bench::cpu_train::TrainProblem;
use crate::bench::{BenchRow, Shape, CPU_SHAPES, D1, GPU_SHAPES};
use crate::matrix::report::rows_json;

/// Timed repetitions when `--reps` is not given.
pub const DEFAULT_REPS: usize = 20;

/// The row kinds `--op` picks from.
pub const OPS: [&str; 3] = ["forward", "forward_backward", "decode"];

/// `bench`'s flags and usage.
pub static SPEC: Spec = Spec {
    name: "bench",
    usage: concat!("usage:\n", bench_usage!(), usage_footer!()),
    flags: &[
        Flag::repeated("--shape"),
        Flag::repeated("--op"),
        Flag::value("--reps"),
        Flag::switch("--breakdown"),
        Flag::switch("--resources"),
    ],
};

/// Arguments of `bench`.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchArgs {
    /// Which backend.
    pub backend: BackendKind,
    /// Shapes (default: the standard ones of docs/design.md §6).
    pub shapes: Vec<String>,
    /// The row kinds to run, from [`OPS`] (default: all).
    pub ops: Vec<&'static str>,
    /// Timed repetitions (default [`DEFAULT_REPS`]).
    pub reps: Option<usize>,
    /// CUDA: print the time of every kernel per shape first.
    pub breakdown: bool,
    /// CUDA: print the kernels' resource report first.
    pub resources: bool,
}

/// Converts the parsed arguments of `bench` ([`SPEC`]).
pub fn parse(m: &Matches) -> Result<BenchArgs, CliError> {
    let backend = match m.positionals.as_slice() {
        [] => return Err(m.error("needs cpu or cuda")),
        [b] => match b.as_str() {
            "cpu" => BackendKind::Cpu,
            "cuda" | "gpu" => BackendKind::Cuda,
            o => return Err(m.error(format!("unknown backend `{o}` (cpu or cuda)"))),
        },
        [_, extra, ..] => return Err(m.error(format!("unexpected `{extra}`"))),
    };
    let mut ops = Vec::new();
    for v in m.all("--op") {
        for o in v.split(',').map(str::trim).filter(|o| !o.is_empty()) {
            let op = OPS.iter().find(|k| **k == o).ok_or_else(|| {
                m.error(format!(
                    "--op `{o}`: expected one of {} (comma-separated)",
                    OPS.join(" ")
                ))
            })?;
            if !ops.contains(op) {
                ops.push(*op);
            }
        }
    }
    if ops.is_empty() {
        ops = OPS.to_vec();
    }
    let shapes: Vec<String> = m.all("--shape").into_iter().map(String::from).collect();
    // each shape is checked here, so that a bad one is a usage error before anything runs
    shape_list(backend, &shapes).map_err(|e| m.error(format!("--shape {e}")))?;
    let breakdown = m.has("--breakdown");
    let resources = m.has("--resources");
    if backend != BackendKind::Cuda {
        if let Some(f) = ["--breakdown", "--resources"]
            .into_iter()
            .find(|f| m.has(f))
        {
            return Err(m.error(format!("{f}: only for bench cuda")));
        }
    }
    Ok(BenchArgs {
        backend,
        shapes,
        ops,
        reps: m.get("--reps", "a positive integer", positive)?,
        breakdown,
        resources,
    })
}

/// The shapes to run and the decode shape (if any): standard names (S1…S3, D1, G1…G3,
/// `decode` = the backend's decode shape) or `b,l,h,p,g,n[,Q]`; default: every standard shape
/// of the backend and its decode shape.
pub fn shapes(
    backend: BackendKind,
    names: &[String],
) -> Result<(Vec<Shape>, Option<Shape>), CliError> {
    shape_list(backend, names).map_err(|e| SPEC.error(format!("--shape {e}")))
}

fn shape_list(
    backend: BackendKind,
    names: &[String],
) -> Result<(Vec<Shape>, Option<Shape>), String> {
    let decode_shape = match backend {
        BackendKind::Cuda => GPU_SHAPES[0],
        _ => D1,
    };
    if names.is_empty() {
        let std = match backend {
            BackendKind::Cuda => GPU_SHAPES.to_vec(),
            _ => CPU_SHAPES.to_vec(),
        };
        return Ok((std, Some(decode_shape)));
    }
    let mut out = Vec::new();
    let mut decode = None;
    for n in names {
        if n.eq_ignore_ascii_case("decode") || n.eq_ignore_ascii_case("D1") {
            decode = Some(decode_shape);
            continue;
        }
        let s = CPU_SHAPES
            .iter()
            .chain(GPU_SHAPES.iter())
            .find(|s| s.name.eq_ignore_ascii_case(n))
            .copied()
            .map(Ok)
            .unwrap_or_else(|| Shape::parse(n))?;
        out.push(s);
    }
    Ok((out, decode))
}

/// The command.
pub fn run(a: &BenchArgs, json: bool) -> Result<bool, CliError> {
    let (shapes, decode) = shapes(a.backend, &a.shapes)?;
    let reps = a.reps.unwrap_or(DEFAULT_REPS);
    let op = |o: &str| a.ops.contains(&o);
    let decode = decode.filter(|_| op("decode"));
    let rows = match a.backend {
        BackendKind::Cuda => {
            use crate::bench::cuda;
            if a.resources {
                eprintln!("kernel resources:");
                for (name, regs, local, shared) in ssd_gpu::Gpu::new()?.resource_report()? {
                    eprintln!("  {name:34} regs {regs:3}  local {local:4} B  shared {shared:6} B");
                }
            }
            let name = cuda::device_name()?;
            eprintln!("ssd-verify bench cuda on {name}: {reps} reps (medians, CUDA events)");
            if a.breakdown {
                for sh in &shapes {
                    eprintln!("{} per kernel (ms):", sh.name);
                    for (name, ms) in cuda::breakdown(sh, reps)? {
                        eprintln!("  {name:32} {ms:9.4}");
                    }
                }
            }
            let per_shape = op("forward") || op("forward_backward");
            let mut rows = cuda::run(if per_shape { &shapes } else { &[] }, decode, reps)?;
            rows.retain(|r| op(&r.op));
            if !json {
                emit(&cuda::table(&rows));
                return Ok(true);
            }
            rows
        }
        _ => {
            use crate::bench::{alloc, cpu, cpu_train};
            eprintln!(
                "ssd-verify bench cpu on {} threads: {reps} reps (medians)",
                rayon::current_num_threads()
            );
            let forward = if op("forward") || decode.is_some() {
                cpu::run(if op("forward") { &shapes } else { &[] }, decode, reps)?
            } else {
                Vec::new()
            };
            let mut train = if op("forward_backward") {
                cpu_train::run(&shapes, reps)?
            } else {
                Vec::new()
            };
            for (row, sh) in train.iter_mut().zip(&shapes) {
                if let Some((extra, adjoint)) = alloc::backward_memory(&TrainProblem::new(sh))? {
                    row.extra.push(("extra_bytes".into(), extra));
                    row.extra.push(("adjoint_bytes".into(), adjoint));
                }
            }
            let rows = interleave(forward, train);
            if !json {
                emit(&cpu::table(&rows));
                return Ok(true);
            }
            rows
        }
    };
    emit(&format!(
        "{}\n",
        rows_json(rows.iter().map(|r| r.to_json()))
    ));
    Ok(true)
}

/// The CPU rows in the order of the CUDA benchmark's: per shape its `forward` then its
/// `forward_backward` row, then the `decode` row.
fn interleave(forward: Vec<BenchRow>, train: Vec<BenchRow>) -> Vec<BenchRow> {
    let (decode, forward): (Vec<_>, Vec<_>) = forward.into_iter().partition(|r| r.op == "decode");
    let mut rows = Vec::new();
    let mut train = train.into_iter();
    for f in forward {
        rows.push(f);
        rows.extend(train.next());
    }
    rows.extend(train);
    rows.extend(decode);
    rows
}
