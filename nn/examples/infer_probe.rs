//! A batch-1000 forward pass (`predict`) of one reference program's network, in a loop, for
//! profiling: `MODEL=A|B|C|F|G` (default G), `PASS` (the batch size given to `predict`, default
//! 1000), `ITERS` (default 50); prints the median time and, for G, its useful GFLOP/s. The
//! networks are untrained (their arithmetic is the same). `cargo run --release -p nn --example
//! infer_probe -- --data-dir DIR` (the Fashion-MNIST test images).

mod common;

use nn::prelude::*;
fn main() -> nn::Result<()> {
    let mut o = common::options();
    o.dataset = "fashion".into();
    let ((_, _), (x_test, _)) = common::load(&o);
    let x_test = x_test.into_tensor()?;
    let which = std::env::var("MODEL").unwrap_or_else(|_| "G".into());
    let mut model = match which.as_str() {
        "C" => common::cnn(o.seed),
        "A" => common::mlp_adam(o.seed),
        "B" => common::mlp_rmsprop(o.seed),
        "F" => common::cnn_bn(o.seed),
        _ => common::cnn_stacked(o.seed),
    };
    model.compile(
        Optimizer::sgd(),
        Loss::sparse_categorical_crossentropy(),
        &[Metric::Accuracy],
    )?;
    let mut batch = x_test.slice_samples(0..1000)?;
    if which == "B" {
        // Program B reads its images flattened.
        batch = batch.reshape(&[1000, 784])?;
    }
    let pass: usize = std::env::var("PASS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    model.predict(&batch, pass)?;
    let iters: usize = std::env::var("ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50)
        .max(1);
    let mut t = Vec::with_capacity(iters);
    for _ in 0..iters {
        let s = std::time::Instant::now();
        model.predict(&batch, pass)?;
        t.push(s.elapsed().as_secs_f64());
    }
    t.sort_by(f64::total_cmp);
    let median = t[iters / 2];
    print!("median {:.2} ms", median * 1e3);
    if which == "G" {
        // G's forward pass: 2 343 488 multiply-adds an image (its three convolutions and the
        // dense layer).
        print!(", {:.1} GFLOP/s", 1000.0 * 2.0 * 2_343_488.0 / median / 1e9);
    }
    println!();
    Ok(())
}
