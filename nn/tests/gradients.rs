//! Finite-difference gradient checks for every layer and activation: with L = Σ r ⊙ layer(x) for
//! a fixed random r, the layer's backward pass (given r) must match the central differences of L
//! with respect to every input and parameter element.
//!
//! Step h = 1e-2 on inputs drawn from [−1, 1]; the forward passes run in f32, so each difference
//! quotient carries about 1e-5 of rounding noise; tolerance: |analytic − numeric| ≤ 2e-3·(1 +
//! |numeric|). Relu's kink is avoided by nudging pre-activations away from zero (checked).

use nn::layers::Layer;
use nn::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const H: f32 = 1e-2;
const TOL: f64 = 2e-3;

fn random(n: usize, rng: &mut StdRng) -> Vec<f32> {
    (0..n).map(|_| rng.gen_range(-1.0f32..1.0)).collect()
}

/// L = Σ r·y over the first n samples (of the training pass for BatchNormalization, whose
/// inference pass is another function: the moving statistics').
fn objective(layer: &mut dyn Layer, x: &[f32], r: &[f32], n: usize) -> f64 {
    layer
        .forward(x, n, layer.class_name() == "BatchNormalization")
        .unwrap();
    layer.output()[..r.len()]
        .iter()
        .zip(r)
        .map(|(&y, &r)| y as f64 * r as f64)
        .sum()
}

fn close(what: &str, analytic: f32, numeric: f64) {
    assert!(
        (analytic as f64 - numeric).abs() <= TOL * (1.0 + numeric.abs()),
        "{what}: analytic {analytic} vs numeric {numeric}"
    );
}

/// Checks `layer` built for per-sample `input` shape, on `n` samples.
fn check_layer(mut layer: Box<dyn Layer>, input: &[usize], n: usize, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    layer.set_name("under_test".into());
    let out_shape = layer.build(input, &mut rng).unwrap();
    layer.allocate(n).unwrap();
    let in_len: usize = input.iter().product::<usize>() * n;
    let out_len: usize = out_shape.iter().product::<usize>() * n;
    let mut x = random(in_len, &mut rng);
    let r = random(out_len, &mut rng);
    let cls = layer.class_name();

    // Analytic gradients, from a training forward pass (which keeps what backward needs, e.g.
    // max pooling's argmax), except for Dropout, whose training pass is random (checked below).
    layer.forward(&x, n, cls != "Dropout").unwrap();
    let mut grad = r.clone();
    let mut dx = vec![0.0; in_len];
    layer.backward(&x, &mut grad, Some(&mut dx), n).unwrap();
    let mut pgrads: Vec<Vec<f32>> = vec![];
    layer.for_each_param(&mut |p| pgrads.push(p.grad.to_vec()));

    // Inputs.
    for i in 0..in_len {
        let keep = x[i];
        x[i] = keep + H;
        let up = objective(layer.as_mut(), &x, &r, n);
        x[i] = keep - H;
        let down = objective(layer.as_mut(), &x, &r, n);
        x[i] = keep;
        close(
            &format!("{cls} dx[{i}]"),
            dx[i],
            (up - down) / (2.0 * H as f64),
        );
    }
    // Parameters, one tensor at a time.
    for (pi, pg) in pgrads.iter().enumerate() {
        for (j, &analytic) in pg.iter().enumerate() {
            let nudge = |delta: f32, layer: &mut dyn Layer| {
                let mut k = 0;
                layer.for_each_param(&mut |p| {
                    if k == pi {
                        p.value[j] += delta;
                    }
                    k += 1;
                });
            };
            nudge(H, layer.as_mut());
            let up = objective(layer.as_mut(), &x, &r, n);
            nudge(-2.0 * H, layer.as_mut());
            let down = objective(layer.as_mut(), &x, &r, n);
            nudge(H, layer.as_mut());
            close(
                &format!("{cls} param {pi}[{j}]"),
                analytic,
                (up - down) / (2.0 * H as f64),
            );
        }
    }
}

#[test]
fn dense_with_every_activation() {
    for (i, act) in [Act::Linear, Act::Sigmoid, Act::Tanh, Act::Softmax]
        .into_iter()
        .enumerate()
    {
        check_layer(Box::new(Dense::new(5, act)), &[7], 3, 10 + i as u64);
    }
}

#[test]
fn conv2d_valid_same_strided() {
    check_layer(
        Box::new(Conv2D::new(4, (3, 3), Act::Tanh)),
        &[6, 5, 1],
        2,
        1,
    );
    check_layer(
        Box::new(Conv2D::new(3, (3, 2), Act::Sigmoid).padding(Padding::Same)),
        &[5, 4, 2],
        2,
        2,
    );
    check_layer(
        Box::new(
            Conv2D::new(2, (2, 2), Act::Linear)
                .strides((2, 1))
                .padding(Padding::Same),
        ),
        &[5, 5, 3],
        2,
        3,
    );
}

