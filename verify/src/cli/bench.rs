//! `ssd-verify bench cpu|cuda`: the benchmark protocol of docs/design.md §6, run by the benchmark
//! code of each backend ([`crate::bench::cpu`], [`crate::bench::cuda`]), printed as a table or
//! as JSON rows ([`crate::bench::BenchRow::to_json`]).

use super::{emit, CliError};
use crate::backends::BackendKind;
use crate::bench::{Shape, CPU_SHAPES, D1, GPU_SHAPES};
use crate::matrix::report::rows_json;

/// Timed repetitions when `--reps` is not given.
pub const DEFAULT_REPS: usize = 20;

/// The shapes to run and the decode shape (if any): standard names (S1…S3, D1, G1…G3,
/// `decode` = the backend's decode shape) or `b,l,h,p,g,n[,Q]`; default: every standard shape
/// of the backend and its decode shape.
pub fn shapes(
    backend: BackendKind,
    names: &[String],
) -> Result<(Vec<Shape>, Option<Shape>), CliError> {
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
            .unwrap_or_else(|| Shape::parse(n))
            .map_err(CliError::Usage)?;
        out.push(s);
    }
    Ok((out, decode))
}

/// The command.
pub fn run(
    backend: BackendKind,
    names: &[String],
    reps: Option<usize>,
    json: bool,
) -> Result<bool, CliError> {
    let (shapes, decode) = shapes(backend, names)?;
    let reps = reps.unwrap_or(DEFAULT_REPS);
    let rows = match backend {
        BackendKind::Cuda => {
            let name = crate::bench::cuda::device_name()?;
            eprintln!("ssd-verify bench cuda on {name}: {reps} reps (medians, CUDA events)");
            let rows = crate::bench::cuda::run(&shapes, decode, reps)?;
            if !json {
                emit(&crate::bench::cuda::table(&rows));
                return Ok(true);
            }
            rows
        }
        _ => {
            eprintln!(
                "ssd-verify bench cpu on {} threads: {reps} reps (medians)",
                rayon::current_num_threads()
            );
            let rows = crate::bench::cpu::run(&shapes, decode, reps)?;
            if !json {
                emit(&crate::bench::cpu::table(&rows));
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
