//! # Notebook: how the gradient of `A` flows through the backward kernels
//!
//! ```sh
//! cargo run --release -p ssd-notebooks --bin a_adjoint_flow
//! ```
//!
//! writes `notebooks/figures/a_adjoint_flow_*.{svg,png}` and the report
//! `notebooks/a_adjoint_flow.md` (the figures with the numbers behind them).
//!
//! `A_h` reaches the loss only through the per-step log decays `Δ_t A_h`, so
//! `dA_h = Σ_t ∂L/∂(Δ_t A_h) · Δ_t`. The chunked backward splits `∂L/∂(Δ_t A_h)` over four
//! kernels, one per path of the chunked forward (see `ssd_notebooks::a_adjoint_flow`). The
//! notebook shows, on one seeded problem (l = 1024, Q = 64, four heads with `A_h` from −1 to −16,
//! an initial state, and the loss `Σ out·dout + Σ final_states·dfinal_states`):
//!
//! 1. the four contributions along the sequence of one head, and their sum beside the per-step
//!    adjoint of the literal recurrence;
//! 2. `dA_h` split by kernel beside a finite difference of the float64 forward;
//! 3. duality through the gradient: the split moves as Q goes from 1 to l, the total does not;
//! 4. why `chunk_scan_bwd_ddacs_stable` exists: the closed form it replaces cancels
//!    catastrophically when the decay is strong;
//! 5. the same contributions from the f32 backends (CPU; CUDA where a device is present).
//!
//! Data come from the pure functions of `ssd_notebooks::a_adjoint_flow`; this file renders.

use plotters::coord::Shift;
use plotters::prelude::*;
use ssd_notebooks::a_adjoint_flow::{
    backend_flow, chunk_sizes, duality_sweep, head_split, sequence_flow, stability_sweep, Backend,
    BackendFlow, DualitySweep, FlowSpec, HeadSplit, SequenceFlow, StabilityRow, StabilitySpec,
    KERNELS,
};
use ssd_notebooks::figure::{self, DrawResult, Figure, PALETTE};
use ssd_reference::SsdError;
use std::error::Error;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The head whose sequence the figures show: A = −1, the longest memory, where all four paths
/// carry a visible share.
const SHOWN_HEAD: usize = 0;

/// Short names of the four producers, in `KERNELS` order.
const SHORT: [&str; 4] = ["intra", "next", "prev", "chunk"];

/// Uniform time step of the first stability sweep (the mean of upstream's Δ distribution).
const UNIFORM_DT: f64 = 0.03;

fn main() -> Result<(), Box<dyn Error>> {
    let start = Instant::now();
    // The report goes to notebooks/ and the figures to notebooks/figures/, or under
    // $SSD_NOTEBOOK_OUT when set (e.g. on a machine without this checkout).
    let dir = std::env::var_os("SSD_NOTEBOOK_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    let dir = dir.as_path();
    std::fs::create_dir_all(dir)?;
    let fig_dir = dir.join("figures");
    let font = figure::load_font();
    let (backends, backend_notes) = backends();
    for n in &backend_notes {
        println!("{n}");
    }

    let spec = FlowSpec::FULL;
    let fp = spec.build();
    let mut times = Vec::new();
    let mut timed = |name: &'static str, t: Instant| times.push((name, t.elapsed().as_secs_f64()));

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
        &backends,
    )?;
    let stab_upstream = stability_sweep(&StabilitySpec::full(), &backends)?;
    timed("4 stability sweeps", t);
    let t = Instant::now();
    let flows: Vec<Result<BackendFlow, SsdError>> =
        backends.iter().map(|b| backend_flow(&fp, b)).collect();
    timed("5 backends", t);

    let data = Data {
        spec,
        seq,
        split,
        duality,
        stab_uniform,
        stab_upstream,
        flows,
        backend_names: backends.iter().map(|b| b.name.clone()).collect(),
        backend_notes,
    };
    print_summary(&data);

    let t = Instant::now();
    let mut figures: Vec<(String, Option<PathBuf>)> = Vec::new();
    match &font {
        Some(path) => {
            println!("font: {}", path.display());
            let shown = &data.seq[SHOWN_HEAD];
            let mut out =
                |stem: &str, fig: &dyn Fn(&Path, &str) -> Result<[PathBuf; 2], Box<dyn Error>>| {
                    let r = fig(&fig_dir, stem)?;
                    println!("wrote {} and {}", r[0].display(), r[1].display());
                    figures.push((stem.to_string(), Some(r[1].clone())));
                    Ok::<(), Box<dyn Error>>(())
                };
            out("a_adjoint_flow_sequence", &|d, s| {
                figure::render(&SequenceFigure { flow: shown }, d, s)
            })?;
            out("a_adjoint_flow_split", &|d, s| {
                figure::render(&SplitFigure { heads: &data.split }, d, s)
            })?;
            out("a_adjoint_flow_duality", &|d, s| {
                figure::render(
                    &DualityFigure {
                        sweep: &data.duality,
                        seqlen: spec.seqlen,
                        a: data.seq.iter().map(|f| f.a).collect(),
                    },
                    d,
                    s,
                )
            })?;
            out("a_adjoint_flow_stability", &|d, s| {
                figure::render(
                    &StabilityFigure {
                        uniform: &data.stab_uniform,
                        upstream: &data.stab_upstream,
                        backends: &data.backend_names,
                    },
                    d,
                    s,
                )
            })?;
            for (i, f) in data.flows.iter().enumerate() {
                if let Ok(f) = f {
                    let stem = format!("a_adjoint_flow_backend_{}", slug(&f.name, i));
                    out(&stem, &|d, s| {
                        figure::render(
                            &BackendFigure {
                                truth: shown,
                                flow: f,
                            },
                            d,
                            s,
                        )
                    })?;
                }
            }
        }
        None => println!(
            "no TrueType font found (set SSD_NOTEBOOK_FONT to a .ttf): figures not rendered"
        ),
    }
    timed("rendering", t);
    let total = start.elapsed().as_secs_f64();
    let report = report(&data, &figures, font.is_some(), &times, total);
    let path = dir.join("a_adjoint_flow.md");
    std::fs::write(&path, report)?;
    println!("wrote {} in {total:.1} s", path.display());
    Ok(())
}

