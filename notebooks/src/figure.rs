//! What the notebooks' figures share for rendering: a font for plotters' `ab_glyph` text (loaded
//! at run time, so building needs no system library), and writing one figure as SVG and PNG.
//!
//! Text layout needs a TrueType font in both backends. [`load_font`] looks for one
//! (`SSD_NOTEBOOK_FONT`, then DejaVu Sans / Liberation Sans / Arial at their usual places); when
//! none is found the binaries still write their report with every number, and say that the
//! figures were not rendered.

use plotters::coord::{CoordTranslate, Shift};
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};
use std::error::Error;
use std::path::{Path, PathBuf};

/// What drawing returns.
pub type DrawResult = Result<(), Box<dyn Error>>;

/// Where fonts usually are, after `$SSD_NOTEBOOK_FONT`: (regular, bold).
const FONT_CANDIDATES: [(&str, &str); 6] = [
    (
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",
    ),
    (
        "/usr/share/fonts/TTF/DejaVuSans.ttf",
        "/usr/share/fonts/TTF/DejaVuSans-Bold.ttf",
    ),
    (
        "/usr/share/fonts/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/dejavu/DejaVuSans-Bold.ttf",
    ),
    (
        "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
        "/usr/share/fonts/truetype/liberation/LiberationSans-Bold.ttf",
    ),
    (
        "/System/Library/Fonts/Supplemental/Arial.ttf",
        "/System/Library/Fonts/Supplemental/Arial Bold.ttf",
    ),
    (
        "C:\\Windows\\Fonts\\arial.ttf",
        "C:\\Windows\\Fonts\\arialbd.ttf",
    ),
];

fn register(path: &Path, style: FontStyle) -> bool {
    let Ok(bytes) = std::fs::read(path) else {
        return false;
    };
    // plotters keeps fonts for the life of the process; one font file, leaked once.
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    register_font("sans-serif", style, bytes).is_ok()
}

/// Registers a TrueType font as plotters' "sans-serif"; returns its path, or `None` when no font
/// was found (then nothing can be rendered).
pub fn load_font() -> Option<PathBuf> {
    let env = std::env::var_os("SSD_NOTEBOOK_FONT").map(PathBuf::from);
    if let Some(p) = env {
        if register(&p, FontStyle::Normal) {
            return Some(p);
        }
    }
    for (regular, bold) in FONT_CANDIDATES {
        let p = PathBuf::from(regular);
        if register(&p, FontStyle::Normal) {
            register(Path::new(bold), FontStyle::Bold);
            return Some(p);
        }
    }
    None
}

/// A figure that can draw itself on any plotters backend.
pub trait Figure {
    /// Width and height in pixels.
    fn size(&self) -> (u32, u32);
    /// Draws on `root` (already filled white).
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult
    where
        DB::ErrorType: 'static;
}

/// Writes `fig` to `dir/stem.svg` and `dir/stem.png`; returns the two paths.
pub fn render(fig: &impl Figure, dir: &Path, stem: &str) -> Result<[PathBuf; 2], Box<dyn Error>> {
    std::fs::create_dir_all(dir)?;
    let svg = dir.join(format!("{stem}.svg"));
    let png = dir.join(format!("{stem}.png"));
    {
        let root = SVGBackend::new(&svg, fig.size()).into_drawing_area();
        root.fill(&WHITE)?;
        fig.draw(&root)?;
        root.present()?;
    }
    {
        let root = BitMapBackend::new(&png, fig.size()).into_drawing_area();
        root.fill(&WHITE)?;
        fig.draw(&root)?;
        root.present()?;
    }
    Ok([svg, png])
}

/// Grey, for guides: chunk boundaries, reference levels.
pub const GREY: RGBColor = RGBColor(150, 150, 150);

/// Red, for the check a figure compares with (finite differences, the recurrence, the closed
/// form).
pub const RED: RGBColor = RGBColor(214, 39, 40);

/// A palette that stays apart in colour and in grey: blue, orange, green, purple, then black.
pub const PALETTE: [RGBColor; 5] = [
    RGBColor(31, 119, 180),
    RGBColor(230, 120, 20),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(0, 0, 0),
];

/// The title of a whole figure: bold, 22 px.
pub fn title_font() -> TextStyle<'static> {
    ("sans-serif", 22).into_font().style(FontStyle::Bold).into()
}

/// The smallest and largest of `vs`, each moved out by 6 % of their distance (a y range with
/// room around the data).
pub fn padded_range<'a>(vs: impl IntoIterator<Item = &'a f64>) -> (f64, f64) {
    let (lo, hi) = vs
        .into_iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    let pad = 0.06 * (hi - lo).max(1e-300);
    (lo - pad, hi + pad)
}

/// A legend's sample of a line series: `len` pixels of `style` from the legend entry's anchor.
pub fn line_sample(
    style: impl Into<ShapeStyle>,
    len: i32,
) -> impl Fn((i32, i32)) -> PathElement<(i32, i32)> {
    let style = style.into();
    move |(x, y)| PathElement::new(vec![(x, y), (x + len, y)], style)
}

/// Draws the labels of `chart`'s series in a box at `position`: `font_size` px text on 85 %
/// white, a black border.
pub fn draw_legend<'a, DB: DrawingBackend + 'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
    position: SeriesLabelPosition,
    font_size: u32,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    chart
        .configure_series_labels()
        .position(position)
        .label_font(("sans-serif", font_size))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}
