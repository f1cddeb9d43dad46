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
    let mc = (a_ways * l2.way_bytes() / (kc * F32)) / mr * mr;
    let mc = mc.clamp(mr, (4096 / mr) * mr);
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
        // mc = 6·32768/2048 = 96; no L3: B's panel bounded by L2, 262144/2048 = 128 columns.
        assert_eq!(
            blocks_for(&c, 6, 16),
            Blocks {
                mc: 96,
                kc: 512,
                nc: 128
            }
        );
        // Zen 5: L2 16 − 1 − ⌈512·48·4/65536⌉ = 13 ways → mc = 13·65536/2048 = 416; L3 per
        // thread (2 sharing): 16 − 1 − ⌈416·512·4·2/2 MiB⌉ = 14 ways → 28 MiB / 2 / 2048 = 7168 → 7152 (multiple of 48).
        assert_eq!(
            blocks_for(&zen5, 8, 48),
            Blocks {
                mc: 416,
                kc: 512,
                nc: 7152
            }
        );
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
                assert!(b.mc >= mr && b.mc <= 4096, "{c}: {b:?}");
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
