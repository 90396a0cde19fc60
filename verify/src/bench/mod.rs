//! The benchmark protocol of docs/design.md §6: standard shapes, FLOP counts and the row every
//! benchmark prints (as a table, or as JSON with `--json`).
//!
//! Benchmarks are programs, never timed tests: medians of repeated runs after warm-up, every
//! CPU figure as a ratio to a ceiling measured in the same run.

pub mod alloc;
pub mod cpu;
pub mod cpu_train;
pub mod cuda;

/// A benchmark shape (b, l, h, p, g, n, Q).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Its name in reports (S1, G2, D1, custom).
    pub name: &'static str,
    /// b
    pub batch: usize,
    /// l (1 for a decode shape)
    pub seqlen: usize,
    /// h
    pub nheads: usize,
    /// p
    pub headdim: usize,
    /// g
    pub ngroups: usize,
    /// n
    pub dstate: usize,
    /// Q
    pub chunk_size: usize,
}

const fn shape(
    name: &'static str,
    batch: usize,
    seqlen: usize,
    nheads: usize,
    headdim: usize,
    ngroups: usize,
    dstate: usize,
    chunk_size: usize,
) -> Shape {
    Shape {
        name,
        batch,
        seqlen,
        nheads,
        headdim,
        ngroups,
        dstate,
        chunk_size,
    }
}

/// CPU shapes S1–S3.
pub const CPU_SHAPES: [Shape; 3] = [
    shape("S1", 1, 2048, 8, 64, 1, 64, 64),
    shape("S2", 2, 4096, 16, 64, 1, 128, 256),
    shape("S3", 1, 16384, 8, 64, 1, 128, 256),
];

/// The CPU decode shape D1 (b 4, h 32, p 64, n 128).
pub const D1: Shape = shape("D1", 4, 1, 32, 64, 1, 128, 1);

/// GPU shapes G1–G3.
pub const GPU_SHAPES: [Shape; 3] = [
    shape("G1", 4, 2048, 32, 64, 1, 128, 256),
    shape("G2", 2, 8192, 80, 64, 1, 128, 256),
    shape("G3", 8, 4096, 80, 64, 8, 128, 256),
];

/// mamba_ssm's Triton figures on the lent H100 (fp32 inputs), ms: (forward, forward+backward).
pub fn triton_ms(shape: &str) -> Option<(f64, f64)> {
    match shape {
        "G1" => Some((0.89, 3.99)),
        "G2" => Some((1.24, 5.62)),
        "G3" => Some((2.98, 13.5)),
        _ => None,
    }
}

/// mamba_ssm's Triton decode step at G1's sizes on the lent H100, ms.
pub const TRITON_DECODE_G1_MS: f64 = 0.022;

impl Shape {
    /// FLOPs of the chunked forward: per (batch, chunk) `g·2Q²n + h·(2Q²p + 4Qnp)`.
    pub fn forward_flops(&self) -> f64 {
        let q = self.chunk_size as f64;
        let nchunks = self.seqlen.div_ceil(self.chunk_size) as f64;
        let (g, h, n, p) = (
            self.ngroups as f64,
            self.nheads as f64,
            self.dstate as f64,
            self.headdim as f64,
        );
        self.batch as f64
            * nchunks
            * (g * 2.0 * q * q * n + h * (2.0 * q * q * p + 4.0 * q * n * p))
    }

    /// A parsed custom shape `b,l,h,p,g,n[,Q]` (Q defaults to 256).
    pub fn parse(text: &str) -> Result<Shape, String> {
        let v: Vec<usize> = text
            .split(',')
            .map(|s| s.trim().parse::<usize>())
            .collect::<Result<_, _>>()
            .map_err(|e| format!("shape `{text}`: {e}"))?;
        if !(v.len() == 6 || v.len() == 7) || v.contains(&0) {
            return Err(format!(
                "shape `{text}`: expected b,l,h,p,g,n[,Q] with positive entries"
            ));
        }
        Ok(shape(
            "custom",
            v[0],
            v[1],
            v[2],
            v[3],
            v[4],
            v[5],
            v.get(6).copied().unwrap_or(256),
        ))
    }
}

/// One benchmark result row (the JSON row of `ssd-verify bench --json`).
#[derive(Debug, Clone, PartialEq)]
pub struct BenchRow {
    /// S1, S2, S3, D1, G1, …
    pub shape: String,
    /// `cpu` or `cuda`
    pub backend: String,
    /// `forward`, `forward_backward` or `decode`
    pub op: String,
    /// Median wall time, ms.
    pub median_ms: f64,
    /// GFLOP/s by the count of docs/design.md §6 (None for decode).
    pub gflops: Option<f64>,
    /// Ratio to the ceiling measured in the same run (GEMM GFLOP/s, or copy bytes/s for decode).
    pub ceiling_ratio: f64,
    /// mamba_ssm's Triton time for this shape and op, ms (CUDA only).
    pub triton_ms: Option<f64>,
    /// `triton_ms / median_ms` (> 1 means faster than Triton).
    pub triton_ratio: Option<f64>,
    /// Free-form extra figures (e.g. `"bytes_per_s": 1.2e10`), printed after the fixed fields.
    pub extra: Vec<(String, f64)>,
}

impl BenchRow {
    /// The row as a JSON object.
    pub fn to_json(&self) -> String {
        fn num(v: f64) -> String {
            if v.is_finite() {
                format!("{v}")
            } else {
                "null".into()
            }
        }
        fn opt(v: Option<f64>) -> String {
            v.map_or("null".into(), num)
        }
        let mut s = format!(
            "{{\"shape\":\"{}\",\"backend\":\"{}\",\"op\":\"{}\",\"median_ms\":{},\"gflops\":{},\"ceiling_ratio\":{},\"triton_ms\":{},\"triton_ratio\":{}",
            self.shape,
            self.backend,
            self.op,
            num(self.median_ms),
            opt(self.gflops),
            num(self.ceiling_ratio),
            opt(self.triton_ms),
            opt(self.triton_ratio)
        );
        for (k, v) in &self.extra {
            s.push_str(&format!(",\"{k}\":{}", num(*v)));
        }
        s.push('}');
        s
    }
}

/// Median of a set of timings (sorted in place).
pub fn median(times: &mut [f64]) -> f64 {
    times.sort_by(|a, b| a.total_cmp(b));
    let n = times.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        times[n / 2]
    } else {
        0.5 * (times[n / 2 - 1] + times[n / 2])
    }
}
