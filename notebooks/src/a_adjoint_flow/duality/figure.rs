//! The figure of section 3: the share of `dA_h` per kernel as Q goes from 1 to l, and the
//! deviation of the total from the recurrence.

use super::DualitySweep;
use crate::a_adjoint_flow::SHORT;
use crate::figure::{
    draw_legend, line_sample, padded_range, title_font, DrawResult, Figure, PALETTE,
};
use plotters::coord::Shift;
use plotters::prelude::*;

/// Section 3: the share of dA_h per kernel as Q goes from 1 to l, and the deviation of the total.
#[derive(Debug)]
pub struct DualityFigure<'a> {
    /// The sweep.
    pub sweep: &'a DualitySweep,
    /// l.
    pub seqlen: usize,
    /// `A_h` per head.
    pub a: Vec<f64>,
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
            title_font(),
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
            let (lo, hi) = padded_range(shares.iter().flat_map(|v| v.iter()));
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
                let c = PALETTE[k];
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
                    series
                        .label(label)
                        .legend(line_sample(c.stroke_width(3), 20));
                }
            }
            if h == 0 {
                draw_legend(&mut chart, SeriesLabelPosition::UpperLeft, 14)?;
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
            let c = PALETTE[h % 4];
            chart
                .draw_series(LineSeries::new(
                    qs.iter().zip(d).map(|(&q, &v)| (q, v)),
                    c.stroke_width(2),
                ))?
                .label(format!("head {h}"))
                .legend(line_sample(c.stroke_width(3), 20));
            chart.draw_series(
                qs.iter()
                    .zip(d)
                    .map(|(&q, &v)| Circle::new((q, v), 3, c.filled())),
            )?;
        }
        draw_legend(&mut chart, SeriesLabelPosition::UpperRight, 14)?;
        Ok(())
    }
}
