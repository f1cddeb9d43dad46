//! Criterion benchmarks of GEMM: our paths, OpenBLAS, matrixmultiply and the gemm crate on the
//! report's shapes (squares, training shapes, small, vector and transposed layouts), on one
//! thread and on the whole rayon pool.
//! (matrixmultiply's threads follow `MATMUL_NUM_THREADS`; OpenBLAS's follow the call.)
//! `cargo bench -p bench-suite --bench gemm`; the `report` program gives the side-by-side table.

use bench_suite::gemm_bench::{all_shapes, filled, Library};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kernels::MatMut;

fn gemm(c: &mut Criterion) {
    let pool = rayon::current_num_threads();
    for shape in all_shapes() {
        let (m, k, n) = (shape.m, shape.k, shape.n);
        let a = filled(m * k, 1);
        let b = filled(k * n, 2);
        let mut out = vec![0.0f32; m * n];
        let mut group = c.benchmark_group(format!("gemm/{}", shape.label()));
        group.throughput(Throughput::Elements(shape.flops() as u64));
        group.sample_size(10);
        for lib in Library::available().into_iter().filter(|l| l.serves(shape)) {
            for threads in [1, pool] {
                if lib == Library::MatrixMultiply && threads > 1 {
                    continue; // its pool size is fixed per process
                }
                let id = BenchmarkId::new(lib.name(), format!("{threads}t"));
                group.bench_function(id, |bench| {
                    bench.iter(|| {
                        lib.run(
                            shape.a_view(&a),
                            shape.b_view(&b),
                            MatMut::row_major(&mut out, m, n, n),
                            threads,
                        )
                    })
                });
            }
        }
        group.finish();
    }
}

criterion_group!(benches, gemm);
criterion_main!(benches);
