//! `optim::update_from_product` on every path against its two halves run apart: the gradient
//! product on one thread, then the rule's own update function; the input-gradient product with
//! the weights before the step. Bit for bit on our paths (the fused call runs the same products
//! a block of rows at a time, and an element of our product does not depend on which rows it
//! is computed with); on the OpenBLAS path, whose kernels change with the block's shape, within
//! 1e-5 relative. Bit for bit between one and two threads on every path.

use kernels::optim::{adam_update, rmsprop_update, sgd_update, update_from_product, Rule};
use kernels::reference::Path;
use kernels::{gemm_with, Backend, ExecOptions, MatMut, MatRef, Threading};
use proptest::prelude::*;

fn data(n: usize, seed: u64) -> Vec<f32> {
    kernels::reference::Rng::new(seed).fill(n)
}

fn rules() -> [Rule; 5] {
    [
        Rule::Sgd {
            lr: 0.1,
            momentum: 0.0,
            nesterov: false,
        },
        Rule::Sgd {
            lr: 0.05,
            momentum: 0.9,
            nesterov: false,
        },
        Rule::Sgd {
            lr: 0.05,
            momentum: 0.8,
            nesterov: true,
        },
        Rule::Adam {
            alpha: 0.003,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-7,
        },
        Rule::RmsProp {
            lr: 0.001,
            rho: 0.9,
            eps: 1e-7,
        },
    ]
}

/// The inputs of one case: `a` (m × k) stored transposed when `a_t` (a column-major view),
/// `b` (m × n), weights and state.
struct Case {
    m: usize,
    k: usize,
    n: usize,
    a_t: bool,
    a: Vec<f32>,
    b: Vec<f32>,
    w: Vec<f32>,
    state: [Vec<f32>; 2],
}

impl Case {
    fn new(m: usize, k: usize, n: usize, a_t: bool, seed: u64) -> Case {
        let positive = |v: Vec<f32>| v.into_iter().map(f32::abs).collect();
        Case {
            m,
            k,
            n,
            a_t,
            a: data(m * k, seed),
            b: data(m * n, seed + 1),
            w: data(k * n, seed + 2),
            // Positive: RMSprop's and Adam's second state are mean squares.
            state: [
                positive(data(k * n, seed + 3)),
                positive(data(k * n, seed + 4)),
            ],
        }
    }

    fn a(&self) -> MatRef<'_> {
        if self.a_t {
            MatRef::col_major(&self.a, self.m, self.k, self.m)
        } else {
            MatRef::row_major(&self.a, self.m, self.k, self.k)
        }
    }

    fn b(&self) -> MatRef<'_> {
        MatRef::row_major(&self.b, self.m, self.n, self.n)
    }

    /// (w, state, d) after the fused call.
    fn fused(&self, path: Path, rule: Rule, with_d: bool) -> (Vec<f32>, Vec<Vec<f32>>, Vec<f32>) {
        let mut w = self.w.clone();
        let mut state: Vec<Vec<f32>> = self.state[..rule.state_buffers()].to_vec();
        let mut d = vec![f32::NAN; self.m * self.k];
        let mut views: Vec<&mut [f32]> = state.iter_mut().map(|s| &mut s[..]).collect();
        update_from_product(
            &path.opts(),
            rule,
            self.a(),
            self.b(),
            &mut w,
            &mut views,
            with_d.then_some(&mut d[..]),
        )
        .unwrap();
        (w, state, d)
    }

    /// The same, as a product on one thread and then the rule's update function.
    fn apart(&self, path: Path, rule: Rule) -> (Vec<f32>, Vec<Vec<f32>>, Vec<f32>) {
        let single = ExecOptions {
            threading: Threading::Single,
            ..path.opts()
        };
        let (m, k, n) = (self.m, self.k, self.n);
        let mut d = vec![0.0; m * k];
        gemm_with(
            &single,
            1.0,
            self.b(),
            MatRef::row_major(&self.w, k, n, n).t(),
            0.0,
            MatMut::row_major(&mut d, m, k, k),
        )
        .unwrap();
        let mut g = vec![0.0; k * n];
        gemm_with(
            &single,
            1.0,
            self.a().t(),
            self.b(),
            0.0,
            MatMut::row_major(&mut g, k, n, n),
        )
        .unwrap();
        let mut w = self.w.clone();
        let [mut s0, mut s1] = self.state.clone();
        let opts = &path.opts();
        match rule {
            Rule::Sgd {
                lr,
                momentum,
                nesterov,
            } => {
                let vel = (momentum != 0.0).then_some(&mut s0[..]);
                sgd_update(opts, &mut w, &g, vel, lr, momentum, nesterov).unwrap()
            }
            Rule::Adam {
                alpha,
                beta1,
                beta2,
                eps,
            } => adam_update(opts, &mut w, &g, &mut s0, &mut s1, alpha, beta1, beta2, eps).unwrap(),
            Rule::RmsProp { lr, rho, eps } => {
                rmsprop_update(opts, &mut w, &g, &mut s0, lr, rho, eps).unwrap()
            }
        }
        let state = [s0, s1][..rule.state_buffers()].to_vec();
        (w, state, d)
    }
}

fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
}

fn check(case: &Case, with_d: bool) -> Result<(), TestCaseError> {
    check_on(case, with_d, Path::all())
}

