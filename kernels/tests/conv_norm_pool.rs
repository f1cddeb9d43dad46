//! A first convolution's, its batch normalisation's and the max pooling's backward passes as
//! one (`conv2d_batch_norm_max_pool_backward`) against the normalisation and pooling's fused pass
//! (tested against the layers' own passes in `norm_pool.rs`) then the convolution's weight pass:
//! the same bits on every instruction-set path, on one thread and on the pool, for one-channel
//! convolutions (the direct kernels: kernel sizes, paddings, strides, several images per task)
//! and others (the gradient formed whole); and the arguments' errors, which write nothing.

use kernels::activation::Activation;
use kernels::conv::{conv2d_backward_weights, Conv2d, Padding};
use kernels::conv_norm_pool::{conv2d_batch_norm_max_pool_backward, ConvGrads, Normalisation};
use kernels::conv_pool::PooledGradient;
use kernels::norm::{BatchNormGrads, BatchStats};
use kernels::norm_pool::{batch_norm_max_pool_backward, batch_norm_max_pool_forward_training};
use kernels::pool::Pool2d;
use kernels::reference::Rng;
use kernels::{ExecOptions, Isa, Threading};
use proptest::prelude::*;

const EPSILON: f32 = 1e-3;

/// A case: the convolution, its input, the normalisation's input (the convolution's output),
/// γ, β, the pooling over that output and its gradient.
struct Case {
    s: Conv2d,
    x: Vec<f32>,
    z: Vec<f32>,
    gamma: Vec<f32>,
    beta: Vec<f32>,
    p: Pool2d,
    dy_pool: Vec<f32>,
}

fn case(s: Conv2d, pool: usize, seed: u64) -> Case {
    let mut rng = Rng::new(seed);
    let p = Pool2d {
        pool_h: pool.min(s.out_h()),
        pool_w: pool.min(s.out_w()),
        stride_h: pool.min(s.out_h()),
        stride_w: pool.min(s.out_w()),
        ..Pool2d::new(s.batch, (s.out_h(), s.out_w(), s.out_c), 1)
    };
    let z = rng
        .fill(s.output_len())
        .iter()
        .enumerate()
        .map(|(i, &v)| 2.0 * v + (i % s.out_c) as f32 * 0.25)
        .collect();
    Case {
        x: rng.fill(s.input_len()),
        z,
        gamma: rng.fill(s.out_c).iter().map(|v| 2.0 * v).collect(),
        beta: rng.fill(s.out_c),
        dy_pool: rng.fill(p.output_len()),
        s,
        p,
    }
}

/// What the forward pass left for the backward passes: statistics, pooled output, argmax.
struct Forward {
    mean: Vec<f32>,
    inv_std: Vec<f32>,
    y: Vec<f32>,
    argmax: Vec<u32>,
}

fn forward(opts: &ExecOptions, k: &Case, act: Activation) -> Forward {
    let (p, c) = (&k.p, k.s.out_c);
    let (mut mean, mut variance, mut inv_std) = (vec![0.0; c], vec![0.0; c], vec![0.0; c]);
    let (mut y, mut argmax) = (vec![0.0; p.output_len()], vec![0; p.output_len()]);
    batch_norm_max_pool_forward_training(
        opts,
        p,
        EPSILON,
        &k.z,
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
    }
}

/// dgamma, dbeta, dw, db.
type Grads = [Vec<f32>; 4];

fn pooled<'a>(k: &'a Case, act: Activation, f: &'a Forward) -> PooledGradient<'a> {
    PooledGradient {
        act,
        y_pool: &f.y,
        dy_pool: &k.dy_pool,
        argmax: &f.argmax,
    }
}

fn two_calls(opts: &ExecOptions, k: &Case, act: Activation, f: &Forward) -> Grads {
    let (s, c) = (&k.s, k.s.out_c);
    let (mut dgamma, mut dbeta) = (vec![f32::NAN; c], vec![f32::NAN; c]);
    let mut dz = vec![f32::NAN; s.output_len()];
    batch_norm_max_pool_backward(
        opts,
        &k.p,
        EPSILON,
        &k.z,
        pooled(k, act, f),
        &k.gamma,
        (&f.mean, &f.inv_std),
        Some(&mut dz),
        BatchNormGrads {
            dgamma: &mut dgamma,
            dbeta: &mut dbeta,
        },
    )
    .unwrap();
    let (mut dw, mut db) = (vec![f32::NAN; s.weight_len()], vec![f32::NAN; c]);
    conv2d_backward_weights(opts, s, &k.x, &dz, &mut dw, Some(&mut db)).unwrap();
    [dgamma, dbeta, dw, db]
}

