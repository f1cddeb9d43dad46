//! The cost model's price of a parallel section, in multiply-adds on the tiles: what a product
//! must be worth before a second thread's share of it repays handing it over.
//!
//! A hand-off to the helper team while it is awake costs a few cache-line transfers between
//! cores, and their price differs from CPU to CPU several times over, in time and more so in
//! multiply-adds: 0.2–0.3 µs on a Zen 5 VM, 0.6–0.7 µs on an AVX-512 Xeon VM whose core also
//! does twice the multiply-adds per nanosecond. A constant tuned on one split 40³ on the other,
//! at 0.57× the speed of one thread. So the price is measured, once per process, the first time
//! a product asks it of an awake team: the median of a few real hand-offs (the caller waits for
//! the helper to take the second of two tasks) times the rate of this instruction set's small
//! tile, and half as much again for the helper's cold caches (see [`HANDOFFS_PER_ROUND_TRIP`]). Where it cannot
//! be measured (no small tiles, the team busy), the constant [`HANDOFF_COST`] stands.
//!
//! The price only decides how many threads share a product; every split cuts C into whole tiles
//! and sums K in the same order, so a measured price never changes a bit of any result.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::OnceLock;
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use super::config::{b_slice_in_l1, small_tile, SMALL};
use crate::shared::SharedOut;
use crate::team;
use crate::Isa;

/// One rayon fork-join (waking the pool's threads and waiting for the last), or a hand-off to a
/// parked helper team: 15 µs on a shared VM, i.e. some hundred thousand multiply-adds.
pub(crate) const FORK_JOIN_COST: f64 = (1 << 19) as f64;

/// A hand-off to the awake team until it is measured: 0.2–0.3 µs for an empty job (measured on a
/// 2-core Zen 5 VM), plus the helper's cold caches. Priced from where splitting small squares in
/// two starts to pay, on two Zen 4 threads (medians of interleaved runs, alone → split): 32³ 100
/// → 85 GFLOP/s, 36³ 78 → 80, 40³ 86 → 103, 44³ 98 → 145, 64³ 112 → 170; a product is split
/// from two hand-offs' worth of work up, 36.6³ at this price.
pub(crate) const HANDOFF_COST: f64 = (3 << 13) as f64;

/// The price of a hand-off in measured round trips: the helper also fetches its share of A and
/// B and writes its part of C from a cold cache. On two threads of an AVX-512 Xeon VM (round
/// trips of 0.6–0.8 µs, the tile at 100 multiply-adds per ns), splitting paid from 60³ up
/// (alone → split, GFLOP/s: 40³ 121 → 72, 48³ 171 → 140, 56³ 136 → 128, 64³ 158 → 178), and
/// priced at 98 304 (split from 58³) the products from 40³ to 80³ ran at the better of the two:
/// 1.3–1.6 round trips. [`HANDOFF_COST`], set the same way on a Zen 4 (an empty hand-off
/// 0.2–0.3 µs there, the tile at about 55 per ns), is 1.5–2.2 of them.
const HANDOFFS_PER_ROUND_TRIP: f64 = 1.5;

/// Hand-offs timed, after [`WARM_UPS`], the median taken; at most [`TRIES`] jobs in all, the
/// ones no helper joined (it was still starting, or parked) not counted.
const ROUND_TRIPS: usize = 15;
const WARM_UPS: usize = 5;
const TRIES: usize = 120;
/// Jobs in a row that no helper joined before the measurement is given up (to try again at a
/// later product, at most [`ATTEMPTS`] times).
const MISSES: usize = 10;

/// How long a task waits for a helper to take the other before it runs without it.
const HELPER_PATIENCE: Duration = Duration::from_micros(100);

/// Tries at measuring before [`HANDOFF_COST`] is kept for good.
const ATTEMPTS: u32 = 3;

static MEASURED: OnceLock<Prices> = OnceLock::new();
static FAILED_ATTEMPTS: AtomicU32 = AtomicU32::new(0);

/// What the cost model charges for sharing a product, in multiply-adds on the tiles.
#[derive(Clone, Copy, Debug)]
struct Prices {
    /// One hand-off to the awake team.
    handoff: f64,
    /// One cache line of operands that a helper fetches from the caller's cache, or of C that
    /// the caller fetches back from the helper's (see [`shares_repay`]).
    line: f64,
}

/// The prices until they are measured (or where they cannot be).
const CONSTANT_PRICES: Prices = Prices {
    handoff: HANDOFF_COST,
    line: LINE_COST,
};

/// A cache line moved between two cores until it is measured: about 20 ns on an AVX-512 Xeon
/// VM (medians of round trips moving 32 and 128 lines each way, 19–24 ns a line), whose tile
/// does about 100 multiply-adds per ns.
const LINE_COST: f64 = 2048.0;

