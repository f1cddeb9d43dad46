//! Products of a few rows whose B is stored by columns (`A·Bᵀ` of two row-major matrices: a
//! linear layer's forward pass over a few samples with PyTorch's output × input weights, a
//! Dense layer's input gradient `g·Wᵀ` at a small batch), and their transposes, products of a
//! few columns whose A is stored by rows (a Dense layer of a few units over a wide input), as
//! dot products: every element of C is the dot product of a row of A and a column of B, the
//! many side read in place along K and the few side copied to rows where it is not stored so,
//! so the products are formed across K in vectors of 16 lanes, nothing packed.
//!
//! The tiles vectorise across C's columns instead; for these layouts that means a copy of B
//! into panels (the packed path) or of A and C transposed (`super::transposed_b`), for the few
//! multiply-adds each element of B takes part in, and a tile of `Cᵀ` only as wide as C has rows.
//! Measured on one Xeon VM (AVX-512), transposed form → dot form, medians of 5 interleaved
//! runs in one session, one thread: 4×784×128 with B transposed 21 → 65 GFLOP/s, 2×1000×500
//! 12 → 36, 3×250×250 18 → 45, 4×256×500 19 → 49, 2×144×300 12 → 36, 3×2000×64 17 → 55,
//! 3×300×300 17 → 57 (OpenBLAS on the same shapes 60, 29, 36, 17, 40, 32, 48); two threads
//! 31 → 88, 17 → 75, 21 → 57, 46 → 99, 8 → 27, 23 → 82, 22 → 77, 4×1024×3000 30 → 77
//! (OpenBLAS 61, 31, 41, 20, 31, 36, 42, 17); the AVX2 kernels forced there, one thread
//! 22 → 43, 13 → 33, 19 → 36, 22 → 41, 10 → 18, 15 → 34, 14 → 27, two threads 28 → 47,
//! 15 → 50, 24 → 39, 28 → 41, 9 → 25, 20 → 46, 32 → 61. Products of 2–4 columns, against the
//! tiles (whose 16-wide edge tile had 2–4 useful lanes), one thread: 250×250×3 27 → 60,
//! 1000×500×2 16 → 48, 784×784×3 24 → 49, 32×784×2 17 → 59, 64×512×4 37 → 87 (OpenBLAS 44, 45,
//! 14, 39, 94); two threads 25 → 59, 25 → 80, 32 → 102, 10 → 33, 20 → 47 (OpenBLAS 40, 41, 22,
//! 43, 57). Ablations, one thread, each in its own run: a row block holds all of a product's
//! rows (4 × 4, 3 × 5 and 2 × 8 on AVX-512, so B's columns are read once: 3×250×250 30 → 38, 3×2000×64 47 → 71 against 2 + 1 rows of 4 columns), the lanes of a block are
//! summed together (`Vector::dot_sums`: 4×256×500 57 → 84, 2×144×300 29 → 46 against one sum
//! at a time) and the K tail is one more masked step (3×250×250 35 → 45, 3×300×300 40 → 68
//! against the tail's products one by one after the lanes).
//! An earlier variant (same VM, its own run), which took up to 8 rows and K from 64 and summed
//! each element's lanes alone, showed where the tiles' paths are as fast or faster: AVX-512
//! 5×300×400 23 → 22, 8×192×500 34 → 30; AVX2 8×784×128 44 → 36, 6×128×500 25 → 18; below
//! K = 128 the lanes' final sums weighed too much (8×100×300 31 → 16). So the dot form takes 2
//! to [`DOT_ROWS`] rows or columns over a K above 128 ([`takes`]), where the small products'
//! path, whose choice depends on a measured price, never competes.
//!
//! The sums are the matrix–vector dot form's (`super::gemv`): lane `l` sums the products at
//! `p ≡ l (mod 16)` in increasing `p` (the last `k mod 16` products too, as one more step
//! padded with zeros), the lanes are added in a fixed tree, then `alpha·sum + beta·C` in one
//! rounding. So an element has the same bits wherever it lies in C, on any thread count and
//! either instruction set, and in a one-row product (of 2–4 columns, or with B by columns: the
//! matrix–vector path's dot form); not the bits the tiles give it in a product of more rows
//! and columns.

