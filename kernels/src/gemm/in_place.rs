//! Products whose A the small tiles read in place, never packed: small products, and products
//! where packing A would copy a large share of what the tiles then compute with.
//!
//! Packing A copies one float for every N multiply-adds the tiles do with it: negligible for a
//! wide C, most of the work for a narrow one. With a short K the tile's own set-up is also
//! large beside its k loop, and the packed path adds a call per packed panel. Measured on a Zen 3
//! (AVX2, one thread, in-place against packed, interleaved): 21632×9×32 (a 3×3 convolution's
//! forward product over one channel) 15.5 → 31.4 GFLOP/s, 21632×32×9 11.4 → 30.3, 784×64×64
//! 44 → 59; on two threads 24 → 56, 15 → 33 and 73 → 115.
//!
//! B is read in place too. Where a slice of it exceeds L2 and several row tiles read it, the
//! tiles take it one column panel at a time, every row tile on a panel before the next, or
//! (for the tiles measured to do better so) pack it a block of panels at a time (see
//! [`run_band`]); and threads take bands of columns, each streaming its share of B rather than
//! all of it.
//!
//! K is cut at the path's slice depth as in the blocked driver, each slice summed by the same
//! tile arithmetic (beta on the first slice, 1 after it), so every element of C has the bits the
//! blocked path gives it, whatever the thread count: threads take bands of whole tiles.

use super::config::{b_slice_in_l1, rows_spread_over_l2, small_tile, SmallTile, SMALL};
use super::epilogue::Epilogue;
use super::pack::{pack_b, transpose_lines};
use super::price::{awake_cost, HandOff};
use super::problem::{Operand, Problem};
use crate::arch::{prefetch_run_to_l2, StridedAKernelFn};
use crate::scratch::PACK_B;
use crate::team::run_parallel;
use crate::Isa;

/// Up to this many rows of C, A is read in place at any K and N: the tiles of so few rows
/// re-read each row of A once per column panel, from L1.
pub(crate) const FEW_ROWS: usize = 32;

/// Up to this many column panels of the small tile, A is read in place at any M and K: the
/// tiles read each row tile of A once per panel, so packing it (a copy of every element, and
/// the packed path's blocks) cannot pay for itself over so few. Measured on a Zen 4, packed →
/// in place, one thread: 33×4096×33 39 → 69 GFLOP/s, 64×10000×64 71 → 107, 2000×2000×16 48 →
/// 90, 3000×300×5 22 → 33, 256×5408×128 83 → 97, 1000×784×128 94 → 103 (the AVX-512 tiles, 32
/// or 48 wide: 128 columns are 4 panels); two threads 36 → 97, 79 → 113, 94 → 188, 31 → 48,
/// 126 → 197, 104 → 113. The AVX2 tile (16 wide: 128 columns are 8 panels) lost there, 6 %
/// at 1000×784×128, and gained at 4 panels or fewer (2000×2000×16 34 → 78, 33×4096×33 38 →
/// 58).
const FEW_PANELS: usize = 4;

/// A small product (every side at most [`SMALL`]) with too little work to share — under two
/// hand-offs to an awake helper, so no second thread's part would repay its hand-off — on the
/// calling thread with `isa`'s small tiles, when it has them and B and C have unit column
/// strides; `false` (nothing done) otherwise. Decided before the thread count is asked for:
/// asking the pool took 4 % of a 16³ product's time in a profile.
///
/// The test is the cost model's own ([`Split::new`] splits from two hand-offs' worth of work
/// up): a fixed side limit of 64 had kept 64³ (exactly two hand-offs) alone, at 112 GFLOP/s on
/// two Zen 4 threads, where split it runs at 170.
pub(crate) fn gemm_small(isa: Isa, prob: &Problem<'_>) -> bool {
    let (m, n, k) = (prob.m, prob.n, prob.k);
    if m > SMALL || n > SMALL || k > SMALL || !too_little_to_share(m, n, k) {
        return false;
    }
    if prob.b.cs != 1 && prob.b.rs == 1 {
        return small_over_rows_of_b(isa, prob);
    }
    let Some(tile) = in_place_tile(isa, prob) else {
        return false;
    };
    run_small(tile, prob);
    true
}

/// Whether an `m × n × k` product (every side at most [`SMALL`]) has less work than two
/// hand-offs to an awake helper, the price as known now: [`gemm_small`]'s test, and a
/// [`super::GemmPlan`]'s at each run (the price is measured once per process, maybe after the
/// plan was made). `hand_offs_worth(..) < 2` without its division (a float division and
/// conversion were 3 % of a 16³ product's time in a profile).
#[inline]
pub(crate) fn too_little_to_share(m: usize, n: usize, k: usize) -> bool {
    ((m * n * k) as f64) < 2.0 * awake_cost()
}

/// The tile [`gemm_small`] runs an `m × k × n` product with on the calling thread where
/// [`too_little_to_share`] says so, for B and C with unit column strides and more than one row
/// and one column — what `gemm_fused` hands it then, unchanged — found once for a
/// [`super::GemmPlan`]; `None` where `gemm_small` would not take the product at any price, or
/// would copy B first.
pub(crate) fn small_tile_for_plan(
    isa: Isa,
    (m, k, n): (usize, usize, usize),
    b_cs: usize,
    c_cs: usize,
) -> Option<&'static SmallTile> {
    if m <= 1 || n <= 1 || m > SMALL || n > SMALL || k > SMALL {
        return None;
    }
    tile_over_rows(isa, (m, k, n), b_cs, c_cs)
}

