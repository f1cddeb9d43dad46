//! GEMM against the f64 reference on every instruction-set path this machine has (each one forced),
//! plus the BLAS alpha/beta contract, thread-count invariance and argument errors.
//!
//! Error bound (from `kernels::reference::gemm_error_bound`), element by element:
//! |ours − ref| ≤ 2·(k+2)·2⁻²⁴·(|α|·Σₚ|aᵢₚ·bₚⱼ| + |β·cᵢⱼ|) + f32::MIN_POSITIVE.

use kernels::reference::{Path, Rng};
use kernels::{gemm_with, reference, Backend, ExecOptions, MatMut, MatRef, Threading};
use proptest::prelude::*;

mod common;
use common::{case_of, Case};

/// The machine's paths that run our driver or OpenBLAS, each to be forced in turn.
fn paths() -> Vec<Path> {
    Path::all()
}

/// The paths that run our own driver (whose bits the tests below pin down).
fn native_paths() -> Vec<Path> {
    paths()
        .into_iter()
        .filter(|p| p.backend == Backend::Native)
        .collect()
}

/// Runs `case` on `path` and checks every element against the reference bound, and the BLAS
/// rules: beta = 0 ignores NaN in C, alpha = 0 ignores NaN/Inf in A and B, padding untouched.
fn check(case: Case, path: Path) -> Result<(), String> {
    let Case {
        m,
        n,
        k,
        pad,
        alpha,
        beta,
        ..
    } = case;
    let mut rng = Rng::new(case.seed);
    // Stored shapes: A is m×k (or k×m when transposed), B is k×n (or n×k), C m×n.
    let (ar, ac) = if case.trans_a { (k, m) } else { (m, k) };
    let (br, bc) = if case.trans_b { (n, k) } else { (k, n) };
    let lda = ac + pad;
    let ldb = bc + pad;
    let mut a = rng.fill(ar * lda);
    let mut b = rng.fill(br * ldb);
    if alpha == 0.0 {
        // alpha = 0: A and B must not be read; poison them.
        for (i, x) in a.iter_mut().enumerate() {
            *x = if i % 2 == 0 { f32::NAN } else { f32::INFINITY };
        }
        b.fill(f32::NEG_INFINITY);
    }
    let (c_outer, c_inner) = if case.c_col_major { (n, m) } else { (m, n) };
    let ldc = c_inner + pad;
    let mut c0 = rng.fill(c_outer * ldc);
    if beta == 0.0 {
        // beta = 0: C must not be read; poison it.
        c0.fill(f32::NAN);
    }
    let av = MatRef::row_major(&a, ar, ac, lda);
    let av = if case.trans_a { av.t() } else { av };
    let bv = MatRef::row_major(&b, br, bc, ldb);
    let bv = if case.trans_b { bv.t() } else { bv };
    let mut ours = c0.clone();
    let mut want = c0.clone();
    fn mk(data: &mut [f32], col_major: bool, m: usize, n: usize, ldc: usize) -> MatMut<'_> {
        if col_major {
            MatMut::col_major(data, m, n, ldc)
        } else {
            MatMut::row_major(data, m, n, ldc)
        }
    }
    let opts = ExecOptions {
        threading: case.threading,
        ..path.opts()
    };
    gemm_with(
        &opts,
        alpha,
        av,
        bv,
        beta,
        mk(&mut ours, case.c_col_major, m, n, ldc),
    )
    .map_err(|e| e.to_string())?;
    reference::gemm(
        alpha,
        av,
        bv,
        beta,
        mk(&mut want, case.c_col_major, m, n, ldc),
    )
    .map_err(|e| e.to_string())?;
    let c0v = if case.c_col_major {
        MatRef::col_major(&c0, m, n, ldc)
    } else {
        MatRef::row_major(&c0, m, n, ldc)
    };
    let bound = if alpha == 0.0 {
        vec![f32::MIN_POSITIVE as f64; m * n]
    } else {
        reference::gemm_error_bound(alpha, av, bv, beta, c0v)
    };
    for i in 0..m {
        for j in 0..n {
            let idx = if case.c_col_major {
                j * ldc + i
            } else {
                i * ldc + j
            };
            let (got, exp) = (ours[idx], want[idx]);
            let err = (got as f64 - exp as f64).abs();
            if err.is_nan() || err > bound[i * n + j] {
                return Err(format!(
                    "{path}: C[{i},{j}] = {got}, reference {exp}, error {err:e} > bound {:e}",
                    bound[i * n + j]
                ));
            }
        }
    }
    // Padding between rows/columns of C is not ours to touch.
    for (idx, (&o, &c)) in ours.iter().zip(&c0).enumerate() {
        let (outer, inner) = (idx / ldc, idx % ldc);
        let is_padding = inner >= c_inner || outer >= c_outer;
        if is_padding && o.to_bits() != c.to_bits() {
            return Err(format!("{path}: padding element {idx} of C changed"));
        }
    }
    Ok(())
}

