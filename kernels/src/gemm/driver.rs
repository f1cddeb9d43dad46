//! The one blocked GEMM driver (BLIS's five loops) shared by every microkernel in
//! [`super::config`]. It sees only a [`KernelConfig`]: tile sizes, block sizes, a kernel pointer.
//!
//! Threads split C into a grid of rectangles (rows in whole MR tiles, columns in whole NR panels);
//! K is never split, so every element of C is summed in the same order whatever the thread count.

use std::cell::RefCell;

use aligned_vec::{AVec, ConstAlign};
use rayon::prelude::*;

use super::config::KernelConfig;
use super::pack::{pack_a, pack_b};

/// The largest `MR × NR` tile any registered kernel may have (scratch space for edge tiles).
pub(crate) const MAX_TILE: usize = 512;

/// Below this many multiply-adds (m·n·k) a product runs on the calling thread: splitting it costs
/// more in rayon hand-offs than it saves. Measured with the bench-suite GEMM group (see README).
pub(crate) const PARALLEL_MIN_MACS: usize = 1 << 17;

/// Above this many multiply-adds per K block the threads pack each B panel together and share it,
/// instead of each packing the part it needs (which repeats B's packing once per row band).
const SHARED_B_MIN_MACS: usize = 1 << 22;

/// An input matrix: its buffer and element strides (checked against the buffer by the caller).
#[derive(Clone, Copy)]
pub(crate) struct Operand<'a> {
    pub data: &'a [f32],
    pub rs: usize,
    pub cs: usize,
}

/// The output matrix as a raw pointer, so threads can write disjoint tiles of it at once.
#[derive(Clone, Copy)]
pub(crate) struct Output {
    pub ptr: *mut f32,
    pub rs: usize,
    pub cs: usize,
}

// SAFETY: `Output` is only shared between tasks that write disjoint elements of C (the grid of
// rectangles below), and the `&mut [f32]` it came from outlives the parallel section.
unsafe impl Send for Output {}
// SAFETY: as for `Send`: concurrent users touch disjoint elements.
unsafe impl Sync for Output {}

/// One GEMM problem as the driver sees it: C (m×n) ← alpha·A (m×k)·B (k×n) + beta·C, with
/// m, n, k > 0 and alpha ≠ 0 (the caller handled the quick returns).
#[derive(Clone, Copy)]
pub(crate) struct Problem<'a> {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub alpha: f32,
    pub a: Operand<'a>,
    pub b: Operand<'a>,
    pub beta: f32,
    pub c: Output,
}

type Buffer = AVec<f32, ConstAlign<64>>;

thread_local! {
    // Packing buffers, kept per thread and reused, so that a training step in steady state does
    // not allocate. They only grow.
    static PACK_A: RefCell<Buffer> = RefCell::new(Buffer::new(64));
    static PACK_B: RefCell<Buffer> = RefCell::new(Buffer::new(64));
}

/// Runs `f` on `len` floats of this thread's buffer `key`. If the buffer is already in use on this
/// thread (a rayon worker that stole a second GEMM while waiting inside the first), a fresh one is
/// used instead.
fn with_buffer<R>(
    key: &'static std::thread::LocalKey<RefCell<Buffer>>,
    len: usize,
    f: impl FnOnce(&mut [f32]) -> R,
) -> R {
    key.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            if buf.len() < len {
                buf.resize(len, 0.0);
            }
            f(&mut buf[..len])
        }
        Err(_) => {
            let mut fresh = Buffer::from_iter(64, std::iter::repeat_n(0.0, len));
            f(&mut fresh)
        }
    })
}

/// A rectangle of C: rows `i0..i0+mb`, columns `j0..j0+nb`.
#[derive(Clone, Copy, Debug)]
struct Rect {
    i0: usize,
    mb: usize,
    j0: usize,
    nb: usize,
}

/// How C is cut among threads: `m_chunks × n_chunks` rectangles of `m_chunk` rows and `n_chunk`
/// columns (multiples of MR and NR). A row band never exceeds `mc`, so it is one packed A block.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Grid {
    m_chunk: usize,
    n_chunk: usize,
    m_chunks: usize,
    n_chunks: usize,
}

