//! The library's own helper threads, for the parallel loops of calls made from outside any
//! rayon pool (a program's main thread, a training loop, a C caller of `cblas_sgemm`): products,
//! convolutions, pooling, normalization, activations, optimizer steps.
//!
//! Handing work to a sleeping rayon worker costs about 15 µs on the VMs this project is measured
//! on (measured: an empty `rayon::in_place_scope` spawn from the main thread, back to back, took
//! 14–17 µs on a 2-core Zen 5 VM: the worker has gone to sleep and waking it goes through the
//! hypervisor), which is as long as a whole 128³ product on one core. The helpers here spin for
//! [`SPIN`] after each job before they park, so calls that follow each other (a training step's
//! passes, a benchmark, a solver) find them awake and the hand-off is a few cache-line transfers.
//! Every parallel loop of the crate goes through [`for_each`] (or [`run_parallel`]), so the
//! passes of a step share these helpers: with rayon's pool for the other passes, its workers
//! and the spinning helpers took turns on the same cores (program A, batch 32, ran no faster on
//! two threads than on one).
//!
//! One job runs at a time; a caller that finds the team busy (another thread's job) runs on
//! the rayon pool instead. The caller claims tasks from the first on, the helpers from the last
//! back; each task writes its own part of the output, so which thread runs it never changes a bit.
//!
//! # The hand-off protocol
//! `state` packs the job's epoch (high 32 bits), a `CLOSED` bit and the number of helpers inside
//! the job (low bits). The caller stores the job, then a new epoch with `active = 0`; a helper
//! joins by a compare-and-swap that raises `active` while the epoch is open and fewer than
//! `wanted` helpers are in; it then claims tasks and, done, lowers `active`. The caller, out of
//! tasks, sets `CLOSED` (no helper can join after that) and waits for `active = 0` before it
//! returns: no helper touches a job, which lives on the caller's stack, after that. A helper
//! that was parked, or died with a forked process, simply never joins: the caller runs every
//! task itself, so nothing waits on it.

use rayon::prelude::*;

use crate::process::Threading;
use crate::shared::SharedOut;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long a helper stays awake after a job, waiting for the next. Long enough to span the
/// gap between the products of a loop; short enough that an idle program gives its cores back
/// at once (a helper spinning for this long after each job costs at most this much CPU time).
const SPIN: Duration = Duration::from_micros(200);

const CLOSED: u64 = 1 << 31;
const ACTIVE: u64 = CLOSED - 1;

fn epoch_of(state: u64) -> u64 {
    state >> 32
}

/// One parallel loop: `f(t)` for every `t < tasks`.
struct Job<'a> {
    f: &'a (dyn Fn(usize) + Sync),
    tasks: usize,
    /// Tasks claimed so far: from the front (low 32 bits) by the caller, from the back (high 32
    /// bits) by the helpers.
    claimed: AtomicU64,
    panicked: AtomicBool,
}

impl Job<'_> {
    /// Claims and runs tasks until none is left: the caller from the first task on, the helpers
    /// from the last one back. So on two threads each keeps the same part of C from one product
    /// to the next (its lines stay in that core's cache) unless one falls behind: claimed from
    /// one counter, whichever came first took the first task, and on an AVX-512 Xeon VM, whose
    /// helper often beat the caller to it, 21632×9×32 (C 2.7 MiB, L2 2 MiB) ran at 134–140
    /// GFLOP/s on two threads, where BLIS, which fixes each thread's part, ran 173.
    fn work(&self, from_back: bool) {
        while let Some(t) = self.claim(from_back) {
            (self.f)(t);
        }
    }

    fn claim(&self, from_back: bool) -> Option<usize> {
        let mut claimed = self.claimed.load(Ordering::Relaxed);
        loop {
            let (front, back) = ((claimed & 0xffff_ffff) as usize, (claimed >> 32) as usize);
            if front + back >= self.tasks {
                return None;
            }
            let (next, task) = if from_back {
                (claimed + (1 << 32), self.tasks - 1 - back)
            } else {
                (claimed + 1, front)
            };
            match self.claimed.compare_exchange_weak(
                claimed,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(task),
                Err(now) => claimed = now,
            }
        }
    }
}