fn any_dim() -> impl Strategy<Value = usize> {
    prop_oneof![
        3 => 0usize..=3,
        4 => 0usize..=70,
        2 => 0usize..=300,
        1 => prop::sample::select(vec![2usize, 3, 5, 7, 11, 13, 17, 31, 37, 61, 97, 127, 251, 257]),
    ]
}

/// One-row and one-column products (the matrix–vector path): the vector side 1, the others up
/// to a few thousand (primes, multiples of 16 ± 1, where the lane loops end, the 256 outputs
/// whose sums fit the small stack array ± 1, and the axpy form's blocks of 2048 or 4096 outputs
/// (half of a 16 or 32 KiB L1d) ± 1).
fn vector_case() -> impl Strategy<Value = Case> {
    let long = prop_oneof![
        2 => 0usize..=40,
        2 => 0usize..=3000,
        1 => prop::sample::select(vec![
            1usize, 15, 16, 17, 63, 64, 65, 255, 256, 257, 1023, 1024, 1025, 2047, 2048, 2049,
            2053, 4095, 4096, 4097, 8209,
        ]),
    ];
    (case_of(any_dim), long.clone(), long, any::<bool>()).prop_map(|(c, outputs, k, one_row)| {
        if one_row {
            Case {
                m: 1,
                n: outputs,
                k,
                ..c
            }
        } else {
            Case {
                m: outputs,
                n: 1,
                k,
                ..c
            }
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 160, ..ProptestConfig::default() })]

    #[test]
    fn matches_reference_on_every_path(case in case_of(any_dim)) {
        for path in paths() {
            prop_assert_eq!(check(case, path), Ok(()));
        }
    }

    #[test]
    fn vector_products_match_reference_on_every_path(case in vector_case()) {
        for path in paths() {
            prop_assert_eq!(check(case, path), Ok(()));
        }
    }
}

/// The matrix–vector path at the edge of its small array of sums (255–257 outputs): one-row and
/// one-column products, the matrix stored both ways (the dot and the axpy form), K within one
/// slice and across the slices, beta 0 and not, on one thread (a split would halve the range):
/// every element against the reference bound, on every path.
#[test]
fn vector_products_at_the_small_sums_edge() {
    let mut seed = 7;
    for outputs in [255, 256, 257] {
        for k in [3, 600, 1100] {
            for (one_row, stored_transposed, beta) in
                (0..8).map(|i| (i & 1 == 1, i & 2 == 2, i & 4 == 4))
            {
                seed += 1;
                let (m, n) = if one_row { (1, outputs) } else { (outputs, 1) };
                let case = Case {
                    m,
                    n,
                    k,
                    trans_a: stored_transposed,
                    trans_b: stored_transposed,
                    c_col_major: false,
                    pad: 0,
                    alpha: 1.5,
                    beta: if beta { 0.5 } else { 0.0 },
                    seed,
                    threading: Threading::Single,
                };
                for path in paths() {
                    assert_eq!(
                        check(case, path),
                        Ok(()),
                        "{m}x{k}x{n}, stored transposed: {stored_transposed}"
                    );
                }
            }
        }
    }
}

