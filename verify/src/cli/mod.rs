//! The `ssd-verify` command.
//!
//! ```text
//! ssd-verify [--json]                                   the verification matrix
//! ssd-verify check FILE.npz [--backend reference|cpu|cuda] [--rtol X] [--json]
//! ssd-verify export [--shape b,l,h,p,g,n] [--chunk Q] [--seed S] [--options LIST]
//!                   [--dt-limit LO,HI] [--json] FILE.npz
//! ssd-verify bench cpu|cuda [--shape NAME|b,l,h,p,g,n[,Q]]... [--reps N] [--json]
//! ```
//!
//! Exit status: 0 when every row passes, 1 when a row fails, 2 on a usage error or a file that
//! cannot be read (missing or misnamed key, wrong shape or dtype, corrupt or truncated file).
//! Arguments are parsed by hand: four subcommands with a few flags each need no parser crate.

/// `writeln!` into a `String` (infallible), for output that is written at once by [`emit`].
macro_rules! w {
    ($o:expr, $($t:tt)*) => {{
        use std::fmt::Write as _;
        let _ = writeln!($o, $($t)*);
    }};
}

pub mod bench;
pub mod check;
pub mod export;
pub mod progress;

use crate::backends::{backend_status, BackendKind};
use crate::matrix::{default_specs, report, run_matrix};
use progress::Progress;
use ssd_reference::SsdError;
use std::fmt;

/// What a command's failure is: a usage mistake or unreadable input (exit status 2).
#[derive(Debug)]
pub enum CliError {
    /// Wrong arguments; the message says what and shows the usage line.
    Usage(String),
    /// The input could not be read or is malformed, or a backend could not run.
    Ssd(SsdError),
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Usage(m) => write!(f, "{m}\n\n{USAGE}"),
            CliError::Ssd(e) => write!(f, "{e}"),
        }
    }
}

impl From<SsdError> for CliError {
    fn from(e: SsdError) -> Self {
        CliError::Ssd(e)
    }
}

/// The usage text.
pub const USAGE: &str = "\
usage:
  ssd-verify [--json]
      the verification matrix: every kernel on every backend here, the combined op and
      every gradient, against the float64 truth (exit status 1 on any failure)
  ssd-verify check FILE.npz [--backend reference|cpu|cuda] [--rtol X] [--json]
      errors of the results in FILE (docs/design.md §4.10 keys) against the float64 truth, with our
      backend's errors beside them; file results are judged by --rtol (default: 1e-5 for
      out/final_states, 1e-4 for gradients)
  ssd-verify export [--shape b,l,h,p,g,n] [--chunk Q] [--seed S] [--options LIST]
                    [--dt-limit LO,HI] [--json] FILE.npz
      writes a problem with inputs, seeds and float64 results; LIST is comma-separated from
      D D_head z dt_bias softplus dt_limit initial_states seq_idx dfinal_states all none;
      --dt-limit sets dt_limit = (LO, HI), 0 <= LO < HI, HI may be inf (default with the
      dt_limit option: 0.002,0.2)
  ssd-verify bench cpu|cuda [--shape NAME|b,l,h,p,g,n[,Q]]... [--reps N] [--json]
      the benchmark protocol of docs/design.md §6; NAME is S1 S2 S3 D1 (cpu), G1 G2 G3 (cuda) or
      decode; default: every standard shape of the backend and its decode step
exit status: 0 pass, 1 a check failed, 2 usage error or unreadable input";

/// Parsed command line.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// The verification matrix.
    Matrix,
    /// `check FILE`.
    Check {
        /// The file.
        path: std::path::PathBuf,
        /// The backend whose errors are printed beside the file's (default: cpu when built in,
        /// else reference).
        backend: Option<BackendKind>,
        /// Threshold of the file's results (default: the f32 thresholds).
        rtol: Option<f64>,
    },
    /// `export FILE`.
    Export(export::ExportArgs),
    /// `bench cpu|cuda`.
    Bench {
        /// Which backend.
        backend: BackendKind,
        /// Shapes (default: the standard ones of docs/design.md §6).
        shapes: Vec<String>,
        /// Timed repetitions (default [`bench::DEFAULT_REPS`]).
        reps: Option<usize>,
    },
    /// `help`.
    Help,
}

