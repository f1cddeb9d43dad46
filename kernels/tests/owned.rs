//! `owned`: the strips of a weight matrix (a partition of its rows, by its shape and the CPU), the
//! strip runner (every strip once, on pools of any size) and `dense_forward` on every path
//! against the f64 reference, bit for bit between one, two and three threads.

use std::sync::atomic::{AtomicUsize, Ordering};

use kernels::owned::{dense_forward, dense_forward_in_strips, WeightStrips, MAX_STRIPS};
use kernels::reference::{self, Path, Rng};
use kernels::{Activation, Error, ExecOptions, MatMut, MatRef, Threading};
use proptest::prelude::*;

const ACTIVATIONS: [Activation; 4] = [
    Activation::Identity,
    Activation::Relu,
    Activation::Sigmoid,
    Activation::Tanh,
];

fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
}

fn strips_partition(k: usize, n: usize) -> Result<(), TestCaseError> {
    let strips = WeightStrips::new(k, n);
    prop_assert_eq!(strips.count() == 0, k == 0, "k {} n {}", k, n);
    prop_assert!(strips.count() <= 8);
    let mut next = 0;
    for s in 0..strips.count() {
        let rows = strips.rows(s);
        prop_assert_eq!(rows.start, next, "k {} n {} strip {}", k, n, s);
        prop_assert!(rows.end > rows.start, "k {} n {} strip {} empty", k, n, s);
        next = rows.end;
    }
    prop_assert_eq!(next, k, "k {} n {}: the strips cover every row", k, n);
    prop_assert_eq!(
        strips,
        WeightStrips::new(k, n),
        "a function of the shape (and CPU)"
    );
    for most in 1..=MAX_STRIPS {
        let fewer = WeightStrips::at_most(k, n, most);
        prop_assert!(fewer.count() <= most, "k {} n {} most {}", k, n, most);
        prop_assert_eq!(fewer.count() == 0, k == 0);
        let mut next = 0;
        for s in 0..fewer.count() {
            let rows = fewer.rows(s);
            prop_assert_eq!(
                rows.start,
                next,
                "k {} n {} most {} strip {}",
                k,
                n,
                most,
                s
            );
            prop_assert!(
                rows.end > rows.start,
                "k {} n {} most {} strip {}",
                k,
                n,
                most,
                s
            );
            next = rows.end;
        }
        prop_assert_eq!(next, k, "k {} n {} most {}: every row", k, n, most);
        // The machine's strips are one of these.
        if most == kernels::owned::machine_strips() {
            prop_assert_eq!(fewer, strips);
        }
    }
    Ok(())
}

/// One `dense_forward` case: `x` (`m × k`, stored transposed when `x_t`), the `k × n` weights,
/// the bias when `with_bias`, all drawn from `seed`; in at most `strips` strips of another
/// machine (`dense_forward_in_strips`), or this machine's (`None`).
#[derive(Debug, Clone, Copy)]
struct Case {
    m: usize,
    k: usize,
    n: usize,
    x_t: bool,
    act: Activation,
    with_bias: bool,
    seed: u64,
    strips: Option<usize>,
}