/// A small product whose B is stored by columns (a transposed matrix: a layer's weights in its
/// input gradient `g·Wᵀ`), run by the small tiles over a copy of B stored by rows: at most
/// [`SMALL`]² floats, copied faster than the packed path sets itself up. On one thread of an
/// AVX-512 Xeon, 32×10×64 with B transposed (a last layer's input gradient at batch 32) took
/// 1.1 µs on the packed path against 0.4 µs with B by rows. Each element of C is the same sum
/// in the same order as on the packed path.
fn small_over_rows_of_b(isa: Isa, prob: &Problem<'_>) -> bool {
    let probe = Problem {
        b: Operand {
            rs: prob.n,
            cs: 1,
            ..prob.b
        },
        ..*prob
    };
    let Some(tile) = in_place_tile(isa, &probe) else {
        return false;
    };
    let (k, n, b) = (prob.k, prob.n, prob.b);
    PACK_B.with(k * n, k * n, |rows| {
        transpose_lines(|j| &b.data[j * b.cs..j * b.cs + k], n, rows, 0, n, k);
        let by_rows = Problem {
            b: Operand {
                data: rows,
                rs: n,
                cs: 1,
            },
            ..*prob
        };
        run_small(tile, &by_rows);
    });
    true
}

/// The whole of a small `prob` (every side at most [`SMALL`]) on this thread with `tile`: what
/// [`run_whole`] does with K in one slice, B's slice in L2 (at most 64 KiB) and read in place,
/// without its checks for slicing K and packing B, which took 14 % of a 16³ product's time in
/// a profile (one Zen 5 thread).
pub(crate) fn run_small(tile: &SmallTile, prob: &Problem<'_>) {
    debug_assert!(prob.m <= SMALL && prob.n <= SMALL && prob.k <= SMALL);
    let band = Band::whole(prob);
    let slice = (0, prob.k);
    if tile.narrow_last_panel(prob.n) {
        plain_tiles::<true, false>(tile, prob, band, slice, prob.beta, prob.epilogue);
    } else {
        plain_tiles::<false, false>(tile, prob, band, slice, prob.beta, prob.epilogue);
    }
}

/// The whole of `prob` on this thread with `tile` (whose instruction set the caller checked; B
/// and C with unit column strides), K in slices of `kc`.
pub(super) fn run_whole(tile: &SmallTile, prob: &Problem<'_>, kc: usize) {
    run_band(tile, prob, Band::whole(prob), kc);
}

/// A product with A read in place (see the module's documentation) on up to `threads` threads:
/// C of at most [`FEW_ROWS`] rows; or, with N at most [`SMALL`], K at most `kc` and [`SMALL`]
/// or C at most [`FEW_PANELS`] of the tile's columns wide; or where the tile outruns packing
/// at any size ([`outruns_packing`]) — the last three over an A not streamed by columns
/// ([`streams_columns_of_a`]). `kc` is the slice depth of `isa`'s blocked path. `false` (nothing
/// done) where that does not apply or `isa` has no small tiles.
pub(crate) fn gemm_in_place(isa: Isa, prob: &Problem<'_>, kc: usize, threads: usize) -> bool {
    let (m, n, k) = (prob.m, prob.n, prob.k);
    let Some(tile) = in_place_tile(isa, prob) else {
        return false;
    };
    let short_k = k <= kc.min(SMALL) && n <= SMALL;
    let few_panels = n <= SMALL && n.div_ceil(tile.nr) <= FEW_PANELS;
    // Beyond a few rows, only a short K, a narrow C or a tile that outruns packing at any
    // size — and not over an A that is streamed by columns.
    if m > FEW_ROWS
        && (!(short_k || few_panels || outruns_packing(tile, prob, kc))
            || streams_columns_of_a(prob))
    {
        return false;
    }
    let handoff = HandOff::here(isa, threads);
    let split = Split::new(tile, m, n, k, kc, threads, handoff.cost());
    if split.bands == 1 {
        handoff.ran_alone(threads, |awake_cost| {
            Split::new(tile, m, n, k, kc, threads, awake_cost).bands > 1
        });
        run_whole(tile, prob, kc);
        return true;
    }
    run_parallel(split.bands, threads, &|t| {
        run_band(tile, prob, split.band(t, m, n), kc)
    });
    true
}

/// [`super::blocking::l2_held_at_random`] for this CPU's L2, worked out once.
fn l2_held_at_random() -> usize {
    static HELD: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *HELD.get_or_init(|| super::blocking::l2_held_at_random(&crate::cpu::cache_info().l2))
}

/// Whether `tile` ([`SmallTile::any_size`]) reads A in place faster than the packed path would
/// run `prob`: over at most [`SMALL`] rows of C, or over a slice of B (`kc` deep) that stays in
/// L2 — within what L2 holds of pages placed at random ([`l2_held_at_random`]; three quarters
/// of it before, and on one Xeon VM thread, in place → packed at that: 512³ 139 → 145 GFLOP/s,
/// 384×512×384 143 → 153, on two 512³ 235 → 257; medians of 7 interleaved runs). Packing copies
/// every element of A and B once; in place, each row tile reads B's slice from L2 (or, beyond
/// it, panel after panel) and A's rows from L1, and a product whose row tiles share B's slice
/// in L2 gains nothing from the copy. A must be stored by rows or by columns. By columns, the
/// tile's rows of A share a cache line per step of K, half of it used: the slice's lines must
/// stay within half of L1 for the tile's pass over every column panel (128×784×512 with A
/// transposed lost 6 % in place, its 512 lines filling L1).
///
/// Measured on one Zen 4 thread, packed → in place (medians of six runs, interleaved):
/// 256³ 100 → 112 GFLOP/s, 384³ 104 → 110, 784×128×512 100 → 110, 128×784×512 92 → 105,
/// 100×1000×1000 89 → 102, 64×3000×3000 68 → 90, 3000×256×256 90 → 96, 1000×300×100 86 → 96,
/// 128×2048×2048 88 → 94; on two threads 256³ 171 → 209, 784×128×512 136 → 170,
/// 1000×300×100 154 → 185, 64×3000×3000 129 → 154, the others even. 512³ (B's slice all of L2)
/// and 1024³ (beyond it) ran 1–11 % slower in place. The AVX2 tile (six rows of two 8-lane
/// vectors, forced on the same Zen 4) lost 7–23 % in place on the same shapes, and is not so
/// marked.
///
/// B's rows must also spread over L2's sets, twice the slice's depth of them held at once (see
/// [`crate::cpu::CacheLevel::rows_held`]): rows a power of two apart (N = 1024 or 2048) fall
/// into a few sets, and each row tile fetched its panel of B from L3 again. On one thread of an
/// AVX-512 Xeon (2 MiB 16-way L2), in place → packed: 128×2048×2048 90 → 143 GFLOP/s,
/// 128×1024×1024 97 → 142, 128×512×2048 94 → 150, where 128×2000×2000 ran 148 → 144 and
/// 100×1536×1536 (rows 6 KiB apart) 137 → 137; on two threads 128×2048×2048 142 → 295.
fn outruns_packing(tile: &SmallTile, prob: &Problem<'_>, kc: usize) -> bool {
    let caches = crate::cpu::cache_info();
    let depth = prob.k.min(kc);
    let b_slice_in_l2 = depth * prob.n * 4 <= l2_held_at_random();
    let a_lines_in_l1 =
        prob.a.cs == 1 || (prob.a.rs == 1 && depth * caches.l1d.line <= caches.l1d.size / 2);
    let b_rows_spread = rows_spread_over_l2(prob.b.rs, depth);
    tile.any_size && (prob.m <= SMALL || b_slice_in_l2) && a_lines_in_l1 && b_rows_spread
}

