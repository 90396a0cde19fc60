//! The peak extra memory of a call, measured by a counting global allocator ([`Counting`],
//! installed by the `ssd-verify` binary): while [`peak_bytes`] runs its closure, every
//! allocation, reallocation and free of every thread is counted, and the most bytes live at
//! once beyond those live before the call is its peak. Outside such a window the allocator only
//! reads one flag before forwarding to [`System`].

use crate::bench::cpu_train::{adjoint_bytes, gradient_bytes, TrainProblem};
use ssd_reference::SsdError;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering};

/// The system allocator, counting the bytes live and their peak while [`peak_bytes`] measures.
#[derive(Debug)]
pub struct Counting;

static ACTIVE: AtomicBool = AtomicBool::new(false);
static SEEN: AtomicBool = AtomicBool::new(false);
static LIVE: AtomicIsize = AtomicIsize::new(0);
static PEAK: AtomicIsize = AtomicIsize::new(0);

fn grew(by: usize) {
    if ACTIVE.load(Ordering::Relaxed) {
        SEEN.store(true, Ordering::Relaxed);
        let now = LIVE.fetch_add(by as isize, Ordering::Relaxed) + by as isize;
        PEAK.fetch_max(now, Ordering::Relaxed);
    }
}

fn shrank(by: usize) {
    if ACTIVE.load(Ordering::Relaxed) {
        LIVE.fetch_sub(by as isize, Ordering::Relaxed);
    }
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
        shrank(layout.size());
        // SAFETY: `ptr` was allocated by `System` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded unchanged; `ptr` was allocated by `System` with `layout`.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            shrank(layout.size());
            grew(new_size);
        }
        p
    }
}

/// Runs `f` and returns its result with the most bytes it (and every other thread meanwhile)
/// held at once beyond what was live before it, including what it returns; `None` for the
/// bytes where [`Counting`] is not the global allocator (nothing was counted).
pub fn peak_bytes<T>(f: impl FnOnce() -> T) -> (T, Option<usize>) {
    LIVE.store(0, Ordering::SeqCst);
    PEAK.store(0, Ordering::SeqCst);
    SEEN.store(false, Ordering::SeqCst);
    ACTIVE.store(true, Ordering::SeqCst);
    let out = f();
    ACTIVE.store(false, Ordering::SeqCst);
    let peak = PEAK.load(Ordering::SeqCst).max(0) as usize;
    (out, SEEN.load(Ordering::SeqCst).then_some(peak))
}

/// `(extra_bytes, adjoint_bytes)` of one backward call on `tp`: the backward's peak extra
/// memory, the most bytes it holds at once beyond its inputs and the gradients it returns (the
/// four A-adjoint arrays it also returns are counted in it; `adjoint_bytes` says how much of it
/// they are). `None` where [`Counting`] is not the global allocator.
pub fn backward_memory(tp: &TrainProblem) -> Result<Option<(f64, f64)>, SsdError> {
    let (result, peak) = peak_bytes(|| tp.backward(ssd_cpu::Par::rayon(0)));
    let (g, a) = result?;
    Ok(peak.map(|peak| {
        let extra = peak.saturating_sub(gradient_bytes(&g));
        (extra as f64, adjoint_bytes(&a) as f64)
    }))
}
