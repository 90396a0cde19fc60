//! `ssd-verify export FILE.npz`: writes a generated problem (docs/design.md §4.10 keys) with its
//! seeds and the float64 results: `out`, `final_states` from the literal recurrence, and every
//! gradient from `ssd_recurrent_bwd` when `ssd-reference` has it.

use super::args::{positive, Flag, Matches, Spec};
use super::CliError;
use crate::gen::{random_array, DKind, ProblemSpec};
use crate::matrix::report::{json_str, rows_json};
use crate::matrix::{gradient_tensors, truth};
use crate::problem_file::ProblemFile;
use ndarray::Ix4;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Arguments of `export`.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportArgs {
    /// The file to write.
    pub path: PathBuf,
    /// b, l, h, p, g, n.
    pub shape: [usize; 6],
    /// Q.
    pub chunk: usize,
    /// Seed of the values.
    pub seed: u64,
    /// Options on (names as in the usage text).
    pub options: Vec<String>,
    /// `--dt-limit LO,HI`: `dt_limit = (LO, HI)` (implies the `dt_limit` option, whose default
    /// limits are (0.002, 0.2)).
    pub dt_limit: Option<(f64, f64)>,
}

/// The option names `--options` accepts.
pub const OPTION_NAMES: [&str; 11] = [
    "D",
    "D_head",
    "z",
    "dt_bias",
    "softplus",
    "dt_limit",
    "initial_states",
    "seq_idx",
    "dfinal_states",
    "all",
    "none",
];

/// `export`'s flags and usage.
pub static SPEC: Spec = Spec {
    name: "export",
    usage: concat!("usage:\n", export_usage!(), usage_footer!()),
    flags: &[
        Flag::value("--shape"),
        Flag::value("--chunk"),
        Flag::value("--seed"),
        Flag::repeated("--options"),
        Flag::value("--dt-limit"),
    ],
};

/// Converts the parsed arguments of `export` ([`SPEC`]).
pub fn parse(m: &Matches) -> Result<ExportArgs, CliError> {
    let mut a = ExportArgs {
        path: PathBuf::new(),
        shape: [2, 128, 4, 16, 2, 16],
        chunk: 32,
        seed: 0,
        options: Vec::new(),
        dt_limit: None,
    };
    if let Some(s) = m.get("--shape", "six positive sizes b,l,h,p,g,n", |v| {
        let s: Vec<usize> = v
            .split(',')
            .map(|x| x.trim().parse::<usize>())
            .collect::<Result<_, _>>()
            .ok()?;
        <[usize; 6]>::try_from(s).ok().filter(|s| !s.contains(&0))
    })? {
        a.shape = s;
    }
    if let Some(q) = m.get("--chunk", "a positive integer", positive)? {
        a.chunk = q;
    }
    if let Some(seed) = m.get("--seed", "an integer", |v| v.parse().ok())? {
        a.seed = seed;
    }
    for v in m.all("--options") {
        for o in v.split(',').map(str::trim).filter(|o| !o.is_empty()) {
            if !OPTION_NAMES.contains(&o) {
                return Err(m.error(format!(
                    "--options: unknown option `{o}` (one of: {})",
                    OPTION_NAMES.join(" ")
                )));
            }
            a.options.push(o.to_string());
        }
    }
    a.dt_limit = m.get(
        "--dt-limit",
        "LO,HI with 0 <= LO < HI, LO finite, HI finite or inf",
        parse_dt_limit,
    )?;
    a.path = m.one_positional("a FILE.npz to write")?.into();
    let [_, _, h, _, g, _] = a.shape;
    if h % g != 0 {
        return Err(m.error(format!("--shape: g = {g} must divide h = {h}")));
    }
    Ok(a)
}

/// `LO,HI` with `0 ≤ LO < HI`, LO finite, HI finite or `inf`; `None` otherwise.
fn parse_dt_limit(v: &str) -> Option<(f64, f64)> {
    let (lo, hi) = v.split_once(',')?;
    let lo: f64 = lo.trim().parse().ok()?;
    let hi: f64 = hi.trim().parse().ok()?;
    (lo.is_finite() && lo >= 0.0 && hi > lo).then_some((lo, hi))
}

