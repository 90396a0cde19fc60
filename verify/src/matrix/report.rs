//! Verification rows: one measured error of one tensor of one kernel on one backend, printed as
//! a table or as JSON (`--json`: one array of row objects with `kernel`, `backend`, `tensor`,
//! `rel_l2`, `max_abs`, `threshold`, `pass`, and `metric`, `case`, `note`).
//!
//! Every tensor compared is scanned for NaN and infinities first ([`crate::finite`]): a
//! non-finite result (or truth) fails its row with a note naming the tensor, the count and the
//! multi-index of the first one, instead of an error figure that cannot be measured.

use crate::finite;
use crate::tolerance::{max_abs, passes, rel_l2, rel_to_magnitude};
use ndarray::ArrayD;

/// How an error is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// `‖got − want‖₂ / ‖want‖₂` over the whole tensor.
    RelL2,
    /// For per-head scalars reduced over many terms (`dA`, `ddt_bias`, `dD`, …):
    /// `max_i |got_i − want_i| / Σ|terms_i|` (see [`crate::tolerance::rel_to_magnitude`]).
    RelToMagnitude,
}

impl Metric {
    /// The name in JSON.
    pub fn name(self) -> &'static str {
        match self {
            Metric::RelL2 => "rel_l2",
            Metric::RelToMagnitude => "rel_to_magnitude",
        }
    }
}

/// One verification row.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Kernel or op (`chunk_scan`, `mamba_chunk_scan_combined_bwd`, …).
    pub kernel: String,
    /// Backend (`reference`, `cpu`, `cuda`, or `file` for results read from a file).
    pub backend: String,
    /// Tensor compared (`out`, `dx`, `states_bchpn`, …).
    pub tensor: String,
    /// How `rel_l2` was measured.
    pub metric: Metric,
    /// The relative error (by `metric`); NaN when nothing could be measured.
    pub rel_l2: f64,
    /// `max |got − want|`.
    pub max_abs: f64,
    /// The threshold it is judged by.
    pub threshold: f64,
    /// Whether it passed.
    pub pass: bool,
    /// The problem of the worst case (`P1`, …, or the file name).
    pub case: String,
    /// Why it failed to run, or what the error is measured against; empty if nothing to say.
    pub note: String,
    /// A compared tensor held NaN or an infinity (`note` says which and where): the row fails
    /// and its error is not measured.
    pub non_finite: bool,
}

/// The notes on the non-finite values among the tensors of one comparison: `got` (the result,
/// labelled by its tensor name), `want` (the float64 truth) and the magnitudes `Σ|terms|` (also
/// from the float64 reference); `None` when all are finite.
pub fn non_finite_note(
    kernel: &str,
    tensor: &str,
    got: &ArrayD<f64>,
    want: &ArrayD<f64>,
    magnitude: Option<&ArrayD<f64>>,
) -> Option<String> {
    let mut notes = Vec::new();
    if let Some(m) = finite::message(kernel, tensor, tensor, got) {
        notes.push(m);
    }
    let reference = "(a bug of the float64 reference, or inputs past its range)";
    if let Some(m) = finite::message(kernel, tensor, &format!("float64 truth of {tensor}"), want) {
        notes.push(format!("{m} {reference}"));
    }
    if let Some(m) =
        magnitude.and_then(|a| finite::message(kernel, tensor, &format!("Σ|terms| of {tensor}"), a))
    {
        notes.push(format!("{m} {reference}"));
    }
    (!notes.is_empty()).then(|| notes.join("; "))
}

