//! Dot products of rows of A with columns of B, both contiguous along K (the dot form of
//! `crate::gemm::dot_form`): a block of `MR` rows × `NR` columns of C at a time, each element's
//! products summed in 16 lanes (`W` registers of `16 / LANES` lanes: one on AVX-512, two on
//! AVX2), then the lanes added in the fixed tree of the matrix–vector dot form and the last
//! `k mod 16` products one by one — so an element's bits do not depend on the block it falls
//! in, the instruction set's width, or the thread that forms it.

use super::vector::Vector;
use super::{reduce_lanes, DOT_LANES};

/// `sums[i·NR + q]` = Σₚ `a[i·lda + p]`·`b[col(q)·ldb + p]` for `i < rows` and `q < NR`,
/// where `col(q) = min(q, live − 1)` (columns past the last repeat it; their sums are the
/// caller's to drop): rows in blocks of `MR`, the rest two and one at a time.
///
/// # Safety
/// The CPU has `V`'s instruction set; `a` is readable at `i·lda + p` for `i < rows`, `p < k`;
/// `b` at `j·ldb + p` for `j < live`, `p < k`; `sums` writable for `rows·NR` floats; `live ≥
/// 1`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn dot_columns<V: Vector, const W: usize, const MR: usize, const NR: usize>(
    k: usize,
    a: *const f32,
    lda: usize,
    rows: usize,
    b: *const f32,
    ldb: usize,
    live: usize,
    sums: *mut f32,
) {
    debug_assert_eq!(W * V::LANES, DOT_LANES);
    let cols: [*const f32; NR] = std::array::from_fn(|q| b.wrapping_add(q.min(live - 1) * ldb));
    let full = rows / MR * MR;
    for i0 in (0..full).step_by(MR) {
        let a_rows = std::array::from_fn(|r| a.wrapping_add((i0 + r) * lda));
        // SAFETY: rows i0..i0 + MR of A lie within `rows`, their sums within `sums`, the
        // columns within `live` (the contract).
        unsafe { block::<V, W, MR, NR>(k, a_rows, cols, sums.add(i0 * NR)) };
    }
    let mut i = full;
    if MR > 2 && rows - i >= 2 {
        let a_rows = [a.wrapping_add(i * lda), a.wrapping_add((i + 1) * lda)];
        // SAFETY: as above, for rows i and i + 1 < rows.
        unsafe { block::<V, W, 2, NR>(k, a_rows, cols, sums.add(i * NR)) };
        i += 2;
    }
    for i in i..rows {
        // SAFETY: as above, for row i < rows.
        unsafe { block::<V, W, 1, NR>(k, [a.wrapping_add(i * lda)], cols, sums.add(i * NR)) };
    }
}

/// `sums[r·NR + q]` = row `a_rows[r]` · column `cols[q]` over `k`.
///
/// # Safety
/// As [`dot_columns`], for these rows and columns.
#[inline(always)]
unsafe fn block<V: Vector, const W: usize, const MR: usize, const NR: usize>(
    k: usize,
    a_rows: [*const f32; MR],
    cols: [*const f32; NR],
    sums: *mut f32,
) {
    let steps = k / DOT_LANES;
    // SAFETY: every pointer read below is a row of A or a column of B at an offset below k,
    // `sums` holds MR rows of NR (the contract); the CPU has V's instruction set.
    unsafe {
        let mut acc = [[[V::zero(); W]; NR]; MR];
        for step in 0..steps {
            let p = step * DOT_LANES;
            let bv: [[V; W]; NR] = std::array::from_fn(|q| {
                std::array::from_fn(|w| V::load(cols[q].add(p + w * V::LANES)))
            });
            for r in 0..MR {
                for w in 0..W {
                    let av = V::load(a_rows[r].add(p + w * V::LANES));
                    for q in 0..NR {
                        acc[r][q][w] = V::fmadd(av, bv[q][w], acc[r][q][w]);
                    }
                }
            }
        }
        for r in 0..MR {
            for q in 0..NR {
                let mut lanes = [0.0f32; DOT_LANES];
                for (w, &v) in acc[r][q].iter().enumerate() {
                    V::store(lanes.as_mut_ptr().add(w * V::LANES), v);
                }
                let mut s = reduce_lanes(lanes);
                for p in steps * DOT_LANES..k {
                    s = (*a_rows[r].add(p)).mul_add(*cols[q].add(p), s);
                }
                *sums.add(r * NR + q) = s;
            }
        }
    }
}

/// The dot-form entry point of one instruction set: `dot_columns` on `$vector` inside
/// `#[target_feature($features)]`, with the block shape that fits its registers, and that
/// shape's column count `DOT_NR`.
macro_rules! dot_kernel {
    ($vector:ty, $features:literal, $w:literal, $mr:literal, $nr:literal) => {
        /// Columns of C per call of [`dot_columns`].
        pub(crate) const DOT_NR: usize = $nr;

        /// [`crate::arch::dot::dot_columns`] for this instruction set, `MR` =
        #[doc = concat!(stringify!($mr), ", `NR` = ", stringify!($nr), ".")]
        ///
        /// # Safety
        /// As `crate::arch::dot::dot_columns`.
        #[allow(clippy::too_many_arguments)]
        #[target_feature(enable = $features)]
        pub(crate) unsafe fn dot_columns(
            k: usize,
            a: *const f32,
            lda: usize,
            rows: usize,
            b: *const f32,
            ldb: usize,
            live: usize,
            sums: *mut f32,
        ) {
            // SAFETY: the caller's contract, passed on.
            unsafe {
                $crate::arch::dot::dot_columns::<$vector, $w, $mr, $nr>(
                    k, a, lda, rows, b, ldb, live, sums,
                )
            }
        }
    };
}
