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
//! Everything lives in `ssd_notebooks::a_adjoint_flow`: the data of each section as pure functions,
//! each section's figure beside them, and the report in `report`; this file only runs them.

use ssd_notebooks::a_adjoint_flow::{available_backends, report, Data, FlowSpec};
use ssd_notebooks::figure;
use std::error::Error;
use std::path::PathBuf;
use std::time::Instant;

fn main() -> Result<(), Box<dyn Error>> {
    let start = Instant::now();
    // The report goes to notebooks/ and the figures to notebooks/figures/, or under
    // $SSD_NOTEBOOK_OUT when set (e.g. on a machine without this checkout).
    let dir = std::env::var_os("SSD_NOTEBOOK_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    std::fs::create_dir_all(&dir)?;
    let font = figure::load_font();
    let (backends, backend_notes) = available_backends();
    for n in &backend_notes {
        println!("{n}");
    }

    let mut times = Vec::new();
    let data = Data::compute(FlowSpec::FULL, &backends, backend_notes, &mut times)?;
    data.print_summary();

    let t = Instant::now();
    let figures = match &font {
        Some(path) => {
            println!("font: {}", path.display());
            data.render(&dir.join("figures"))?
        }
        None => {
            println!(
                "no TrueType font found (set SSD_NOTEBOOK_FONT to a .ttf): figures not rendered"
            );
            Vec::new()
        }
    };
    times.push(("rendering", t.elapsed().as_secs_f64()));
    let total = start.elapsed().as_secs_f64();
    let report = report(&data, &figures, font.is_some(), &times, total);
    let path = dir.join("a_adjoint_flow.md");
    std::fs::write(&path, report)?;
    println!("wrote {} in {total:.1} s", path.display());
    Ok(())
}
