//! The register of GEMM microkernels and their cache block sizes: a few rows per instruction
//! set. The driver reads this table and never names an instruction set itself (BLIS's
//! `config/<arch>`).
//!
//! Each instruction set registers tiles of several widths, and [`kernel_config`] picks, per
//! product, the one that wastes least work on padding: a 9-column C (the im2col products of a
//! 3×3 convolution's weight gradient) would run a 48-wide tile at under a fifth of its speed.
//! `cost` is each tile's time per useful multiply-add relative to the widest one (the
//! broadcast-heavier narrow tiles issue more loads per FMA), measured on the bench-suite GEMM
//! group and rounded up.
//!
//! Block sizes are not constants: [`super::blocking`] derives `mc`, `kc`, `nc` for each tile from
//! the caches [`crate::cpu::cache_info`] reads at run time (BLIS's analytical model), once per
//! process. `mc` is a multiple of MR and `nc` of NR, so a tile never straddles two blocks. `kc`
//! also fixes the order of the sum over K (one partial sum per `kc` block); it depends on the
//! CPU and the tile only, never on the thread count, so results are bit-identical however many
//! threads run.

use std::sync::OnceLock;

use super::blocking::{blocks_at_depth, depth, Blocks};
use crate::arch::{self, KernelFn, StridedAKernelFn};
use crate::cpu::CacheInfo;
use crate::Isa;

/// One microkernel and the block sizes the driver uses with it.
#[derive(Clone, Copy)]
pub(crate) struct KernelConfig {
    /// The instruction set (for the driver to find its small tiles; it names none itself).
    pub isa: Isa,
    pub mr: usize,
    pub nr: usize,
    pub mc: usize,
    pub kc: usize,
    pub nc: usize,
    pub kernel: KernelFn,
    /// Whether the kernel can read B in place (row stride `rsb`, masked edge columns) instead
    /// of from a packed panel.
    pub direct_b: bool,
    /// Time per useful multiply-add relative to this instruction set's widest tile.
    pub cost: f64,
}

/// A registered tile: its shape, kernel and relative cost; the block sizes come from the cache
/// model at run time.
#[derive(Clone, Copy)]
struct Tile {
    mr: usize,
    nr: usize,
    kernel: KernelFn,
    direct_b: bool,
    cost: f64,
    /// The cost on Intel cores where it was measured apart (else `cost`).
    intel_cost: f64,
}

const fn tile(mr: usize, nr: usize, kernel: KernelFn, direct_b: bool, cost: f64) -> Tile {
    Tile {
        mr,
        nr,
        kernel,
        direct_b,
        cost,
        intel_cost: cost,
    }
}

impl Tile {
    /// This tile with another cost on Intel cores.
    #[cfg(target_arch = "x86_64")]
    const fn on_intel(self, intel_cost: f64) -> Tile {
        Tile { intel_cost, ..self }
    }

    /// The cost on this CPU.
    fn cost_here(&self) -> f64 {
        match crate::cpu::vendor() {
            crate::cpu::Vendor::Intel => self.intel_cost,
            _ => self.cost,
        }
    }
}

const SCALAR: [Tile; 1] = [tile(
    arch::scalar::MR,
    arch::scalar::NR,
    arch::scalar::kernel,
    false,
    1.0,
)];

#[cfg(target_arch = "x86_64")]
const AVX2: [Tile; 2] = [
    tile(6, 16, arch::avx2::kernel::<6, 2>, true, 1.0),
    tile(12, 8, arch::avx2::kernel::<12, 1>, true, 1.15),
];

#[cfg(target_arch = "x86_64")]
const AVX512: [Tile; 4] = [
    tile(8, 48, arch::avx512::kernel::<8, 3>, true, 1.0),
    // 1.05 on a Zen 5 (rounded up). On an AVX-512 Xeon (family 6 model 207), one thread, at
    // shapes neither tile pads (2400×1024×1536, 1536×512×960, 960×2048×1536) the 12 × 32 tile
    // ran at 0.99–1.00 of the 8 × 48's speed (medians of 7 interleaved runs); weighed 1.05 it
    // lost 1024³ and 512³ to the 8 × 48, which pads their 1024 and 512 columns by 3 %: 1024³
    // 210 → 215 GFLOP/s with it, 512³ 205 → 211 (2048³, 0.8 % padded either way, unchanged).
    tile(12, 32, arch::avx512::kernel::<12, 2>, true, 1.05).on_intel(1.01),
    // 9 rows: a 3×3 convolution's weight gradient has exactly 9 (one input channel).
    tile(9, 32, arch::avx512::kernel::<9, 2>, true, 1.1),
    tile(24, 16, arch::avx512::kernel::<24, 1>, true, 1.15),
];

