//! Batch normalisation's training forward pass and max pooling as one pass, against the two
//! layers' own passes in turn (each tested against an f64 reference in `norm.rs` and `conv.rs`):
//! the same bits on every instruction-set path, on one thread and on the pool, over random shapes
//! (positions no window covers, strides past the window, channel counts across the lane groups
//! and the 32-channel blocks), every activation, gammas of either sign, and NaN inputs; and the
//! arguments' errors.

use kernels::activation::Activation;
use kernels::norm::{batch_norm_forward_training, BatchNorm, BatchStats};
use kernels::norm_pool::batch_norm_max_pool_forward_training;
use kernels::pool::{max_pool2d_forward, Pool2d};
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

/// Fused and unfused on every path, on the pool and on one thread: the same bits.
fn check(k: &Case, act: Activation) -> Result<(), String> {
    for isa in Isa::available() {
        for threading in [Threading::Rayon, Threading::Single] {
            let opts = ExecOptions {
                threading,
                ..ExecOptions::with_isa(isa)
            };
            let (want, got) = (unfused(&opts, k, act), fused(&opts, k, act));
            if got != want {
                return Err(format!(
                    "{isa}, {threading:?}, {act:?}, {:?}: {}",
                    k.p,
                    first_difference(&got, &want)
                ));
            }
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
            assert_eq!(check(&case(p, seed, None), act), Ok(()));
        }
    }
}

#[test]
fn a_nan_input_spreads_as_in_the_two_passes() {
    let p = pooling(2, (7, 7, 9), (2, 2));
    for (at, act) in [
        (0, Activation::Relu),
        (60, Activation::Tanh),
        (440, Activation::Identity),
    ] {
        assert_eq!(check(&case(p, 3, Some(at)), act), Ok(()));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]
    #[test]
    fn fused_passes_match_the_two_layers_bit_for_bit(
        batch in 1usize..4,
        h in 1usize..10,
        w in 1usize..10,
        channels in prop_oneof![Just(1usize), Just(8), Just(16), Just(33), Just(67), 1usize..80],
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
        prop_assert_eq!(check(&case(p, seed, None), act), Ok(()));
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