fn check_on(case: &Case, with_d: bool, paths: Vec<Path>) -> Result<(), TestCaseError> {
    let (one, two) = (pool(1), pool(2));
    for path in paths {
        for rule in rules() {
            let what = format!(
                "{path} {rule:?} m {} k {} n {} a_t {} d {with_d}",
                case.m, case.k, case.n, case.a_t
            );
            let fused = two.install(|| case.fused(path, rule, with_d));
            let apart = case.apart(path, rule);
            let same = |x: &[f32], y: &[f32]| {
                if path.backend == Backend::OpenBlas {
                    x.len() == y.len()
                        && x.iter()
                            .zip(y)
                            .all(|(a, b)| (a - b).abs() <= 1e-5 * (1.0 + b.abs()))
                } else {
                    x == y
                }
            };
            prop_assert!(same(&fused.0, &apart.0), "weights differ: {}", what);
            for (f, a) in fused.1.iter().zip(&apart.1) {
                prop_assert!(same(f, a), "state differs: {}", what);
            }
            if with_d {
                prop_assert!(same(&fused.2, &apart.2), "input gradient differs: {}", what);
            } else {
                prop_assert!(fused.2.iter().all(|v| v.is_nan()), "d written: {}", what);
            }
            let single_thread = one.install(|| case.fused(path, rule, with_d));
            prop_assert!(
                single_thread.0 == fused.0 && (!with_d || single_thread.2 == fused.2),
                "1 vs 2 threads: {}",
                what
            );
        }
    }
    Ok(())
}

fn dim() -> impl Strategy<Value = usize> {
    prop_oneof![Just(1usize), Just(7), Just(13), 1usize..80, 80usize..400]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn fused_update_is_the_product_then_the_rule(
        m in prop_oneof![Just(1usize), Just(32), 1usize..70],
        k in dim(),
        n in prop_oneof![Just(1usize), Just(10), Just(128), 1usize..140],
        a_t: bool,
        with_d: bool,
        seed: u64,
    ) {
        check(&Case::new(m, k, n, a_t, seed), with_d)?;
    }
}

/// The layer shapes of the reference programs (dense 784→128, 784→512 at batch 128, 5408→128,
/// 128→10), small batches over wide layers, an empty batch (the gradient is zero; the rule still runs) and no units (no
/// weights; the input gradient is a sum over nothing, zero).
#[test]
fn training_shapes() {
    for (m, k, n) in [
        (32, 784, 128),
        (128, 784, 512),
        (32, 5408, 128),
        (32, 128, 10),
        // Batches of 2–4 over more than 128 units: the whole input gradient is formed as dot
        // products there, and the fused step's blocks must give its bits.
        (2, 784, 200),
        (3, 300, 129),
        (4, 5408, 256),
        // 2–4 inputs under more than 128 units: the input gradient's few columns likewise.
        (32, 3, 300),
        (7, 2, 129),
        (3, 4, 500),
        // One unit at a batch above 128: the weight gradient's last block of rows has 2–4
        // (100 = 4·24 + 4, 27 = 24 + 3), whose one-column products must sum as the whole's.
        (256, 100, 1),
        (200, 27, 1),
        (0, 20, 3),
        (5, 7, 0),
    ] {
        check_on(&Case::new(m, k, n, false, 7), true, Path::for_large_cases()).unwrap();
    }
}

#[test]
fn bad_arguments_are_errors_naming_them() {
    let adam = Rule::Adam {
        alpha: 0.001,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-7,
    };
    let opts = ExecOptions::default();
    let (a, b) = (vec![0.0; 6], vec![0.0; 8]);
    let (mut w, mut s0, mut s1) = (vec![0.0; 12], vec![0.0; 12], vec![0.0; 12]);
    let mut run =
        |a_rows: usize, w_len: usize, states: usize, s_len: usize, d_len: Option<usize>| {
            let mut d = vec![0.0; d_len.unwrap_or(0)];
            let mut views: Vec<&mut [f32]> = vec![&mut s0[..s_len], &mut s1[..s_len]];
            views.truncate(states);
            update_from_product(
                &opts,
                adam,
                MatRef::row_major(&a, a_rows, 6 / a_rows, 6 / a_rows),
                MatRef::row_major(&b, 2, 4, 4),
                &mut w[..w_len],
                &mut views,
                d_len.map(|_| &mut d[..]),
            )
            .unwrap_err()
            .to_string()
        };
    assert_eq!(
        run(3, 12, 2, 12, None),
        "update_from_product: a is 3×2 and b is 2×4: they need the same number of rows"
    );
    assert_eq!(
        run(2, 10, 2, 12, None),
        "update_from_product: the weights w has 10 elements but a 3×4 tensor needs 12"
    );
    assert_eq!(
        run(2, 12, 1, 12, None),
        "argument state = 1 buffers is invalid: Adam { alpha: 0.001, beta1: 0.9, beta2: 0.999, \
         eps: 1e-7 } keeps 2 state buffers"
    );
    assert_eq!(
        run(2, 12, 2, 11, None),
        "update_from_product: a state buffer has 11 elements but a 3×4 tensor needs 12"
    );
    assert_eq!(
        run(2, 12, 2, 12, Some(5)),
        "update_from_product: the input gradient d has 5 elements but a 2×3 tensor needs 6"
    );
}
