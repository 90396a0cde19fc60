//! The combined forward [mamba_chunk_scan_combined]: the chunked kernels composed in
//! upstream's order on the internal layouts, with the intermediates in a reusable [`Workspace`].
//!
//! `chunk_cumsum` (tiles (b, h)) → `bmm_chunk`, causal blocks only, plus `Cᵀ` packed (tiles
//! (b, c, g)) → the fused `chunk_scan` + `chunk_state` + `state_passing` of [`super::fused`]
//! (tiles (b, h), sequential over the chunks, the state in cache), writing `out` directly.

use super::bmm_chunk::bmm_chunk_core;
use super::chunk_cumsum::chunk_cumsum_core;
use super::chunk_scan::{d_table, ScanArgs};
use super::fused::scan_fused;
use super::recurrent::recurrent_core;
use crate::geom::{ensure, flat, Geom, Seq};
use crate::par::Par;
use crate::validate::validate;
use crate::SsdError;
use ndarray::{Array4, ArrayViewMut4};
use ssd_reference::validate::check_shape;
use ssd_reference::{Inputs, Options, Outputs};

/// Intermediate buffers of the chunked form (Δ, the cumsum, `CB`), kept between calls to avoid
/// allocating (and first-touching) tens of MiB per call. Any workspace works for any problem; it
/// grows as needed. The recurrence that [`mamba_chunk_scan_combined_into`] runs today needs only
/// a few hundred KiB of per-thread scratch and leaves the workspace empty; the argument keeps
/// the API stable whichever form a shape runs.
///
/// ```
/// # use ndarray::{Array1, Array3, Array4};
/// # use ssd_reference::{Inputs, Options};
/// use ssd_cpu::{mamba_chunk_scan_combined_into, Par, Workspace};
/// # let (b, l, h, p, g, n) = (1, 16, 2, 4, 1, 8);
/// # let x = Array4::<f32>::ones((b, l, h, p));
/// # let dt = Array3::<f32>::from_elem((b, l, h), 0.1);
/// # let a = Array1::<f32>::from_elem(h, -1.0);
/// # let bm = Array4::<f32>::from_elem((b, l, g, n), 0.2);
/// # let inputs = Inputs { x: x.view(), dt: dt.view(), a: a.view(), b: bm.view(), c: bm.view(),
/// #     d: None, z: None, dt_bias: None, initial_states: None, seq_idx: None };
/// let mut ws = Workspace::new();
/// let mut out = Array4::<f32>::zeros((b, l, h, p));
/// let mut fin = Array4::<f32>::zeros((b, h, p, n));
/// for _step in 0..3 {
///     mamba_chunk_scan_combined_into(&inputs, &Options::with_chunk_size(8),
///         out.view_mut(), fin.view_mut(), &mut ws, Par::Seq)?;
/// }
/// # Ok::<(), ssd_cpu::SsdError>(())
/// ```
#[derive(Debug, Default)]
pub struct Workspace {
    dt: Vec<f32>,
    hi: Vec<f32>,
    lo: Vec<f32>,
    cb: Vec<f32>,
    ct: Vec<f32>,
}

impl Workspace {
    /// An empty workspace.
    pub fn new() -> Self {
        Self::default()
    }
}

