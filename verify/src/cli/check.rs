//! `ssd-verify check FILE.npz`: how far each result in a problem file is from the float64 truth,
//! with our backend's error on the same problem beside it.
//!
//! The truth is the literal recurrence (`ssd_recurrent`, and `ssd_recurrent_bwd` for the
//! gradients) on the file's inputs, upcast to float64 as read. File results are judged by
//! `--rtol` when given, else by the f32 thresholds of [`crate::tolerance`]: `FORWARD_F32` (1e-5)
//! for `out`/`final_states`, `GRADIENT_F32` (1e-4) for gradients — what a float32
//! implementation with exact float32 arithmetic achieves. (mamba_ssm's Triton kernels multiply
//! in TF32 and land near 1e-3: judge them with `--rtol 1e-2`.) `dA`, `ddt_bias` and `dD` are
//! sums of many signed terms and are measured relative to the sum of their terms' magnitudes.
//! Our backend is judged by its own thresholds (float64 or f32).
//!
//! Non-finite values: in an input or seed the file cannot be checked (an input error); in a
//! result of the file or of our backend (or in the truth) the row fails with a note naming the
//! tensor, the count and the first one's index ([`crate::finite`]).

use super::args::{Flag, Matches, Spec};
use super::CliError;
use crate::backends::{backend, reference_backward_inputs, BackendKind, Precision};
use crate::matrix::{
    combined_threshold, gradient_magnitudes, gradient_tensors, report, truth, Row, COMBINED,
    COMBINED_BWD,
};
use crate::problem_file::{ProblemFile, RESULT_KEYS};
use crate::tolerance::{FORWARD_F32, GRADIENT_F32};
use ndarray::ArrayD;
use ssd_reference::validate::check_finite;
use ssd_reference::{validate, ChunkedForward, Problem, SsdError};
use std::path::Path;

/// `check`'s flags and usage.
pub static SPEC: Spec = Spec {
    name: "check",
    usage: concat!("usage:\n", check_usage!(), usage_footer!()),
    flags: &[Flag::value("--backend"), Flag::value("--rtol")],
};

/// Arguments of `check`.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckArgs {
    /// The file.
    pub path: std::path::PathBuf,
    /// The backend whose errors are printed beside the file's (default: cpu when built in,
    /// else reference).
    pub backend: Option<BackendKind>,
    /// Threshold of the file's results (default: the f32 thresholds).
    pub rtol: Option<f64>,
}

/// Converts the parsed arguments of `check` ([`SPEC`]).
pub fn parse(m: &Matches) -> Result<CheckArgs, CliError> {
    Ok(CheckArgs {
        backend: m.get("--backend", "reference, cpu or cuda", BackendKind::parse)?,
        rtol: m.get("--rtol", "a number >= 0", |v| {
            v.trim().parse::<f64>().ok().filter(|x| *x >= 0.0)
        })?,
        path: m.one_positional("a FILE.npz")?.into(),
    })
}

/// The rows of one check.
#[derive(Debug, Clone)]
pub struct CheckReport {
    /// The problem's sizes and options.
    pub description: String,
    /// The backend compared beside the file.
    pub backend: String,
    /// One row per result in the file: the file's result against the truth.
    pub file_rows: Vec<Row>,
    /// The same tensors from our backend against the truth.
    pub backend_rows: Vec<Row>,
}

impl CheckReport {
    /// Whether every row passes.
    pub fn pass(&self) -> bool {
        self.file_rows
            .iter()
            .chain(&self.backend_rows)
            .all(|r| r.pass)
    }
}

fn npz_err(key: &str, message: impl Into<String>) -> SsdError {
    SsdError::Npz {
        key: Some(key.to_string()),
        message: message.into(),
    }
}

