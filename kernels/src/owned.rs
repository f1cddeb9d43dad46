//! Weights owned by threads: a weight matrix's rows cut into strips by its shape and the CPU
//! alone, and each strip's products and optimizer step run on the same thread of the pool at
//! every call.
//!
//! Why: a core that writes a cache line another core has just read waits for the other copy to
//! be invalidated, and these waits do not overlap. On the 2-core Zen 4 VM this project is
//! measured on, Adam's step over the 400 KiB kernel of Dense 784→128 (program A's first layer,
//! batch 32) took 45–50 µs of CPU time after a forward product on the same core, and 180–220 µs
//! after a forward product that had read the kernel on both cores (each took half the batch's
//! rows, so each read all of W); write prefetches (`prefetchw`) ahead of the stores did not help.
//! With the rows owned, each core reads and writes only its own strip of W and of the state:
//! forward plus fused step of that layer went from 201 to 118 µs per training step on two
//! threads, and Dense 5408→128 with its input gradient (program C) from 1465 to 1050 µs.
//!
//! A forward product over a strip of W's rows is a product over a slice of K, so
//! [`dense_forward`] sums the strips' partial products in strip order: the same bits for every
//! thread count (the strips depend on the shape and the machine alone), though not those of one
//! whole product. [`crate::optim::update_from_product`] runs its blocks of rows on the same
//! owners.
//!
//! How many strips: as many as the CPU reports logical processors sharing its last-level cache
//! (CPUID's or sysfs's figure, an upper bound on some Intel parts: never the pool's size nor
//! the process's affinity), at most [`MAX_STRIPS`]; [`MAX_STRIPS`] where no third level is
//! reported (an L2 private to a core would leave one strip on a many-core machine). Each strip past the first costs a partial product as large as the output,
//! written and read back: with eight strips on a 2-core Xeon VM, program B's forward (128 rows
//! of 512, K = 784) summed seven of them at every step, and its epoch took 0.360 s against 0.334
//! with two (program A's 0.158 against 0.149; medians of 3 interleaved runs, two threads).

use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use crate::activation::{bias_act_row, Activation, RowBias};
use crate::error::{check_len, matrix_len, Error, Result};
use crate::gemm::{gemm_with, ExecOptions, Threading};
use crate::scratch::STRIP_PARTIALS;
use crate::shared::SharedOut;
use crate::{Isa, MatMut, MatRef};

/// The most strips a weight matrix is cut into on any machine: pools of up to
/// [`machine_strips`] threads all own a share; more strips would add partial products (and
/// their sums) to every forward pass.
pub const MAX_STRIPS: usize = 8;

/// The most strips on this machine: the logical processors the CPU reports sharing its L3,
/// from 1 to [`MAX_STRIPS`], or [`MAX_STRIPS`] without an L3 (see the module documentation).
pub fn machine_strips() -> usize {
    crate::cpu::cache_info()
        .l3
        .map_or(MAX_STRIPS, |l3| l3.shared_by)
        .clamp(1, MAX_STRIPS)
}

/// Rows of a weight matrix per block (of [`crate::optim::update_from_product`], whose blocks
/// make up the strips): a multiple of 24 (of every registered tile's MR, so no block computes
/// padding rows), such that the block's weights, state and gradient (up to four `rows × n`
/// arrays) stay within about 256 KiB (L2) and a matrix makes about a dozen blocks or more.
fn block_rows(k: usize, n: usize) -> usize {
    const QUANTUM: usize = 24;
    let cache_rows = (16 * 1024 / n.max(1)) / QUANTUM * QUANTUM;
    let balance_rows = k.div_ceil(12).next_multiple_of(QUANTUM);
    cache_rows.min(balance_rows).max(QUANTUM)
}

/// The strips of a `k × n` weight matrix's rows, and the blocks of rows they are made of: the
/// blocks a function of the shape alone, the strips of the shape and the CPU, so that every
/// thread count computes the same ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WeightStrips {
    k: usize,
    rows: usize,
    blocks: usize,
    strips: usize,
}

impl WeightStrips {
    /// The strips of a `k × n` matrix on this machine: [`WeightStrips::at_most`] with
    /// [`machine_strips`].
    pub fn new(k: usize, n: usize) -> WeightStrips {
        WeightStrips::at_most(k, n, machine_strips())
    }