/// Whether A is stored by columns (a transposed matrix, such as a layer's input in its weight
/// gradient) and too large for L2: the tiles then read each row tile's columns as `k` lines
/// `cs` apart, from beyond L2 and unprefetched, where packing reads A along its columns once.
/// Measured on one thread of an AVX-512 Xeon (A of 5408 columns, 21 KiB apart), in place →
/// packed: 5408×128×128 44–62 → 73–77 GFLOP/s, 5408×96×128 51–61 → 74–87, 5408×128×64 48–53 →
/// 65–73; 5408×64×128 (A 1.4 MiB) even; below half of L2 in place stays ahead (5408×32×128,
/// 784×128×128, 1000×96×128).
fn streams_columns_of_a(prob: &Problem<'_>) -> bool {
    prob.a.rs == 1
        && prob.a.cs > 1
        && prob.m * prob.k * std::mem::size_of::<f32>() > crate::cpu::cache_info().l2.size / 2
}

/// The small tile for `prob` when its A can be read in place: no packer standing in for A, B
/// and C with unit column strides, and `isa` has small tiles.
#[inline]
fn in_place_tile(isa: Isa, prob: &Problem<'_>) -> Option<&'static SmallTile> {
    if prob.a_packer.is_some() {
        return None;
    }
    tile_over_rows(isa, (prob.m, prob.k, prob.n), prob.b.cs, prob.c.cs)
}

/// The small tile for an `m × k × n` product whose B and C have unit column strides (`b_cs`,
/// `c_cs`), where `isa` has small tiles: [`in_place_tile`]'s choice, and a plan's.
#[inline]
fn tile_over_rows(
    isa: Isa,
    (m, k, n): (usize, usize, usize),
    b_cs: usize,
    c_cs: usize,
) -> Option<&'static SmallTile> {
    if b_cs != 1 || c_cs != 1 {
        return None;
    }
    // The choice only weighs the padding of the last tiles, which beyond SMALL matters little.
    small_tile(isa, m.min(SMALL), n.min(SMALL), b_slice_in_l1(isa, k, n))
}

/// How many parallel sections at `fork_cost` an `m × n × k` product's work pays for: from two
/// up, it is worth splitting.
pub(super) fn hand_offs_worth(m: usize, n: usize, k: usize, fork_cost: f64) -> usize {
    ((m * n * k) as f64 / fork_cost) as usize
}

/// How C is cut among threads: `bands` bands of whole tiles, along the rows (or, for a C of
/// fewer row tiles than bands, along the columns), of `tiles` tiles of `step` rows or columns
/// in all; the bands' sizes differ by at most one tile.
#[derive(Clone, Copy, Debug)]
struct Split {
    bands: usize,
    tiles: usize,
    step: usize,
    by_rows: bool,
}

impl Split {
    /// Up to four bands per thread (claimed as threads come free; one per thread where each
    /// band would fetch the operand it reads whole from beyond L2), each worth at least one
    /// hand-off; one band when the product is too small to gain from another thread.
    fn new(
        tile: &SmallTile,
        m: usize,
        n: usize,
        k: usize,
        kc: usize,
        threads: usize,
        fork_cost: f64,
    ) -> Split {
        let (row_tiles, col_tiles) = (m.div_ceil(tile.mr), n.div_ceil(tile.nr));
        let worth = hand_offs_worth(m, n, k, fork_cost);
        // Each band reads all of B's columns it covers: bands of rows over a slice of B (`kc`
        // deep) that L2 does not hold would each stream the whole of it (two threads then
        // shared the memory's bandwidth and ran 32×2048×1000 slower than one), bands of
        // columns a share each. What L2 holds is that of pages placed at random
        // ([`l2_held_at_random`]); weighed against all of L2 and a slice 256 deep, on two Xeon
        // VM threads (medians of 9 interleaved runs, rows → columns): 128×784×512 175 → 196
        // GFLOP/s, 128×512×784 189 → 221, 100×512×1000 155 → 213, 64×1000×1000 118 → 195,
        // 120×300×700 196 → 231; 32×256×1000 205 → 199, the forced AVX2 tile even.
        let b_streams = n * k.min(kc) * 4 > l2_held_at_random();
        let by_rows = if b_streams && col_tiles >= threads {
            false
        } else {
            row_tiles >= threads || row_tiles >= col_tiles
        };
        let tiles = if by_rows { row_tiles } else { col_tiles };
        // Each band of rows reads all of B, each band of columns all of A: where that operand
        // (all of K) is beyond what L2 holds, every band fetches it from L3 again, and one band
        // per thread does best. On two Xeon VM threads, four bands per thread → one (medians
        // of 5 interleaved runs): 256×5408×128 237 → 261 GFLOP/s, 128×5408×128 197 → 242,
        // 32×5408×128 160 → 203 (a CNN's dense layer at inference and validation), 1000×5408×128
        // even; within L2 the finer bands balance better (64³ 152 against 129 in two bands,
        // 100×512×1000 261 against 248).
        let whole_operand_bytes =
            std::mem::size_of::<f32>() * (if by_rows { k * n } else { m * k });
        let per_thread = if whole_operand_bytes > l2_held_at_random() {
            1
        } else {
            4
        };
        let wanted = if threads <= 1 || worth < 2 {
            1
        } else {
            (threads * per_thread).min(worth).min(tiles).max(1)
        };
        // Whole rounds, of bands that differ by at most a tile: cut in equal bands of whole
        // tiles with the last one short, 13 row tiles (100³) came in 4 bands of 4, 4, 4 and 1,
        // and one thread had 8 tiles to the other's 5 (130 GFLOP/s on two Zen 4 threads,
        // against 155 with 7 bands); 6 tiles in 3 bands leave one thread two of them.
        let bands = if wanted > threads {
            wanted - wanted % threads
        } else {
            wanted
        };
        let step = if by_rows { tile.mr } else { tile.nr };
        Split {
            bands,
            tiles,
            step,
            by_rows,
        }
    }