/// The SSD forward of `mamba_chunk_scan_combined`: `out` (b, l, h, p) and `final_states`
/// (b, h, p, n). Every form of docs/design.md §2 computes the same function up to f32 rounding, so
/// this runs the one that is fastest on a CPU at every shape measured: the register-blocked
/// recurrence of [`ssd_recurrent`] (`H_t = exp(Δ_t A) H_{t−1} + Δ_t x_t ⊗ B_t`,
/// `y_t = H_t C_t`, 3 vector operations per 8 state elements and token), not the chunked
/// form [`ssd_chunked`] (≈ the same FLOPs per token at Q = 64 but as smaller products with
/// more data movement). `ssd-verify bench cpu` prints both (`recurrent_ms`, `chunked_ms`) at S1–S3.
/// `options.chunk_size` is validated and plays no other part.
///
/// Validates once (the checks and errors of [`ssd_reference::validate()`]); every option of
/// the reference is supported (groups, `D` (h) or (h, p), `z`, `dt_bias`, softplus,
/// `dt_limit`, `initial_states`, `seq_idx`, any chunk size, a ragged last chunk).
///
/// ```
/// use ndarray::{Array1, Array3, Array4};
/// use ssd_cpu::{mamba_chunk_scan_combined, Par};
/// use ssd_reference::{Inputs, Options};
///
/// let (b, l, h, p, g, n) = (2, 100, 4, 16, 1, 32);
/// let x = Array4::<f32>::from_shape_fn((b, l, h, p), |(i, t, j, k)| ((i + 3 * t + 5 * j + 7 * k) % 11) as f32 / 11.0 - 0.5);
/// let dt = Array3::<f32>::from_elem((b, l, h), 0.05);
/// let a = Array1::<f32>::from_vec(vec![-1.0, -2.0, -4.0, -8.0]);
/// let bm = Array4::<f32>::from_shape_fn((b, l, g, n), |(i, t, _, k)| ((i + t + 2 * k) % 7) as f32 / 35.0);
/// let cm = Array4::<f32>::from_shape_fn((b, l, g, n), |(i, t, _, k)| ((2 * i + t + k) % 5) as f32 / 25.0);
/// let inputs = Inputs {
///     x: x.view(), dt: dt.view(), a: a.view(), b: bm.view(), c: cm.view(),
///     d: None, z: None, dt_bias: None, initial_states: None, seq_idx: None,
/// };
/// let options = Options { chunk_size: 32, ..Options::default() };
/// let res = mamba_chunk_scan_combined(&inputs, &options, Par::rayon(0))?;
/// assert_eq!(res.out.dim(), (b, l, h, p));
/// assert_eq!(res.final_states.dim(), (b, h, p, n));
///
/// // Bad input is an error, never a panic.
/// let bad = Options { chunk_size: 0, ..options };
/// assert!(mamba_chunk_scan_combined(&inputs, &bad, Par::Seq).is_err());
/// # Ok::<(), ssd_cpu::SsdError>(())
/// ```
pub fn mamba_chunk_scan_combined(
    inputs: &Inputs<'_, f32>,
    options: &Options,
    par: Par,
) -> Result<Outputs<f32>, SsdError> {
    run_owned(inputs, options, Algorithm::Auto, par)
}

/// The SSD forward by the literal recurrence (the f32 twin of [`ssd_reference::ssd_recurrent`]):
/// per (batch, head) the state is updated token by token, blocks of 4 state columns × 16 rows
/// held in registers for 64 tokens at a time (SIMD along p). Same inputs, options, validation
/// and outputs as [`mamba_chunk_scan_combined`] (`chunk_size` plays no part).
pub fn ssd_recurrent(
    inputs: &Inputs<'_, f32>,
    options: &Options,
    par: Par,
) -> Result<Outputs<f32>, SsdError> {
    run_owned(inputs, options, Algorithm::Recurrent, par)
}

/// The SSD forward by the chunked algorithm (the f32 twin of [`ssd_reference::ssd_chunked`]),
/// whatever the shape, in chunks of `min(options.chunk_size, 64)` tokens (the result does not
/// depend on the chunk size beyond f32 rounding; 64 is fastest here). Per (batch, head),
/// sequentially over the chunks, with the state kept in cache:
/// `y_c = diag(e) C_c P_cᵀ + (L ∘ C_c B_cᵀ) diag(Δ) X_c` (+ `D x`, `z` gate), then
/// `P_{c+1} = exp(a_last) P_c + Bᵀ diag(exp(a_last − a) Δ) X_c`.
pub fn ssd_chunked(
    inputs: &Inputs<'_, f32>,
    options: &Options,
    par: Par,
) -> Result<Outputs<f32>, SsdError> {
    run_owned(inputs, options, Algorithm::Chunked, par)
}

/// Which form computes the forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Algorithm {
    Chunked,
    Recurrent,
    /// What [`mamba_chunk_scan_combined`] runs: the register-blocked recurrence at every
    /// shape (measured faster than the chunked form at S1, S2 and S3 and on the shape sweep
    /// of `ssd-verify bench cpu`; see the issue notes and `recurrent_ms` / `chunked_ms` there).
    Auto,
}

fn run_owned(
    inputs: &Inputs<'_, f32>,
    options: &Options,
    alg: Algorithm,
    par: Par,
) -> Result<Outputs<f32>, SsdError> {
    let d = validate(inputs, options, par)?;
    let mut out = Array4::<f32>::zeros((d.batch, d.seqlen, d.nheads, d.headdim));
    let mut fin = Array4::<f32>::zeros((d.batch, d.nheads, d.headdim, d.dstate));
    forward(
        inputs,
        options,
        d,
        out.view_mut(),
        fin.as_slice_mut().expect("owned array is contiguous"),
        &mut Workspace::new(),
        alg,
        par,
    );
    Ok(Outputs {
        out,
        final_states: fin,
    })
}

