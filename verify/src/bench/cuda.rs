//! The CUDA benchmark of docs/design.md §6 (`ssd-verify bench cuda`): the combined forward,
//! forward + backward and the decode step of `ssd-gpu` at G1–G3, each beside mamba_ssm's Triton
//! figure on the lent H100 ([`super::triton_ms`], [`super::TRITON_DECODE_G1_MS`]) as a ratio
//! (`triton_ms / median_ms`, > 1 = faster than Triton), and beside two floors measured in the
//! same run:
//!
//! - the bytes-moved floor: every input read once and every output written once, over the
//!   device-to-device copy bandwidth (bytes read + written per second of a 1 GiB copy);
//! - the FLOP floor: [`Shape::forward_flops`] (×3 for forward + backward) over the measured f32
//!   FMA throughput ([`ssd_gpu::Gpu::fma_peak_gflops`]); `ceiling_ratio` is achieved GFLOP/s
//!   over that throughput (decode: achieved bytes/s over the copy's).
//!
//! Problem: upstream's Mamba-2 call — `D` (h), `dt_bias`, softplus, no `z`, no initial states,
//! no `seq_idx` — with x and dout drawn on the device, the rest like upstream's values. Times:
//! CUDA events around each call on device-resident inputs (outputs and intermediates are
//! allocated inside the timed call, from the stream-ordered pool), ≥ 100 ms of warm-up calls, median of
//! `reps`. The decode row times 100 back-to-back steps per rep and reports one step.

use super::{median, triton_ms, BenchRow, Shape, TRITON_DECODE_G1_MS};
use crate::rng::Rng;
use ndarray::{Array1, Array2, Array3, Array4, ArrayD, Ix4, IxDyn};
use ssd_gpu::{DeviceDecodeInputs, DeviceInputs, Gpu};
use ssd_reference::{DecodeInputs, DecodeOptions, Options, SsdError};

/// Steps per timed decode rep.
const DECODE_STEPS: usize = 100;

/// Runs the CUDA benchmark on device 0: `forward` and `forward_backward` rows per shape of
/// `shapes`, a `decode` row for `decode` (a shape with the decode sizes, e.g. G1: b 4, h 32,
/// p 64, n 128), each a median of `reps` timed runs.
///
/// Extra figures per row: `bytes_moved`, `floor_ms` (bytes over the copy bandwidth),
/// `floor_ratio` (`floor_ms / median_ms`), `copy_gbps`, `fma_peak_gflops`, `flop_floor_ms`.
pub fn run(
    shapes: &[Shape],
    decode: Option<Shape>,
    reps: usize,
) -> Result<Vec<BenchRow>, SsdError> {
    let gpu = Gpu::new()?;
    gpu.compile()?;
    let reps = reps.max(1);
    let copy_gbps = copy_gbps(&gpu, reps.min(10))?;
    let peak = gpu.fma_peak_gflops(reps.min(10))?;
    let mut rows = Vec::new();
    for sh in shapes {
        rows.extend(shape_rows(&gpu, sh, reps, copy_gbps, peak)?);
    }
    if let Some(sh) = decode {
        rows.push(decode_row(&gpu, &sh, reps.max(10), copy_gbps, peak)?);
    }
    Ok(rows)
}

/// The device's name (for the report's header).
pub fn device_name() -> Result<String, SsdError> {
    Ok(Gpu::new()?.name().to_string())
}

/// Bytes read + written per second of a 1 GiB device-to-device copy, GB/s.
fn copy_gbps(gpu: &Gpu, reps: usize) -> Result<f64, SsdError> {
    let n = 1usize << 28;
    let a = gpu.zeros::<f32, _>(ndarray::Ix1(n))?;
    gpu.fill_hash(&a, 1, 1.0)?;
    let ms = time_ms(gpu, reps, 1, || gpu.copy(&a).map(|_| ()))?;
    Ok(2.0 * 4.0 * n as f64 / (ms * 1e-3) / 1e9)
}