/// The spec and whether a `dfinal_states` seed is wanted.
pub fn spec_of(a: &ExportArgs) -> (ProblemSpec, bool) {
    let [b, l, h, p, g, n] = a.shape;
    let mut s = ProblemSpec::plain(b, l, h, p, g, n, a.chunk).seed(a.seed);
    let mut dfinal = false;
    for o in &a.options {
        match o.as_str() {
            "D" => s.d = DKind::PerChannel,
            "D_head" => s.d = DKind::PerHead,
            "z" => s.z = true,
            "dt_bias" => s.dt_bias = true,
            "softplus" => s.options.dt_softplus = true,
            "dt_limit" => s.options.dt_limit = (0.002, 0.2),
            "initial_states" => s.initial_states = true,
            "seq_idx" => s.seq_idx = true,
            "dfinal_states" => dfinal = true,
            "all" => {
                s = s.all_options();
                dfinal = true;
            }
            _ => {}
        }
    }
    if let Some(limit) = a.dt_limit {
        s.options.dt_limit = limit;
    }
    (s, dfinal)
}

/// Builds the problem file (inputs, seeds, float64 results).
pub fn build(a: &ExportArgs) -> Result<ProblemFile, ssd_reference::SsdError> {
    let (spec, dfinal) = spec_of(a);
    let problem = spec.build();
    let d = problem.dims();
    let dout = random_array(&[d.batch, d.seqlen, d.nheads, d.headdim], a.seed ^ 0xD0)
        .into_dimensionality::<Ix4>()
        .expect("4-d");
    let dfinal_states = dfinal.then(|| {
        random_array(&[d.batch, d.nheads, d.headdim, d.dstate], a.seed ^ 0xDF)
            .into_dimensionality::<Ix4>()
            .expect("4-d")
    });
    let t = truth(&problem, Some(&dout), dfinal_states.as_ref())?;
    let mut results = BTreeMap::new();
    results.insert("out".to_string(), t.forward.out.into_dyn());
    results.insert(
        "final_states".to_string(),
        t.forward.final_states.into_dyn(),
    );
    if let Some(g) = &t.gradients {
        for (k, v) in gradient_tensors(g) {
            results.insert(k.to_string(), v);
        }
    }
    Ok(ProblemFile {
        problem,
        dout: Some(dout),
        dfinal_states,
        results,
    })
}

/// The command.
pub fn run(a: &ExportArgs, json: bool) -> Result<bool, CliError> {
    let pf = build(a)?;
    pf.write(&a.path)?;
    let arrays = pf.to_arrays();
    let mut o = String::new();
    if json {
        w!(
            o,
            "{}",
            rows_json(arrays.iter().map(|(k, v)| {
                let (dtype, shape) = match v {
                    crate::npz::NpyOut::F64(x) => ("float64", x.shape().to_vec()),
                    crate::npz::NpyOut::I32(x) => ("int32", x.shape().to_vec()),
                    crate::npz::NpyOut::I64(x) => ("int64", x.shape().to_vec()),
                    crate::npz::NpyOut::Bool(x) => ("bool", x.shape().to_vec()),
                };
                format!(
                    "{{\"file\":{},\"key\":{},\"dtype\":\"{dtype}\",\"shape\":{:?}}}",
                    json_str(&a.path.display().to_string()),
                    json_str(k),
                    shape
                )
            }))
        );
    } else {
        w!(
            o,
            "wrote {}: {}",
            a.path.display(),
            super::check::describe(&pf.problem)
        );
        w!(
            o,
            "  keys: {}",
            arrays.keys().cloned().collect::<Vec<_>>().join(" ")
        );
        if !pf.results.contains_key("dx") {
            w!(
                o,
                "  (no gradients: ssd-reference has no float64 backward yet)"
            );
        }
    }
    super::emit(&o);
    Ok(true)
}
