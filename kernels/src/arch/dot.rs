//! Dot products of rows of A with columns of B, both contiguous along K (the dot form of
//! `crate::gemm::dot_form`): a block of `MR` rows × `NR` columns of C at a time, each element's
//! products summed in 16 lanes (`W` registers of `16 / LANES` lanes: one on AVX-512, two on
//! AVX2), the last `k mod 16` products in one more step over masked loads, then the lanes
//! added in the fixed tree of the matrix–vector dot form (every sum of a block at once,
//! `Vector::dot_sums`) — so an element's bits do not depend on the block it falls in, the
//! instruction set's width, or the thread that forms it.

use super::vector::Vector;
use super::{DOT_LANES, DOT_SUMS};

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
    // SAFETY: every lane read below is a row of A or a column of B at an offset below k (the
    // tail's masked loads touch no lane at or past k), `sums` holds MR rows of NR (the
    // contract); the CPU has V's instruction set.
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
        // The last k mod 16 products as one more step, over loads masked to them: the other
        // lanes add +0·+0 (a −0 there becomes +0, as in the matrix–vector form's zero-padded
        // step).
        let tail = k - steps * DOT_LANES;
        if tail > 0 {
            let p = steps * DOT_LANES;
            let masks: [V::Mask; W] =
                std::array::from_fn(|w| V::mask(tail.saturating_sub(w * V::LANES)));
            let bv: [[V; W]; NR] = std::array::from_fn(|q| {
                std::array::from_fn(|w| {
                    V::load_live(cols[q].wrapping_add(p + w * V::LANES), masks[w])
                })
            });
            for r in 0..MR {
                for w in 0..W {
                    let av = V::load_live(a_rows[r].wrapping_add(p + w * V::LANES), masks[w]);
                    for q in 0..NR {
                        acc[r][q][w] = V::fmadd(av, bv[q][w], acc[r][q][w]);
                    }
                }
            }
        }
        const { assert!(MR * NR <= DOT_SUMS) };
        let mut flat = [[V::zero(); W]; DOT_SUMS];
        for r in 0..MR {
            flat[r * NR..(r + 1) * NR].copy_from_slice(&acc[r]);
        }
        V::dot_sums(
            &flat[..MR * NR],
            std::slice::from_raw_parts_mut(sums, MR * NR),
        );
    }
}

/// The dot-form entry points of one instruction set: `dot_columns` on `$vector` inside
/// `#[target_feature($features)]` for each block shape `$mr × $nr` (named `$name`), and
/// `dot_columns_for(rows)`, the shape for a product of `rows` rows (the first whose `$mr` is
/// at most `rows`, the last otherwise) with its column count.
macro_rules! dot_kernel {
    ($vector:ty, $features:literal, $w:literal, $($name:ident: $mr:literal x $nr:literal),+) => {
        $(
            /// [`crate::arch::dot::dot_columns`] for this instruction set, `MR` =
            #[doc = concat!(stringify!($mr), ", `NR` = ", stringify!($nr), ".")]
            ///
            /// # Safety
            /// As `crate::arch::dot::dot_columns`.
            #[allow(clippy::too_many_arguments)]
            #[target_feature(enable = $features)]
            unsafe fn $name(
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
        )+

        /// The dot-form entry point for a product of `rows` rows and its columns per call.
        pub(crate) fn dot_columns_for(rows: usize) -> ($crate::arch::DotColumns, usize) {
            let shapes: &[($crate::arch::DotColumns, usize, usize)] = &[$(($name, $mr, $nr)),+];
            let &(f, _, nr) = shapes
                .iter()
                .find(|&&(_, mr, _)| mr <= rows)
                .unwrap_or(&shapes[shapes.len() - 1]);
            (f, nr)
        }
    };
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::super::reduce_lanes;
    use super::*;
    use crate::reference::Rng;
    use crate::Isa;
    use std::arch::x86_64::*;

    /// `Vector::dot_sums` on AVX-512 over `lanes` (one register per sum).
    #[target_feature(enable = "avx512f")]
    unsafe fn sums_avx512(lanes: &[[f32; DOT_LANES]], out: &mut [f32]) {
        // SAFETY: the caller checked the CPU; each row holds one register's 16 floats.
        unsafe {
            let acc: Vec<[__m512; 1]> = lanes.iter().map(|l| [__m512::load(l.as_ptr())]).collect();
            __m512::dot_sums(&acc, out);
        }
    }

    /// `Vector::dot_sums` on AVX2 over `lanes` (two registers per sum).
    #[target_feature(enable = "avx2,fma")]
    unsafe fn sums_avx2(lanes: &[[f32; DOT_LANES]], out: &mut [f32]) {
        // SAFETY: the caller checked the CPU; each row holds two registers' 8 floats.
        unsafe {
            let acc: Vec<[__m256; 2]> = lanes
                .iter()
                .map(|l| [__m256::load(l.as_ptr()), __m256::load(l.as_ptr().add(8))])
                .collect();
            __m256::dot_sums(&acc, out);
        }
    }

    /// Every count of sums from 0 to `DOT_SUMS` (and beyond one call of AVX2's eight), each
    /// sum the bits of `reduce_lanes` over its lanes — rounding, signed zeros and infinities
    /// included, NaN where it gives NaN.
    #[test]
    fn many_sums_at_once_have_the_bits_of_one_at_a_time() {
        let mut rng = Rng::new(17);
        let specials = [
            0.0,
            -0.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            1e30,
            -1e-30,
        ];
        for n in 0..=DOT_SUMS {
            for round in 0..20 {
                let lanes: Vec<[f32; DOT_LANES]> = (0..n)
                    .map(|_| {
                        std::array::from_fn(|_| {
                            let x = rng.value() * 1e3f32.powf(rng.value());
                            if round % 4 == 3 && rng.value() > 0.8 {
                                specials[(x.to_bits() % specials.len() as u32) as usize]
                            } else {
                                x
                            }
                        })
                    })
                    .collect();
                // NaN's payload is not pinned down (the compiler may swap an addition's
                // operands): any NaN stands for every NaN.
                let canonical = |x: f32| {
                    if x.is_nan() {
                        f32::NAN.to_bits()
                    } else {
                        x.to_bits()
                    }
                };
                let want: Vec<u32> = lanes.iter().map(|l| canonical(reduce_lanes(*l))).collect();
                for isa in Isa::available() {
                    let mut got = vec![f32::NAN; n];
                    match isa {
                        // SAFETY: the CPU has the instruction set (`Isa::available`).
                        Isa::Avx512 => unsafe { sums_avx512(&lanes, &mut got) },
                        // SAFETY: as above.
                        Isa::Avx2 => unsafe { sums_avx2(&lanes, &mut got) },
                        _ => continue,
                    }
                    let got: Vec<u32> = got.iter().map(|&x| canonical(x)).collect();
                    assert_eq!(got, want, "{isa} {n} sums, round {round}");
                }
            }
        }
    }
}