impl Row {
    /// A row measured by comparing `got` with `want` (and judged by `threshold`). With
    /// `magnitude` (the shape of `want`: `Σ|terms|` of each entry) the metric is
    /// [`Metric::RelToMagnitude`].
    #[allow(clippy::too_many_arguments)]
    pub fn compare(
        kernel: &str,
        backend: &str,
        tensor: &str,
        case: &str,
        got: &ArrayD<f64>,
        want: &ArrayD<f64>,
        magnitude: Option<&ArrayD<f64>>,
        threshold: f64,
    ) -> Row {
        if got.shape() != want.shape() {
            return Row::failed(
                kernel,
                backend,
                tensor,
                case,
                threshold,
                format!(
                    "shape {:?} but the reference has {:?}",
                    got.shape(),
                    want.shape()
                ),
            );
        }
        if let Some(note) = non_finite_note(kernel, tensor, got, want, magnitude) {
            return Row::non_finite(kernel, backend, tensor, case, threshold, note);
        }
        let (metric, err) = match magnitude {
            Some(m) if m.shape() == want.shape() => {
                let mut e = 0.0f64;
                for ((g, w), m) in got.iter().zip(want.iter()).zip(m.iter()) {
                    let r = rel_to_magnitude(*g, *w, *m);
                    if r.is_nan() || r > e {
                        e = r;
                    }
                    if e.is_nan() {
                        break;
                    }
                }
                (Metric::RelToMagnitude, e)
            }
            _ => (Metric::RelL2, rel_l2(got, want)),
        };
        Row {
            kernel: kernel.into(),
            backend: backend.into(),
            tensor: tensor.into(),
            metric,
            rel_l2: err,
            max_abs: max_abs(got, want),
            threshold,
            pass: passes(err, threshold),
            case: case.into(),
            note: String::new(),
            non_finite: false,
        }
    }

    /// A row whose result (or truth) holds NaN or an infinity, `note` saying which tensor and
    /// where ([`non_finite_note`]): never passes, its error is not measured.
    pub fn non_finite(
        kernel: &str,
        backend: &str,
        tensor: &str,
        case: &str,
        threshold: f64,
        note: impl Into<String>,
    ) -> Row {
        Row {
            non_finite: true,
            ..Row::failed(kernel, backend, tensor, case, threshold, note)
        }
    }

    /// A row that could not be measured (the backend failed or lacks the kernel): never passes.
    pub fn failed(
        kernel: &str,
        backend: &str,
        tensor: &str,
        case: &str,
        threshold: f64,
        note: impl Into<String>,
    ) -> Row {
        Row {
            kernel: kernel.into(),
            backend: backend.into(),
            tensor: tensor.into(),
            metric: Metric::RelL2,
            rel_l2: f64::NAN,
            max_abs: f64::NAN,
            threshold,
            pass: false,
            case: case.into(),
            note: note.into(),
            non_finite: false,
        }
    }

    /// The row as a JSON object.
    pub fn to_json(&self) -> String {
        format!(
            "{{\"kernel\":{},\"backend\":{},\"tensor\":{},\"rel_l2\":{},\"max_abs\":{},\"threshold\":{},\"pass\":{},\"metric\":{},\"case\":{},\"note\":{}}}",
            json_str(&self.kernel),
            json_str(&self.backend),
            json_str(&self.tensor),
            json_num(self.rel_l2),
            json_num(self.max_abs),
            json_num(self.threshold),
            self.pass,
            json_str(self.metric.name()),
            json_str(&self.case),
            json_str(&self.note),
        )
    }

    /// The error as a table cell: `non-finite` where a compared tensor held NaN or an
    /// infinity, `-` where nothing was measured.
    pub fn error_cell(&self) -> String {
        self.cell(self.rel_l2)
    }

    /// `max_abs` as a table cell (as [`Row::error_cell`], but `NaN/inf` for a non-finite
    /// result, which fits the narrower column).
    pub fn max_abs_cell(&self) -> String {
        if self.non_finite {
            return "NaN/inf".into();
        }
        self.cell(self.max_abs)
    }

    fn cell(&self, v: f64) -> String {
        if self.non_finite {
            "non-finite".into()
        } else if v.is_nan() {
            "-".into()
        } else {
            format!("{v:.2e}")
        }
    }