/// A one-line description of a problem's sizes and options.
pub fn describe(p: &Problem<f64>) -> String {
    let d = p.dims();
    let mut o = Vec::new();
    if let Some(dd) = &p.d {
        o.push(if dd.ndim() == 1 { "D(h)" } else { "D(h,p)" });
    }
    if p.z.is_some() {
        o.push("z");
    }
    if p.dt_bias.is_some() {
        o.push("dt_bias");
    }
    if p.options.dt_softplus {
        o.push("softplus");
    }
    if p.options.dt_limit != (0.0, f64::INFINITY) {
        o.push("dt_limit");
    }
    if p.initial_states.is_some() {
        o.push("initial_states");
    }
    if p.seq_idx.is_some() {
        o.push("seq_idx");
    }
    format!(
        "b{} l{} h{} p{} g{} n{} Q{}  {}",
        d.batch,
        d.seqlen,
        d.nheads,
        d.headdim,
        d.ngroups,
        d.dstate,
        p.options.chunk_size,
        if o.is_empty() {
            "no options".into()
        } else {
            o.join(" ")
        }
    )
}

fn is_gradient(key: &str) -> bool {
    !matches!(key, "out" | "final_states")
}

/// The shape a result must have (or why the file cannot hold it).
fn expected_shape(key: &str, p: &Problem<f64>) -> Result<Vec<usize>, SsdError> {
    let d = p.dims();
    let (b, l, h, pp, g, n) = (d.batch, d.seqlen, d.nheads, d.headdim, d.ngroups, d.dstate);
    let needs = |present: bool, input: &str| {
        if present {
            Ok(())
        } else {
            Err(npz_err(
                key,
                format!("the file holds `{key}` but not the input `{input}` it is the gradient of"),
            ))
        }
    };
    Ok(match key {
        "out" | "dx" => vec![b, l, h, pp],
        "final_states" => vec![b, h, pp, n],
        "ddt" => vec![b, l, h],
        "dA" => vec![h],
        "dB" | "dC" => vec![b, l, g, n],
        "dD" => {
            needs(p.d.is_some(), "D")?;
            p.d.as_ref().map(|v| v.shape().to_vec()).unwrap_or_default()
        }
        "dz" => {
            needs(p.z.is_some(), "z")?;
            vec![b, l, h, pp]
        }
        "ddt_bias" => {
            needs(p.dt_bias.is_some(), "dt_bias")?;
            vec![h]
        }
        "dinitial_states" => {
            needs(p.initial_states.is_some(), "initial_states")?;
            vec![b, h, pp, n]
        }
        _ => return Err(npz_err(key, "not a result key")),
    })
}

