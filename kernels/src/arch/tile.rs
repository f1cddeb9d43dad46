//! The one microkernel body, generic over the SIMD register ([`Vector`]): an `MR × NV·LANES`
//! tile of accumulators; per step of k it loads `NV` vectors of B's row and broadcasts `MR`
//! values of A's column. `avx512.rs` and `avx2.rs` instantiate it inside their
//! `#[target_feature]` entry points, for A packed (`MR` values per step) or read in place
//! (element (i, p) at `a[i·rsa + p·csa]`). Edge columns use masked loads and stores, which never
//! touch masked-out lanes, so the same code reads B in place and writes partial tiles of C.

use super::vector::Vector;

/// The two entry points of one instruction set, `kernel::<MR, NV>` (packed A, a
/// [`super::KernelFn`]) and `kernel_strided_a::<MR, NV>` (A in place, a
/// [`super::StridedAKernelFn`]): [`tile`] on `$vector` inside `#[target_feature($features)]`.
macro_rules! microkernels {
    ($vector:ty, $features:literal, $name:literal) => {
        #[doc = concat!("The ", $name, " tile `MR × NV·LANES`; contract in [`crate::arch`].")]
        ///
        /// # Safety
        #[doc = concat!("As [`crate::arch::KernelFn`]; the CPU must have ", $name, ".")]
        #[allow(clippy::too_many_arguments)]
        #[target_feature(enable = $features)]
        pub(crate) unsafe fn kernel<const MR: usize, const NV: usize>(
            k: usize,
            alpha: f32,
            a: *const f32,
            b: *const f32,
            rsb: usize,
            beta: f32,
            c: *mut f32,
            rsc: usize,
            rows: usize,
            cols: usize,
        ) {
            let a_rows = std::array::from_fn(|i| i);
            // SAFETY: the packed micro-panel holds MR rows of k columns, MR apart (caller's
            // contract).
            unsafe {
                $crate::arch::tile::tile::<$vector, MR, NV, true>(
                    k,
                    alpha,
                    (a, a, a_rows, MR),
                    b,
                    rsb,
                    beta,
                    c,
                    rsc,
                    rows,
                    cols,
                )
            }
        }

        #[doc = concat!("The ", $name, " tile with A read in place: element (i, p) at ")]
        /// `a[i·rsa + p·csa]`; contract in [`crate::arch::StridedAKernelFn`].
        ///
        /// # Safety
        #[doc = concat!("As [`crate::arch::StridedAKernelFn`]; the CPU must have ", $name, ".")]
        #[allow(clippy::too_many_arguments)]
        #[target_feature(enable = $features)]
        pub(crate) unsafe fn kernel_strided_a<const MR: usize, const NV: usize>(
            k: usize,
            alpha: f32,
            (a, rsa, csa): (*const f32, usize, usize),
            b: *const f32,
            rsb: usize,
            beta: f32,
            c: *mut f32,
            rsc: usize,
            rows: usize,
            cols: usize,
        ) {
            use $crate::arch::tile::HALF;
            // A whole tile of more than HALF rows: rows HALF.. are read from a second base at the
            // same offsets as rows ..HALF, so the loop needs HALF offset registers, not MR, and
            // does not reload six of them from the stack every step (16³ went from 0.78 to
            // 0.86–0.89 of LIBXSMM's speed so, in the same runs on one Zen 5 thread).
            if MR > HALF && rows == MR {
                let a_rows = std::array::from_fn(|i| (i % HALF) * rsa);
                // SAFETY: rows 0..MR of A have k elements csa apart (caller's contract), the
                // second half's from row HALF on.
                return unsafe {
                    $crate::arch::tile::tile::<$vector, MR, NV, false>(
                        k,
                        alpha,
                        (
                            a,
                            $crate::arch::tile::opaque_ptr(a.add(HALF * rsa)),
                            a_rows,
                            csa,
                        ),
                        b,
                        rsb,
                        beta,
                        c,
                        rsc,
                        rows,
                        cols,
                    )
                };
            }
            // Rows past `rows` repeat the last one: read inside A, computed, never stored.
            let a_rows = std::array::from_fn(|i| i.min(rows - 1) * rsa);
            // SAFETY: rows 0..rows of A have k elements csa apart (caller's contract).
            unsafe {
                $crate::arch::tile::tile::<$vector, MR, NV, false>(
                    k,
                    alpha,
                    (a, a, a_rows, csa),
                    b,
                    rsb,
                    beta,
                    c,
                    rsc,
                    rows,
                    cols,
                )
            }
        }

        #[doc = concat!("The ", $name, " tile over shifted views of A, K in segments; contract in")]
        /// [`crate::arch::TapsKernelFn`].
        ///
        /// # Safety
        #[doc = concat!("As [`crate::arch::TapsKernelFn`]; the CPU must have ", $name, ".")]
        #[allow(clippy::too_many_arguments)]
        #[target_feature(enable = $features)]
        pub(crate) unsafe fn kernel_taps<const MR: usize, const NV: usize>(
            (a, a_rows, a_step): (*const f32, &[usize], usize),
            taps: &[(usize, usize)],
            tap_k: usize,
            b: *const f32,
            rsb: usize,
            beta: f32,
            c: *mut f32,
            rsc: usize,
            cols: usize,
        ) {
            let rows = a_rows.len();
            // Rows past `rows` repeat the last one: read inside A, computed, never stored.
            let offsets = std::array::from_fn(|i| a_rows[i.min(rows - 1)]);
            // SAFETY: forwarded from this function's contract.
            unsafe {
                $crate::arch::tile::taps_tile::<$vector, MR, NV>(
                    (a, offsets, a_step),
                    taps,
                    tap_k,
                    (b, rsb),
                    beta,
                    (c, rsc),
                    rows,
                    cols,
                )
            }
        }
    };
}