    fn band(&self, t: usize, m: usize, n: usize) -> Band {
        let extent = if self.by_rows { m } else { n };
        let start = t * self.tiles / self.bands * self.step;
        let end = ((t + 1) * self.tiles / self.bands * self.step).min(extent);
        if self.by_rows {
            Band {
                rows: (start, end),
                cols: (0, n),
            }
        } else {
            Band {
                rows: (0, m),
                cols: (start, end),
            }
        }
    }
}

/// Rows `rows.0..rows.1` and columns `cols.0..cols.1` of C; their starts are multiples of the
/// tile's sides (so every band's tiles are the tiles of the whole product).
#[derive(Clone, Copy, Debug)]
struct Band {
    rows: (usize, usize),
    cols: (usize, usize),
}

impl Band {
    fn whole(prob: &Problem<'_>) -> Band {
        Band {
            rows: (0, prob.m),
            cols: (0, prob.n),
        }
    }
}

/// One band of C on this thread with `tile` (whose instruction set the caller checked), K in
/// slices of `kc`; the epilogue applied to each tile after its last slice.
#[inline]
fn run_band(tile: &SmallTile, prob: &Problem<'_>, band: Band, kc: usize) {
    let mr = tile.mr;
    let k = prob.k;
    let (a, b) = (prob.a, prob.b);
    let (m, n) = (band.rows.1, band.cols.1);
    if band.rows.0 >= m || band.cols.0 >= n || k == 0 {
        return;
    }
    // The last elements the kernels read of A and B, inside the checked views.
    debug_assert!(m <= prob.m && n <= prob.n);
    debug_assert!(a.data.len() > (m - 1) * a.rs + (k - 1) * a.cs);
    debug_assert!(b.data.len() > (k - 1) * b.rs + (n - 1));
    // B's slice read in place by one row tile after another must stay in L2 between them — what
    // L2 holds of data whose 4 KiB pages fall on its sets at random
    // ([`super::blocking::l2_held_at_random`], 740 KiB of the Xeon VM's 2 MiB: row tile after
    // row tile over a slice of 1–2 MiB ran, against panel by panel, on one thread 128×512×784
    // 119 → 135 GFLOP/s, 64×1000×1000 81 → 124, 100×512×1000 86 → 129, on two 100×512×1000 146
    // → 179, 128×784×512 even; medians of 7 interleaved runs). Larger, it comes from L3 or
    // memory once per row tile — and with rows a power of two apart (B of 2048 columns) each
    // run of a tile's panel falls in the same few cache sets and misses every step (24×512×2048
    // ran at 4–7 GFLOP/s on one Zen 3 thread). Then the tiles take B panel by panel
    // ([`panel_after_panel`]) or packed a block at a time ([`packed_blocks`]), as the tile was
    // measured to do best. (Slices that fit in L2 run faster row tile by row tile: 32×784×128
    // and 32×128×784 lost 8–18 % packed, 5–6 % panel by panel.) One row tile reads B once:
    // nothing to gain by packing.
    //
    // A B beyond a quarter of L3 (shared with the other cores, and on a VM with other
    // guests) comes from memory, each panel's rows a page apart: the tiles that stream B go
    // panel after panel then whatever the slice's size (AVX2's over spread rows only, see
    // `StreamsB`), for the prefetch of the next panel
    // and for one fetch of each panel from memory. One row tile stalled on every row
    // without the prefetch: 8×1024×8192 15 → 38 GFLOP/s, 8×1024×3000 28 → 74, 4×2048×4096
    // 12 → 16 on one Zen 4 thread (26 → 66, 101 → 114, 22 → 35 on two). Two threads' bands
    // of columns have slices that may fit L2, yet each row tile fetched them from memory
    // again: 16×2048×4096 37 → 79, 32×2048×4096 56 → 121, 24×1024×3000 110 → 164 on two
    // Zen 4 threads. From L3 the prefetches, all before a single tile, cost more than they
    // save (8×300×4000 84 → 74, 8×512×1000 94 → 80).
    let caches = crate::cpu::cache_info();
    let row_tiles = (m - band.rows.0).div_ceil(mr);
    // All of B: the other threads' bands stream the rest of it meanwhile.
    let b_from_memory = {
        let l3 = caches.l3.map_or(caches.l2.size, |l3| l3.size);
        k * prob.n * 4 > l3 / 4
    };
    let mut pc = 0;
    while pc < k {
        let kb = kc.min(k - pc);
        let beta = if pc == 0 { prob.beta } else { 1.0 };
        let epilogue = prob.epilogue.filter(|_| pc + kb == k);
        let slice = (pc, kb);
        let beyond_l2 = kb * (n - band.cols.0) * 4 > l2_held_at_random();
        if ((row_tiles > 1 && beyond_l2) || b_from_memory) && tile.streams_b_over(b.rs, kb) {
            panel_after_panel(tile, prob, band, slice, beta, epilogue);
        } else if row_tiles > 1 && beyond_l2 {
            packed_blocks(tile, prob, band, slice, kc, beta, epilogue);
        } else {
            plain_tiles::<true, true>(tile, prob, band, slice, beta, epilogue);
        }
        pc += kb;
    }
}

