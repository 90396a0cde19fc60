//! # ssd-gpu
//!
//! The CUDA backend of the Mamba-2 SSD layer: every kernel of the op family (the five forward
//! kernels, every backward kernel, `selective_state_update`, `rmsnorm_gated`, `swiglu`) as CUDA C
//! in `gpu/kernels/*.cu`, compiled by NVRTC at first use for the device's architecture and
//! cached per process; loaded through `cudarc` with dynamic loading, so this crate builds and
//! runs (answering [`SsdError::NoCudaDriver`]) on machines without CUDA.
//!
//! Arithmetic is f32 (fused multiply-adds, no TF32, no fast math) but for the matrix products of
//! `bmm_chunk`, `chunk_state`, `chunk_scan`, `chunk_scan_bwd_dstates`, `chunk_scan_chunk_state_bwd_dx`,
//! `chunk_state_bwd_db` and `chunk_scan_bwd_dc`, which run on the f64 tensor cores from exactly
//! converted f32 operands (exact products, f64 sums, one rounding to f32: at least as accurate
//! as f32 FMAs); indices are 64-bit,
//! and every reduction has a fixed order (no float atomics): results are bit-identical run to
//! run. The matmul-shaped work (CB, chunk states, chunk scan, dx, dB, dC, dCB, ddA_intra) runs
//! through shared-memory tiled cores in kernels/common.cuh with the same operand loaders:
//! `gemm_loop` (f32 FMAs; double-buffered operand tiles, coalesced global loads along the
//! contiguous axis of each operand, register tiles per thread of 4 × 4 or 8 × 8 (bmm_chunk_bwd,
//! 64 × 128 outputs from 128 threads)) and `mma_loop` (the same tiles feeding `mma.sync`
//! m16n8k4 .f64, 64 × 64 outputs from 8 warps: bmm_chunk, chunk_state, dstates, chunk_scan, dx,
//! db, dc); whole, aligned tiles without `seq_idx` take a form of the loaders without masks or
//! bounds checks, and for bmm_chunk, chunk_state, chunk_scan, db and dc asynchronous forms
//! (cp.async copies through three or four stages, products on `mma.sync` m16n8k8 .f64):
//! `mma_loop_async` (a block barrier per step, the per-token factors applied in shared memory;
//! bmm_chunk, db, dc) and `mma_mbar_loop` (per-stage mbarriers instead of the block barrier, the
//! factors applied as the fragments are read; chunk_state, dstates, chunk_scan).
//!
//! ```no_run
//! use ssd_gpu::{DeviceInputs, Gpu};
//! # fn f(problem: &ssd_reference::Problem<f32>) -> Result<(), ssd_reference::SsdError> {
//! let gpu = Gpu::new()?; // Err(NoCudaDriver | NoCudaDevice) without a GPU, never a panic
//! let inputs = DeviceInputs::upload(&gpu, &problem.inputs(), &problem.options)?;
//! let out = gpu.mamba_chunk_scan_combined(&inputs, &problem.options)?;
//! let host = out.download(&gpu)?;
//! # Ok(()) }
//! ```
//!
//! Kernel functions are methods of [`Gpu`] with the argument lists of docs/design.md §5.1
//! (device buffers in place of views): [`Gpu::chunk_cumsum`], [`Gpu::chunk_state`],
//! [`Gpu::state_passing`], [`Gpu::bmm_chunk`], [`Gpu::chunk_scan`], the backward kernels
//! ([`Gpu::chunk_scan_bwd_dz`] … [`Gpu::chunk_cumsum_bwd`]), [`Gpu::selective_state_update`],
//! [`Gpu::rmsnorm_gated`], [`Gpu::swiglu`] and their backward, and the combined calls
//! [`Gpu::mamba_chunk_scan_combined`] and [`Gpu::mamba_chunk_scan_combined_bwd`].

mod array;
mod backward;
mod combined;
mod decode;
mod device;
mod forward;
mod norm;

pub use array::{
    DeviceArray, DeviceArray1, DeviceArray2, DeviceArray3, DeviceArray4, DeviceArray5, DeviceArrayD,
};
pub use combined::{
    DeviceAAdjoint, DeviceGradients, DeviceInputs, DeviceOutputs, GpuChunkedForward,
};
pub use decode::DeviceDecodeInputs;
pub use device::{hash_value, probe, Gpu, GpuEvent};
pub use ssd_reference::SsdError;
