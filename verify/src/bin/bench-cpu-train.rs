//! `bench-cpu-train [--reps N] [--json] [SHAPE…]`: the CPU training benchmark (forward +
//! backward) of docs/design.md §6 at S1, S2, S3 (default: all three), through
//! [`ssd_verify::bench::cpu_train::run`].
//!
//! Each row also gets `extra_bytes`: the backward's peak extra memory, the most bytes it holds
//! at once beyond its inputs and the gradients it returns (the four A-adjoint arrays it also
//! returns are counted in it; `adjoint_bytes` says how much of it they are), measured by a
//! counting global allocator around one backward call.

use ssd_verify::bench::cpu_train::{self, adjoint_bytes, gradient_bytes, TrainProblem};
use ssd_verify::bench::{cpu, CPU_SHAPES};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The system allocator, counting the bytes live now and their peak.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize) {
    let now = LIVE.fetch_add(by, Ordering::Relaxed) + by;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: every call is forwarded unchanged to `System`, which upholds `GlobalAlloc`'s
// contract; the counters only observe sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's layout is passed on as is.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's layout is passed on as is.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` was allocated by `System` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded unchanged; `ptr` was allocated by `System` with `layout`.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            grew(new_size);
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// `(extra_bytes, adjoint_bytes)` of one backward call on `tp`.
fn backward_memory(tp: &TrainProblem) -> Result<(f64, f64), ssd_reference::SsdError> {
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let (g, a) = tp.backward(ssd_cpu::Par::rayon(0))?;
    let peak = PEAK.load(Ordering::Relaxed);
    let extra = peak.saturating_sub(base + gradient_bytes(&g));
    Ok((extra as f64, adjoint_bytes(&a) as f64))
}

fn main() -> std::process::ExitCode {
    let mut reps = 10;
    let mut json = false;
    let mut names = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--reps" => reps = args.next().and_then(|v| v.parse().ok()).unwrap_or(reps),
            "--json" => json = true,
            _ => names.push(a),
        }
    }
    let pick = |n: &str| names.is_empty() || names.iter().any(|m| m.eq_ignore_ascii_case(n));
    let shapes: Vec<_> = CPU_SHAPES
        .iter()
        .copied()
        .filter(|s| pick(s.name))
        .collect();
    eprintln!(
        "ssd-cpu training benchmark (forward + backward): {} rayon threads, {reps} reps (medians)",
        rayon::current_num_threads()
    );
    let result = cpu_train::run(&shapes, reps).and_then(|mut rows| {
        for (row, sh) in rows.iter_mut().zip(&shapes) {
            let (extra, adjoint) = backward_memory(&TrainProblem::new(sh))?;
            row.extra.push(("extra_bytes".into(), extra));
            row.extra.push(("adjoint_bytes".into(), adjoint));
        }
        Ok(rows)
    });
    match result {
        Ok(rows) => {
            if json {
                for r in &rows {
                    println!("{}", r.to_json());
                }
            } else {
                print!("{}", cpu::table(&rows));
            }
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
