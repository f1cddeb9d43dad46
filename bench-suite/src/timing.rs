//! Timing helpers: medians of repeated samples, each long enough to swamp timer noise.

use std::time::Instant;

/// Seconds taken by one call of `f` (after one untimed warm-up call).
pub fn estimate_secs(f: &mut dyn FnMut()) -> f64 {
    f();
    let start = Instant::now();
    f();
    start.elapsed().as_secs_f64()
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
    fn calls_per_sample_is_at_least_one() {
        assert_eq!(calls_per_sample(1.0, 0.02), 1);
        assert_eq!(calls_per_sample(0.001, 0.02), 20);
    }
}