use super::config::SMALL;
use super::in_place::hand_offs_worth;
use super::price::HandOff;
use super::problem::{Operand, Output, Problem};
use crate::arch::DOT_SUMS;
use crate::dispatch::per_isa;
use crate::scratch::ALIGNED_A;
use crate::team::run_parallel;
use crate::Isa;

/// Most rows of C taken as dot products.
pub(crate) const DOT_ROWS: usize = 4;

/// One instruction set's dot-form entry point for a product's rows (see
/// `crate::arch::dot::dot_columns`) and its columns per call.
type DotColumns = (crate::arch::DotColumns, usize);

/// `isa`'s dot-form kernel for a product of `rows` rows, where it has one (AVX-512 and AVX2).
fn dot_kernel(isa: Isa, rows: usize) -> Option<DotColumns> {
    let _ = rows;
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => Some(crate::arch::avx512::dot_columns_for(rows)),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => Some(crate::arch::avx2::dot_columns_for(rows)),
        _ => None,
    }
}

/// Whether an `m × k · k × n` product takes the dot form on `isa`, by its shape and layout
/// alone: K above [`SMALL`] (so the small products' path, whose choice depends on the
/// hand-off's measured price, never competes), `isa` with a dot-form kernel, and either 2 to
/// [`DOT_ROWS`] rows and at least 2 columns of C with B by columns (`b_rs` = 1; A copied to
/// rows where it is not stored so), or 2 to [`DOT_ROWS`] columns of C with A by rows (`a_cs`
/// = 1; formed as Cᵀ = Bᵀ·Aᵀ, B's few columns copied to rows where they are not stored so).
/// The two are each other's transposes, so a product and its transpose (a column-major C) go
/// alike, but for one row of 2–4 columns written into a column-major C (left to the
/// matrix–vector path there); and
/// each element is the dot form's sum of its row of A and column of B either way, so which of
/// the two takes a product changes no bits. The fused optimizer step asks it too, to form its
/// input gradient with the same bits.
pub(crate) fn takes(isa: Isa, (m, k, n): (usize, usize, usize), a_cs: usize, b_rs: usize) -> bool {
    // Not one column: a one-column product is the matrix–vector path's, whose axpy form (A not
    // by rows) sums otherwise; the fused optimizer step's blocks of 2–4 rows of a one-unit
    // layer's weight gradient must sum as the whole does.
    let few_rows = (2..=DOT_ROWS).contains(&m) && n >= 2 && b_rs == 1;
    let few_columns = (2..=DOT_ROWS).contains(&n) && a_cs == 1;
    (few_rows || few_columns) && k > SMALL && dot_kernel(isa, DOT_ROWS).is_some()
}

/// `C ← alpha·A·B + beta·C` as dot products where [`takes`] says so and A is stored (not
/// packed on the fly); `false` (nothing done) otherwise. The epilogue, if any, is the
/// caller's to apply.
pub(crate) fn try_dot_form(isa: Isa, prob: &Problem<'_>, threads: usize) -> bool {
    let (m, n, k) = (prob.m, prob.n, prob.k);
    if !takes(isa, (m, k, n), prob.a.cs, prob.b.rs) || prob.a_packer.is_some() {
        return false;
    }
    if (2..=DOT_ROWS).contains(&m) && prob.b.rs == 1 {
        return rows_of_a(isa, prob, threads);
    }
    // Few columns: Cᵀ = Bᵀ·Aᵀ, whose rows are B's columns and whose B is A by columns.
    let transposed = Problem {
        m: n,
        n: m,
        k,
        alpha: prob.alpha,
        a: Operand {
            data: prob.b.data,
            rs: prob.b.cs,
            cs: prob.b.rs,
        },
        a_packer: None,
        b: Operand {
            data: prob.a.data,
            rs: prob.a.cs,
            cs: prob.a.rs,
        },
        beta: prob.beta,
        c: Output {
            ptr: prob.c.ptr,
            rs: prob.c.cs,
            cs: prob.c.rs,
        },
        epilogue: None,
    };
    rows_of_a(isa, &transposed, threads)
}