/// A tile for small products (every side ≤ [`SMALL`]), reading A in place.
#[derive(Clone, Copy)]
pub(crate) struct SmallTile {
    pub mr: usize,
    pub nr: usize,
    /// `kernels[rows - 1]` computes a tile of `rows` rows; a single kernel serves every row
    /// count (computing `mr` rows, storing `rows`).
    kernels: &'static [StridedAKernelFn],
    /// Time per useful multiply-add relative to the set's 1.0 tiles (AVX-512: 8 × 48 and
    /// 8 × 32; AVX2: 6 × 16).
    cost: f64,
    /// Kernels of one vector's width (`edge_cols` columns) per row count, for a last panel of
    /// C that narrow: the full tile would compute, masked, `nr` columns for it. Empty where the
    /// tile is one vector wide already.
    edge: &'static [StridedAKernelFn],
    edge_cols: usize,
    /// Where, for a few rows over a B whose slice exceeds L2, this tile reads B in place panel
    /// after panel, every row tile on a panel before the next (prefetched into L2 meanwhile),
    /// rather than packing B a block of panels at a time; see [`super::in_place`].
    pub streams_b: StreamsB,
    /// What a partly live last column panel counts of its width in the choice of tile
    /// ([`SmallTile::padded_work`]), beyond its own time per multiply-add (`cost`).
    partial_panel_weight: f64,
    /// Whether this tile reads A in place beyond small products and few panels: wherever
    /// [`super::in_place`]'s `outruns_packing` says it beats the packed path.
    pub any_size: bool,
}

/// Where a small tile streams B's panels ([`SmallTile::streams_b`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
// (No small tiles on other architectures: nothing constructs it there.)
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) enum StreamsB {
    /// Never: where the slice is beyond L2 for several row tiles, B is packed a block of
    /// panels at a time; otherwise read in place row tile by row tile.
    Never,
    /// Wherever B's slice is beyond L2 (for several row tiles) or B comes from memory.
    Always,
    /// There too, but only over rows of B that spread over L2's sets
    /// ([`crate::cpu::CacheLevel::rows_held`]: twice the slice's depth held) and keep half the
    /// panel in L1 ([`panel_stays_in_l1`]); over rows a large power of two apart as
    /// [`StreamsB::Never`]. Decided per K slice (a short last slice may stream where the
    /// others do not: the same tile arithmetic either way).
    OverSpreadRows,
}

impl SmallTile {
    /// Whether this tile streams B's panels over a K slice `depth` deep of a B whose rows are
    /// `row_stride` floats apart, where the slice is beyond L2 or B comes from memory.
    pub(crate) fn streams_b_over(&self, row_stride: usize, depth: usize) -> bool {
        match self.streams_b {
            StreamsB::Never => false,
            StreamsB::Always => true,
            StreamsB::OverSpreadRows => {
                rows_spread_over_l2(row_stride, depth) && panel_stays_in_l1(row_stride, depth)
            }
        }
    }

    /// The kernel for a tile of `rows ≤ mr` rows.
    pub(crate) fn kernel(&self, rows: usize) -> StridedAKernelFn {
        self.kernels[(rows.max(1) - 1).min(self.kernels.len() - 1)]
    }

    /// The kernel for a tile of `rows ≤ mr` rows and `cols ≤ nr` columns: one vector wide
    /// where the columns fit one and the tile has such kernels. Each element of C is the same
    /// sum, in the same order, whichever computes it.
    pub(crate) fn kernel_for(&self, rows: usize, cols: usize) -> StridedAKernelFn {
        if cols <= self.edge_cols && !self.edge.is_empty() {
            self.edge[(rows.max(1) - 1).min(self.edge.len() - 1)]
        } else {
            self.kernel(rows)
        }
    }