struct Team {
    state: AtomicU64,
    /// The open job (valid while its epoch is open or a helper is inside it).
    job: AtomicPtr<Job<'static>>,
    /// How many helpers the open job takes.
    wanted: AtomicUsize,
    /// Helpers spawned so far (the lock serialises spawning; `spawned` mirrors the count for
    /// readers that must not wait).
    helpers: Mutex<usize>,
    spawned: AtomicUsize,
    /// Helpers parked (or about to park) on `wake`.
    sleepers: AtomicUsize,
    sleep_lock: Mutex<()>,
    wake: Condvar,
    /// Held by the caller whose job is open.
    busy: Mutex<()>,
    /// Bumped by [`wake`]: parked helpers get up and spin for another [`SPIN`].
    nudges: AtomicU64,
}

fn team() -> &'static Team {
    static TEAM: OnceLock<Team> = OnceLock::new();
    TEAM.get_or_init(|| Team {
        state: AtomicU64::new(0),
        job: AtomicPtr::new(std::ptr::null_mut()),
        wanted: AtomicUsize::new(0),
        helpers: Mutex::new(0),
        spawned: AtomicUsize::new(0),
        sleepers: AtomicUsize::new(0),
        sleep_lock: Mutex::new(()),
        wake: Condvar::new(),
        busy: Mutex::new(()),
        nudges: AtomicU64::new(0),
    })
}

/// Whether a job handed to the team now would find its helpers awake (spawned, none parked):
/// then a hand-off costs a few cache-line transfers instead of a wake-up through the kernel.
pub(crate) fn awake() -> bool {
    let team = team();
    team.sleepers.load(Ordering::Relaxed) == 0 && team.spawned.load(Ordering::Relaxed) > 0
}

/// Gets parked helpers (spawning them first, up to `threads - 1`) spinning again without giving
/// them work: a caller that runs a product alone because the team was asleep calls this, so
/// that the products that follow it find the team awake.
pub(crate) fn wake(threads: usize) {
    let team = team();
    ensure_helpers(team, threads.saturating_sub(1));
    team.nudges.fetch_add(1, Ordering::SeqCst);
    if team.sleepers.load(Ordering::SeqCst) > 0 {
        notify(team);
    }
}

/// Runs `f(0..tasks)` on up to `threads` threads: on the calling thread alone where that is one
/// task or one thread (nothing handed off, no helper woken). From a rayon pool thread, rayon's
/// own work splitting (the caller works too). From outside any pool (a program's main thread, a C
/// caller), the library's own helper team (this module), whose helpers stay awake between
/// products; if another thread's product holds the team, the caller takes every `threads`-th
/// task itself and hands the other groups to the rayon pool.
pub(crate) fn run_parallel(tasks: usize, threads: usize, f: &(dyn Fn(usize) + Sync)) {
    if threads.min(tasks) <= 1 {
        (0..tasks).for_each(f);
        return;
    }
    if rayon::current_thread_index().is_some() {
        (0..tasks).into_par_iter().for_each(f);
        return;
    }
    if run(tasks, threads, f) {
        return;
    }
    let groups = threads.min(tasks);
    rayon::in_place_scope(|s| {
        for g in 1..groups {
            s.spawn(move |_| (g..tasks).step_by(groups).for_each(f));
        }
        (0..tasks).step_by(groups).for_each(f);
    });
}

/// `f(t)` for every `t < tasks` on the threads `threading` allows ([`run_parallel`]); on the
/// calling thread alone where that is one thread, or one task.
pub(crate) fn for_each(threading: Threading, tasks: usize, f: &(dyn Fn(usize) + Sync)) {
    // One task runs here without asking the pool its size (`run_parallel` keeps one thread's
    // tasks here too).
    if tasks <= 1 {
        (0..tasks).for_each(f);
    } else {
        run_parallel(tasks, crate::process::threads(threading), f);
    }
}