/// The tiles of `band` over K's slice `pc..pc+kb`, B read in place one column panel at a time:
/// every row tile of the band on a panel, then the next. Each panel of B comes from L3 or memory
/// once, and stays in L1 or L2 for the row tiles after the first. While the tiles work on a
/// panel, the next one is fetched into L2 (where such prefetches pay, [`prefetch_bursts_pay`],
/// or the band has one row tile), a share of its rows before each row tile: asked for
/// all at once, a 512-row panel's thousand prefetches stalled the loads of the tile after them
/// (32×512×5408 on one Zen 4 thread 58 → 50 GFLOP/s, spread 65; into L1 rather than L2 86,
/// as a deep panel does not fit L1 beside the one in use, into L2 102).
fn panel_after_panel(
    tile: &SmallTile,
    prob: &Problem<'_>,
    band: Band,
    (pc, kb): (usize, usize),
    beta: f32,
    epilogue: Option<Epilogue<'_>>,
) {
    let (mr, nr) = (tile.mr, tile.nr);
    let b = prob.b;
    let (m, n) = (band.rows.1, band.cols.1);
    let row_tiles = (m - band.rows.0).div_ceil(mr);
    // B's next panel fetched ahead where such bursts pay, or for a band of one row tile.
    let prefetch = row_tiles == 1 || prefetch_bursts_pay();
    let mut j = band.cols.0;
    while j < n {
        let cols = nr.min(n - j);
        let next = j + nr;
        let prefetch_share = |r: usize| {
            if prefetch && next < n {
                let run = b.data[pc * b.rs + next..].as_ptr();
                for p in r * kb / row_tiles..(r + 1) * kb / row_tiles {
                    prefetch_run_to_l2(run.wrapping_add(p * b.rs), nr.min(n - next));
                }
            }
        };
        // SAFETY: rows pc..pc+kb of B have `cols` elements from column j inside B's checked
        // view, b.rs apart; columns j..j+cols lie inside the band.
        unsafe {
            tiles_down_panel(
                tile,
                prob,
                band,
                (j, cols),
                (pc, kb),
                (b.data.as_ptr().add(pc * b.rs + j), b.rs),
                (beta, epilogue),
                prefetch_share,
            )
        };
        j += nr;
    }
}

/// Every row tile of `band` on one panel of C's columns `j..j+cols` over K's slice
/// `pc..pc+kb`, B's panel at `b_panel` (rows `rsb` apart); `before(r)` runs before row tile
/// `r` (0, 1, …).
///
/// # Safety
/// `b_panel` holds kb rows of `cols` readable floats, `rsb` apart; columns j..j+cols lie inside
/// the band (and C), which only the caller writes.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn tiles_down_panel(
    tile: &SmallTile,
    prob: &Problem<'_>,
    band: Band,
    (j, cols): (usize, usize),
    (pc, kb): (usize, usize),
    (b_panel, rsb): (*const f32, usize),
    (beta, epilogue): (f32, Option<Epilogue<'_>>),
    mut before: impl FnMut(usize),
) {
    let (mut i, mut r) = (band.rows.0, 0);
    while i < band.rows.1 {
        let rows = tile.mr.min(band.rows.1 - i);
        before(r);
        // SAFETY: B's panel as this function's contract says; (i, j) and the tile lie inside
        // the band.
        unsafe {
            one_tile(
                tile.kernel_for(rows, cols),
                prob,
                (i, j),
                (rows, cols),
                (pc, kb),
                (b_panel, rsb),
                beta,
                epilogue,
            )
        };
        i += tile.mr;
        r += 1;
    }
}

/// The tiles of `band` over K's slice `pc..pc+kb` with B packed a block of whole panels at a
/// time, each row of B read as one run per block (a few lines the prefetcher follows), the block
/// half of L2 so that it stays there while every row tile uses it: 24×512×2048 at 29–36
/// GFLOP/s on one Zen 3 thread, 32×2048×1000 at 21–25 (8–13 in place, row tile by row tile).
fn packed_blocks(
    tile: &SmallTile,
    prob: &Problem<'_>,
    band: Band,
    (pc, kb): (usize, usize),
    kc: usize,
    beta: f32,
    epilogue: Option<Epilogue<'_>>,
) {
    let nr = tile.nr;
    let n = band.cols.1;
    let l2 = crate::cpu::cache_info().l2.size;
    let block = (l2 / 2 / (4 * kb * nr)).max(1) * nr;
    PACK_B.with(kb * block, kc.min(prob.k) * block, |packed| {
        let mut j0 = band.cols.0;
        while j0 < n {
            let width = block.min(n - j0);
            pack_b(packed, prob.b, pc, j0, kb, width, nr, 0);
            let mut j = j0;
            while j < j0 + width {
                let cols = nr.min(j0 + width - j);
                let panel = &packed[((j - j0) / nr) * kb * nr..];
                // SAFETY: B's panel (kb rows of nr floats, `cols` of them live) is in the
                // packed buffer; columns j..j+cols lie inside the band.
                unsafe {
                    tiles_down_panel(
                        tile,
                        prob,
                        band,
                        (j, cols),
                        (pc, kb),
                        (panel.as_ptr(), nr),
                        (beta, epilogue),
                        |_| {},
                    )
                };
                j += nr;
            }
            j0 += width;
        }
    });
}