/// Every number the report and the figures show.
struct Data {
    spec: FlowSpec,
    seq: Vec<SequenceFlow>,
    split: Vec<HeadSplit>,
    duality: DualitySweep,
    stab_uniform: Vec<StabilityRow>,
    stab_upstream: Vec<StabilityRow>,
    flows: Vec<Result<BackendFlow, SsdError>>,
    backend_names: Vec<String>,
    backend_notes: Vec<String>,
}

/// The f32 backends present, and a line for each one that is not.
fn backends() -> (Vec<Backend<'static>>, Vec<String>) {
    let mut list = Vec::new();
    let mut notes = Vec::new();
    list.push(Backend {
        name: "CPU f32 (ssd-cpu)".to_string(),
        backward: Box::new(|p, dout, dfinal| {
            ssd_cpu::mamba_chunk_scan_combined_bwd(
                &p.inputs(),
                &p.options,
                dout,
                dfinal,
                ssd_cpu::Par::rayon(0),
            )
        }),
    });
    match ssd_gpu::Gpu::new() {
        Ok(gpu) => {
            let name = format!("CUDA f32 ({})", gpu.name());
            list.push(Backend {
                name,
                backward: Box::new(move |p, dout, dfinal| {
                    gpu.mamba_chunk_scan_combined_bwd_host(&p.inputs(), &p.options, dout, dfinal)
                }),
            });
        }
        Err(e) => notes.push(format!("CUDA f32: not run ({e})")),
    }
    (list, notes)
}

fn slug(name: &str, i: usize) -> String {
    let s: String = name
        .split_whitespace()
        .next()
        .unwrap_or("backend")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect::<String>()
        .to_lowercase();
    if s.is_empty() {
        format!("backend{i}")
    } else {
        s
    }
}

/// The κ of the first row whose closed-form f32 error exceeds `threshold`, per l.
fn breakdown(rows: &[StabilityRow], threshold: f64) -> Vec<(usize, Option<f64>)> {
    let mut ls: Vec<usize> = rows.iter().map(|r| r.seqlen).collect();
    ls.dedup();
    ls.into_iter()
        .map(|l| {
            let k = rows
                .iter()
                .filter(|r| r.seqlen == l && r.closed_f32 > threshold)
                .map(|r| r.kappa)
                .next();
            (l, k)
        })
        .collect()
}

fn print_summary(d: &Data) {
    for s in &d.seq {
        println!(
            "head {} (A = {:.3}): max |Σ four − recurrent| / max|recurrent| = {:.2e}",
            s.head, s.a, s.max_deviation
        );
    }
    for h in &d.split {
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
        d.duality
            .rows
            .iter()
            .map(|r| r.chunk_size)
            .collect::<Vec<_>>(),
        d.duality.max_deviation(),
        d.duality.max_relative_deviation()
    );
    for (l, k) in breakdown(&d.stab_uniform, 1e-4) {
        println!("closed form f32 (uniform Δ), l = {l}: error > 1e-4 from κ = {k:?}");
    }
    for f in d.flows.iter().flatten() {
        println!(
            "{}: rel_l2 intra/next/prev/chunk {:?}, sum {:.2e}",
            f.name, f.rel_l2, f.rel_l2_sum
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Figures

fn caption_font() -> TextStyle<'static> {
    ("sans-serif", 22).into_font().style(FontStyle::Bold).into()
}

fn series_color(k: usize) -> RGBColor {
    PALETTE[k]
}

fn range_of<'a>(vs: impl IntoIterator<Item = &'a f64>) -> (f64, f64) {
    let (lo, hi) = vs
        .into_iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    let pad = 0.06 * (hi - lo).max(1e-300);
    (lo - pad, hi + pad)
}

/// Section 1: the four contributions along the sequence, and their sum over the recurrence.
struct SequenceFigure<'a> {
    flow: &'a SequenceFlow,
}