/// Median over `reps` of the event-timed duration of `k` back-to-back calls, per call, ms
/// (after warm-up calls: at least 3 and at least 100 ms of them, so that the clocks have
/// left an idle state whatever ran before; without it the first row of a run read up to 20%
/// high).
fn time_ms(
    gpu: &Gpu,
    reps: usize,
    k: usize,
    mut f: impl FnMut() -> Result<(), SsdError>,
) -> Result<f64, SsdError> {
    let w0 = gpu.record_event()?;
    let mut calls = 0;
    loop {
        for _ in 0..3 {
            f()?;
        }
        calls += 3;
        let w1 = gpu.record_event()?;
        if w0.elapsed_ms(&w1)? >= 100.0 || calls >= 3000 {
            break;
        }
    }
    gpu.synchronize()?;
    let mut t = Vec::with_capacity(reps);
    for _ in 0..reps {
        let e0 = gpu.record_event()?;
        for _ in 0..k {
            f()?;
        }
        let e1 = gpu.record_event()?;
        t.push(e0.elapsed_ms(&e1)? / k as f64);
    }
    Ok(median(&mut t))
}

fn upload_inputs(gpu: &Gpu, sh: &Shape, options: &Options) -> Result<DeviceInputs, SsdError> {
    let (nb, l, nh, np, ng, nn) = (
        sh.batch, sh.seqlen, sh.nheads, sh.headdim, sh.ngroups, sh.dstate,
    );
    let mut rng = Rng::new(0x6B75_6461);
    let dt = Array3::from_shape_simple_fn((nb, l, nh), || (rng.normal() - 4.0) as f32);
    let a = Array1::from_shape_simple_fn(nh, || -rng.range(0.0, 16f64.ln()).exp() as f32);
    let b = Array4::from_shape_simple_fn((nb, l, ng, nn), || (rng.normal() / 5.0) as f32);
    let c = Array4::from_shape_simple_fn((nb, l, ng, nn), || (rng.normal() / 5.0) as f32);
    let d = ArrayD::from_shape_simple_fn(IxDyn(&[nh]), || rng.normal() as f32);
    let bias = Array1::from_shape_simple_fn(nh, || (0.5 * rng.normal()) as f32);
    let x = gpu.zeros::<f32, _>(Ix4(nb, l, nh, np))?;
    // uniform with unit variance
    gpu.fill_hash(&x, 0x78, 12f32.sqrt())?;
    let mut inputs = DeviceInputs::from_device(
        x,
        gpu.upload(&dt)?,
        gpu.upload(&a)?,
        gpu.upload(&b)?,
        gpu.upload(&c)?,
        options,
    )?;
    inputs.d = Some(gpu.upload(&d)?);
    inputs.dt_bias = Some(gpu.upload(&bias)?);
    Ok(inputs)
}

