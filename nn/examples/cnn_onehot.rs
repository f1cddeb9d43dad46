//! Reference program 4: the CNN of program 3 with categorical_crossentropy on one-hot labels.
//!
//! `cargo run --release -p nn --example cnn_onehot -- [--dataset mnist|fashion] [--epochs N]`

mod common;

use nn::prelude::*;

fn main() -> nn::Result<()> {
    let o = common::options();
    let ((x_train, y_train), (x_test, y_test)) = common::load(&o);
    let (x_train, x_test) = (x_train.into_tensor()?, x_test.into_tensor()?);
    let (y_train, y_test) = (to_categorical(&y_train, 10)?, to_categorical(&y_test, 10)?);

    let mut model = common::cnn(o.seed);
    model.compile(
        Optimizer::adam(),
        Loss::categorical_crossentropy(),
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
        &o, "D", &mut model, &history, &cfg, &x_train, &x_test, &y_test,
    )
}