impl Figure for SequenceFigure<'_> {
    fn size(&self) -> (u32, u32) {
        (1600, 1300)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult
    where
        DB::ErrorType: 'static,
    {
        let f = self.flow;
        let l = f.sum.len();
        let q = f.chunk_size;
        let root = root.titled(
            &format!(
                "The adjoint of the log decay ∂L/∂(Δ_t·A_h) along the sequence, split by the kernel \
                 that produces it (head {}, A_h = {:.2}, l = {l}, Q = {q})",
                f.head, f.a
            ),
            caption_font(),
        )?;
        let (top, rest) = root.split_vertically(470);
        let (middle, bottom) = rest.split_vertically(430);
        let parts = [&f.intra, &f.next, &f.prev, &f.chunk];
        let boundaries: Vec<f64> = (1..l.div_ceil(q)).map(|c| (c * q) as f64 - 0.5).collect();
        let descr = [
            "intra: chunk_scan_bwd_ddacs_stable (token → token inside a chunk)",
            "next: chunk_state_bwd_db (token → the chunk's own state)",
            "prev: chunk_scan_bwd_dc (the state entering the chunk → token)",
            "chunk: state_passing_bwd (the whole chunk's decay between states)",
        ];
        // The zoom: three chunks from the middle of the sequence.
        let z0 = (l.div_ceil(q) / 2).saturating_sub(1) * q;
        let z1 = (z0 + 3 * q).min(l);
        for (panel, (t0, t1)) in [(&top, (0, l)), (&middle, (z0, z1))] {
            let zoom = t0 > 0 || t1 < l;
            let (lo, hi) = range_of(parts.iter().flat_map(|v| v[t0..t1].iter()).chain(if zoom {
                f.sum[t0..t1].iter()
            } else {
                [].iter()
            }));
            // Room below the data for the legend.
            let lo = lo - 0.55 * (hi - lo);
            let caption = if zoom {
                format!(
                    "Zoom on positions {t0}–{}: inside each chunk next grows, prev falls, chunk is \
                     constant, intra is 0 at the chunk's first token",
                    t1 - 1
                )
            } else {
                "The four contributions along the whole sequence (grey verticals: chunk \
                 boundaries)"
                    .to_string()
            };
            let mut chart = ChartBuilder::on(panel)
                .caption(caption, ("sans-serif", 18))
                .margin(12)
                .x_label_area_size(45)
                .y_label_area_size(80)
                .build_cartesian_2d(t0 as f64 - 0.5..t1 as f64 - 0.5, lo..hi)?;
            chart
                .configure_mesh()
                .disable_x_mesh()
                .x_desc("position t in the sequence")
                .y_desc("contribution to ∂L/∂(Δ_t·A_h)")
                .x_label_formatter(&|x| format!("{x:.0}"))
                .label_style(("sans-serif", 15))
                .draw()?;
            chart
                .draw_series(
                    boundaries
                        .iter()
                        .filter(|&&x| x > t0 as f64 && x < t1 as f64)
                        .map(|&x| {
                            PathElement::new(
                                vec![(x, lo), (x, hi)],
                                RGBColor(150, 150, 150).stroke_width(if zoom { 2 } else { 1 }),
                            )
                        }),
                )?
                .label(format!("chunk boundary (every Q = {q} positions)"))
                .legend(|(x, y)| {
                    PathElement::new(vec![(x, y), (x + 24, y)], RGBColor(150, 150, 150))
                });
            for (k, v) in parts.iter().enumerate() {
                let c = series_color(k);
                chart
                    .draw_series(LineSeries::new(
                        (t0..t1).map(|t| (t as f64, v[t])),
                        c.stroke_width(2),
                    ))?
                    .label(descr[k])
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 24, y)], c.stroke_width(3))
                    });
            }
            if zoom {
                let black = series_color(4);
                chart
                    .draw_series(LineSeries::new(
                        (t0..t1).map(|t| (t as f64, f.sum[t])),
                        black.stroke_width(3),
                    ))?
                    .label("their sum")
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 24, y)], black.stroke_width(3))
                    });
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::LowerLeft)
                .label_font(("sans-serif", 14))
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .draw()?;
        }

        let (lo, hi) = range_of(f.sum.iter().chain(&f.recurrent));
        let lo = lo - 0.3 * (hi - lo);
        let mut chart = ChartBuilder::on(&bottom)
            .caption(
                format!(
                    "Their sum equals the adjoint of the literal recurrence (float64 BPTT): \
                     largest difference {:.1e} of its largest value",
                    f.max_deviation
                ),
                ("sans-serif", 18),
            )
            .margin(12)
            .x_label_area_size(45)
            .y_label_area_size(80)
            .build_cartesian_2d(0f64..l as f64, lo..hi)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_desc("position t in the sequence")
            .y_desc("∂L/∂(Δ_t·A_h)")
            .x_label_formatter(&|x| format!("{x:.0}"))
            .label_style(("sans-serif", 15))
            .draw()?;
        chart.draw_series(boundaries.iter().map(|&x| {
            PathElement::new(
                vec![(x, lo), (x, hi)],
                RGBColor(150, 150, 150).stroke_width(1),
            )
        }))?;
        let black = series_color(4);
        chart
            .draw_series(LineSeries::new(
                f.sum.iter().enumerate().map(|(t, &y)| (t as f64, y)),
                black.stroke_width(2),
            ))?
            .label("intra + next + prev + chunk (chunked backward, Q = 64)")
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 24, y)], black.stroke_width(3))
            });
        let red = RGBColor(214, 39, 40);
        chart
            .draw_series(
                f.recurrent
                    .iter()
                    .enumerate()
                    .step_by(4)
                    .map(|(t, &y)| Circle::new((t as f64, y), 3, red.filled())),
            )?
            .label("literal recurrence, exp(Δ_t·A)·⟨G_t, H_(t−1)⟩ (every 4th position)")
            .legend(move |(x, y)| Circle::new((x + 12, y), 4, red.filled()));
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerLeft)
            .label_font(("sans-serif", 15))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
        Ok(())
    }
}

/// Section 2: dA_h by kernel beside the finite difference, one panel per head.
struct SplitFigure<'a> {
    heads: &'a [HeadSplit],
}

impl Figure for SplitFigure<'_> {
    fn size(&self) -> (u32, u32) {
        (1600, 640)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult
    where
        DB::ErrorType: 'static,
    {
        let root = root.titled(
            "dA_h = Σ_t ∂L/∂(Δ_t·A_h)·Δ_t split by producing kernel (bars), beside the central \
             finite difference of the float64 forward (red bar)",
            caption_font(),
        )?;
        let (panels, legend) = root.split_vertically(560);
        let areas = panels.split_evenly((1, self.heads.len()));
        let names = ["intra", "next", "prev", "chunk", "sum", "FD"];
        for (area, h) in areas.iter().zip(self.heads) {
            let vals = [
                h.by_kernel[0],
                h.by_kernel[1],
                h.by_kernel[2],
                h.by_kernel[3],
                h.sum,
                h.finite_difference,
            ];
            let (lo, hi) = range_of(vals.iter().chain(&[0.0]));
            let mut chart = ChartBuilder::on(area)
                .caption(
                    format!(
                        "head {} (A_h = {:.2}): |sum − FD|/|FD| = {:.1e}",
                        h.head,
                        h.a,
                        h.fd_error()
                    ),
                    ("sans-serif", 16),
                )
                .margin(10)
                .x_label_area_size(40)
                .y_label_area_size(70)
                .build_cartesian_2d(-0.5f64..5.5, lo..hi)?;
            chart
                .configure_mesh()
                .disable_x_mesh()
                .x_labels(6)
                .x_label_formatter(&|x| {
                    let i = x.round();
                    if (x - i).abs() < 1e-6 && (0.0..6.0).contains(&i) {
                        names[i as usize].to_string()
                    } else {
                        String::new()
                    }
                })
                .y_desc("contribution to dA_h")
                .label_style(("sans-serif", 14))
                .draw()?;
            let colors = [
                series_color(0),
                series_color(1),
                series_color(2),
                series_color(3),
                series_color(4),
                RGBColor(214, 39, 40),
            ];
            chart.draw_series(vals.iter().enumerate().map(|(i, &v)| {
                let x = i as f64;
                Rectangle::new([(x - 0.35, 0.0), (x + 0.35, v)], colors[i].filled())
            }))?;
            chart.draw_series(std::iter::once(PathElement::new(
                vec![(-0.5, 0.0), (5.5, 0.0)],
                BLACK.stroke_width(1),
            )))?;
        }
        legend.draw(&Text::new(
            "intra: chunk_scan_bwd_ddacs_stable · next: chunk_state_bwd_db · prev: \
             chunk_scan_bwd_dc · chunk: state_passing_bwd · sum: of the four · FD: \
             (L(A_h + δ) − L(A_h − δ)) / 2δ of the literal recurrence",
            (20, 30),
            ("sans-serif", 16),
        ))?;
        Ok(())
    }
}

