//! The figure of section 1: the four contributions along the sequence of one head (whole
//! sequence and a zoom on three chunks), and their sum over the adjoint of the literal recurrence.

use super::SequenceFlow;
use crate::figure::{
    draw_legend, line_sample, padded_range, title_font, DrawResult, Figure, GREY, PALETTE, RED,
};
use plotters::coord::Shift;
use plotters::prelude::*;

/// Section 1: the four contributions along the sequence, and their sum over the recurrence.
#[derive(Debug)]
pub struct SequenceFigure<'a> {
    /// The head shown.
    pub flow: &'a SequenceFlow,
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
            title_font(),
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
            let (lo, hi) =
                padded_range(parts.iter().flat_map(|v| v[t0..t1].iter()).chain(if zoom {
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
                                GREY.stroke_width(if zoom { 2 } else { 1 }),
                            )
                        }),
                )?
                .label(format!("chunk boundary (every Q = {q} positions)"))
                .legend(line_sample(GREY, 24));
            for (k, v) in parts.iter().enumerate() {
                let c = PALETTE[k];
                chart
                    .draw_series(LineSeries::new(
                        (t0..t1).map(|t| (t as f64, v[t])),
                        c.stroke_width(2),
                    ))?
                    .label(descr[k])
                    .legend(line_sample(c.stroke_width(3), 24));
            }
            if zoom {
                let black = PALETTE[4];
                chart
                    .draw_series(LineSeries::new(
                        (t0..t1).map(|t| (t as f64, f.sum[t])),
                        black.stroke_width(3),
                    ))?
                    .label("their sum")
                    .legend(line_sample(black.stroke_width(3), 24));
            }
            draw_legend(&mut chart, SeriesLabelPosition::LowerLeft, 14)?;
        }

        let (lo, hi) = padded_range(f.sum.iter().chain(&f.recurrent));
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
        chart.draw_series(
            boundaries
                .iter()
                .map(|&x| PathElement::new(vec![(x, lo), (x, hi)], GREY.stroke_width(1))),
        )?;
        let black = PALETTE[4];
        chart
            .draw_series(LineSeries::new(
                f.sum.iter().enumerate().map(|(t, &y)| (t as f64, y)),
                black.stroke_width(2),
            ))?
            .label("intra + next + prev + chunk (chunked backward, Q = 64)")
            .legend(line_sample(black.stroke_width(3), 24));
        chart
            .draw_series(
                f.recurrent
                    .iter()
                    .enumerate()
                    .step_by(4)
                    .map(|(t, &y)| Circle::new((t as f64, y), 3, RED.filled())),
            )?
            .label("literal recurrence, exp(Δ_t·A)·⟨G_t, H_(t−1)⟩ (every 4th position)")
            .legend(move |(x, y)| Circle::new((x + 12, y), 4, RED.filled()));
        draw_legend(&mut chart, SeriesLabelPosition::LowerLeft, 15)?;
        Ok(())
    }
}