/// `f(i, piece)` for every piece `i` of `out` cut every `len` elements (the last one may be
/// shorter), run as [`for_each`] runs its tasks.
pub(crate) fn for_each_piece<T: Send>(
    threading: Threading,
    out: &mut [T],
    len: usize,
    f: impl Fn(usize, &mut [T]) + Sync,
) {
    let (len, total) = (len.max(1), out.len());
    let out = SharedOut::new(out);
    for_each(threading, total.div_ceil(len), &|i| {
        // SAFETY: piece i is formed by task i alone, and the pieces do not overlap.
        f(i, unsafe { out.slice(i * len..((i + 1) * len).min(total)) })
    });
}

/// `f(i, a_piece, b_piece)` for the matching pieces of two outputs cut every `a_len` and
/// `b_len` elements (as many pieces of each: whole images of a pooling's output and of its
/// argmax), run as [`for_each`] runs its tasks.
pub(crate) fn for_each_piece_pair<A: Send, B: Send>(
    threading: Threading,
    (a, a_len): (&mut [A], usize),
    (b, b_len): (&mut [B], usize),
    f: impl Fn(usize, &mut [A], &mut [B]) + Sync,
) {
    let (a_len, b_len) = (a_len.max(1), b_len.max(1));
    let pieces = (a.len() / a_len).min(b.len() / b_len);
    let (a, b) = (SharedOut::new(a), SharedOut::new(b));
    for_each(threading, pieces, &|i| {
        // SAFETY: pieces i are formed by task i alone, and the pieces do not overlap.
        let (a_i, b_i) = unsafe {
            (
                a.slice(i * a_len..(i + 1) * a_len),
                b.slice(i * b_len..(i + 1) * b_len),
            )
        };
        f(i, a_i, b_i)
    });
}

/// Runs `f` once on every thread that this thread's parallel calls into the library may run
/// tasks on: the calling thread and the library's helper threads (started now if they were
/// not yet) — or, called from a thread of a rayon pool, every thread of that pool. For state
/// a thread keeps for itself: scratch buffers grown ahead of time, a flag a test or a profiler
/// sets. Threads busy with another caller's work at that moment may be missed (`f` then ran on
/// fewer threads).
pub fn on_every_thread(f: &(dyn Fn() + Sync)) {
    let _every = broadcast(crate::process::threads(Threading::Rayon), f);
}

/// Runs `f` once on the calling thread and once on each of the helpers a call on `threads`
/// threads may use (spawning them first), each thread once: so that thread-local state (the
/// scratch buffers) is ready on every thread that may run a task. From a rayon pool thread, on
/// every thread of that pool. Returns whether every thread ran it: where the team is busy with
/// another thread's job, or a helper does not come within a second, the threads missed did not.
pub(crate) fn broadcast(threads: usize, f: &(dyn Fn() + Sync)) -> bool {
    if rayon::current_thread_index().is_some() {
        rayon::broadcast(|_| f());
        return true;
    }
    // A forked child has no helpers (the team's count is the parent's): the caller alone.
    if crate::process::forked_child() {
        f();
        return threads <= 1;
    }
    let helpers = ensure_helpers(team(), threads.saturating_sub(1));
    if helpers == 0 {
        f();
        return threads <= 1;
    }
    // Each task waits, after running `f`, until every task has begun, so no thread takes two.
    let (begun, missed) = (AtomicUsize::new(0), AtomicBool::new(false));
    let task = |_| {
        begun.fetch_add(1, Ordering::AcqRel);
        f();
        let until = Instant::now() + Duration::from_secs(1);
        while begun.load(Ordering::Acquire) < helpers + 1 {
            if Instant::now() > until {
                missed.store(true, Ordering::Relaxed);
                break;
            }
            std::hint::spin_loop();
        }
    };
    if !run(helpers + 1, helpers + 1, &task) {
        f();
        return false;
    }
    !missed.into_inner() && helpers + 1 >= threads
}