impl Grid {
    fn new(cfg: &KernelConfig, m: usize, n: usize, threads: usize) -> Grid {
        let m_tiles = m.div_ceil(cfg.mr);
        let n_tiles = n.div_ceil(cfg.nr);
        let min_m_chunks = m_tiles.div_ceil(cfg.mc / cfg.mr);
        // (cost, column chunks, tasks, row chunks) of the best cut found.
        let mut best = (usize::MAX, 1, 1, min_m_chunks);
        if threads > 1 {
            // Minimise the busiest thread's tile count; on ties prefer fewer column splits (each
            // repeats A's packing) and then fewer tasks.
            for mchunks in min_m_chunks..=m_tiles.min(min_m_chunks.max(1) * threads * 2) {
                let m_chunk_tiles = m_tiles.div_ceil(mchunks);
                let mchunks = m_tiles.div_ceil(m_chunk_tiles);
                for nchunks in 1..=n_tiles.min(threads * 2) {
                    let n_chunk_tiles = n_tiles.div_ceil(nchunks);
                    let nchunks = n_tiles.div_ceil(n_chunk_tiles);
                    let tasks = mchunks * nchunks;
                    let rounds = tasks.div_ceil(threads);
                    let cost = rounds * m_chunk_tiles * n_chunk_tiles;
                    if (cost, nchunks, tasks) < (best.0, best.1, best.2) {
                        best = (cost, nchunks, tasks, mchunks);
                    }
                }
            }
        }
        let (m_chunks, n_chunks) = (best.3, best.1);
        let m_chunk = m_tiles.div_ceil(m_chunks) * cfg.mr;
        let n_chunk = n_tiles.div_ceil(n_chunks) * cfg.nr;
        Grid {
            m_chunk,
            n_chunk,
            m_chunks: m.div_ceil(m_chunk),
            n_chunks: n.div_ceil(n_chunk),
        }
    }

    fn tasks(&self) -> usize {
        self.m_chunks * self.n_chunks
    }

    /// Rectangle `t` of the grid, clipped to `m × n`, column offsets relative to `j_base`.
    fn rect(&self, t: usize, m: usize, n: usize, j_base: usize) -> Rect {
        let (mi, ni) = (t / self.n_chunks, t % self.n_chunks);
        let i0 = mi * self.m_chunk;
        let j = ni * self.n_chunk;
        Rect {
            i0,
            mb: self.m_chunk.min(m - i0),
            j0: j_base + j,
            nb: self.n_chunk.min(n - j),
        }
    }
}

/// C ← alpha·A·B + beta·C with the microkernel `cfg`, on up to `threads` threads of the current
/// rayon pool.
pub(crate) fn gemm_blocked(cfg: &KernelConfig, prob: &Problem<'_>, threads: usize) {
    let threads = if prob.m * prob.n * prob.k < PARALLEL_MIN_MACS {
        1
    } else {
        threads.max(1)
    };
    let grid = Grid::new(cfg, prob.m, prob.n, threads);
    if threads == 1 || grid.tasks() == 1 {
        let all = Rect {
            i0: 0,
            mb: prob.m,
            j0: 0,
            nb: prob.n,
        };
        return blocked_rect(cfg, prob, all);
    }
    let kb_max = cfg.kc.min(prob.k);
    if grid.m_chunks > 1 && prob.m * prob.n.min(cfg.nc) * kb_max >= SHARED_B_MIN_MACS {
        return blocked_shared_b(cfg, prob, threads);
    }
    // Loop over the grid: parallel. Each rectangle is an independent GEMM that packs its own
    // blocks of A and B.
    (0..grid.tasks()).into_par_iter().for_each(|t| {
        blocked_rect(cfg, prob, grid.rect(t, prob.m, prob.n, 0));
    });
}