/// [`try_dot_form`] on a product of 2 to [`DOT_ROWS`] rows whose B is stored by columns (A
/// stored by rows or not: it is copied to rows where it is not).
fn rows_of_a(isa: Isa, prob: &Problem<'_>, threads: usize) -> bool {
    let (m, n, k) = (prob.m, prob.n, prob.k);
    let Some(kernel) = dot_kernel(isa, m) else {
        return false;
    };
    let nr = kernel.1;
    let handoff = HandOff::here(isa, threads);
    let blocks = n.div_ceil(nr);
    let tasks_at = |cost: f64| {
        let worth = hand_offs_worth(m, n, k, cost);
        if threads <= 1 || worth < 2 {
            1
        } else {
            threads.min(worth).min(blocks)
        }
    };
    let tasks = tasks_at(handoff.cost());
    // Columns in whole blocks, within a block of one another.
    let edge = |t: usize| (t * blocks / tasks * nr).min(n);
    let c = prob.c;
    let run = |t: usize| {
        // The whole `Output` (the shared handle on C) is taken into the closure, not its
        // pointer field alone.
        let c: Output = c;
        // SAFETY: columns edge(t)..edge(t + 1) of C belong to this task alone, and the view
        // of C was checked, so every element they hold lies inside C's buffer; the kernel is
        // `isa`'s, which the caller checked the CPU has.
        unsafe { columns(isa, kernel, prob, c, edge(t)..edge(t + 1)) }
    };
    if tasks == 1 {
        handoff.ran_alone(threads, |awake_cost| tasks_at(awake_cost) > 1);
        run(0);
    } else {
        run_parallel(tasks, threads, &run);
    }
    true
}

/// Columns `cols` of C, every row, `kernel.1` at a time, over A's rows where each is stored
/// so and starts on a cache line, else over a copy of them that does (each task its own: a
/// copy that one thread made and another read had cost the transposed form's bands more than
/// copying twice): the vector loads of A straddle two lines otherwise. On one Xeon VM
/// (AVX-512), medians of 5 interleaved runs, 4×784×128 with B transposed (A's rows 16 bytes
/// off a line) ran at 49 GFLOP/s in place and 58 over the copy on one thread, 66 and 78 on
/// two; 3×2000×64 32 and 36, 51 and 56.
///
/// # Safety
/// Every element of C in `cols` lies inside C's buffer and no other thread touches them;
/// `kernel` is `isa`'s, which the CPU has.
unsafe fn columns(
    isa: Isa,
    kernel: DotColumns,
    prob: &Problem<'_>,
    c: Output,
    cols: std::ops::Range<usize>,
) {
    let (m, k, a) = (prob.m, prob.k, prob.a);
    const LINE_FLOATS: usize = 16;
    if a.cs == 1 && a.data.as_ptr().addr() % (4 * LINE_FLOATS) == 0 && a.rs % LINE_FLOATS == 0 {
        // SAFETY: the caller's contract; A's rows are its checked view's.
        return unsafe { columns_over(kernel, prob, (a.data, a.rs), c, cols) };
    }
    let ld = k.next_multiple_of(LINE_FLOATS);
    ALIGNED_A.with(m * ld, m * ld, |copy| {
        if a.cs >= m && a.rs == 1 {
            // A few columns of a B stored by rows (the few-columns case): B's rows read in
            // order, each spread over the copy's rows.
            // SAFETY: the CPU has `isa` (the caller's contract).
            unsafe { spread::run(isa, a, k, copy, ld, m) }
        } else {
            for (i, row) in copy.chunks_exact_mut(ld).enumerate() {
                if a.cs == 1 {
                    row[..k].copy_from_slice(&a.data[i * a.rs..][..k]);
                } else {
                    for (p, x) in row[..k].iter_mut().enumerate() {
                        *x = a.data[i * a.rs + p * a.cs];
                    }
                }
            }
        }
        // SAFETY: the caller's contract; `copy` holds A's m rows of k, `ld` apart.
        unsafe { columns_over(kernel, prob, (copy, ld), c, cols) }
    })
}