/// Runs `f(t)` for every `t < tasks` on the calling thread and up to `threads - 1` helpers (on
/// the calling thread alone, without waking any, where one task or one thread is all there is).
/// Returns `false`, having run nothing, when another thread's job holds the team (a job of two
/// or more tasks on two or more threads; or, never in practice, `tasks` does not fit the job's
/// 32-bit counts).
pub(crate) fn run(tasks: usize, threads: usize, f: &(dyn Fn(usize) + Sync)) -> bool {
    if tasks > u32::MAX as usize {
        return false;
    }
    if threads.min(tasks) <= 1 {
        // No helper would join: opening a job would only wake the parked ones, for nothing.
        (0..tasks).for_each(f);
        return true;
    }
    #[cfg(test)]
    tests::JOBS_TRIED.with(|n| n.set(n.get() + 1));
    let team = team();
    // A task that panicked on this thread poisoned the lock; the team itself is intact.
    let _busy = match team.busy.try_lock() {
        Ok(guard) => guard,
        Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
        Err(std::sync::TryLockError::WouldBlock) => return false,
    };
    let wanted = ensure_helpers(team, threads.min(tasks).saturating_sub(1));
    let job = Job {
        f,
        tasks,
        claimed: AtomicU64::new(0),
        panicked: AtomicBool::new(false),
    };
    let epoch = epoch_of(team.state.load(Ordering::Relaxed)).wrapping_add(1) & 0xffff_ffff;
    // The lifetime is erased for the helpers; the protocol (module docs) keeps them from
    // touching the job after `close` below returns, before `job` goes out of scope.
    team.job.store(
        &job as *const Job<'_> as *mut Job<'static>,
        Ordering::Relaxed,
    );
    team.wanted.store(wanted, Ordering::Relaxed);
    team.state.store(epoch << 32, Ordering::SeqCst);
    if team.sleepers.load(Ordering::SeqCst) > 0 {
        notify(team);
    }
    // Close and wait for the helpers even if a task panics on this thread.
    struct Close<'t>(&'t Team);
    impl Drop for Close<'_> {
        fn drop(&mut self) {
            self.0.state.fetch_or(CLOSED, Ordering::AcqRel);
            while self.0.state.load(Ordering::Acquire) & ACTIVE != 0 {
                std::hint::spin_loop();
            }
        }
    }
    let close = Close(team);
    job.work(false);
    drop(close);
    if job.panicked.load(Ordering::Relaxed) {
        panic!("a kernels task panicked on a helper thread");
    }
    true
}

/// Wakes the parked helpers. The lock is taken with a bounded number of tries: a helper holds
/// it only between announcing that it parks and parking, unless the process was forked at that
/// moment (the helper is gone and the lock never comes free): then the helpers stay parked and
/// the caller runs the tasks alone.
fn notify(team: &Team) {
    for _ in 0..10_000 {
        if let Ok(guard) = team.sleep_lock.try_lock() {
            team.wake.notify_all();
            drop(guard);
            return;
        }
        std::hint::spin_loop();
    }
}

/// Spawns helpers until there are `want` (as many as the system allows); returns how many the
/// job may use.
fn ensure_helpers(team: &'static Team, want: usize) -> usize {
    if want == 0 {
        return 0;
    }
    if team.spawned.load(Ordering::Relaxed) >= want {
        return want;
    }
    let Ok(mut count) = team.helpers.lock() else {
        return 0;
    };
    while *count < want {
        // The epoch before the job this call is about to open: a helper that read the epoch
        // only once it ran would take that job for one it had seen, and never join it (a
        // broadcast then waited out its whole patience for a helper spawned for it).
        let seen = epoch_of(team.state.load(Ordering::Acquire));
        let spawned = std::thread::Builder::new()
            .name(format!("kernels-helper-{}", *count + 1))
            .spawn(move || helper(team, seen));
        if spawned.is_err() {
            break;
        }
        *count += 1;
        team.spawned.store(*count, Ordering::Relaxed);
    }
    want.min(*count)
}

/// A helper's loop; `seen` is the last epoch it is not to join.
fn helper(team: &'static Team, mut seen: u64) {
    let mut idle_since = Instant::now();
    let mut polls = 0u32;
    loop {
        let state = team.state.load(Ordering::Acquire);
        let epoch = epoch_of(state);
        if epoch == seen {
            polls = polls.wrapping_add(1);
            if polls.is_multiple_of(256) && idle_since.elapsed() > SPIN {
                park(team, seen);
                idle_since = Instant::now();
            } else {
                std::hint::spin_loop();
            }
            continue;
        }
        if state & CLOSED != 0 || (state & ACTIVE) as usize >= team.wanted.load(Ordering::Acquire) {
            seen = epoch;
            continue;
        }
        if team
            .state
            .compare_exchange_weak(state, state + 1, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            continue;
        }
        // SAFETY: this helper joined the open job (active > 0), so its caller is still inside
        // `run`, waiting in `Close` for active to fall to 0: the job outlives this use.
        let job = unsafe { &*team.job.load(Ordering::Acquire) };
        if catch_unwind(AssertUnwindSafe(|| job.work(true))).is_err() {
            job.panicked.store(true, Ordering::Relaxed);
            // Let the caller finish the remaining tasks' count without this helper.
        }
        team.state.fetch_sub(1, Ordering::AcqRel);
        seen = epoch;
        idle_since = Instant::now();
    }
}

