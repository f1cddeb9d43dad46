//! Products of a few rows whose B is stored by columns — `b.t()` of a row-major matrix: a
//! linear layer's weights kept output by input (PyTorch's layout) in its forward pass, or a
//! Dense layer's kernel in its input gradient `g·Wᵀ` — computed as `Cᵀ = Bᵀ·Aᵀ`, with `Bᵀ`
//! (B's own storage, row by row) read in place by the small tiles as their A.
//!
//! The packed path would copy all of B into panels, a transpose of every element, for the few
//! multiply-adds each one takes part in (one per row of C): on one thread of an AVX-512 Xeon VM,
//! 32×128×5408 with B transposed ran at 74 GFLOP/s where the same product with B by rows ran at
//! 133. Here only A (`m × k`, a few rows) and C (`m × n`) are transposed: C's columns are
//! formed as rows of `Cᵀ`, a chunk at a time in a buffer that stays in L2, and laid back across
//! C's rows. Each element of C is the same sum in the same order as on the other paths (the
//! same K slices, one FMA per step of K, alpha and beta applied alike), so the bits do not
//! change with the path or the thread count (a NaN's payload aside, where both factors of a
//! product are NaNs); the epilogue is applied to `Cᵀ`'s tiles (a bias
//! per column of C becomes one per row of `Cᵀ`), elementwise, as to C's elsewhere.

use super::config::{b_slice_in_l1, small_tile, SmallTile, SMALL};
use super::epilogue::{Bias, Epilogue};
use super::in_place::{hand_offs_worth, run_whole, FEW_ROWS};
use super::pack::transpose_lines;
use super::price::HandOff;
use super::problem::{Operand, Output, Problem};
use crate::scratch::{TRANSPOSED_A, TRANSPOSED_C};
use crate::team::run_parallel;
use crate::Isa;

/// Columns of C a task forms at a time, as rows of `Cᵀ`: with [`FEW_ROWS`] rows, 126 KiB of
/// `Cᵀ` and as much again laid out by C's rows, both within L2. A multiple of every small
/// tile's rows (6, 8, 16), so that chunks start on a tile of `Cᵀ` as bands do and only a
/// band's last chunk has a partial tile.
const CHUNK: usize = 21 * 48;

/// The least K of a product in the transposed form, and the least K per row of C (see
/// [`gemm_transposed_b`]).
const MIN_DEPTH: usize = 64;
const MIN_DEPTH_PER_ROW: usize = 3;

