//! # ssd-cpu
//!
//! The CPU backend of the Mamba-2 SSD layer (f32, SIMD with `wide`, threads with rayon).
//! Kernels arrive with the CPU issues; see DESIGN.md §5.

pub use ssd_reference::SsdError;
