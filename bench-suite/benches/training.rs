//! One full training step (forward, loss, backward, optimizer update) of each reference model at
//! its batch size, on synthetic inputs of the right shape: `cargo bench -p bench-suite --bench
//! training`. Whole epochs against Keras and PyTorch are the report's job.

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

criterion_group!(benches, steps);
criterion_main!(benches);
