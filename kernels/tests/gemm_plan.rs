//! `GemmPlan`: a product planned once and run many times gives `gemm_with`'s bits with the same
//! options, on every path, for any shape and layout (each run against the f64 reference's bound
//! too); it rejects at planning what `gemm_with` rejects at its call, and a run's buffers too
//! short for their layouts are an error that leaves C untouched.

use kernels::reference::{Path, Rng};
use kernels::{
    gemm_with, reference, Backend, Error, ExecOptions, GemmPlan, Isa, MatLayout, MatMut, MatRef,
    Threading,
};
use proptest::prelude::*;

mod common;
use common::{case_of, Case};

/// Sides of the planned products: tiny, within the small tiles' 128 and past it, and the
/// tiles' edges.
fn plan_dim() -> impl Strategy<Value = usize> {
    prop_oneof![
        2 => 0usize..=3,
        5 => 1usize..=70,
        2 => 100usize..=140,
        1 => prop::sample::select(vec![2usize, 13, 16, 17, 31, 32, 33, 47, 48, 64, 127, 128, 129]),
    ]
}

/// The three layouts of `case` (A and B as stored, then viewed transposed where asked) and
/// their buffers' lengths.
fn layouts(case: &Case) -> ([MatLayout; 3], [usize; 3]) {
    let Case { m, k, n, pad, .. } = *case;
    let (ar, ac) = if case.trans_a { (k, m) } else { (m, k) };
    let (br, bc) = if case.trans_b { (n, k) } else { (k, n) };
    let a = MatLayout::row_major(ar, ac, ac + pad);
    let b = MatLayout::row_major(br, bc, bc + pad);
    let (a, b) = (
        if case.trans_a { a.t() } else { a },
        if case.trans_b { b.t() } else { b },
    );
    let c = if case.c_col_major {
        MatLayout::col_major(m, n, m + pad)
    } else {
        MatLayout::row_major(m, n, n + pad)
    };
    let len = |rows: usize, ld: usize| rows * ld;
    let lens = [
        len(ar, ac + pad),
        len(br, bc + pad),
        if case.c_col_major {
            len(n, m + pad)
        } else {
            len(m, n + pad)
        },
    ];
    ([a, b, c], lens)
}

fn view(l: MatLayout, data: &[f32]) -> MatRef<'_> {
    MatRef::strided(data, l.rows, l.cols, l.row_stride, l.col_stride)
}

fn view_mut(l: MatLayout, data: &mut [f32]) -> MatMut<'_> {
    MatMut::strided(data, l.rows, l.cols, l.row_stride, l.col_stride)
}

