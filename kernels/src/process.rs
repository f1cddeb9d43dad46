//! The process the kernels run in: whether it is a child forked from a process that had started
//! threads, and how many threads a call may therefore use.
//!
//! `fork()` copies only the calling thread. In the child, rayon's pool and the library's helper team
//! exist as data but not as threads: a job handed to them would wait forever. A fork handler
//! (registered before the first parallel call) marks the child, and every parallel loop of this
//! crate then runs on the calling thread — the same results, bit for bit, since no thread count
//! changes a result here.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Once;

use crate::{Backend, Isa};

/// How many threads a call (a product, a convolution, a pooling) may use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Threading {
    /// On the calling thread only.
    Single,
    /// As many threads as the rayon pool the call runs in has (the global pool unless the
    /// caller installed another), for work large enough to gain from them: that pool's threads
    /// when called from one of them, else the library's own helper threads. Work is split over rows and columns of
    /// C, never over K, so the result is bit-identical for every pool size. In a forked child,
    /// the calling thread only ([`forked_child`]).
    #[default]
    Rayon,
}

static FORKED: AtomicBool = AtomicBool::new(false);
static WATCH: Once = Once::new();

#[cfg(unix)]
extern "C" fn mark_child() {
    FORKED.store(true, Ordering::Relaxed);
}

/// Registers the fork handler (once). Called before any parallel work starts, so that a fork
/// after it is seen.
fn watch() {
    WATCH.call_once(|| {
        #[cfg(unix)]
        // SAFETY: `mark_child` only stores to an atomic (async-signal-safe), as a handler that
        // runs in the child of a fork must.
        unsafe {
            libc::pthread_atfork(None, None, Some(mark_child));
        }
    });
}

/// Whether this process is a child forked after this library was first used for parallel work:
/// its threads did not survive the fork, and every call runs on the calling thread.
pub fn forked_child() -> bool {
    watch();
    FORKED.load(Ordering::Relaxed)
}

/// The threads a call with `threading` may use: the rayon pool's in a process whose pool is
/// alive, one in a forked child.
pub(crate) fn threads(threading: Threading) -> usize {
    match threading {
        Threading::Single => 1,
        Threading::Rayon if forked_child() => 1,
        Threading::Rayon => rayon::current_num_threads(),
    }
}

/// Whether a loop with `threading` may run on the pool (see [`threads`]).
pub(crate) fn parallel(threading: Threading) -> bool {
    threads(threading) > 1
}

/// How a kernel call runs — which instruction-set path, how many threads: the one options value
/// of every kernel family (GEMM, convolution, pooling, activations, softmax, optimizer steps;
/// the single-row ones, and elementwise ones over few elements, run on the calling thread
/// whatever `threading` says).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExecOptions {
    /// The instruction-set path to use; `None` means [`Isa::active`] (the `KERNELS_ISA`
    /// environment variable, else the best path of this CPU).
    pub isa: Option<Isa>,
    /// The implementation behind products; `None` means [`Backend::active`] (the
    /// `KERNELS_BACKEND` environment variable, else our own driver).
    pub backend: Option<Backend>,
    /// Threads to use.
    pub threading: Threading,
    /// The caller has just written the product's operands and reads its result next (a
    /// training step's products): a thread that shares the product must then fetch its share
    /// of A and B from the caller's cache and the caller its part of C from that thread's, so a
    /// product is shared only where its work repays those transfers too. Off by default, as
    /// for a BLAS: with the same operands called again (a benchmark, an iterative solver) they
    /// stay in both cores' caches and sharing pays from much smaller products. Read by the
    /// products ([`crate::gemm_with`], [`crate::gemm_fused`]); the other kernels ignore it.
    pub fresh_operands: bool,
}

impl ExecOptions {
    /// Options that force `isa`.
    pub fn with_isa(isa: Isa) -> Self {
        ExecOptions {
            isa: Some(isa),
            ..Self::default()
        }
    }

    /// Options that force `backend`.
    pub fn with_backend(backend: Backend) -> Self {
        ExecOptions {
            backend: Some(backend),
            ..Self::default()
        }
    }
}