/// A parsed command line plus `--json`.
#[derive(Debug, Clone, PartialEq)]
pub struct Args {
    /// The command.
    pub command: Command,
    /// Print one JSON array of row objects instead of a table.
    pub json: bool,
}

fn value<'a>(
    it: &mut impl Iterator<Item = &'a String>,
    flag: &str,
) -> Result<&'a String, CliError> {
    it.next()
        .ok_or_else(|| CliError::Usage(format!("{flag} needs a value")))
}

/// Parses the arguments after the program name.
pub fn parse_args(args: &[String]) -> Result<Args, CliError> {
    let json = args.iter().any(|a| a == "--json");
    let rest: Vec<&String> = args.iter().filter(|a| *a != "--json").collect();
    if rest
        .iter()
        .any(|a| *a == "-h" || *a == "--help" || *a == "help")
    {
        return Ok(Args {
            command: Command::Help,
            json,
        });
    }
    let mut it = rest.into_iter();
    let command = match it.next().map(String::as_str) {
        None => Command::Matrix,
        Some("check") => {
            let mut path = None;
            let mut backend = None;
            let mut rtol = None;
            while let Some(a) = it.next() {
                match a.as_str() {
                    "--backend" => {
                        let v = value(&mut it, "--backend")?;
                        backend = Some(BackendKind::parse(v).ok_or_else(|| {
                            CliError::Usage(format!(
                                "unknown backend `{v}` (reference, cpu or cuda)"
                            ))
                        })?);
                    }
                    "--rtol" => {
                        let v = value(&mut it, "--rtol")?;
                        let x: f64 =
                            v.parse().ok().filter(|x: &f64| *x >= 0.0).ok_or_else(|| {
                                CliError::Usage(format!("--rtol `{v}` is not a number >= 0"))
                            })?;
                        rtol = Some(x);
                    }
                    f if f.starts_with('-') => {
                        return Err(CliError::Usage(format!("check: unknown flag `{f}`")))
                    }
                    f => {
                        if path.replace(std::path::PathBuf::from(f)).is_some() {
                            return Err(CliError::Usage("check takes one FILE".into()));
                        }
                    }
                }
            }
            Command::Check {
                path: path.ok_or_else(|| CliError::Usage("check needs a FILE.npz".into()))?,
                backend,
                rtol,
            }
        }
        Some("export") => Command::Export(export::parse(&mut it)?),
        Some("bench") => {
            let backend = match it.next().map(String::as_str) {
                Some("cpu") => BackendKind::Cpu,
                Some("cuda") | Some("gpu") => BackendKind::Cuda,
                Some(o) => {
                    return Err(CliError::Usage(format!(
                        "bench: unknown backend `{o}` (cpu or cuda)"
                    )))
                }
                None => return Err(CliError::Usage("bench needs cpu or cuda".into())),
            };
            let mut shapes = Vec::new();
            let mut reps = None;
            while let Some(a) = it.next() {
                match a.as_str() {
                    "--shape" => shapes.push(value(&mut it, "--shape")?.clone()),
                    "--reps" => {
                        let v = value(&mut it, "--reps")?;
                        reps =
                            Some(v.parse::<usize>().ok().filter(|r| *r > 0).ok_or_else(|| {
                                CliError::Usage(format!(
                                    "--reps `{v}`: expected a positive integer"
                                ))
                            })?);
                    }
                    o => return Err(CliError::Usage(format!("bench: unexpected `{o}`"))),
                }
            }
            Command::Bench {
                backend,
                shapes,
                reps,
            }
        }
        Some(o) => {
            return Err(CliError::Usage(format!(
                "unknown command or flag `{o}` (check, export, bench, help)"
            )))
        }
    };
    Ok(Args { command, json })
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
        Command::Help => {
            emit(&format!("{USAGE}\n"));
            Ok(true)
        }
        Command::Matrix => matrix(parsed.json),
        Command::Check {
            path,
            backend,
            rtol,
        } => check::run(path, *backend, *rtol, parsed.json),
        Command::Export(a) => export::run(a, parsed.json),
        Command::Bench {
            backend,
            shapes,
            reps,
        } => bench::run(*backend, shapes, *reps, parsed.json),
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