    /// Whether the last column panel of an `n`-wide C is a narrow remainder of whole panels,
    /// which this tile's one-vector kernels compute ([`SmallTile::kernel_for`]) rather than
    /// the whole tile masked: one more column costs a vector's width, not the tile's. The
    /// bands of larger in-place products always took them there; the small products
    /// ([`super::in_place::run_small`]) now do too, and the choice of tile counts them so
    /// ([`SmallTile::padded_work`]) — which, for any number of rows, also moves products whose
    /// C ends in such a remainder to a wider tile, and some (N of 65–80 and 97–112 on
    /// AVX-512, where the one-vector 16 × 16 tile had been chosen) from packing to A read in
    /// place. On one Xeon VM thread, against the previous code (medians of 7–11 interleaved
    /// runs): 17×33×65 86 → 109 GFLOP/s (6 × 64 and an edge, where 8 × 48 had computed 96
    /// columns; 17×33×64 runs at 136), 60×64×112 1.26×, 100×512×70 1.46×, 1000×784×100 1.21×,
    /// 300×784×72 1.19×, 5000×256×72 1.08×, 100³ 1.04×, 1000×100×65 1.04×; two threads
    /// 100×512×70 1.68×, 1000×784×100 1.31×, 17×33×65 1.24×; forced AVX2 (6 × 16 and a
    /// 6 × 8 edge) 128×784×24 1.29×, 1000×256×20 1.21×, 32×128×20 1.21×, 17×33×65 1.14×;
    /// 50³ and shapes without such a remainder even.
    pub(crate) fn narrow_last_panel(&self, n: usize) -> bool {
        !self.edge.is_empty()
            && n > self.nr
            && !n.is_multiple_of(self.nr)
            && n % self.nr <= self.edge_cols
    }

    /// The work, in tile elements times `cost`, this tile spends on an `m × n` C: rows and
    /// columns as computed, for a tile that has a kernel per row count the last row tile's
    /// own rows — except where B's slice is beyond L1 (`b_in_l1` false): every row tile then
    /// streams all of it from L2, and one of a few rows took most of a whole one's time (on
    /// one Xeon VM thread, 8 × 32: 32×128×128 at 141 GFLOP/s, 33×128×128 at 126). A last
    /// column panel only partly live counts its whole width, times the tile's
    /// `partial_panel_weight` — or, a narrow remainder of whole panels
    /// ([`SmallTile::narrow_last_panel`]), the one-vector kernels' width at their own cost
    /// ([`EDGE_COST`]).
    fn padded_work(&self, m: usize, n: usize, b_in_l1: bool) -> f64 {
        let rows = if self.kernels.len() == self.mr && b_in_l1 {
            m
        } else {
            m.next_multiple_of(self.mr)
        };
        let whole = (n / self.nr * self.nr) as f64 * self.cost;
        let partial = if n.is_multiple_of(self.nr) {
            0.0
        } else if self.narrow_last_panel(n) {
            self.edge_cols as f64 * EDGE_COST
        } else {
            self.partial_panel_weight * self.nr as f64 * self.cost
        };
        rows as f64 * (whole + partial)
    }
}

/// The time per useful multiply-add of the one-vector kernels that compute a narrow last panel
/// ([`SmallTile::narrow_last_panel`]): that of the sets' one-vector tiles (AVX-512's 8 × 16,
/// AVX2's 6 × 8), which issue a broadcast of A per FMA. Priced at their parent tile's cost
/// instead, 8 × 48 and an edge tied 8 × 32 from 49 to 64 columns and took it from there
/// unmeasured.
const EDGE_COST: f64 = 1.2;

/// The strided-A kernels of `$module` for 1 to `$mr` rows and `$nv` vectors per row.
#[cfg(target_arch = "x86_64")]
macro_rules! by_rows {
    ($module:ident, $nv:literal, [$($rows:literal),*]) => {
        &[$(arch::$module::kernel_strided_a::<$rows, $nv>),*]
    };
}

/// Every side of C and K at most this: A and B are read in place and nothing is packed, when the
/// product runs on one thread (measured on a Zen 5, one thread: 96³ 203 → 245 GFLOP/s, 128³
/// 188 → 242, against packing).
pub(crate) const SMALL: usize = 128;

