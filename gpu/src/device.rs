//! The [`Gpu`] handle: a safe probe of the driver and the device, the kernels compiled by NVRTC
//! at first use for the device's architecture (cached per process), streams, allocation,
//! upload/download and kernel launches.
//!
//! `cudarc` panics when `libcuda` is absent, so [`Gpu::new`] first asks
//! `cudarc::driver::sys::is_culib_present()` and the device count and answers
//! [`SsdError::NoCudaDriver`] / [`SsdError::NoCudaDevice`] instead.

use crate::array::DeviceArray;
use cudarc::driver::{
    sys, CudaContext, CudaEvent, CudaFunction, CudaModule, CudaSlice, CudaStream, DevicePtr,
    DeviceRepr, LaunchConfig, PushKernelArg, ValidAsZeroBits,
};
use ndarray::{Array, ArrayBase, Data, Dimension};
use ssd_reference::SsdError;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// The CUDA C sources, in the order they are concatenated into one NVRTC program.
pub(crate) const SOURCES: [(&str, &str); 5] = [
    ("common.cuh", include_str!("../kernels/common.cuh")),
    ("forward.cu", include_str!("../kernels/forward.cu")),
    ("backward.cu", include_str!("../kernels/backward.cu")),
    ("decode.cu", include_str!("../kernels/decode.cu")),
    ("norm.cu", include_str!("../kernels/norm.cu")),
];

/// Every `extern "C"` kernel of [`SOURCES`].
pub(crate) const KERNELS: [&str; 30] = [
    "fill_f32_kernel",
    "fma_peak_kernel",
    "fill_hash_kernel",
    "chunk_cumsum_kernel",
    "chunk_state_kernel",
    "state_passing_kernel",
    "chunk_state_passing_kernel",
    "bmm_chunk_kernel",
    "chunk_scan_kernel",
    "bwd_dz_kernel",
    "sum_rows_kernel",
    "state_passing_bwd_kernel",
    "state_passing_bwd_reduce_kernel",
    "bwd_dx_kernel",
    "bwd_dbc_kernel",
    "reduce_parts_kernel",
    "bwd_dcb_kernel",
    "bwd_ddacs_kernel",
    "bwd_dcb_ddacs_kernel",
    "dcb_sum_parts_kernel",
    "bmm_chunk_bwd_kernel",
    "assemble_dda_kernel",
    "chunk_cumsum_bwd_kernel",
    "chunk_cumsum_bwd_reduce_kernel",
    "selective_state_update_kernel",
    "rmsnorm_gated_kernel",
    "rmsnorm_gated_bwd_kernel",
    "sum_rows_chunked_kernel",
    "swiglu_kernel",
    "swiglu_bwd_kernel",
];

/// Threads per block of the tiled kernels (`NT` in the CUDA sources).
pub(crate) const NT: u32 = 256;

/// Threads per block of the kernels with 8 × 8 outputs per thread (`NT8` in common.cuh):
/// `bmm_chunk_bwd_kernel`.
pub(crate) const NT8: u32 = 128;

pub(crate) fn cuda_err(context: impl Into<String>, e: impl std::fmt::Display) -> SsdError {
    SsdError::Cuda {
        context: context.into(),
        message: e.to_string(),
    }
}

/// The compiled module and its functions.
struct Kernels {
    _module: Arc<CudaModule>,
    funcs: HashMap<&'static str, CudaFunction>,
}

/// Per-device state shared by every handle of one device in this process.
struct Device {
    ctx: Arc<CudaContext>,
    default_stream: Arc<CudaStream>,
    name: String,
    compute_capability: (i32, i32),
    kernels: OnceLock<Result<Kernels, SsdError>>,
    poison: AtomicBool,
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device")
            .field("name", &self.name)
            .field("compute_capability", &self.compute_capability)
            .finish()
    }
}

static DEVICES: Mutex<Vec<(usize, Arc<Device>)>> = Mutex::new(Vec::new());