/// Every remainder of M mod MR and N mod NR of every kernel (MR ≤ 24, NR ≤ 48), K in {0, 1, 2, 9}
/// and across a KC boundary (the deepest slice the cache model chose for the path), both
/// transposes.
#[test]
fn every_tile_remainder() {
    let mut seed = 1;
    for path in paths() {
        let past_kc = kernels::gemm_blocking(path.isa)
            .iter()
            .map(|t| t.kc + 8)
            .max()
            .unwrap_or(520);
        for m in 0..=25 {
            for n in (0..=50).chain([63, 64, 65, 95, 96, 97]) {
                for (t, &k) in [0usize, 1, 2, 9, past_kc].iter().enumerate() {
                    if k == past_kc && (m + n) % 5 != 0 {
                        continue; // a sample of the long-K cases is enough
                    }
                    seed += 1;
                    let case = Case {
                        m,
                        n,
                        k,
                        trans_a: t % 2 == 1,
                        trans_b: (t / 2) % 2 == 1 || m % 3 == 0,
                        c_col_major: n % 7 == 3,
                        pad: (m + n) % 3,
                        alpha: if k == 2 { -1.5 } else { 1.0 },
                        beta: [0.0, 1.0, 0.5, -1.0][(m + k) % 4],
                        seed,
                        threading: Threading::Single,
                    };
                    check(case, path).unwrap();
                }
            }
        }
    }
}

/// A stored by rows and read in place (the small tiles' k loop, unrolled by four for A's unit
/// column stride where the registers allow): every remainder of K over four, every row count of
/// the 8-row tiles, the 16-row tile's two halves, and the one-, two- and three-vector widths.
#[test]
fn a_by_rows_in_place_with_every_remainder_of_k() {
    let mut seed = 7_000;
    for path in paths() {
        for m in (1..=9).chain([15, 16, 17]) {
            for n in [5, 16, 32, 48, 50] {
                for k in (4..=8).chain([13, 70]) {
                    seed += 1;
                    let case = Case {
                        m,
                        n,
                        k,
                        trans_a: false,
                        trans_b: false,
                        c_col_major: false,
                        pad: seed as usize % 2,
                        alpha: 1.0,
                        beta: if k % 2 == 0 { 0.0 } else { 0.5 },
                        seed,
                        threading: Threading::Single,
                    };
                    check(case, path).unwrap();
                }
            }
        }
    }
}

/// Shapes that cross every block boundary of the driver (MC, KC, NC) and take the threaded and
/// shared-B paths, plus the skinny training shapes.
#[test]
fn large_and_training_shapes() {
    let shapes = [
        (513, 257, 600),
        (300, 520, 270),
        (100, 1100, 70),
        (250, 1030, 250),
        (3, 4100, 5),
        (32, 784, 128),
        (784, 32, 128),
        (21632 / 8, 9, 32),
        (9, 2704, 32),
        (2704, 32, 9),
        (32, 5408 / 4, 128),
        // A few rows over a B whose K slices exceed L2 (read panel after panel, or packed a
        // block at a time, by the tile): a short last row tile and last panel, two K slices.
        (27, 700, 1501),
        // One row tile over a B too large for L3 (read panel after panel, the next prefetched).
        (5, 1030, 8200),
        // (B transposed at this index: the packed path.)
        (20, 600, 2100),
        (9, 520, 3001),
        // Two threads' bands of columns over a B from memory whose slices may fit L2.
        (20, 600, 4096),
        // Narrow C over a deep K: B transposed here (packed), A transposed next (in place).
        (40, 1500, 16),
        (70, 2100, 33),
        // Few enough rows for A in place, but B's rows 4 KiB apart crowd into a few of L2's
        // sets: packed instead.
        (96, 520, 1024),
    ];
    for (s, &(m, k, n)) in shapes.iter().enumerate() {
        for path in Path::for_large_cases() {
            // One thread too: two take bands of columns, whose shares of B may fit L2.
            for threading in [Threading::Rayon, Threading::Single] {
                let case = Case {
                    m,
                    n,
                    k,
                    trans_a: s % 2 == 1,
                    trans_b: s % 3 == 1,
                    c_col_major: s == 4,
                    pad: 1,
                    alpha: 0.75,
                    beta: if s % 2 == 0 { 0.0 } else { -0.5 },
                    seed: s as u64,
                    threading,
                };
                check(case, path).unwrap();
            }
        }
    }
}