/// Rows of a tile with A read in place addressed from the first base; the rest from the second.
pub(crate) const HALF: usize = 8;

/// `p`, with the optimiser told nothing of where it came from. Seeing the second base as the
/// first plus HALF rows, it rewrote the rows' addresses as one chain of sixteen dependent
/// additions carried from step to step of k; given the offset itself hidden, it folded it into
/// HALF more row offsets and reloaded seven of the sixteen from the stack every step. Hiding the
/// pointer leaves two short chains restarted every step, nothing spilled.
#[inline(always)]
pub(crate) fn opaque_ptr(mut p: *const f32) -> *const f32 {
    // SAFETY: an empty instruction sequence (a comment naming the register): it reads and writes
    // nothing, whatever the compiler must assume of it.
    unsafe { std::arch::asm!("/* {0} */", inout(reg) p, options(nostack, preserves_flags)) };
    p
}

/// The shallowest K slice (the `k` a tile is called with) for which a tile of packed A
/// prefetches its C (see [`C_AHEAD_STEPS`] for when).
const PREFETCH_C_MIN_K: usize = 32;

/// How many steps of k before the end of a tile of packed A its C tile is fetched. Fetched
/// before the k loop (as it was), its lines had left L1 by the end, pushed out by the A and B
/// panels streamed through it (a 512-deep slice of the 8 × 48 tile reads 112 KiB): fetched
/// 64 steps ahead, on one thread of an AVX-512 Xeon (48 KiB L1d), medians of 5 interleaved
/// runs, 1024³ 206 → 210 GFLOP/s, 2048³ 211 → 216, 512³ 202 → 205; 16, 32 and 128 steps
/// ahead within a percent of 64.
const C_AHEAD_STEPS: usize = 64;

/// How far ahead (floats) a tile of packed A prefetches A's micro-panel, one prefetch per step:
/// the panel streams from L2, and its next lines were late on demand. 512 bytes ahead, on the
/// Xeon above with the C tile fetched ahead: 1024³ 212 → 216, 2048³ 218 → 220 GFLOP/s, 1024³
/// with B transposed 210 → 213 (medians of 7 interleaved runs).
const A_AHEAD: usize = 128;

/// The fewest accumulators a tile prefetches A with: in a step of fewer FMAs the prefetch
/// costs more than it saves (the AVX2 6 × 16 tile, 12 accumulators, forced on the same Xeon:
/// 1024³ 117 → 112 GFLOP/s, 512³ 115 → 109 with it).
const PREFETCH_A_MIN_ACCUMULATORS: usize = 24;

/// How many rows of B read in place a tile prefetches (into L1) ahead of the row it uses. B's
/// rows are a row of C apart: a stride of kilobytes, which an Intel core's L1 prefetchers do not
/// follow, so without it every row came from L2 on demand. Measured on one thread of an AVX-512
/// Xeon (48 KiB L1d, 2 MiB L2), A in place, without → with, medians of five interleaved runs:
/// 512³ 117 → 143 GFLOP/s, 128×512×784 101 → 137, 100×1000×1000 66 → 116, 32×784×128 147 →
/// 161, 32×5408×128 110 → 125; 4 rows ahead fell short on the deeper products (128×512×784
/// 114), 16 lost at 512³ (128).
///
/// At most that: the rows prefetched ahead wait in L1 beside the row in use, and rows a power
/// of two apart share a few of its sets (see [`b_ahead_rows`]).
const B_AHEAD: usize = 8;

