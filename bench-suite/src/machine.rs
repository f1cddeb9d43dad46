//! Measurements of the machine itself: memory bandwidth (a STREAM-style triad) next to the FMA
//! peak of `bench_peers::peak`; reading buffers, the limit of one-row and one-column products;
//! and which of OpenBLAS's kernel sets the machine's instructions call for.

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

/// Seconds per pass of reading every float of `slices` (each summing its bits) `passes` times
/// on `threads` threads of its own, each taking the same share of every slice on every pass,
/// started together: what a one-row or one-column product at its limit does with its A and B.
/// (On a rayon pool, whose workers sleep between the calls of a sample, two threads read a
/// 64 MiB buffer in 2.3 ms a pass where each needed 1.2 ms of CPU time for its half.)
pub fn read_secs(slices: &[&[f32]], threads: usize, passes: usize) -> f64 {
    let threads = threads.max(1);
    let start = std::sync::Barrier::new(threads);
    // Each reader takes its own clock from the barrier to its last pass: the time is from the
    // first start to the last end. (A clock on the spawning thread, read after it passed the
    // barrier too, could be read only once both readers had finished: with as many readers as
    // cores it waited for a core, and a two-pass calibration read as nanoseconds made the next
    // sample a million passes — a report run hung there for ten minutes.)
    let spans: Vec<(std::time::Instant, std::time::Instant)> = std::thread::scope(|s| {
        let readers: Vec<_> = (0..threads)
            .map(|t| {
                let start = &start;
                s.spawn(move || {
                    let shares: Vec<&[f32]> = slices
                        .iter()
                        .map(|floats| {
                            let (lo, hi) =
                                (t * floats.len() / threads, (t + 1) * floats.len() / threads);
                            &floats[lo..hi]
                        })
                        .collect();
                    start.wait();
                    let begun = std::time::Instant::now();
                    for _ in 0..passes {
                        let sum = shares
                            .iter()
                            .fold(0u32, |s, share| s.wrapping_add(sum_bits(share)));
                        std::hint::black_box(sum);
                    }
                    (begun, std::time::Instant::now())
                })
            })
            .collect();
        readers
            .into_iter()
            .map(|r| r.join().expect("a reader only sums floats"))
            .collect()
    });
    let first = spans
        .iter()
        .map(|s| s.0)
        .min()
        .expect("at least one reader");
    let last = spans
        .iter()
        .map(|s| s.1)
        .max()
        .expect("at least one reader");
    (last - first).as_secs_f64() / passes.max(1) as f64
}

/// Runs of floats a sum reads side by side: one line of each in turn, so that the hardware
/// prefetchers follow several streams, as a product's tile does over several rows of A. One
/// stream read a 64 MiB buffer in a 480 MiB L3 at 21 GB/s on one Xeon core, where a
/// matrix-vector product reached 28.
const STREAMS: usize = 8;
/// Floats of one cache line.
const LINE: usize = 16;

/// The wrapping sum of the bits of `floats`, read as [`STREAMS`] runs side by side, a line of
/// each in turn (integer sums vectorise; float ones keep their order).
fn sum_bits(floats: &[f32]) -> u32 {
    let mut lanes = [0u32; LINE];
    let run = floats.len() / STREAMS / LINE * LINE;
    let (runs, rest) = floats.split_at(run * STREAMS);
    if run > 0 {
        let runs: [&[f32]; STREAMS] = std::array::from_fn(|r| &runs[r * run..(r + 1) * run]);
        for at in (0..run).step_by(LINE) {
            for r in &runs {
                for (lane, &x) in lanes.iter_mut().zip(&r[at..at + LINE]) {
                    *lane = lane.wrapping_add(x.to_bits());
                }
            }
        }
    }
    rest.iter()
        .fold(lanes.iter().fold(0, |s, &w| s.wrapping_add(w)), |s, &x| {
            s.wrapping_add(x.to_bits())
        })
}

/// The variable through which the report tells the process it re-runs which kernel set OpenBLAS
/// had picked by itself before the report forced another (`OPENBLAS_CORETYPE`).
pub const OPENBLAS_PICKED_VAR: &str = "REPORT_OPENBLAS_PICKED";

/// The kernel set to force on OpenBLAS when it `picked` its fallback for an x86-64 CPU its
/// tables do not list ("Prescott", SSE3 kernels): the set for the widest instructions this CPU
/// has ("SkylakeX" with AVX-512 F, CD, BW, DQ and VL, which its kernels use; "Haswell" with AVX2
/// and FMA). `None` when OpenBLAS knew the CPU, or there is nothing better. OpenBLAS 0.3.21
/// (Debian 12) falls back so on CPUs newer than itself: it ran a 1024³ product at a fifth of
/// the speed it reaches with its own AVX-512 kernels on an Intel Xeon of family 6, model 207.
pub fn openblas_core_to_force(picked: &str) -> Option<&'static str> {
    #[cfg(target_arch = "x86_64")]
    let (avx512, avx2) = (
        is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512cd")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512dq")
            && is_x86_feature_detected!("avx512vl"),
        is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
    );
    #[cfg(not(target_arch = "x86_64"))]
    let (avx512, avx2) = (false, false);
    core_to_force(picked, avx512, avx2)
}

/// [`openblas_core_to_force`] for a CPU with (`avx512`) or without the AVX-512 subsets
/// OpenBLAS's SkylakeX kernels use and with or without AVX2 and FMA (`avx2`).
fn core_to_force(picked: &str, avx512: bool, avx2: bool) -> Option<&'static str> {
    match (picked, avx512, avx2) {
        ("Prescott", true, _) => Some("SkylakeX"),
        ("Prescott", false, true) => Some("Haswell"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sum_covers_every_float_once() {
        for n in [0usize, 1, 63, 64, 65, 127, 128, 129, 1000, 4099] {
            let floats: Vec<f32> = (0..n).map(|i| i as f32 * 0.37 - 11.0).collect();
            let expected = floats
                .iter()
                .fold(0u32, |s, &x| s.wrapping_add(x.to_bits()));
            assert_eq!(sum_bits(&floats), expected, "{n} floats");
        }
    }

    #[test]
    fn only_openblas_fallback_for_an_unknown_cpu_is_overridden() {
        for known in ["Haswell", "SkylakeX", "Zen", "Cooperlake", ""] {
            for (avx512, avx2) in [(true, true), (false, true), (false, false)] {
                assert_eq!(core_to_force(known, avx512, avx2), None, "{known}");
            }
        }
        assert_eq!(core_to_force("Prescott", true, true), Some("SkylakeX"));
        assert_eq!(core_to_force("Prescott", false, true), Some("Haswell"));
        assert_eq!(core_to_force("Prescott", false, false), None);
        assert_eq!(openblas_core_to_force("SkylakeX"), None);
    }

    #[test]
    fn reading_takes_a_positive_time() {
        let floats = vec![1.0f32; 1 << 16];
        let secs = read_secs(&[&floats, &floats[..5]], 2, 3);
        assert!(secs.is_finite() && secs > 0.0, "{secs}");
    }
}
