//! The `ssd-verify` command.
//!
//! ```text
//! ssd-verify [--json]                                   the verification matrix
//! ssd-verify check FILE.npz [--backend reference|cpu|cuda] [--rtol X] [--json]
//! ssd-verify export [--shape b,l,h,p,g,n] [--chunk Q] [--seed S] [--options LIST]
//!                   [--dt-limit LO,HI] [--json] FILE.npz
//! ssd-verify bench cpu|cuda [--shape NAME|b,l,h,p,g,n[,Q]]... [--op LIST] [--reps N]
//!                   [--breakdown] [--resources] [--json]
//! ssd-verify [SUBCOMMAND] --help | --version
//! ```
//!
//! Exit status: 0 when every row passes (and for `--help`, `--version`), 1 when a row fails, 2
//! on a usage error or a file that cannot be read (missing or misnamed key, wrong shape or
//! dtype, corrupt or truncated file). Every subcommand's arguments go through the one parser of
//! [`args`] (`--flag=value` or `--flag value`; an unknown flag or a bad value is a usage error
//! naming the flag).

/// `writeln!` into a `String` (infallible), for output that is written at once by [`emit`].
macro_rules! w {
    ($o:expr, $($t:tt)*) => {{
        use std::fmt::Write as _;
        let _ = writeln!($o, $($t)*);
    }};
}

/// The matrix's usage lines.
macro_rules! matrix_usage {
    () => {
        "  ssd-verify [--json]
      the verification matrix: every kernel on every backend here, the combined op and
      every gradient, against the float64 truth (exit status 1 on any failure)
"
    };
}

/// `check`'s usage lines.
macro_rules! check_usage {
    () => {
        "  ssd-verify check FILE.npz [--backend reference|cpu|cuda] [--rtol X] [--json]
      errors of the results in FILE (docs/design.md §4.10 keys) against the float64 truth, with our
      backend's errors beside them (--backend, default: cpu); file results are judged by
      --rtol (default: 1e-5 for out/final_states, 1e-4 for gradients)
"
    };
}

/// `export`'s usage lines.
macro_rules! export_usage {
    () => {
        "  ssd-verify export [--shape b,l,h,p,g,n] [--chunk Q] [--seed S] [--options LIST]
                    [--dt-limit LO,HI] [--json] FILE.npz
      writes a problem with inputs, seeds and float64 results (default: --shape 2,128,4,16,2,16
      --chunk 32 --seed 0); LIST is comma-separated from D D_head z dt_bias softplus dt_limit
      initial_states seq_idx dfinal_states all none; --dt-limit sets dt_limit = (LO, HI),
      0 <= LO < HI, HI may be inf (default with the dt_limit option: 0.002,0.2)
"
    };
}

/// `bench`'s usage lines.
macro_rules! bench_usage {
    () => {
        "  ssd-verify bench cpu|cuda [--shape NAME|b,l,h,p,g,n[,Q]]... [--op LIST] [--reps N]
                    [--breakdown] [--resources] [--json]
      the benchmark protocol of docs/design.md §6: forward and forward_backward rows per shape,
      a decode row; NAME is S1 S2 S3 D1 (cpu), G1 G2 G3 (cuda) or decode (Q defaults to 256);
      default: every standard shape of the backend and its decode step; --op picks rows
      (comma-separated from forward forward_backward decode; default all); --reps N timed
      runs (default 20). cpu forward_backward rows carry the backward's peak extra memory
      (extra_bytes, adjoint_bytes). cuda only, printed to stderr before the rows:
      --resources (registers, local and shared memory of every kernel), --breakdown (the
      time of every kernel of the forward and backward per shape)
"
    };
}

/// The lines every usage text ends with.
macro_rules! usage_footer {
    () => {
        "every subcommand takes --json (one JSON array of row objects instead of a table),
--help (its usage) and --version; values as --flag=value or --flag value
exit status: 0 pass, 1 a check failed, 2 usage error or unreadable input"
    };
}