/// Parks until the epoch moves past `seen` or someone calls [`wake`].
fn park(team: &Team, seen: u64) {
    let Ok(mut guard) = team.sleep_lock.lock() else {
        return;
    };
    team.sleepers.fetch_add(1, Ordering::SeqCst);
    let nudges = team.nudges.load(Ordering::SeqCst);
    while epoch_of(team.state.load(Ordering::SeqCst)) == seen
        && team.nudges.load(Ordering::SeqCst) == nudges
    {
        guard = match team.wake.wait(guard) {
            Ok(g) => g,
            Err(_) => break,
        };
    }
    team.sleepers.fetch_sub(1, Ordering::SeqCst);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::sync::atomic::AtomicU32;

    thread_local! {
        /// Jobs this thread offered the helpers (opened, or declined as the team was busy).
        pub(super) static JOBS_TRIED: Cell<u64> = const { Cell::new(0) };
    }

    /// A loop of one task, or on one thread, runs on the caller without offering a job: opening
    /// one woke the parked helpers, which then spun for [`SPIN`] with nothing to do. A Dense
    /// layer's bias gradient (a one-task matrix–vector product) did so at every step of
    /// program E (batch 32), whose helper thus never slept, and its epoch on two threads took
    /// 1.23× as long as on one (1.00× without).
    #[test]
    fn one_task_or_one_thread_opens_no_job() {
        let ran = AtomicU32::new(0);
        let f = |_: usize| {
            ran.fetch_add(1, Ordering::Relaxed);
        };
        let tried = || JOBS_TRIED.with(Cell::get);
        let before = tried();
        run_parallel(1, 2, &f);
        run_parallel(3, 1, &f);
        run_parallel(0, 2, &f);
        assert!(run(1, 2, &f), "a one-task job runs, busy team or not");
        assert_eq!(ran.load(Ordering::Relaxed), 5);
        assert_eq!(tried(), before);
        // Two tasks on two threads are offered (and run here if another test's job holds the
        // team).
        if !run(2, 2, &f) {
            (0..2).for_each(f);
        }
        assert_eq!(tried(), before + 1);
        assert_eq!(ran.load(Ordering::Relaxed), 7);
    }

    #[test]
    fn every_task_runs_once_whoever_runs_it() {
        for (tasks, threads) in [(0, 2), (1, 2), (2, 2), (7, 3), (100, 2), (5, 1)] {
            let counts: Vec<AtomicU32> = (0..tasks).map(|_| AtomicU32::new(0)).collect();
            // Back to back (helpers awake) and after a pause longer than SPIN (helpers parked).
            // (Another test holding the team makes `run` decline: then the tasks run here.)
            for pause in [Duration::ZERO, SPIN * 5] {
                std::thread::sleep(pause);
                let f = |t: usize| {
                    counts[t].fetch_add(1, Ordering::Relaxed);
                };
                if !run(tasks, threads, &f) {
                    (0..tasks).for_each(f);
                }
            }
            assert!(counts.iter().all(|c| c.load(Ordering::Relaxed) == 2));
        }
    }

    #[test]
    fn the_caller_takes_tasks_from_the_front_and_the_helpers_from_the_back() {
        let caller = std::thread::current().id();
        for _ in 0..100 {
            let on_caller: Vec<AtomicBool> = (0..8).map(|_| AtomicBool::new(false)).collect();
            let f = |t: usize| {
                on_caller[t].store(std::thread::current().id() == caller, Ordering::Relaxed);
                std::thread::sleep(Duration::from_micros(20));
            };
            if !run(8, 2, &f) {
                continue; // another test's job holds the team
            }
            // The caller's tasks are a prefix of 0..8, the helper's the rest.
            let mine: Vec<bool> = on_caller
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect();
            let split = mine.iter().take_while(|&&b| b).count();
            assert!(mine[split..].iter().all(|&b| !b), "{mine:?}");
        }
    }

    #[test]
    fn pieces_cover_their_outputs_once_with_their_own_indices() {
        for (len, piece) in [(0, 3), (1, 3), (10, 3), (12, 4), (7, 100)] {
            for threading in [Threading::Single, Threading::Rayon] {
                let mut out = vec![usize::MAX; len];
                for_each_piece(threading, &mut out, piece, |i, p| {
                    assert!(
                        p.len() == piece || (i + 1) * piece >= len,
                        "{i} {}",
                        p.len()
                    );
                    p.iter_mut().for_each(|v| *v = i);
                });
                assert!(
                    out.iter().enumerate().all(|(e, &v)| v == e / piece),
                    "{out:?}"
                );
                // Pairs: as many pieces as the shorter output holds whole.
                let (mut a, mut b) = (vec![0u32; len], vec![0u8; 2 * len + 1]);
                for_each_piece_pair(
                    threading,
                    (&mut a, piece),
                    (&mut b, 2 * piece),
                    |i, x, y| {
                        assert_eq!((x.len(), y.len()), (piece, 2 * piece));
                        x.iter_mut().for_each(|v| *v = i as u32 + 1);
                        y.iter_mut().for_each(|v| *v = 1);
                    },
                );
                let whole = len / piece * piece;
                assert!(a[..whole].iter().all(|&v| v > 0) && a[whole..].iter().all(|&v| v == 0));
                assert_eq!(b.iter().filter(|&&v| v == 1).count(), 2 * whole);
            }
        }
    }

    #[test]
    fn every_thread_runs_the_broadcast_once() {
        // Three threads: a helper more than the other tests start, so one is spawned for this
        // broadcast and must join the job it was spawned for.
        for threads in [1, 2, 3, 3] {
            let ran: Mutex<Vec<std::thread::ThreadId>> = Mutex::new(Vec::new());
            let every = broadcast(threads, &|| {
                ran.lock().unwrap().push(std::thread::current().id())
            });
            let mut ids = ran.into_inner().unwrap();
            let count = ids.len();
            ids.sort_unstable_by_key(|id| format!("{id:?}"));
            ids.dedup();
            assert_eq!(ids.len(), count, "a thread ran it twice");
            // All of them, unless another test's job held the team (then the caller alone).
            assert!(
                count == threads || (!every && count == 1),
                "{count} of {threads}"
            );
        }
    }

    #[test]
    fn concurrent_callers_never_share_a_job() {
        let total = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..200 {
                        let ran = AtomicUsize::new(0);
                        if !run(10, 2, &|_| {
                            ran.fetch_add(1, Ordering::Relaxed);
                        }) {
                            (0..10).for_each(|_| {
                                ran.fetch_add(1, Ordering::Relaxed);
                            });
                        }
                        assert_eq!(ran.load(Ordering::Relaxed), 10);
                        total.fetch_add(10, Ordering::Relaxed);
                    }
                });
            }
        });
        assert_eq!(total.load(Ordering::Relaxed), 8000);
    }

    #[test]
    fn a_panicking_task_reaches_the_caller_and_the_team_goes_on() {
        for _ in 0..20 {
            // Another test's callers may hold the team for a moment (`run` then declines):
            // try again until this job runs.
            let result = catch_unwind(|| {
                while !run(64, 2, &|t| {
                    if t % 2 == 1 {
                        std::thread::sleep(Duration::from_micros(10));
                        panic!("task {t}");
                    }
                }) {
                    std::thread::yield_now();
                }
            });
            assert!(result.is_err());
        }
        let ran = AtomicUsize::new(0);
        let f = |_| {
            ran.fetch_add(1, Ordering::Relaxed);
        };
        if !run(8, 2, &f) {
            (0..8).for_each(f);
        }
        assert_eq!(ran.load(Ordering::Relaxed), 8);
    }
}