/// The measured line price's bounds: a measurement below half the constant is taken for the
/// round trips' noise (loaded and empty medians closer than their spread), as at a quarter of
/// it a 32×100×64 product would be shared again.
const LINE_COST_RANGE: (f64, f64) = (LINE_COST / 2.0, LINE_COST * 8.0);

/// Lines that a timed round trip moves each way (2 KiB): enough that their time (about 1.3 µs
/// on the Xeon VM) stands out of the empty round trip's own (medians of 0.6–1.1 µs there).
const LINES: usize = 32;

/// The price of a hand-off to the awake team as known now: measured, or [`HANDOFF_COST`] before
/// it is. Never measures (for decisions taken before a product knows its thread count).
#[inline]
pub(crate) fn awake_cost() -> f64 {
    MEASURED.get().map_or(HANDOFF_COST, |p| p.handoff)
}

/// Where a product's parallel section would go from the calling thread, and what the cost
/// model charges for it: outside a rayon pool, to the helper team — cheap while it is awake.
#[derive(Clone, Copy)]
pub(crate) struct HandOff {
    isa: Isa,
    to_team: bool,
    awake: bool,
}

impl HandOff {
    /// The hand-off a product on `threads` threads with `isa`'s tiles would make from this
    /// thread now.
    pub(crate) fn here(isa: Isa, threads: usize) -> HandOff {
        let to_team = threads > 1 && rayon::current_thread_index().is_none();
        HandOff {
            isa,
            to_team,
            awake: to_team && team::awake(),
        }
    }

    /// The cost model's price of one parallel section (measuring the awake team's, the first
    /// time it is asked).
    pub(crate) fn cost(self) -> f64 {
        if self.awake {
            measured(self.isa).handoff
        } else {
            FORK_JOIN_COST
        }
    }

    /// For a product that runs alone because the team was asleep: if it would have been split
    /// at the awake team's price (`split_if_awake`, asked only then), wake the team for the
    /// products that follow.
    pub(crate) fn ran_alone(self, threads: usize, split_if_awake: impl FnOnce(f64) -> bool) {
        if self.to_team && !self.awake && split_if_awake(awake_cost()) {
            team::wake(threads);
        }
    }
}

/// Whether an `m × n × k` product whose operands the caller has just written (and whose C it
/// reads next) gains from `threads` threads: when the hand-off plus the longer of a thread's
/// share of the work and the moves of its share's cache lines between the cores is less than
/// the whole product on one thread.
///
/// A helper reads its share of A and B from the caller's cache, where they were just written,
/// and writes its part of C, which the caller then fetches back; the caller's next writes to
/// A and B wait for the helper's copies to be invalidated. On the Xeon VM, with A and B
/// rewritten and C read between calls, one thread → two (µs per call, rewriting included):
/// 32×100×64 5.0 → 16.6, 64³ 7.2 → 19.1, 128³ 30 → 53, 32×784×128 52 → 93, 256³ 234 → 196,
/// 512³ 1959 → 1356 (with the same operands called again and again, where nothing moves, all
/// but the first two gained: 128³ 26 → 17). The moves overlap the work where there is enough of
/// it (a split 256³ moves about 8 000 lines, 160 µs at the round trips' 20 ns each, and still
/// gained), hence the longer of the two, not their sum; at the measured price this decides all
/// six as they ran.
/// A thread's share is counted as the smaller operand whole (a band of rows reads all of B, a
/// band of columns all of A) and its part of the larger one and of C.
pub(crate) fn shares_repay(isa: Isa, m: usize, n: usize, k: usize, threads: usize) -> bool {
    if threads <= 1 {
        return false;
    }
    let handoff = HandOff::here(isa, threads);
    // Measured with the hand-off's price when the team is awake; known or constant otherwise.
    let line = if handoff.awake {
        measured(isa).line
    } else {
        MEASURED.get().map_or(LINE_COST, |p| p.line)
    };
    let floats_per_line = (crate::cpu::cache_info().l1d.line / 4).max(1) as f64;
    repays(handoff.cost(), line, floats_per_line, (m, n, k), threads)
}

/// [`shares_repay`]'s rule for a parallel section at `section` and a line at `line`
/// (multiply-adds), lines of `floats_per_line` floats. In floating point throughout: the sides'
/// products may exceed `usize` (views with stride 0 repeat one element over any extent).
fn repays(
    section: f64,
    line: f64,
    floats_per_line: f64,
    (m, n, k): (usize, usize, usize),
    threads: usize,
) -> bool {
    let (m, n, k) = (m as f64, n as f64, k as f64);
    let (a, b, c) = (m * k, k * n, m * n);
    let t = threads as f64;
    let share_lines = (a.min(b) + (a.max(b) + c) / t) / floats_per_line;
    let work = a * n;
    section + (work / t).max(share_lines * line) < work
}