/// Section 3: the share of dA_h per kernel as Q goes from 1 to l, and the deviation of the total.
struct DualityFigure<'a> {
    sweep: &'a DualitySweep,
    seqlen: usize,
    /// `A_h` per head.
    a: Vec<f64>,
}

impl Figure for DualityFigure<'_> {
    fn size(&self) -> (u32, u32) {
        (1600, 1000)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult
    where
        DB::ErrorType: 'static,
    {
        let s = self.sweep;
        let nh = s.recurrent.len();
        let l = self.seqlen as f64;
        let root = root.titled(
            &format!(
                "Duality through the gradient: as the chunk size Q goes from 1 (recurrence) to \
                 l = {} (attention), the kernels' shares of dA_h move; their total does not",
                self.seqlen
            ),
            caption_font(),
        )?;
        let (top, bottom) = root.split_vertically(600);
        let areas = top.split_evenly((1, nh));
        let qs: Vec<f64> = s.rows.iter().map(|r| r.chunk_size as f64).collect();
        for (h, area) in areas.iter().enumerate() {
            let shares: Vec<[f64; 5]> = s
                .rows
                .iter()
                .map(|r| {
                    let t = r.total[h];
                    let k = r.by_kernel[h];
                    [k[0] / t, k[1] / t, k[2] / t, k[3] / t, 1.0]
                })
                .collect();
            let (lo, hi) = range_of(shares.iter().flat_map(|v| v.iter()));
            let mut chart = ChartBuilder::on(area)
                .caption(
                    format!(
                        "head {h} (A_h = {:.2}), dA_h = {:.4}",
                        self.a[h], s.recurrent[h]
                    ),
                    ("sans-serif", 16),
                )
                .margin(10)
                .x_label_area_size(45)
                .y_label_area_size(60)
                .build_cartesian_2d((1f64..l).log_scale(), lo..hi)?;
            chart
                .configure_mesh()
                .x_desc("chunk size Q (log)")
                .y_desc("share of dA_h (contribution / total)")
                .x_label_formatter(&|x| format!("{x:.0}"))
                .label_style(("sans-serif", 13))
                .draw()?;
            for k in 0..5 {
                let c = series_color(k);
                let style = if k == 4 {
                    c.stroke_width(3)
                } else {
                    c.stroke_width(2)
                };
                chart.draw_series(
                    qs.iter()
                        .zip(&shares)
                        .map(|(&q, v)| Circle::new((q, v[k]), 3, c.filled())),
                )?;
                let series = chart.draw_series(LineSeries::new(
                    qs.iter().zip(&shares).map(|(&q, v)| (q, v[k])),
                    style,
                ))?;
                if h == 0 {
                    let label = if k == 4 {
                        "total (= 1)".to_string()
                    } else {
                        SHORT[k].to_string()
                    };
                    series.label(label).legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(3))
                    });
                }
            }
            if h == 0 {
                chart
                    .configure_series_labels()
                    .position(SeriesLabelPosition::UpperLeft)
                    .label_font(("sans-serif", 14))
                    .background_style(WHITE.mix(0.85))
                    .border_style(BLACK)
                    .draw()?;
            }
        }
        // Bottom: |total(Q) − dA_h(recurrence)| / Σ_t |ddA_t Δ_t| per head.
        let devs: Vec<Vec<f64>> = (0..nh)
            .map(|h| {
                s.rows
                    .iter()
                    .map(|r| ((r.total[h] - s.recurrent[h]).abs() / s.magnitude[h]).max(1e-17))
                    .collect()
            })
            .collect();
        let mut chart = ChartBuilder::on(&bottom)
            .caption(
                format!(
                    "Deviation of the total from dA_h of the literal recurrence, relative to \
                     Σ_t |∂L/∂(Δ_t·A_h)·Δ_t| (largest: {:.1e}; float64 ε = 1.1e-16; exact 0 drawn at 1e-17)",
                    s.max_deviation()
                ),
                ("sans-serif", 18),
            )
            .margin(10)
            .x_label_area_size(45)
            .y_label_area_size(80)
            .build_cartesian_2d((1f64..l).log_scale(), (1e-17f64..1e-13).log_scale())?;
        chart
            .configure_mesh()
            .x_desc("chunk size Q (log)")
            .y_desc("relative deviation (log)")
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| format!("{y:.0e}"))
            .label_style(("sans-serif", 14))
            .draw()?;
        for (h, d) in devs.iter().enumerate() {
            let c = [
                RGBColor(31, 119, 180),
                RGBColor(230, 120, 20),
                RGBColor(44, 160, 44),
                RGBColor(148, 103, 189),
            ][h % 4];
            chart
                .draw_series(LineSeries::new(
                    qs.iter().zip(d).map(|(&q, &v)| (q, v)),
                    c.stroke_width(2),
                ))?
                .label(format!("head {h}"))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(3))
                });
            chart.draw_series(
                qs.iter()
                    .zip(d)
                    .map(|(&q, &v)| Circle::new((q, v), 3, c.filled())),
            )?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .label_font(("sans-serif", 14))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
        Ok(())
    }
}

/// Section 4: error of the closed form and of the stable form against float64 truth.
struct StabilityFigure<'a> {
    uniform: &'a [StabilityRow],
    upstream: &'a [StabilityRow],
    backends: &'a [String],
}