fn one_call(opts: &ExecOptions, k: &Case, act: Activation, f: &Forward) -> Result<Grads, String> {
    let (s, c) = (&k.s, k.s.out_c);
    let (mut dgamma, mut dbeta) = (vec![f32::NAN; c], vec![f32::NAN; c]);
    let (mut dw, mut db) = (vec![f32::NAN; s.weight_len()], vec![f32::NAN; c]);
    conv2d_batch_norm_max_pool_backward(
        opts,
        s,
        &k.x,
        &k.p,
        normalisation(k, f),
        pooled(k, act, f),
        BatchNormGrads {
            dgamma: &mut dgamma,
            dbeta: &mut dbeta,
        },
        ConvGrads {
            dw: &mut dw,
            db: Some(&mut db),
        },
    )
    .map_err(|e| e.to_string())?;
    Ok([dgamma, dbeta, dw, db])
}

fn normalisation<'a>(k: &'a Case, f: &'a Forward) -> Normalisation<'a> {
    Normalisation {
        x: &k.z,
        epsilon: EPSILON,
        gamma: &k.gamma,
        mean: &f.mean,
        inv_std: &f.inv_std,
    }
}

fn bits(g: &Grads) -> Vec<Vec<u32>> {
    g.iter()
        .map(|v| v.iter().map(|x| x.to_bits()).collect())
        .collect()
}

/// One call and two on every path, on the pool and on one thread: the same bits.
fn check(k: &Case, act: Activation) -> Result<(), String> {
    for isa in Isa::available() {
        for threading in [Threading::Rayon, Threading::Single] {
            let opts = ExecOptions {
                threading,
                ..ExecOptions::with_isa(isa)
            };
            let f = forward(&opts, k, act);
            let (want, got) = (two_calls(&opts, k, act, &f), one_call(&opts, k, act, &f)?);
            if bits(&got) != bits(&want) {
                return Err(format!("{isa}, {threading:?}, {act:?}, {:?}", k.s));
            }
        }
    }
    Ok(())
}

#[test]
fn program_f_first_block_matches_the_two_calls() {
    // Program F's first block at a batch with several images per task, and a 'same' sibling.
    let valid = Conv2d::square(70, (28, 28, 1), 16, 3, Padding::Valid);
    let same = Conv2d::square(3, (13, 11, 1), 24, 3, Padding::Same);
    for (s, act) in [(valid, Activation::Relu), (same, Activation::Tanh)] {
        assert_eq!(check(&case(s, 2, 1), act), Ok(()));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn one_call_matches_the_two(
        batch in 1usize..5,
        (h, w) in (3usize..12, 3usize..12),
        in_c in prop_oneof![Just(1usize), Just(1), 2usize..5],
        out_c in prop_oneof![Just(8usize), Just(16), 1usize..40],
        k in 1usize..5,
        stride in 1usize..3,
        same: bool,
        pool in 1usize..4,
        act in prop_oneof![
            Just(Activation::Identity),
            Just(Activation::Relu),
            Just(Activation::Sigmoid),
            Just(Activation::Tanh)
        ],
        seed: u64,
    ) {
        let k = if same { k } else { k.min(h).min(w) };
        let s = Conv2d {
            stride_h: stride,
            stride_w: stride,
            ..Conv2d::square(
                batch,
                (h, w, in_c),
                out_c,
                k,
                if same { Padding::Same } else { Padding::Valid },
            )
        };
        prop_assert_eq!(check(&case(s, pool, seed), act), Ok(()));
    }
}

#[test]
fn bad_arguments_are_errors_that_write_nothing() {
    let s = Conv2d::square(2, (8, 8, 1), 8, 3, Padding::Valid);
    let k = case(s, 2, 3);
    let opts = ExecOptions::default();
    let mut f = forward(&opts, &k, Activation::Relu);
    let run = |k: &Case, f: &Forward, s: &Conv2d, dw_len: usize| {
        let (mut dgamma, mut dbeta) = (vec![7.0; 8], vec![7.0; 8]);
        let (mut dw, mut db) = (vec![7.0; dw_len], vec![7.0; 8]);
        let r = conv2d_batch_norm_max_pool_backward(
            &opts,
            s,
            &k.x,
            &k.p,
            normalisation(k, f),
            pooled(k, Activation::Relu, f),
            BatchNormGrads {
                dgamma: &mut dgamma,
                dbeta: &mut dbeta,
            },
            ConvGrads {
                dw: &mut dw,
                db: Some(&mut db),
            },
        );
        let untouched = [dgamma, dbeta, dw, db]
            .iter()
            .all(|v| v.iter().all(|&x| x == 7.0));
        (r.map_err(|e| e.to_string()), untouched)
    };
    let (e, untouched) = run(&k, &f, &s, s.weight_len() + 1);
    assert!(e.unwrap_err().contains("weight gradient dw"));
    assert!(untouched);
    // The pooling must pool the convolution's output.
    let smaller = Conv2d {
        kernel_h: 2,
        kernel_w: 2,
        ..s
    };
    let (e, untouched) = run(&k, &f, &smaller, smaller.weight_len());
    assert!(e.unwrap_err().contains("the convolution gives"));
    assert!(untouched);
    // An argmax entry outside its window.
    f.argmax[3] += 1;
    let (e, untouched) = run(&k, &f, &s, s.weight_len());
    assert!(e.unwrap_err().contains("argmax"));
    assert!(untouched);
}