/// The tiles of `band` over K's slice `pc..pc+kb`, B read in place (its column stride is 1:
/// `in_place_tile`). Plain loops: `step_by` divides to count its steps, a tenth of a 16³
/// product's time. With `EDGE`, a last panel narrow enough takes the tile's one-vector kernels
/// ([`SmallTile::kernel_for`]); the small products of [`run_small`] ask for it only where
/// their last panel is such a remainder of wider ones ([`SmallTile::narrow_last_panel`]):
/// choosing in every small product cost more than it saved (20³ on one Zen 4 thread 54 → 46
/// GFLOP/s, 36³ even). With `FETCH_A`, the next row tile's A is asked for ahead (where that
/// pays, see below); not in small products.
#[inline(always)]
fn plain_tiles<const EDGE: bool, const FETCH_A: bool>(
    tile: &SmallTile,
    prob: &Problem<'_>,
    band: Band,
    (pc, kb): (usize, usize),
    beta: f32,
    epilogue: Option<Epilogue<'_>>,
) {
    let (mr, nr) = (tile.mr, tile.nr);
    let b = prob.b;
    let (m, n) = (band.rows.1, band.cols.1);
    let mut i = band.rows.0;
    // The next row tile's block of A, fetched while this one computes: A (stored by rows, see
    // `prefetch_rows_of_a`) read in place by a tile is MR runs of the slice's K floats, each
    // too short for the hardware's stream prefetchers to get going before the tile moves on
    // (a convolution's im2col A, 25088×144 by 32 columns: 54 → 80 GFLOP/s on one Zen 4
    // thread, 104 → 160 on two; 18432×288×32 69 → 76 and 129 → 144; 128×784×512 93 → 100 and
    // 190 → 213). Not below 64 floats: over short slices the prefetches cost more than they
    // save (21632×32×9 54 → 50, 95 → 74 on two threads), and one-thread 1000×5408×128, rows
    // of 512 floats per slice, lost 6 %. Only where such bursts of prefetches pay
    // ([`prefetch_bursts_pay`]: Zen, not Intel).
    let fetch_ahead = FETCH_A && kb >= PREFETCH_A_MIN_K && prefetch_bursts_pay();
    while i < m {
        let rows = mr.min(m - i);
        let kernel = tile.kernel(rows);
        if fetch_ahead {
            prefetch_rows_of_a(prob.a, (i + mr, mr.min(m.saturating_sub(i + mr))), (pc, kb));
        }
        let mut j = band.cols.0;
        while j < n {
            let cols = nr.min(n - j);
            let kernel = if EDGE && cols < nr {
                tile.kernel_for(rows, cols)
            } else {
                kernel
            };
            // SAFETY: rows pc..pc+kb of B have `cols` elements from column j inside B's checked
            // view, b.rs apart; (i, j) and the tile lie inside the band of C.
            unsafe {
                one_tile(
                    kernel,
                    prob,
                    (i, j),
                    (rows, cols),
                    (pc, kb),
                    (b.data.as_ptr().add(pc * b.rs + j), b.rs),
                    beta,
                    epilogue,
                )
            };
            j += nr;
        }
        i += mr;
    }
}

/// The shallowest K slice over which the band's tiles prefetch the next row tile's A.
const PREFETCH_A_MIN_K: usize = 64;

/// Whether this CPU gains from the in-place tiles' bursts of prefetches into L2 — the next row
/// tile's A before a row tile ([`plain_tiles`]), a share of B's next panel before each row tile
/// of a panel ([`panel_after_panel`]) — which AMD's cores do (the gains quoted there, Zen 4)
/// and Intel's do not: their L2 streamers follow the tiles' runs by themselves, and a burst of
/// prefetches (hundreds before a tile, each holding one of L1's few fill buffers until its line
/// comes from L3) stalls the tile's loads behind it. On two threads of an AVX-512 Xeon VM, with
/// → without A's (medians of 5 interleaved runs): 256×5408×128 256 → 278 GFLOP/s (a CNN's
/// dense layer at inference), 1000×5408×128 251 → 275, 25088×144×32 215 → 256 (a convolution's
/// im2col product), 18432×288×32 223 → 279, 128×784×512 236 → 239; on one, 129.7 → 142.3, 126
/// → 139, 117 → 133, 120 → 145, even. Then B's shares: one thread 32×512×5408 98 → 105,
/// 24×512×2048 61 → 72, 16×2048×4096 47 → 57; two 16×2048×4096 85 → 107, 32×2048×4096 117 →
/// 125, 24×1024×3000 175 → 185. A band of one row tile keeps B's prefetch everywhere: the
/// whole next panel before the tile, for the tile that would otherwise wait on every row
/// (8×1024×8192 52.5 → 53.9 on the Xeon, 15 → 38 on Zen 4).
fn prefetch_bursts_pay() -> bool {
    crate::cpu::vendor() != crate::cpu::Vendor::Intel
}

