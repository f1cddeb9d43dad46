//! Batch normalisation's training forward pass and max pooling as one pass, against the two
//! layers' own passes in turn (each tested against an f64 reference in `norm.rs` and `conv.rs`):
//! the same bits on every instruction-set path, on one thread and on the pool, over random shapes
//! (positions no window covers, strides past the window, channel counts across the lane groups
//! and the 32-channel blocks), every activation, gammas of either sign, and NaN inputs; and the
//! arguments' errors. The same for the two backward passes as one: the same bits where the
//! vector loops serve every channel block, the same values to rounding elsewhere.

use kernels::activation::Activation;
use kernels::conv_pool::PooledGradient;
use kernels::norm::{
    batch_norm_backward, batch_norm_forward_training, BatchNorm, BatchNormGrads, BatchStats,
};
use kernels::norm_pool::{batch_norm_max_pool_backward, batch_norm_max_pool_forward_training};
use kernels::pool::{max_pool2d_activation_backward, max_pool2d_forward, Pool2d};
use kernels::reference::Rng;
use kernels::{ExecOptions, Isa, Padding, Threading};
use proptest::prelude::*;

const EPSILON: f32 = 1e-3;

/// Everything either way writes: statistics, pooled output and argmax.
#[derive(Debug, Clone, PartialEq)]
struct Outputs {
    stats: [Vec<u32>; 3],
    y: Vec<u32>,
    argmax: Vec<u32>,
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// A case: the pooling, x, gamma and beta.
struct Case {
    p: Pool2d,
    x: Vec<f32>,
    gamma: Vec<f32>,
    beta: Vec<f32>,
}

fn case(p: Pool2d, seed: u64, nan_at: Option<usize>) -> Case {
    let mut rng = Rng::new(seed);
    let c = p.channels;
    // An offset and scale per channel, so the statistics are not trivially 0 and 1.
    let mut x: Vec<f32> = rng
        .fill(p.input_len())
        .iter()
        .enumerate()
        .map(|(i, &v)| 3.0 * v + (i % c) as f32 * 0.5)
        .collect();
    if let Some(i) = nan_at {
        let len = x.len();
        x[i % len] = f32::NAN;
    }
    // Gammas of either sign: a negative scale turns the window's order around.
    let gamma = rng.fill(c).iter().map(|v| 2.0 * v).collect();
    Case {
        x,
        gamma,
        beta: rng.fill(c),
        p,
    }
}

/// The two layers' passes in turn.
fn unfused(opts: &ExecOptions, k: &Case, act: Activation) -> Outputs {
    let (p, c) = (&k.p, k.p.channels);
    let mut stats = [vec![0.0; c], vec![0.0; c], vec![0.0; c]];
    let mut full = vec![0.0; p.input_len()];
    let [mean, variance, inv_std] = &mut stats;
    let s = BatchNorm {
        rows: p.batch * p.in_h * p.in_w,
        channels: c,
        epsilon: EPSILON,
    };
    let stats_out = BatchStats {
        mean,
        variance,
        inv_std,
    };
    batch_norm_forward_training(
        opts,
        &s,
        &k.x,
        (&k.gamma, &k.beta),
        act,
        &mut full,
        stats_out,
    )
    .unwrap();
    let (mut y, mut argmax) = (vec![0.0; p.output_len()], vec![0; p.output_len()]);
    max_pool2d_forward(opts, p, &full, &mut y, Some(&mut argmax)).unwrap();
    Outputs {
        stats: stats.map(|v| bits(&v)),
        y: bits(&y),
        argmax,
    }
}

/// The fused pass.
fn fused(opts: &ExecOptions, k: &Case, act: Activation) -> Outputs {
    let (p, c) = (&k.p, k.p.channels);
    let mut stats = [vec![0.0; c], vec![0.0; c], vec![0.0; c]];
    let (mut y, mut argmax) = (vec![0.0; p.output_len()], vec![0; p.output_len()]);
    let [mean, variance, inv_std] = &mut stats;
    batch_norm_max_pool_forward_training(
        opts,
        p,
        EPSILON,
        &k.x,
        (&k.gamma, &k.beta),
        act,
        (&mut y, &mut argmax),
        BatchStats {
            mean,
            variance,
            inv_std,
        },
    )
    .unwrap();
    Outputs {
        stats: stats.map(|v| bits(&v)),
        y: bits(&y),
        argmax,
    }
}

/// Every instruction-set path, each on the pool and on one thread.
fn every_path() -> Vec<(Isa, Threading, ExecOptions)> {
    let mut paths = vec![];
    for isa in Isa::available() {
        for threading in [Threading::Rayon, Threading::Single] {
            let opts = ExecOptions {
                threading,
                ..ExecOptions::with_isa(isa)
            };
            paths.push((isa, threading, opts));
        }
    }
    paths
}

/// Fused and unfused on every path, on the pool and on one thread: the same bits.
fn check(k: &Case, act: Activation) -> Result<(), String> {
    for (isa, threading, opts) in every_path() {
        let (want, got) = (unfused(&opts, k, act), fused(&opts, k, act));
        if got != want {
            return Err(format!(
                "{isa}, {threading:?}, {act:?}, {:?}: {}",
                k.p,
                first_difference(&got, &want)
            ));
        }
    }
    Ok(())
}

fn first_difference(got: &Outputs, want: &Outputs) -> String {
    let parts = |o: &Outputs| {
        [
            ("mean", o.stats[0].clone()),
            ("variance", o.stats[1].clone()),
            ("inv_std", o.stats[2].clone()),
            ("y", o.y.clone()),
            ("argmax", o.argmax.clone()),
        ]
    };
    for ((name, g), (_, w)) in parts(got).into_iter().zip(parts(want)) {
        if let Some(i) = (0..g.len()).find(|&i| g[i] != w[i]) {
            return format!(
                "{name}[{i}]: {} vs {}",
                f32::from_bits(g[i]),
                f32::from_bits(w[i])
            );
        }
    }
    "none".into()
}

fn pooling(batch: usize, (h, w, c): (usize, usize, usize), pool: (usize, usize)) -> Pool2d {
    Pool2d {
        pool_h: pool.0,
        pool_w: pool.1,
        stride_h: pool.0,
        stride_w: pool.1,
        ..Pool2d::new(batch, (h, w, c), 1)
    }
}

#[test]
fn the_reference_cnn_layer_matches_the_two_passes() {
    // Program F's first normalisation: 26×26×16, batch 64 — large enough for the stripes to
    // run in parallel — and an odd-sized sibling whose last row and column no window covers.
    for (p, seed) in [
        (pooling(64, (26, 26, 16), (2, 2)), 1),
        (pooling(9, (27, 25, 32), (2, 2)), 2),
    ] {
        for act in [Activation::Relu, Activation::Identity] {
            let k = case(p, seed, None);
            assert_eq!(check(&k, act), Ok(()));
            assert_eq!(check_backward(&k, act, seed), Ok(()));
        }
    }
}

#[test]
fn a_nan_input_spreads_as_in_the_two_passes() {
    // 9 channels: the portable loops; 8 to 32: the vector paths' channel counts.
    for c in [9, 8, 16, 24, 32] {
        let p = pooling(2, (7, 7, c), (2, 2));
        for (at, act) in [
            (0, Activation::Relu),
            (60, Activation::Tanh),
            (440, Activation::Identity),
            (7 * c + 3, Activation::Relu),
            (8 * c + 5, Activation::Identity),
        ] {
            assert_eq!(
                check(&case(p, 3, Some(at)), act),
                Ok(()),
                "{c} channels, NaN at {at}"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]
    #[test]
    /// Forward and backward, each against the two layers' passes (see `check`,
    /// `check_backward`).
    fn fused_passes_match_the_two_layers(
        batch in 1usize..4,
        h in 1usize..10,
        w in 1usize..10,
        channels in prop_oneof![
            Just(1usize), Just(8), Just(16), Just(24), Just(32), Just(33), Just(40), Just(67),
            1usize..80
        ],
        pool in (1usize..4, 1usize..4),
        extra in (0usize..3, 0usize..3),
        act in prop_oneof![
            Just(Activation::Identity),
            Just(Activation::Relu),
            Just(Activation::Sigmoid),
            Just(Activation::Tanh)
        ],
        seed: u64,
    ) {
        let p = Pool2d {
            pool_h: pool.0.min(h),
            pool_w: pool.1.min(w),
            stride_h: pool.0.min(h) + extra.0,
            stride_w: pool.1.min(w) + extra.1,
            ..Pool2d::new(batch, (h, w, channels), 1)
        };
        let k = case(p, seed, None);
        prop_assert_eq!(check(&k, act), Ok(()));
        prop_assert_eq!(check_backward(&k, act, seed), Ok(()));
    }
}

#[test]
fn bad_arguments_are_errors() {
    let k = case(pooling(2, (6, 6, 4), (2, 2)), 4, None);
    let p = k.p;
    let (mut y, mut argmax) = (vec![0.0; p.output_len()], vec![0u32; p.output_len()]);
    let c = p.channels;
    let mut st = [vec![0.0; c], vec![0.0; c], vec![0.0; c]];
    let mut forward = |p: &Pool2d, x: &[f32], epsilon: f32, y: &mut [f32], a: &mut [u32]| {
        let [mean, variance, inv_std] = &mut st;
        batch_norm_max_pool_forward_training(
            &ExecOptions::default(),
            p,
            epsilon,
            x,
            (&k.gamma, &k.beta),
            Activation::Relu,
            (y, a),
            BatchStats {
                mean,
                variance,
                inv_std,
            },
        )
        .map_err(|e| e.to_string())
    };
    // Overlapping windows, or 'same' padding: the fused passes refuse them.
    let overlapping = Pool2d { stride_h: 1, ..p };
    let same = Pool2d {
        padding: Padding::Same,
        ..p
    };
    for q in [overlapping, same] {
        let (mut y2, mut a2) = (vec![0.0; q.output_len()], vec![0; q.output_len()]);
        let e = forward(&q, &k.x, EPSILON, &mut y2, &mut a2).unwrap_err();
        assert!(e.contains("windows apart"), "{e}");
    }
    let e = forward(&p, &k.x[1..], EPSILON, &mut y, &mut argmax).unwrap_err();
    assert!(e.contains("input x"), "{e}");
    let e = forward(&p, &k.x, 0.0, &mut y, &mut argmax).unwrap_err();
    assert!(e.contains("epsilon"), "{e}");
    let e = forward(&p, &k.x, EPSILON, &mut y[1..], &mut argmax).unwrap_err();
    assert!(e.contains("pooled output"), "{e}");
    let empty = Pool2d { batch: 0, ..p };
    let e = forward(&empty, &[], EPSILON, &mut [], &mut []).unwrap_err();
    assert!(e.contains("at least one row"), "{e}");
    forward(&p, &k.x, EPSILON, &mut y, &mut argmax).unwrap();
}

/// The backward passes' results: the input gradient, dgamma and dbeta.
type Gradients = (Vec<f32>, Vec<f32>, Vec<f32>);

/// The forward pass's outputs a backward pass reads (statistics, pooled output, argmax) and a
/// pooled gradient.
struct Forward {
    mean: Vec<f32>,
    inv_std: Vec<f32>,
    y: Vec<f32>,
    argmax: Vec<u32>,
    dy: Vec<f32>,
}

fn forward_for_backward(opts: &ExecOptions, k: &Case, act: Activation, seed: u64) -> Forward {
    let (p, c) = (&k.p, k.p.channels);
    let (mut mean, mut variance, mut inv_std) = (vec![0.0; c], vec![0.0; c], vec![0.0; c]);
    let (mut y, mut argmax) = (vec![0.0; p.output_len()], vec![0; p.output_len()]);
    batch_norm_max_pool_forward_training(
        opts,
        p,
        EPSILON,
        &k.x,
        (&k.gamma, &k.beta),
        act,
        (&mut y, &mut argmax),
        BatchStats {
            mean: &mut mean,
            variance: &mut variance,
            inv_std: &mut inv_std,
        },
    )
    .unwrap();
    Forward {
        mean,
        inv_std,
        y,
        argmax,
        dy: Rng::new(seed ^ 0x5eed).fill(p.output_len()),
    }
}

/// The pooling's backward pass (through the activation) then the normalisation's.
fn backward_unfused(opts: &ExecOptions, k: &Case, act: Activation, f: &Forward) -> Gradients {
    let (p, c) = (&k.p, k.p.channels);
    let mut through = vec![f32::NAN; p.input_len()];
    max_pool2d_activation_backward(opts, p, act, &f.y, &f.dy, &f.argmax, &mut through).unwrap();
    let s = BatchNorm {
        rows: p.batch * p.in_h * p.in_w,
        channels: c,
        epsilon: EPSILON,
    };
    let (mut dx, mut dgamma, mut dbeta) =
        (vec![f32::NAN; p.input_len()], vec![0.0; c], vec![0.0; c]);
    let grads = BatchNormGrads {
        dgamma: &mut dgamma,
        dbeta: &mut dbeta,
    };
    let stats = (&f.mean[..], &f.inv_std[..]);
    batch_norm_backward(
        opts,
        &s,
        &k.x,
        &through,
        None,
        &k.gamma,
        stats,
        Some(&mut dx),
        grads,
    )
    .unwrap();
    (dx, dgamma, dbeta)
}

fn backward_fused(
    opts: &ExecOptions,
    k: &Case,
    act: Activation,
    f: &Forward,
) -> Result<Gradients, String> {
    let (p, c) = (&k.p, k.p.channels);
    let (mut dx, mut dgamma, mut dbeta) = (
        vec![f32::NAN; p.input_len()],
        vec![f32::NAN; c],
        vec![f32::NAN; c],
    );
    let pooled = PooledGradient {
        act,
        y_pool: &f.y,
        dy_pool: &f.dy,
        argmax: &f.argmax,
    };
    let grads = BatchNormGrads {
        dgamma: &mut dgamma,
        dbeta: &mut dbeta,
    };
    let stats = (&f.mean[..], &f.inv_std[..]);
    batch_norm_max_pool_backward(
        opts,
        p,
        EPSILON,
        &k.x,
        pooled,
        &k.gamma,
        stats,
        Some(&mut dx),
        grads,
    )
    .map_err(|e| e.to_string())?;
    Ok((dx, dgamma, dbeta))
}

/// Fused and unfused backward on every path, on the pool and on one thread: the same bits where
/// the vector loops take every channel block (x86 paths, channels a multiple of 8), the same
/// values to f32 rounding of the sums elsewhere (the portable loops add their f64 sums per block
/// of rows there, per stripe in the two passes).
fn check_backward(k: &Case, act: Activation, seed: u64) -> Result<(), String> {
    for (isa, threading, opts) in every_path() {
        let f = forward_for_backward(&opts, k, act, seed);
        let want = backward_unfused(&opts, k, act, &f);
        let got = backward_fused(&opts, k, act, &f)?;
        let exact = matches!(isa, Isa::Avx512 | Isa::Avx2) && k.p.channels.is_multiple_of(8);
        for (name, g, w) in [
            ("dx", &got.0, &want.0),
            ("dgamma", &got.1, &want.1),
            ("dbeta", &got.2, &want.2),
        ] {
            let scale = w.iter().fold(1.0f32, |m, v| m.max(v.abs()));
            let same = |a: f32, b: f32| {
                if exact {
                    a.to_bits() == b.to_bits()
                } else {
                    (a.is_nan() && b.is_nan()) || (a - b).abs() <= 1e-5 * scale
                }
            };
            if let Some(i) = (0..w.len()).find(|&i| !same(g[i], w[i])) {
                return Err(format!(
                    "{isa}, {threading:?}, {act:?}, {:?}: {name}[{i}] {} vs {}",
                    k.p, g[i], w[i]
                ));
            }
        }
    }
    Ok(())
}

#[test]
fn bad_backward_arguments_are_errors_that_write_nothing() {
    let k = case(pooling(2, (6, 6, 8), (2, 2)), 5, None);
    let opts = ExecOptions::default();
    let mut f = forward_for_backward(&opts, &k, Activation::Relu, 5);
    // An argmax entry outside its window: an error, and dx, dgamma and dbeta untouched.
    f.argmax[3] += 1;
    let (mut dx, mut dgamma, mut dbeta) = (vec![7.0; k.p.input_len()], vec![7.0; 8], vec![7.0; 8]);
    let pooled = PooledGradient {
        act: Activation::Relu,
        y_pool: &f.y,
        dy_pool: &f.dy,
        argmax: &f.argmax,
    };
    let grads = BatchNormGrads {
        dgamma: &mut dgamma,
        dbeta: &mut dbeta,
    };
    let stats = (&f.mean[..], &f.inv_std[..]);
    let e = batch_norm_max_pool_backward(
        &opts,
        &k.p,
        EPSILON,
        &k.x,
        pooled,
        &k.gamma,
        stats,
        Some(&mut dx),
        grads,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("argmax"), "{e}");
    assert!(dx.iter().chain(&dgamma).chain(&dbeta).all(|&v| v == 7.0));
    f.argmax[3] -= 1;
    let p = k.p;
    let c = p.channels;
    let run = |p: &Pool2d, x: &[f32], dy: &[f32], dx_len: usize, gamma: &[f32]| {
        let mut dx = vec![0.0; dx_len];
        let (mut dgamma, mut dbeta) = (vec![0.0; c], vec![0.0; c]);
        let pooled = PooledGradient {
            act: Activation::Relu,
            y_pool: &f.y,
            dy_pool: dy,
            argmax: &f.argmax,
        };
        let grads = BatchNormGrads {
            dgamma: &mut dgamma,
            dbeta: &mut dbeta,
        };
        batch_norm_max_pool_backward(
            &opts,
            p,
            EPSILON,
            x,
            pooled,
            gamma,
            (&f.mean, &f.inv_std),
            Some(&mut dx),
            grads,
        )
        .map_err(|e| e.to_string())
    };
    let overlapping = Pool2d { stride_h: 1, ..p };
    let e = run(&overlapping, &k.x, &f.dy, p.input_len(), &k.gamma).unwrap_err();
    assert!(e.contains("windows apart"), "{e}");
    let e = run(&p, &k.x[1..], &f.dy, p.input_len(), &k.gamma).unwrap_err();
    assert!(e.contains("input x"), "{e}");
    let e = run(&p, &k.x, &f.dy[1..], p.input_len(), &k.gamma).unwrap_err();
    assert!(e.contains("pooled gradient"), "{e}");
    let e = run(&p, &k.x, &f.dy, p.input_len() - 1, &k.gamma).unwrap_err();
    assert!(e.contains("input gradient"), "{e}");
    let e = run(&p, &k.x, &f.dy, p.input_len(), &k.gamma[1..]).unwrap_err();
    assert!(e.contains("gamma"), "{e}");
    run(&p, &k.x, &f.dy, p.input_len(), &k.gamma).unwrap();
}