fn shape_rows(
    gpu: &Gpu,
    sh: &Shape,
    reps: usize,
    copy_gbps: f64,
    peak: f64,
) -> Result<Vec<BenchRow>, SsdError> {
    let options = Options {
        chunk_size: sh.chunk_size,
        dt_softplus: true,
        dt_limit: (0.0, f64::INFINITY),
    };
    let inputs = upload_inputs(gpu, sh, &options)?;
    let (nb, l, nh, np, ng, nn) = (
        sh.batch, sh.seqlen, sh.nheads, sh.headdim, sh.ngroups, sh.dstate,
    );
    let dout = gpu.zeros::<f32, _>(Ix4(nb, l, nh, np))?;
    gpu.fill_hash(&dout, 0xD0, 12f32.sqrt())?;

    let fwd_ms = time_ms(gpu, reps, 1, || {
        gpu.mamba_chunk_scan_combined(&inputs, &options).map(|_| ())
    })?;
    let fb_ms = time_ms(gpu, reps, 1, || {
        let f = gpu.chunked_forward(&inputs, &options)?;
        gpu.chunked_backward(&inputs, &options, &f, &dout, None)
            .map(|_| ())
    })?;

    let (blhp, blh, blgn, bhpn) = (
        (nb * l * nh * np) as f64,
        (nb * l * nh) as f64,
        (nb * l * ng * nn) as f64,
        (nb * nh * np * nn) as f64,
    );
    // forward: read x, dt, B, C; write out, final_states (A, D, dt_bias negligible)
    let fwd_bytes = 4.0 * (2.0 * blhp + blh + 2.0 * blgn + bhpn);
    // backward: read x, dt, B, C, dout; write dx, ddt, dB, dC
    let bwd_bytes = 4.0 * (3.0 * blhp + 2.0 * blh + 4.0 * blgn);
    let flops = sh.forward_flops();
    let tri = triton_ms(sh.name);
    let row = |op: &str, ms: f64, bytes: f64, fl: f64, tri_ms: Option<f64>| {
        let floor_ms = bytes / (copy_gbps * 1e9) * 1e3;
        let gflops = fl / (ms * 1e-3) / 1e9;
        BenchRow {
            shape: sh.name.to_string(),
            backend: "cuda".into(),
            op: op.into(),
            median_ms: ms,
            gflops: Some(gflops),
            ceiling_ratio: gflops / peak,
            triton_ms: tri_ms,
            triton_ratio: tri_ms.map(|t| t / ms),
            extra: vec![
                ("bytes_moved".into(), bytes),
                ("floor_ms".into(), floor_ms),
                ("floor_ratio".into(), floor_ms / ms),
                ("copy_gbps".into(), copy_gbps),
                ("fma_peak_gflops".into(), peak),
                ("flop_floor_ms".into(), fl / (peak * 1e9) * 1e3),
            ],
        }
    };
    Ok(vec![
        row("forward", fwd_ms, fwd_bytes, flops, tri.map(|t| t.0)),
        row(
            "forward_backward",
            fb_ms,
            fwd_bytes + bwd_bytes,
            3.0 * flops,
            tri.map(|t| t.1),
        ),
    ])
}

fn decode_row(
    gpu: &Gpu,
    sh: &Shape,
    reps: usize,
    copy_gbps: f64,
    peak: f64,
) -> Result<BenchRow, SsdError> {
    let (nb, nh, np, ng, nn) = (sh.batch, sh.nheads, sh.headdim, sh.ngroups, sh.dstate);
    let mut rng = Rng::new(0xDEC0);
    let x = Array3::from_shape_simple_fn((nb, nh, np), || rng.normal() as f32);
    let dt = Array2::from_shape_simple_fn((nb, nh), || (rng.normal() - 4.0) as f32);
    let a = Array1::from_shape_simple_fn(nh, || -rng.range(0.0, 16f64.ln()).exp() as f32);
    let b = Array3::from_shape_simple_fn((nb, ng, nn), || (rng.normal() / 5.0) as f32);
    let c = Array3::from_shape_simple_fn((nb, ng, nn), || (rng.normal() / 5.0) as f32);
    let d = ArrayD::from_shape_simple_fn(IxDyn(&[nh]), || rng.normal() as f32);
    let bias = Array1::from_shape_simple_fn(nh, || (0.5 * rng.normal()) as f32);
    let options = DecodeOptions {
        dt_softplus: true,
        dt_limit: (0.0, f64::INFINITY),
    };
    let inputs = DecodeInputs {
        x: x.view(),
        dt: dt.view(),
        a: a.view(),
        b: b.view(),
        c: c.view(),
        d: Some(d.view()),
        z: None,
        dt_bias: Some(bias.view()),
        state_batch_indices: None,
    };
    let mut state = gpu.zeros::<f32, _>(Ix4(nb, nh, np, nn))?;
    gpu.fill_hash(&state, 0x57, 1.0)?;
    let dev = DeviceDecodeInputs::upload(gpu, &inputs, state.shape(), &options)?;
    let ms = time_ms(gpu, reps, DECODE_STEPS, || {
        gpu.selective_state_update(&mut state, &dev, &options)
            .map(|_| ())
    })?;
    let bytes = 4.0
        * (2.0 * (nb * nh * np * nn) as f64
            + 2.0 * (nb * nh * np) as f64
            + 2.0 * (nb * ng * nn) as f64);
    let floor_ms = bytes / (copy_gbps * 1e9) * 1e3;
    let tri = (sh.name == "G1").then_some(TRITON_DECODE_G1_MS);
    Ok(BenchRow {
        shape: sh.name.to_string(),
        backend: "cuda".into(),
        op: "decode".into(),
        median_ms: ms,
        gflops: None,
        ceiling_ratio: (bytes / (ms * 1e-3)) / (copy_gbps * 1e9),
        triton_ms: tri,
        triton_ratio: tri.map(|t| t / ms),
        extra: vec![
            ("bytes_moved".into(), bytes),
            ("floor_ms".into(), floor_ms),
            ("floor_ratio".into(), floor_ms / ms),
            ("copy_gbps".into(), copy_gbps),
            ("fma_peak_gflops".into(), peak),
        ],
    })
}