/// The measured prices, measuring them now if no one has yet. Without small tiles for `isa`
/// there is no rate to price them with, and the constants stay for good; round trips that
/// could not be timed are tried again at a later product, [`ATTEMPTS`] times in all.
fn measured(isa: Isa) -> Prices {
    if let Some(&prices) = MEASURED.get() {
        return prices;
    }
    let Some(rate) = tile_macs_per_ns(isa) else {
        return *MEASURED.get_or_init(|| CONSTANT_PRICES);
    };
    match round_trips_ns() {
        Some((empty, loaded)) => *MEASURED.get_or_init(|| Prices {
            handoff: (HANDOFFS_PER_ROUND_TRIP * empty * rate)
                .clamp(HANDOFF_COST / 2.0, FORK_JOIN_COST),
            // Lines that moved faster than the empty trip's noise still cost something.
            line: ((loaded - empty) / (2 * LINES) as f64 * rate)
                .clamp(LINE_COST_RANGE.0, LINE_COST_RANGE.1),
        }),
        None if FAILED_ATTEMPTS.fetch_add(1, Ordering::Relaxed) + 1 >= ATTEMPTS => {
            *MEASURED.get_or_init(|| CONSTANT_PRICES)
        }
        None => CONSTANT_PRICES,
    }
}

/// A cache line's worth of floats, aligned so that it is one line (on CPUs of 64-byte lines or
/// shorter).
#[derive(Clone, Copy)]
#[repr(align(64))]
struct Line([f32; 16]);

/// The median times of hand-offs to the awake team, empty and moving [`LINES`] lines each way:
/// a job of two tasks, whichever thread takes the first waiting until another has taken the
/// second; in a loaded trip the caller first writes the lines that the helper then reads, and
/// reads the lines that the helper wrote (as a product's operands and C). Empty and loaded
/// trips alternate. `None` when the team is busy with another caller's product or no helper
/// took a task in time (the caller ran both).
fn round_trips_ns() -> Option<(f64, f64)> {
    let mut trips = [[0.0f64; ROUND_TRIPS]; 2];
    let (mut timed, mut missed) = ([0usize; 2], 0);
    let mut operands = [Line([0.0; 16]); LINES];
    let mut results = [Line([0.0; 16]); LINES];
    let mut sink = 0.0f32;
    for attempt in 0..TRIES {
        let loaded = attempt % 2;
        let start = Instant::now();
        if loaded == 1 {
            for (i, line) in operands.iter_mut().enumerate() {
                line.0 = [(attempt + i) as f32; 16];
            }
        }
        let caller = std::thread::current().id();
        let taken = AtomicBool::new(false);
        let ran_on: [OnceLock<ThreadId>; 2] = [OnceLock::new(), OnceLock::new()];
        let out = SharedOut::new(&mut results);
        let f = |t: usize| {
            let me = std::thread::current().id();
            let _ = ran_on[t].set(me);
            if t == 1 {
                if loaded == 1 && me != caller {
                    // SAFETY: only this task (one thread) forms a slice of `out`.
                    let results = unsafe { out.slice(0..LINES) };
                    for (to, from) in results.iter_mut().zip(&operands) {
                        to.0 = from.0.map(|x| x + 1.0);
                    }
                }
                taken.store(true, Ordering::Release);
            } else {
                let start = Instant::now();
                while !taken.load(Ordering::Acquire) && start.elapsed() < HELPER_PATIENCE {
                    std::hint::spin_loop();
                }
            }
        };
        if !team::run(2, 2, &f) {
            return None;
        }
        if loaded == 1 {
            sink += results.iter().map(|l| l.0.iter().sum::<f32>()).sum::<f32>();
        }
        let elapsed = start.elapsed().as_secs_f64() * 1e9;
        if ran_on[0].get() == ran_on[1].get() {
            missed += 1;
            if missed == MISSES {
                return None;
            }
            continue;
        }
        missed = 0;
        // The first few warm the helper up.
        let n = &mut timed[loaded];
        if *n == WARM_UPS + ROUND_TRIPS {
            continue;
        }
        if *n >= WARM_UPS {
            trips[loaded][*n - WARM_UPS] = elapsed;
        }
        *n += 1;
        if timed.iter().all(|&n| n == WARM_UPS + ROUND_TRIPS) {
            std::hint::black_box(sink);
            let [mut empty, mut loaded] = trips;
            empty.sort_unstable_by(f64::total_cmp);
            loaded.sort_unstable_by(f64::total_cmp);
            return Some((empty[ROUND_TRIPS / 2], loaded[ROUND_TRIPS / 2]));
        }
    }
    None
}