impl Figure for StabilityFigure<'_> {
    fn size(&self) -> (u32, u32) {
        (1600, 1180)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult
    where
        DB::ErrorType: 'static,
    {
        let root = root.titled(
            "Why chunk_scan_bwd_ddacs_stable exists: rel_l2 error of the intra-chunk A adjoint \
             against float64 truth, one chunk of length l, as the decay per step κ = Δ·|A| grows",
            caption_font(),
        )?;
        let rows_of = [self.uniform, self.upstream];
        let titles = [
            format!("every Δ_t = {UNIFORM_DT}"),
            "Δ_t drawn as upstream, softplus(N(0,1) − 4)".to_string(),
        ];
        let (panels, legend_area) = root.split_vertically(1060);
        let grid = panels.split_evenly((2, 3));
        let mut ls: Vec<usize> = self.uniform.iter().map(|r| r.seqlen).collect();
        ls.dedup();
        let styles: Vec<(String, RGBColor, u32)> = {
            let mut v = vec![
                ("closed form, f32".to_string(), RGBColor(214, 39, 40), 3),
                (
                    "closed form, float64".to_string(),
                    RGBColor(255, 152, 150),
                    2,
                ),
                ("stable, f32".to_string(), RGBColor(31, 119, 180), 3),
                ("stable, float64".to_string(), RGBColor(158, 202, 225), 2),
            ];
            for (i, b) in self.backends.iter().enumerate() {
                let c = [RGBColor(44, 160, 44), RGBColor(148, 103, 189)][i % 2];
                v.push((format!("{b}: ssd backward, intra"), c, 2));
            }
            v
        };
        for (row, rows) in rows_of.iter().enumerate() {
            for (col, &l) in ls.iter().enumerate() {
                let area = &grid[row * 3 + col];
                let rs: Vec<&StabilityRow> = rows.iter().filter(|r| r.seqlen == l).collect();
                let kmin = rs.first().map_or(1e-3, |r| r.kappa);
                let kmax = rs.last().map_or(1.0, |r| r.kappa);
                let mut chart = ChartBuilder::on(area)
                    .caption(format!("{}, l = Q = {l}", titles[row]), ("sans-serif", 16))
                    .margin(10)
                    .x_label_area_size(45)
                    .y_label_area_size(70)
                    .build_cartesian_2d((kmin..kmax).log_scale(), (1e-18f64..1e10).log_scale())?;
                chart
                    .configure_mesh()
                    .x_desc("κ = mean Δ·|A| per step (log)")
                    .y_desc("rel_l2 error vs float64 (log)")
                    .x_label_formatter(&|x| format!("{x:.0e}"))
                    .y_label_formatter(&|y| format!("{y:.0e}"))
                    .label_style(("sans-serif", 13))
                    .draw()?;
                // Reference levels: f32 ε and GRADIENT_F32.
                for (y, txt) in [
                    (6e-8, "f32 ε"),
                    (1e-4, "1e-4: f32 gradient tolerance"),
                    (1.0, "100 % error"),
                ] {
                    chart.draw_series(std::iter::once(PathElement::new(
                        vec![(kmin, y), (kmax, y)],
                        RGBColor(150, 150, 150).stroke_width(1),
                    )))?;
                    chart.draw_series(std::iter::once(Text::new(
                        txt,
                        (kmin * 1.3, y * 3.0),
                        ("sans-serif", 12)
                            .into_font()
                            .color(&RGBColor(110, 110, 110)),
                    )))?;
                }
                let mut series: Vec<Vec<(f64, f64)>> = vec![
                    rs.iter().map(|r| (r.kappa, r.closed_f32)).collect(),
                    rs.iter().map(|r| (r.kappa, r.closed_f64)).collect(),
                    rs.iter().map(|r| (r.kappa, r.stable_f32)).collect(),
                    rs.iter().map(|r| (r.kappa, r.stable_f64)).collect(),
                ];
                for i in 0..self.backends.len() {
                    series.push(
                        rs.iter()
                            .filter_map(|r| r.backends.get(i).and_then(|(_, e)| e.as_ref().ok()))
                            .zip(&rs)
                            .map(|(&e, r)| (r.kappa, e))
                            .collect(),
                    );
                }
                for (pts, (_, c, w)) in series.iter().zip(&styles) {
                    let pts: Vec<(f64, f64)> = pts
                        .iter()
                        .map(|&(k, e)| (k, e.clamp(1e-18, 1e10)))
                        .collect();
                    chart.draw_series(LineSeries::new(pts.clone(), c.stroke_width(*w)))?;
                    chart.draw_series(pts.iter().map(|&p| Circle::new(p, 3, c.filled())))?;
                }
            }
        }
        // One legend for all panels, wrapped to the figure's width.
        let width = legend_area.dim_in_pixel().0 as i32;
        let (mut x, mut y) = (20, 25);
        for (name, c, w) in &styles {
            let step = 60 + 9 * name.chars().count() as i32;
            if x + step > width && x > 20 {
                x = 20;
                y += 32;
            }
            legend_area.draw(&PathElement::new(
                vec![(x, y), (x + 30, y)],
                c.stroke_width(*w + 1),
            ))?;
            legend_area.draw(&Text::new(
                name.clone(),
                (x + 38, y - 8),
                ("sans-serif", 16),
            ))?;
            x += step;
        }
        Ok(())
    }
}

/// Section 5: one backend's contributions over the float64 ones.
struct BackendFigure<'a> {
    truth: &'a SequenceFlow,
    flow: &'a BackendFlow,
}