// The small tiles keep to 8 rows (6 for AVX2): A read in place needs one address register per
// row, and with 12 or more rows the loop reloads them from the stack every step (measured on a
// Zen 5, one thread: 32³ at 178 GFLOP/s with 16 × 16, 210 with 8 × 32; 64³ 210 against 250).
// The 16-row tile stays for 16-row products: K = 16 is too short for 8 accumulators to hide the
// FMA latency (16³: 112 against 83 with 8 × 16). The 8-row tiles have a kernel for every row
// count, so the last rows of C are computed exactly (13 × 27 × 40: 144 → 167 GFLOP/s).
//
// Streaming B's panels (`streams_b`) is measured per tile. The 8-row AVX-512 tiles gain from it,
// on one Zen 4 thread, packed blocks → panel after panel (medians of interleaved runs):
// 32×128×5408 84 → 95 GFLOP/s, 32×512×5408 71 → 97, 24×512×2048 76 → 99, 32×2048×1000 70 → 95,
// 20×700×3000 62 → 93; two threads 32×128×5408 134 → 164, 32×512×5408 116 → 164. The AVX2 6 × 16
// tile (forced on the same machine, medians of 5 interleaved runs) gains where B's rows spread
// over the caches' sets — one thread 32×128×784 67 → 81, 32×128×5408 68 → 77, 32×512×5408 67 →
// 76, 30×256×1000 72 → 85, 24×1024×3000 70 → 86, 16×1024×3000 48 → 65; two threads 32×128×5408
// 143 → 161, 32×512×5408 133 → 151 — and loses where they are a power of two apart, its panel
// one cache line a row, all of them in a few sets (with B's prefetch distance cut to what those
// sets hold, `arch::tile`'s `b_ahead_rows`: 24×512×2048 71 → 61, 32×256×2048 70 → 47,
// 16×2048×4096 47 → 38, 8×1024×8192 30 → 15; by half before that cut) — and where they spread
// over L2 but crowd L1, whose sets are fewer (rows 4 KiB apart, all in one set: 24×128×1024
// 70 → 60, 16×128×1024 59 → 47 streamed): it streams over rows that spread over both only. A
// single row tile over a spread B from memory (which had gone row tile by row tile,
// unprefetched) gains most: 4×2048×3000 13 → 26, 2×1500×3000 10 → 19, 6×2048×3000 18 → 40,
// 3×1000×3000 15 → 23 (medians of 7–9 interleaved rounds; 6×1000×3000 and 5×1000×3000 ran
// 0.7–1.8× as fast in different sets of rounds, the old path itself at 26–62 GFLOP/s). The
// tiles not measured pack.
#[cfg(target_arch = "x86_64")]
const SMALL_AVX512: [SmallTile; 5] = [
    // Six rows of four vectors: 10 loads (4 of B, 6 broadcasts of A) per 24 FMAs, where 8 × 32
    // issues 10 per 16, and a 64-wide C is one panel (fewer, longer tile calls). On one Xeon VM
    // thread, against the 8-row tiles (medians of 5 interleaved runs): 64³ 142 → 148 GFLOP/s,
    // 33×128×128 128 → 138, 96×64×64 144 → 149, 1000×784×128 132 → 135; two threads 64³ 146 →
    // 153, 33×128×128 136 → 168. It reads all of B once per six rows, not eight: beyond L1 a
    // short last row tile costs nearly a whole one (see `padded_work`). Its partly live last
    // panel runs slower per live column than a whole one: 60×64×112 ran at 123 GFLOP/s with it
    // and 130 with 8 × 32, both computing 128 columns; weighed 1.25 (AVX2's tiles, weighed so
    // too, went to the 6 × 8 tile at 40 and 56 columns and ran 11–21 % slower there). It
    // streams B's panels (packed blocks → panel after panel, one thread): 30×512×5408 78 → 106
    // GFLOP/s, 24×128×5408 78 → 95, 12×1024×4096 45 → 49, 24×512×2048 70 → 63 (two threads
    // 151 → 154).
    small(
        6,
        64,
        by_rows!(avx512, 4, [1, 2, 3, 4, 5, 6]),
        0.95,
        StreamsB::Always,
    )
    .with_edge(EDGE_AVX512, 16)
    .with_partial_panel_weight(1.25)
    .at_any_size(),
    small(
        8,
        48,
        by_rows!(avx512, 3, [1, 2, 3, 4, 5, 6, 7, 8]),
        1.0,
        StreamsB::Always,
    )
    .with_edge(EDGE_AVX512, 16)
    .at_any_size(),
    small(
        8,
        32,
        by_rows!(avx512, 2, [1, 2, 3, 4, 5, 6, 7, 8]),
        1.0,
        StreamsB::Always,
    )
    .with_edge(EDGE_AVX512, 16)
    .at_any_size(),
    small(16, 16, by_rows!(avx512, 1, [16]), 1.05, StreamsB::Never),
    small(8, 16, EDGE_AVX512, 1.2, StreamsB::Never),
];

