//! The notebook run whole: every number the report and the figures show ([`Data::compute`]),
//! the figures ([`Data::render`]) and the summary on the console ([`Data::print_summary`]). The
//! binary `a_adjoint_flow` calls these and writes the report ([`super::report`]).

use super::{
    backend_flow, breakdown, chunk_sizes, duality_sweep, head_split, sequence_flow,
    stability_sweep, Backend, BackendFigure, BackendFlow, DualityFigure, DualitySweep, FlowSpec,
    HeadSplit, SequenceFigure, SequenceFlow, SplitFigure, StabilityFigure, StabilityRow,
    StabilitySpec, SHOWN_HEAD, UNIFORM_DT,
};
use crate::figure::{self, Figure};
use ssd_reference::SsdError;
use std::error::Error;
use std::path::Path;
use std::time::Instant;

/// File stem of the figure of section 1.
pub const SEQUENCE_STEM: &str = "a_adjoint_flow_sequence";
/// File stem of the figure of section 2.
pub const SPLIT_STEM: &str = "a_adjoint_flow_split";
/// File stem of the figure of section 3.
pub const DUALITY_STEM: &str = "a_adjoint_flow_duality";
/// File stem of the figure of section 4.
pub const STABILITY_STEM: &str = "a_adjoint_flow_stability";

/// File stem of the figure of section 5 for the backend `name`, the `i`-th one: its first word
/// in lower case, ASCII letters and digits only (`backend{i}` when none is left).
pub fn backend_stem(name: &str, i: usize) -> String {
    let s: String = name
        .split_whitespace()
        .next()
        .unwrap_or("backend")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect::<String>()
        .to_lowercase();
    let slug = if s.is_empty() {
        format!("backend{i}")
    } else {
        s
    };
    format!("a_adjoint_flow_backend_{slug}")
}

/// Wall-clock seconds of the steps of a run, in order.
pub type Times = Vec<(&'static str, f64)>;

/// Every number the report and the figures show.
#[derive(Debug)]
pub struct Data {
    /// Sizes and seed of the problem of sections 1, 2, 3 and 5.
    pub spec: FlowSpec,
    /// Section 1, every head.
    pub seq: Vec<SequenceFlow>,
    /// Section 2, every head.
    pub split: Vec<HeadSplit>,
    /// Section 3.
    pub duality: DualitySweep,
    /// Section 4 with every `Δ_t = UNIFORM_DT`.
    pub stab_uniform: Vec<StabilityRow>,
    /// Section 4 with `Δ_t` drawn as upstream.
    pub stab_upstream: Vec<StabilityRow>,
    /// Section 5, one per backend.
    pub flows: Vec<Result<BackendFlow, SsdError>>,
    /// The backends that ran, in order.
    pub backend_names: Vec<String>,
    /// A line for each backend that did not.
    pub backend_notes: Vec<String>,
}

impl Data {
    /// Runs sections 1 to 5 on the problem of `spec`, sections 4 and 5 also on `backends`
    /// (`backend_notes` says which are missing); appends the seconds of each step to `times`.
    pub fn compute(
        spec: FlowSpec,
        backends: &[Backend<'_>],
        backend_notes: Vec<String>,
        times: &mut Times,
    ) -> Result<Data, SsdError> {
        let fp = spec.build();
        let mut timed =
            |name: &'static str, t: Instant| times.push((name, t.elapsed().as_secs_f64()));

        let t = Instant::now();
        let seq = sequence_flow(&fp)?;
        timed("1 sequence", t);
        let t = Instant::now();
        let split = head_split(&fp)?;
        timed("2 split + finite differences", t);
        let t = Instant::now();
        let duality = duality_sweep(&fp, &chunk_sizes(spec.seqlen))?;
        timed("3 duality sweep", t);
        let t = Instant::now();
        let stab_uniform = stability_sweep(
            &StabilitySpec {
                uniform_dt: Some(UNIFORM_DT),
                ..StabilitySpec::full()
            },
            backends,
        )?;
        let stab_upstream = stability_sweep(&StabilitySpec::full(), backends)?;
        timed("4 stability sweeps", t);
        let t = Instant::now();
        let flows: Vec<Result<BackendFlow, SsdError>> =
            backends.iter().map(|b| backend_flow(&fp, b)).collect();
        timed("5 backends", t);

        Ok(Data {
            spec,
            seq,
            split,
            duality,
            stab_uniform,
            stab_upstream,
            flows,
            backend_names: backends.iter().map(|b| b.name.clone()).collect(),
            backend_notes,
        })
    }

    /// Prints the headline numbers of every section.
    pub fn print_summary(&self) {
        for s in &self.seq {
            println!(
                "head {} (A = {:.3}): max |Σ four − recurrent| / max|recurrent| = {:.2e}",
                s.head, s.a, s.max_deviation
            );
        }
        for h in &self.split {
            println!(
                "head {}: dA split {:?}, sum {:.12}, FD {:.12}, |sum − FD|/|FD| = {:.2e}",
                h.head,
                h.by_kernel,
                h.sum,
                h.finite_difference,
                h.fd_error()
            );
        }
        println!(
            "duality: largest deviation of the total over Q = {:?}: {:.2e} of Σ|terms| ({:.2e} of |dA_h|)",
            self.duality
                .rows
                .iter()
                .map(|r| r.chunk_size)
                .collect::<Vec<_>>(),
            self.duality.max_deviation(),
            self.duality.max_relative_deviation()
        );
        for (l, k) in breakdown(&self.stab_uniform, 1e-4) {
            println!("closed form f32 (uniform Δ), l = {l}: error > 1e-4 from κ = {k:?}");
        }
        for f in self.flows.iter().flatten() {
            println!(
                "{}: rel_l2 intra/next/prev/chunk {:?}, sum {:.2e}",
                f.name, f.rel_l2, f.rel_l2_sum
            );
        }
    }

    /// Writes every figure to `dir` as SVG and PNG; returns their stems, in order.
    pub fn render(&self, dir: &Path) -> Result<Vec<String>, Box<dyn Error>> {
        let mut stems = Vec::new();
        let shown = &self.seq[SHOWN_HEAD];
        write(
            &SequenceFigure { flow: shown },
            dir,
            SEQUENCE_STEM,
            &mut stems,
        )?;
        let split = SplitFigure { heads: &self.split };
        write(&split, dir, SPLIT_STEM, &mut stems)?;
        let duality = DualityFigure {
            sweep: &self.duality,
            seqlen: self.spec.seqlen,
            a: self.seq.iter().map(|f| f.a).collect(),
        };
        write(&duality, dir, DUALITY_STEM, &mut stems)?;
        let stability = StabilityFigure {
            uniform: &self.stab_uniform,
            upstream: &self.stab_upstream,
            backends: &self.backend_names,
        };
        write(&stability, dir, STABILITY_STEM, &mut stems)?;
        for (i, f) in self.flows.iter().enumerate() {
            if let Ok(flow) = f {
                let fig = BackendFigure { truth: shown, flow };
                write(&fig, dir, &backend_stem(&flow.name, i), &mut stems)?;
            }
        }
        Ok(stems)
    }
}

/// Writes `fig` to `dir/stem.svg` and `dir/stem.png`, says so, and adds `stem` to `stems`.
fn write(
    fig: &impl Figure,
    dir: &Path,
    stem: &str,
    stems: &mut Vec<String>,
) -> Result<(), Box<dyn Error>> {
    let [svg, png] = figure::render(fig, dir, stem)?;
    println!("wrote {} and {}", svg.display(), png.display());
    stems.push(stem.to_string());
    Ok(())
}
