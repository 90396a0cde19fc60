//! `bench-cuda [--reps N] [--json] [SHAPE…]`: the CUDA benchmark of docs/design.md §6 (also reached as
//! `ssd-verify bench cuda`, which calls [`ssd_verify::bench::cuda::run`]). Shapes: G1, G2, G3 and
//! `decode` (the decode step at G1's sizes); default: all four. Prints the kernels' resource
//! report (registers, local memory) first with `--resources`, and the time of every kernel with
//! `--breakdown`.

use ssd_verify::bench::{cuda, GPU_SHAPES};

fn main() -> std::process::ExitCode {
    let mut reps = 20;
    let mut json = false;
    let mut resources = false;
    let mut breakdown = false;
    let mut names = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--reps" => reps = args.next().and_then(|v| v.parse().ok()).unwrap_or(reps),
            "--json" => json = true,
            "--resources" => resources = true,
            "--breakdown" => breakdown = true,
            _ => names.push(a),
        }
    }
    let pick = |n: &str| names.is_empty() || names.iter().any(|m| m.eq_ignore_ascii_case(n));
    let shapes: Vec<_> = GPU_SHAPES
        .iter()
        .copied()
        .filter(|s| pick(s.name))
        .collect();
    let decode = pick("decode").then_some(GPU_SHAPES[0]);
    if resources {
        match ssd_gpu::Gpu::new().and_then(|g| g.resource_report()) {
            Ok(rows) => {
                for (name, regs, local, shared) in rows {
                    eprintln!("  {name:34} regs {regs:3}  local {local:4} B  shared {shared:6} B");
                }
            }
            Err(e) => {
                eprintln!("error: {e}");
                return std::process::ExitCode::FAILURE;
            }
        }
    }
    match cuda::device_name() {
        Ok(name) => eprintln!("ssd-gpu benchmark on {name}: {reps} reps (medians, CUDA events)"),
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::FAILURE;
        }
    }
    if breakdown {
        for sh in &shapes {
            match cuda::breakdown(sh, reps) {
                Ok(rows) => {
                    eprintln!("{} per kernel (ms):", sh.name);
                    for (name, ms) in rows {
                        eprintln!("  {name:32} {ms:9.4}");
                    }
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    return std::process::ExitCode::FAILURE;
                }
            }
        }
    }
    match cuda::run(&shapes, decode, reps) {
        Ok(rows) => {
            if json {
                for r in &rows {
                    println!("{}", r.to_json());
                }
            } else {
                print!("{}", cuda::table(&rows));
            }
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