/// Time of every kernel of the combined forward and backward at `sh`, ms (median of `reps`),
/// through the per-kernel API on device-resident intermediates (`bmm_chunk` computes the full
/// Q × Q block here; the combined op only the lower triangle of tiles). For finding where the
/// time goes.
pub fn breakdown(sh: &Shape, reps: usize) -> Result<Vec<(String, f64)>, SsdError> {
    let gpu = Gpu::new()?;
    gpu.compile()?;
    let options = Options {
        chunk_size: sh.chunk_size,
        dt_softplus: true,
        dt_limit: (0.0, f64::INFINITY),
    };
    let inp = upload_inputs(&gpu, sh, &options)?;
    let (nb, l, nh, np, ng) = (sh.batch, sh.seqlen, sh.nheads, sh.headdim, sh.ngroups);
    let dout = gpu.zeros::<f32, _>(Ix4(nb, l, nh, np))?;
    gpu.fill_hash(&dout, 0xD0, 12f32.sqrt())?;
    let f = gpu.chunked_forward(&inp, &options)?;
    let g = &gpu;
    let (dt, dacs) = (&f.dt_bhcq, &f.dacs_bhcq);
    let states = g.chunk_state(&inp.b, &inp.x, dt, dacs, None)?;
    let (dy, _, _) = g.chunk_scan_bwd_dz(&dout, &inp.x, None, None, inp.d.as_ref())?;
    let dprev = g.chunk_scan_bwd_dstates(&inp.c, &dy, dacs, None)?;
    let (dstates, _, _) = g.state_passing_bwd(&f.prev_states_bchpn, dacs, &dprev, None, None, l)?;
    let dcb = g.chunk_scan_bwd_dcb(&inp.x, dt, dacs, &dy, ng)?;
    let cb_full = g.bmm_chunk(&inp.c, &inp.b, sh.chunk_size, None)?;
    let nc = l.div_ceil(sh.chunk_size);
    let dda = gpu.zeros::<f32, _>(Ix4(nb, nh, nc, sh.chunk_size))?;
    let mut rows = Vec::new();
    let mut t = |name: &str, f: &mut dyn FnMut() -> Result<(), SsdError>| -> Result<(), SsdError> {
        let ms = time_ms(g, reps, 1, f)?;
        rows.push((name.to_string(), ms));
        Ok(())
    };
    t("chunk_cumsum", &mut || {
        g.chunk_cumsum(&inp.dt, &inp.a, inp.dt_bias.as_ref(), &options)
            .map(|_| ())
    })?;
    t("chunk_state", &mut || {
        g.chunk_state(&inp.b, &inp.x, dt, dacs, None).map(|_| ())
    })?;
    t("state_passing", &mut || {
        g.state_passing(&states, dacs, None, None, l).map(|_| ())
    })?;
    t("bmm_chunk (full)", &mut || {
        g.bmm_chunk(&inp.c, &inp.b, sh.chunk_size, None).map(|_| ())
    })?;
    t("chunk_scan", &mut || {
        g.chunk_scan(
            &f.cb_bcgqq,
            &inp.x,
            dt,
            dacs,
            &inp.c,
            &f.prev_states_bchpn,
            inp.d.as_ref(),
            None,
            None,
        )
        .map(|_| ())
    })?;
    t("chunk_scan_bwd_dz", &mut || {
        g.chunk_scan_bwd_dz(&dout, &inp.x, None, None, inp.d.as_ref())
            .map(|_| ())
    })?;
    t("chunk_scan_bwd_dstates", &mut || {
        g.chunk_scan_bwd_dstates(&inp.c, &dy, dacs, None)
            .map(|_| ())
    })?;
    t("state_passing_bwd", &mut || {
        g.state_passing_bwd(&f.prev_states_bchpn, dacs, &dprev, None, None, l)
            .map(|_| ())
    })?;
    t("chunk_scan_chunk_state_bwd_dx", &mut || {
        g.chunk_scan_chunk_state_bwd_dx(
            &inp.x,
            dt,
            dacs,
            &inp.b,
            &f.cb_bcgqq,
            &dy,
            &dstates,
            inp.d.as_ref(),
            None,
        )
        .map(|_| ())
    })?;
    t("chunk_scan_bwd_dcb", &mut || {
        g.chunk_scan_bwd_dcb(&inp.x, dt, dacs, &dy, ng).map(|_| ())
    })?;
    t("bmm_chunk_bwd (full K)", &mut || {
        g.bmm_chunk_bwd(&inp.c, &inp.b, &dcb, None).map(|_| ())
    })?;
    t("chunk_state_bwd_db", &mut || {
        g.chunk_state_bwd_db(&inp.x, &inp.b, dt, dacs, &dstates, None)
            .map(|_| ())
    })?;
    t("chunk_scan_bwd_dc", &mut || {
        g.chunk_scan_bwd_dc(&f.prev_states_bchpn, dacs, &inp.c, &dy, None)
            .map(|_| ())
    })?;
    t("chunk_scan_bwd_ddacs_stable", &mut || {
        g.chunk_scan_bwd_ddacs_stable(&inp.x, dt, dacs, &dy, &cb_full)
            .map(|_| ())
    })?;
    t("dcb + ddacs_stable (one pass, combined)", &mut || {
        g.chunk_scan_bwd_dcb_ddacs_stable(&inp.x, dt, dacs, &dy, &cb_full)
            .map(|_| ())
    })?;
    t("chunk_cumsum_bwd", &mut || {
        g.chunk_cumsum_bwd(&dda, &dda, &inp.dt, &inp.a, inp.dt_bias.as_ref(), &options)
            .map(|_| ())
    })?;
    Ok(rows)
}

/// The rows as a fixed-width table.
pub fn table(rows: &[BenchRow]) -> String {
    let mut s = format!(
        "{:5} {:17} {:>10} {:>9} {:>9} {:>10} {:>9} {:>10} {:>8}\n",
        "shape", "op", "ms", "GFLOP/s", "of FMA", "triton ms", "triton/x", "floor ms", "floor/x"
    );
    let get = |r: &BenchRow, k: &str| {
        r.extra
            .iter()
            .find(|(n, _)| n == k)
            .map_or(f64::NAN, |v| v.1)
    };
    for r in rows {
        s.push_str(&format!(
            "{:5} {:17} {:>10.4} {:>9} {:>9.3} {:>10} {:>9} {:>10.4} {:>8.3}\n",
            r.shape,
            r.op,
            r.median_ms,
            r.gflops.map_or("-".into(), |g| format!("{g:.0}")),
            r.ceiling_ratio,
            r.triton_ms.map_or("-".into(), |t| format!("{t:.3}")),
            r.triton_ratio.map_or("-".into(), |t| format!("{t:.3}")),
            get(r, "floor_ms"),
            get(r, "floor_ratio"),
        ));
    }
    s
}
