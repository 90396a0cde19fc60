//! SSD problems in `.npz` (docs/design.md §4.10): keys are `mamba_chunk_scan_combined`'s argument
//! names (`x dt A B C D z dt_bias initial_states seq_idx chunk_size dt_softplus dt_min dt_max`),
//! seeds `dout dfinal_states`, results `out final_states dx ddt dA dB dC dD dz ddt_bias
//! dinitial_states`. Absent optional keys mean the option is off.

use crate::npz::{NpyArray, NpyOut};
use ndarray::{ArrayD, Dimension, IxDyn};
use ssd_reference::{Options, Problem, SsdError};
use std::collections::BTreeMap;

/// Names of the result tensors a file may hold, in report order.
pub const RESULT_KEYS: [&str; 11] = [
    "out",
    "final_states",
    "dx",
    "ddt",
    "dA",
    "dB",
    "dC",
    "dD",
    "dz",
    "ddt_bias",
    "dinitial_states",
];

/// Every key a problem file may hold.
pub const KNOWN_KEYS: [&str; 27] = [
    "x",
    "dt",
    "A",
    "B",
    "C",
    "D",
    "z",
    "dt_bias",
    "initial_states",
    "seq_idx",
    "chunk_size",
    "dt_softplus",
    "dt_min",
    "dt_max",
    "dout",
    "dfinal_states",
    "out",
    "final_states",
    "dx",
    "ddt",
    "dA",
    "dB",
    "dC",
    "dD",
    "dz",
    "ddt_bias",
    "dinitial_states",
];

/// A problem read from (or to be written to) a file: inputs, seeds and any results.
#[derive(Debug, Clone)]
pub struct ProblemFile {
    /// Inputs and options.
    pub problem: Problem<f64>,
    /// Seed of the backward, (b, l, h, p).
    pub dout: Option<ndarray::Array4<f64>>,
    /// Optional seed on the final states, (b, h, p, n).
    pub dfinal_states: Option<ndarray::Array4<f64>>,
    /// Results present in the file, by key.
    pub results: BTreeMap<String, ArrayD<f64>>,
}

fn npz_err(key: &str, message: impl Into<String>) -> SsdError {
    SsdError::Npz {
        key: Some(key.to_string()),
        message: message.into(),
    }
}

fn float<D: Dimension>(
    map: &BTreeMap<String, NpyArray>,
    key: &str,
    ndim: usize,
) -> Result<Option<ndarray::Array<f64, D>>, SsdError> {
    match map.get(key) {
        None => Ok(None),
        Some(NpyArray::Int(_)) => Err(npz_err(key, "expected a float array, found integers")),
        Some(NpyArray::Float(a)) => {
            if a.ndim() != ndim {
                return Err(npz_err(
                    key,
                    format!("expected {ndim} dimensions, found shape {:?}", a.shape()),
                ));
            }
            Ok(Some(
                a.clone()
                    .into_dimensionality::<D>()
                    .map_err(|e| npz_err(key, e.to_string()))?,
            ))
        }
    }
}

fn required<T>(v: Option<T>, key: &str) -> Result<T, SsdError> {
    v.ok_or_else(|| npz_err(key, "required key is missing"))
}

fn scalar_f64(map: &BTreeMap<String, NpyArray>, key: &str) -> Result<Option<f64>, SsdError> {
    match map.get(key) {
        None => Ok(None),
        Some(a) if !a.shape().is_empty() && a.shape().iter().product::<usize>() != 1 => {
            Err(npz_err(
                key,
                format!("expected a scalar, found shape {:?}", a.shape()),
            ))
        }
        Some(NpyArray::Float(a)) => Ok(a.iter().next().copied()),
        Some(NpyArray::Int(a)) => Ok(a.iter().next().map(|&v| v as f64)),
    }
}

fn scalar_int(map: &BTreeMap<String, NpyArray>, key: &str) -> Result<Option<i64>, SsdError> {
    match map.get(key) {
        None => Ok(None),
        Some(a) if !a.shape().is_empty() && a.shape().iter().product::<usize>() != 1 => {
            Err(npz_err(
                key,
                format!("expected a scalar, found shape {:?}", a.shape()),
            ))
        }
        Some(NpyArray::Int(a)) => Ok(a.iter().next().copied()),
        Some(NpyArray::Float(_)) => Err(npz_err(key, "expected an integer, found a float")),
    }
}

/// The known key closest to a misnamed one (same letters ignoring case and `_`, or at most two
/// edits away), to suggest in the error.
fn closest_key(k: &str) -> Option<&'static str> {
    let norm = |s: &str| s.to_ascii_lowercase().replace('_', "");
    if let Some(c) = KNOWN_KEYS.iter().find(|c| norm(c) == norm(k)) {
        return Some(c);
    }
    let dist = |a: &str, b: &str| {
        let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
        let mut row: Vec<usize> = (0..=b.len()).collect();
        for i in 1..=a.len() {
            let mut prev = row[0];
            row[0] = i;
            for j in 1..=b.len() {
                let cur = row[j];
                row[j] = (row[j] + 1)
                    .min(row[j - 1] + 1)
                    .min(prev + usize::from(a[i - 1] != b[j - 1]));
                prev = cur;
            }
        }
        row[b.len()]
    };
    KNOWN_KEYS
        .iter()
        .map(|c| (dist(c, k), *c))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, c)| c)
}

