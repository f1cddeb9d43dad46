//! The one blocked GEMM driver (BLIS's five loops) shared by every microkernel in
//! [`super::config`]. It sees only a [`KernelConfig`]: tile sizes, block sizes, a kernel pointer.
//!
//! Threads split C into a grid of rectangles (rows in whole MR tiles, columns in whole NR panels);
//! K is never split, so every element of C is summed in the same order whatever the thread count.
//! Every rectangle packs its own blocks of A and B: a panel of B packed by all threads together
//! and read by all of them was slower on two Xeon cores at every shape tried (each thread packing
//! all of B for its own row band, not sharing one panel: 1024³ 405 → 413 GFLOP/s, 1000³ 401 →
//! 410, 700×300×900 381 → 405, 333×777×555 354 → 373, medians of 5 interleaved runs): reading
//! the lines another core had just written cost as much as packing them again.

use super::config::{kernel_config, slice_depth, KernelConfig};
use super::in_place::gemm_in_place;
use super::pack::{pack_a, pack_b};
use super::price::HandOff;
use super::problem::Problem;
#[cfg(test)]
use super::problem::{Operand, Output};
use super::transposed_b::gemm_transposed_b;
use crate::scratch::{PACK_A, PACK_B};
use crate::team::run_parallel;
use crate::Isa;

/// The largest `MR × NR` tile any registered kernel may have (scratch space for edge tiles).
pub(crate) const MAX_TILE: usize = 512;

/// The cost model that decides how to split a product among threads, in units of one
/// multiply-add on the packed tiles. Packing one element of A or B costs about as much as this
/// many multiply-adds (a copy moves a few elements per cycle; the tile does 16–32 per cycle).
const PACK_COST: f64 = 16.0;
/// Up to this many rows of C, B is read in place (for kernels that can) rather than packed: each
/// element of B then serves so few rows that copying it first costs more than it saves.
const DIRECT_B_MAX_ROWS: usize = 32;

/// Where the micro-panels of B for one K slice come from: a packed buffer (`rsb = NR`), or B
/// itself read in place (`rsb` = B's row stride).
#[derive(Clone, Copy)]
struct BPanels<'a> {
    data: &'a [f32],
    /// Index of the slice's first element (row pc, first column of the rectangle).
    origin: usize,
    /// Distance between consecutive micro-panels.
    panel_step: usize,
    rsb: usize,
}

impl<'a> BPanels<'a> {
    fn packed(buf: &'a [f32], kb: usize, nr: usize) -> Self {
        BPanels {
            data: buf,
            origin: 0,
            panel_step: nr * kb,
            rsb: nr,
        }
    }

    /// Micro-panel `idx` onwards.
    fn panel(&self, idx: usize) -> &'a [f32] {
        &self.data[self.origin + idx * self.panel_step..]
    }
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
/// columns (multiples of MR and NR). A row band may exceed `mc`: the macro-kernel packs it as
/// blocks of equal height. (Cut into bands of at most `mc` rows, 1024 rows of 12-row tiles made
/// four bands of 22, 22, 22 and 20 tiles, two rounds on two threads, one thread idle for a tenth
/// of the second; 384×1024×768 made two bands of 192 rows where two of 384 columns pad less:
/// on two Xeon threads, medians of 5 interleaved runs, 384×1024×768 363 → 397 GFLOP/s, 512³
/// 379 → 398, 1024³ 398 → 404.)
#[derive(Clone, Copy, Debug, PartialEq)]
struct Grid {
    m_chunk: usize,
    n_chunk: usize,
    m_chunks: usize,
    n_chunks: usize,
}

