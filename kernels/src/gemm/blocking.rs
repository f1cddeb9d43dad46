//! The cache model: block sizes `mc`, `kc`, `nc` for an `mr × nr` tile from the CPU's caches,
//! after BLIS's analytical model (Low, Igual, Smith, Quintana-Ortí, "Analytical Modeling Is
//! Enough for High-Performance BLIS", ACM TOMS 2016).
//!
//! A set-associative cache of `W` ways is handed out in whole ways (one way = sets × line
//! bytes), one way always left for the lines that pass through (C, the next panel):
//!
//! * **kc (L1)**: the `kc × nr` micro-panel of B is reused by every micro-panel of A in loop 1,
//!   so it stays in L1 while those `mr × kc` micro-panels stream through. They share the L1 in
//!   proportion to their widths: `C_B = ⌊(W₁ − 1) / (1 + mr/nr)⌋` ways for B, and
//!   `kc = C_B · way₁ / (nr · 4 bytes)`.
//! * **mc (L2)**: the packed `mc × kc` block of A is reused by every micro-panel of B in loop
//!   2, so it stays in L2 beside the B micro-panel in use: `C_A = W₂ − 1 − ⌈kc·nr·4 / way₂⌉`
//!   ways, `mc = C_A · way₂ / (kc · 4)`.
//!   The model counts whole ways as if the block's lines filled them evenly; they do not. The
//!   sets a line may use follow from its *physical* address, and a 4 KiB page can sit anywhere
//!   (on a virtual machine, wherever the host put it): a way of `way₂` bytes holds
//!   `way₂ / 4 KiB` page *colours*, and each page of the block falls on one of them at random.
//!   A colour that draws more pages than `C_A` ways evicts the block's own lines in every pass
//!   of loop 2. Counting a colour's pages as Poisson with mean λ = pages ÷ colours (the exact
//!   count is binomial, with a slightly thinner tail, so the approximation errs small), the
//!   share of the block's pages on over-full colours is `P(X ≥ C_A)` for X ~ Poisson(λ)
//!   (E[N·1(N > C_A)] = λ·P(X ≥ C_A)). So `mc` is also capped at the most pages for which that
//!   share stays under [`OVERFULL_SHARE`], though never below a quarter of the whole-ways
//!   figure: with few ways (an 8-way L2 leaves 6 for A) the cap alone would leave a sixth of it
//!   or less, and no machine with so few ways has measured that yet. On an AVX-512 Xeon VM
//!   (2 MiB 16-way L2, 32 colours, 14 ways for A), one thread, medians of 12 interleaved rounds
//!   in one process, mc at the whole-ways 896 → 448 (1.3 % of the pages on over-full colours)
//!   → 328 (the cap): 1024³ 108 → 114 → 116–119 GFLOP/s, 2048³ 108 → 114 → 118–121; the forced
//!   AVX2 6 × 16 tile at 2048³ 56.5 → 61.6 → 65.8; two threads no different. Transparent huge
//!   pages for the packed block did not help there (the host's pages are still 4 KiB).
//! * **nc (L3)**: the packed `kc × nc` panel of B is reused by every block of A in loop 3, so it
//!   stays in the last-level cache beside one A block. Each thread packs its own panel, so a
//!   thread counts on its share of a shared L3 only: `nc = (W₃ − 1 − ⌈mc·kc·4 / way₃⌉) · way₃ /
//!   (kc · 4 · sharing CPUs)`. With no L3, B's panel is bounded by L2's size instead (it is
//!   streamed from memory once per A block either way).
//!
//! The results are rounded down to whole tiles (`mc` to MR, `nc` to NR, `kc` to 8) and kept in
//! sane bounds, so a cache figure that passes the plausibility checks of [`crate::cpu`] but is
//! still odd cannot produce a degenerate block.

use crate::cpu::{CacheInfo, CacheLevel};

const F32: usize = std::mem::size_of::<f32>();

/// The shallowest K slice: every slice reads and writes its tiles of C once more, and below this
/// depth that update costs more than reading B's micro-panel from L2 instead of L1. Measured on
/// a Zen 5 (48 KiB 12-way L1d), one thread, the 8 × 48 AVX-512 tile, ours ÷ matrixmultiply in
/// the same run at 2048³: 0.93–0.95 with the L1 model's kc = 192, 1.06 at 256, 1.09–1.16 at 512
/// (768 and 1024 no better); at 1024³ and 128×784×512 the depth made no difference beyond noise.
const KC_MIN: usize = 512;