/// Asks for rows `first..first + rows` of A, over K's slice `pc..pc+kb`, to be fetched into L2:
/// a row tile's block of A, wanted by the next row tile. For A stored by rows (each row's slice a
/// run of floats); nothing for other strides.
///
/// Not for A stored by columns (a transposed operand, as in a weight gradient `Xᵀ·dY`): there
/// the next tile's rows are one short run per step of K, a prefetch or two for each, and the
/// hardware's prefetchers follow that stride by themselves. Without those prefetches, one Zen 4
/// thread (medians of 9–11 interleaved runs): the weight gradient of 13×13×16 → 32 'valid' at
/// batch 64 (program F's second convolution) 1158 → 1003 µs, of 14×14×32 → 32 'valid' at 128
/// 5098 → 4692, of 14×14×16 → 32 'same' 4122 → 3668; with A transposed, 800×64×10 41 → 58
/// GFLOP/s, 784×128×512 94 → 100, 256×128×5408 93 → 99, 5408×128×128 92 → 91 and 88 → 81 in
/// two sets of runs; two threads 800×64×10 54 → 78, 784×128×512 124 → 157, 5408×128×128 and
/// 256×128×5408 within 1 % (173 → 173, 188 → 186).
fn prefetch_rows_of_a(a: Operand<'_>, (first, rows): (usize, usize), (pc, kb): (usize, usize)) {
    if rows == 0 || kb == 0 || a.cs != 1 {
        return;
    }
    let row = |i: usize| a.data.as_ptr().wrapping_add(i * a.rs + pc);
    if a.rs < kb {
        // Rows that overlap (a stride-1 convolution's shifted views, rows a pixel's channels
        // apart over a kernel row's taps) make one run: each line asked for once, not once per
        // row that holds it. One Zen 4 thread, medians of 7–9 interleaved runs: the input
        // gradient of 13×13×16 → 32 'valid' at batch 64 1291 → 1186 µs (two threads 696 →
        // 649), the forward pass of 14×14×32 → 32 'valid' at 128 4457 → 4124 (2618 → 2388),
        // its input gradient 5709 → 5448 (3073 → 2871). Rows that only abut (a row-major A
        // whose rows are the slice) keep a run each: one run measured 0–10 % slower there.
        prefetch_run_to_l2(row(first), (rows - 1) * a.rs + kb);
    } else {
        for i in first..first + rows {
            prefetch_run_to_l2(row(i), kb);
        }
    }
}

