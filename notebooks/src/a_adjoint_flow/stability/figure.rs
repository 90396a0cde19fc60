//! The figure of section 4: the error of the closed form and of the stable form against float64
//! truth, one panel per chunk length and Δ distribution.

use super::{StabilityRow, UNIFORM_DT};
use crate::figure::{title_font, DrawResult, Figure, GREY, PALETTE, RED};
use plotters::coord::Shift;
use plotters::prelude::*;

/// Section 4: error of the closed form and of the stable form against float64 truth.
#[derive(Debug)]
pub struct StabilityFigure<'a> {
    /// The sweep with every `Δ_t = UNIFORM_DT`.
    pub uniform: &'a [StabilityRow],
    /// The sweep with `Δ_t` drawn as upstream.
    pub upstream: &'a [StabilityRow],
    /// The names of the backends in `StabilityRow::backends`.
    pub backends: &'a [String],
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
            title_font(),
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
                ("closed form, f32".to_string(), RED, 3),
                (
                    "closed form, float64".to_string(),
                    RGBColor(255, 152, 150),
                    2,
                ),
                ("stable, f32".to_string(), PALETTE[0], 3),
                ("stable, float64".to_string(), RGBColor(158, 202, 225), 2),
            ];
            for (i, b) in self.backends.iter().enumerate() {
                let c = PALETTE[2 + i % 2];
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
                        GREY.stroke_width(1),
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
