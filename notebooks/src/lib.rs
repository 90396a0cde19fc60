//! # ssd-notebooks
//!
//! Literate Rust programs (prose in `//!`, code a person runs with one cargo command) that write
//! figures to `notebooks/figures/` and a markdown report `notebooks/<name>.md`.
//!
//! Each notebook is a library module of pure data functions parameterised by size (tested small
//! in `notebooks/tests/`) and a binary that runs them at full size and renders:
//!
//! - [`a_adjoint_flow`]: how the gradient of `A` flows through the four backward kernels that
//!   produce it — `cargo run --release -p ssd-notebooks --bin a_adjoint_flow`.
//!
//! [`figure`] holds what the binaries share for rendering (fonts, SVG + PNG output).

pub mod a_adjoint_flow;
pub mod figure;
