//! The figure of section 2: `dA_h` by kernel beside the finite difference, one panel per head.

use super::HeadSplit;
use crate::figure::{padded_range, title_font, DrawResult, Figure, PALETTE, RED};
use plotters::coord::Shift;
use plotters::prelude::*;

/// Section 2: dA_h by kernel beside the finite difference, one panel per head.
#[derive(Debug)]
pub struct SplitFigure<'a> {
    /// Every head.
    pub heads: &'a [HeadSplit],
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
            title_font(),
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
            let (lo, hi) = padded_range(vals.iter().chain(&[0.0]));
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
                PALETTE[0], PALETTE[1], PALETTE[2], PALETTE[3], PALETTE[4], RED,
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