impl Figure for BackendFigure<'_> {
    fn size(&self) -> (u32, u32) {
        (1600, 900)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult
    where
        DB::ErrorType: 'static,
    {
        let f = self.flow;
        let t = self.truth;
        let h = t.head;
        let root = root.titled(
            &format!(
                "{}: the four A-adjoint contributions over the float64 ones (head {h}, A_h = {:.2})",
                f.name, t.a
            ),
            caption_font(),
        )?;
        let grid = root.split_evenly((2, 4));
        let truth = [&t.intra, &t.next, &t.prev, &t.chunk];
        for k in 0..4 {
            let got = &f.along[h][k];
            let want = truth[k];
            let l = want.len();
            let (lo, hi) = range_of(want.iter().chain(got.iter()));
            let mut chart = ChartBuilder::on(&grid[k])
                .caption(
                    format!("{} (rel_l2 {:.1e})", SHORT[k], f.rel_l2[k]),
                    ("sans-serif", 16),
                )
                .margin(8)
                .x_label_area_size(40)
                .y_label_area_size(65)
                .build_cartesian_2d(0f64..l as f64, lo..hi)?;
            chart
                .configure_mesh()
                .disable_x_mesh()
                .x_desc("position t")
                .y_desc("contribution")
                .x_labels(5)
                .x_label_formatter(&|x| format!("{x:.0}"))
                .label_style(("sans-serif", 12))
                .draw()?;
            let c = series_color(k);
            chart
                .draw_series(LineSeries::new(
                    want.iter().enumerate().map(|(t, &y)| (t as f64, y)),
                    c.stroke_width(2),
                ))?
                .label("float64 reference")
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(3))
                });
            chart
                .draw_series(
                    got.iter()
                        .enumerate()
                        .step_by(8)
                        .map(|(t, &y)| Cross::new((t as f64, y), 4, BLACK.stroke_width(1))),
                )?
                .label("f32 backend (every 8th)")
                .legend(|(x, y)| Cross::new((x + 10, y), 4, BLACK.stroke_width(1)));
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::LowerLeft)
                .label_font(("sans-serif", 12))
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .draw()?;

            let scale = (want.iter().map(|v| v * v).sum::<f64>() / l as f64)
                .sqrt()
                .max(1e-300);
            let err: Vec<(f64, f64)> = got
                .iter()
                .zip(want)
                .enumerate()
                .map(|(t, (g, w))| (t as f64, ((g - w).abs() / scale).max(1e-12)))
                .collect();
            let mut chart = ChartBuilder::on(&grid[4 + k])
                .caption(
                    format!("{}: |f32 − float64| / RMS(float64)", SHORT[k]),
                    ("sans-serif", 16),
                )
                .margin(8)
                .x_label_area_size(40)
                .y_label_area_size(65)
                .build_cartesian_2d(0f64..l as f64, (1e-12f64..1e-2).log_scale())?;
            chart
                .configure_mesh()
                .disable_x_mesh()
                .x_desc("position t")
                .y_desc("error (log)")
                .x_labels(5)
                .x_label_formatter(&|x| format!("{x:.0}"))
                .y_label_formatter(&|y| format!("{y:.0e}"))
                .label_style(("sans-serif", 12))
                .draw()?;
            chart.draw_series(err.iter().map(|&p| Circle::new(p, 1, c.filled())))?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Report

fn fig_link(figures: &[(String, Option<PathBuf>)], stem: &str, alt: &str) -> String {
    if figures.iter().any(|(s, _)| s == stem) {
        format!("![{alt}](figures/{stem}.png)\n\n(SVG: [figures/{stem}.svg](figures/{stem}.svg))\n")
    } else {
        format!("*(figure `{stem}` not rendered on this run)*\n")
    }
}