/// The five loops on one rectangle of C, on this thread.
fn blocked_rect(cfg: &KernelConfig, prob: &Problem<'_>, rect: Rect) {
    let kc = cfg.kc.min(prob.k);
    let nc = cfg.nc.min(rect.nb.next_multiple_of(cfg.nr));
    with_buffer(&PACK_B, kc * nc, |bbuf| {
        // Loop 5 over NC-wide column panels of C: sequential (they share the B buffer).
        for jc in (0..rect.nb).step_by(cfg.nc) {
            let nb = cfg.nc.min(rect.nb - jc);
            // Loop 4 over KC-deep slices of K: sequential, always — the order of the partial sums
            // is what makes results independent of the thread count.
            for pc in (0..prob.k).step_by(cfg.kc) {
                let kb = cfg.kc.min(prob.k - pc);
                let bpack = &mut bbuf[..nb.div_ceil(cfg.nr) * cfg.nr * kb];
                pack_b(bpack, prob.b, pc, rect.j0 + jc, kb, nb, cfg.nr, 0);
                let sub = Rect {
                    i0: rect.i0,
                    mb: rect.mb,
                    j0: rect.j0 + jc,
                    nb,
                };
                macro_kernel(cfg, prob, sub, pc, kb, bpack);
            }
        }
    });
}

/// The five loops with B's panels packed by all threads together and shared by them: for large
/// problems, where repeating B's packing per row band would cost more than two extra joins.
fn blocked_shared_b(cfg: &KernelConfig, prob: &Problem<'_>, threads: usize) {
    let kc = cfg.kc.min(prob.k);
    let nc = cfg.nc.min(prob.n.next_multiple_of(cfg.nr));
    with_buffer(&PACK_B, kc * nc, |bbuf| {
        // Loop 5 over NC-wide column panels: sequential (one shared B buffer).
        for jc in (0..prob.n).step_by(cfg.nc) {
            let nb = cfg.nc.min(prob.n - jc);
            let grid = Grid::new(cfg, prob.m, nb, threads);
            // Loop 4 over KC-deep slices: sequential (fixed summation order).
            for pc in (0..prob.k).step_by(cfg.kc) {
                let kb = cfg.kc.min(prob.k - pc);
                let bpack = &mut bbuf[..nb.div_ceil(cfg.nr) * cfg.nr * kb];
                // Packing B: parallel over groups of micro-panels (disjoint destinations).
                let panels_per_task = nb.div_ceil(cfg.nr).div_ceil(threads);
                bpack
                    .par_chunks_mut(panels_per_task * cfg.nr * kb)
                    .enumerate()
                    .for_each(|(t, chunk)| {
                        pack_b(chunk, prob.b, pc, jc, kb, nb, cfg.nr, t * panels_per_task);
                    });
                let bpack = &*bpack;
                // Loops 3–1 on the grid's rectangles: parallel.
                (0..grid.tasks()).into_par_iter().for_each(|t| {
                    let rect = grid.rect(t, prob.m, nb, jc);
                    let first_panel = (rect.j0 - jc) / cfg.nr;
                    let panels = &bpack[first_panel * cfg.nr * kb..];
                    macro_kernel(cfg, prob, rect, pc, kb, panels);
                });
            }
        }
    });
}

/// Loops 3–1 for one K slice: `rect` of C gets alpha·A[rect rows, pc..pc+kb]·B̃ (+ beta·C on the
/// first slice), where `bpack` holds B̃, the packed panels for `rect`'s columns.
fn macro_kernel(
    cfg: &KernelConfig,
    prob: &Problem<'_>,
    rect: Rect,
    pc: usize,
    kb: usize,
    bpack: &[f32],
) {
    let (mr, nr) = (cfg.mr, cfg.nr);
    let beta = if pc == 0 { prob.beta } else { 1.0 };
    let mc = cfg.mc.min(rect.mb.next_multiple_of(mr));
    with_buffer(&PACK_A, mc * kb, |abuf| {
        // Loop 3 over MC-tall row blocks: sequential here (the grid already split rows).
        for ic in (0..rect.mb).step_by(cfg.mc) {
            let mb = cfg.mc.min(rect.mb - ic);
            let apack = &mut abuf[..mb.div_ceil(mr) * mr * kb];
            pack_a(apack, prob.a, rect.i0 + ic, pc, mb, kb, mr);
            // Loop 2 over B's micro-panels: sequential (this B̃ panel stays in L1 for loop 1).
            for jr in (0..rect.nb).step_by(nr) {
                let b_panel = &bpack[(jr / nr) * nr * kb..][..nr * kb];
                // Loop 1 over A's micro-panels: sequential.
                for ir in (0..mb).step_by(mr) {
                    let a_panel = &apack[(ir / mr) * mr * kb..][..mr * kb];
                    let i = rect.i0 + ic + ir;
                    let j = rect.j0 + jr;
                    let rows = mr.min(rect.mb - ic - ir);
                    let cols = nr.min(rect.nb - jr);
                    tile(cfg, prob, i, j, rows, cols, kb, a_panel, b_panel, beta);
                }
            }
        }
    });
}