/// Bit-identical results on 1 and 2 threads (and with Threading::Single) on our own paths.
#[test]
fn thread_count_does_not_change_the_bits() {
    let pool = |n| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .unwrap()
    };
    let (one, two) = (pool(1), pool(2));
    let shapes = [
        (512, 512, 300),
        (1000, 50, 700),
        (32, 5408, 128),
        (5408, 32, 128),
        (200, 200, 200),
        (9, 2000, 32),
        // A tile chosen for two threads' shares other than the one for the whole of C.
        (128, 784, 512),
        // Small products split in equal bands.
        (64, 64, 64),
        (44, 44, 44),
        (100, 100, 100),
        // A read in place: many rows with a short K and a narrow C; few rows across K slices.
        (3000, 9, 32),
        (700, 100, 17),
        (20, 1100, 300),
        (24, 512, 2048),
        // A read in place under a narrow C at a deep K, bands of rows.
        (200, 1500, 48),
        // Matrix–vector products large enough to be split among threads.
        (100_003, 70, 1),
        (1, 300, 70_001),
        (1, 50_000, 37),
    ];
    for path in native_paths() {
        for &(m, k, n) in &shapes {
            let mut rng = Rng::new((m * k + n) as u64);
            let a = rng.fill(m * k);
            let b = rng.fill(k * n);
            let c0 = rng.fill(m * n);
            let run_with = |threading, fresh_operands| {
                let mut c = c0.clone();
                let opts = ExecOptions {
                    threading,
                    fresh_operands,
                    ..path.opts()
                };
                gemm_with(
                    &opts,
                    1.25,
                    MatRef::row_major(&a, m, k, k),
                    MatRef::row_major(&b, k, n, n),
                    0.5,
                    MatMut::row_major(&mut c, m, n, n),
                )
                .unwrap();
                c
            };
            let run = |threading| run_with(threading, false);
            let single = run(Threading::Single);
            let on_one = one.install(|| run(Threading::Rayon));
            let on_two = two.install(|| run(Threading::Rayon));
            // From outside any pool (the calling thread takes a share of the tasks).
            let outside = run(Threading::Rayon);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(
                bits(&single),
                bits(&on_one),
                "{path} {m}×{k}×{n}: single vs 1-thread pool"
            );
            assert_eq!(
                bits(&on_one),
                bits(&on_two),
                "{path} {m}×{k}×{n}: 1 vs 2 threads"
            );
            assert_eq!(
                bits(&on_one),
                bits(&outside),
                "{path} {m}×{k}×{n}: outside the pool"
            );
            // Operands just written only change how many threads share the product.
            let fresh = run_with(Threading::Rayon, true);
            assert_eq!(
                bits(&on_one),
                bits(&fresh),
                "{path} {m}×{k}×{n}: fresh operands"
            );
        }
    }
}

