//! `ssd-verify`: the verification matrix, `check` of problem files, `export`, `bench`.
//! See [`ssd_verify::cli`] for the command line; exit status 0 pass, 1 fail, 2 usage or input
//! error.

/// Counts bytes while `bench cpu` measures the backward's peak extra memory
/// ([`ssd_verify::bench::alloc`]); otherwise the system allocator behind one flag check.
#[global_allocator]
static ALLOC: ssd_verify::bench::alloc::Counting = ssd_verify::bench::alloc::Counting;

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::ExitCode::from(ssd_verify::cli::main_with(&args))
}
