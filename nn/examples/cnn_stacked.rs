//! Reference program G: Conv2D(16, 3×3, same, relu) → AveragePooling2D(2×2) →
//! Conv2D(32, 3×3, same, tanh) → Conv2D(32, 3×3, tanh) → GlobalMaxPooling2D → Dense(10, softmax);
//! SGD (learning rate 0.05, Nesterov momentum 0.9); sparse_categorical_crossentropy; 3 epochs,
//! batch 128, validation on the test set (Fashion-MNIST by default). Stacked convolutions over
//! 16 and 32 input channels, 'same' padding, tanh, average and global max pooling, SGD and a
//! larger batch: the paths programs A–F leave alone.
//!
//! `cargo run --release -p nn --example cnn_stacked -- [--dataset fashion|mnist] [--epochs N]`

mod common;

use nn::prelude::*;

fn main() -> nn::Result<()> {
    let mut o = common::options();
    if !std::env::args().any(|a| a == "--dataset") {
        o.dataset = "fashion".into();
    }
    let ((x_train, y_train), (x_test, y_test)) = common::load(&o);
    let (x_train, x_test) = (x_train.into_tensor()?, x_test.into_tensor()?);
    let (y_train, y_test) = (Tensor::from_labels(&y_train), Tensor::from_labels(&y_test));

    let mut model = common::cnn_stacked(o.seed);
    model.compile(
        Optimizer::sgd()
            .with_learning_rate(0.05)
            .with_momentum(0.9, true),
        Loss::sparse_categorical_crossentropy(),
        &[Metric::Accuracy],
    )?;
    print!("{}", model.summary()?);

    let cfg = FitConfig::new()
        .epochs(o.epochs.unwrap_or(3))
        .batch_size(128)
        .validation_data(&x_test, &y_test)
        .verbose(o.verbose)
        .anatomy(o.json);
    let history = model.fit(&x_train, &y_train, &cfg, &mut [])?;
    common::finish(
        &o, "G", &mut model, &history, &cfg, &x_train, &x_test, &y_test,
    )
}