/// How many of B's rows L1 must hold (a column of one line a row,
/// [`crate::cpu::CacheLevel::rows_held`]) for each row a tile prefetches ahead: the prefetched
/// rows, the hardware's own prefetches and A's lines share those sets, and a prefetched row
/// evicted before its step comes from L2 on demand after all (twice: its prefetch and its
/// load). Measured on one Zen 4 thread (32 KiB 8-way L1d, 64 sets), a sweep of the distance
/// (1, 2, 4, 8 rows and none; the AVX2 6 × 16 tile over one row tile of B 128 deep, one run
/// each), 8 rows → the best: rows 4 KiB apart (8 held) 38 → 64 GFLOP/s at 1 row ahead, 2 KiB
/// (16 held) 77 → 99 at 2, 1 KiB (32 held) 94 → 106 at 2–4, spread rows even at any distance;
/// the AVX-512 6 × 64 tile over rows 4 KiB apart 92 → 111 at 1–4. This rule against 8 rows
/// (medians of 5 interleaved rounds): AVX2 6×128×1024 38 → 63, 24×128×512 78 → 98, 6×128×256
/// 95 → 103; AVX-512 32×256×1024 66 → 94, 24×512×2048 90 → 106, 8×1024×4096 54 → 64; spread
/// rows, 512³ and 1024³ even. (The Xeon of [`B_AHEAD`]'s figures, 12-way, holds 24 rows 2 KiB
/// apart: 512³ now prefetches 3 rows ahead there, where 4 had fallen short of 8 on deeper
/// products with spread rows; not re-measured on it.)
const B_HELD_PER_ROW_AHEAD: usize = 8;

/// How many rows ahead of the one in use a tile prefetches B's rows, `rsb` floats apart:
/// [`B_AHEAD`], or fewer where the rows crowd into a few of L1's sets
/// ([`B_HELD_PER_ROW_AHEAD`]), and at least one.
#[inline(always)]
fn b_ahead_rows(rsb: usize) -> usize {
    let held = crate::cpu::l1d_rows_held(rsb.wrapping_mul(std::mem::size_of::<f32>()));
    (held / B_HELD_PER_ROW_AHEAD).clamp(1, B_AHEAD)
}

/// The least span of B (`k` rows `rsb` apart, in bytes) read in place for which a tile
/// prefetches B's rows: below it B sits in L1 from the tiles before, and the prefetches only
/// cost (64³ 150 → 141 GFLOP/s on the same Xeon with them). A packed B (rows `NV` vectors
/// apart, one run) is left to the hardware: prefetching it too lost 4–7 % at 1024³ and 2048³.
const B_PREFETCH_MIN_BYTES: usize = 16 << 10;

