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

    #[test]
    fn an_estimate_runs_calls_until_a_millisecond_has_passed() {
        let mut calls = 0usize;
        let secs = estimate_secs(&mut || calls += 1);
        assert!(calls > 1000, "{calls} calls of a no-op, {secs} s each");
        let mut slow_calls = 0usize;
        let secs = estimate_secs(&mut || {
            slow_calls += 1;
            std::thread::sleep(std::time::Duration::from_millis(2));
        });
        assert_eq!(slow_calls, 2, "a warm-up and one timed call");
        assert!(secs >= 2e-3);
    }

    #[test]
    fn calls_per_sample_is_at_least_one() {
        assert_eq!(calls_per_sample(1.0, 0.02), 1);
        assert_eq!(calls_per_sample(0.001, 0.02), 20);
    }
}