/// `dense_forward` against the f64 reference: `act(x·w + bias)` within the GEMM's error bound
/// (plus the activation's own rounding).
fn check_forward(path: Path, case: Case) -> Result<Vec<f32>, String> {
    let Case {
        m,
        k,
        n,
        x_t,
        act,
        with_bias,
        seed,
        strips,
    } = case;
    let mut rng = Rng::new(seed);
    let x = rng.fill(m * k);
    let w = rng.fill(k * n);
    let bias = rng.fill(n);
    let xv = if x_t {
        MatRef::col_major(&x, m, k, m.max(1))
    } else {
        MatRef::row_major(&x, m, k, k.max(1))
    };
    let mut y = vec![f32::NAN; m * n];
    let b = with_bias.then_some(&bias[..]);
    match strips {
        None => dense_forward(&path.opts(), xv, &w, n, b, act, &mut y),
        Some(most) => {
            let strips = WeightStrips::at_most(k, n, most);
            dense_forward_in_strips(&path.opts(), strips, xv, &w, n, b, act, &mut y)
        }
    }
    .map_err(|e| e.to_string())?;
    let wv = MatRef::row_major(&w, k, n, n.max(1));
    let mut lin = vec![0.0; m * n];
    reference::gemm(
        1.0,
        xv,
        wv,
        0.0,
        MatMut::row_major(&mut lin, m, n, n.max(1)),
    )
    .map_err(|e| e.to_string())?;
    let none = vec![0.0; m * n];
    let bound =
        reference::gemm_error_bound(1.0, xv, wv, 0.0, MatRef::row_major(&none, m, n, n.max(1)));
    for i in 0..m {
        for j in 0..n {
            let pre = lin[i * n + j] as f64 + if with_bias { bias[j] as f64 } else { 0.0 };
            let want = reference::activation(act, pre);
            let tol = bound[i * n + j] + pre.abs() * 2f64.powi(-24) + want.abs() * 4e-7 + 1e-30;
            let got = y[i * n + j] as f64;
            if (got - want).abs() > tol || got.is_nan() {
                return Err(format!(
                    "{path} {act:?} bias {with_bias} x_t {x_t} {m}×{k}×{n}: y[{i}][{j}] = {got}, \
                     want {want} (±{tol})"
                ));
            }
        }
    }
    Ok(y)
}

fn check_forward_on_pools(case: Case, paths: Vec<Path>) -> Result<(), String> {
    let Case { m, k, n, act, .. } = case;
    let pools = [pool(1), pool(2), pool(3)];
    for path in paths {
        let ys: Vec<Vec<f32>> = pools
            .iter()
            .map(|p| p.install(|| check_forward(path, case)))
            .collect::<Result<_, _>>()?;
        for (t, y) in ys.iter().enumerate().skip(1) {
            if y.iter()
                .map(|v| v.to_bits())
                .ne(ys[0].iter().map(|v| v.to_bits()))
            {
                return Err(format!(
                    "{path} {act:?} {m}×{k}×{n}: {} threads give other bits than one",
                    t + 1
                ));
            }
        }
    }
    Ok(())
}

fn dim() -> impl Strategy<Value = usize> {
    prop_oneof![Just(0usize), Just(1), Just(13), 1usize..90, 90usize..900]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn strips_partition_the_rows(k in dim(), n in prop_oneof![Just(0usize), 1usize..600]) {
        strips_partition(k, n)?;
    }

    #[test]
    fn dense_forward_matches_reference_on_every_path_and_thread_count(
        m in prop_oneof![Just(0usize), Just(1), Just(32), 1usize..70],
        k in dim(),
        n in prop_oneof![Just(0usize), Just(1), Just(10), Just(128), 1usize..140],
        x_t: bool,
        act in 0usize..4,
        with_bias: bool,
        seed: u64,
        strips in prop_oneof![Just(None), Just(Some(1usize)), Just(Some(3)), Just(Some(8))],
    ) {
        let case = Case { m, k, n, x_t, act: ACTIVATIONS[act], with_bias, seed, strips };
        check_forward_on_pools(case, Path::all()).map_err(TestCaseError::fail)?;
    }
}

/// The layer shapes of the reference programs that take the owned path: Dense 784→128 and
/// 5408→128 at batch 32, and 784→512 at batch 128 (its partials summed by every thread of the
/// pool, in bands of rows) and at the last, short batch of an epoch; in this machine's strips
/// and in eight (seven partials).
#[test]
fn training_shapes() {
    for (m, k, n) in [
        (32, 784, 128),
        (32, 5408, 128),
        (128, 784, 512),
        (16, 784, 512),
    ] {
        for strips in [None, Some(MAX_STRIPS)] {
            let case = Case {
                m,
                k,
                n,
                x_t: false,
                act: Activation::Relu,
                with_bias: true,
                seed: 3,
                strips,
            };
            check_forward_on_pools(case, Path::for_large_cases()).unwrap();
        }
    }
}

/// Strips of another shape are refused, and nothing is written.
#[test]
fn strips_of_another_shape_are_a_mismatch() {
    let (x, w) = (vec![1.0f32; 4 * 100], vec![1.0f32; 100 * 8]);
    let mut y = vec![7.0f32; 4 * 8];
    let xv = MatRef::row_major(&x, 4, 100, 100);
    let other = WeightStrips::at_most(50, 8, 2);
    let opts = ExecOptions::default();
    let err = dense_forward_in_strips(&opts, other, xv, &w, 8, None, Activation::Relu, &mut y)
        .unwrap_err();
    assert!(err.to_string().contains("not those of a 100×8"), "{err}");
    assert!(y.iter().all(|&v| v == 7.0));
}