/// The bytes of a page, the unit in which physical placement is random.
const PAGE: usize = 4096;

/// The tallest block of A (rows).
const MC_MAX: usize = 4096;

/// The share of the packed A block's pages that may fall on over-full page colours of L2 (see
/// the module documentation).
const OVERFULL_SHARE: f64 = 1e-3;

/// `P(X ≥ n)` for X ~ Poisson(`mean`).
fn poisson_tail(mean: f64, n: usize) -> f64 {
    let mut term = (-mean).exp();
    let mut below = 0.0;
    for i in 0..n {
        below += term;
        term *= mean / (i + 1) as f64;
    }
    (1.0 - below).max(0.0)
}

/// The most pages, up to `most`, a block may have in `cache` with `ways` of it for its use and
/// at most [`OVERFULL_SHARE`] of them on colours that drew more pages than `ways`. Unbounded
/// where a way holds under two pages: then there is a single colour, and every page spreads
/// over all the sets.
fn pages_that_fit(cache: &CacheLevel, ways: usize, most: usize) -> usize {
    let colours = cache.way_bytes() / PAGE;
    if colours <= 1 {
        return usize::MAX;
    }
    // The tail grows with λ: the first count past the share ends the search, which `most`
    // bounds whatever size a cache reports.
    let share_fits =
        |pages: usize| poisson_tail(pages as f64 / colours as f64, ways) <= OVERFULL_SHARE;
    (1..=most.min(colours.saturating_mul(ways)))
        .take_while(|&pages| share_fits(pages))
        .last()
        .unwrap_or(0)
}

/// The bytes of data read again and again that stay in `l2` when their 4 KiB pages land on its
/// page colours at random, one way left for the lines passing through: the most pages that
/// leave at most [`OVERFULL_SHARE`] of them on over-full colours (as for the A block above),
/// never less than a quarter of L2.
pub(crate) fn l2_held_at_random(l2: &CacheLevel) -> usize {
    let quarter = l2.size / 4;
    let pages = pages_that_fit(l2, l2.ways.saturating_sub(1).max(1), l2.size / PAGE);
    pages.saturating_mul(PAGE).clamp(quarter, l2.size)
}

/// `mc × kc × nc` for one tile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Blocks {
    pub mc: usize,
    pub kc: usize,
    pub nc: usize,
}

/// Whole ways of `cache` that `bytes` occupy.
fn ways_for(bytes: usize, cache: &CacheLevel) -> usize {
    bytes.div_ceil(cache.way_bytes())
}

/// BLIS's L1 depth: the deepest K slice whose `kc × nr` micro-panel of B keeps its share of
/// L1 (whole ways, at least one) beside the streaming `mr × kc` micro-panels of A.
fn l1_depth(l1: &CacheLevel, mr: usize, nr: usize) -> usize {
    let b_ways = ((l1.ways - 1) * nr / (nr + mr)).max(1);
    (b_ways * l1.way_bytes() / (nr * F32)) / 8 * 8
}

/// The K slice depth for an `mr × nr` tile: BLIS's L1 depth, at least [`KC_MIN`].
pub(crate) fn depth(caches: &CacheInfo, mr: usize, nr: usize) -> usize {
    l1_depth(&caches.l1d, mr, nr).clamp(KC_MIN, 1024)
}

/// The model's block sizes for an `mr × nr` tile on `caches`.
#[cfg(test)]
fn blocks_for(caches: &CacheInfo, mr: usize, nr: usize) -> Blocks {
    blocks_at_depth(caches, mr, nr, depth(caches, mr, nr))
}

