//! Explicit parallelism, in the spirit of faer's `Par`.
//!
//! Every kernel takes a [`Par`] as its last argument. Work is split into independent tiles
//! (e.g. one (batch, chunk, head) block); each tile's arithmetic is fixed, so the result is
//! bit-identical whatever the thread count or the order in which tiles run.

use rayon::prelude::*;
use std::num::NonZeroUsize;
use std::sync::Mutex;

/// How many threads a kernel may use.
///
/// `Par::Rayon(n)` runs at most `n` tasks at once on the *current* rayon pool (the global pool,
/// or the one entered with [`rayon::ThreadPool::install`]); `Par::Seq` runs on the calling
/// thread. The thread count never changes any arithmetic: results are bit-identical across
/// `Par` values.
///
/// ```
/// use ssd_cpu::Par;
/// let all = Par::rayon(0); // every thread of the current rayon pool
/// let two = Par::rayon(2);
/// assert_eq!(Par::Seq.degree(), 1);
/// assert!(all.degree() >= 1 && two.degree() == 2);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Par {
    /// On the calling thread only.
    #[default]
    Seq,
    /// At most this many tasks at once on the current rayon pool.
    Rayon(NonZeroUsize),
}

impl Par {
    /// `Par::Rayon(n)`; `n = 0` means every thread of the current rayon pool.
    pub fn rayon(n: usize) -> Par {
        let n = if n == 0 {
            rayon::current_num_threads()
        } else {
            n
        };
        match NonZeroUsize::new(n) {
            Some(n) => Par::Rayon(n),
            None => Par::Seq,
        }
    }

    /// The number of tasks that may run at once.
    pub fn degree(&self) -> usize {
        match self {
            Par::Seq => 1,
            Par::Rayon(n) => n.get(),
        }
    }
}

/// Runs `f(scratch, tile)` over every tile. Each worker (at most `par.degree()` of them) makes
/// its scratch once with `scratch()` and then takes tiles from a shared queue, so scratch memory
/// is allocated outside the hot loops and load is balanced dynamically.
pub(crate) fn for_each_tile<T, S, M, F>(par: Par, tiles: Vec<T>, scratch: M, f: F)
where
    T: Send,
    M: Fn() -> S + Sync,
    F: Fn(&mut S, T) + Sync,
{
    let workers = par.degree().min(tiles.len());
    if workers <= 1 {
        let mut s = scratch();
        for t in tiles {
            f(&mut s, t);
        }
        return;
    }
    let queue = Mutex::new(tiles.into_iter());
    (0..workers).into_par_iter().for_each(|_| {
        let mut s = scratch();
        loop {
            let next = queue.lock().unwrap_or_else(|e| e.into_inner()).next();
            match next {
                Some(t) => f(&mut s, t),
                None => break,
            }
        }
    });
}

/// Splits `buf` into `count` consecutive pieces of `size` (empty pieces when `size` is 0).
pub(crate) fn split_mut(buf: &mut [f32], count: usize, size: usize) -> Vec<&mut [f32]> {
    if size == 0 {
        return (0..count).map(|_| <&mut [f32]>::default()).collect();
    }
    buf[..count * size].chunks_mut(size).collect()
}
