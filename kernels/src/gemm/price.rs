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

use super::config::{small_tile, SMALL};
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
const TRIES: usize = 60;
/// Jobs in a row that no helper joined before the measurement is given up (to try again at a
/// later product, at most [`ATTEMPTS`] times).
const MISSES: usize = 10;

/// How long a task waits for a helper to take the other before it runs without it.
const HELPER_PATIENCE: Duration = Duration::from_micros(100);

/// Tries at measuring before [`HANDOFF_COST`] is kept for good.
const ATTEMPTS: u32 = 3;

static MEASURED: OnceLock<f64> = OnceLock::new();
static FAILED_ATTEMPTS: AtomicU32 = AtomicU32::new(0);

/// The price of a hand-off to the awake team as known now: measured, or [`HANDOFF_COST`] before
/// it is. Never measures (for decisions taken before a product knows its thread count).
#[inline]
pub(crate) fn awake_cost() -> f64 {
    MEASURED.get().copied().unwrap_or(HANDOFF_COST)
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
            measured_cost(self.isa)
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

/// The awake team's measured price, measuring it now if no one has yet. Without small tiles
/// for `isa` there is no rate to price it with, and the constant stays for good; a round trip
/// that could not be timed is tried again at a later product, [`ATTEMPTS`] times in all.
fn measured_cost(isa: Isa) -> f64 {
    if let Some(&cost) = MEASURED.get() {
        return cost;
    }
    let Some(rate) = tile_macs_per_ns(isa) else {
        return *MEASURED.get_or_init(|| HANDOFF_COST);
    };
    match round_trip_ns() {
        Some(trip) => *MEASURED.get_or_init(|| {
            (HANDOFFS_PER_ROUND_TRIP * trip * rate).clamp(HANDOFF_COST / 2.0, FORK_JOIN_COST)
        }),
        None if FAILED_ATTEMPTS.fetch_add(1, Ordering::Relaxed) + 1 >= ATTEMPTS => {
            *MEASURED.get_or_init(|| HANDOFF_COST)
        }
        None => HANDOFF_COST,
    }
}

/// The median time of a hand-off to the awake team: a job of two tasks, whichever thread takes
/// the first waiting until another has taken the second. `None` when the team is busy with
/// another caller's product or no helper took a task in time (the caller ran both).
fn round_trip_ns() -> Option<f64> {
    let mut trips = [0.0f64; ROUND_TRIPS];
    let (mut timed, mut missed) = (0, 0);
    for _ in 0..TRIES {
        let taken = AtomicBool::new(false);
        let ran_on: [OnceLock<ThreadId>; 2] = [OnceLock::new(), OnceLock::new()];
        let f = |t: usize| {
            let _ = ran_on[t].set(std::thread::current().id());
            if t == 1 {
                taken.store(true, Ordering::Release);
            } else {
                let start = Instant::now();
                while !taken.load(Ordering::Acquire) && start.elapsed() < HELPER_PATIENCE {
                    std::hint::spin_loop();
                }
            }
        };
        let start = Instant::now();
        if !team::run(2, 2, &f) {
            return None;
        }
        if ran_on[0].get() == ran_on[1].get() {
            missed += 1;
            if missed == MISSES {
                return None;
            }
        } else {
            missed = 0;
            // The first few warm the helper up.
            if timed >= WARM_UPS {
                trips[timed - WARM_UPS] = start.elapsed().as_secs_f64() * 1e9;
            }
            timed += 1;
            if timed == WARM_UPS + ROUND_TRIPS {
                trips.sort_unstable_by(f64::total_cmp);
                return Some(trips[ROUND_TRIPS / 2]);
            }
        }
    }
    None
}

/// Multiply-adds per nanosecond of `isa`'s widest small tile on this thread, A, B and C in L1:
/// the best of a few timings of a run of whole tiles. `None` where `isa` has no small tiles.
fn tile_macs_per_ns(isa: Isa) -> Option<f64> {
    const K: usize = 128;
    const CALLS: usize = 32;
    // On the stack: the price is measured in the middle of a program's work (the first time a
    // product finds the team awake), where nothing may allocate.
    const MAX_MR: usize = 16;
    const MAX_NR: usize = 64;
    let tile = small_tile(isa, SMALL, SMALL)?;
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
        // Once measured (or given up on), the price no longer changes.
        if MEASURED.get().is_some() {
            assert_eq!(awake_cost().to_bits(), first.to_bits());
        }
    }

    #[test]
    fn a_tile_has_a_positive_rate_where_its_instruction_set_has_small_tiles() {
        for isa in Isa::available() {
            match tile_macs_per_ns(isa) {
                Some(rate) => assert!(rate.is_finite() && rate > 0.0, "{isa}: {rate}"),
                None => assert!(small_tile(isa, SMALL, SMALL).is_none(), "{isa}"),
            }
        }
    }

    #[test]
    fn a_hand_off_off_the_team_costs_a_fork_join() {
        assert_eq!(HandOff::here(Isa::Scalar, 1).cost(), FORK_JOIN_COST);
    }
}