/// B stored by columns (a transposed matrix) gives the bits of the same B stored by rows: a
/// small product copies it into rows for the tiles that read B in place, a larger one packs it
/// or forms Cᵀ; either way each element of C is the same sum in the same order. 2–4 columns
/// over K above 128 are dot products whichever way B is stored. The exception, where an
/// instruction set has the dot form: 2–4 rows over K above 128 with B by columns are dot
/// products, each row then the bits of its own one-row product of that layout (one-row
/// products, the matrix–vector path's, differ by B's layout everywhere, and are left out).
#[test]
fn b_by_columns_has_the_bits_of_b_by_rows() {
    let shapes = [
        (32, 10, 64),
        (64, 10, 32),
        (16, 16, 16),
        (13, 27, 40),
        (7, 128, 100),
        (128, 64, 128),
        (32, 128, 784),
        (300, 200, 100),
        // The dot form's shapes (and its edges: K = 128 and 5 rows are the tiles').
        (2, 129, 5),
        (3, 300, 200),
        (4, 784, 128),
        (4, 128, 100),
        (5, 300, 200),
        // 2–4 columns over K above 128: dot products whichever way B is stored.
        (7, 300, 3),
        (64, 129, 2),
        (2, 200, 4),
    ];
    for path in native_paths() {
        for &(m, k, n) in &shapes {
            #[cfg(target_arch = "x86_64")]
            let dot_form = matches!(path.isa, kernels::Isa::Avx512 | kernels::Isa::Avx2)
                && (2..=4).contains(&m)
                && k > 128;
            #[cfg(not(target_arch = "x86_64"))]
            let dot_form = false;
            let mut rng = Rng::new((m * k * n) as u64);
            let (a, b, c0) = (rng.fill(m * k), rng.fill(k * n), rng.fill(m * n));
            // bt holds B's columns one after another: B = btᵀ.
            let bt: Vec<f32> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
            let run = |b_view: MatRef<'_>| {
                let mut c = c0.clone();
                gemm_with(
                    &path.opts(),
                    0.75,
                    MatRef::row_major(&a, m, k, k),
                    b_view,
                    1.5,
                    MatMut::row_major(&mut c, m, n, n),
                )
                .unwrap();
                c.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
            };
            let by_columns = run(MatRef::row_major(&bt, n, k, k).t());
            if !dot_form {
                assert_eq!(
                    run(MatRef::row_major(&b, k, n, n)),
                    by_columns,
                    "{path} {m}×{k}×{n}"
                );
                continue;
            }
            for i in 0..m {
                let mut row = c0[i * n..(i + 1) * n].to_vec();
                gemm_with(
                    &path.opts(),
                    0.75,
                    MatRef::row_major(&a[i * k..(i + 1) * k], 1, k, k),
                    MatRef::row_major(&bt, n, k, k).t(),
                    1.5,
                    MatMut::row_major(&mut row, 1, n, n),
                )
                .unwrap();
                let row: Vec<u32> = row.iter().map(|x| x.to_bits()).collect();
                assert_eq!(
                    row,
                    by_columns[i * n..(i + 1) * n],
                    "{path} {m}×{k}×{n}: row {i} as a one-row product"
                );
            }
        }
    }
}

/// Outside the alpha = 0 and beta = 0 rules, NaN and infinities propagate.
#[test]
fn nan_and_inf_propagate() {
    for path in paths() {
        let (m, n, k) = (13, 37, 20);
        let mut a = vec![1.0f32; m * k];
        let b = vec![1.0f32; k * n];
        a[5 * k + 3] = f32::NAN; // row 5 of A
        a[9 * k] = f32::INFINITY; // row 9 of A
        let mut c = vec![0.0f32; m * n];
        c[2 * n + 4] = f32::NAN; // read because beta = 1
        gemm_with(
            &path.opts(),
            1.0,
            MatRef::row_major(&a, m, k, k),
            MatRef::row_major(&b, k, n, n),
            1.0,
            MatMut::row_major(&mut c, m, n, n),
        )
        .unwrap();
        for i in 0..m {
            for j in 0..n {
                let v = c[i * n + j];
                match (i, j) {
                    (5, _) | (2, 4) => assert!(v.is_nan(), "{path}: C[{i},{j}] = {v}"),
                    (9, _) => assert_eq!(v, f32::INFINITY, "{path}: C[{i},{j}]"),
                    _ => assert_eq!(v, k as f32, "{path}: C[{i},{j}]"),
                }
            }
        }
    }
}

