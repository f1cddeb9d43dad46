//! Reference program 3: Conv2D(32, 3×3, relu, input 28×28×1) → MaxPooling2D(2×2) → Flatten →
//! Dense(128, relu) → Dense(10, softmax); adam; sparse_categorical_crossentropy on integer
//! labels; 5 epochs (batch 32, Keras's default), validation on the test set.
//!
//! `cargo run --release -p nn --example cnn_sparse -- [--dataset mnist|fashion] [--epochs N]`

mod common;

use nn::prelude::*;

fn main() -> nn::Result<()> {
    let o = common::options();
    let ((x_train, y_train), (x_test, y_test)) = common::load(&o);
    let (x_train, x_test) = (x_train.into_tensor()?, x_test.into_tensor()?);
    let (y_train, y_test) = (Tensor::from_labels(&y_train), Tensor::from_labels(&y_test));

    let mut model = common::cnn(o.seed);
    model.compile(
        Optimizer::adam(),
        Loss::sparse_categorical_crossentropy(),
        &[Metric::Accuracy],
    )?;
    print!("{}", model.summary()?);

    let cfg = FitConfig::new()
        .epochs(o.epochs.unwrap_or(5))
        .batch_size(32)
        .validation_data(&x_test, &y_test)
        .verbose(o.verbose)
        .anatomy(o.json);
    let history = model.fit(&x_train, &y_train, &cfg, &mut [])?;
    common::finish(
        &o, "C", &mut model, &history, &cfg, &x_train, &x_test, &y_test,
    )
}