/// A handle on one CUDA device and one stream. Cheap to clone; every operation called on it is
/// enqueued on its stream, in call order, and returns without waiting (downloads wait).
///
/// Buffers ([`DeviceArray`]) may come from another handle's stream: the operation then makes
/// its stream wait for the buffer's stream first, and the buffer's stream wait for it after.
#[derive(Clone)]
pub struct Gpu {
    dev: Arc<Device>,
    stream: Arc<CudaStream>,
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gpu")
            .field("device", &self.dev.name)
            .field("compute_capability", &self.dev.compute_capability)
            .finish()
    }
}

/// A kernel argument.
#[derive(Debug)]
pub(crate) enum Arg<'a> {
    /// A device buffer (pointer, allocating stream).
    Buf(u64, &'a Arc<CudaStream>),
    /// A null pointer (absent optional tensor).
    Null,
    /// A 64-bit integer.
    I(i64),
    /// A 32-bit integer / flag.
    I32(i32),
    /// An f32 scalar.
    F(f32),
    /// A 64-bit unsigned scalar.
    U(u64),
}

enum Val {
    U(u64),
    I(i64),
    I32(i32),
    F(f32),
}

/// Checks that the CUDA driver library loads and at least one device is present.
///
/// Never panics: answers [`SsdError::NoCudaDriver`] when `libcuda` cannot be loaded (or
/// `cuInit` fails for a reason other than "no device") and [`SsdError::NoCudaDevice`] when the
/// driver reports no device. Returns the device count.
pub fn probe() -> Result<usize, SsdError> {
    // SAFETY: only tries to dlopen the driver library by its usual names; no CUDA call is made.
    let present = unsafe { sys::is_culib_present() };
    if !present {
        return Err(SsdError::NoCudaDriver(
            "the CUDA driver library (libcuda.so) could not be loaded".into(),
        ));
    }
    match CudaContext::device_count() {
        Ok(n) if n > 0 => Ok(n as usize),
        Ok(_) => Err(SsdError::NoCudaDevice),
        Err(e) if e.0 == sys::cudaError_enum::CUDA_ERROR_NO_DEVICE => Err(SsdError::NoCudaDevice),
        Err(e) => Err(SsdError::NoCudaDriver(format!("cuInit failed: {e}"))),
    }
}

impl Gpu {
    /// A handle on device 0 and its default stream of this crate.
    ///
    /// Errors: [`SsdError::NoCudaDriver`], [`SsdError::NoCudaDevice`], [`SsdError::Cuda`].
    pub fn new() -> Result<Gpu, SsdError> {
        Gpu::with_ordinal(0)
    }

