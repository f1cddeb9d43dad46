//! The communication thread: every MPI call of the process happens here, one at a time, in the
//! order the training thread asked for them (the ranks' training threads ask in the same
//! order, so the collectives match). Waiting is done by testing the request and parking
//! between tests, never by MPI's own busy wait: while a bucket's sum waits for the other ranks,
//! this process's training thread keeps its core for the backward pass.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::time::{Duration, Instant};

use mpi::collective::CommunicatorCollectives;
use mpi::datatype::{Partition, PartitionMut};
use mpi::request::{Request, Scope};
use mpi::topology::{Communicator, SimpleCommunicator};
use mpi::traits::Root;
use mpi::Count;

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

/// Pause between tests while the training thread works (it unparks this thread as soon as it
/// starts waiting for a sum, which is then tested without pause). Every round of a
/// collective's protocol needs a test on each side, so a shorter pause advances a sum sooner,
/// but each wake-up takes the core from the training thread, which computes on it. Measured on
/// a 2-core Zen 4, the reference CNN on 2 ranks at batch 256, epoch time ÷ one process's
/// (medians of 4 interleaved rounds): 1.14 with 20 µs, 1.12 with 300 µs, 1.15 with 3 ms.
/// Yielding instead would be worse: a yield hands the training thread the core for the rest
/// of its time slice, milliseconds.
const NAP: Duration = Duration::from_micros(300);

/// Waits for `request` by testing it: without pause while the training thread itself waits
/// for a result (`caller_waits`: the core is this thread's), parked between tests while it
/// works.
fn wait<'a, D: ?Sized, S: Scope<'a>>(mut request: Request<'a, D, S>, caller_waits: &AtomicBool) {
    loop {
        match request.test() {
            Ok(_) => return,
            Err(r) => request = r,
        }
        if caller_waits.load(Ordering::Relaxed) {
            std::thread::yield_now();
        } else {
            // The training thread unparks this one when it starts waiting.
            std::thread::park_timeout(NAP);
        }
    }
}

/// The buffers a sum needs beyond its own, grown to the largest bucket and kept.
#[derive(Default)]
struct Scratch {
    received: Vec<f32>,
    mine: Vec<f32>,
    gathered: Vec<f64>,
    /// One piece of a vector too long for one MPI call.
    piece: Vec<f32>,
    /// Per rank: values exchanged with it (none with oneself) and where they lie.
    counts: Vec<Count>,
    displs: Vec<Count>,
    zeros: Vec<Count>,
}

/// The most values one MPI call carries: MPI counts and displacements are C ints, so a longer
/// vector goes in pieces of at most this many values (each piece summed exactly as the whole
/// would be: the sums are element by element).
pub(crate) const MAX_PIECE: usize = i32::MAX as usize;

/// The piece size: [`MAX_PIECE`], or for tests a smaller one from `NN_MPI_MAX_PIECE`, so that
/// the pieced path runs on vectors of ordinary size.
pub(crate) fn max_piece() -> usize {
    std::env::var("NN_MPI_MAX_PIECE")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .map_or(MAX_PIECE, |p| p.clamp(1, MAX_PIECE))
}