impl Grid {
    /// The cheapest cut of C for `threads` threads under the cost model above, with its cost.
    /// Cutting rows repeats B's packing per row band; cutting columns repeats A's.
    fn new(
        cfg: &KernelConfig,
        m: usize,
        n: usize,
        k: usize,
        threads: usize,
        direct_b: bool,
        fork_cost: f64,
    ) -> (Grid, f64) {
        let m_tiles = m.div_ceil(cfg.mr);
        let n_tiles = n.div_ceil(cfg.nr);
        // The search's reach: up to twice the threads' count of the bands of at most `mc` rows.
        let mc_bands = m_tiles.div_ceil(cfg.mc / cfg.mr);
        let b_pack = if direct_b { 0.0 } else { PACK_COST };
        // (cost, row chunks, column chunks) of the best cut found.
        let mut best = (f64::INFINITY, 1, 1);
        for (m_chunk, mchunks) in distinct_cuts(m_tiles, mc_bands * threads.max(1) * 2) {
            for (n_chunk, nchunks) in distinct_cuts(n_tiles, threads.max(1) * 2) {
                let tasks = mchunks * nchunks;
                let rounds = tasks.div_ceil(threads.max(1)) as f64;
                let (rows, cols, k) = (
                    (m_chunk * cfg.mr) as f64,
                    (n_chunk * cfg.nr) as f64,
                    k as f64,
                );
                let task = rows * cols * k + PACK_COST * rows * k + b_pack * k * cols;
                let fork = if tasks > 1 { fork_cost } else { 0.0 };
                let cost = rounds * task + fork;
                if cost < best.0 {
                    best = (cost, mchunks, nchunks);
                }
            }
        }
        let (cost, m_chunks, n_chunks) = best;
        let m_chunk = m_tiles.div_ceil(m_chunks) * cfg.mr;
        let n_chunk = n_tiles.div_ceil(n_chunks) * cfg.nr;
        let grid = Grid {
            m_chunk,
            n_chunk,
            m_chunks: m.div_ceil(m_chunk),
            n_chunks: n.div_ceil(n_chunk),
        };
        (grid, cost)
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

/// The distinct ways to cut `tiles` tiles into `1..=most` chunks of whole tiles, as (tiles per
/// chunk, chunks), largest chunk first: cutting into `x` chunks of `tiles.div_ceil(x)` makes
/// `tiles.div_ceil(that)` of them, and the consecutive `x` that give the same chunk are one cut.
/// Visiting each once instead of every `x` took [`Grid::new`] from 4 % of a two-thread
/// 5408×32×128 product's time (a search over some 230 counts of row chunks per tile, for each
/// tile of the instruction set) to 0.7 %, with the same cut found.
fn distinct_cuts(tiles: usize, most: usize) -> impl Iterator<Item = (usize, usize)> {
    let most = most.min(tiles);
    let mut x = 1;
    std::iter::from_fn(move || {
        if x > most {
            return None;
        }
        let chunk = tiles.div_ceil(x);
        let chunks = tiles.div_ceil(chunk);
        // The largest count that still gives `chunk` tiles a chunk; after one tile a chunk, none.
        x = if chunk == 1 {
            usize::MAX
        } else {
            (tiles - 1) / (chunk - 1) + 1
        };
        Some((chunk, chunks))
    })
}

/// C ← alpha·A·B + beta·C with `isa`'s kernels, on up to `threads` threads of the current rayon
/// pool. Products the small tiles do better with A read in place go there
/// ([`super::in_place`]), products of a few rows with B stored by columns to their transposed
/// form ([`super::transposed_b`]); the others to the packed path, with the tile for their shape
/// (chosen only then: the choice took 1.2 % of a 48³ product's time in a profile, one Zen 4
/// thread).
pub(crate) fn gemm_blocked(isa: Isa, prob: &Problem<'_>, threads: usize) {
    let kc = slice_depth(isa).expect("a resolved instruction set registers tiles");
    if !gemm_in_place(isa, prob, kc, threads) && !gemm_transposed_b(isa, prob, kc, threads) {
        gemm_packed(kernel_config(isa, prob.m, prob.n), prob, threads);
    }
}

/// Whether `cfg` reads B in place for `prob` rather than packing it.
fn reads_b_in_place(cfg: &KernelConfig, prob: &Problem<'_>) -> bool {
    cfg.direct_b && prob.b.cs == 1 && prob.m <= DIRECT_B_MAX_ROWS
}

/// The tile and cut of C for `threads` threads: `cfg` (the tile that pads the whole of C least)
/// on one thread or with A supplied packed for `cfg`; otherwise the tile of `cfg`'s instruction
/// set whose best cut costs least, tile cost included. What pads C least can pad each thread's
/// share most: 128×784×512 on two threads cut 512 columns into 6 and 5 panels of 48 (one
/// thread with 20 % more work) or rows into halves that each pack all of B, where 12×32 tiles
/// cut the columns 8 and 8 (173 → 187 GFLOP/s on two Zen 4 threads). Every tile sums each
/// element of C in the same order, so the choice leaves the bits alone.
fn tile_and_grid<'c>(
    cfg: &'c KernelConfig,
    prob: &Problem<'_>,
    threads: usize,
    fork_cost: f64,
) -> (&'c KernelConfig, Grid) {
    let (m, n, k) = (prob.m, prob.n, prob.k);
    let grid_of = |cfg: &KernelConfig| {
        Grid::new(
            cfg,
            m,
            n,
            k,
            threads,
            reads_b_in_place(cfg, prob),
            fork_cost,
        )
    };
    let (grid, cost) = grid_of(cfg);
    let mut best = (cfg, grid, cost);
    if threads <= 1 || prob.a_packer.is_some() {
        return (cfg, grid);
    }
    for other in super::config::kernels_of(cfg.isa) {
        if std::ptr::eq(other, cfg) {
            continue;
        }
        let (grid, cost) = grid_of(other);
        if cost * other.cost < best.2 * best.0.cost {
            best = (other, grid, cost);
        }
    }
    (best.0, best.1)
}

/// [`gemm_blocked`] with A and B packed (B read in place for a few rows, where `cfg` can).
pub(super) fn gemm_packed(cfg: &KernelConfig, prob: &Problem<'_>, threads: usize) {
    let (m, n, k) = (prob.m, prob.n, prob.k);
    let handoff = HandOff::here(cfg.isa, threads);
    let fork_cost = handoff.cost();
    let (cfg, grid) = tile_and_grid(cfg, prob, threads, fork_cost);
    let direct_b = reads_b_in_place(cfg, prob);
    if threads <= 1 || grid.tasks() == 1 {
        handoff.ran_alone(threads, |awake_cost| {
            Grid::new(cfg, m, n, k, threads, direct_b, awake_cost)
                .0
                .tasks()
                > 1
        });
        let all = Rect {
            i0: 0,
            mb: prob.m,
            j0: 0,
            nb: prob.n,
        };
        return blocked_rect(cfg, prob, all, direct_b);
    }
    // Loop over the grid: parallel. Each rectangle is an independent GEMM that packs its own
    // blocks of A and B.
    run_parallel(grid.tasks(), threads, &|t| {
        blocked_rect(cfg, prob, grid.rect(t, prob.m, prob.n, 0), direct_b);
    });
}

/// The five loops on one rectangle of C, on this thread.
fn blocked_rect(cfg: &KernelConfig, prob: &Problem<'_>, rect: Rect, direct_b: bool) {
    let kc = cfg.kc.min(prob.k);
    let nc = cfg.nc.min(rect.nb.next_multiple_of(cfg.nr));
    let buf_len = if direct_b { 0 } else { kc * nc };
    PACK_B.with(buf_len, buf_len, |bbuf| {
        // Loop 5 over NC-wide column panels of C: sequential (they share the B buffer).
        for jc in (0..rect.nb).step_by(cfg.nc) {
            let nb = cfg.nc.min(rect.nb - jc);
            let sub = Rect {
                i0: rect.i0,
                mb: rect.mb,
                j0: rect.j0 + jc,
                nb,
            };
            // Loop 4 over KC-deep slices of K: sequential, always — the order of the partial sums
            // is what makes results independent of the thread count.
            for pc in (0..prob.k).step_by(cfg.kc) {
                let kb = cfg.kc.min(prob.k - pc);
                let panels = if direct_b {
                    BPanels {
                        data: prob.b.data,
                        origin: pc * prob.b.rs + sub.j0,
                        panel_step: cfg.nr,
                        rsb: prob.b.rs,
                    }
                } else {
                    let bpack = &mut bbuf[..nb.div_ceil(cfg.nr) * cfg.nr * kb];
                    pack_b(bpack, prob.b, pc, sub.j0, kb, nb, cfg.nr, 0);
                    BPanels::packed(bpack, kb, cfg.nr)
                };
                macro_kernel(cfg, prob, sub, pc, kb, panels);
            }
        }
    });
}

/// Loops 3–1 for one K slice: `rect` of C gets alpha·A[rect rows, pc..pc+kb]·B̃ (+ beta·C on the
/// first slice), where `panels` gives B̃'s micro-panels for `rect`'s columns.
fn macro_kernel(
    cfg: &KernelConfig,
    prob: &Problem<'_>,
    rect: Rect,
    pc: usize,
    kb: usize,
    panels: BPanels<'_>,
) {
    let (mr, nr) = (cfg.mr, cfg.nr);
    let beta = if pc == 0 { prob.beta } else { 1.0 };
    let last_slice = pc + kb == prob.k;
    // Blocks of equal height (whole tiles), no taller than MC: 1024 rows as 4 × 256 rather than
    // 3 × 328 + 40, whose short block streams all of B's panel for an eighth of a full block's
    // work (one Xeon thread, mc 328, medians of 7 interleaved runs: 1024³ 122 → 131 GFLOP/s,
    // 700×300×900 114 → 122, 512³ and 2048³ within noise).
    let blocks = rect.mb.div_ceil(cfg.mc).max(1);
    let block_rows = rect.mb.div_ceil(blocks).next_multiple_of(mr).max(mr);
    // A packed A block is at most MC × KC: grown to that at once.
    PACK_A.with(block_rows * kb, cfg.mc * cfg.kc, |abuf| {
        // Loop 3 over row blocks: sequential here (the grid already split rows).
        for ic in (0..rect.mb).step_by(block_rows) {
            let mb = block_rows.min(rect.mb - ic);
            let apack = &mut abuf[..mb.div_ceil(mr) * mr * kb];
            match prob.a_packer {
                Some(packer) => packer.pack(apack, rect.i0 + ic, pc, mb, kb, mr),
                None => pack_a(apack, prob.a, rect.i0 + ic, pc, mb, kb, mr),
            }
            // Loop 2 over B's micro-panels: sequential (this B̃ panel stays in L1 for loop 1).
            for jr in (0..rect.nb).step_by(nr) {
                let b_panel = panels.panel(jr / nr);
                // Loop 1 over A's micro-panels: sequential.
                for ir in (0..mb).step_by(mr) {
                    let a_panel = &apack[(ir / mr) * mr * kb..][..mr * kb];
                    let i = rect.i0 + ic + ir;
                    let j = rect.j0 + jr;
                    let rows = mr.min(rect.mb - ic - ir);
                    let cols = nr.min(rect.nb - jr);
                    tile(
                        cfg,
                        prob,
                        (i, j),
                        (rows, cols),
                        kb,
                        a_panel,
                        (b_panel, panels.rsb),
                        beta,
                        last_slice,
                    );
                }
            }
        }
    });
}

/// One MR × NR tile of C at (`i`, `j`), of which `rows × cols` lie inside C. `b_panel` starts at
/// the tile's B micro-panel, whose rows are `rsb` apart. After the last K slice (`last_slice`)
/// the problem's epilogue is applied to the tile while it is still in L1.
#[inline]
#[allow(clippy::too_many_arguments)]
fn tile(
    cfg: &KernelConfig,
    prob: &Problem<'_>,
    (i, j): (usize, usize),
    (rows, cols): (usize, usize),
    kb: usize,
    a_panel: &[f32],
    (b_panel, rsb): (&[f32], usize),
    beta: f32,
    last_slice: bool,
) {
    let c = prob.c;
    let epilogue = prob.epilogue.filter(|_| last_slice);
    // The kernel reads `cols` floats of each of kb rows rsb apart from b_panel; the slice holds
    // them all (packed: kb·NR floats; in place: they are elements of the checked B view).
    debug_assert!(kb == 0 || b_panel.len() >= (kb - 1) * rsb + cols);
    debug_assert!(a_panel.len() >= kb * cfg.mr);
    // SAFETY: (i, j) lies inside C, which the caller checked against its buffer; rows and cols
    // are clipped to C, so every element touched below is inside C's buffer.
    let c_tile = unsafe { c.ptr.add(i * c.rs + j * c.cs) };
    if c.cs == 1 {
        // SAFETY: the A panel holds kb·MR floats and the B panel kb rows of `cols` floats (see
        // above); the rows × cols tile lies inside C (unit column stride, row stride c.rs) and
        // only this task writes it; the kernel's ISA was checked before the driver was entered.
        unsafe {
            (cfg.kernel)(
                kb,
                prob.alpha,
                a_panel.as_ptr(),
                b_panel.as_ptr(),
                rsb,
                beta,
                c_tile,
                c.rs,
                rows,
                cols,
            )
        };
        if let Some(e) = epilogue {
            // SAFETY: the tile lies inside C and only this task touches it; the caller checked
            // the bias lengths against C's shape and the epilogue's ISA.
            unsafe { e.apply(c_tile, c.rs, 1, (i, j), (rows, cols)) };
        }
        return;
    }
    // C has no unit column stride: compute the tile into scratch space, then copy it out.
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
            rsb,
            0.0,
            scratch.0.as_mut_ptr(),
            cfg.nr,
            rows,
            cols,
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
    if let Some(e) = epilogue {
        // SAFETY: as for the copy above.
        unsafe { e.apply(c_tile, c.rs, c.cs, (i, j), (rows, cols)) };
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::gemm::config::{kernels_of, small_tile, SMALL};
    use crate::gemm::price::{FORK_JOIN_COST, HANDOFF_COST};
    use crate::Isa;

    #[test]
    fn grid_covers_c_in_whole_tiles() {
        let cfg = &kernels_of(Isa::Scalar)[0];
        for &(m, n, threads) in &[
            (1, 1, 2),
            (32, 128, 2),
            (9, 32, 2),
            (1000, 7, 2),
            (5000, 300, 4),
            (64, 64, 1),
        ] {
            let (g, _) = Grid::new(cfg, m, n, 100, threads, false, FORK_JOIN_COST);
            assert_eq!(g.m_chunk % cfg.mr, 0);
            assert_eq!(g.n_chunk % cfg.nr, 0);
            let covered: usize = (0..g.tasks())
                .map(|t| {
                    let r = g.rect(t, m, n, 0);
                    r.mb * r.nb
                })
                .sum();
            assert_eq!(covered, m * n, "{m}×{n} on {threads}: {g:?}");
        }
    }

    /// The distinct cuts are those of every count of chunks, each once, in the same order.
    #[test]
    fn distinct_cuts_are_every_counts_cuts_once() {
        for tiles in 1..=300usize {
            for most in [1usize, 2, 3, 4, 8, 57, 228, 1000] {
                let mut every: Vec<(usize, usize)> = (1..=most.min(tiles))
                    .map(|x| {
                        let chunk = tiles.div_ceil(x);
                        (chunk, tiles.div_ceil(chunk))
                    })
                    .collect();
                every.dedup();
                let distinct: Vec<_> = distinct_cuts(tiles, most).collect();
                assert_eq!(distinct, every, "{tiles} tiles, at most {most} chunks");
            }
        }
    }

    #[test]
    fn grid_splits_large_products_only() {
        let cfg = &kernels_of(Isa::Scalar)[0];
        let grid = |m, n, k, fork| Grid::new(cfg, m, n, k, 2, false, fork).0;
        assert!(grid(32, 1024, 1000, FORK_JOIN_COST).tasks() >= 2);
        assert!(grid(4096, 8, 1000, FORK_JOIN_COST).tasks() >= 2);
        assert_eq!(grid(4, 8, 1000, FORK_JOIN_COST).tasks(), 1);
        // Too little work to pay for waking a second thread.
        assert_eq!(grid(16, 16, 16, FORK_JOIN_COST).tasks(), 1);
        // An awake helper team makes a split pay off sooner than a rayon wake-up does.
        assert_eq!(grid(96, 96, 96, FORK_JOIN_COST).tasks(), 1);
        assert!(grid(96, 96, 96, HANDOFF_COST).tasks() >= 2);
        // One band of rows per thread, though a band is taller than `mc` (see `Grid`): a narrow
        // C is cheaper cut by rows (cut by columns, each thread would pack all of A).
        let tall = grid(4 * cfg.mc, 64, 512, FORK_JOIN_COST);
        assert_eq!((tall.m_chunks, tall.n_chunks), (2, 1), "{tall:?}");
        assert!(tall.m_chunk > cfg.mc, "{tall:?}");
    }

    /// On two threads the tile is the one whose best cut costs least, not the one that pads the
    /// whole of C least; on one thread it is left alone.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_tile_follows_the_threads_shares() {
        let (m, k, n) = (128, 784, 512);
        let (a, b, mut c) = (vec![0.0; m * k], vec![0.0; k * n], vec![0.0; m * n]);
        let prob = Problem {
            m,
            n,
            k,
            alpha: 1.0,
            a: Operand {
                data: &a,
                rs: k,
                cs: 1,
            },
            a_packer: None,
            b: Operand {
                data: &b,
                rs: n,
                cs: 1,
            },
            beta: 0.0,
            c: Output {
                ptr: c.as_mut_ptr(),
                rs: n,
                cs: 1,
            },
            epilogue: None,
        };
        // Where an L2 too small for a 128-row block of A would cut the rows anyway, the
        // figures below do not apply.
        if kernels_of(Isa::Avx512).iter().any(|cfg| cfg.mc < m) {
            return;
        }
        let whole = crate::gemm::config::kernel_config(Isa::Avx512, m, n);
        assert_eq!(whole.nr, 48);
        let (one, _) = tile_and_grid(whole, &prob, 1, HANDOFF_COST);
        assert_eq!(one.nr, 48);
        let (two, grid) = tile_and_grid(whole, &prob, 2, HANDOFF_COST);
        assert_eq!((two.mr, two.nr), (12, 32), "{grid:?}");
        assert_eq!(
            grid.n_chunk * grid.n_chunks,
            n,
            "even column halves: {grid:?}"
        );
    }

    /// A deterministic value in [-1, 1) per call.
    pub(crate) fn values(seed: u64) -> impl FnMut() -> f32 {
        let mut seed = seed;
        move || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        }
    }