/// One vector (16 columns) wide, a kernel per row count.
#[cfg(target_arch = "x86_64")]
const EDGE_AVX512: &[StridedAKernelFn] = by_rows!(avx512, 1, [1, 2, 3, 4, 5, 6, 7, 8]);

#[cfg(target_arch = "x86_64")]
const SMALL_AVX2: [SmallTile; 2] = [
    small(
        6,
        16,
        by_rows!(avx2, 2, [1, 2, 3, 4, 5, 6]),
        1.0,
        StreamsB::OverSpreadRows,
    )
    .with_edge(EDGE_AVX2, 8),
    small(6, 8, EDGE_AVX2, 1.2, StreamsB::Never),
];

/// One vector (8 columns) wide, a kernel per row count.
#[cfg(target_arch = "x86_64")]
const EDGE_AVX2: &[StridedAKernelFn] = by_rows!(avx2, 1, [1, 2, 3, 4, 5, 6]);

#[cfg(target_arch = "x86_64")]
const fn small(
    mr: usize,
    nr: usize,
    kernels: &'static [StridedAKernelFn],
    cost: f64,
    streams_b: StreamsB,
) -> SmallTile {
    SmallTile {
        mr,
        nr,
        kernels,
        cost,
        edge: &[],
        edge_cols: 0,
        partial_panel_weight: 1.0,
        streams_b,
        any_size: false,
    }
}

#[cfg(target_arch = "x86_64")]
impl SmallTile {
    /// This tile with `edge` kernels for last panels of at most `cols` columns. An edge kernel
    /// for every row count up to the tile's (checked where the tiles are built, at compile
    /// time): `kernel_for` takes `edge[rows - 1]`, and a shorter list would compute too few
    /// rows of the last panel.
    const fn with_edge(self, edge: &'static [StridedAKernelFn], cols: usize) -> SmallTile {
        assert!(
            edge.len() >= self.mr,
            "an edge kernel for every row count of the tile"
        );
        assert!(cols < self.nr, "an edge narrower than the tile");
        SmallTile {
            edge,
            edge_cols: cols,
            ..self
        }
    }

    /// This tile, its partly live last panel weighed `weight` times its width.
    const fn with_partial_panel_weight(self, weight: f64) -> SmallTile {
        SmallTile {
            partial_panel_weight: weight,
            ..self
        }
    }

    /// This tile, read in place at any size where that beats packing.
    const fn at_any_size(self) -> SmallTile {
        SmallTile {
            any_size: true,
            ..self
        }
    }
}

pub(crate) fn small_tiles_of(isa: Isa) -> &'static [SmallTile] {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => &SMALL_AVX2,
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => &SMALL_AVX512,
        _ => &[],
    }
}

#[cfg(target_arch = "aarch64")]
const NEON: [Tile; 2] = [
    tile(8, 12, arch::neon::kernel::<8, 3>, false, 1.0),
    tile(12, 8, arch::neon::kernel::<12, 2>, false, 1.1),
];

fn tiles_of(isa: Isa) -> &'static [Tile] {
    match isa {
        Isa::Scalar => &SCALAR,
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => &AVX2,
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => &AVX512,
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => &NEON,
        _ => &[],
    }
}

/// `isa`'s `tiles` with the cache model's block sizes for `caches`. One `kc` for all the tiles of an
/// instruction set (the model's for its first, main tile): `kc` fixes where a row's sum is cut
/// into slices, so with tiles of different depths a row's bits would depend on the tile its
/// product's shape chose — and a model's predictions on the batch size.
fn configure(isa: Isa, tiles: &[Tile], caches: &CacheInfo) -> Vec<KernelConfig> {
    let Some(main) = tiles.first() else {
        return Vec::new();
    };
    let kc = depth(caches, main.mr, main.nr);
    tiles
        .iter()
        .map(|t| {
            let Blocks { mc, kc, nc } = blocks_at_depth(caches, t.mr, t.nr, kc);
            KernelConfig {
                isa,
                mr: t.mr,
                nr: t.nr,
                mc,
                kc,
                nc,
                kernel: t.kernel,
                direct_b: t.direct_b,
                cost: t.cost_here(),
            }
        })
        .collect()
}