    /// A handle on device `ordinal`.
    pub fn with_ordinal(ordinal: usize) -> Result<Gpu, SsdError> {
        let count = probe()?;
        if ordinal >= count {
            return Err(SsdError::invalid(
                "ordinal",
                format!("device {ordinal} requested, {count} present"),
            ));
        }
        let mut devices = DEVICES.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, d)) = devices.iter().find(|(o, _)| *o == ordinal) {
            return Ok(Gpu {
                dev: d.clone(),
                stream: d.default_stream.clone(),
            });
        }
        let ctx = CudaContext::new(ordinal).map_err(|e| cuda_err("creating the context", e))?;
        // SAFETY: event tracking is turned off before any buffer exists; this crate orders
        // cross-stream uses itself (see `Gpu::launch` and `DeviceArray`), and every buffer is
        // freed on the stream that allocated it, after the work enqueued on it.
        unsafe { ctx.disable_event_tracking() };
        let name = ctx
            .name()
            .map_err(|e| cuda_err("reading the device name", e))?;
        let compute_capability = ctx
            .compute_capability()
            .map_err(|e| cuda_err("reading the compute capability", e))?;
        keep_pool_memory(&ctx)?;
        let default_stream = ctx
            .new_stream()
            .map_err(|e| cuda_err("creating a stream", e))?;
        let poison = std::env::var("SSD_GPU_POISON").is_ok_and(|v| v == "1");
        let dev = Arc::new(Device {
            ctx,
            default_stream: default_stream.clone(),
            name,
            compute_capability,
            kernels: OnceLock::new(),
            poison: AtomicBool::new(poison),
        });
        devices.push((ordinal, dev.clone()));
        Ok(Gpu {
            dev,
            stream: default_stream,
        })
    }

    /// Fill every output buffer the kernels allocate with NaN before they write it (a test
    /// aid: an element a kernel forgets to write then shows as NaN). Applies to every handle of
    /// this device; also switched on by the environment variable `SSD_GPU_POISON=1`.
    pub fn set_poison(&self, on: bool) {
        self.dev.poison.store(on, Ordering::Relaxed);
    }

    /// A handle on the same device with a new stream of its own.
    pub fn new_stream(&self) -> Result<Gpu, SsdError> {
        let stream = self
            .dev
            .ctx
            .new_stream()
            .map_err(|e| cuda_err("creating a stream", e))?;
        Ok(Gpu {
            dev: self.dev.clone(),
            stream,
        })
    }

    /// The device's name (e.g. `NVIDIA H100 80GB HBM3`).
    pub fn name(&self) -> &str {
        &self.dev.name
    }

    /// (major, minor) compute capability.
    pub fn compute_capability(&self) -> (i32, i32) {
        self.dev.compute_capability
    }

    /// Number of streaming multiprocessors.
    pub fn multiprocessors(&self) -> Result<usize, SsdError> {
        self.dev
            .ctx
            .attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .map(|v| v as usize)
            .map_err(|e| cuda_err("reading the SM count", e))
    }

    /// The stream this handle enqueues on.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// Waits until everything enqueued on this handle's stream has finished; reports any
    /// asynchronous error of that work.
    pub fn synchronize(&self) -> Result<(), SsdError> {
        self.stream
            .synchronize()
            .map_err(|e| cuda_err("synchronizing the stream", e))
    }

    /// Compiles every kernel now (NVRTC for the device's architecture) rather than at first use.
    /// Errors carry NVRTC's log.
    pub fn compile(&self) -> Result<(), SsdError> {
        self.kernels().map(|_| ())
    }

    /// (kernel, registers per thread, local memory bytes per thread, static shared bytes) for
    /// every kernel: the compiler's resource report, read off the loaded functions.
    pub fn resource_report(&self) -> Result<Vec<(&'static str, i32, i32, i32)>, SsdError> {
        let k = self.kernels()?;
        let mut rows = Vec::new();
        for name in KERNELS {
            let f = &k.funcs[name];
            let attr = |a| {
                f.get_attribute(a)
                    .map_err(|e| cuda_err(format!("attributes of {name}"), e))
            };
            rows.push((
                name,
                attr(sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_NUM_REGS)?,
                attr(sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES)?,
                attr(sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES)?,
            ));
        }
        Ok(rows)
    }

    fn kernels(&self) -> Result<&Kernels, SsdError> {
        self.dev
            .kernels
            .get_or_init(|| compile_kernels(&self.dev))
            .as_ref()
            .map_err(|e| e.clone())
    }

    /// Launches `name` on this handle's stream with a 1-D grid of `grid` blocks.
    pub(crate) fn launch(
        &self,
        name: &'static str,
        grid: u64,
        block: u32,
        args: &[Arg<'_>],
    ) -> Result<(), SsdError> {
        if grid == 0 {
            return Ok(());
        }
        if grid > i32::MAX as u64 {
            return Err(SsdError::invalid(
                "problem size",
                format!("{name} would need {grid} blocks (more than 2^31 − 1)"),
            ));
        }
        let k = self.kernels()?;
        let f = &k.funcs[name];
        let mut foreign: Vec<&Arc<CudaStream>> = Vec::new();
        let mut vals = Vec::with_capacity(args.len());
        for a in args {
            match a {
                Arg::Buf(p, s) => {
                    if s.cu_stream() != self.stream.cu_stream()
                        && !foreign.iter().any(|f| f.cu_stream() == s.cu_stream())
                    {
                        foreign.push(s);
                    }
                    vals.push(Val::U(*p));
                }
                Arg::Null => vals.push(Val::U(0)),
                Arg::I(v) => vals.push(Val::I(*v)),
                Arg::I32(v) => vals.push(Val::I32(*v)),
                Arg::F(v) => vals.push(Val::F(*v)),
                Arg::U(v) => vals.push(Val::U(*v)),
            }
        }
        for s in &foreign {
            self.stream
                .join(s)
                .map_err(|e| cuda_err("ordering streams", e))?;
        }
        let mut lb = self.stream.launch_builder(f);
        for v in &vals {
            match v {
                Val::U(x) => lb.arg(x),
                Val::I(x) => lb.arg(x),
                Val::I32(x) => lb.arg(x),
                Val::F(x) => lb.arg(x),
            };
        }
        let cfg = LaunchConfig {
            grid_dim: (grid as u32, 1, 1),
            block_dim: (block, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: the argument list matches the kernel's signature in kernels/*.cu (each call
        // site passes the pointers and scalars in declaration order, with the element counts
        // the kernel indexes by), every pointer is a live allocation of this context or null
        // where the kernel accepts null, and the buffers outlive the enqueued work (they are
        // freed stream-ordered on their own stream, which waits for this one when it differs).
        unsafe { lb.launch(cfg) }.map_err(|e| cuda_err(format!("launching {name}"), e))?;
        for s in &foreign {
            s.join(&self.stream)
                .map_err(|e| cuda_err("ordering streams", e))?;
        }
        Ok(())
    }

    /// An uninitialised f32 buffer of `dim` (filled with NaN when `SSD_GPU_POISON=1`, so that
    /// unwritten outputs show in tests).
    pub(crate) fn alloc_out<D: Dimension>(&self, dim: D) -> Result<DeviceArray<f32, D>, SsdError> {
        let len = dim.size();
        // SAFETY: every kernel that receives an `alloc_out` buffer writes all of its elements
        // before they are read (the poison mode checks this in the tests).
        let buf: CudaSlice<f32> = unsafe { self.stream.alloc(len.max(1)) }
            .map_err(|e| cuda_err("allocating device memory", e))?;
        let arr = DeviceArray::from_parts(buf, dim);
        if self.dev.poison.load(Ordering::Relaxed) {
            self.fill(&arr, f32::NAN)?;
        }
        Ok(arr)
    }

    /// A zero-filled buffer of `dim`.
    pub fn zeros<T: DeviceRepr + ValidAsZeroBits, D: Dimension>(
        &self,
        dim: D,
    ) -> Result<DeviceArray<T, D>, SsdError> {
        let buf = self
            .stream
            .alloc_zeros::<T>(dim.size().max(1))
            .map_err(|e| cuda_err("allocating device memory", e))?;
        Ok(DeviceArray::from_parts(buf, dim))
    }

    /// Fills an f32 buffer with `value`.
    pub fn fill<D: Dimension>(&self, a: &DeviceArray<f32, D>, value: f32) -> Result<(), SsdError> {
        let n = a.len() as u64;
        self.launch(
            "fill_f32_kernel",
            n.div_ceil(NT as u64).min(65536),
            NT,
            &[a.arg(), Arg::I(n as i64), Arg::F(value)],
        )
    }

    /// Fills an f32 buffer with `scale · (u − 1/2)`, `u = (splitmix64(seed ^ i) >> 40) / 2²⁴`:
    /// values reproducible bit for bit on the host (see [`hash_value`]); for inputs too large to
    /// draw and upload from the host.
    pub fn fill_hash<D: Dimension>(
        &self,
        a: &DeviceArray<f32, D>,
        seed: u64,
        scale: f32,
    ) -> Result<(), SsdError> {
        let n = a.len() as u64;
        self.launch(
            "fill_hash_kernel",
            n.div_ceil(NT as u64).min(65536),
            NT,
            &[a.arg(), Arg::I(n as i64), Arg::U(seed), Arg::F(scale)],
        )
    }

    /// Copies an ndarray (any layout) to a new device buffer.
    pub fn upload<T, S, D>(&self, a: &ArrayBase<S, D>) -> Result<DeviceArray<T, D>, SsdError>
    where
        T: DeviceRepr + Clone + Default,
        S: Data<Elem = T>,
        D: Dimension,
    {
        let std = a.as_standard_layout();
        let slice = std.as_slice().expect("standard layout is contiguous");
        let buf = if slice.is_empty() {
            self.stream.memcpy_stod(&[T::default()])
        } else {
            self.stream.memcpy_stod(slice)
        }
        .map_err(|e| cuda_err("uploading", e))?;
        Ok(DeviceArray::from_parts(buf, a.raw_dim()))
    }

    /// Copies a device buffer back into an ndarray (waits for the stream).
    pub fn download<T, D>(&self, a: &DeviceArray<T, D>) -> Result<Array<T, D>, SsdError>
    where
        T: DeviceRepr + Clone + Default,
        D: Dimension,
    {
        let v = self.download_range(a, 0..a.len())?;
        Array::from_shape_vec(a.raw_dim(), v).map_err(|e| cuda_err("downloading", e))
    }

    /// Copies the flat (row-major) element range `range` of a device buffer to the host.
    pub fn download_range<T, D>(
        &self,
        a: &DeviceArray<T, D>,
        range: std::ops::Range<usize>,
    ) -> Result<Vec<T>, SsdError>
    where
        T: DeviceRepr + Clone + Default,
        D: Dimension,
    {
        if range.start > range.end || range.end > a.len() {
            return Err(SsdError::invalid(
                "range",
                format!("{range:?} outside a buffer of {}", a.len()),
            ));
        }
        if range.is_empty() {
            return Ok(Vec::new());
        }
        if a.buf.stream().cu_stream() != self.stream.cu_stream() {
            self.stream
                .join(a.buf.stream())
                .map_err(|e| cuda_err("ordering streams", e))?;
        }
        let mut out = vec![T::default(); range.len()];
        self.stream
            .memcpy_dtoh(&a.buf.slice(range), &mut out)
            .map_err(|e| cuda_err("downloading", e))?;
        self.synchronize()?;
        Ok(out)
    }

    /// Measured f32 FMA throughput of the device, GFLOP/s (2 FLOPs per FMA): a kernel of
    /// independent FMA chains on every SM, timed with events (median of `reps`).
    pub fn fma_peak_gflops(&self, reps: usize) -> Result<f64, SsdError> {
        let blocks = self.multiprocessors()? * 8;
        let out = self.alloc_out(ndarray::Ix1(blocks * NT as usize))?;
        let iters: i64 = 1 << 16;
        let run = || {
            self.launch(
                "fma_peak_kernel",
                blocks as u64,
                NT,
                &[out.arg(), Arg::I(iters), Arg::F(0.999)],
            )
        };
        run()?;
        let mut t = Vec::new();
        for _ in 0..reps.max(1) {
            let e0 = self.record_event()?;
            run()?;
            let e1 = self.record_event()?;
            t.push(e0.elapsed_ms(&e1)?);
        }
        t.sort_by(f64::total_cmp);
        let ms = t[t.len() / 2];
        let flops = 2.0 * 8.0 * iters as f64 * (blocks * NT as usize) as f64;
        Ok(flops / (ms * 1e-3) / 1e9)
    }

    /// Records an event on this handle's stream (for timing with [`GpuEvent::elapsed_ms`]).
    pub fn record_event(&self) -> Result<GpuEvent, SsdError> {
        let ev = self
            .dev
            .ctx
            .new_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT))
            .map_err(|e| cuda_err("creating an event", e))?;
        ev.record(&self.stream)
            .map_err(|e| cuda_err("recording an event", e))?;
        Ok(GpuEvent(ev))
    }

    /// Device-to-device copy of `a` into a new buffer (to measure the copy bandwidth).
    pub fn copy<T: DeviceRepr, D: Dimension>(
        &self,
        a: &DeviceArray<T, D>,
    ) -> Result<DeviceArray<T, D>, SsdError> {
        let buf = self
            .stream
            .clone_dtod(&a.buf)
            .map_err(|e| cuda_err("copying on the device", e))?;
        Ok(DeviceArray::from_parts(buf, a.raw_dim()))
    }
}

