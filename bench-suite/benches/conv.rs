//! Convolution and pooling: the reference CNN's first layer (28×28×1 → 32 filters 3×3, batch 32
//! and 256) and a VGG-style layer (56×56×64 → 64, 3×3 'same', batch 4), forward and both
//! backward passes, ours against the same operation through im2col + OpenBLAS in the same run.
//! Throughput is in floating-point operations (criterion's "elements"), so its rate is FLOP/s.
//! `cargo bench -p bench-suite --bench conv`.

use bench_suite::gemm_bench::filled;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kernels::conv::{
    conv2d_backward_input, conv2d_backward_weights, conv2d_forward, conv2d_forward_im2col, Conv2d,
    Padding,
};
use kernels::pool::{max_pool2d_backward, max_pool2d_forward, Pool2d};
use kernels::{Activation, Backend, ExecOptions};

fn conv(c: &mut Criterion) {
    let cases = [
        (
            "mnist-layer-b32",
            Conv2d::square(32, (28, 28, 1), 32, 3, Padding::Valid),
        ),
        (
            "mnist-layer-b256",
            Conv2d::square(256, (28, 28, 1), 32, 3, Padding::Valid),
        ),
        (
            "vgg-3x3-64-56x56-b4",
            Conv2d::square(4, (56, 56, 64), 64, 3, Padding::Same),
        ),
    ];
    let ours = ExecOptions::default();
    let openblas = ExecOptions::with_backend(Backend::OpenBlas);
    let have_openblas = Backend::OpenBlas.is_available();
    for (name, s) in cases {
        let x = filled(s.input_len(), 1);
        let w = filled(s.weight_len(), 2);
        let bias = filled(s.out_c, 3);
        let dy = filled(s.output_len(), 4);
        let mut y = vec![0.0; s.output_len()];
        let mut dw = vec![0.0; s.weight_len()];
        let mut db = vec![0.0; s.out_c];
        let mut dx = vec![0.0; s.input_len()];
        let mut group = c.benchmark_group(format!("conv/{name}"));
        group.throughput(Throughput::Elements(s.flops() as u64));
        group.sample_size(20);
        let mut libs = vec![("ours", ours)];
        if have_openblas {
            libs.push(("im2col+openblas", openblas));
        }
        for (lib, opts) in &libs {
            group.bench_function(BenchmarkId::new("forward", lib), |b| {
                b.iter(|| {
                    conv2d_forward(opts, &s, &x, &w, Some(&bias), Activation::Relu, &mut y).unwrap()
                })
            });
            group.bench_function(BenchmarkId::new("backward-weights", lib), |b| {
                b.iter(|| {
                    conv2d_backward_weights(opts, &s, &x, &dy, &mut dw, Some(&mut db)).unwrap()
                })
            });
            group.bench_function(BenchmarkId::new("backward-input", lib), |b| {
                b.iter(|| conv2d_backward_input(opts, &s, &dy, &w, &mut dx).unwrap())
            });
        }
        group.bench_function(BenchmarkId::new("forward", "ours-im2col"), |b| {
            b.iter(|| {
                conv2d_forward_im2col(&ours, &s, &x, &w, Some(&bias), Activation::Relu, &mut y)
                    .unwrap()
            })
        });
        group.finish();
    }
}

fn pool(c: &mut Criterion) {
    let s = Pool2d::new(32, (26, 26, 32), 2);
    let x = filled(s.input_len(), 5);
    let dy = filled(s.output_len(), 6);
    let mut y = vec![0.0; s.output_len()];
    let mut arg = vec![0u32; s.output_len()];
    let mut dx = vec![0.0; s.input_len()];
    let opts = ExecOptions::default();
    let mut group = c.benchmark_group("pool/max-2x2-26x26x32-b32");
    group.throughput(Throughput::Elements(s.input_len() as u64));
    group.bench_function("forward", |b| {
        b.iter(|| max_pool2d_forward(&opts, &s, &x, &mut y, Some(&mut arg)).unwrap())
    });
    max_pool2d_forward(&opts, &s, &x, &mut y, Some(&mut arg)).unwrap();
    group.bench_function("backward", |b| {
        b.iter(|| max_pool2d_backward(&opts, &s, &dy, &arg, &mut dx).unwrap())
    });
    group.finish();
}

criterion_group!(benches, conv, pool);
criterion_main!(benches);