    /// The strips of a `k × n` matrix: blocks of a multiple of 24 rows (a block's weights,
    /// state and gradient within about 256 KiB, a dozen blocks or more per matrix), a one-row
    /// last block joined to the block before it (its input-gradient product would be a one-row
    /// product, which sums in another order than the tiles), and up to `most` strips of whole
    /// blocks (1 to [`MAX_STRIPS`]; clamped so).
    pub fn at_most(k: usize, n: usize, most: usize) -> WeightStrips {
        let rows = block_rows(k, n);
        let mut blocks = k.div_ceil(rows);
        if k > rows && (k - 1).is_multiple_of(rows) {
            blocks -= 1;
        }
        WeightStrips {
            k,
            rows,
            blocks,
            strips: blocks.min(most.clamp(1, MAX_STRIPS)),
        }
    }

    /// How many strips there are (0 for a matrix without rows).
    pub fn count(&self) -> usize {
        self.strips
    }

    /// The rows of strip `s`.
    pub fn rows(&self, s: usize) -> Range<usize> {
        let blocks = self.blocks_of(s);
        self.block(blocks.start).start..self.block(blocks.end - 1).end
    }

    /// The blocks strip `s` is made of.
    pub(crate) fn blocks_of(&self, s: usize) -> Range<usize> {
        s * self.blocks / self.strips..(s + 1) * self.blocks / self.strips
    }

    /// The rows of block `b`.
    pub(crate) fn block(&self, b: usize) -> Range<usize> {
        let start = b * self.rows;
        let end = if b + 1 == self.blocks {
            self.k
        } else {
            start + self.rows
        };
        start..end
    }

    /// The thread that owns strip `s` in a pool of `threads`: runs of whole strips, in order,
    /// on threads `0..min(threads, strips)`.
    fn owner(&self, s: usize, threads: usize) -> usize {
        s * threads.min(self.strips) / self.strips
    }

    /// Runs `f(s)` for every strip `s`: on the pool's threads when `threading` may use them
    /// (strip `s` on thread `s·T/S` of a pool of T < S threads, on thread `s` of a larger one:
    /// the same thread at every call), else all on the calling thread in order. Returns the
    /// first error; every strip runs even when one fails.
    ///
    /// One task per owner thread; whichever thread runs a task first runs its own strips, so
    /// each owner runs its strips wherever its task went. A task taken by a thread that owns
    /// nothing runs the strips of the owner it was meant for, and a strip that is still
    /// unclaimed at the end (its owner asleep, or busy elsewhere, when the calling thread ran
    /// out of other work) runs on the calling thread: the call never waits on a thread that may
    /// not come. No allocation: `rayon::broadcast` would allocate its jobs at every call.
    pub fn run(
        &self,
        threading: Threading,
        f: &(dyn Fn(usize) -> Result<()> + Sync),
    ) -> Result<()> {
        if self.strips <= 1 || !crate::process::parallel(threading) {
            let mut first = Ok(());
            for s in 0..self.strips {
                let done = f(s);
                if first.is_ok() {
                    first = done;
                }
            }
            return first;
        }
        let claimed: [AtomicBool; MAX_STRIPS] = std::array::from_fn(|_| AtomicBool::new(false));
        let failure: Mutex<Option<Error>> = Mutex::new(None);
        let run_strip = |s: usize| {
            if claimed[s].swap(true, Ordering::Relaxed) {
                return;
            }
            if let Err(e) = f(s) {
                if let Ok(mut first) = failure.lock() {
                    first.get_or_insert(e);
                }
            }
        };
        let threads = rayon::current_num_threads();
        let owners = threads.min(self.strips);
        let strips_of = |t: usize| (0..self.strips).filter(move |&s| self.owner(s, threads) == t);
        crate::team::run_parallel(
            owners,
            owners,
            &|task| match rayon::current_thread_index() {
                Some(me) if me < owners => strips_of(me).for_each(run_strip),
                _ => strips_of(task).for_each(run_strip),
            },
        );
        (0..self.strips).for_each(run_strip);
        match failure.into_inner() {
            Ok(Some(e)) => Err(e),
            _ => Ok(()),
        }
    }
}

/// `y ← act(x·w + bias)` with `w`'s row strips ([`WeightStrips`]) multiplied on their owners
/// (see the module documentation): `x` is `m × k` (any strides), `w` the `k × n` row-major
/// weights, `bias` (when given) `n` long, `y` the `m × n` row-major output. The strips' partial
/// products are summed in strip order, then the bias is added and the activation applied: the
/// same bits for every thread count.
pub fn dense_forward(
    opts: &ExecOptions,
    x: MatRef<'_>,
    w: &[f32],
    n: usize,
    bias: Option<&[f32]>,
    act: Activation,
    y: &mut [f32],
) -> Result<()> {
    let strips = WeightStrips::new(x.cols(), n);
    dense_forward_in_strips(opts, strips, x, w, n, bias, act, y)
}