/// An event recorded on a stream.
#[derive(Debug)]
pub struct GpuEvent(CudaEvent);

impl GpuEvent {
    /// Milliseconds from `self` to `later` (waits for both).
    pub fn elapsed_ms(&self, later: &GpuEvent) -> Result<f64, SsdError> {
        self.0
            .elapsed_ms(&later.0)
            .map(f64::from)
            .map_err(|e| cuda_err("reading an event", e))
    }
}

/// The host value of [`Gpu::fill_hash`] at flat index `i`.
pub fn hash_value(seed: u64, i: u64, scale: f32) -> f32 {
    let mut z = seed ^ i;
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    let u = (z >> 40) as u32 as f32 * (1.0 / 16_777_216.0) - 0.5;
    u * scale
}

/// Keeps freed memory in the device's default pool (release threshold = ∞), so stream-ordered
/// allocations in a loop are served from the pool instead of the driver.
fn keep_pool_memory(ctx: &Arc<CudaContext>) -> Result<(), SsdError> {
    ctx.bind_to_thread()
        .map_err(|e| cuda_err("binding the context", e))?;
    let mut pool: sys::CUmemoryPool = std::ptr::null_mut();
    // SAFETY: plain driver calls on the device this context was created for; `pool` and
    // `threshold` outlive the calls.
    unsafe {
        let r = sys::cuDeviceGetDefaultMemPool(&mut pool, ctx.cu_device());
        if r != sys::cudaError_enum::CUDA_SUCCESS {
            // no memory pools on this device: cudarc allocates synchronously instead
            return Ok(());
        }
        let mut threshold: u64 = u64::MAX;
        let r = sys::cuMemPoolSetAttribute(
            pool,
            sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
            &mut threshold as *mut u64 as *mut std::ffi::c_void,
        );
        if r != sys::cudaError_enum::CUDA_SUCCESS {
            return Err(cuda_err("configuring the memory pool", format!("{r:?}")));
        }
    }
    Ok(())
}

