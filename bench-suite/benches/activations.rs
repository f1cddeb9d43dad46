//! Throughput of the vectorised activations (elements/s) on every path this machine has, against
//! a plain scalar loop over the standard library's f32 functions.
//! `cargo bench -p bench-suite --bench activations`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kernels::{math, Isa};

type Ours = fn(&kernels::ExecOptions, &[f32], &mut [f32]) -> kernels::Result<()>;
type Std = fn(f32) -> f32;

fn activations(c: &mut Criterion) {
    let n = 1 << 16;
    let x: Vec<f32> = (0..n).map(|i| (i as f32 / n as f32 - 0.5) * 40.0).collect();
    let mut y = vec![0.0f32; n];
    let cases: [(&str, Ours, Std); 3] = [
        ("exp", math::exp_with, f32::exp),
        ("sigmoid", math::sigmoid_with, |v| 1.0 / (1.0 + (-v).exp())),
        ("tanh", math::tanh_with, f32::tanh),
    ];
    for (name, ours, std_fn) in cases {
        let mut group = c.benchmark_group(format!("activations/{name}"));
        group.throughput(Throughput::Elements(n as u64));
        for isa in [Isa::Avx512, Isa::Avx2, Isa::Neon, Isa::Scalar]
            .into_iter()
            .filter(|i| i.is_available())
        {
            group.bench_function(BenchmarkId::new("ours", isa.name()), |b| {
                b.iter(|| ours(&kernels::ExecOptions::with_isa(isa), &x, &mut y).unwrap())
            });
        }
        group.bench_function(BenchmarkId::new("std-scalar-loop", "libm"), |b| {
            b.iter(|| {
                for (o, &v) in y.iter_mut().zip(&x) {
                    *o = std_fn(v);
                }
            })
        });
        group.finish();
    }
}

criterion_group!(benches, activations);
criterion_main!(benches);
