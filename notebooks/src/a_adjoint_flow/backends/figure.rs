//! The figure of section 5: one f32 backend's contributions over the float64 ones, and their
//! error along the sequence.

use super::BackendFlow;
use crate::a_adjoint_flow::{SequenceFlow, SHORT};
use crate::figure::{
    draw_legend, line_sample, padded_range, title_font, DrawResult, Figure, PALETTE,
};
use plotters::coord::Shift;
use plotters::prelude::*;

/// Section 5: one backend's contributions over the float64 ones.
#[derive(Debug)]
pub struct BackendFigure<'a> {
    /// The float64 contributions of the head shown.
    pub truth: &'a SequenceFlow,
    /// The backend's.
    pub flow: &'a BackendFlow,
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
            title_font(),
        )?;
        let grid = root.split_evenly((2, 4));
        let truth = [&t.intra, &t.next, &t.prev, &t.chunk];
        for k in 0..4 {
            let got = &f.along[h][k];
            let want = truth[k];
            let l = want.len();
            let (lo, hi) = padded_range(want.iter().chain(got.iter()));
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
            let c = PALETTE[k];
            chart
                .draw_series(LineSeries::new(
                    want.iter().enumerate().map(|(t, &y)| (t as f64, y)),
                    c.stroke_width(2),
                ))?
                .label("float64 reference")
                .legend(line_sample(c.stroke_width(3), 20));
            chart
                .draw_series(
                    got.iter()
                        .enumerate()
                        .step_by(8)
                        .map(|(t, &y)| Cross::new((t as f64, y), 4, BLACK.stroke_width(1))),
                )?
                .label("f32 backend (every 8th)")
                .legend(|(x, y)| Cross::new((x + 10, y), 4, BLACK.stroke_width(1)));
            draw_legend(&mut chart, SeriesLabelPosition::LowerLeft, 12)?;

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