/// Whether the NVRTC library can be loaded; an error saying so otherwise.
fn nvrtc_present() -> Result<(), SsdError> {
    // SAFETY: only tries to dlopen the NVRTC library.
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        return Err(SsdError::Cuda {
            context: "loading NVRTC".into(),
            message: "the NVRTC library (libnvrtc.so) could not be loaded".into(),
        });
    }
    Ok(())
}

/// [`SOURCES`] as one NVRTC program (each file's lines numbered from 1 in messages).
fn program_source() -> String {
    let mut src = String::new();
    for (name, text) in SOURCES {
        src.push_str(&format!("#line 1 \"{name}\"\n"));
        src.push_str(text);
        src.push('\n');
    }
    src
}

/// NVRTC's options for `--gpu-architecture=arch` (`compute_90` gives PTX, `sm_90` a cubin).
fn nvrtc_options(arch: &str) -> Vec<String> {
    vec![
        format!("--gpu-architecture={arch}"),
        "--std=c++17".into(),
        // Unannotated functions (the generic lambdas that instantiate a kernel body twice,
        // as a general and a fast form) are device code; there is no host code here.
        "--device-as-default-execution-space".into(),
    ]
}

fn compile_kernels(dev: &Device) -> Result<Kernels, SsdError> {
    nvrtc_present()?;
    let (major, minor) = dev.compute_capability;
    let opts = cudarc::nvrtc::CompileOptions {
        options: nvrtc_options(&format!("compute_{major}{minor}")),
        ..Default::default()
    };
    let ptx =
        cudarc::nvrtc::compile_ptx_with_opts(program_source(), opts).map_err(|e| match e {
            cudarc::nvrtc::CompileError::CompileError { log, .. } => SsdError::Cuda {
                context: "NVRTC compilation of gpu/kernels/*.cu".into(),
                message: log.to_string_lossy().into_owned(),
            },
            other => cuda_err("NVRTC", other),
        })?;
    let module = dev
        .ctx
        .load_module(ptx)
        .map_err(|e| cuda_err("loading the compiled module", e))?;
    let mut funcs = HashMap::new();
    for name in KERNELS {
        let f = module
            .load_function(name)
            .map_err(|e| cuda_err(format!("looking up kernel {name}"), e))?;
        funcs.insert(name, f);
    }
    Ok(Kernels {
        _module: module,
        funcs,
    })
}

