//! # ssd-notebooks
//!
//! Literate Rust programs (prose in `//!`, code a person runs with one cargo command) that write
//! figures to `notebooks/figures/` and a markdown report. The first notebook arrives with its
//! issue.