/// Copies the `m` rows of `a` (unit row stride: element `(i, p)` at `p·cs + i`, `cs` ≥ `m`)
/// to `copy`'s rows, `ld` apart, compiled for the instruction set. Where B's rows hold just its
/// `m` columns (`cs` = `m`) one pass reads them in order and writes all `m` rows of the copy:
/// its loads are one interleaved group, which the compiler reads in whole vectors and shuffles
/// apart. The copy of 32×784×2's two columns had taken 38 % of its time element by element,
/// and 23 % a row of the copy at a time (every `m`-th float, by gathers).
#[inline(always)]
fn spread_rows(a: Operand<'_>, k: usize, copy: &mut [f32], ld: usize, m: usize) {
    debug_assert!(a.rs == 1 && (2..=4).contains(&m));
    let mut rows = copy.chunks_exact_mut(ld).map(|row| &mut row[..k]);
    let mut row = || rows.next().expect("the copy holds m rows");
    if a.cs == m {
        match m {
            2 => {
                let (r0, r1) = (row(), row());
                let columns = &a.data.as_chunks::<2>().0[..k];
                for ((x0, x1), c) in r0.iter_mut().zip(r1).zip(columns) {
                    (*x0, *x1) = (c[0], c[1]);
                }
            }
            3 => {
                let (r0, r1, r2) = (row(), row(), row());
                let columns = &a.data.as_chunks::<3>().0[..k];
                for (((x0, x1), x2), c) in r0.iter_mut().zip(r1).zip(r2).zip(columns) {
                    (*x0, *x1, *x2) = (c[0], c[1], c[2]);
                }
            }
            // 4 (`takes` keeps m in 2..=4).
            _ => {
                let (r0, r1, r2, r3) = (row(), row(), row(), row());
                let columns = &a.data.as_chunks::<4>().0[..k];
                for ((((x0, x1), x2), x3), c) in r0.iter_mut().zip(r1).zip(r2).zip(r3).zip(columns)
                {
                    (*x0, *x1, *x2, *x3) = (c[0], c[1], c[2], c[3]);
                }
            }
        }
    } else {
        for i in 0..m {
            for (x, column) in row().iter_mut().zip(a.data.chunks(a.cs)) {
                *x = column[i];
            }
        }
    }
}

