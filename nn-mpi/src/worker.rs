//! The communication thread: every MPI call of the process happens here, one at a time, in the
//! order the training thread asked for them (the ranks' training threads ask in the same
//! order, so the collectives match). Waiting is done by testing the request and sleeping
//! between tests, never by MPI's own busy wait: while a bucket's sum waits for the other ranks,
//! this process's training thread keeps its core for the backward pass.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::time::{Duration, Instant};

use mpi::collective::CommunicatorCollectives;
use mpi::request::{Request, Scope};
use mpi::topology::{Communicator, SimpleCommunicator};
use mpi::traits::Root;

/// What the training thread asks for.
pub(crate) enum Job {
    Broadcast(Vec<f32>, usize),
    AllGather(u64),
    SumF64(Vec<f64>),
    Sum(Vec<f32>),
}

/// What comes back, in the order the jobs were sent.
pub(crate) enum Done {
    /// A sum, and how long this thread worked on it (from taking the job to the last part).
    Sum(Vec<f32>, Duration),
    F32(Vec<f32>),
    F64(Vec<f64>),
    U64(Vec<u64>),
}

/// Tests before the first sleep: a collective whose partners are already waiting completes
/// within a few tests.
const SPINS: u32 = 64;
/// Sleep between tests after that, while the training thread works. Linux wakes a sleeper
/// some 50 µs late, and every round of a collective's protocol needs a test on each side: a
/// 4 MiB sum between two ranks took 3.1 ms so (median), 0.8 ms testing without a pause.
const NAP: Duration = Duration::from_micros(20);

/// Waits for `request` by testing it: without pause while the training thread itself waits
/// for a result (`caller_waits`: the core is this thread's), with naps while it works.
fn wait<'a, D: ?Sized, S: Scope<'a>>(mut request: Request<'a, D, S>, caller_waits: &AtomicBool) {
    let mut tests = 0u32;
    loop {
        match request.test() {
            Ok(_) => return,
            Err(r) => request = r,
        }
        tests += 1;
        if tests < SPINS || caller_waits.load(Ordering::Relaxed) {
            std::thread::yield_now();
        } else {
            std::thread::sleep(NAP);
        }
    }
}

/// The buffers a sum needs beyond its own, grown to the largest bucket and kept.
#[derive(Default)]
struct Scratch {
    received: Vec<f32>,
    mine: Vec<f32>,
    gathered: Vec<f64>,
}

/// Serves jobs until the channel closes (the handle was dropped).
pub(crate) fn serve(
    world: &SimpleCommunicator,
    jobs: Receiver<Job>,
    done: Sender<Done>,
    caller_waits: &AtomicBool,
) {
    let mut scratch = Scratch::default();
    let size = world.size() as usize;
    for job in jobs {
        let out = match job {
            Job::Broadcast(mut data, root) => {
                let root = world.process_at_rank(root as i32);
                mpi::request::scope(|s| {
                    wait(
                        root.immediate_broadcast_into(s, &mut data[..]),
                        caller_waits,
                    )
                });
                Done::F32(data)
            }
            Job::AllGather(value) => {
                let mut all = vec![0u64; size];
                mpi::request::scope(|s| {
                    wait(
                        world.immediate_all_gather_into(s, &value, &mut all[..]),
                        caller_waits,
                    )
                });
                Done::U64(all)
            }
            Job::SumF64(mut data) => {
                let len = data.len();
                scratch.gathered.resize(len * size, 0.0);
                let gathered = &mut scratch.gathered;
                mpi::request::scope(|s| {
                    let r = world.immediate_all_gather_into(s, &data[..], &mut gathered[..]);
                    wait(r, caller_waits)
                });
                data.fill(0.0);
                for part in gathered.chunks_exact(len.max(1)) {
                    for (d, &v) in data.iter_mut().zip(part) {
                        *d += v;
                    }
                }
                Done::F64(data)
            }
            Job::Sum(mut data) => {
                let start = Instant::now();
                sum(world, size, &mut data, &mut scratch, caller_waits);
                Done::Sum(data, start.elapsed())
            }
        };
        if done.send(out).is_err() {
            return;
        }
    }
}

/// Sums `data` across the ranks in rank order, in place: rank c gathers chunk c of every
/// rank's data (all-to-all), adds the parts in rank order, and every rank gathers the summed
/// chunks (all-gather). Each rank sends and receives 2(N − 1)/N of the data, as a ring
/// allreduce does, but the order of the additions is fixed. Only data moves through MPI: no
/// MPI reduction runs, so no MPI library's choice of algorithm changes the bits. (For two
/// ranks, one all-gather of the whole data and both adding moves as much in one round instead
/// of two; measured on a 2-core Zen 4, a 4 MiB sum took 1.2 ms that way against 0.73 ms, the
/// epochs of the reference CNN no shorter.)
fn sum(
    world: &SimpleCommunicator,
    size: usize,
    data: &mut Vec<f32>,
    scratch: &mut Scratch,
    caller_waits: &AtomicBool,
) {
    let len = data.len();
    if len == 0 || size == 1 {
        return;
    }
    let chunk = len.div_ceil(size);
    data.resize(chunk * size, 0.0);
    scratch.received.resize(chunk * size, 0.0);
    scratch.mine.resize(chunk, 0.0);
    let Scratch { received, mine, .. } = scratch;
    mpi::request::scope(|s| {
        let r = world.immediate_all_to_all_into(s, &data[..], &mut received[..]);
        wait(r, caller_waits)
    });
    nn::distributed::sum_in_order(mine, received.chunks_exact(chunk));
    mpi::request::scope(|s| {
        let r = world.immediate_all_gather_into(s, &mine[..], &mut data[..]);
        wait(r, caller_waits)
    });
    data.truncate(len);
}