/// Every strip runs exactly once, whatever the pool's size and whether the call comes from
/// inside the pool or from outside it; the first error comes back and the other strips still run.
#[test]
fn every_strip_runs_once_on_any_pool() {
    let shapes = [1, 24, 100, 784, 5408].into_iter().flat_map(|k| {
        // This machine's strips, and eight (several per owner in pools of 2, 3 and 5).
        [
            WeightStrips::new(k, 128),
            WeightStrips::at_most(k, 128, MAX_STRIPS),
        ]
    });
    for strips in shapes {
        let k = strips.rows(strips.count() - 1).end;
        for threads in [1, 2, 3, 5, 9] {
            for threading in [Threading::Rayon, Threading::Single] {
                let runs: Vec<AtomicUsize> =
                    (0..strips.count()).map(|_| AtomicUsize::new(0)).collect();
                let count = |s: usize| {
                    runs[s].fetch_add(1, Ordering::Relaxed);
                    Ok(())
                };
                pool(threads)
                    .install(|| strips.run(threading, &count))
                    .unwrap();
                assert!(
                    runs.iter().all(|r| r.load(Ordering::Relaxed) == 1),
                    "k {k}, {threads} threads, {threading:?}"
                );
            }
        }
        // From a thread outside any pool.
        let runs: Vec<AtomicUsize> = (0..strips.count()).map(|_| AtomicUsize::new(0)).collect();
        strips
            .run(Threading::Rayon, &|s| {
                runs[s].fetch_add(1, Ordering::Relaxed);
                Ok(())
            })
            .unwrap();
        assert!(runs.iter().all(|r| r.load(Ordering::Relaxed) == 1), "k {k}");
    }
    let strips = WeightStrips::at_most(784, 128, MAX_STRIPS);
    assert!(strips.count() > 2);
    let ran = AtomicUsize::new(0);
    let failing = |s: usize| {
        ran.fetch_add(1, Ordering::Relaxed);
        if s == 1 {
            Err(Error::InvalidArgument {
                name: "strip",
                value: s.to_string(),
                reason: "refused".into(),
            })
        } else {
            Ok(())
        }
    };
    let err = pool(2)
        .install(|| strips.run(Threading::Rayon, &failing))
        .unwrap_err();
    assert_eq!(err.to_string(), "argument strip = 1 is invalid: refused");
    assert_eq!(ran.load(Ordering::Relaxed), strips.count());
}

#[test]
fn bad_arguments_are_errors_naming_them() {
    let opts = ExecOptions::default();
    let x = vec![0.0; 6];
    let run = |w_len: usize, n: usize, bias_len: Option<usize>, y_len: usize| {
        let w = vec![0.0; w_len];
        let bias = vec![0.0; bias_len.unwrap_or(0)];
        let mut y = vec![0.0; y_len];
        dense_forward(
            &opts,
            MatRef::row_major(&x, 2, 3, 3),
            &w,
            n,
            bias_len.map(|_| &bias[..]),
            Activation::Relu,
            &mut y,
        )
        .unwrap_err()
        .to_string()
    };
    assert_eq!(
        run(11, 4, None, 8),
        "dense_forward: the weights w has 11 elements but a 3×4 tensor needs 12"
    );
    assert_eq!(
        run(12, 4, None, 7),
        "dense_forward: the output y has 7 elements but a 2×4 tensor needs 8"
    );
    assert_eq!(
        run(12, 4, Some(3), 8),
        "dense_forward: the bias has 3 elements but the output has 4 columns"
    );
    assert!(run(12, usize::MAX, None, 8).contains("more elements than memory can hold"));
    // A view that reaches past its buffer.
    let mut y = vec![0.0; 8];
    let err = dense_forward(
        &opts,
        MatRef::row_major(&x, 3, 3, 3),
        &[0.0; 12],
        4,
        None,
        Activation::Identity,
        &mut y,
    )
    .unwrap_err();
    assert!(err.to_string().contains('X'), "{err}");
}
