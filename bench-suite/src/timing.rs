//! Timing helpers: medians of repeated samples, each long enough to swamp timer noise.

use std::time::{Duration, Instant};

/// The shortest run of calls an estimate is taken from.
const ESTIMATE_SECS: f64 = 1e-3;

/// Seconds per call of `f`, after one untimed warm-up call: from a run of calls, doubled until
/// it lasts `ESTIMATE_SECS`. A single call of a product of a hundred nanoseconds is timed no
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

/// CPU seconds used so far by all of this process's threads, summed from each thread's scheduler
/// statistics (kept in nanoseconds); `None` where the system does not keep them (not Linux).
pub fn process_cpu_secs() -> Option<f64> {
    let mut nanos = 0u64;
    for entry in std::fs::read_dir("/proc/self/task").ok()? {
        // A thread that exits between the listing and the read is skipped.
        let Ok(stat) = std::fs::read_to_string(entry.ok()?.path().join("schedstat")) else {
            continue;
        };
        nanos += stat.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(nanos as f64 * 1e-9)
}

/// One look at the process's other threads while the caller sleeps.
const SETTLE_WINDOW: Duration = Duration::from_millis(10);
/// At most this share of one core used by the other threads during a window counts as idle.
const IDLE_SHARE: f64 = 0.1;

/// Sleeps at least `min`, then until the process's other threads have stayed idle for two
/// consecutive `SETTLE_WINDOW`s (at most `IDLE_SHARE` of a core between them), or until
/// `max` has passed; returns the time waited. Threaded libraries keep their workers spinning a
/// while after a call, each for its own time: measured here after a 2-thread 256³ call, OpenBLAS's
/// worker spun for about 100 ms, BLIS's for under 10, ours and the Rust crates' not at all. A
/// fixed pause shorter than the longest of these let the library timed next share a core with
/// the previous one's spinner. Where the system keeps no per-thread CPU time, sleeps `max`.
pub fn settle(min: Duration, max: Duration) -> Duration {
    let start = Instant::now();
    std::thread::sleep(min);
    let Some(mut before) = process_cpu_secs() else {
        std::thread::sleep(max.saturating_sub(start.elapsed()));
        return start.elapsed();
    };
    let mut quiet = 0;
    while quiet < 2 && start.elapsed() < max {
        std::thread::sleep(SETTLE_WINDOW);
        let Some(now) = process_cpu_secs() else {
            break;
        };
        // A thread that exited takes its time out of the sum: that window counts as idle.
        let busy = now - before;
        before = now;
        quiet = if busy <= IDLE_SHARE * SETTLE_WINDOW.as_secs_f64() {
            quiet + 1
        } else {
            0
        };
    }
    start.elapsed()
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

    /// While another thread of the process spins, `settle` waits until `max`; once it stops,
    /// `settle` returns. (The spinner's CPU time grows in every window it is scheduled in.)
    #[test]
    fn settle_waits_for_a_spinning_thread() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let Some(first) = process_cpu_secs() else {
            return; // no per-thread CPU time here: `settle` sleeps `max`, nothing to check
        };
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
            });
            let max = Duration::from_millis(300);
            let waited = settle(Duration::from_millis(5), max);
            // Read while the spinner lives: an exited thread's time leaves the sum. (The
            // asserts come after `stop`, so a failing one cannot leave the scope waiting.)
            let spun = process_cpu_secs().unwrap() - first;
            stop.store(true, Ordering::Relaxed);
            assert!(
                waited >= max,
                "returned after {waited:?} beside a spinning thread"
            );
            assert!(spun >= 0.05, "the process's CPU time grew by {spun} s only");
        });
        // The spinner has stopped: the next settle ends well before its limit.
        let waited = settle(Duration::ZERO, Duration::from_secs(20));
        assert!(waited < Duration::from_secs(20), "{waited:?}");
    }

    #[test]
    fn calls_per_sample_is_at_least_one() {
        assert_eq!(calls_per_sample(1.0, 0.02), 1);
        assert_eq!(calls_per_sample(0.001, 0.02), 20);
    }
}