#[test]
fn max_pooling_flatten_dropout_activation() {
    // Distinct inputs (random) make each window's maximum unique, so the max is differentiable
    // at the test point for steps smaller than the gaps.
    check_layer(Box::new(MaxPooling2D::new((2, 2))), &[4, 6, 2], 2, 4);
    check_layer(Box::new(Flatten::new()), &[3, 2, 2], 2, 5);
    // At inference dropout is the identity.
    check_layer(Box::new(Dropout::new(0.5)), &[9], 2, 6);
    for (i, act) in [Act::Sigmoid, Act::Tanh, Act::Softmax, Act::Linear]
        .into_iter()
        .enumerate()
    {
        check_layer(Box::new(Activation::new(act)), &[6], 3, 20 + i as u64);
    }
}

#[test]
fn average_and_global_pooling() {
    check_layer(Box::new(AveragePooling2D::new((2, 2))), &[4, 6, 2], 2, 7);
    check_layer(
        Box::new(
            AveragePooling2D::new((3, 3))
                .strides((2, 1))
                .padding(Padding::Same),
        ),
        &[5, 4, 3],
        2,
        8,
    );
    check_layer(Box::new(GlobalAveragePooling2D::new()), &[3, 5, 4], 3, 9);
    // Distinct random inputs: each channel's maximum is unique, its gap to the runner-up
    // wider than the step (a small image and this seed).
    check_layer(Box::new(GlobalMaxPooling2D::new()), &[2, 3, 4], 3, 10);
}

#[test]
fn batch_normalization_through_the_batch_statistics() {
    // Flat samples and images (the positions of each image are rows too); the gradient flows
    // through the batch's mean and variance; γ and β are checked as parameters, the moving
    // statistics (not trainable) have no gradient.
    check_layer(Box::new(BatchNormalization::new()), &[6], 5, 11);
    check_layer(Box::new(BatchNormalization::new()), &[3, 4, 5], 2, 12);
}

/// The smallest |pre-activation| the linear twin of a layer produces with `check_layer`'s draws
/// for `seed` (same weights and inputs: the same generator sequence).
fn min_preactivation(mut twin: Box<dyn Layer>, input: &[usize], n: usize, seed: u64) -> f32 {
    let mut rng = StdRng::seed_from_u64(seed);
    let out = twin.build(input, &mut rng).unwrap();
    twin.allocate(n).unwrap();
    let x = random(input.iter().product::<usize>() * n, &mut rng);
    twin.forward(&x, n, false).unwrap();
    let len = out.iter().product::<usize>() * n;
    twin.output()[..len]
        .iter()
        .map(|v| v.abs())
        .fold(f32::INFINITY, f32::min)
}

#[test]
fn relu_layers_away_from_the_kink() {
    // Relu is checked at seeds whose pre-activations all lie further than 2h from zero, so the
    // central differences never straddle the kink.
    let seed = (0..200)
        .find(|&s| min_preactivation(Box::new(Dense::new(4, Act::Linear)), &[6], 2, s) > 2.0 * H)
        .expect("a seed clear of the kink");
    check_layer(Box::new(Dense::new(4, Act::Relu)), &[6], 2, seed);
    let conv = || Conv2D::new(2, (2, 2), Act::Linear);
    let seed = (0..200)
        .find(|&s| min_preactivation(Box::new(conv()), &[3, 3, 1], 1, s) > 2.0 * H)
        .expect("a seed clear of the kink");
    check_layer(
        Box::new(Conv2D::new(2, (2, 2), Act::Relu)),
        &[3, 3, 1],
        1,
        seed,
    );
}

#[test]
fn dropout_in_training_scales_survivors_and_routes_gradients() {
    let mut layer = Dropout::new(0.25);
    let mut rng = StdRng::seed_from_u64(3);
    layer.build(&[1000], &mut rng).unwrap();
    layer.allocate(1).unwrap();
    let x = vec![1.0f32; 1000];
    layer.forward(&x, 1, true).unwrap();
    let kept = layer.output().iter().filter(|&&v| v != 0.0).count();
    assert!(
        (700..800).contains(&kept),
        "{kept} of 1000 kept at rate 0.25"
    );
    assert!(layer
        .output()
        .iter()
        .all(|&v| v == 0.0 || (v - 1.0 / 0.75).abs() < 1e-6));
    let mut g = vec![1.0f32; 1000];
    let mut dx = vec![0.0; 1000];
    layer.backward(&x, &mut g, Some(&mut dx), 1).unwrap();
    assert_eq!(dx, layer.output().to_vec(), "dx = mask·g");
}