/// Two runs of one plan (fresh operands each time, C with NaN where beta is 0) against
/// `gemm_with` on the same buffers, bit for bit, and against the reference's bound.
fn check(case: Case, path: Path) -> Result<(), String> {
    let ([al, bl, cl], [a_len, b_len, c_len]) = layouts(&case);
    let opts = ExecOptions {
        threading: case.threading,
        ..path.opts()
    };
    let plan =
        GemmPlan::new(&opts, case.alpha, al, bl, case.beta, cl).map_err(|e| e.to_string())?;
    let mut rng = Rng::new(case.seed);
    for run in 0..2 {
        let (a, b) = (rng.fill(a_len), rng.fill(b_len));
        let mut c0 = rng.fill(c_len);
        if case.beta == 0.0 {
            c0.fill(f32::NAN);
        }
        let (mut planned, mut direct, mut want) = (c0.clone(), c0.clone(), c0.clone());
        plan.run(&a, &b, &mut planned).map_err(|e| e.to_string())?;
        let (av, bv) = (view(al, &a), view(bl, &b));
        gemm_with(
            &opts,
            case.alpha,
            av,
            bv,
            case.beta,
            view_mut(cl, &mut direct),
        )
        .map_err(|e| e.to_string())?;
        reference::gemm(case.alpha, av, bv, case.beta, view_mut(cl, &mut want))
            .map_err(|e| e.to_string())?;
        let bound = reference::gemm_error_bound(case.alpha, av, bv, case.beta, view(cl, &c0));
        for (idx, (p, d)) in planned.iter().zip(&direct).enumerate() {
            if p.to_bits() != d.to_bits() {
                return Err(format!(
                    "{path}, run {run}: element {idx} of C is {p} planned, {d} by gemm_with"
                ));
            }
        }
        for i in 0..case.m {
            for j in 0..case.n {
                let idx = i * cl.row_stride + j * cl.col_stride;
                let err = (planned[idx] as f64 - want[idx] as f64).abs();
                let limit = bound[i * case.n + j].max(f32::MIN_POSITIVE as f64);
                if err.is_nan() || err > limit {
                    return Err(format!(
                        "{path}, run {run}: C[{i},{j}] = {}, reference {}, error {err:e} > {limit:e}",
                        planned[idx], want[idx]
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Small products with B and C by rows (the planned small path on AVX-512 and AVX2): sides of 2
/// to 24, far below two hand-offs' work at any measured price, A by rows, by columns, strided
/// both ways or one row repeated (row stride 0).
fn small_case() -> impl Strategy<Value = (Case, usize)> {
    (
        case_of(plan_dim),
        (2usize..=24, 2usize..=24, 1usize..=24),
        0usize..4,
    )
        .prop_map(|(c, (m, n, k), a_form)| {
            let case = Case {
                m,
                k,
                n,
                trans_a: a_form == 1,
                trans_b: false,
                c_col_major: false,
                alpha: if c.alpha == 0.0 { 0.5 } else { c.alpha },
                ..c
            };
            (case, a_form)
        })
}

/// One small case on `path`: A as `a_form` says (0 by rows, 1 by columns, 2 strided both ways,
/// 3 one row repeated), planned on the small path where `path` has small tiles, every run the
/// bits of `gemm_with`.
fn check_small((case, a_form): (Case, usize), path: Path) -> Result<(), String> {
    let ([_, bl, cl], [_, b_len, c_len]) = layouts(&case);
    let (m, k) = (case.m, case.k);
    let (al, a_len) = match a_form {
        2 => (
            MatLayout::strided(m, k, 2 * k + 1, 2),
            (m - 1) * (2 * k + 1) + 2 * (k - 1) + 1,
        ),
        3 => (MatLayout::strided(m, k, 0, 1), k),
        _ => (layouts(&case).0[0], layouts(&case).1[0]),
    };
    let opts = ExecOptions {
        threading: case.threading,
        ..path.opts()
    };
    let plan =
        GemmPlan::new(&opts, case.alpha, al, bl, case.beta, cl).map_err(|e| e.to_string())?;
    let small_tiles =
        path.backend == Backend::Native && matches!(path.isa, Isa::Avx512 | Isa::Avx2);
    if plan.is_planned_small() != small_tiles {
        return Err(format!("{path}: planned small {}", plan.is_planned_small()));
    }
    let mut rng = Rng::new(case.seed);
    let (a, b, c0) = (rng.fill(a_len), rng.fill(b_len), rng.fill(c_len));
    let (mut planned, mut direct) = (c0.clone(), c0);
    plan.run(&a, &b, &mut planned).map_err(|e| e.to_string())?;
    gemm_with(
        &opts,
        case.alpha,
        view(al, &a),
        view(bl, &b),
        case.beta,
        view_mut(cl, &mut direct),
    )
    .map_err(|e| e.to_string())?;
    match planned
        .iter()
        .zip(&direct)
        .position(|(p, d)| p.to_bits() != d.to_bits())
    {
        Some(i) => Err(format!(
            "{path}: element {i} {} planned, {} by gemm_with",
            planned[i], direct[i]
        )),
        None => Ok(()),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 120, ..ProptestConfig::default() })]

    #[test]
    fn planned_runs_have_the_bits_of_gemm_with_on_every_path(case in case_of(plan_dim)) {
        for path in Path::all() {
            prop_assert_eq!(check(case, path), Ok(()));
        }
    }

    #[test]
    fn small_planned_runs_have_the_bits_of_gemm_with_on_every_path(case in small_case()) {
        for path in Path::all() {
            prop_assert_eq!(check_small(case, path), Ok(()));
        }
    }
}

/// NaN and infinities in alpha, beta, A, B and C (beta not 0) reach C as through `gemm_with`,
/// bit for bit, on every path; and a plan of the default options (the instruction set and
/// backend resolved from the environment) is `gemm_with`'s of the same options.
#[test]
fn non_finite_values_and_default_options() {
    let (m, k, n) = (7, 9, 13);
    let l = MatLayout::row_major;
    let specials = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY];
    let mut rng = Rng::new(5);
    let (mut a, mut b, mut c0) = (rng.fill(m * k), rng.fill(k * n), rng.fill(m * n));
    a[3] = f32::NAN;
    b[10] = f32::INFINITY;
    c0[20] = f32::NEG_INFINITY;
    c0[40] = f32::NAN;
    let mut options: Vec<ExecOptions> = Path::all().iter().map(|p| p.opts()).collect();
    options.push(ExecOptions::default());
    for opts in options {
        for (alpha, beta) in [
            (1.0, 0.5),
            (specials[0], 1.0),
            (1.0, specials[1]),
            (specials[2], 2.0),
        ] {
            let plan =
                GemmPlan::new(&opts, alpha, l(m, k, k), l(k, n, n), beta, l(m, n, n)).unwrap();
            let (mut planned, mut direct) = (c0.clone(), c0.clone());
            plan.run(&a, &b, &mut planned).unwrap();
            let (av, bv) = (view(l(m, k, k), &a), view(l(k, n, n), &b));
            let c = view_mut(l(m, n, n), &mut direct);
            gemm_with(&opts, alpha, av, bv, beta, c).unwrap();
            for (i, (p, d)) in planned.iter().zip(&direct).enumerate() {
                assert_eq!(
                    p.to_bits(),
                    d.to_bits(),
                    "{opts:?} alpha {alpha} beta {beta}: {i}"
                );
            }
        }
    }
}

/// The shapes LIBXSMM serves, fixed: each side of 1–64 at the tiles' edges, row-major, beta 0
/// and 1, on every path.
#[test]
fn small_products_at_the_tiles_edges() {
    let sides = [
        1, 2, 5, 8, 9, 12, 13, 15, 16, 17, 24, 27, 31, 32, 33, 40, 48, 63, 64,
    ];
    let mut seed = 0;
    for (i, &m) in sides.iter().enumerate() {
        for &k in &sides[i % 4..] {
            for &n in sides.iter().step_by(3) {
                for beta in [0.0, 1.0] {
                    seed += 1;
                    let case = Case {
                        m,
                        k,
                        n,
                        trans_a: false,
                        trans_b: false,
                        c_col_major: false,
                        pad: 0,
                        alpha: 1.0,
                        beta,
                        seed,
                        threading: Threading::Single,
                    };
                    for path in Path::all() {
                        assert_eq!(check(case, path), Ok(()), "{m}×{k}×{n}, beta {beta}");
                    }
                }
            }
        }
    }
}

/// Which products a plan runs on its small path: small, plain ones on a path with small tiles;
/// not one-row or one-column products, K = 0, alpha = 0, a column-major C, B read by columns,
/// a product past the small tiles' sides, nor OpenBLAS.
#[test]
fn the_small_path_is_planned_where_gemm_with_takes_it() {
    let plain = |m, k, n| {
        [
            MatLayout::row_major(m, k, k),
            MatLayout::row_major(k, n, n),
            MatLayout::row_major(m, n, n),
        ]
    };
    let planned = |opts: &ExecOptions, alpha, [a, b, c]: [MatLayout; 3]| {
        GemmPlan::new(opts, alpha, a, b, 0.0, c)
            .unwrap()
            .is_planned_small()
    };
    for isa in Isa::available() {
        let opts = ExecOptions::with_isa(isa);
        let has_small_tiles = matches!(isa, Isa::Avx512 | Isa::Avx2);
        assert_eq!(
            planned(&opts, 1.0, plain(16, 16, 16)),
            has_small_tiles,
            "{isa}"
        );
        assert_eq!(
            planned(&opts, 1.0, plain(13, 27, 40)),
            has_small_tiles,
            "{isa}"
        );
        for shape in [
            (1, 16, 16),
            (16, 16, 1),
            (16, 0, 16),
            (0, 16, 16),
            (200, 200, 200),
        ] {
            let (m, k, n) = shape;
            assert!(!planned(&opts, 1.0, plain(m, k, n)), "{isa} {shape:?}");
        }
        assert!(!planned(&opts, 0.0, plain(16, 16, 16)), "{isa}");
        let [a, b, _] = plain(16, 16, 16);
        assert!(!planned(
            &opts,
            1.0,
            [a, b, MatLayout::col_major(16, 16, 16)]
        ));
        assert!(!planned(
            &opts,
            1.0,
            [a, MatLayout::row_major(16, 16, 16).t(), b]
        ));
    }
    if Backend::OpenBlas.is_available() {
        let opts = ExecOptions::with_backend(Backend::OpenBlas);
        assert!(!planned(&opts, 1.0, plain(16, 16, 16)));
    }
}

/// Planning rejects what `gemm_with` would: shapes that disagree, a layout whose extent
/// overflows, a C whose elements overlap, an instruction set this CPU lacks.
#[test]
fn planning_rejects_bad_layouts() {
    let opts = ExecOptions::default();
    let l = MatLayout::row_major;
    let plan = |a, b, c| GemmPlan::new(&opts, 1.0, a, b, 0.0, c);
    assert!(matches!(
        plan(l(4, 5, 5), l(6, 3, 3), l(4, 3, 3)),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        plan(l(4, 5, 5), l(5, 3, 3), l(4, 4, 4)),
        Err(Error::ShapeMismatch { .. })
    ));
    let huge = MatLayout::strided(usize::MAX / 2, 5, 4, 1);
    assert!(matches!(
        plan(huge, l(5, 3, 3), MatLayout::row_major(usize::MAX / 2, 3, 3)),
        Err(Error::Overflow { .. })
    ));
    assert!(matches!(
        plan(l(4, 5, 5), l(5, 3, 3), MatLayout::strided(4, 3, 2, 1)),
        Err(Error::OverlappingStrides { .. })
    ));
    for isa in [Isa::Avx512, Isa::Avx2, Isa::Neon] {
        if !isa.is_available() {
            let opts = ExecOptions::with_isa(isa);
            assert!(GemmPlan::new(&opts, 1.0, l(2, 2, 2), l(2, 2, 2), 0.0, l(2, 2, 2)).is_err());
        }
    }
    if !Backend::OpenBlas.is_available() {
        let opts = ExecOptions::with_backend(Backend::OpenBlas);
        assert!(GemmPlan::new(&opts, 1.0, l(2, 2, 2), l(2, 2, 2), 0.0, l(2, 2, 2)).is_err());
    }
    // Errors in `gemm_with`'s order: an overflowing B with mismatched shapes is an overflow.
    let huge_b = MatLayout::strided(6, usize::MAX / 2, 1, 4);
    assert!(matches!(
        plan(l(4, 5, 5), huge_b, l(4, 3, 3)),
        Err(Error::Overflow { .. })
    ));
}

/// A run whose buffer is too short for its layout (A, B or C, by one element) is an error that
/// writes nothing: on the small path and the other, with the operands stored by rows or by
/// columns.
#[test]
fn short_buffers_are_an_error_that_writes_nothing() {
    let by_rows = |r, c| MatLayout::row_major(r, c, c);
    let by_columns = |r, c| MatLayout::col_major(r, c, r);
    for ((m, k, n), stored) in [
        ((16, 16, 16), by_rows as fn(usize, usize) -> MatLayout),
        ((200, 30, 7), by_rows),
        ((16, 16, 16), by_columns),
        ((9, 40, 5), by_columns),
    ] {
        let l = |r, c, _ld: usize| stored(r, c);
        let plan = GemmPlan::new(
            &ExecOptions::default(),
            1.0,
            l(m, k, k),
            l(k, n, n),
            0.0,
            l(m, n, n),
        )
        .unwrap();
        let (a, b) = (vec![1.0f32; m * k], vec![1.0f32; k * n]);
        for short in 0..3 {
            let len = |i: usize, full: usize| if i == short { full - 1 } else { full };
            let mut c = vec![7.0f32; len(2, m * n)];
            let err = plan.run(&a[..len(0, m * k)], &b[..len(1, k * n)], &mut c);
            assert!(
                matches!(err, Err(Error::BufferTooSmall { .. })),
                "{m}×{k}×{n}, operand {short}: {err:?}"
            );
            assert!(c.iter().all(|&x| x == 7.0));
        }
        let mut c = vec![7.0f32; m * n];
        plan.run(&a, &b, &mut c).unwrap();
        assert!(c.iter().all(|&x| x == k as f32));
    }
}
