//! Timing helpers: medians of repeated samples, each long enough to swamp timer noise.

use std::time::Instant;

/// The shortest run of calls an estimate is taken from.
const ESTIMATE_SECS: f64 = 1e-3;

/// Seconds per call of `f`, after one untimed warm-up call: from a run of calls, doubled until
/// it lasts [`ESTIMATE_SECS`]. A single call of a product of a hundred nanoseconds is timed no
/// better than the clock's own cost, and samples sized from it came out too short.
pub fn estimate_secs(f: &mut dyn FnMut()) -> f64 {
    f();
    let mut calls = 1;
    loop {
        let secs = sample_secs(f, calls);
        if secs * calls as f64 >= ESTIMATE_SECS || calls >= 1 << 20 {
            return secs;
        }
        calls *= 2;
    }
}

/// How many calls make one sample of at least `min_sample_secs`, given one call's estimate.
pub fn calls_per_sample(one_call_secs: f64, min_sample_secs: f64) -> usize {
    ((min_sample_secs / one_call_secs.max(1e-9)).ceil() as usize).clamp(1, 1_000_000)
}

/// Seconds per call of one sample of `calls` calls.
pub fn sample_secs(f: &mut dyn FnMut(), calls: usize) -> f64 {
    let start = Instant::now();
    for _ in 0..calls {
        f();
    }
    start.elapsed().as_secs_f64() / calls as f64
}

/// The median of `xs` (which it sorts); NaN for an empty slice.
pub fn median(xs: &mut [f64]) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&mut []).is_nan());
    }

    /// Runs of 1, 2, 4… calls until one lasts a millisecond: with calls of at least 0.3 ms,
    /// by the run of four at the latest (a warm-up and at most 1 + 2 + 4 calls); a call of
    /// 2 ms ends it at the first. (Bounds the clock cannot break: a sleep lasts at least as
    /// long as asked, however loaded the machine.)
    #[test]
    fn an_estimate_runs_calls_until_a_millisecond_has_passed() {
        for (sleep_us, most_calls) in [(300, 8), (2000, 2)] {
            let mut calls = 0usize;
            let secs = estimate_secs(&mut || {
                calls += 1;
                std::thread::sleep(std::time::Duration::from_micros(sleep_us));
            });
            assert!(
                (2..=most_calls).contains(&calls),
                "{calls} calls of {sleep_us} µs"
            );
            assert!(
                secs >= sleep_us as f64 * 1e-6,
                "{secs} s per call of {sleep_us} µs"
            );
        }
    }

    #[test]
    fn calls_per_sample_is_at_least_one() {
        assert_eq!(calls_per_sample(1.0, 0.02), 1);
        assert_eq!(calls_per_sample(0.001, 0.02), 20);
    }
}