/// Checks a problem file that is already read. `file_name` labels the rows.
pub fn check_problem(
    pf: &ProblemFile,
    file_name: &str,
    kind: BackendKind,
    rtol: Option<f64>,
) -> Result<CheckReport, SsdError> {
    let p = &pf.problem;
    let dims = validate(&p.inputs(), &p.options)?;
    let (b, l, h, pp, n) = (
        dims.batch,
        dims.seqlen,
        dims.nheads,
        dims.headdim,
        dims.dstate,
    );
    if let Some(d) = &pf.dout {
        if d.shape() != [b, l, h, pp] {
            return Err(npz_err(
                "dout",
                format!(
                    "expected shape {:?} (b, l, h, p), found {:?}",
                    [b, l, h, pp],
                    d.shape()
                ),
            ));
        }
    }
    if let Some(d) = &pf.dfinal_states {
        if d.shape() != [b, h, pp, n] {
            return Err(npz_err(
                "dfinal_states",
                format!(
                    "expected shape {:?} (b, h, p, n), found {:?}",
                    [b, h, pp, n],
                    d.shape()
                ),
            ));
        }
    }
    // the inputs' finiteness is `validate`'s; the seeds' is checked here, as an input error
    if let Some(d) = &pf.dout {
        check_finite("dout", &d.view())?;
    }
    if let Some(d) = &pf.dfinal_states {
        check_finite("dfinal_states", &d.view())?;
    }
    if pf.results.is_empty() {
        return Err(SsdError::Npz {
            key: None,
            message: format!(
                "the file holds no results to check (expected some of: {})",
                RESULT_KEYS.join(" ")
            ),
        });
    }
    let keys: Vec<&str> = RESULT_KEYS
        .iter()
        .copied()
        .filter(|k| pf.results.contains_key(*k))
        .collect();
    for k in &keys {
        let want = expected_shape(k, p)?;
        let got = pf.results[*k].shape();
        if got != want.as_slice() {
            return Err(npz_err(
                k,
                format!("expected shape {want:?}, found {got:?}"),
            ));
        }
    }
    let grads_wanted = keys.iter().any(|k| is_gradient(k));
    if grads_wanted && pf.dout.is_none() {
        let list: Vec<&str> = keys.iter().copied().filter(|k| is_gradient(k)).collect();
        return Err(npz_err(
            "dout",
            format!(
                "the file holds gradients ({}) but not the seed `dout` they were computed from",
                list.join(" ")
            ),
        ));
    }
    let be = backend(kind)?;
    let dout = if grads_wanted { pf.dout.as_ref() } else { None };
    let t = truth(p, dout, pf.dfinal_states.as_ref())?;
    let fwd = ChunkedForward::run(&p.inputs(), &p.options)?;
    let bwd_inputs = match dout {
        Some(d) => reference_backward_inputs(p, &fwd, d, pf.dfinal_states.as_ref())?,
        None => None,
    };
    let mags = t
        .gradients
        .as_ref()
        .map(|g| gradient_magnitudes(p, &fwd.dt_bhcq, bwd_inputs.as_ref(), g))
        .unwrap_or_default();
    let want_of = |k: &str| -> Option<ArrayD<f64>> {
        match k {
            "out" => Some(t.forward.out.clone().into_dyn()),
            "final_states" => Some(t.forward.final_states.clone().into_dyn()),
            _ => t.gradients.as_ref().and_then(|g| {
                gradient_tensors(g)
                    .into_iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, a)| a)
            }),
        }
    };
    let bname = be.name();
    let got_fwd = be.forward(p);
    let got_bwd = dout.map(|d| be.backward(p, d, pf.dfinal_states.as_ref()));
    let mut file_rows = Vec::new();
    let mut backend_rows = Vec::new();
    for k in keys {
        let grad = is_gradient(k);
        let op = if grad { COMBINED_BWD } else { COMBINED };
        let file_thr = rtol.unwrap_or(if grad { GRADIENT_F32 } else { FORWARD_F32 });
        let be_thr = combined_threshold(be.precision(), grad);
        let mag = mags.iter().find(|(n, _)| *n == k).map(|(_, m)| m);
        let want = match want_of(k) {
            Some(w) => w,
            None => {
                let why = "no float64 backward (ssd_recurrent_bwd) in ssd-reference yet";
                file_rows.push(Row::failed(op, "file", k, file_name, file_thr, why));
                backend_rows.push(Row::failed(op, bname, k, file_name, be_thr, why));
                continue;
            }
        };
        file_rows.push(Row::compare(
            op,
            "file",
            k,
            file_name,
            &pf.results[k],
            &want,
            mag,
            file_thr,
        ));
        let got: Result<Option<ArrayD<f64>>, String> = if grad {
            match &got_bwd {
                Some(Ok(Some(g))) => Ok(gradient_tensors(g)
                    .into_iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, a)| a)),
                Some(Ok(None)) => Err(format!("backward not implemented by {bname}")),
                Some(Err(e)) => Err(e.to_string()),
                None => Err("no dout".into()),
            }
        } else {
            match &got_fwd {
                Ok(o) => Ok(Some(if k == "out" {
                    o.out.clone().into_dyn()
                } else {
                    o.final_states.clone().into_dyn()
                })),
                Err(e) => Err(e.to_string()),
            }
        };
        backend_rows.push(match got {
            Ok(Some(g)) => Row::compare(op, bname, k, file_name, &g, &want, mag, be_thr),
            Ok(None) => Row::failed(
                op,
                bname,
                k,
                file_name,
                be_thr,
                format!("{bname} returned no `{k}`"),
            ),
            Err(e) => Row::failed(op, bname, k, file_name, be_thr, e),
        });
    }
    Ok(CheckReport {
        description: describe(p),
        backend: format!(
            "{bname} ({})",
            match be.precision() {
                Precision::F64 => "float64 chunked",
                Precision::F32 => "f32",
            }
        ),
        file_rows,
        backend_rows,
    })
}

