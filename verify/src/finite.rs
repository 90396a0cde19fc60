//! Non-finite values (NaN, ±∞) in a result tensor: how many there are and where the first one
//! (in row-major order) sits, named by the tensor's axes where its layout is known.
//!
//! A backend that returns NaN must fail with a message saying which tensor and where, not with
//! an error figure that cannot be measured:
//!
//! ```text
//! out: 3 non-finite values, first NaN at (b, l, h, p) = (0, 1234, 3, 17)
//! ```
//!
//! Layouts are those of docs/design.md §2.1 (`out dx dz` (b, l, h, p), `final_states` (b, h, p, n),
//! `ddt` (b, l, h), `dB dC` (b, l, g, n), `dA ddt_bias` (h), `dD` (h) or (h, p)); per-kernel
//! tensors carry their layout as a name suffix (`states_bchpn`, `dda_intra_bhcq`); anything else is
//! given by plain indices.

use ndarray::{ArrayBase, Data, Dimension};

/// The non-finite values of one tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct NonFinite {
    /// How many entries are NaN or infinite.
    pub count: usize,
    /// The multi-index of the first one (in row-major order).
    pub index: Vec<usize>,
    /// Its value (NaN, +∞ or −∞), widened to f64.
    pub value: f64,
}

/// The non-finite values of `a` (any dimension, f32 or f64), or `None` when every entry is
/// finite.
pub fn scan<S, D, T>(a: &ArrayBase<S, D>) -> Option<NonFinite>
where
    S: Data<Elem = T>,
    D: Dimension,
    T: Copy + Into<f64>,
{
    let mut first = None;
    let mut count = 0;
    // `iter` visits in logical row-major order, whatever the memory layout.
    for (flat, &v) in a.iter().enumerate() {
        let v: f64 = v.into();
        if !v.is_finite() {
            first.get_or_insert((flat, v));
            count += 1;
        }
    }
    let (flat, value) = first?;
    Some(NonFinite {
        count,
        index: ssd_reference::validate::unravel(flat, a.shape()),
        value,
    })
}

/// `NaN`, `+inf` or `-inf` (finite values print as themselves).
pub fn value_name(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+inf".into()
    } else if v == f64::NEG_INFINITY {
        "-inf".into()
    } else {
        format!("{v}")
    }
}

fn axis(c: char) -> Option<&'static str> {
    Some(match c {
        'b' => "b",
        'l' => "l",
        'h' => "h",
        'p' => "p",
        'n' => "n",
        'g' => "g",
        'c' => "c",
        'q' => "q",
        _ => return None,
    })
}

/// The axis names of `tensor`, a result of `kernel` (a kernel or op name), when its layout is
/// known and has `ndim` axes; `None` otherwise (plain indices then).
pub fn axis_names(kernel: &str, tensor: &str, ndim: usize) -> Option<Vec<&'static str>> {
    let v = |names: &[&'static str]| (names.len() == ndim).then(|| names.to_vec());
    if kernel.starts_with("rmsnorm_gated") {
        // `NormCase`: rows of `d` features
        return match tensor {
            "out" | "dx" | "dz" => v(&["row", "d"]),
            "dweight" => v(&["d"]),
            _ => None,
        };
    }
    if kernel.starts_with("swiglu") {
        // any shape
        return None;
    }
    let named = match tensor {
        "out" | "dx" | "dz" | "x" | "z" | "dout" | "y" | "dy" => v(&["b", "l", "h", "p"]),
        "final_states" | "initial_states" | "dinitial_states" | "dfinal_states" => {
            v(&["b", "h", "p", "n"])
        }
        "ddt" | "dt" => v(&["b", "l", "h"]),
        "dB" | "dC" | "B" | "C" => v(&["b", "l", "g", "n"]),
        "dA" | "A" | "ddt_bias" | "dt_bias" => v(&["h"]),
        "dD" | "D" | "dd" => v(&["h"]).or_else(|| v(&["h", "p"])),
        // the decode step's state pool
        "state" => v(&["pool", "h", "p", "n"]),
        // the A adjoint scattered to tokens (`ddA=intra+next+prev+chunk`)
        t if t.starts_with("ddA") => v(&["b", "l", "h"]),
        _ => None,
    };
    named.or_else(|| {
        // a shape suffix: `states_bchpn`, `dda_chunk_bhc`, `da_h`
        let (_, suffix) = tensor.rsplit_once('_')?;
        let names: Option<Vec<&'static str>> = suffix.chars().map(axis).collect();
        names.filter(|n| n.len() == ndim)
    })
}

/// `label: 3 non-finite values, first NaN at (b, l, h, p) = (0, 1234, 3, 17)` (plain indices
/// `(0, 1234, 3, 17)` without `axes`).
pub fn describe(label: &str, axes: Option<&[&str]>, nf: &NonFinite) -> String {
    let plural = if nf.count == 1 { "" } else { "s" };
    let head = format!("{label}: {} non-finite value{plural}", nf.count);
    let value = value_name(nf.value);
    let index = &nf.index;
    if index.is_empty() {
        return format!("{head}, {value}");
    }
    let list = |items: Vec<String>| format!("({})", items.join(", "));
    let at = list(index.iter().map(|i| i.to_string()).collect());
    match axes.filter(|a| a.len() == index.len()) {
        Some(a) => format!(
            "{head}, first {value} at {} = {at}",
            list(a.iter().map(|s| s.to_string()).collect())
        ),
        None => format!("{head}, first {value} at {at}"),
    }
}

/// The message for the non-finite values of `tensor` (a result of `kernel`, labelled `label`
/// in the message), or `None` when every entry is finite.
pub fn message<S, D, T>(
    kernel: &str,
    tensor: &str,
    label: &str,
    a: &ArrayBase<S, D>,
) -> Option<String>
where
    S: Data<Elem = T>,
    D: Dimension,
    T: Copy + Into<f64>,
{
    let nf = scan(a)?;
    let axes = axis_names(kernel, tensor, a.ndim());
    Some(describe(label, axes.as_deref(), &nf))
}
