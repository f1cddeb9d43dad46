//! Convolution and average pooling as one pass each way (`kernels::conv_avg_pool`) against the
//! calls in turn (each tested against an f64 reference in `conv.rs`): the same bits on every
//! instruction-set path, on one thread and on the pool, over random shapes — one input channel
//! (the direct kernels) and more, paddings and strides of both, pools that overlap or leave
//! positions out — every activation; and the arguments' errors.

use kernels::activation::{activation_backward, Activation};
use kernels::conv::{conv2d_backward_weights, conv2d_forward, Conv2d, Padding};
use kernels::conv_avg_pool::{conv2d_avgpool_backward_weights, conv2d_avgpool_forward};
use kernels::conv_pool::Filter;
use kernels::pool::{avg_pool2d_backward, avg_pool2d_forward, Pool2d};
use kernels::reference::Rng;
use kernels::{ExecOptions, Isa, Threading};
use proptest::prelude::*;

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// The calls in turn and the fused passes on every path: the same bits, forward (with and
/// without keeping the convolution's output) and backward.
fn check(s: Conv2d, p: Pool2d, act: Activation, seed: u64) -> Result<(), String> {
    let mut rng = Rng::new(seed);
    let (x, w, b) = (
        rng.fill(s.input_len()),
        rng.fill(s.weight_len()),
        rng.fill(s.out_c),
    );
    let dy_pool = rng.fill(p.output_len());
    let filter = Filter {
        weights: &w,
        bias: Some(&b),
        act,
    };
    for isa in Isa::available() {
        for threading in [Threading::Rayon, Threading::Single] {
            let opts = ExecOptions {
                threading,
                ..ExecOptions::with_isa(isa)
            };
            let at = format!("{isa}, {threading:?}, {act:?}, {s:?}, {p:?}");
            let mut y = vec![0.0; s.output_len()];
            let mut yp = vec![0.0; p.output_len()];
            conv2d_forward(&opts, &s, &x, &w, Some(&b), act, &mut y).unwrap();
            avg_pool2d_forward(&opts, &p, &y, &mut yp).unwrap();
            let mut y2 = vec![f32::NAN; s.output_len()];
            let mut yp2 = vec![f32::NAN; p.output_len()];
            conv2d_avgpool_forward(&opts, &s, &p, &x, filter, Some(&mut y2), &mut yp2).unwrap();
            let mut yp3 = vec![f32::NAN; p.output_len()];
            conv2d_avgpool_forward(&opts, &s, &p, &x, filter, None, &mut yp3).unwrap();
            if bits(&y) != bits(&y2) || bits(&yp) != bits(&yp2) || bits(&yp) != bits(&yp3) {
                return Err(format!("forward: {at}"));
            }
            let mut dy = vec![f32::NAN; s.output_len()];
            avg_pool2d_backward(&opts, &p, &dy_pool, &mut dy).unwrap();
            activation_backward(&opts, act, &y, &mut dy).unwrap();
            let (mut dw, mut db) = (vec![f32::NAN; s.weight_len()], vec![f32::NAN; s.out_c]);
            conv2d_backward_weights(&opts, &s, &x, &dy, &mut dw, Some(&mut db)).unwrap();
            let (mut dw2, mut db2) = (vec![f32::NAN; s.weight_len()], vec![f32::NAN; s.out_c]);
            conv2d_avgpool_backward_weights(
                &opts,
                &s,
                &p,
                &x,
                (act, &y),
                &dy_pool,
                &mut dw2,
                Some(&mut db2),
            )
            .unwrap();
            if bits(&dw) != bits(&dw2) || bits(&db) != bits(&db2) {
                return Err(format!("backward: {at}"));
            }
        }
    }
    Ok(())
}

#[test]
fn program_g_first_pair_matches_the_calls_in_turn() {
    // Program G's first pair (28×28×1 → 16, 'same', ReLU, 2×2 pooling) at a batch with several
    // images per task.
    let s = Conv2d::square(70, (28, 28, 1), 16, 3, Padding::Same);
    let p = Pool2d::new(70, (28, 28, 16), 2);
    assert_eq!(check(s, p, Activation::Relu, 1), Ok(()));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]
    #[test]
    fn fused_passes_match_the_calls_in_turn(
        batch in 0usize..4,
        (h, w) in (3usize..12, 3usize..12),
        in_c in prop_oneof![Just(1usize), Just(1), 2usize..5],
        out_c in prop_oneof![Just(16usize), 1usize..40],
        k in 1usize..4,
        (stride, same) in (1usize..3, any::<bool>()),
        (pool, pool_stride, pool_same) in (1usize..4, 1usize..4, any::<bool>()),
        act in prop_oneof![
            Just(Activation::Identity),
            Just(Activation::Relu),
            Just(Activation::Sigmoid),
            Just(Activation::Tanh)
        ],
        seed: u64,
    ) {
        let k = if same { k } else { k.min(h).min(w) };
        let padding = if same { Padding::Same } else { Padding::Valid };
        let s = Conv2d {
            stride_h: stride,
            stride_w: stride,
            ..Conv2d::square(batch, (h, w, in_c), out_c, k, padding)
        };
        let (oh, ow) = (s.out_h(), s.out_w());
        let pool = if pool_same { pool } else { pool.min(oh).min(ow) };
        let p = Pool2d {
            pool_h: pool,
            pool_w: pool,
            stride_h: pool_stride,
            stride_w: pool_stride,
            padding: if pool_same { Padding::Same } else { Padding::Valid },
            ..Pool2d::new(batch, (oh, ow, out_c), 1)
        };
        prop_assert_eq!(check(s, p, act, seed), Ok(()));
    }
}

#[test]
fn bad_arguments_are_errors() {
    let s = Conv2d::square(2, (8, 8, 1), 4, 3, Padding::Valid);
    let p = Pool2d::new(2, (6, 6, 4), 2);
    let opts = ExecOptions::default();
    let (x, w, y) = (
        vec![0.5; s.input_len()],
        vec![0.5; s.weight_len()],
        vec![0.5; s.output_len()],
    );
    let filter = Filter {
        weights: &w,
        bias: None,
        act: Activation::Relu,
    };
    let mut yp = vec![0.0; p.output_len()];
    let other = Pool2d::new(2, (7, 7, 4), 2);
    let e = conv2d_avgpool_forward(&opts, &s, &other, &x, filter, None, &mut yp).unwrap_err();
    assert!(e.to_string().contains("the convolution gives"), "{e}");
    let e = conv2d_avgpool_forward(&opts, &s, &p, &x, filter, None, &mut yp[1..]).unwrap_err();
    assert!(e.to_string().contains("pooled output y_pool"), "{e}");
    let dy = vec![0.5; p.output_len()];
    let mut dw = vec![7.0; s.weight_len()];
    let run = |y: &[f32], dy: &[f32], dw: &mut [f32]| {
        conv2d_avgpool_backward_weights(&opts, &s, &p, &x, (Activation::Relu, y), dy, dw, None)
            .unwrap_err()
            .to_string()
    };
    assert!(run(&y[1..], &dy, &mut dw).contains("convolution output y_conv"));
    assert!(run(&y, &dy[1..], &mut dw).contains("pooled gradient dy_pool"));
    assert!(run(&y, &dy, &mut dw[1..]).contains("weight gradient dw"));
    assert!(dw.iter().all(|&v| v == 7.0));
}