/// One MR × NR tile of C at (`i`, `j`), of which `rows × cols` lie inside C.
#[allow(clippy::too_many_arguments)]
#[inline]
fn tile(
    cfg: &KernelConfig,
    prob: &Problem<'_>,
    i: usize,
    j: usize,
    rows: usize,
    cols: usize,
    kb: usize,
    a_panel: &[f32],
    b_panel: &[f32],
    beta: f32,
) {
    let c = prob.c;
    // SAFETY: (i, j) lies inside C, which the caller checked against its buffer; rows and cols
    // are clipped to C, so every element touched below is inside C's buffer.
    let c_tile = unsafe { c.ptr.add(i * c.rs + j * c.cs) };
    if rows == cfg.mr && cols == cfg.nr && c.cs == 1 {
        // SAFETY: the panels hold kb·MR and kb·NR floats; the full tile lies inside C (unit
        // column stride, row stride c.rs), and only this task writes it; the kernel's ISA was
        // checked available before the driver was entered.
        unsafe {
            (cfg.kernel)(
                kb,
                prob.alpha,
                a_panel.as_ptr(),
                b_panel.as_ptr(),
                beta,
                c_tile,
                c.rs,
            )
        };
        return;
    }
    #[repr(align(64))]
    struct Scratch([f32; MAX_TILE]);
    let mut scratch = Scratch([0.0; MAX_TILE]);
    // SAFETY: as above for the panels; the scratch tile holds MR × NR ≤ MAX_TILE floats at row
    // stride NR, and beta = 0 means the kernel does not read it.
    unsafe {
        (cfg.kernel)(
            kb,
            prob.alpha,
            a_panel.as_ptr(),
            b_panel.as_ptr(),
            0.0,
            scratch.0.as_mut_ptr(),
            cfg.nr,
        )
    };
    for ii in 0..rows {
        for jj in 0..cols {
            let v = scratch.0[ii * cfg.nr + jj];
            // SAFETY: (i + ii, j + jj) lies inside C (rows/cols clipped), written by this task only.
            unsafe {
                let dst = c_tile.add(ii * c.rs + jj * c.cs);
                *dst = if beta == 0.0 { v } else { v + beta * *dst };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gemm::config::kernel_config;
    use crate::Isa;

    #[test]
    fn grid_covers_c_in_whole_tiles_and_respects_mc() {
        let cfg = kernel_config(Isa::Scalar).unwrap();
        for &(m, n, threads) in &[
            (1, 1, 2),
            (32, 128, 2),
            (9, 32, 2),
            (1000, 7, 2),
            (5000, 300, 4),
            (64, 64, 1),
        ] {
            let g = Grid::new(cfg, m, n, threads);
            assert_eq!(g.m_chunk % cfg.mr, 0);
            assert_eq!(g.n_chunk % cfg.nr, 0);
            assert!(g.m_chunk <= cfg.mc.max(cfg.mr));
            let covered: usize = (0..g.tasks())
                .map(|t| {
                    let r = g.rect(t, m, n, 0);
                    r.mb * r.nb
                })
                .sum();
            assert_eq!(covered, m * n, "{m}×{n} on {threads}: {g:?}");
        }
    }

    #[test]
    fn grid_uses_every_thread_when_c_has_enough_tiles() {
        let cfg = kernel_config(Isa::Scalar).unwrap();
        assert!(Grid::new(cfg, 32, 128, 2).tasks() >= 2);
        assert!(Grid::new(cfg, 4096, 8, 2).tasks() >= 2);
        assert_eq!(Grid::new(cfg, 4, 8, 2).tasks(), 1);
    }
}