/// `prob` by way of `Cᵀ = Bᵀ·Aᵀ` on up to `threads` threads, where that applies: B stored by
/// columns (unit row stride), C of at least 2 and at most [`FEW_ROWS`] rows, a product that is not
/// small (every side within [`SMALL`]: left to `super::in_place::gemm_small`, or to packing where
/// it is worth sharing among threads), unit column stride in C, A stored (not packed on the fly),
/// `isa` has small tiles, and K deep enough: at least [`MIN_DEPTH`] and [`MIN_DEPTH_PER_ROW`] per
/// row of C. Over a shallower K, B's panels are cheap to pack while `Cᵀ` — as many floats per
/// column as C has rows, in tiles only that wide — is costly to form and to transpose. Measured on
/// an AVX-512 Xeon VM, packed → transposed (medians of 5 interleaved runs), one thread: 32×128×5408
/// 70 → 106 GFLOP/s, 32×784×1000 71 → 128, 32×2048×2048 70 → 134, 8×512×4096 27 → 50, 4×1024×3000
/// 14 → 23, 16×64×5000 57 → 80, 32×96×5408 73 → 111, 24×300×700 95 → 101; two threads 137 → 200,
/// 109 → 224, 47 → 92, 114 → 145, 153 → 193, 32×300×700 165 → 176; but 32×64×5408 (K = 2M) 172 →
/// 156 on two, 32×32×5408 87 → 77 and 167 → 131, 16×32×5000 78 → 74 and 129 → 109, 8×32×4096 56 →
/// 42 and 83 → 62. Narrow products gain too (they had been left to packing): on the Xeon VM
/// (AVX-512), packed → transposed, medians of 7 interleaved runs, one thread 32×784×128 67 → 85,
/// 32×784×64 54 → 81, 32×784×16 41 → 52, 16×512×100 42 → 59, 4×784×128 18 → 28, but 8×784×128 41 →
/// 36; two threads 71 → 131, 72 → 98, 46 → 54, 48 → 87, 55 → 63; the AVX2 tiles forced there, one
/// thread 42 → 53, 34 → 50, 21 → 35, 28 → 53, 8×784×128 24 → 44. `false` (nothing done) otherwise.
/// `kc` is the slice depth of `isa`'s blocked path.
pub(crate) fn gemm_transposed_b(isa: Isa, prob: &Problem<'_>, kc: usize, threads: usize) -> bool {
    let (m, n, k) = (prob.m, prob.n, prob.k);
    if !(2..=FEW_ROWS).contains(&m)
        || k < MIN_DEPTH.max(MIN_DEPTH_PER_ROW * m)
        || (n <= SMALL && k <= SMALL)
        || prob.b.rs != 1
        || prob.b.cs == 1
        || prob.c.cs != 1
        || prob.a_packer.is_some()
    {
        return false;
    }
    // The small tile of `Cᵀ`'s products (n × m over K), chosen as for any product read in
    // place: A' = Bᵀ by rows in place, B' = Aᵀ (k × m by rows), C' a buffer by rows.
    let b_in_l1 = b_slice_in_l1(isa, k, m);
    let Some(tile) = small_tile(isa, n.min(SMALL), m, b_in_l1) else {
        return false;
    };
    let handoff = HandOff::here(isa, threads);
    // At most one band per whole tile of `Cᵀ` (17 columns in tiles of 16 stay one band, not 16
    // and a helper's 1).
    let whole_tiles = n / tile.mr;
    let bands_at = |cost: f64| {
        let worth = hand_offs_worth(m, n, k, cost);
        if threads <= 1 || worth < 2 {
            1
        } else {
            threads.min(worth).min(whole_tiles).max(1)
        }
    };
    let bands = bands_at(handoff.cost());
    let band = |t: usize| band_edges(n, tile.mr, bands, t);
    if bands == 1 {
        handoff.ran_alone(threads, |awake_cost| bands_at(awake_cost) > 1);
        with_a_by_rows_transposed(prob, |at| columns(tile, prob, at, kc, (0, n)));
    } else {
        // Each band transposes A for itself rather than reading the caller's copy: the copy's
        // cache lines would move to the helper's core on every call (and back, for the
        // caller's next writes). On two threads of a Xeon VM (AVX-512), 32×784×128 with B
        // transposed ran at 82 GFLOP/s sharing the caller's copy, 131 with a copy per band
        // (medians of 7 interleaved runs).
        run_parallel(bands, threads, &|t| {
            with_a_by_rows_transposed(prob, |at| columns(tile, prob, at, kc, band(t)))
        });
    }
    true
}

/// Columns `first..end` of C for band `t` of `bands`: whole tiles of `Cᵀ` (`mr` of its rows,
/// C's columns) each, within a tile of one another, the last band taking the partial tile —
/// so every band and every chunk of [`CHUNK`] within it starts on a tile. `bands` is at least
/// 1 and at most the tiles `n.div_ceil(mr)`.
fn band_edges(n: usize, mr: usize, bands: usize, t: usize) -> (usize, usize) {
    let tiles = n.div_ceil(mr);
    let edge = |t: usize| (t * tiles / bands * mr).min(n);
    (edge(t), edge(t + 1))
}

/// Runs `f` with Aᵀ as a row-major `k × m` operand: A itself where it is stored by columns,
/// else a copy in this thread's scratch (its own kind, apart from the buffers `f` uses).
fn with_a_by_rows_transposed(prob: &Problem<'_>, f: impl FnOnce(Operand<'_>)) {
    let (m, k, a) = (prob.m, prob.k, prob.a);
    if a.rs == 1 {
        return f(Operand {
            data: a.data,
            rs: a.cs,
            cs: 1,
        });
    }
    TRANSPOSED_A.with(k * m, k * m, |at| {
        if a.cs == 1 {
            transpose_lines(|i| &a.data[i * a.rs..][..k], m, at, 0, m, k);
        } else {
            for p in 0..k {
                for i in 0..m {
                    at[p * m + i] = a.data[i * a.rs + p * a.cs];
                }
            }
        }
        f(Operand {
            data: at,
            rs: m,
            cs: 1,
        })
    })
}