pub mod args;
pub mod bench;
pub mod check;
pub mod export;
pub mod progress;

use crate::backends::backend_status;
use crate::matrix::{default_specs, report, run_matrix};
use args::{Parsed, Spec};
use progress::Progress;
use ssd_reference::SsdError;
use std::fmt;

/// What a command's failure is: a usage mistake or unreadable input (exit status 2).
#[derive(Debug)]
pub enum CliError {
    /// Wrong arguments: what is wrong (naming the flag or argument), and the usage text of the
    /// subcommand to show after it.
    Usage {
        /// What is wrong.
        message: String,
        /// The subcommand's usage text.
        usage: &'static str,
    },
    /// The input could not be read or is malformed, or a backend could not run.
    Ssd(SsdError),
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Usage { message, usage } => write!(f, "{message}\n\n{usage}"),
            CliError::Ssd(e) => write!(f, "{e}"),
        }
    }
}

impl From<SsdError> for CliError {
    fn from(e: SsdError) -> Self {
        CliError::Ssd(e)
    }
}

/// The usage text of the whole command (`ssd-verify --help`).
pub const USAGE: &str = concat!(
    "usage:\n",
    matrix_usage!(),
    check_usage!(),
    export_usage!(),
    bench_usage!(),
    "  ssd-verify help [SUBCOMMAND], ssd-verify SUBCOMMAND --help, ssd-verify --version\n",
    usage_footer!()
);

/// The matrix (no subcommand): `--json` only.
pub static MATRIX: Spec = Spec {
    name: "",
    usage: USAGE,
    flags: &[],
};

/// The subcommands.
pub static SUBCOMMANDS: [&Spec; 3] = [&check::SPEC, &export::SPEC, &bench::SPEC];

/// The version line (`--version`).
pub const VERSION: &str = concat!("ssd-verify ", env!("CARGO_PKG_VERSION"));

/// Parsed command line.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// The verification matrix.
    Matrix,
    /// `check FILE`.
    Check(check::CheckArgs),
    /// `export FILE`.
    Export(export::ExportArgs),
    /// `bench cpu|cuda`.
    Bench(bench::BenchArgs),
    /// `help`, `--help`, `-h`: print this usage text.
    Help(&'static str),
    /// `--version`, `-V`.
    Version,
}

/// A parsed command line plus `--json`.
#[derive(Debug, Clone, PartialEq)]
pub struct Args {
    /// The command.
    pub command: Command,
    /// Print one JSON array of row objects instead of a table.
    pub json: bool,
}

/// Whether `a` is a flag that every subcommand takes and that may come before the subcommand's
/// name (`ssd-verify --json check FILE`).
fn global_flag(a: &str) -> bool {
    matches!(a, "--json" | "--help" | "-h" | "--version" | "-V")
}

/// Parses the arguments after the program name.
pub fn parse_args(args: &[String]) -> Result<Args, CliError> {
    let first = args.iter().position(|a| !global_flag(a));
    let (spec, rest): (&'static Spec, Vec<String>) = match first {
        Some(i) if !args[i].starts_with('-') => {
            let name = args[i].as_str();
            let rest: Vec<String> = args[..i].iter().chain(&args[i + 1..]).cloned().collect();
            if name == "help" {
                let usage = match rest.iter().find(|a| !global_flag(a)) {
                    None => USAGE,
                    Some(sub) => {
                        SUBCOMMANDS
                            .iter()
                            .find(|s| s.name == sub)
                            .ok_or_else(|| {
                                MATRIX.error(format!(
                                    "help: unknown subcommand `{sub}` (check, export, bench)"
                                ))
                            })?
                            .usage
                    }
                };
                return Ok(Args {
                    command: Command::Help(usage),
                    json: false,
                });
            }
            let spec = SUBCOMMANDS.iter().find(|s| s.name == name).ok_or_else(|| {
                MATRIX.error(format!(
                    "unknown subcommand `{name}` (check, export, bench, help)"
                ))
            })?;
            (spec, rest)
        }
        _ => (&MATRIX, args.to_vec()),
    };
    let m = match args::parse(spec, &rest)? {
        Parsed::Help => {
            return Ok(Args {
                command: Command::Help(spec.usage),
                json: false,
            })
        }
        Parsed::Version => {
            return Ok(Args {
                command: Command::Version,
                json: false,
            })
        }
        Parsed::Matches(m) => m,
    };
    let command = match spec.name {
        "check" => Command::Check(check::parse(&m)?),
        "export" => Command::Export(export::parse(&m)?),
        "bench" => Command::Bench(bench::parse(&m)?),
        _ => {
            if let Some(p) = m.positionals.first() {
                return Err(m.error(format!(
                    "unknown subcommand `{p}` (check, export, bench, help)"
                )));
            }
            Command::Matrix
        }
    };
    Ok(Args {
        command,
        json: m.json(),
    })
}