fn report(
    d: &Data,
    figures: &[(String, Option<PathBuf>)],
    rendered: bool,
    times: &[(&str, f64)],
    total: f64,
) -> String {
    let s = &d.spec;
    let mut r = String::new();
    let w = &mut r;
    let _ = writeln!(
        w,
        "# How the gradient of A flows through the backward kernels\n"
    );
    let _ = writeln!(
        w,
        "Generated by `cargo run --release -p ssd-notebooks --bin a_adjoint_flow` \
         (source: `notebooks/src/bin/a_adjoint_flow.rs`, data functions in \
         `notebooks/src/a_adjoint_flow/`). Do not edit by hand.\n"
    );
    let _ = writeln!(
        w,
        "`A_h` reaches the loss only through the per-step log decays `Δ_t·A_h`, so \
         `dA_h = Σ_t ∂L/∂(Δ_t·A_h) · Δ_t`. The chunked backward produces `∂L/∂(Δ_t·A_h)` in four \
         parts, one per path of the chunked forward \
         ([docs/design.md §2.6](../docs/design.md#26-the-backward)):\n\n\
         | part | kernel | path of the forward |\n|---|---|---|\n\
         | intra | `chunk_scan_bwd_ddacs_stable` | token s → token l inside one chunk (the `CB` term) |\n\
         | next | `chunk_state_bwd_db` | token s → the chunk's own state `S_c` |\n\
         | prev | `chunk_scan_bwd_dc` | the state entering the chunk `P_c` → token l |\n\
         | chunk | `state_passing_bwd` | the decay `exp(a_last)` of a whole chunk between chunk states |\n"
    );
    let _ = writeln!(
        w,
        "The problem: one batch row, l = {}, Q = {}, {} heads with `A_h` from −1 to −16 \
         (geometric), p = {}, n = {}, one group, upstream-like values (`Δ = softplus(N(0,1) − 4)`, \
         `B, C ~ N(0,1)/5`), an initial state of the size the sequence's own state reaches, seed {}; the loss is \
         `L = Σ out·dout + Σ final_states·dfinal_states` with `dout`, `dfinal_states ~ N(0,1)`.\n",
        s.seqlen, s.chunk_size, s.nheads, s.headdim, s.dstate, s.seed
    );

    // 1
    let _ = writeln!(w, "## 1. The four contributions along the sequence\n");
    let _ = writeln!(
        w,
        "{}",
        fig_link(
            figures,
            "a_adjoint_flow_sequence",
            "four contributions along the sequence"
        )
    );
    let _ = writeln!(
        w,
        "Inside a chunk `next` grows from 0 at the chunk's first token (it counts the tokens \
         before t that reach the chunk's state), `prev` falls to the chunk's end (the state \
         entering the chunk reaches the tokens from t on), `intra` is 0 at the first token and \
         largest in the middle (pairs s < t ≤ l), and `chunk` is one number per chunk (the decay \
         of the whole chunk). Their sum is continuous across chunk boundaries and equals the \
         per-step adjoint of the literal recurrence `exp(Δ_t·A)·⟨G_t, H_(t−1)⟩`:\n\n\
         | head | A_h | max_t \\|Σ four − recurrent\\| / max_t \\|recurrent\\| |\n|---|---|---|"
    );
    for q in &d.seq {
        let _ = writeln!(w, "| {} | {:.4} | {:.2e} |", q.head, q.a, q.max_deviation);
    }

    // 2
    let _ = writeln!(
        w,
        "\n## 2. dA_h split by kernel, beside finite differences\n"
    );
    let _ = writeln!(
        w,
        "{}",
        fig_link(
            figures,
            "a_adjoint_flow_split",
            "dA per head split by kernel"
        )
    );
    let _ = writeln!(
        w,
        "Each part is `Σ_t part_t · Δ_t`. FD is the central difference \
         `(L(A_h + δ) − L(A_h − δ)) / 2δ` of the float64 literal recurrence with \
         `δ = 6e-6·|A_h|` (≈ ε^(1/3): truncation and rounding both ≈ 1e-10 relative).\n\n\
         | head | A_h | intra | next | prev | chunk | sum | backward dA_h | FD dA_h | \\|sum − FD\\|/\\|FD\\| |\n\
         |---|---|---|---|---|---|---|---|---|---|"
    );
    for h in &d.split {
        let _ = writeln!(
            w,
            "| {} | {:.4} | {:.6} | {:.6} | {:.6} | {:.6} | {:.10} | {:.10} | {:.10} | {:.1e} |",
            h.head,
            h.a,
            h.by_kernel[0],
            h.by_kernel[1],
            h.by_kernel[2],
            h.by_kernel[3],
            h.sum,
            h.backward,
            h.finite_difference,
            h.fd_error()
        );
    }
    let worst_fd = d.split.iter().map(|h| h.fd_error()).fold(0.0, f64::max);
    let _ = writeln!(
        w,
        "\nLargest `|sum − FD| / |FD|`: **{worst_fd:.1e}** (the finite difference's own error is \
         ≈ 1e-9 here; threshold in the tests: 1e-6, `tolerance::FD_DIRECTIONAL`)."
    );

    // 3
    let du = &d.duality;
    let _ = writeln!(w, "\n## 3. Duality through the gradient\n");
    let _ = writeln!(
        w,
        "{}",
        fig_link(
            figures,
            "a_adjoint_flow_duality",
            "shares of dA per kernel versus chunk size"
        )
    );
    let _ = writeln!(
        w,
        "Q = 1 is the recurrence: every token is its own chunk, `intra` and `next` are 0 and \
         the whole adjoint flows through the states (`prev`, `chunk`). Q = l is the quadratic \
         (attention) form: one chunk, `chunk` only carries the initial state's decay over the \
         whole sequence, and `intra` and `prev`/`next` (initial and final state) carry the rest. \
         In between the split moves; the total is the same float64 number.\n\n\
         **Largest deviation of the total** over Q ∈ {:?} and all heads, from `dA_h` of the \
         literal recurrence: **{:.2e}** relative to `Σ_t |∂L/∂(Δ_t·A_h)·Δ_t|` \
         ({:.2e} relative to `|dA_h|`).\n",
        du.rows.iter().map(|r| r.chunk_size).collect::<Vec<_>>(),
        du.max_deviation(),
        du.max_relative_deviation()
    );
    let _ = writeln!(
        w,
        "Head {SHOWN_HEAD} (A_h = {:.2}), `dA_h` of the recurrence = {:.10}:\n\n\
         | Q | intra | next | prev | chunk | total | \\|total − recurrence\\| / Σ\\|terms\\| |\n|---|---|---|---|---|---|---|",
        d.seq[SHOWN_HEAD].a, du.recurrent[SHOWN_HEAD]
    );
    for row in &du.rows {
        let k = row.by_kernel[SHOWN_HEAD];
        let t = row.total[SHOWN_HEAD];
        let _ = writeln!(
            w,
            "| {} | {:.6} | {:.6} | {:.6} | {:.6} | {:.12} | {:.1e} |",
            row.chunk_size,
            k[0],
            k[1],
            k[2],
            k[3],
            t,
            (t - du.recurrent[SHOWN_HEAD]).abs() / du.magnitude[SHOWN_HEAD]
        );
    }

    // 4
    let _ = writeln!(w, "\n## 4. Why the stable kernel exists\n");
    let _ = writeln!(
        w,
        "{}",
        fig_link(
            figures,
            "a_adjoint_flow_stability",
            "closed form versus stable kernel error"
        )
    );
    let _ = writeln!(
        w,
        "With `W[l,s] = ⟨dy_l, x_s⟩ Δ_s CB[l,s] exp(a_l − a_s)` inside a chunk, \
         `ddA_intra_k = Σ_(l ≥ k > s) W[l,s]`. The **closed form** (upstream's old \
         `_chunk_scan_bwd_ddAcs_unstable`) takes the gradient w.r.t. each cumsum value as \
         `Σ_p out_x·dy − ddt·Δ` (row sum minus column sum of W, both of which the backward has \
         anyway; here `out_x` is the intra-chunk part of the output — upstream's also holds the \
         state term and so yields `intra + prev`, which `tests/tests/reference_backward.rs` \
         checks — the state term adds no cancellation) and reverse-cumsums it. Row and column \
         sums share the diagonal `W[j,j]`, which \
         cancels: when a step decays strongly (κ = Δ·|A| large) the pairs that remain are \
         smaller than the diagonal by about `e^(−κ)`, so the answer is a small difference of \
         large nearly equal numbers and its error is about ε·e^κ. The **stable** kernel \
         (`chunk_scan_bwd_ddacs_stable`) forms the same sum from products only. Both are \
         evaluated here in f32 and float64 on the same f32-representable problem (one chunk of \
         length l = Q, 2 heads, p = n = 16), against the float64 reference kernel.\n"
    );
    for (title, rows) in [
        (format!("every Δ_t = {UNIFORM_DT}"), &d.stab_uniform),
        ("Δ_t drawn as upstream".to_string(), &d.stab_upstream),
    ] {
        let _ = writeln!(w, "**{title}** (rel_l2 against float64 truth; `ratio` = RMS of the truth / RMS of the cancelled diagonal `W[j,j]`):\n");
        let mut head =
            "| l | κ | ratio | closed f64 | closed f32 | stable f64 | stable f32 |".to_string();
        let mut sep = "|---|---|---|---|---|---|---|".to_string();
        for b in &d.backend_names {
            head += &format!(" {b} |");
            sep += "---|";
        }
        let _ = writeln!(w, "{head}\n{sep}");
        for r in rows.iter() {
            let mut line = format!(
                "| {} | {} | {:.1e} | {:.1e} | {:.1e} | {:.1e} | {:.1e} |",
                r.seqlen,
                r.kappa,
                r.signal_ratio,
                r.closed_f64,
                r.closed_f32,
                r.stable_f64,
                r.stable_f32
            );
            for (_, e) in &r.backends {
                match e {
                    Ok(v) => line += &format!(" {v:.1e} |"),
                    Err(msg) => line += &format!(" error: {msg} |"),
                }
            }
            let _ = writeln!(w, "{line}");
        }
        let _ = writeln!(w);
    }
    let _ = writeln!(w, "Where the closed form breaks down (uniform Δ; first κ of the sweep whose f32 error exceeds the threshold):\n\n| l | error > 1e-4 (f32 gradient tolerance) from κ = | error > 1 (no correct digit) from κ = |\n|---|---|---|");
    let b4 = breakdown(&d.stab_uniform, 1e-4);
    let b1 = breakdown(&d.stab_uniform, 1.0);
    for ((l, k4), (_, k1)) in b4.iter().zip(&b1) {
        let f = |k: &Option<f64>| k.map_or("not in the sweep".to_string(), |v| format!("{v}"));
        let _ = writeln!(w, "| {l} | {} | {} |", f(k4), f(k1));
    }
    let worst_stable = d
        .stab_uniform
        .iter()
        .chain(&d.stab_upstream)
        .map(|r| r.stable_f32)
        .fold(0.0, f64::max);
    let _ = writeln!(
        w,
        "\nThe error of the closed form tracks `ε / ratio`: it is the rounding of the diagonal \
         terms, divided by how small the answer is beside them. The stable form's f32 error stays \
         at most **{worst_stable:.1e}** over both sweeps. With upstream's Δ many steps are tiny \
         (Δ ≪ mean), so pairs across them survive the decay and the cancellation is milder; \
         there both forms also lose accuracy as κ·l grows, because the f32 cumsum `a_l` grows to \
         κ·l and its rounding enters every `exp(a_l − a_s)` — the reason chunks stay short \
         (Q ≤ 256) and cumsums are chunk-local. The notebook's own f32 loops are the plain \
         formulas (a sequential f32 cumsum, sequential sums); the backends' intra kernels \
         (table columns and the green/purple lines, where a backend ran) may do better: ssd-cpu, \
         for one, keeps the cumsum in f64 split into a high and a low f32 part \
         (`cpu/src/forward/chunk_cumsum.rs`), so its exponent differences carry no cumsum \
         rounding.\n"
    );

    for (i, name) in d.backend_names.iter().enumerate() {
        for (title, rows) in [
            ("uniform Δ", &d.stab_uniform),
            ("upstream Δ", &d.stab_upstream),
        ] {
            let worst = rows
                .iter()
                .filter_map(|r| match r.backends.get(i) {
                    Some((_, Ok(e))) => Some((*e, r.seqlen, r.kappa)),
                    _ => None,
                })
                .fold((0.0, 0, 0.0), |m, v| if v.0 > m.0 { v } else { m });
            let worst_256 = rows
                .iter()
                .filter(|r| r.seqlen <= 256)
                .filter_map(|r| match r.backends.get(i) {
                    Some((_, Ok(e))) => Some(*e),
                    _ => None,
                })
                .fold(0.0, f64::max);
            let _ = writeln!(
                w,
                "- {name}, {title}: largest intra error {:.1e} (at l = {}, κ = {}); \
                 {:.1e} over the chunks of length ≤ 256.",
                worst.0, worst.1, worst.2, worst_256
            );
        }
    }
    if !d.backend_names.is_empty() {
        let _ = writeln!(w);
    }

    // 5
    let _ = writeln!(w, "## 5. The f32 backends over float64\n");
    for n in &d.backend_notes {
        let _ = writeln!(w, "- {n}");
    }
    if d.flows.is_empty() {
        let _ = writeln!(
            w,
            "\nNo f32 backend ran on this machine, so this section has no data. Where one is \
             present the notebook lays its four contributions over the float64 ones and \
             tabulates their rel_l2.\n"
        );
    }
    for f in &d.flows {
        match f {
            Ok(f) => {
                let stem = format!(
                    "a_adjoint_flow_backend_{}",
                    slug(
                        &f.name,
                        d.backend_names
                            .iter()
                            .position(|n| n == &f.name)
                            .unwrap_or(0)
                    )
                );
                let _ = writeln!(
                    w,
                    "\n### {}\n\n{}",
                    f.name,
                    fig_link(figures, &stem, &f.name)
                );
                let _ = writeln!(
                    w,
                    "| | intra | next | prev | chunk | sum |\n|---|---|---|---|---|---|\n\
                     | rel_l2 vs float64 | {:.1e} | {:.1e} | {:.1e} | {:.1e} | {:.1e} |\n",
                    f.rel_l2[0], f.rel_l2[1], f.rel_l2[2], f.rel_l2[3], f.rel_l2_sum
                );
                let _ = writeln!(
                    w,
                    "`dA_h` error relative to `Σ_t |ddA_t Δ_t|` per head: {:?}\n",
                    f.da_error
                        .iter()
                        .map(|e| format!("{e:.1e}"))
                        .collect::<Vec<_>>()
                );
            }
            Err(e) => {
                let _ = writeln!(w, "- a backend failed: {e}");
            }
        }
    }

    let _ = writeln!(w, "\n## Run\n");
    if !rendered {
        let _ = writeln!(
            w,
            "No TrueType font was found, so no figure was rendered on this run (set \
             `SSD_NOTEBOOK_FONT` to a `.ttf` file).\n"
        );
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let _ = writeln!(
        w,
        "Wall-clock seconds of this run ({threads} CPU threads; the float64 reference is \
         single-threaded):\n"
    );
    let _ = writeln!(w, "| step | seconds |\n|---|---|");
    for (n, t) in times {
        let _ = writeln!(w, "| {n} | {t:.2} |");
    }
    let _ = writeln!(w, "| total | {total:.2} |");
    let _ = writeln!(
        w,
        "\nKernel names: {}.",
        KERNELS
            .iter()
            .map(|k| format!("`{k}`"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    r
}
