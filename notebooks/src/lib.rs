//! # ssd-notebooks
//!
//! Literate Rust programs (prose in `//!`, code a person runs with one cargo command) that write
//! figures to `notebooks/figures/` and a markdown report `notebooks/<name>.md`.
//!
//! Each notebook is a library module of pure data functions parameterised by size (tested small
//! in `notebooks/tests/`), each figure beside the data it draws and the report in a module of its
//! own, and a thin binary that runs them at full size:
//!
//! - [`a_adjoint_flow`]: how the gradient of `A` flows through the four backward kernels that
//!   produce it — `cargo run --release -p ssd-notebooks --bin a_adjoint_flow`.
//!
//! [`figure`] holds what the figures share for rendering (fonts, SVG + PNG output, title font,
//! padded ranges).

pub mod a_adjoint_flow;
pub mod figure;
