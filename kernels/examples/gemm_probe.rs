//! Runs one GEMM shape in a loop, for profiling: `gemm_probe M K N [iters] [threads]`.
use kernels::{gemm, MatMut, MatRef};
fn main() {
    let a: Vec<usize> = std::env::args()
        .skip(1)
        .map(|s| s.parse().unwrap())
        .collect();
    let (m, k, n) = (a[0], a[1], a[2]);
    let iters = a.get(3).copied().unwrap_or(1000);
    let x: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
    let w: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 * 0.1).collect();
    let mut c = vec![0.0f32; m * n];
    let t = std::time::Instant::now();
    for _ in 0..iters {
        gemm(
            1.0,
            MatRef::row_major(&x, m, k, k),
            MatRef::row_major(&w, k, n, n),
            0.0,
            MatMut::row_major(&mut c, m, n, n),
        )
        .unwrap();
    }
    let s = t.elapsed().as_secs_f64() / iters as f64;
    println!(
        "{m}x{k}x{n}: {:.1} µs, {:.1} GFLOP/s",
        s * 1e6,
        2.0 * (m * n * k) as f64 / s / 1e9
    );
}