/// Serves jobs until the channel closes (the handle was dropped). `piece`: the most values one
/// MPI call may carry (at least 1, at most [`MAX_PIECE`]).
pub(crate) fn serve(
    world: &SimpleCommunicator,
    jobs: Receiver<Job>,
    done: Sender<Done>,
    caller_waits: &AtomicBool,
    piece: usize,
) {
    let mut scratch = Scratch::default();
    let size = world.size() as usize;
    for job in jobs {
        let out = match job {
            Job::Broadcast(mut data, root) => {
                let root = world.process_at_rank(root as i32);
                for part in data.chunks_mut(piece) {
                    mpi::request::scope(|s| {
                        wait(root.immediate_broadcast_into(s, part), caller_waits)
                    });
                }
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
                // Every rank's values gathered (size × the piece), then added in rank order.
                for values in data.chunks_mut((piece / size).max(1)) {
                    let len = values.len();
                    scratch.gathered.resize(len * size, 0.0);
                    let gathered = &mut scratch.gathered;
                    mpi::request::scope(|s| {
                        let r = world.immediate_all_gather_into(s, &values[..], &mut gathered[..]);
                        wait(r, caller_waits)
                    });
                    values.fill(0.0);
                    for part in gathered.chunks_exact(len) {
                        for (d, &v) in values.iter_mut().zip(part) {
                            *d += v;
                        }
                    }
                }
                Done::F64(data)
            }
            Job::Sum(mut data) => {
                let start = Instant::now();
                // Pieces whose chunks for all ranks fit one call's counts and displacements.
                let whole = (piece / size).max(1) * size;
                if data.len() <= whole {
                    sum(world, size, &mut data, &mut scratch, caller_waits);
                } else {
                    let mut part = std::mem::take(&mut scratch.piece);
                    for values in data.chunks_mut(whole) {
                        part.clear();
                        part.extend_from_slice(values);
                        sum(world, size, &mut part, &mut scratch, caller_waits);
                        values.copy_from_slice(&part);
                    }
                    scratch.piece = part;
                }
                Done::Sum(data, start.elapsed())
            }
        };
        if done.send(out).is_err() {
            return;
        }
    }
}

/// Sums `data` across the ranks in rank order, in place: rank r gathers chunk r of every
/// other rank's data (an all-to-all that skips itself), adds the parts in rank order into its
/// own chunk where it lies, and sends the sum to every other rank (a second all-to-all, which
/// writes their chunks into place). Each rank sends and receives 2(N − 1)/N of the data, as a
/// ring allreduce does, but the order of the additions is fixed, and nothing is copied to
/// itself. Only data moves through MPI: no MPI reduction runs, so no MPI library's choice of
/// algorithm changes the bits. (For two ranks, one all-gather of the whole data and both
/// adding moves as much in one round instead of two; measured on a 2-core Zen 4, a 4 MiB sum
/// took 1.2 ms that way against 0.73 ms, the epochs of the reference CNN no shorter.)
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
    let rank = world.rank() as usize;
    let chunk = len.div_ceil(size);
    data.resize(chunk * size, 0.0);
    scratch.received.resize(chunk * size, 0.0);
    scratch.mine.resize(chunk, 0.0);
    let Scratch {
        received,
        mine,
        counts,
        displs,
        zeros,
        ..
    } = scratch;
    let c = chunk as Count;
    counts.clear();
    counts.extend((0..size).map(|j| if j == rank { 0 } else { c }));
    displs.clear();
    displs.extend((0..size as Count).map(|j| j * c));
    zeros.clear();
    zeros.resize(size, 0);
    {
        let send = Partition::new(&data[..], &counts[..], &displs[..]);
        let mut recv = PartitionMut::new(&mut received[..], &counts[..], &displs[..]);
        mpi::request::scope(|s| {
            let r = world.immediate_all_to_all_varcount_into(s, &send, &mut recv);
            wait(r, caller_waits)
        });
    }
    // ((t₀ + t₁) + …) with this rank's own term t_r read where it lies.
    let own = &mut data[rank * chunk..(rank + 1) * chunk];
    if rank > 0 {
        let (first, rest) = received.split_at_mut(chunk);
        for j in 1..rank {
            add(first, &rest[(j - 1) * chunk..j * chunk]);
        }
        // acc + t_r (IEEE addition is commutative, exactly: the bits of `t_r + acc`).
        add(own, first);
    }
    for j in rank + 1..size {
        add(own, &received[j * chunk..(j + 1) * chunk]);
    }
    mine.copy_from_slice(own);
    {
        let send = Partition::new(&mine[..], &counts[..], &zeros[..]);
        let mut recv = PartitionMut::new(&mut data[..], &counts[..], &displs[..]);
        mpi::request::scope(|s| {
            let r = world.immediate_all_to_all_varcount_into(s, &send, &mut recv);
            wait(r, caller_waits)
        });
    }
    data.truncate(len);
}

/// `acc += part`, element by element.
fn add(acc: &mut [f32], part: &[f32]) {
    for (a, &p) in acc.iter_mut().zip(part) {
        *a += p;
    }
}