/// Runs the command line; returns the process exit status (0, 1 or 2).
pub fn main_with(args: &[String]) -> u8 {
    let parsed = match parse_args(args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("ssd-verify: {e}");
            return 2;
        }
    };
    let result = match &parsed.command {
        Command::Help(usage) => {
            emit(&format!("{usage}\n"));
            Ok(true)
        }
        Command::Version => {
            emit(&format!("{VERSION}\n"));
            Ok(true)
        }
        Command::Matrix => matrix(parsed.json),
        Command::Check(a) => check::run(&a.path, a.backend, a.rtol, parsed.json),
        Command::Export(a) => export::run(a, parsed.json),
        Command::Bench(a) => bench::run(a, parsed.json),
    };
    match result {
        Ok(true) => 0,
        Ok(false) => 1,
        Err(e) => {
            eprintln!("ssd-verify: error: {e}");
            2
        }
    }
}

fn matrix(json: bool) -> Result<bool, CliError> {
    let mut backends = Vec::new();
    let mut absent = Vec::new();
    for (kind, b) in backend_status() {
        match b {
            Ok(b) => backends.push(b),
            Err(e) => absent.push(format!("{} ({e})", kind.name())),
        }
    }
    let specs = default_specs();
    let mut progress = Progress::new("matrix");
    let rows = run_matrix(&specs, &backends, &mut |done, total, what| {
        progress.update(done, total, what)
    })?;
    let elapsed = progress.finish();
    let ok = rows.iter().all(|r| r.pass);
    let mut o = String::new();
    if json {
        w!(o, "{}", report::rows_json(rows.iter().map(|r| r.to_json())));
        emit(&o);
        return Ok(ok);
    }
    w!(
        o,
        "ssd-verify: the verification matrix against the float64 truth"
    );
    w!(
        o,
        "backends: {}",
        backends
            .iter()
            .map(|b| b.name())
            .collect::<Vec<_>>()
            .join(", ")
    );
    if !absent.is_empty() {
        w!(o, "not available here: {}", absent.join("; "));
    }
    for cs in &specs {
        w!(o, "  {}: {}", cs.label, cs.describe());
    }
    w!(o, "");
    o.push_str(&report::table(&rows));
    let count = |v: &str| rows.iter().filter(|r| r.verdict() == v).count();
    w!(o, "");
    w!(
        o,
        "† = relative to the sum of the terms' magnitudes (per-head scalars); case = the problem \
         of the worst error"
    );
    w!(
        o,
        "{} rows: {} PASS, {} FAIL, {} MISSING  ({:.1} s)  {}",
        rows.len(),
        count("PASS"),
        count("FAIL"),
        count("MISSING"),
        elapsed,
        if ok { "ALL PASS" } else { "FAILED" }
    );
    emit(&o);
    Ok(ok)
}

/// Writes `text` to stdout at once; a closed pipe (`ssd-verify | head`) is not an error.
pub fn emit(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}