/// The tiles of one instruction set with this CPU's block sizes, and the choice of small tile
/// for every small C (looked up: the search's integer divisions were a third of a 16³
/// product's time).
struct IsaConfigs {
    tiles: Vec<KernelConfig>,
    /// `small_choice[l1][m · (SMALL + 1) + n]`: the index of the small tile for `m × n`, with
    /// B's slice beyond L1 (`l1` = 0) or in it (1).
    small_choice: [Vec<u8>; 2],
}

fn all_configs() -> &'static [IsaConfigs] {
    static CONFIGS: OnceLock<Vec<IsaConfigs>> = OnceLock::new();
    CONFIGS.get_or_init(|| {
        let caches = crate::cpu::cache_info();
        Isa::ALL
            .iter()
            .map(|&isa| {
                let tiles = configure(isa, tiles_of(isa), caches);
                let small = small_tiles_of(isa);
                let side = SMALL + 1;
                let small_choice = [false, true].map(|b_in_l1| {
                    (0..side * side)
                        .map(|mn| {
                            let (m, n) = (mn / side, mn % side);
                            least_padded(small, |t| t.padded_work(m, n, b_in_l1))
                                .map_or(0, |i| i as u8)
                        })
                        .collect()
                });
                IsaConfigs {
                    tiles,
                    small_choice,
                }
            })
            .collect()
    })
}

/// Every tile registered for `isa` (empty for paths that do not use our driver).
pub(crate) fn kernels_of(isa: Isa) -> &'static [KernelConfig] {
    &all_configs()[isa as usize].tiles
}

/// Whether B's slice of an `n`-column product over `k` (at most `isa`'s slice depth deep) fits
/// in L1: the choice of small tile ([`small_tile`]) weighs a short last row tile by it.
pub(crate) fn b_slice_in_l1(isa: Isa, k: usize, n: usize) -> bool {
    let depth = slice_depth(isa).map_or(k, |kc| k.min(kc));
    depth
        .saturating_mul(n)
        .saturating_mul(std::mem::size_of::<f32>())
        <= crate::cpu::cache_info().l1d.size
}

/// Whether B's rows, `row_stride` floats apart, spread over L2's sets so that it holds a
/// slice `depth` rows deep twice over ([`crate::cpu::CacheLevel::rows_held`]): rows a large
/// power of two apart fall into a few sets and evict one another.
pub(crate) fn rows_spread_over_l2(row_stride: usize, depth: usize) -> bool {
    rows_held(&crate::cpu::cache_info().l2, row_stride) >= depth.saturating_mul(2)
}

/// Whether a one-line-wide panel of B, `depth` rows `row_stride` floats apart, keeps at least
/// half its rows in L1 ([`crate::cpu::CacheLevel::rows_held`]) for the row tiles after the
/// first: rows a power of two apart crowd into a few of L1's sets even where they spread over
/// L2's, and the panel comes from L2 again for each row tile.
pub(crate) fn panel_stays_in_l1(row_stride: usize, depth: usize) -> bool {
    rows_held(&crate::cpu::cache_info().l1d, row_stride).saturating_mul(2) >= depth
}

/// [`crate::cpu::CacheLevel::rows_held`] for rows `row_stride` floats apart.
fn rows_held(cache: &crate::cpu::CacheLevel, row_stride: usize) -> usize {
    cache.rows_held(row_stride.saturating_mul(std::mem::size_of::<f32>()))
}

/// The small tile for an `m × n` C (m, n ≤ [`SMALL`]), where `isa` has small tiles; `b_in_l1`
/// as [`b_slice_in_l1`] says of the product.
pub(crate) fn small_tile(
    isa: Isa,
    m: usize,
    n: usize,
    b_in_l1: bool,
) -> Option<&'static SmallTile> {
    if m > SMALL || n > SMALL {
        return None;
    }
    let tiles = small_tiles_of(isa);
    let index = all_configs()[isa as usize].small_choice[usize::from(b_in_l1)][m * (SMALL + 1) + n];
    tiles.get(index as usize)
}