/// One tile, C ← alpha·Ã·B̃ + beta·C: A's row `i` at `a + a_rows[i]` — for A read in place and
/// `i ≥ HALF`, at `a_hi + a_rows[i]` — both bases advancing `a_step` per step of k (packed:
/// `a_hi = a`, `a_rows[i] = i`, `a_step = MR`).
///
/// # Safety
/// As [`super::KernelFn`] (packed A) or [`super::StridedAKernelFn`] (A in place), with `a_rows`
/// and `a_step` addressing A's elements inside it; the CPU has `V`'s instruction set.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(crate) unsafe fn tile<V: Vector, const MR: usize, const NV: usize, const PACKED: bool>(
    k: usize,
    alpha: f32,
    a: (*const f32, *const f32, [usize; MR], usize),
    b: *const f32,
    rsb: usize,
    beta: f32,
    c: *mut f32,
    rsc: usize,
    rows: usize,
    cols: usize,
) {
    // SAFETY: register arithmetic on a CPU with V's instruction set (caller's contract).
    let masks: [V::Mask; NV] =
        std::array::from_fn(|v| unsafe { V::mask(cols.saturating_sub(V::LANES * v)) });
    // Fetch the C tile ahead of the end of the k loop: it is read (or written) only after it,
    // and its rows are far apart, so without this each row would miss the cache at the end.
    // Every line of each row's `cols` floats, the last one too: a row need not start on a line
    // (a Vec's floats are 16-byte aligned, and so is a row at an odd stride), and then it
    // straddles one line more than its width fills — fetching that one too made 1024³ and
    // 2048³ products 9–13 % faster on one Zen 3 thread (C from plain Vecs, interleaved in one
    // process). (Not for small products, A read in place: their C is in L1 already; nor for a
    // K slice too shallow to hide the fetch, where the loop of prefetches is most of what the
    // tile does besides its few steps: a last layer's input gradient, 128×10×512 with B
    // transposed, went from 65 to 73 GFLOP/s without it on one Zen 4 thread, medians of 8
    // interleaved runs.) See [`C_AHEAD_STEPS`] for when.
    let fetch_c = || {
        for i in 0..rows {
            super::prefetch_run(c.wrapping_add(i * rsc), cols.max(1));
        }
    };
    let c_ahead = PACKED && k >= PREFETCH_C_MIN_K;
    let prefetch_b = !PACKED && rsb > NV * V::LANES && k * rsb * 4 > B_PREFETCH_MIN_BYTES;
    // Floats from the row in use to the row prefetched (only read where `prefetch_b`).
    let b_ahead = if prefetch_b {
        b_ahead_rows(rsb) * rsb
    } else {
        0
    };
    // SAFETY: forwarded from this function's contract.
    let acc = unsafe {
        let fetch_c = c_ahead.then_some(&fetch_c);
        let zero = [[V::zero(); NV]; MR];
        let b = (b, rsb, b_ahead);
        match (cols == NV * V::LANES, prefetch_b) {
            (true, false) => {
                accumulate::<V, MR, NV, true, PACKED, false, _>(k, a, b, &masks, fetch_c, zero)
            }
            (false, false) => {
                accumulate::<V, MR, NV, false, PACKED, false, _>(k, a, b, &masks, fetch_c, zero)
            }
            (true, true) => {
                accumulate::<V, MR, NV, true, PACKED, true, _>(k, a, b, &masks, fetch_c, zero)
            }
            (false, true) => {
                accumulate::<V, MR, NV, false, PACKED, true, _>(k, a, b, &masks, fetch_c, zero)
            }
        }
    };
    // SAFETY: rows 0..rows of C have the masks' live floats writable (this function's
    // contract), and the CPU has V's instruction set.
    unsafe {
        match (alpha == 1.0, beta == 0.0) {
            (true, true) => store::<V, MR, NV, true, true>(&acc, alpha, beta, c, rsc, rows, &masks),
            (true, false) => {
                store::<V, MR, NV, true, false>(&acc, alpha, beta, c, rsc, rows, &masks)
            }
            (false, true) => {
                store::<V, MR, NV, false, true>(&acc, alpha, beta, c, rsc, rows, &masks)
            }
            (false, false) => {
                store::<V, MR, NV, false, false>(&acc, alpha, beta, c, rsc, rows, &masks)
            }
        }
    }
}

