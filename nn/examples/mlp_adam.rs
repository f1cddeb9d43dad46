//! Reference program 1: Flatten(784) → Dense(128, relu) → Dense(10, softmax); adam;
//! categorical_crossentropy on one-hot labels; 10 epochs, batch 32, validation on the test set.
//!
//! `cargo run --release -p nn --example mlp_adam -- [--dataset mnist|fashion] [--epochs N]`

mod common;

use nn::prelude::*;

fn main() -> nn::Result<()> {
    let o = common::options();
    let ((x_train, y_train), (x_test, y_test)) = common::load(&o);
    let (x_train, x_test) = (x_train.into_tensor()?, x_test.into_tensor()?);
    let (y_train, y_test) = (to_categorical(&y_train, 10)?, to_categorical(&y_test, 10)?);

    let mut model = common::mlp_adam(o.seed);
    model.compile(
        Optimizer::adam(),
        Loss::categorical_crossentropy(),
        &[Metric::Accuracy],
    )?;
    print!("{}", model.summary()?);

    let cfg = FitConfig::new()
        .epochs(o.epochs.unwrap_or(10))
        .batch_size(32)
        .validation_data(&x_test, &y_test)
        .verbose(o.verbose)
        .anatomy(o.json);
    let history = model.fit(&x_train, &y_train, &cfg, &mut [])?;
    common::finish(
        &o, "A", &mut model, &history, &cfg, &x_train, &x_test, &y_test,
    )
}