/// The index of the tile with the least `padded` work (the padded tile area times its cost).
fn least_padded<T>(tiles: &[T], padded: impl Fn(&T) -> f64) -> Option<usize> {
    (0..tiles.len()).min_by(|&x, &y| padded(&tiles[x]).total_cmp(&padded(&tiles[y])))
}

/// The tile of `isa` that computes an `m × n` C cheapest: least padded work times `cost`.
/// The driver may take another tile on several threads (one whose shares of C pad less); every
/// tile sums each element in the same order, so the bits are the same on every thread count.
/// `isa` is one this CPU runs (resolved), so it registers tiles.
pub(crate) fn kernel_config(isa: Isa, m: usize, n: usize) -> &'static KernelConfig {
    let tiles = kernels_of(isa);
    let best = least_padded(tiles, |cfg| {
        (m.next_multiple_of(cfg.mr) * n.next_multiple_of(cfg.nr)) as f64 * cfg.cost
    });
    &tiles[best.expect("every instruction set compiled into this build registers tiles")]
}

/// The depth of `isa`'s K slices (one for all its tiles: it fixes where a row's sum is cut);
/// `None` for a set not compiled into this build.
pub(crate) fn slice_depth(isa: Isa) -> Option<usize> {
    kernels_of(isa).first().map(|cfg| cfg.kc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_sizes_are_multiples_of_the_tile() {
        for (i, isa) in Isa::ALL.into_iter().enumerate() {
            assert_eq!(isa as usize, i, "kernels_of indexes by the enum's order");
            let tiles = kernels_of(isa);
            assert!(tiles.iter().all(|c| c.kc == tiles[0].kc), "{isa}: one kc");
            for cfg in tiles {
                assert_eq!(cfg.mc % cfg.mr, 0, "{isa}: mc");
                assert_eq!(cfg.nc % cfg.nr, 0, "{isa}: nc");
                assert!(
                    cfg.mr * cfg.nr <= crate::gemm::driver::MAX_TILE,
                    "{isa}: tile"
                );
            }
        }
    }

    /// A tile that streams B over spread rows only does so where its rows spread over L2's
    /// sets and keep half a panel in L1, and packs where they crowd into one set of either;
    /// the others stream always or never. AVX2's wide tile streams over spread rows, AVX-512's
    /// 8-row tiles always.
    #[test]
    fn b_streams_over_spread_rows_where_the_tile_says() {
        let caches = crate::cpu::cache_info();
        let (l1, l2) = (caches.l1d, caches.l2);
        // An odd number of floats apart: every set; one way of L2 apart: one set.
        let (spread, crowded) = (1501, l2.way_bytes() / 4);
        // One way of L1 apart: one of L1's sets, `ways` rows of the panel held.
        let l1_way = l1.way_bytes() / 4;
        assert!(panel_stays_in_l1(spread, 2 * l1.size / l1.line));
        assert!(panel_stays_in_l1(l1_way, 2 * l1.ways));
        assert!(!panel_stays_in_l1(l1_way, 2 * l1.ways + 1));
        for tile in Isa::ALL.iter().flat_map(|&isa| small_tiles_of(isa)) {
            if tile.streams_b == StreamsB::OverSpreadRows {
                for (stride, depth) in [(l1_way, 64), (l1_way, 8), (2 * l1_way + 16, 256)] {
                    let both =
                        rows_spread_over_l2(stride, depth) && panel_stays_in_l1(stride, depth);
                    assert_eq!(
                        tile.streams_b_over(stride, depth),
                        both,
                        "{stride}, {depth}"
                    );
                }
            }
        }
        for isa in Isa::ALL {
            let Some(kc) = slice_depth(isa) else {
                continue;
            };
            for tile in small_tiles_of(isa) {
                let (at_spread, at_crowded) = (
                    tile.streams_b_over(spread, kc),
                    tile.streams_b_over(crowded, kc),
                );
                let expected = match tile.streams_b {
                    StreamsB::Never => (false, false),
                    StreamsB::Always => (true, true),
                    StreamsB::OverSpreadRows => (true, false),
                };
                assert_eq!(
                    (at_spread, at_crowded),
                    expected,
                    "{isa} {}×{}",
                    tile.mr,
                    tile.nr
                );
            }
        }
        #[cfg(target_arch = "x86_64")]
        {
            let streams = |isa, mr, nr| {
                small_tiles_of(isa)
                    .iter()
                    .find(|t| (t.mr, t.nr) == (mr, nr))
                    .map(|t| t.streams_b)
            };
            assert_eq!(streams(Isa::Avx2, 6, 16), Some(StreamsB::OverSpreadRows));
            assert_eq!(streams(Isa::Avx512, 8, 48), Some(StreamsB::Always));
            assert_eq!(streams(Isa::Avx512, 8, 32), Some(StreamsB::Always));
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn narrow_products_get_narrow_tiles() {
        assert_eq!(kernel_config(Isa::Avx512, 1024, 960).nr, 48);
        // 1024 columns: 8 × 48 tiles pad them by 3 %, 12 × 32 tiles pad the rows by 0.8 % and
        // cost 1 % more per multiply-add on Intel's cores, 5 % on others.
        let intel = crate::cpu::vendor() == crate::cpu::Vendor::Intel;
        let wide = if intel { 32 } else { 48 };
        assert_eq!(kernel_config(Isa::Avx512, 1024, 1024).nr, wide);
        assert_eq!(kernel_config(Isa::Avx512, 21632, 9).nr, 16);
        assert_eq!(kernel_config(Isa::Avx512, 9, 32).mr, 9);
        assert_eq!(kernel_config(Isa::Avx2, 21632, 9).nr, 16);
        assert_eq!(kernel_config(Isa::Avx2, 5000, 8).nr, 8);
        assert_eq!(kernel_config(Isa::Avx512, 21600, 9).mr, 24);
        let small = |m, n| small_tile(Isa::Avx512, m, n, true).map(|t| (t.mr, t.nr));
        assert_eq!(small(16, 16), Some((16, 16)));
        assert_eq!(small(32, 32), Some((8, 32)));
        assert_eq!(small(48, 48), Some((8, 48)));
        assert_eq!(small(128, 129), None);
        // C one panel of 64 wide: six rows of four vectors; 96 columns (a second panel of 64
        // half live) go to two whole panels of 48.
        assert_eq!(small(64, 64), Some((6, 64)));
        assert_eq!(small(64, 96), Some((8, 48)));
        // B's slice beyond L1: a last row tile of a few rows counts as a whole one.
        let beyond = |m| small_tile(Isa::Avx512, m, 128, false).map(|t| (t.mr, t.nr));
        assert_eq!(beyond(32), Some((8, 32)));
        assert_eq!(beyond(33), Some((6, 64)));
        assert!(small_tile(Isa::Scalar, 4, 4, true).is_none());
    }

    /// A last panel of a few columns after whole ones is one vector wide, and the choice of
    /// tile counts it so: 65 columns take the 6 × 64 tile and its one-vector kernels (64 + 16
    /// columns computed), not the 8 × 48 (48 + 48).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn a_narrow_remainder_takes_one_vector() {
        let tile = |isa, mr, nr| {
            *small_tiles_of(isa)
                .iter()
                .find(|t| (t.mr, t.nr) == (mr, nr))
                .expect("registered")
        };
        let wide = tile(Isa::Avx512, 6, 64);
        for (n, narrow) in [
            (63, false),
            (64, false),
            (65, true),
            (80, true),
            (81, false),
        ] {
            assert_eq!(wide.narrow_last_panel(n), narrow, "n {n}");
        }
        assert_eq!(
            wide.padded_work(17, 65, true),
            17.0 * (64.0 * wide.cost + 16.0 * EDGE_COST)
        );
        // The one-vector tile has no narrower kernels.
        assert!(!tile(Isa::Avx512, 8, 16).narrow_last_panel(17));
        let avx2 = tile(Isa::Avx2, 6, 16);
        assert!(avx2.narrow_last_panel(20) && !avx2.narrow_last_panel(25));
        let small = |m, n| small_tile(Isa::Avx512, m, n, true).map(|t| (t.mr, t.nr));
        assert_eq!(small(17, 65), Some((6, 64)));
        assert_eq!(small(17, 64), Some((6, 64)));
        // 50 columns, and 64 over eight rows of a B beyond L1: two panels of 32 (the second
        // partly live at 50) cost less than one of 48 and an edge.
        assert_eq!(small(50, 50), Some((8, 32)));
        let beyond_l1 = small_tile(Isa::Avx512, 8, 64, false).map(|t| (t.mr, t.nr));
        assert_eq!(beyond_l1, Some((8, 32)));
    }
}
