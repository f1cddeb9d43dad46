//! Reference program 5: Dense(64, relu, input_dim = 100) → Dense(10, softmax); adam;
//! categorical_crossentropy; 10 epochs, batch 32, on generated data: 100 standard-normal
//! features, label = argmax of x·W for a fixed standard-normal 100×10 W; 60 000 training and
//! 10 000 test samples (fixed seed).
//!
//! `cargo run --release -p nn --example synthetic -- [--epochs N] [--seed S]`

mod common;

use nn::prelude::*;
use rand::rngs::StdRng;
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};

/// `n` samples of 100 features and their one-hot labels under `w`.
fn make(n: usize, w: &[f32], rng: &mut StdRng) -> nn::Result<(Tensor, Tensor)> {
    let x: Vec<f32> = (0..n * 100).map(|_| StandardNormal.sample(rng)).collect();
    let labels: Vec<u8> = x
        .chunks_exact(100)
        .map(|row| {
            let scores: Vec<f32> = (0..10)
                .map(|j| row.iter().enumerate().map(|(i, v)| v * w[i * 10 + j]).sum())
                .collect();
            scores
                .iter()
                .enumerate()
                .fold(0, |b, (j, &s)| if s > scores[b] { j } else { b }) as u8
        })
        .collect();
    Ok((
        Tensor::from_vec(x, &[n, 100])?,
        to_categorical(&labels, 10)?,
    ))
}

fn main() -> nn::Result<()> {
    let o = common::options();
    let mut rng = StdRng::seed_from_u64(1234);
    let w: Vec<f32> = (0..100 * 10)
        .map(|_| StandardNormal.sample(&mut rng))
        .collect();
    let (x_train, y_train) = make(60_000, &w, &mut rng)?;
    let (x_test, y_test) = make(10_000, &w, &mut rng)?;

    let mut model = Sequential::new()
        .input_shape(&[100])
        .seed(o.seed)
        .add(Dense::new(64, Act::Relu))
        .add(Dense::new(10, Act::Softmax));
    model.compile(
        Optimizer::adam(),
        Loss::categorical_crossentropy(),
        &[Metric::Accuracy],
    )?;
    print!("{}", model.summary()?);

    let cfg = FitConfig::new()
        .epochs(o.epochs.unwrap_or(10))
        .batch_size(32)
        .verbose(o.verbose)
        .anatomy(o.json);
    let history = model.fit(&x_train, &y_train, &cfg, &mut [])?;
    common::finish(
        &o, "E", &mut model, &history, &cfg, &x_train, &x_test, &y_test,
    )
}