/// [`dense_forward`] over the given strips of `w` (those of another machine, for tests: the
/// partial products summed are one fewer than the strips). `strips` must be `WeightStrips` of
/// `w`'s shape, `x.cols() × n`.
///
/// # Errors
/// As [`dense_forward`]'s; strips of another shape are a shape mismatch.
#[allow(clippy::too_many_arguments)]
pub fn dense_forward_in_strips(
    opts: &ExecOptions,
    strips: WeightStrips,
    x: MatRef<'_>,
    w: &[f32],
    n: usize,
    bias: Option<&[f32]>,
    act: Activation,
    y: &mut [f32],
) -> Result<()> {
    let what = "dense_forward";
    let (m, k) = (x.rows(), x.cols());
    x.validate("X")?;
    let size = |r: usize, c: usize| matrix_len(what, r, c);
    check_len(what, "the weights w", w.len(), size(k, n)?, || {
        format!("{k}×{n}")
    })?;
    check_len(what, "the output y", y.len(), size(m, n)?, || {
        format!("{m}×{n}")
    })?;
    if let Some(b) = bias.filter(|b| b.len() != n) {
        return Err(Error::ShapeMismatch {
            what,
            detail: format!(
                "the bias has {} elements but the output has {n} columns",
                b.len()
            ),
        });
    }
    let isa = Isa::resolve(opts.isa)?;
    let row_bias = bias.map_or(RowBias::None, RowBias::Each);
    let finish_row = |row: &mut [f32]| {
        // SAFETY: `resolve` checked that this CPU has `isa`'s features.
        unsafe { bias_act_row(isa, act, row, row_bias) }
    };
    if strips != WeightStrips::at_most(k, n, strips.count()) {
        return Err(Error::ShapeMismatch {
            what,
            detail: format!("the strips are not those of a {k}×{n} weight matrix"),
        });
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    if strips.count() == 0 {
        // K = 0: the product is a sum over nothing.
        y.fill(0.0);
        y.chunks_exact_mut(n).for_each(finish_row);
        return Ok(());
    }
    let single = ExecOptions {
        threading: Threading::Single,
        ..*opts
    };
    // Strip 0's product goes straight into y, the others' into partials, added in strip order.
    let part = m * n;
    STRIP_PARTIALS.with((strips.count() - 1) * part, 0, |parts| {
        {
            let y_out = SharedOut::new(&mut *y);
            let parts_out = SharedOut::new(&mut *parts);
            strips.run(opts.threading, &|s| {
                let rows = strips.rows(s);
                // SAFETY: strip s alone writes y (s = 0) or partial s - 1.
                let out = unsafe {
                    match s {
                        0 => y_out.slice(0..part),
                        _ => parts_out.slice((s - 1) * part..s * part),
                    }
                };
                gemm_with(
                    &single,
                    1.0,
                    x.columns(rows.start, rows.len()),
                    MatRef::row_major(&w[rows.start * n..rows.end * n], rows.len(), n, n),
                    0.0,
                    MatMut::row_major(out, m, n, n),
                )
            })?;
        }
        sum_partials(opts.threading, y, parts, n, &finish_row);
        Ok(())
    })
}

/// Elements (of y and the partials) each task of [`sum_partials`] adds at least: below this, a
/// hand-off costs more than the sums it takes over.
const SUM_TASK_ELEMENTS: usize = 1 << 15;

/// y ← (((y + partial₁) + partial₂) + …) element by element, the partials (each as large as y,
/// rows of `n`) in order, then `finish` on each row: one pass over y, a row at a time (it
/// stays in L1 while the partials are added to it), its rows shared among the pool's threads.
/// The order of the additions is the same for every element on any thread count. Summed in
/// passes of all of y, one partial at a time, on the calling thread, program B's forward
/// (eight strips over 128 rows of 512) read y eight times over and left the other core idle.
fn sum_partials(
    threading: Threading,
    y: &mut [f32],
    parts: &[f32],
    n: usize,
    finish: &(dyn Fn(&mut [f32]) + Sync),
) {
    let part = y.len();
    let sum_rows = |first: usize, rows: &mut [f32]| {
        for (r, row) in rows.chunks_exact_mut(n).enumerate() {
            let at = (first + r) * n;
            for partial in parts.chunks_exact(part) {
                for (y, p) in row.iter_mut().zip(&partial[at..at + n]) {
                    *y += p;
                }
            }
            finish(row);
        }
    };
    let m = part / n;
    let per_row = n * (parts.len() / part + 1);
    let tasks = crate::process::threads(threading).min(m * per_row / SUM_TASK_ELEMENTS);
    if tasks <= 1 {
        sum_rows(0, y);
        return;
    }
    let rows_per_task = m.div_ceil(tasks);
    crate::team::for_each_piece(threading, y, rows_per_task * n, |t, rows| {
        sum_rows(t * rows_per_task, rows)
    });
}