impl<T: DeviceRepr, D: Dimension> DeviceArray<T, D> {
    /// This buffer as a kernel argument.
    pub(crate) fn arg(&self) -> Arg<'_> {
        let (p, _guard) = self.buf.device_ptr(self.buf.stream());
        Arg::Buf(p, self.buf.stream())
    }
}

/// An optional buffer as a kernel argument (null when absent).
pub(crate) fn opt_arg<T: DeviceRepr, D: Dimension>(a: Option<&DeviceArray<T, D>>) -> Arg<'_> {
    a.map_or(Arg::Null, |a| a.arg())
}

#[cfg(test)]
mod tests {
    use super::{nvrtc_options, nvrtc_present, program_source, KERNELS, SOURCES};

    /// The kernels compile, through ptxas, to a Hopper (sm_90) cubin with every listed kernel in
    /// it, where an NVRTC library can be loaded, with or without a GPU: `.ci/run` fetches one
    /// from PyPI, so a CUDA error (a typo in an inline PTX instruction included, which NVRTC's
    /// PTX output alone would pass on to the driver) fails CI, not only the device run. Without
    /// NVRTC it prints `skipped: no NVRTC library` and passes, unless `SSD_REQUIRE_NVRTC=1`.
    #[test]
    fn kernels_compile_for_hopper_with_nvrtc() {
        use cudarc::nvrtc::{result, sys};
        use std::ffi::CString;
        if let Err(e) = nvrtc_present() {
            assert!(
                std::env::var("SSD_REQUIRE_NVRTC").map_or(true, |v| v != "1"),
                "SSD_REQUIRE_NVRTC=1 but {e}"
            );
            println!("skipped: no NVRTC library ({e})");
            return;
        }
        let src = CString::new(program_source()).unwrap();
        let prog = result::create_program(&src, None).unwrap();
        // SAFETY: `prog` is a live program until destroyed at the end; the buffers passed to
        // NVRTC have the sizes it reported.
        unsafe {
            let compiled = result::compile_program(prog, &nvrtc_options("sm_90"));
            let log = result::get_program_log(prog).unwrap();
            let log: String = log
                .iter()
                .take_while(|c| **c != 0)
                .map(|c| *c as u8 as char)
                .collect();
            assert!(compiled.is_ok(), "NVRTC (sm_90):\n{log}");
            let mut size = 0usize;
            sys::nvrtcGetCUBINSize(prog, &mut size).result().unwrap();
            let mut cubin = vec![0u8; size];
            sys::nvrtcGetCUBIN(prog, cubin.as_mut_ptr().cast())
                .result()
                .unwrap();
            result::destroy_program(prog).unwrap();
            for name in KERNELS {
                assert!(
                    cubin
                        .windows(name.len() + 1)
                        .any(|w| &w[..name.len()] == name.as_bytes() && w[name.len()] == 0),
                    "{name} is not in the sm_90 cubin"
                );
            }
        }
    }