    /// The result column: PASS, FAIL (also for non-finite values), or MISSING when nothing
    /// could be measured.
    pub fn verdict(&self) -> &'static str {
        if self.pass {
            "PASS"
        } else if self.non_finite {
            "FAIL"
        } else if self.rel_l2.is_nan() && !self.note.is_empty() {
            "MISSING"
        } else {
            "FAIL"
        }
    }
}

/// A JSON number (`null` for NaN and infinities, which JSON cannot hold).
pub fn json_num(v: f64) -> String {
    if v.is_finite() {
        format!("{v:e}")
    } else {
        "null".into()
    }
}

/// A JSON string literal.
pub fn json_str(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for ch in s.chars() {
        match ch {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            '\r' => o.push_str("\\r"),
            '\t' => o.push_str("\\t"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

/// A JSON array of rows, one object per line.
pub fn rows_json<I: IntoIterator<Item = String>>(objects: I) -> String {
    let items: Vec<String> = objects.into_iter().collect();
    if items.is_empty() {
        return "[]".into();
    }
    format!("[\n{}\n]", items.join(",\n"))
}

/// Merges rows of the same (kernel, backend, tensor) into one, keeping the worst: a failure
/// over a pass, then non-finite values over any other failure, then the larger error (NaN
/// counts as the largest); `max_abs` is the largest over all. Order is that of first
/// appearance.
pub fn worst_per_tensor(rows: Vec<Row>) -> Vec<Row> {
    let mut out: Vec<Row> = Vec::new();
    for r in rows {
        match out
            .iter_mut()
            .find(|o| o.kernel == r.kernel && o.backend == r.backend && o.tensor == r.tensor)
        {
            None => out.push(r),
            Some(o) => {
                let worse = match (o.pass, r.pass) {
                    (true, false) => true,
                    (false, true) => false,
                    _ if o.non_finite != r.non_finite => r.non_finite,
                    _ => {
                        r.rel_l2.is_nan() && !o.rel_l2.is_nan()
                            || (!o.rel_l2.is_nan() && r.rel_l2 > o.rel_l2)
                    }
                };
                let m = if o.max_abs.is_nan() || r.max_abs.is_nan() {
                    f64::NAN
                } else {
                    o.max_abs.max(r.max_abs)
                };
                if worse {
                    *o = r;
                }
                o.max_abs = m;
            }
        }
    }
    out
}

/// The rows as an aligned table (a `†` after the error marks [`Metric::RelToMagnitude`]).
pub fn table(rows: &[Row]) -> String {
    let kw = rows
        .iter()
        .map(|r| r.kernel.len())
        .max()
        .unwrap_or(6)
        .max(6);
    let bw = rows
        .iter()
        .map(|r| r.backend.len())
        .max()
        .unwrap_or(7)
        .max(7);
    let tw = rows
        .iter()
        .map(|r| r.tensor.len())
        .max()
        .unwrap_or(6)
        .max(6);
    let mut s = format!(
        "{:<kw$}  {:<bw$}  {:<tw$}  {:>10}  {:>10}  {:>9}  {:<7}  case\n",
        "kernel", "backend", "tensor", "rel_l2", "max_abs", "threshold", "result"
    );
    for r in rows {
        let dagger = if r.metric == Metric::RelToMagnitude {
            "†"
        } else {
            " "
        };
        s.push_str(&format!(
            "{:<kw$}  {:<bw$}  {:<tw$}  {:>10}{dagger} {:>10}  {:>9.0e}  {:<7}  {}{}\n",
            r.kernel,
            r.backend,
            r.tensor,
            r.error_cell(),
            r.max_abs_cell(),
            r.threshold,
            r.verdict(),
            r.case,
            if r.note.is_empty() {
                String::new()
            } else {
                format!("  ({})", r.note)
            }
        ));
    }
    s
}