impl ProblemFile {
    /// Builds the problem from arrays read by [`crate::npz::read_npz`]. Unknown keys are an
    /// error (a misspelt key would otherwise silently switch an option off).
    pub fn from_arrays(map: &BTreeMap<String, NpyArray>) -> Result<Self, SsdError> {
        for k in map.keys() {
            if !KNOWN_KEYS.contains(&k.as_str()) {
                let hint = closest_key(k)
                    .map(|c| format!(" (did you mean `{c}`?)"))
                    .unwrap_or_default();
                return Err(npz_err(
                    k,
                    format!(
                        "unknown key{hint}; expected some of: {}",
                        KNOWN_KEYS.join(" ")
                    ),
                ));
            }
        }
        let seq_idx = match map.get("seq_idx") {
            None => None,
            Some(NpyArray::Float(_)) => {
                return Err(npz_err("seq_idx", "expected integers, found floats"))
            }
            Some(NpyArray::Int(a)) => {
                let a2 = a
                    .clone()
                    .into_dimensionality::<ndarray::Ix2>()
                    .map_err(|_| {
                        npz_err("seq_idx", format!("expected (b, l), found {:?}", a.shape()))
                    })?;
                let mut out = ndarray::Array2::<i32>::zeros(a2.dim());
                for (o, &v) in out.iter_mut().zip(a2.iter()) {
                    *o = i32::try_from(v)
                        .map_err(|_| npz_err("seq_idx", format!("{v} does not fit in i32")))?;
                }
                Some(out)
            }
        };
        let chunk_size = required(scalar_int(map, "chunk_size")?, "chunk_size")?;
        if chunk_size < 0 {
            return Err(npz_err("chunk_size", "must be positive"));
        }
        let dt_softplus = scalar_int(map, "dt_softplus")?.unwrap_or(0);
        if !(dt_softplus == 0 || dt_softplus == 1) {
            return Err(npz_err("dt_softplus", "must be a bool (or 0/1)"));
        }
        let dt_min = scalar_f64(map, "dt_min")?.unwrap_or(0.0);
        let dt_max = scalar_f64(map, "dt_max")?.unwrap_or(f64::INFINITY);
        let d = match map.get("D") {
            None => None,
            Some(NpyArray::Int(_)) => return Err(npz_err("D", "expected floats")),
            Some(NpyArray::Float(a)) => Some(a.clone()),
        };
        let problem = Problem {
            x: required(float(map, "x", 4)?, "x")?,
            dt: required(float(map, "dt", 3)?, "dt")?,
            a: required(float(map, "A", 1)?, "A")?,
            b: required(float(map, "B", 4)?, "B")?,
            c: required(float(map, "C", 4)?, "C")?,
            d,
            z: float(map, "z", 4)?,
            dt_bias: float(map, "dt_bias", 1)?,
            initial_states: float(map, "initial_states", 4)?,
            seq_idx,
            options: Options {
                chunk_size: chunk_size as usize,
                dt_softplus: dt_softplus == 1,
                dt_limit: (dt_min, dt_max),
            },
        };
        let mut results = BTreeMap::new();
        for k in RESULT_KEYS {
            match map.get(k) {
                None => {}
                Some(NpyArray::Int(_)) => return Err(npz_err(k, "expected floats")),
                Some(NpyArray::Float(a)) => {
                    results.insert(k.to_string(), a.clone());
                }
            }
        }
        Ok(ProblemFile {
            problem,
            dout: float(map, "dout", 4)?,
            dfinal_states: float(map, "dfinal_states", 4)?,
            results,
        })
    }

    /// Reads a problem file.
    pub fn read(path: &std::path::Path) -> Result<Self, SsdError> {
        Self::from_arrays(&crate::npz::read_npz(path)?)
    }

    /// The arrays to write for this problem (inputs, options, seeds, results).
    pub fn to_arrays(&self) -> BTreeMap<String, NpyOut> {
        let p = &self.problem;
        let mut m = BTreeMap::new();
        let f = |a: ArrayD<f64>| NpyOut::F64(a);
        m.insert("x".into(), f(p.x.clone().into_dyn()));
        m.insert("dt".into(), f(p.dt.clone().into_dyn()));
        m.insert("A".into(), f(p.a.clone().into_dyn()));
        m.insert("B".into(), f(p.b.clone().into_dyn()));
        m.insert("C".into(), f(p.c.clone().into_dyn()));
        if let Some(d) = &p.d {
            m.insert("D".into(), f(d.clone()));
        }
        if let Some(v) = &p.z {
            m.insert("z".into(), f(v.clone().into_dyn()));
        }
        if let Some(v) = &p.dt_bias {
            m.insert("dt_bias".into(), f(v.clone().into_dyn()));
        }
        if let Some(v) = &p.initial_states {
            m.insert("initial_states".into(), f(v.clone().into_dyn()));
        }
        if let Some(v) = &p.seq_idx {
            m.insert("seq_idx".into(), NpyOut::I32(v.clone().into_dyn()));
        }
        m.insert(
            "chunk_size".into(),
            NpyOut::I64(ArrayD::from_elem(IxDyn(&[]), p.options.chunk_size as i64)),
        );
        m.insert(
            "dt_softplus".into(),
            NpyOut::Bool(ArrayD::from_elem(IxDyn(&[]), p.options.dt_softplus)),
        );
        m.insert(
            "dt_min".into(),
            f(ArrayD::from_elem(IxDyn(&[]), p.options.dt_limit.0)),
        );
        m.insert(
            "dt_max".into(),
            f(ArrayD::from_elem(IxDyn(&[]), p.options.dt_limit.1)),
        );
        if let Some(v) = &self.dout {
            m.insert("dout".into(), f(v.clone().into_dyn()));
        }
        if let Some(v) = &self.dfinal_states {
            m.insert("dfinal_states".into(), f(v.clone().into_dyn()));
        }
        for (k, v) in &self.results {
            m.insert(k.clone(), f(v.clone()));
        }
        m
    }

    /// Writes the problem file.
    pub fn write(&self, path: &std::path::Path) -> Result<(), SsdError> {
        crate::npz::write_npz(path, &self.to_arrays())
    }
}
