//! Measurements of the machine itself: memory bandwidth (a STREAM-style triad, and reading a
//! buffer of a given size) next to the FMA peak of `bench_peers::peak`.

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

/// Reading a buffer of `bytes` (whole 4-byte words) on `threads` threads, each summing its share:
/// the best of `reps` passes after one that brings it into whatever cache holds it, in GB/s. The
/// limit of a one-row or one-column product, which reads its matrix once: where the matrix stays
/// in a last-level cache between calls (480 MiB on a Xeon VM here, against 64 MiB of matrix),
/// the triad's 384 MiB of arrays measure memory the product never reaches.
pub fn read_bandwidth_gbs(threads: usize, bytes: usize, reps: usize) -> f64 {
    let words = (bytes / 4).max(1);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .build()
        .expect("a thread pool");
    pool.install(|| {
        let buffer: Vec<u32> = (0..words as u32).collect();
        let chunk = words.div_ceil(threads.max(1) * 8);
        let pass = || {
            buffer
                .par_chunks(chunk)
                .map(sum_words)
                .reduce(|| 0, u32::wrapping_add)
        };
        std::hint::black_box(pass());
        let mut best = f64::INFINITY;
        for _ in 0..reps.max(1) {
            let t = std::time::Instant::now();
            std::hint::black_box(pass());
            best = best.min(t.elapsed().as_secs_f64());
        }
        (words * 4) as f64 / best / 1e9
    })
}

/// The wrapping sum of `words`, 64 independent lanes wide so that the loads, not the additions'
/// chain, set the pace.
fn sum_words(words: &[u32]) -> u32 {
    let mut lanes = [0u32; 64];
    let chunks = words.chunks_exact(lanes.len());
    let rest = chunks.remainder();
    for chunk in chunks {
        for (lane, &w) in lanes.iter_mut().zip(chunk) {
            *lane = lane.wrapping_add(w);
        }
    }
    lanes.iter().chain(rest).fold(0, |s, &w| s.wrapping_add(w))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sum_covers_every_word_once() {
        for n in [0usize, 1, 63, 64, 65, 1000] {
            let words: Vec<u32> = (0..n as u32)
                .map(|i| i.wrapping_mul(2_654_435_761))
                .collect();
            let expected = words.iter().fold(0u32, |s, &w| s.wrapping_add(w));
            assert_eq!(sum_words(&words), expected, "{n} words");
        }
    }

    #[test]
    fn reading_a_small_buffer_gives_a_finite_positive_rate() {
        let gbs = read_bandwidth_gbs(2, 1 << 16, 3);
        assert!(gbs.is_finite() && gbs > 0.0, "{gbs}");
    }
}
