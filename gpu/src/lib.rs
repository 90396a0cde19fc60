//! # ssd-gpu
//!
//! The CUDA backend of the Mamba-2 SSD layer (cudarc with dynamic loading, NVRTC).
//! Kernels arrive with the CUDA issue; see DESIGN.md §5.

pub use ssd_reference::SsdError;
