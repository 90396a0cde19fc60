//! `ssd-verify bench cpu|cuda`: the benchmark protocol of DESIGN.md §6, run by the benchmark
//! code of each backend (`crate::bench::cpu`, `crate::bench::cuda`) and printed as a table or
//! as JSON rows ([`crate::bench::BenchRow::to_json`]).

use super::CliError;
use crate::backends::BackendKind;
use crate::bench::{Shape, CPU_SHAPES, D1, GPU_SHAPES};
use ssd_reference::SsdError;

/// Resolves `--shape` values: a standard name (S1…S3, D1, G1…G3) or `b,l,h,p,g,n[,Q]`.
pub fn shapes(backend: BackendKind, names: &[String]) -> Result<Vec<Shape>, CliError> {
    if names.is_empty() {
        return Ok(match backend {
            BackendKind::Cuda => GPU_SHAPES.to_vec(),
            _ => CPU_SHAPES.iter().copied().chain([D1]).collect(),
        });
    }
    names
        .iter()
        .map(|n| {
            CPU_SHAPES
                .iter()
                .chain(GPU_SHAPES.iter())
                .chain([&D1])
                .find(|s| s.name.eq_ignore_ascii_case(n))
                .copied()
                .map(Ok)
                .unwrap_or_else(|| Shape::parse(n).map_err(CliError::Usage))
        })
        .collect()
}

/// The command.
pub fn run(backend: BackendKind, names: &[String], _json: bool) -> Result<bool, CliError> {
    let _shapes = shapes(backend, names)?;
    // The benchmark programs live in `crate::bench::cpu` / `crate::bench::cuda`, written with
    // the CPU and CUDA backends; this is where they are called once they are in the build.
    Err(CliError::Ssd(SsdError::invalid(
        "backend",
        format!(
            "the {} benchmark (verify/src/bench/{}.rs) is not in this build yet",
            backend.name(),
            backend.name()
        ),
    )))
}