    /// Every kernel named in a launch is in [`KERNELS`] (looked up once, when the module is
    /// loaded; a name missing there would only fail when launched), every entry of [`KERNELS`]
    /// is launched somewhere, and every entry is defined in [`SOURCES`].
    #[test]
    fn launched_kernels_are_listed_and_defined() {
        let device = include_str!("device.rs");
        // device.rs without the list itself
        let list_start = device.find("pub(crate) const KERNELS").unwrap();
        let list_end = list_start + device[list_start..].find("];").unwrap();
        let outside_list = format!("{}{}", &device[..list_start], &device[list_end..]);
        let rust = [
            include_str!("forward.rs"),
            include_str!("backward.rs"),
            include_str!("combined.rs"),
            include_str!("decode.rs"),
            include_str!("norm.rs"),
            outside_list.as_str(),
        ];
        let mut launched = Vec::new();
        for text in rust {
            for piece in text.split('"').skip(1).step_by(2) {
                let is_name = piece.ends_with("_kernel")
                    && piece
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c == '_' || c.is_ascii_digit());
                if is_name {
                    assert!(
                        KERNELS.contains(&piece),
                        "{piece} is launched but not in KERNELS"
                    );
                    launched.push(piece);
                }
            }
        }
        for name in KERNELS {
            assert!(
                launched.contains(&name),
                "{name} is in KERNELS but never launched"
            );
            let defined = SOURCES
                .iter()
                .any(|(_, src)| src.contains(&format!(" {name}(")));
            assert!(defined, "{name} is in KERNELS but no source defines it");
        }
    }
}
