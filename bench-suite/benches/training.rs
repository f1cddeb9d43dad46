//! One full training step (forward, loss, backward, optimizer update) of each reference model at
//! its batch size, on synthetic inputs of the right shape, and program F's inference with its
//! batch normalisations folded into the convolutions before them or run layer by layer:
//! `cargo bench -p bench-suite --bench training`. Whole epochs against Keras and PyTorch are the
//! report's job.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use nn::prelude::*;

fn model(program: &str) -> (Sequential, usize, usize) {
    let dense = |units, act| Dense::new(units, act);
    match program {
        "A" => (
            Sequential::new()
                .input_shape(&[28, 28, 1])
                .add(Flatten::new())
                .add(dense(128, Act::Relu))
                .add(dense(10, Act::Softmax)),
            784,
            32,
        ),
        "B" => (
            Sequential::new()
                .input_shape(&[784])
                .add(dense(512, Act::Relu))
                .add(dense(10, Act::Softmax)),
            784,
            128,
        ),
        "C" => (
            Sequential::new()
                .input_shape(&[28, 28, 1])
                .add(Conv2D::new(32, (3, 3), Act::Relu))
                .add(MaxPooling2D::new((2, 2)))
                .add(Flatten::new())
                .add(dense(128, Act::Relu))
                .add(dense(10, Act::Softmax)),
            784,
            32,
        ),
        _ => (
            Sequential::new()
                .input_shape(&[100])
                .add(dense(64, Act::Relu))
                .add(dense(10, Act::Softmax)),
            100,
            32,
        ),
    }
}

fn steps(c: &mut Criterion) {
    let mut group = c.benchmark_group("training-step");
    for program in ["A", "B", "C", "E"] {
        let (mut m, input, batch) = model(program);
        let optimizer = if program == "B" {
            Optimizer::rmsprop()
        } else {
            Optimizer::adam()
        };
        m.compile(
            optimizer,
            Loss::sparse_categorical_crossentropy(),
            &[Metric::Accuracy],
        )
        .unwrap();
        let x: Vec<f32> = (0..batch * input)
            .map(|i| (i % 251) as f32 / 251.0)
            .collect();
        let y: Vec<f32> = (0..batch).map(|i| (i % 10) as f32).collect();
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_function(format!("program-{program}-batch-{batch}"), |b| {
            b.iter(|| m.train_on_batch(&x, &y, batch).unwrap())
        });
    }
    group.finish();
}

/// Program F's `predict` on 1000 images after one training step (the moving statistics are not
/// the initial ones), with the BatchNormalizations folded and run layer by layer.
fn folded_inference(c: &mut Criterion) {
    let mut group = c.benchmark_group("inference-program-F");
    let n = 1000;
    let mut m = Sequential::new()
        .input_shape(&[28, 28, 1])
        .add(Conv2D::new(16, (3, 3), Act::Linear))
        .add(BatchNormalization::new())
        .add(Activation::new(Act::Relu))
        .add(MaxPooling2D::new((2, 2)))
        .add(Conv2D::new(32, (3, 3), Act::Linear))
        .add(BatchNormalization::new())
        .add(Activation::new(Act::Relu))
        .add(MaxPooling2D::new((2, 2)))
        .add(Flatten::new())
        .add(Dense::new(10, Act::Softmax));
    m.compile(
        Optimizer::adam(),
        Loss::sparse_categorical_crossentropy(),
        &[],
    )
    .unwrap();
    let x: Vec<f32> = (0..n * 784).map(|i| (i % 251) as f32 / 251.0).collect();
    let y: Vec<f32> = (0..n).map(|i| (i % 10) as f32).collect();
    m.train_on_batch(&x[..64 * 784], &y[..64], 64).unwrap();
    let x = Tensor::from_vec(x, &[n, 28, 28, 1]).unwrap();
    group.throughput(Throughput::Elements(n as u64));
    for (name, fold) in [("folded", true), ("layer-by-layer", false)] {
        m.set_batch_norm_folding(fold);
        group.bench_function(name, |b| b.iter(|| m.predict(&x, n).unwrap()));
    }
    group.finish();
}

criterion_group!(benches, steps, folded_inference);
criterion_main!(benches);