/// The tile of C at (`i`, `j`), `rows × cols` of it inside C, over K's slice `pc..pc+kb`, with
/// A read in place and B's slice at `b_slice` (rows `rsb` apart); then the epilogue, if any.
///
/// # Safety
/// `kernel` is a small tile's kernel for `rows` rows, its instruction set checked; `b_slice`
/// holds kb rows of `cols` readable floats, `rsb` apart; (i, j) and the tile lie inside C (unit
/// column stride), which only the caller's band writes.
#[inline]
#[allow(clippy::too_many_arguments)]
unsafe fn one_tile(
    kernel: StridedAKernelFn,
    prob: &Problem<'_>,
    (i, j): (usize, usize),
    (rows, cols): (usize, usize),
    (pc, kb): (usize, usize),
    (b_slice, rsb): (*const f32, usize),
    beta: f32,
    epilogue: Option<Epilogue<'_>>,
) {
    let (a, c) = (prob.a, prob.c);
    // SAFETY: (i, j) lies inside C, which the caller checked against its buffer; rows i..i+rows
    // of A have elements pc..pc+kb, a.cs apart, inside A's checked view; B's slice and the tile
    // as this function's contract says.
    unsafe {
        let c_tile = c.ptr.add(i * c.rs + j);
        kernel(
            kb,
            prob.alpha,
            (a.data.as_ptr().add(i * a.rs + pc * a.cs), a.rs, a.cs),
            b_slice,
            rsb,
            beta,
            c_tile,
            c.rs,
            rows,
            cols,
        );
        if let Some(e) = epilogue {
            // The caller checked the bias lengths against C's shape and the epilogue's ISA.
            e.apply(c_tile, c.rs, 1, (i, j), (rows, cols));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gemm::config::{slice_depth, small_tiles_of};
    use crate::gemm::price::{FORK_JOIN_COST, HANDOFF_COST};
    use crate::gemm::problem::{Operand, Output};

    /// A problem of this shape with nothing behind it, for the decisions that read shapes and
    /// strides only.
    fn shape_only(m: usize, n: usize, k: usize, a_by_columns: bool) -> Problem<'static> {
        let none = Operand {
            data: &[],
            rs: 1,
            cs: 1,
        };
        Problem {
            m,
            n,
            k,
            alpha: 1.0,
            a: if a_by_columns {
                Operand {
                    rs: 1,
                    cs: m,
                    ..none
                }
            } else {
                Operand {
                    rs: k,
                    cs: 1,
                    ..none
                }
            },
            a_packer: None,
            b: Operand { rs: n, ..none },
            beta: 0.0,
            c: Output {
                ptr: std::ptr::null_mut(),
                rs: n,
                cs: 1,
            },
            epilogue: None,
        }
    }

    /// A tile marked for any size reads A in place over at most SMALL rows or a B slice within
    /// what L2 holds of pages placed at random, and not beyond both, nor over rows of B crowded
    /// into a few of L2's sets, nor over columns of A deeper than half of L1 in lines, nor over
    /// an A stored neither by rows nor by columns; the other tiles never do.
    /// AVX-512's wide tiles are so marked, AVX2's tile is not.
    #[test]
    fn tiles_outrun_packing_only_within_their_caches() {
        let caches = crate::cpu::cache_info();
        for isa in Isa::available() {
            let Some(kc) = slice_depth(isa) else {
                continue;
            };
            let tiles = small_tiles_of(isa);
            #[cfg(target_arch = "x86_64")]
            match isa {
                Isa::Avx512 => assert!(tiles.iter().any(|t| t.any_size), "{isa}"),
                Isa::Avx2 => assert!(tiles.iter().all(|t| !t.any_size), "{isa}"),
                _ => {}
            }
            // B's slice (kc deep) at half of what L2 holds of pages placed at random, and at
            // twice L2; rows an odd number of floats apart spread over every set.
            let held = l2_held_at_random();
            let within = (held / 2 / (4 * kc)) | 1;
            let beyond = (caches.l2.size * 2 / (4 * kc)) | 1;
            // Rows one way of L2 apart all fall into one set.
            let crowded = caches.l2.way_bytes() / 4;
            // The widest B whose kc-deep slice L2 holds.
            let widest = held / (4 * kc);
            // Columns of A whose lines fill half of L1.
            let half_l1 = caches.l1d.size / 2 / caches.l1d.line;
            for tile in tiles {
                let outruns = |m, n, k, by_columns| {
                    outruns_packing(tile, &shape_only(m, n, k, by_columns), kc)
                };
                let what = format!("{isa} {}×{} tile", tile.mr, tile.nr);
                assert_eq!(outruns(4000, within, kc, false), tile.any_size, "{what}");
                assert_eq!(outruns(4000, widest, kc, false), tile.any_size, "{what}");
                assert!(!outruns(4000, widest + 1, kc, false), "{what}");
                assert_eq!(outruns(SMALL, beyond, kc, false), tile.any_size, "{what}");
                assert!(!outruns(SMALL + 1, beyond, kc, false), "{what}");
                assert!(!outruns(SMALL, crowded, kc, false), "{what}");
                assert!(!outruns(4000, 4 * within, kc, false), "{what}");
                // By columns: up to half of L1 in lines (the slice is at most kc deep).
                let shallow = half_l1.min(kc);
                assert_eq!(outruns(300, 64, shallow, true), tile.any_size, "{what}");
                if half_l1 < kc {
                    assert!(!outruns(300, 64, half_l1 + 1, true), "{what}");
                }
                // Neither by rows nor by columns: never.
                let mut strided = shape_only(300, 64, 8, false);
                strided.a.cs = 2;
                assert!(!outruns_packing(tile, &strided, kc), "{what}");
            }
        }
    }

    #[test]
    fn bands_of_rows_share_only_a_slice_of_b_that_l2_holds() {
        let held = l2_held_at_random();
        for isa in Isa::available() {
            let Some(kc) = slice_depth(isa) else {
                continue;
            };
            for tile in crate::gemm::config::small_tiles_of(isa) {
                for &(m, k, n) in &[
                    (128, 784, 512),
                    (128, 512, 784),
                    (100, 512, 1000),
                    (64, 1000, 1000),
                    (32, 784, 128),
                    (128, 128, 128),
                ] {
                    let split = Split::new(tile, m, n, k, kc, 2, HANDOFF_COST);
                    let slice = n * k.min(kc) * 4;
                    if split.bands > 1 && slice > held && n.div_ceil(tile.nr) >= 2 {
                        assert!(!split.by_rows, "{m}×{k}×{n}: {split:?}");
                    }
                    if split.bands > 1 && slice <= held && m.div_ceil(tile.mr) >= 2 {
                        assert!(split.by_rows, "{m}×{k}×{n}: {split:?}");
                    }
                }
            }
        }
    }

    /// One band per thread where each band would fetch the operand it reads whole from beyond
    /// L2 — all of B for bands of rows, all of A for bands of columns — four per thread where
    /// that operand stays in L2.
    #[test]
    fn bands_that_would_each_fetch_an_operand_from_beyond_l2_are_one_per_thread() {
        let held = l2_held_at_random();
        let mut checked = 0;
        for isa in Isa::available() {
            let Some(kc) = slice_depth(isa) else {
                continue;
            };
            for tile in crate::gemm::config::small_tiles_of(isa) {
                let what = format!("{isa} {}×{} tile", tile.mr, tile.nr);
                let rows = tile.mr * 40;
                // Bands of rows: B's kc-deep slice within L2, all of K beyond it; and all of
                // B within it.
                let n = (held / (4 * kc)).max(1);
                let deep = held / (4 * n) + 1;
                let split = Split::new(tile, rows, n, deep, kc, 2, HANDOFF_COST);
                assert!(split.by_rows, "{what}: {split:?}");
                assert_eq!(split.bands, 2, "{what}: {split:?}");
                let shallow = (held / (4 * n) / 2).max(1);
                let split = Split::new(tile, rows, n, shallow, kc, 2, HANDOFF_COST);
                if hand_offs_worth(rows, n, shallow, HANDOFF_COST) >= 8 && split.tiles >= 8 {
                    assert!(split.by_rows, "{what}: {split:?}");
                    assert_eq!(split.bands, 8, "{what}: {split:?}");
                }
                // Bands of columns (B's slice beyond L2): A, 2·kc deep, beyond L2 too.
                let wide = (held / (4 * kc) + 1).next_multiple_of(tile.nr) * 2;
                let tall = (held / (4 * 2 * kc) + 1).next_multiple_of(tile.mr);
                let split = Split::new(tile, tall, wide, 2 * kc, kc, 2, HANDOFF_COST);
                assert!(!split.by_rows, "{what}: {split:?}");
                assert_eq!(split.bands, 2, "{what}: {split:?}");
                checked += 1;
            }
        }
        #[cfg(target_arch = "x86_64")]
        assert!(checked > 0 || !Isa::Avx2.is_available());
        let _ = checked;
    }

    #[test]
    fn bands_are_whole_tiles_and_cover_c() {
        for isa in Isa::available() {
            let Some(kc) = slice_depth(isa) else {
                continue;
            };
            for tile in crate::gemm::config::small_tiles_of(isa) {
                for &(m, n, k, threads) in &[
                    (21632, 32, 9, 2),
                    (7, 300, 1000, 2),
                    (5, 3, 2, 4),
                    (1000, 100, 100, 3),
                    (128, 128, 128, 2),
                    (100, 100, 100, 2),
                    (44, 44, 44, 2),
                    (64, 64, 64, 2),
                ] {
                    for fork_cost in [HANDOFF_COST, FORK_JOIN_COST] {
                        let split = Split::new(tile, m, n, k, kc, threads, fork_cost);
                        let mut covered = 0;
                        for t in 0..split.bands {
                            let band = split.band(t, m, n);
                            let (step, start, len) = if split.by_rows {
                                (tile.mr, band.rows.0, band.rows.1 - band.rows.0)
                            } else {
                                (tile.nr, band.cols.0, band.cols.1 - band.cols.0)
                            };
                            assert!(len > 0, "an empty band: {split:?}");
                            assert_eq!(start % step, 0, "{split:?}");
                            covered += (band.rows.1 - band.rows.0) * (band.cols.1 - band.cols.0);
                        }
                        assert_eq!(covered, m * n, "{m}×{n}: {split:?}");
                        assert!(split.bands <= (threads * 4).max(1), "{split:?}");
                        if split.bands > threads {
                            assert_eq!(split.bands % threads, 0, "whole rounds: {split:?}");
                        }
                    }
                }
            }
        }
    }
}