/// Reads and checks the file at `path`.
pub fn check_file(
    path: &Path,
    kind: Option<BackendKind>,
    rtol: Option<f64>,
) -> Result<CheckReport, SsdError> {
    let pf = ProblemFile::read(path)?;
    let kind = kind.unwrap_or(if backend(BackendKind::Cpu).is_ok() {
        BackendKind::Cpu
    } else {
        BackendKind::Reference
    });
    let name = path
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string());
    check_problem(&pf, &name, kind, rtol)
}

/// The command: prints the report, returns whether everything passed.
pub fn run(
    path: &Path,
    kind: Option<BackendKind>,
    rtol: Option<f64>,
    json: bool,
) -> Result<bool, CliError> {
    let rep = check_file(path, kind, rtol)?;
    let ok = rep.pass();
    let mut o = String::new();
    if json {
        w!(
            o,
            "{}",
            report::rows_json(
                rep.file_rows
                    .iter()
                    .chain(&rep.backend_rows)
                    .map(|r| r.to_json())
            )
        );
        super::emit(&o);
        return Ok(ok);
    }
    w!(o, "{}: {}", path.display(), rep.description);
    w!(
        o,
        "truth: float64 literal recurrence (ssd_recurrent, ssd_recurrent_bwd); ours: {}",
        rep.backend
    );
    w!(o, "");
    w!(
        o,
        "{:<16} | {:>10} {:>10} {:>9} {:<7} | {:>10} {:>10} {:>9} {:<7}",
        "tensor",
        "file",
        "max_abs",
        "threshold",
        "result",
        "ours",
        "max_abs",
        "threshold",
        "result"
    );
    for (f, b) in rep.file_rows.iter().zip(&rep.backend_rows) {
        let mark = |r: &Row| {
            if r.metric == report::Metric::RelToMagnitude {
                "†"
            } else {
                " "
            }
        };
        w!(
            o,
            "{:<16} | {:>10}{} {:>9} {:>9.0e} {:<7} | {:>10}{} {:>9} {:>9.0e} {:<7}{}",
            f.tensor,
            f.error_cell(),
            mark(f),
            f.max_abs_cell(),
            f.threshold,
            f.verdict(),
            b.error_cell(),
            mark(b),
            b.max_abs_cell(),
            b.threshold,
            b.verdict(),
            [&f.note, &b.note]
                .iter()
                .filter(|n| !n.is_empty())
                .map(|n| format!("  ({n})"))
                .collect::<String>()
        );
    }
    w!(o, "");
    w!(
        o,
        "errors are rel_l2 against the truth; † = relative to the sum of the terms' magnitudes"
    );
    // failing tensors: (non-finite, other failures)
    let failing = |rows: &[Row]| -> (Vec<String>, Vec<String>) {
        let names = |nf: bool| {
            rows.iter()
                .filter(|r| !r.pass && r.non_finite == nf)
                .map(|r| r.tensor.clone())
                .collect()
        };
        (names(true), names(false))
    };
    if ok {
        w!(o, "PASS: every result in the file is within its threshold");
    } else {
        for (whose, rows) in [
            ("the file's".to_string(), &rep.file_rows),
            (format!("our {}'s", rep.backend), &rep.backend_rows),
        ] {
            let (non_finite, failed) = failing(rows);
            if !non_finite.is_empty() {
                w!(
                    o,
                    "FAIL: {whose} {} hold(s) NaN or infinite values (see the notes)",
                    non_finite.join(", ")
                );
            }
            if !failed.is_empty() {
                w!(
                    o,
                    "FAIL: {whose} {} exceed(s) the threshold",
                    failed.join(", ")
                );
            }
        }
    }
    super::emit(&o);
    Ok(ok)
}