/// One tile over segments of K ([`super::TapsKernelFn`]): segment `(a_off, b_off)`'s A rows at
/// `a + a_off + a_rows[i]`, stepping `a_step` a step of k, its B at `b + b_off`; the
/// accumulators carried from segment to segment and stored once. Rows of at most [`HALF`], all
/// addressed from the one base.
///
/// # Safety
/// As [`super::TapsKernelFn`], with `a_rows` the tile's MR row offsets (rows past `rows`
/// repeating a live one); the CPU has `V`'s instruction set.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(crate) unsafe fn taps_tile<V: Vector, const MR: usize, const NV: usize>(
    (a, a_rows, a_step): (*const f32, [usize; MR], usize),
    taps: &[(usize, usize)],
    tap_k: usize,
    (b, rsb): (*const f32, usize),
    beta: f32,
    (c, rsc): (*mut f32, usize),
    rows: usize,
    cols: usize,
) {
    const { assert!(MR <= HALF, "one base addresses every row") };
    // SAFETY: register arithmetic on a CPU with V's instruction set (caller's contract).
    let masks: [V::Mask; NV] =
        std::array::from_fn(|v| unsafe { V::mask(cols.saturating_sub(V::LANES * v)) });
    /// The segments in turn, every lane of B live (`FULL`) or masked.
    ///
    /// # Safety
    /// As [`taps_tile`].
    #[inline(always)]
    unsafe fn segments<V: Vector, const MR: usize, const NV: usize, const FULL: bool>(
        (a, a_rows, a_step): (*const f32, [usize; MR], usize),
        taps: &[(usize, usize)],
        tap_k: usize,
        (b, rsb): (*const f32, usize),
        masks: &[V::Mask; NV],
    ) -> [[V; NV]; MR] {
        // SAFETY: register arithmetic (caller's contract: the CPU has V's instruction set).
        let mut acc = [[unsafe { V::zero() }; NV]; MR];
        for &(a_off, b_off) in taps {
            // SAFETY: the segment's A rows are readable for tap_k steps of a_step at a + a_off
            // + a_rows[i], its B rows at b + b_off for the masks' live lanes (caller's
            // contract).
            acc = unsafe {
                let at = a.add(a_off);
                accumulate::<V, MR, NV, FULL, false, false, fn()>(
                    tap_k,
                    (at, at, a_rows, a_step),
                    (b.add(b_off), rsb, 0),
                    masks,
                    None,
                    acc,
                )
            };
        }
        acc
    }
    // SAFETY: forwarded from this function's contract.
    let acc = unsafe {
        let a = (a, a_rows, a_step);
        if cols == NV * V::LANES {
            segments::<V, MR, NV, true>(a, taps, tap_k, (b, rsb), &masks)
        } else {
            segments::<V, MR, NV, false>(a, taps, tap_k, (b, rsb), &masks)
        }
    };
    // SAFETY: rows 0..rows of C have the masks' live floats writable, and readable where beta
    // is not 0 (caller's contract).
    unsafe {
        if beta == 0.0 {
            store::<V, MR, NV, true, true>(&acc, 1.0, beta, c, rsc, rows, &masks)
        } else {
            store::<V, MR, NV, true, false>(&acc, 1.0, beta, c, rsc, rows, &masks)
        }
    }
}

/// C ← alpha·acc + beta·C over the tile's first `rows` rows, the masked lanes untouched;
/// `UNIT_ALPHA` (alpha = 1, the common case, which scales exactly: skipped) and `ZERO_BETA`
/// (C never read) fixed per tile rather than tested per row. Over all MR rows with a break,
/// not `take(rows)`: a loop of constant length indexes the accumulators by constants, so they
/// stay in registers; with the run-time count the compiler copied them all to the stack after
/// the k loop and stored C from there (on one Zen 4 thread: 1000×10×1000 57 → 66 GFLOP/s,
/// 3000×50×200 77 → 82, 48³ 93 → 101; AVX2 tiles 1000×10×1000 39 → 50). With the tests of
/// alpha and beta inside the loop, the 6 × 64 tile's (24 accumulators) was still too large to
/// unroll, and went through the stack so.
///
/// # Safety
/// Row i < rows of C has the masks' live floats writable at `c + i·rsc`; the CPU has V's
/// instruction set.
#[inline(always)]
unsafe fn store<
    V: Vector,
    const MR: usize,
    const NV: usize,
    const UNIT_ALPHA: bool,
    const ZERO_BETA: bool,
>(
    acc: &[[V; NV]; MR],
    alpha: f32,
    beta: f32,
    c: *mut f32,
    rsc: usize,
    rows: usize,
    masks: &[V::Mask; NV],
) {
    // SAFETY: register arithmetic on a CPU with V's instruction set (caller's contract).
    let (valpha, vbeta) = unsafe { (V::splat(&alpha), V::splat(&beta)) };
    for (i, acc_i) in acc.iter().enumerate() {
        if i >= rows {
            break;
        }
        // SAFETY: row i < rows has the masks' live floats writable at c + i·rsc (caller's
        // contract); the masks keep every access inside them.
        unsafe {
            let row = c.add(i * rsc);
            for (v, &acc_iv) in acc_i.iter().enumerate() {
                let p = row.add(V::LANES * v);
                let scaled = if UNIT_ALPHA {
                    acc_iv
                } else {
                    V::mul(valpha, acc_iv)
                };
                let out = if ZERO_BETA {
                    scaled
                } else {
                    V::fmadd(vbeta, V::load_live(p, masks[v]), scaled)
                };
                V::store_live(p, masks[v], out);
            }
        }
    }
}