/// Columns `cols.0..cols.1` of C on this thread, [`CHUNK`] at a time: `Cᵀ`'s rows formed in a
/// buffer (C's values first where beta reads them), then laid across C's rows.
fn columns(
    tile: &SmallTile,
    prob: &Problem<'_>,
    at: Operand<'_>,
    kc: usize,
    (first, end): (usize, usize),
) {
    let (m, b, c) = (prob.m, prob.b, prob.c);
    if first >= end {
        return;
    }
    debug_assert!(
        first.is_multiple_of(tile.mr),
        "a band starts on a tile of Cᵀ"
    );
    let most = CHUNK.min(end - first) * m;
    TRANSPOSED_C.with(2 * most, 2 * CHUNK * FEW_ROWS, |buf| {
        let (ct, by_rows) = buf.split_at_mut(most);
        let mut j0 = first;
        while j0 < end {
            let w = CHUNK.min(end - j0);
            let (ct, by_rows) = (&mut ct[..w * m], &mut by_rows[..w * m]);
            if prob.beta != 0.0 {
                // SAFETY: rows 0..m of C have columns j0..j0+w inside C (this band's), which
                // only this task touches.
                let row = |i: usize| unsafe {
                    std::slice::from_raw_parts(c.ptr.add(i * c.rs + j0).cast_const(), w)
                };
                transpose_lines(row, m, ct, 0, m, w);
            }
            // Cᵀ's epilogue, its per-row bias from this chunk's first column of C.
            let epilogue = prob.epilogue.map(|e| match e.transposed() {
                Epilogue {
                    bias: Bias::PerRow(bias),
                    ..
                } => Epilogue {
                    bias: Bias::PerRow(&bias[j0..j0 + w]),
                    ..e
                },
                t => t,
            });
            let sub = Problem {
                m: w,
                n: m,
                k: prob.k,
                alpha: prob.alpha,
                a: Operand {
                    data: &b.data[j0 * b.cs..],
                    rs: b.cs,
                    cs: 1,
                },
                a_packer: None,
                b: at,
                beta: prob.beta,
                c: Output {
                    ptr: ct.as_mut_ptr(),
                    rs: m,
                    cs: 1,
                },
                epilogue,
            };
            run_whole(tile, &sub, kc);
            transpose_lines(|r| &ct[r * m..][..m], w, by_rows, 0, w, m);
            for (i, src) in by_rows.chunks_exact(w).enumerate() {
                // SAFETY: row i of C has columns j0..j0+w inside C (this band's), which only
                // this task writes; `src` is this thread's scratch, apart from C.
                unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), c.ptr.add(i * c.rs + j0), w) };
            }
            j0 += w;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::activation::Activation;
    use crate::gemm::config::{kernel_config, slice_depth, small_tiles_of};
    use crate::gemm::driver::gemm_packed;
    use crate::gemm::driver::tests::{c_bits, values};

    /// C has the bits the packed path gives it, on one thread and two: row counts from 2 to
    /// FEW_ROWS, widths over one chunk and several (and a last partial one), depths of one K
    /// slice and several, A by rows, by columns and neither, beta zero (C's NaNs never read)
    /// and not, alpha not one, each kind of bias with an activation.
    #[test]
    fn the_transposed_form_keeps_the_packed_bits() {
        let mut value = values(7);
        for isa in Isa::available() {
            if small_tiles_of(isa).is_empty() {
                continue;
            }
            let kc = slice_depth(isa).expect("tiles registered");
            let shapes = [
                (2, 129, 64),
                (5, 200, 77),
                (17, 300, kc + 9),
                (FEW_ROWS, CHUNK * 2 + 37, 3 * FEW_ROWS),
                (8, CHUNK + 1, 2 * kc + 1),
                (21, 129, 64),
                (9, 100, 131),
                (FEW_ROWS, 7, kc + 1),
                // Narrow, and split on two threads whether or not the team is awake.
                (FEW_ROWS, 120, kc + 1),
            ];
            for (case, &(m, n, k)) in shapes.iter().enumerate() {
                // A by rows, by columns, or neither (every other element of a wider matrix).
                let layout = case % 3;
                let (rs, cs) = [(k, 1), (1, m), (2 * k, 2)][layout];
                let beta = if case % 2 == 0 { 0.0 } else { 0.3 };
                let a: Vec<f32> = (0..2 * m * k).map(|_| value()).collect();
                // B stored by columns: element (p, j) at p + j·ldb, ldb > k.
                let ldb = k + 3;
                let b: Vec<f32> = (0..n * ldb).map(|_| value()).collect();
                let c0: Vec<f32> = (0..m * n)
                    .map(|i| {
                        if beta == 0.0 && i % 7 == 0 {
                            f32::NAN
                        } else {
                            value()
                        }
                    })
                    .collect();
                let bias_n: Vec<f32> = (0..n).map(|_| value()).collect();
                let bias_m: Vec<f32> = (0..m).map(|_| value()).collect();
                let epilogues = [
                    None,
                    Some(Epilogue {
                        isa,
                        activation: Activation::Relu,
                        bias: Bias::PerColumn(&bias_n),
                    }),
                    Some(Epilogue {
                        isa,
                        activation: Activation::Tanh,
                        bias: Bias::PerRow(&bias_m),
                    }),
                ];
                for epilogue in epilogues {
                    let run = |transposed: bool, threads: usize| {
                        let a = Operand { data: &a, rs, cs };
                        let b = Operand {
                            data: &b,
                            rs: 1,
                            cs: ldb,
                        };
                        c_bits((m, n, k), a, b, beta, &c0, epilogue, |prob| {
                            if transposed {
                                assert!(gemm_transposed_b(isa, prob, kc, threads), "{m}×{n}×{k}");
                            } else {
                                gemm_packed(kernel_config(isa, m, n), prob, threads);
                            }
                        })
                    };
                    let packed = run(false, 1);
                    for threads in [1, 2] {
                        assert!(
                            packed == run(true, threads),
                            "{isa} {m}×{n}×{k}, A layout {layout}, beta {beta}, \
                             epilogue {}: {threads} thread(s)",
                            epilogue.is_some()
                        );
                    }
                }
            }
        }
    }

    /// Bands cover the columns in order, none empty, each starting on a tile, within a tile
    /// of one another; every small tile's rows divide [`CHUNK`], so chunks start on tiles too.
    #[test]
    fn bands_and_chunks_start_on_tiles() {
        for mr in [6, 8, 16] {
            for n in 1usize..200 {
                for bands in 1..=n.div_ceil(mr).min(5) {
                    let edges: Vec<_> = (0..bands).map(|t| band_edges(n, mr, bands, t)).collect();
                    assert_eq!(edges[0].0, 0);
                    assert_eq!(edges[bands - 1].1, n);
                    for (t, &(first, end)) in edges.iter().enumerate() {
                        assert!(first < end, "n {n}, mr {mr}, {bands} bands: band {t} empty");
                        assert_eq!(first % mr, 0, "n {n}, mr {mr}, {bands} bands");
                        if t + 1 < bands {
                            assert_eq!(end, edges[t + 1].0);
                        }
                    }
                    let tiles = |(first, end): (usize, usize)| (end - first).div_ceil(mr);
                    let most = edges.iter().map(|&e| tiles(e)).max().unwrap();
                    let least = edges.iter().map(|&e| tiles(e)).min().unwrap();
                    assert!(
                        most - least <= 1,
                        "n {n}, mr {mr}, {bands} bands: {edges:?}"
                    );
                }
            }
        }
        for isa in Isa::available() {
            for tile in small_tiles_of(isa) {
                assert_eq!(CHUNK % tile.mr, 0, "{isa}: {} rows", tile.mr);
            }
        }
    }

    /// What the transposed form takes: B by columns, a few rows (not one), larger than a small
    /// product, C by rows, A stored.
    #[test]
    fn only_few_rows_over_b_by_columns_take_the_transposed_form() {
        let Some(isa) = Isa::available()
            .into_iter()
            .find(|&isa| !small_tiles_of(isa).is_empty())
        else {
            return;
        };
        let kc = slice_depth(isa).expect("tiles registered");
        let (k, n) = (3 * FEW_ROWS, 200);
        let deep = crate::gemm::config::SMALL + 1;
        let a = vec![1.0f32; FEW_ROWS * 2 * deep];
        let b = vec![1.0f32; n * deep];
        let c0 = vec![0.0f32; FEW_ROWS * 2 * n];
        let takes = |m: usize, k: usize, (rs, cs): (usize, usize), width: usize| {
            let mut took = false;
            let a = Operand {
                data: &a,
                rs: k,
                cs: 1,
            };
            let b = Operand { data: &b, rs, cs };
            c_bits((m, width, k), a, b, 0.0, &c0[..m * width], None, |prob| {
                took = gemm_transposed_b(isa, prob, kc, 1)
            });
            took
        };
        assert!(takes(2, k, (1, k), n));
        assert!(takes(FEW_ROWS, k, (1, k), n));
        assert!(!takes(1, k, (1, k), n), "one row: the matrix-vector path's");
        assert!(
            !takes(FEW_ROWS + 1, k, (1, k), n),
            "more rows: packing B pays"
        );
        assert!(
            !takes(8, 7, (1, 7), n),
            "K below M: C is more to transpose than B"
        );
        assert!(!takes(8, k, (n, 1), n), "B by rows: read in place already");
        assert!(
            !takes(8, k, (1, k), crate::gemm::config::SMALL),
            "a small product's"
        );
        assert!(
            takes(8, deep, (1, deep), 16),
            "narrow, but deeper than a small product"
        );
    }
}
