//! Reference program F: Conv2D(16, 3×3) → BatchNormalization → ReLU → MaxPooling2D(2×2) →
//! Conv2D(32, 3×3) → BatchNormalization → ReLU → GlobalAveragePooling2D → Dense(10, softmax);
//! adam; sparse_categorical_crossentropy; 5 epochs, batch 64, validation on the test set
//! (Fashion-MNIST by default).
//!
//! `cargo run --release -p nn --example cnn_bn -- [--dataset fashion|mnist] [--epochs N]`

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

    let mut model = Sequential::new()
        .input_shape(&[28, 28, 1])
        .seed(o.seed)
        .add(Conv2D::new(16, (3, 3), Act::Linear))
        .add(BatchNormalization::new())
        .add(Activation::new(Act::Relu))
        .add(MaxPooling2D::new((2, 2)))
        .add(Conv2D::new(32, (3, 3), Act::Linear))
        .add(BatchNormalization::new())
        .add(Activation::new(Act::Relu))
        .add(GlobalAveragePooling2D::new())
        .add(Dense::new(10, Act::Softmax));
    model.compile(
        Optimizer::adam(),
        Loss::sparse_categorical_crossentropy(),
        &[Metric::Accuracy],
    )?;
    print!("{}", model.summary()?);

    let cfg = FitConfig::new()
        .epochs(o.epochs.unwrap_or(5))
        .batch_size(64)
        .validation_data(&x_test, &y_test)
        .verbose(o.verbose)
        .anatomy(o.json);
    let history = model.fit(&x_train, &y_train, &cfg, &mut [])?;
    common::finish(
        &o, "F", &mut model, &history, &cfg, &x_train, &x_test, &y_test,
    )
}