/// The k loop: Σₚ A[i][p]·B[p][..] added to the MR × NV accumulators `acc`. With `FULL` every
/// lane of B is live and plain loads are used; otherwise masked ones (chosen once per tile, not
/// per step).
/// `fetch_c` (packed A only) runs [`C_AHEAD_STEPS`] steps before the end, or first where the
/// loop is shorter. B's rows are `rsb` floats apart; with `PREFETCH_B` each step prefetches the
/// row `b_ahead` floats on.
///
/// # Safety
/// As [`tile`]'s contract for `a` and `b`.
#[inline(always)]
unsafe fn accumulate<
    V: Vector,
    const MR: usize,
    const NV: usize,
    const FULL: bool,
    const PACKED: bool,
    const PREFETCH_B: bool,
    FetchC: Fn(),
>(
    k: usize,
    (a, a_hi, a_rows, a_step): (*const f32, *const f32, [usize; MR], usize),
    (b, rsb, b_ahead): (*const f32, usize, usize),
    masks: &[V::Mask; NV],
    fetch_c: Option<&FetchC>,
    mut acc: [[V; NV]; MR],
) -> [[V; NV]; MR] {
    let (mut a, mut a_hi, mut b) = (a, a_hi, b);
    // One step of k: NV vectors of B's row, MR broadcasts of A's column, MR·NV FMAs; A's
    // pointers advance `$a_step` floats.
    macro_rules! step {
        ($a_step:expr) => {
            // SAFETY: row p of B has `cols` readable floats at `b` (masked lanes are not
            // accessed; with FULL all of them are live) and A's column p is readable at
            // `a + a_rows[i]` (caller's contract).
            unsafe {
                let bv: [V; NV] = std::array::from_fn(|v| {
                    if FULL {
                        V::load(b.add(V::LANES * v))
                    } else {
                        V::load_live(b.add(V::LANES * v), masks[v])
                    }
                });
                for (i, (acc_i, &row)) in acc.iter_mut().zip(&a_rows).enumerate() {
                    let base = if !PACKED && i >= HALF { a_hi } else { a };
                    let ai = V::splat(base.add(row));
                    for (acc_iv, &bv) in acc_i.iter_mut().zip(&bv) {
                        *acc_iv = V::fmadd(ai, bv, *acc_iv);
                    }
                }
                // (Advanced with `wrapping_add`: after the last step they point past the rows
                // read, maybe past the allocation, where `add` would be undefined.)
                a = a.wrapping_add($a_step);
                if !PACKED && MR > HALF {
                    a_hi = a_hi.wrapping_add($a_step);
                }
                if PREFETCH_B {
                    super::prefetch_run(b.wrapping_add(b_ahead), NV * V::LANES);
                }
                if PACKED && MR * NV >= PREFETCH_A_MIN_ACCUMULATORS {
                    super::prefetch_line(a.wrapping_add(A_AHEAD));
                }
                b = b.wrapping_add(rsb);
            }
        };
    }
    // A read in place along its rows (`a_step` = 1) unrolls with the step a constant: the
    // four steps' broadcasts differ in displacement only, no register more. Only where a second
    // step's B loads fit beside the accumulators: on one Xeon thread (AVX-512, 8 × 32, 8 × 16
    // and 16 × 16 tiles), medians of 9 interleaved runs, 16³ 74 → 78 GFLOP/s, 32³ 125 → 129,
    // 24×37×50 101 → 103, 64³ even; the AVX2 6 × 16 tile (12 accumulators of 16 registers) lost
    // 7 % at 24×37×50 unrolled.
    let unroll_in_place = MR * NV + 2 * NV < V::REGISTERS;
    // Unrolled by four: the loop's own instructions (count, compare, branch) once per four
    // steps. (A read in place with a run-time step is not: its MR row offsets already take the
    // general registers, and unrolled the loop spills them: 32³ ran 25 % slower so.)
    macro_rules! four_steps {
        ($a_step:expr, $n:expr) => {
            for _ in 0..$n {
                step!($a_step);
                step!($a_step);
                step!($a_step);
                step!($a_step);
            }
        };
    }
    macro_rules! unrolled {
        ($a_step:expr) => {{
            four_steps!($a_step, k / 4);
            for _ in 0..k % 4 {
                step!($a_step);
            }
        }};
    }
    if PACKED {
        let before_c = (k / 4).saturating_sub(C_AHEAD_STEPS / 4);
        four_steps!(a_step, before_c);
        if let Some(fetch_c) = fetch_c {
            fetch_c();
        }
        four_steps!(a_step, k / 4 - before_c);
        for _ in 0..k % 4 {
            step!(a_step);
        }
    } else if a_step == 1 && unroll_in_place {
        unrolled!(1);
    } else {
        for _ in 0..k {
            step!(a_step);
        }
    }
    acc
}