/// A row of C computed alone (a one-row product, the matrix–vector path) has the bits it gets
/// inside the whole product, with and without a fused bias + activation, on every path of our
/// own: what makes a model's predictions independent of the batch size. Likewise a column of C
/// alone when A is column-major.
#[test]
fn one_row_alone_has_the_bits_it_has_inside_the_product() {
    use kernels::{gemm_fused, Activation, Bias};
    // The tiles' shape, then 2–4 columns over a K above 128 (the dot form's, on AVX-512 and
    // AVX2: a Dense layer of a few units over a wide input).
    for (m, k, n) in [(37, 1300, 70), (37, 300, 3), (37, 129, 2), (37, 200, 4)] {
        let mut rng = Rng::new(99);
        let (a, b, c0) = (rng.fill(m * k), rng.fill(k * n), rng.fill(m * n));
        let bias = rng.fill(n);
        for path in native_paths() {
            let opts = path.opts();
            for (act, with_bias) in [(Activation::Identity, false), (Activation::Relu, true)] {
                let bias = if with_bias {
                    Bias::PerColumn(&bias)
                } else {
                    Bias::None
                };
                let mut whole = c0.clone();
                gemm_fused(
                    &opts,
                    1.25,
                    MatRef::row_major(&a, m, k, k),
                    MatRef::row_major(&b, k, n, n),
                    0.5,
                    bias,
                    act,
                    MatMut::row_major(&mut whole, m, n, n),
                )
                .unwrap();
                for i in [0, 5, 36] {
                    let mut row = c0[i * n..(i + 1) * n].to_vec();
                    gemm_fused(
                        &opts,
                        1.25,
                        MatRef::row_major(&a[i * k..(i + 1) * k], 1, k, k),
                        MatRef::row_major(&b, k, n, n),
                        0.5,
                        bias,
                        act,
                        MatMut::row_major(&mut row, 1, n, n),
                    )
                    .unwrap();
                    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    assert_eq!(
                        bits(&row),
                        bits(&whole[i * n..(i + 1) * n]),
                        "{path} {m}×{k}×{n} row {i}"
                    );
                }
            }
            // Column j of C = A·B alone, with A column-major (stored as Aᵀ, k × m).
            let at: Vec<f32> = (0..k * m).map(|x| a[(x % m) * k + x / m]).collect();
            let av = MatRef::row_major(&at, k, m, m).t();
            let mut whole = c0.clone();
            gemm_with(
                &opts,
                1.0,
                av,
                MatRef::row_major(&b, k, n, n),
                0.0,
                MatMut::row_major(&mut whole, m, n, n),
            )
            .unwrap();
            for j in [0, n / 2, n - 1] {
                let col: Vec<f32> = (0..k).map(|p| b[p * n + j]).collect();
                let mut out = vec![0.0; m];
                gemm_with(
                    &opts,
                    1.0,
                    av,
                    MatRef::row_major(&col, k, 1, 1),
                    0.0,
                    MatMut::row_major(&mut out, m, 1, 1),
                )
                .unwrap();
                for i in 0..m {
                    assert_eq!(
                        out[i].to_bits(),
                        whole[i * n + j].to_bits(),
                        "{path} {m}×{k}×{n} column {j}, row {i}"
                    );
                }
            }
        }
    }
}

/// A one-column product of a row-major A (the dot form) gives each row the bits of that row's
/// dot product alone, whether the row falls in a group of eight, of four or alone (21 rows:
/// 8 + 8 + 4 + 1), on every path of our own.
#[test]
fn a_dot_form_row_has_the_bits_of_its_dot_product_alone() {
    let (m, k) = (21, 1037);
    let mut rng = Rng::new(7);
    let (a, x) = (rng.fill(m * k), rng.fill(k));
    for path in native_paths() {
        let opts = path.opts();
        let mut whole = vec![0.0; m];
        gemm_with(
            &opts,
            1.0,
            MatRef::row_major(&a, m, k, k),
            MatRef::row_major(&x, k, 1, 1),
            0.0,
            MatMut::row_major(&mut whole, m, 1, 1),
        )
        .unwrap();
        for i in 0..m {
            let mut alone = [0.0];
            gemm_with(
                &opts,
                1.0,
                MatRef::row_major(&a[i * k..(i + 1) * k], 1, k, k),
                MatRef::row_major(&x, k, 1, 1),
                0.0,
                MatMut::row_major(&mut alone, 1, 1, 1),
            )
            .unwrap();
            assert_eq!(alone[0].to_bits(), whole[i].to_bits(), "{path} row {i}");
        }
    }
}
