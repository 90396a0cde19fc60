//! `bench-cpu [--reps N] [--json] [SHAPE…]`: the CPU benchmark of docs/design.md §6 until
//! `ssd-verify bench cpu` calls [`ssd_verify::bench::cpu::run`] itself. Shapes: S1, S2, S3, D1
//! (default: all four).

use ssd_verify::bench::{cpu, CPU_SHAPES, D1};

fn main() -> std::process::ExitCode {
    let mut reps = 10;
    let mut json = false;
    let mut names = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--reps" => reps = args.next().and_then(|v| v.parse().ok()).unwrap_or(reps),
            "--json" => json = true,
            _ => names.push(a),
        }
    }
    let pick = |n: &str| names.is_empty() || names.iter().any(|m| m.eq_ignore_ascii_case(n));
    let shapes: Vec<_> = CPU_SHAPES
        .iter()
        .copied()
        .filter(|s| pick(s.name))
        .collect();
    let decode = pick(D1.name).then_some(D1);
    eprintln!(
        "ssd-cpu benchmark: {} rayon threads, {reps} reps (medians)",
        rayon::current_num_threads()
    );
    match cpu::run(&shapes, decode, reps) {
        Ok(rows) => {
            if json {
                for r in &rows {
                    println!("{}", r.to_json());
                }
            } else {
                print!("{}", cpu::table(&rows));
            }
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