per_isa!(
    spread,
    spread_rows,
    spread_rows,
    (a: Operand<'_>, k: usize, copy: &mut [f32], ld: usize, m: usize)
);

/// [`columns`] over A's rows `(data, lda)`.
///
/// # Safety
/// As [`columns`]; `data` holds `prob.m` rows of `prob.k` floats, `lda` apart.
unsafe fn columns_over(
    (kernel, nr): DotColumns,
    prob: &Problem<'_>,
    (a, lda): (&[f32], usize),
    c: Output,
    cols: std::ops::Range<usize>,
) {
    let (m, k, b) = (prob.m, prob.k, prob.b);
    // Every block shape's sums fit (the kernels hold at most DOT_SUMS; `takes` keeps m ≤ 4).
    assert!(m * nr <= DOT_SUMS);
    let mut sums = [0.0f32; DOT_SUMS];
    for j0 in cols.clone().step_by(nr) {
        let live = nr.min(cols.end - j0);
        // SAFETY: A's m rows of k floats (the contract) and B's columns j0..j0+live (inside
        // this task's columns: elements of B's checked view, k floats each along its unit
        // stride); `sums` holds DOT_SUMS ≥ m·nr (every block shape's); the CPU has the kernel's
        // instruction set.
        unsafe {
            kernel(
                k,
                a.as_ptr(),
                lda,
                m,
                b.data.as_ptr().add(j0 * b.cs),
                b.cs,
                live,
                sums.as_mut_ptr(),
            )
        };
        for i in 0..m {
            for q in 0..live {
                let s = sums[i * nr + q];
                // SAFETY: (i, j0 + q) lies in C and in this task's columns (the contract).
                let dst = unsafe { &mut *c.ptr.add(i * c.rs + (j0 + q) * c.cs) };
                let scaled = prob.alpha * s;
                // Alpha, then beta·C added in one rounding, as the SIMD tiles and the
                // matrix–vector path do.
                *dst = if prob.beta == 0.0 {
                    scaled
                } else {
                    prob.beta.mul_add(*dst, scaled)
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gemm::driver::tests::values;
    use crate::gemm::gemv::try_gemv;
    use crate::gemm::problem::Operand;
    use crate::mat::{MatMut, MatRef};
    use crate::Threading;

    /// The bits of `c`, for comparisons that NaN and signed zeros do not fool.
    fn bits(c: &[f32]) -> Vec<u32> {
        c.iter().map(|x| x.to_bits()).collect()
    }

    /// C before a product: `len` values, every third a NaN where beta = 0 (which must not read
    /// C).
    fn c_before(len: usize, beta: f32, value: &mut impl FnMut() -> f32) -> Vec<f32> {
        (0..len)
            .map(|i| {
                if beta == 0.0 && i % 3 == 0 {
                    f32::NAN
                } else {
                    value()
                }
            })
            .collect()
    }

    /// One product `C ← −0.75·A·B + beta·C` over rows `rows` of A (rows `lda` apart, B's
    /// columns `ldb` apart), C row-major from those rows of `c0`, by `path`; C after it.
    #[allow(clippy::too_many_arguments)]
    fn product(
        (n, k): (usize, usize),
        (a, lda): (&[f32], usize),
        (b, ldb): (&[f32], usize),
        beta: f32,
        c0: &[f32],
        rows: std::ops::Range<usize>,
        path: impl FnOnce(&Problem<'_>) -> bool,
    ) -> Option<Vec<f32>> {
        let mut c = c0[rows.start * n..rows.end * n].to_vec();
        let prob = Problem {
            m: rows.len(),
            n,
            k,
            alpha: -0.75,
            a: Operand {
                data: &a[rows.start * lda..],
                rs: lda,
                cs: 1,
            },
            a_packer: None,
            b: Operand {
                data: b,
                rs: 1,
                cs: ldb,
            },
            beta,
            c: Output {
                ptr: c.as_mut_ptr(),
                rs: n,
                cs: 1,
            },
            epilogue: None,
        };
        path(&prob).then_some(c)
    }

    /// Every element of `ours` (`C ← −0.75·A·B + beta·C` from `c0`, row-major) within the f64
    /// reference's error bound; beta = 0 never reads C, so the reference gets zeros there
    /// (where `c0` may hold NaNs).
    fn within_the_reference(
        what: &str,
        ours: &[f32],
        (av, bv): (MatRef<'_>, MatRef<'_>),
        beta: f32,
        c0: &[f32],
    ) {
        let c_read: Vec<f32> = if beta == 0.0 {
            vec![0.0; c0.len()]
        } else {
            c0.to_vec()
        };
        crate::gemm::driver::tests::within_the_reference(
            what,
            ours,
            -0.75,
            (av, bv),
            beta,
            &c_read,
        );
    }

    /// On both instruction sets with a dot-form kernel: every element within the f64
    /// reference's error bound, over 2–4 rows, widths that fill a block of columns and not, K
    /// with and without a tail past the lanes, A's rows and B's columns padded (their vector
    /// loads then straddle cache lines, and A is copied to aligned rows), beta zero over NaNs
    /// and not; two threads give the bits of one, and each row of C the bits of the one-row
    /// product of the matrix–vector path.
    #[test]
    fn the_dot_form_matches_the_reference_and_the_one_row_products() {
        let mut value = values(5);
        for isa in Isa::available() {
            if dot_kernel(isa, 2).is_none() {
                continue;
            }
            for (m, n, k) in [
                (2, 2, 129),
                (3, 5, 131),
                (4, 17, 300),
                (3, 9, 143),
                (2, 19, 200),
                (4, 301, 1000),
            ] {
                for (pad_a, pad_b, beta) in [(0, 0, 0.0), (3, 5, 0.5), (1, 0, 0.0), (0, 7, -1.25)] {
                    let (lda, ldb) = (k + pad_a, k + pad_b);
                    let a: Vec<f32> = (0..m * lda).map(|_| value()).collect();
                    let b: Vec<f32> = (0..n * ldb).map(|_| value()).collect();
                    let c0 = c_before(m * n, beta, &mut value);
                    let what = format!("{isa} {m}×{n}×{k}, lda {lda}, ldb {ldb}, beta {beta}");
                    let run = |rows: std::ops::Range<usize>, threads: usize| {
                        let one_row = rows.len() == 1;
                        product((n, k), (&a, lda), (&b, ldb), beta, &c0, rows, |prob| {
                            if one_row {
                                try_gemv(isa, prob, threads)
                            } else {
                                try_dot_form(isa, prob, threads)
                            }
                        })
                        .unwrap_or_else(|| panic!("{what}: the path declined"))
                    };
                    let ours = run(0..m, 1);

                    let av = MatRef::row_major(&a, m, k, lda);
                    let bv = MatRef::row_major(&b, n, k, ldb).t();
                    within_the_reference(&what, &ours, (av, bv), beta, &c0);

                    assert_eq!(bits(&run(0..m, 2)), bits(&ours), "{what}: two threads");
                    for i in 0..m {
                        assert_eq!(
                            bits(&run(i..i + 1, 1)),
                            bits(&ours[i * n..(i + 1) * n]),
                            "{what}: row {i} alone"
                        );
                    }
                }
            }
        }
    }

    /// Products that underflow below the smallest float leave −0 in a lane (a negative product
    /// added to +0 in one rounding); the K tail's masked step and the matrix–vector path's
    /// zero-padded one agree on it, and on infinities and NaN: each row has the bits of its
    /// one-row product, for a K with a tail and one without.
    #[test]
    fn signed_zeros_and_specials_keep_the_bits_of_the_one_row_products() {
        for isa in Isa::available() {
            if dot_kernel(isa, 2).is_none() {
                continue;
            }
            for k in [129, 135, 144, 159] {
                let (m, n) = (3, 5);
                let mut a = vec![-1e-30f32; m * k];
                let b = vec![1e-30f32; n * k];
                // Row 1 holds an infinity in the tail, row 2 a NaN in the first step.
                a[k + k - 1] = f32::INFINITY;
                a[2 * k + 3] = f32::NAN;
                let c0 = vec![1.0f32; m * n];
                let run = |rows: std::ops::Range<usize>| {
                    let one_row = rows.len() == 1;
                    product((n, k), (&a, k), (&b, k), 0.0, &c0, rows, |prob| {
                        if one_row {
                            try_gemv(isa, prob, 1)
                        } else {
                            try_dot_form(isa, prob, 1)
                        }
                    })
                    .unwrap()
                };
                let whole = run(0..m);
                // Row 0's lanes hold −0 each; a tail's padded step turns the unused lanes'
                // into +0, and −0 + +0 = +0. Then C = −0.75·sum: +0 without a tail, −0 with.
                let want = if k % 16 == 0 { 0 } else { 0x8000_0000 };
                assert!(
                    whole[..n].iter().all(|x| x.to_bits() == want),
                    "{isa} k {k}: {:?}",
                    &whole[..n]
                );
                for i in 0..m {
                    assert_eq!(
                        bits(&run(i..i + 1)),
                        bits(&whole[i * n..(i + 1) * n]),
                        "{isa} k {k}: row {i}"
                    );
                }
            }
        }
    }

    /// What the dot form takes: K above SMALL, an instruction set with a dot-form kernel, and
    /// 2 to DOT_ROWS rows (at least 2 columns) with B by columns, or 2 to DOT_ROWS columns with
    /// A by rows.
    #[test]
    fn only_a_few_rows_over_a_deep_k_take_the_dot_form() {
        let Some(isa) = Isa::available()
            .into_iter()
            .find(|&i| dot_kernel(i, 2).is_some())
        else {
            return;
        };
        let (n, k) = (8, SMALL + 5);
        let a = vec![1.0f32; (DOT_ROWS + 1) * k];
        let b = vec![1.0f32; n * k];
        let c0 = vec![0.0f32; (DOT_ROWS + 1) * n];
        let takes_it = |m: usize, k: usize, a_rs: usize, (b_rs, b_cs): (usize, usize)| {
            let mut c = c0[..m * n].to_vec();
            let prob = Problem {
                m,
                n,
                k,
                alpha: 1.0,
                a: Operand {
                    data: &a,
                    rs: a_rs,
                    cs: 1,
                },
                a_packer: None,
                b: Operand {
                    data: &b,
                    rs: b_rs,
                    cs: b_cs,
                },
                beta: 0.0,
                c: Output {
                    ptr: c.as_mut_ptr(),
                    rs: n,
                    cs: 1,
                },
                epilogue: None,
            };
            try_dot_form(isa, &prob, 1)
        };
        let by_columns = (1, k);
        assert!(takes_it(2, k, k, by_columns));
        assert!(takes_it(DOT_ROWS, k, k, by_columns));
        assert!(
            !takes_it(1, k, k, by_columns),
            "one row: the matrix-vector path's"
        );
        assert!(
            !takes_it(DOT_ROWS + 1, k, k, by_columns),
            "more rows: the tiles'"
        );
        assert!(!takes_it(2, SMALL, k, by_columns), "a short K: the tiles'");
        assert!(!takes_it(2, k, k, (n, 1)), "B by rows: the tiles'");
        assert!(dot_kernel(Isa::Scalar, 2).is_none());
        // 2 to DOT_ROWS columns with A by rows: any rows, any B.
        for (m, n, b_rs) in [(1, 2, 2), (100, 4, 4), (3, 3, 1), (5000, 2, 7)] {
            assert!(takes(isa, (m, k, n), 1, b_rs), "{m}×{k}×{n}");
        }
        assert!(takes(isa, (3, k, 2), 7, 1), "few rows: any A");
        assert!(
            !takes(isa, (3, k, 1), 7, 1),
            "one column: the matrix-vector path's"
        );
        assert!(!takes(isa, (100, k, DOT_ROWS + 1), 1, 5), "more columns");
        assert!(
            !takes(isa, (100, k, 1), 1, 1),
            "one column: the matrix-vector path's"
        );
        assert!(!takes(isa, (100, k, 4), 100, 4), "A by columns");
        assert!(!takes(isa, (100, SMALL, 4), 1, 4), "a short K");
        assert!(!takes(Isa::Scalar, (100, k, 4), 1, 4));
    }

    /// B's few columns with strides the API accepts but the copy's fast path does not take: a
    /// column stride of 0 (every column the same) and columns overlapping (stride 1 with rows
    /// 2 apart), against the f64 reference.
    #[test]
    fn a_few_columns_with_odd_strides() {
        use crate::{gemm_with, ExecOptions};
        let mut value = values(23);
        let (m, k, n) = (9, 200, 3);
        let a: Vec<f32> = (0..m * k).map(|_| value()).collect();
        let b: Vec<f32> = (0..2 * k + n).map(|_| value()).collect();
        for isa in Isa::available() {
            for (rs, cs) in [(1, 0), (2, 1), (0, 1)] {
                let bv = MatRef::strided(&b, k, n, rs, cs);
                let av = MatRef::row_major(&a, m, k, k);
                let c0 = vec![0.5f32; m * n];
                let mut ours = c0.clone();
                gemm_with(
                    &ExecOptions::with_isa(isa),
                    -0.75,
                    av,
                    bv,
                    1.0,
                    MatMut::row_major(&mut ours, m, n, n),
                )
                .unwrap();
                within_the_reference(
                    &format!("{isa} B strides {rs}, {cs}"),
                    &ours,
                    (av, bv),
                    1.0,
                    &c0,
                );
            }
        }
    }

    /// A product of 2 to DOT_ROWS columns with A by rows and B stored either way, C by rows or
    /// by columns, padded strides, beta zero over NaNs and not: every element within the f64
    /// reference's error bound; two threads give the bits of one; every row the bits of its
    /// one-row product and every element those of its single dot product (the matrix–vector
    /// path's), on both instruction sets with a dot-form kernel.
    #[test]
    fn a_few_columns_are_dot_products_too() {
        use crate::{gemm_with, ExecOptions};
        let mut value = values(11);
        for isa in Isa::available() {
            if dot_kernel(isa, 2).is_none() {
                continue;
            }
            for (m, k, n) in [
                (1, 129, 2),
                (7, 300, 3),
                (33, 1000, 4),
                (300, 200, 2),
                (5, 131, 4),
            ] {
                for (b_by_rows, c_by_rows, pad, beta) in [
                    (true, true, 0, 0.0),
                    (true, false, 3, 0.5),
                    (false, true, 1, -1.25),
                    (false, false, 0, 0.0),
                ] {
                    let lda = k + pad;
                    let a: Vec<f32> = (0..m * lda).map(|_| value()).collect();
                    // B's slice ends at its last element (the copy of its columns reads to
                    // the very end).
                    let b_len = if b_by_rows {
                        (k - 1) * (n + pad) + n
                    } else {
                        (n - 1) * (k + pad) + k
                    };
                    let b: Vec<f32> = (0..b_len).map(|_| value()).collect();
                    let bv = if b_by_rows {
                        MatRef::row_major(&b, k, n, n + pad)
                    } else {
                        MatRef::row_major(&b, n, k, k + pad).t()
                    };
                    let av = MatRef::row_major(&a, m, k, lda);
                    let c0 = c_before(m * n, beta, &mut value);
                    let what = format!(
                        "{isa} {m}×{k}×{n}, B by rows {b_by_rows}, C by rows {c_by_rows}, pad \
                         {pad}, beta {beta}"
                    );
                    // C in the layout asked for, read back by rows.
                    let run = |rows: std::ops::Range<usize>, threading: Threading| {
                        let rows_n = rows.len();
                        let mut c: Vec<f32> = if c_by_rows {
                            c0[rows.start * n..rows.end * n].to_vec()
                        } else {
                            (0..rows_n * n)
                                .map(|x| c0[(rows.start + x % rows_n) * n + x / rows_n])
                                .collect()
                        };
                        let cv = if c_by_rows {
                            MatMut::row_major(&mut c, rows_n, n, n)
                        } else {
                            MatMut::col_major(&mut c, rows_n, n, rows_n)
                        };
                        let opts = ExecOptions {
                            threading,
                            ..ExecOptions::with_isa(isa)
                        };
                        let a_rows = MatRef::row_major(&a[rows.start * lda..], rows_n, k, lda);
                        gemm_with(&opts, -0.75, a_rows, bv, beta, cv).unwrap();
                        if c_by_rows {
                            c
                        } else {
                            (0..rows_n * n)
                                .map(|x| c[(x % n) * rows_n + x / n])
                                .collect()
                        }
                    };
                    assert!(takes(isa, (m, k, n), 1, bv.row_stride()), "{what}");
                    let ours = run(0..m, Threading::Single);
                    within_the_reference(&what, &ours, (av, bv), beta, &c0);
                    // An element alone: one dot product, the matrix–vector path's.
                    for (i, j) in [(0, 0), (m - 1, n - 1), (m / 2, 1)] {
                        let mut one = [c0[i * n + j]];
                        let column =
                            MatRef::strided(&b[j * bv.col_stride()..], k, 1, bv.row_stride(), 1);
                        gemm_with(
                            &ExecOptions::with_isa(isa),
                            -0.75,
                            MatRef::row_major(&a[i * lda..], 1, k, k),
                            column,
                            beta,
                            MatMut::row_major(&mut one, 1, 1, 1),
                        )
                        .unwrap();
                        assert_eq!(
                            one[0].to_bits(),
                            ours[i * n + j].to_bits(),
                            "{what}: element ({i}, {j}) alone"
                        );
                    }
                    let pool = rayon::ThreadPoolBuilder::new()
                        .num_threads(2)
                        .build()
                        .unwrap();
                    let two = pool.install(|| run(0..m, Threading::Rayon));
                    assert_eq!(bits(&two), bits(&ours), "{what}: two threads");
                    for i in [0, m / 2, m - 1] {
                        assert_eq!(
                            bits(&run(i..i + 1, Threading::Single)),
                            bits(&ours[i * n..(i + 1) * n]),
                            "{what}: row {i} alone"
                        );
                    }
                }
            }
        }
    }
}