/// Multiply-adds per nanosecond of the small tile `isa` takes for a C of [`SMALL`]² on this
/// thread, A, B and C within L1 (B is K rows of the tile's width: 32 KiB for AVX-512's 6 × 64,
/// all of a Zen 4's L1d, two thirds of a 48 KiB one): the best of a few timings of a run of
/// whole tiles. `None` where `isa` has no small tiles.
fn tile_macs_per_ns(isa: Isa) -> Option<f64> {
    const K: usize = 128;
    const CALLS: usize = 32;
    // On the stack: the price is measured in the middle of a program's work (the first time a
    // product finds the team awake), where nothing may allocate.
    const MAX_MR: usize = 16;
    const MAX_NR: usize = 64;
    let tile = small_tile(isa, SMALL, SMALL, b_slice_in_l1(isa, K, SMALL))?;
    let (mr, nr) = (tile.mr, tile.nr);
    if mr > MAX_MR || nr > MAX_NR {
        return None;
    }
    let kernel = tile.kernel(mr);
    let a = [0.5f32; MAX_MR * K];
    let b = [0.25f32; K * MAX_NR];
    let mut c = [0.0f32; MAX_MR * MAX_NR];
    let mut best = f64::INFINITY;
    for _ in 0..8 {
        let start = Instant::now();
        for _ in 0..CALLS {
            // SAFETY: `small_tile` gave a tile of `isa`, which the caller's product runs (so the
            // CPU has it); A holds mr rows of K floats (K apart), B K rows of nr, C mr rows of
            // nr: the tile reads and writes inside them.
            unsafe {
                kernel(
                    K,
                    1.0,
                    (a.as_ptr(), K, 1),
                    b.as_ptr(),
                    nr,
                    1.0,
                    c.as_mut_ptr(),
                    nr,
                    mr,
                    nr,
                )
            };
        }
        best = best.min(start.elapsed().as_secs_f64());
    }
    std::hint::black_box(&c);
    let macs = (CALLS * mr * nr * K) as f64;
    (best > 0.0).then(|| macs / (best * 1e9))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_measured_price_is_bounded_and_stays() {
        let isa = Isa::best();
        // Wake the team (two threads) and ask its price as a product would.
        let mut first = None;
        for _ in 0..200 {
            team::wake(2);
            let handoff = HandOff::here(isa, 2);
            if handoff.awake {
                first = Some(handoff.cost());
                break;
            }
            std::thread::yield_now();
        }
        let Some(first) = first else {
            return; // The team never came awake on this machine: nothing measured.
        };
        assert!(
            (HANDOFF_COST / 2.0..=FORK_JOIN_COST).contains(&first),
            "{first}"
        );
        // Once measured (or given up on), the prices no longer change.
        if let Some(prices) = MEASURED.get() {
            assert_eq!(awake_cost().to_bits(), first.to_bits());
            assert!(
                (LINE_COST_RANGE.0..=LINE_COST_RANGE.1).contains(&prices.line),
                "{prices:?}"
            );
        }
    }

    #[test]
    fn moving_the_operands_keeps_small_products_on_one_thread() {
        let isa = Isa::best();
        assert!(!shares_repay(isa, 4096, 4096, 4096, 1));
        // At the cheapest prices the measurement may give, and the dearest.
        let cheapest = (HANDOFF_COST / 2.0, LINE_COST_RANGE.0);
        let dearest = (FORK_JOIN_COST, LINE_COST_RANGE.1);
        for threads in [2, 4] {
            for (section, line) in [cheapest, dearest] {
                // A thread's share of a 32×100×64 product moves hundreds of lines, each worth
                // more than its share of the work.
                assert!(!repays(section, line, 16.0, (32, 64, 100), threads));
                assert!(!repays(section, line, 16.0, (16, 16, 16), threads));
                // A 4096³ product does 4096 multiply-adds per element of each operand.
                assert!(repays(section, line, 16.0, (4096, 4096, 4096), threads));
            }
            // Whatever this process measured.
            assert!(!shares_repay(isa, 32, 64, 100, threads));
            assert!(shares_repay(isa, 4096, 4096, 4096, threads));
        }
        // Sides whose products overflow usize: a decision, no overflow.
        assert!(repays(
            FORK_JOIN_COST,
            LINE_COST,
            16.0,
            (1 << 40, 1 << 40, 1 << 20),
            2
        ));
    }

    #[test]
    fn a_tile_has_a_positive_rate_where_its_instruction_set_has_small_tiles() {
        for isa in Isa::available() {
            match tile_macs_per_ns(isa) {
                Some(rate) => assert!(rate.is_finite() && rate > 0.0, "{isa}: {rate}"),
                None => assert!(small_tile(isa, SMALL, SMALL, false).is_none(), "{isa}"),
            }
        }
    }

    #[test]
    fn a_hand_off_off_the_team_costs_a_fork_join() {
        assert_eq!(HandOff::here(Isa::Scalar, 1).cost(), FORK_JOIN_COST);
    }
}