/// `mc` and `nc` for an `mr × nr` tile whose K slices are `kc` deep.
pub(crate) fn blocks_at_depth(caches: &CacheInfo, mr: usize, nr: usize, kc: usize) -> Blocks {
    let l2 = &caches.l2;
    // mc: L2 less one way and the B micro-panel's ways.
    let a_ways = l2
        .ways
        .saturating_sub(1 + ways_for(kc * nr * F32, l2))
        .max(1);
    let whole_ways = a_ways * l2.way_bytes() / (kc * F32);
    let most_pages = (MC_MAX * kc * F32).div_ceil(PAGE);
    let colour_cap = pages_that_fit(l2, a_ways, most_pages).saturating_mul(PAGE) / (kc * F32);
    let mc = whole_ways.min(colour_cap.max(whole_ways / 4)) / mr * mr;
    let mc = mc.clamp(mr, (MC_MAX / mr) * mr);
    // nc: the last level's per-thread share less one A block, or L2's size without an L3.
    let panel_bytes = match caches.l3 {
        Some(l3) => {
            let ways = l3
                .ways
                .saturating_sub(1 + ways_for(mc * kc * F32 * l3.shared_by, &l3))
                .max(1);
            ways * l3.way_bytes() / l3.shared_by
        }
        None => l2.size,
    };
    let nc = (panel_bytes / (kc * F32)) / nr * nr;
    let nc = nc.clamp(nr, (8192 / nr) * nr);
    Blocks { mc, kc, nc }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::CacheSource;

    fn caches(
        l1: (usize, usize),
        l2: (usize, usize),
        l3: Option<(usize, usize, usize)>,
    ) -> CacheInfo {
        let level = |size, ways, shared_by| CacheLevel {
            size,
            ways,
            line: 64,
            shared_by,
        };
        CacheInfo {
            l1d: level(l1.0, l1.1, 1),
            l2: level(l2.0, l2.1, 1),
            l3: l3.map(|(size, ways, shared)| level(size, ways, shared)),
            source: CacheSource::Fallback,
        }
    }

    #[test]
    fn haswell_matches_the_paper() {
        // Haswell: 32 KiB 8-way L1d, 256 KiB 8-way L2. The 6 × 16 sgemm tile: C_B = ⌊7·16/22⌋ = 5
        // ways of 4 KiB → kc = 5·4096/64 = 320.
        let c = caches((32 << 10, 8), (256 << 10, 8), None);
        assert_eq!(l1_depth(&c.l1d, 6, 16), 320);
        // Zen 5's 48 KiB 12-way L1d and the 8 × 48 tile: ⌊11·48/56⌋ = 9 ways → 9·4096/192 = 192.
        let zen5 = caches((48 << 10, 12), (1 << 20, 16), Some((32 << 20, 16, 2)));
        assert_eq!(l1_depth(&zen5.l1d, 8, 48), 192);
        // Both below KC_MIN, so kc = 512. Haswell's L2: 8 − 1 − ⌈512·16·4/32768⌉ = 6 ways →
        // 6·32768/2048 = 96 rows in whole ways; 8 colours of 4 KiB pages, at most 8 pages with
        // P(Poisson(8/8) ≥ 6) ≤ 1e-3, 16 rows: below a quarter of 96, so 24. No L3: B's panel
        // bounded by L2, 262144/2048 = 128 columns.
        assert_eq!(
            blocks_for(&c, 6, 16),
            Blocks {
                mc: 24,
                kc: 512,
                nc: 128
            }
        );
        // Zen 5: L2 16 − 1 − ⌈512·48·4/65536⌉ = 13 ways → 13·65536/2048 = 416 rows in whole
        // ways; 16 colours, 73 pages → 146 rows → 144; L3 per thread (2 sharing): 16 − 1 −
        // ⌈144·512·4·2/2 MiB⌉ = 14 ways → 28 MiB / 2 / 2048 = 7168 → 7152 (multiple of 48).
        assert_eq!(
            blocks_for(&zen5, 8, 48),
            Blocks {
                mc: 144,
                kc: 512,
                nc: 7152
            }
        );
        // The Xeon VM the page colours were measured on (its L3 as the VM reports it): 2 MiB
        // 16-way L2, 14 ways for A, 32 colours: 166 pages → 332 rows → 328 (896 in whole ways).
        let xeon = caches((48 << 10, 12), (2 << 20, 16), Some((480 << 20, 16, 2)));
        assert_eq!(blocks_for(&xeon, 8, 48).mc, 328);
        // A 4 MiB 16-way L2 (64 colours, 14 ways for A): 332 pages → 664 rows (1792 in whole
        // ways).
        let large = caches((48 << 10, 12), (4 << 20, 16), None);
        assert_eq!(blocks_for(&large, 8, 48).mc, 664);
    }

    #[test]
    fn random_pages_hold_less_than_the_whole_l2() {
        // The Xeon's 2 MiB 16-way L2: 15 ways, 32 colours → 185 pages, 740 KiB.
        let xeon = caches((48 << 10, 12), (2 << 20, 16), None);
        assert_eq!(l2_held_at_random(&xeon.l2), 185 * PAGE);
        // An 8-way 1 MiB L2 holds less at random than its quarter: the quarter.
        let few_ways = caches((32 << 10, 8), (1 << 20, 8), None);
        assert_eq!(l2_held_at_random(&few_ways.l2), 256 << 10);
        // A way of a page (a single colour): all of it.
        let one_colour = caches((32 << 10, 8), (32 << 10, 8), None);
        assert_eq!(l2_held_at_random(&one_colour.l2), 32 << 10);
    }

    #[test]
    fn the_colour_cap_keeps_over_full_pages_under_the_share() {
        // P(X ≥ 5), X ~ Poisson(2) = 1 − e⁻²(1 + 2 + 2 + 4/3 + 2/3) = 0.052653.
        assert!((poisson_tail(2.0, 5) - 0.052653).abs() < 1e-6);
        // Either side of the share at the Xeon's L2: 166 and 167 pages on 32 colours, 14 ways.
        assert!((poisson_tail(166.0 / 32.0, 14) - 9.8589e-4).abs() < 1e-8);
        assert!((poisson_tail(167.0 / 32.0, 14) - 1.04242e-3).abs() < 1e-8);
        assert_eq!(poisson_tail(3.0, 0), 1.0);
        for (size, ways) in [(256 << 10, 8), (1 << 20, 16), (2 << 20, 16), (512 << 10, 8)] {
            let l2 = CacheLevel {
                size,
                ways,
                line: 64,
                shared_by: 1,
            };
            let colours = (l2.way_bytes() / PAGE) as f64;
            for a_ways in 1..ways {
                let pages = pages_that_fit(&l2, a_ways, usize::MAX);
                let share = |p: usize| poisson_tail(p as f64 / colours, a_ways);
                assert!(share(pages) <= OVERFULL_SHARE, "{size} {a_ways}: {pages}");
                assert!(
                    share(pages + 1) > OVERFULL_SHARE,
                    "{size} {a_ways}: {pages}"
                );
                assert!(
                    pages < colours as usize * a_ways,
                    "fewer than whole ways hold"
                );
                assert_eq!(pages_that_fit(&l2, a_ways, pages / 2), pages / 2);
            }
        }
        // A way of one page: every page spreads over all the sets, no cap.
        let small = CacheLevel {
            size: 32 << 10,
            ways: 8,
            line: 64,
            shared_by: 1,
        };
        assert_eq!(pages_that_fit(&small, 6, usize::MAX), usize::MAX);
        // An absurd figure that passed the plausibility checks (4 TiB, 16-way: 2²⁶ colours) is
        // searched only up to the bound.
        let absurd = CacheLevel {
            size: 1 << 42,
            ways: 16,
            line: 64,
            shared_by: 1,
        };
        assert_eq!(pages_that_fit(&absurd, 14, 2048), 2048);
    }

    #[test]
    fn blocks_are_whole_tiles_and_bounded() {
        for c in [
            CacheInfo::FALLBACK,
            caches((48 << 10, 12), (1 << 20, 16), Some((32 << 20, 16, 16))),
            caches((32 << 10, 8), (512 << 10, 8), Some((32 << 20, 16, 16))),
            caches((64 << 10, 4), (2 << 20, 8), None),
            caches((4 << 10, 2), (8 << 10, 2), Some((16 << 10, 2, 64))),
            caches((1 << 30, 16), (1 << 30, 16), Some((1 << 30, 16, 1))),
        ] {
            for (mr, nr) in [
                (8, 48),
                (12, 32),
                (9, 32),
                (24, 16),
                (6, 16),
                (12, 8),
                (4, 8),
            ] {
                let b = blocks_for(&c, mr, nr);
                assert_eq!(b.mc % mr, 0, "{c}: {b:?}");
                assert_eq!(b.nc % nr, 0, "{c}: {b:?}");
                assert_eq!(b.kc % 8, 0, "{c}: {b:?}");
                assert!((32..=1024).contains(&b.kc), "{c}: {b:?}");
                assert!(b.mc >= mr && b.mc <= MC_MAX, "{c}: {b:?}");
                assert!(b.nc >= nr && b.nc <= 8192, "{c}: {b:?}");
            }
        }
    }

    #[test]
    fn larger_caches_give_larger_blocks() {
        let small = caches((32 << 10, 8), (512 << 10, 8), None);
        let large = caches((64 << 10, 16), (2 << 20, 16), None);
        assert!(l1_depth(&large.l1d, 6, 16) > l1_depth(&small.l1d, 6, 16));
        let (s, l) = (blocks_for(&small, 6, 16), blocks_for(&large, 6, 16));
        assert!(l.mc * l.kc > s.mc * s.kc, "{s:?} {l:?}");
        assert!(l.nc > s.nc, "{s:?} {l:?}");
    }
}