    /// C's bits after `run` on the product `C ← −0.75·A·B + beta·C` (`m × n × k`; A and B as
    /// given, C row-major from `c0`).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn c_bits(
        (m, n, k): (usize, usize, usize),
        a: Operand<'_>,
        b: Operand<'_>,
        beta: f32,
        c0: &[f32],
        epilogue: Option<crate::gemm::epilogue::Epilogue<'_>>,
        run: impl FnOnce(&Problem<'_>),
    ) -> Vec<u32> {
        let mut c = c0.to_vec();
        run(&Problem {
            m,
            n,
            k,
            alpha: -0.75,
            a,
            a_packer: None,
            b,
            beta,
            c: Output {
                ptr: c.as_mut_ptr(),
                rs: n,
                cs: 1,
            },
            epilogue,
        });
        c.iter().map(|x| x.to_bits()).collect()
    }

    /// Runs `run` on an `m × n × k` problem (alpha −0.75, beta 0.5; A column-major when asked)
    /// and holds every element of C to the reference's error bound; returns C's bits.
    fn check_against_reference(
        what: &str,
        (m, n, k): (usize, usize, usize),
        a_col_major: bool,
        value: &mut impl FnMut() -> f32,
        run: impl Fn(&Problem<'_>),
    ) -> Vec<u32> {
        use crate::mat::MatRef;
        let a: Vec<f32> = (0..m * k).map(|_| value()).collect();
        let b: Vec<f32> = (0..k * n).map(|_| value()).collect();
        let c0: Vec<f32> = (0..m * n).map(|_| value()).collect();
        let av = if a_col_major {
            MatRef::row_major(&a, k, m, m).t()
        } else {
            MatRef::row_major(&a, m, k, k)
        };
        let (alpha, beta) = (-0.75, 0.5);
        let mut ours = c0.clone();
        run(&Problem {
            m,
            n,
            k,
            alpha,
            a: Operand {
                data: av.data(),
                rs: av.row_stride(),
                cs: av.col_stride(),
            },
            a_packer: None,
            b: Operand {
                data: &b,
                rs: n,
                cs: 1,
            },
            beta,
            c: Output {
                ptr: ours.as_mut_ptr(),
                rs: n,
                cs: 1,
            },
            epilogue: None,
        });
        let bv = MatRef::row_major(&b, k, n, n);
        let what = format!("{what}, {m}×{n}×{k}");
        within_the_reference(&what, &ours, alpha, (av, bv), beta, &c0);
        ours.iter().map(|x| x.to_bits()).collect()
    }

    /// Every element of `ours` (`C ← alpha·A·B + beta·C` from `c0`, row-major) within the f64
    /// reference's error bound.
    pub(crate) fn within_the_reference(
        what: &str,
        ours: &[f32],
        alpha: f32,
        (av, bv): (crate::mat::MatRef<'_>, crate::mat::MatRef<'_>),
        beta: f32,
        c0: &[f32],
    ) {
        use crate::mat::{MatMut, MatRef};
        use crate::reference;
        let (m, n) = (av.rows(), bv.cols());
        let mut want = c0.to_vec();
        reference::gemm(alpha, av, bv, beta, MatMut::row_major(&mut want, m, n, n)).unwrap();
        let bound =
            reference::gemm_error_bound(alpha, av, bv, beta, MatRef::row_major(c0, m, n, n));
        for i in 0..m * n {
            let err = (ours[i] as f64 - want[i] as f64).abs();
            assert!(
                err <= bound[i],
                "{what}: element {i}: {} vs {}",
                ours[i],
                want[i]
            );
        }
    }

    /// Every small tile of every available path (A read in place), forced, against the
    /// reference: row-major and column-major A, edge rows and columns; through the bands'
    /// loop and through the small products' own (`run_small`, which takes the one-vector
    /// kernels only for a narrow remainder of whole panels: 65, 81, 113, 50 and 20 columns),
    /// the two with the same bits where K is one slice for both (here at most 64).
    #[test]
    fn every_small_tile_matches_the_reference() {
        let mut seed = 11;
        for isa in Isa::available() {
            for tile in crate::gemm::config::small_tiles_of(isa) {
                // Every row count of the last tile (1 to 8: each has its own kernel).
                let last_rows = (1..=8).map(|m| ((m, 19, 7), m % 2 == 0));
                for (shape, a_col_major) in last_rows.chain([
                    ((1, 1, 1), false),
                    ((7, 13, 5), true),
                    ((16, 16, 16), false),
                    ((17, 33, 64), false),
                    ((64, 64, 64), true),
                    ((9, 48, 31), false),
                    ((97, 128, 128), false),
                    ((17, 65, 33), false),
                    ((13, 81, 20), true),
                    ((6, 113, 9), false),
                    ((11, 20, 40), true),
                    ((10, 50, 21), false),
                ]) {
                    seed += 1;
                    let what = format!("{isa} small {}x{} tile", tile.mr, tile.nr);
                    let bands =
                        check_against_reference(&what, shape, a_col_major, &mut values(seed), {
                            |prob| super::super::in_place::run_whole(tile, prob, 64)
                        });
                    let what = format!("{what}, run_small");
                    let small =
                        check_against_reference(&what, shape, a_col_major, &mut values(seed), {
                            |prob| super::super::in_place::run_small(tile, prob)
                        });
                    if shape.2 <= 64 {
                        assert_eq!(bands, small, "{what} {shape:?}: the bands' bits");
                    }
                }
            }
        }
    }

    /// Where A is read in place, C has the bits the packed path gives it: the same tile
    /// arithmetic, the same K slices (alpha, beta, both layouts of A, one slice and several).
    #[test]
    fn reading_a_in_place_keeps_the_packed_bits() {
        use crate::gemm::in_place::gemm_in_place;
        let mut value = values(5);
        for isa in Isa::available() {
            let Some(cfg) = kernels_of(isa).first() else {
                continue;
            };
            if crate::gemm::config::small_tiles_of(isa).is_empty() {
                continue; // nothing is read in place on this path
            }
            // Few rows whose B slices exceed L2: B packed a block of panels at a time.
            let wide = crate::cpu::cache_info().l2.size / (4 * cfg.kc) + 37;
            // Wider and deeper than the small products, in place only with a tile that reads
            // A in place at any size: B's slice within what L2 holds of pages placed at random
            // (one K slice and two; no wider than that on a CPU of a small L2), and up to SMALL
            // rows over a slice beyond it.
            let l2_floats =
                crate::gemm::blocking::l2_held_at_random(&crate::cpu::cache_info().l2) / 4;
            let any_size = [
                (200, (l2_floats / 200).min(256), 200, false),
                (150, (l2_floats / cfg.kc).min(300), cfg.kc + 5, false),
                (140, 129, 64, true),
                (SMALL, wide, cfg.kc + 2, false),
            ];
            let tile_reads_any_size = |m: usize, n: usize, k: usize| {
                let b_in_l1 = crate::gemm::config::b_slice_in_l1(isa, k, n);
                small_tile(isa, m.min(SMALL), n.min(SMALL), b_in_l1).is_some_and(|t| t.any_size)
            };
            for &(m, n, k, a_col_major) in [
                (300, 32, 9, false),
                (301, 9, 32, true),
                (130, 128, 128, false),
                (20, 40, cfg.kc * 2 + 7, false),
                (5, 300, cfg.kc + 1, true),
                (32, 7, 3, false),
                (20, wide, cfg.kc * 2 + 5, false),
                (31, wide + 9, cfg.kc + 3, true),
            ]
            .iter()
            .chain(
                any_size
                    .iter()
                    .filter(|s| tile_reads_any_size(s.0, s.1, s.2)),
            ) {
                let a: Vec<f32> = (0..m * k).map(|_| value()).collect();
                let b: Vec<f32> = (0..k * n).map(|_| value()).collect();
                let c0: Vec<f32> = (0..m * n).map(|_| value()).collect();
                let (rs, cs) = if a_col_major { (1, m) } else { (k, 1) };
                let run = |in_place: bool, threads: usize| {
                    let a = Operand { data: &a, rs, cs };
                    let b = Operand {
                        data: &b,
                        rs: n,
                        cs: 1,
                    };
                    c_bits((m, n, k), a, b, 0.5, &c0, None, |prob| {
                        if in_place {
                            assert!(gemm_in_place(isa, prob, cfg.kc, threads), "{m}×{n}×{k}");
                        } else {
                            gemm_packed(cfg, prob, threads);
                        }
                    })
                };
                let packed = run(false, 1);
                assert!(
                    packed == run(true, 1),
                    "{isa} {m}×{n}×{k}: in place, 1 thread"
                );
                assert!(
                    packed == run(true, 2),
                    "{isa} {m}×{n}×{k}: in place, 2 threads"
                );
            }
        }
    }

    /// Every registered tile of every available path, forced through the driver (the public API
    /// picks tiles by shape, so this is where each one is sure to run), against the reference.
    #[test]
    fn every_registered_tile_matches_the_reference() {
        let mut value = values(7);
        for isa in Isa::available() {
            for cfg in kernels_of(isa) {
                for &shape in &[
                    (1, 1, 1),
                    (25, 50, 7),
                    (24, 48, 256),
                    (31, 17, 300),
                    (70, 100, 3),
                    (250, 9, 40),
                    // K slices deep enough for C's fetch to come inside the loop, with a tail
                    // of 1–3 steps after the groups of four.
                    (31, 17, 301),
                    (9, 50, 70),
                    // Two threads' bands of rows, each taller than mc.
                    (2 * cfg.mc + 2 * cfg.mr + 3, 20, 69),
                ] {
                    let what = format!("{isa} {}x{} tile", cfg.mr, cfg.nr);
                    check_against_reference(&what, shape, false, &mut value, |prob| {
                        gemm_packed(cfg, prob, 2)
                    });
                }
            }
        }
    }
}
