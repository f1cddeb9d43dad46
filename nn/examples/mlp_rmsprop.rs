//! Reference program 2: Dense(512, relu) on 784 inputs → Dense(10, softmax); rmsprop;
//! categorical_crossentropy; 5 epochs, batch 128; then evaluate on the test set.
//!
//! `cargo run --release -p nn --example mlp_rmsprop -- [--dataset mnist|fashion] [--epochs N]`

mod common;

use nn::prelude::*;

fn main() -> nn::Result<()> {
    let o = common::options();
    let ((x_train, y_train), (x_test, y_test)) = common::load(&o);
    let (x_train, x_test) = (x_train.into_flat_tensor()?, x_test.into_flat_tensor()?);
    let (y_train, y_test) = (to_categorical(&y_train, 10)?, to_categorical(&y_test, 10)?);

    let mut model = common::mlp_rmsprop(o.seed);
    model.compile(
        Optimizer::rmsprop(),
        Loss::categorical_crossentropy(),
        &[Metric::Accuracy],
    )?;
    print!("{}", model.summary()?);

    let cfg = FitConfig::new()
        .epochs(o.epochs.unwrap_or(5))
        .batch_size(128)
        .verbose(o.verbose)
        .anatomy(o.json);
    let history = model.fit(&x_train, &y_train, &cfg, &mut [])?;
    common::finish(
        &o, "B", &mut model, &history, &cfg, &x_train, &x_test, &y_test,
    )
}
