//! # ssd-verify
//!
//! How we know an SSD implementation is right: the error metrics and thresholds
//! ([`tolerance`]), seeded generators ([`gen`], [`rng`]) and proptest strategies
//! ([`strategies`]) of whole problems, valid and broken; non-finite results are located by
//! [`finite`].

pub mod backends;
pub mod bench;
pub mod cli;
pub mod fd;
pub mod finite;
pub mod gen;
pub mod matrix;
pub mod npz;
pub mod problem_file;
pub mod rng;
pub mod strategies;
pub mod tolerance;

pub use gen::{DKind, ProblemSpec};
pub use tolerance::{max_abs, rel_l2};