/// [`mamba_chunk_scan_combined`] into caller buffers `out` (b, l, h, p) and `final_states`
/// (b, h, p, n), with a reusable [`Workspace`]. Buffers of any layout are accepted (standard
/// layout avoids a copy).
pub fn mamba_chunk_scan_combined_into(
    inputs: &Inputs<'_, f32>,
    options: &Options,
    mut out: ArrayViewMut4<'_, f32>,
    mut final_states: ArrayViewMut4<'_, f32>,
    workspace: &mut Workspace,
    par: Par,
) -> Result<(), SsdError> {
    let d = validate(inputs, options, par)?;
    check_shape(
        "out",
        &[d.batch, d.seqlen, d.nheads, d.headdim],
        out.shape(),
    )?;
    check_shape(
        "final_states",
        &[d.batch, d.nheads, d.headdim, d.dstate],
        final_states.shape(),
    )?;
    let mut fin_tmp = None;
    let fin: &mut [f32] = match final_states.as_slice_mut() {
        Some(s) => s,
        None => fin_tmp.insert(vec![0.0f32; final_states.len()]),
    };
    if out.is_standard_layout() {
        forward(
            inputs,
            options,
            d,
            out.view_mut(),
            fin,
            workspace,
            Algorithm::Auto,
            par,
        );
    } else {
        let mut tmp = Array4::<f32>::zeros(out.raw_dim());
        forward(
            inputs,
            options,
            d,
            tmp.view_mut(),
            fin,
            workspace,
            Algorithm::Auto,
            par,
        );
        out.assign(&tmp);
    }
    if let Some(f) = fin_tmp {
        let shape = final_states.raw_dim();
        final_states.assign(&ndarray::ArrayView4::from_shape(shape, &f).expect("same size"));
    }
    Ok(())
}

/// The largest chunk the combined forward runs: it uses chunks of `min(Q, 64)` tokens. The result
/// does not depend on the chunking (docs/design.md §2.5: the chunked form equals the recurrence for
/// every Q, up to rounding), only its cost does: per token and head the chunked forward does `4np`
/// FLOPs for the state plus `≈ 2·Q·p/2` (and `Q/2` exponentials) inside the chunk, and the fused
/// state pass keeps the state in cache whatever the number of chunks, so on a CPU a short chunk
/// wins (at S2, Q = 64 does ≈ 0.7× the FLOPs of Q = 256).
pub(crate) const BLOCK: usize = 64;

fn block_size(seqlen: usize, chunk_size: usize) -> usize {
    chunk_size.min(BLOCK).min(seqlen.max(1))
}

/// The forward on validated inputs; `out` is in standard layout.
fn forward(
    inputs: &Inputs<'_, f32>,
    options: &Options,
    dims: ssd_reference::Dims,
    out: ArrayViewMut4<'_, f32>,
    final_states: &mut [f32],
    ws: &mut Workspace,
    alg: Algorithm,
    par: Par,
) {
    let g = Geom::new(dims, block_size(dims.seqlen, options.chunk_size));
    if matches!(alg, Algorithm::Recurrent | Algorithm::Auto) {
        recurrent_core(&g, inputs, options, out, final_states, par);
        return;
    }
    let x = flat(&inputs.x);
    let dt_in = flat(&inputs.dt);
    let a = flat(&inputs.a);
    let bm = flat(&inputs.b);
    let cm = flat(&inputs.c);
    let bias = inputs.dt_bias.as_ref().map(flat);
    let z = inputs.z.as_ref().map(flat);
    let init = inputs.initial_states.as_ref().map(flat);
    let ids = inputs.seq_idx.as_ref().map(flat);
    let dtab = inputs.d.as_ref().map(|d| d_table(d, g.nh, g.np, g.pp));
    let seq = Seq {
        ids: ids.as_deref(),
        l: g.l,
        q: g.q,
    };
    let nbhcq = g.nb * g.nh * g.nc * g.q;
    let Workspace { dt, hi, lo, cb, ct } = ws;
    let dt = ensure(dt, nbhcq);
    let hi = ensure(hi, nbhcq);
    let lo = ensure(lo, nbhcq);
    chunk_cumsum_core(&g, &dt_in, &a, bias.as_deref(), options, dt, hi, lo, par);
    let cb = ensure(cb, g.nb * g.nc * g.ng * g.q * g.qp);
    let ct = ensure(ct, g.nb * g.nc * g.ng * g.nn * g.qp);
    bmm_chunk_core(&g, &cm, &bm, seq, true, cb, ct, par);
    let args = ScanArgs {
        cbt: cb,
        ct,
        x: &x,
        dt,
        hi,
        lo: Some(lo),
        prev: &[],
        d: dtab.as_deref(),
        z: z.as_deref(),
        seq,
    };
    scan_fused(&g, &args, &bm, init.as_deref(), out, final_states, par);
}
