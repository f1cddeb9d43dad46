//! Measurements of the machine itself: memory bandwidth (a STREAM-style triad) next to the FMA
//! peak of `bench_peers::peak`.

use rayon::prelude::*;

/// Triad `a[i] = b[i] + s·c[i]` over arrays of 2²⁵ floats (128 MiB each, far beyond any cache)
/// on `threads` threads; the best of `reps` passes, in GB/s counting the three arrays (STREAM's
/// convention, no write-allocate traffic).
pub fn triad_bandwidth_gbs(threads: usize, reps: usize) -> f64 {
    let n = 1usize << 25;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .build()
        .expect("a thread pool");
    pool.install(|| {
        let mut a = vec![0.0f32; n];
        let b = vec![1.0f32; n];
        let c = vec![2.0f32; n];
        // Touch every page of `a` first (the zeroed allocation is lazily mapped).
        a.par_chunks_mut(1 << 16).for_each(|x| x.fill(1.0));
        let chunk = n.div_ceil(threads.max(1) * 8);
        let mut best = f64::INFINITY;
        for _ in 0..reps.max(1) {
            let t = std::time::Instant::now();
            a.par_chunks_mut(chunk)
                .zip(b.par_chunks(chunk))
                .zip(c.par_chunks(chunk))
                .for_each(|((a, b), c)| {
                    for ((a, &b), &c) in a.iter_mut().zip(b).zip(c) {
                        *a = b + 3.0 * c;
                    }
                });
            best = best.min(t.elapsed().as_secs_f64());
        }
        std::hint::black_box(&a);
        3.0 * 4.0 * n as f64 / best / 1e9
    })
}
