//! Data-parallel training for `nn` over MPI: [`Mpi`] is an [`nn::distributed::Collective`]
//! on the MPI library the program is linked with (Open MPI, MPICH, a cluster's own), so that a
//! job launched by `mpirun` or Slurm's `srun` trains with `Sequential::fit_distributed`.
//!
//! ```no_run
//! use nn::prelude::*;
//! fn main() -> std::process::ExitCode {
//!     nn_mpi::run(|comm| {
//!         let ((x, y), _) = nn::datasets::mnist::load_data()?;
//!         let (x, y) = (x.to_tensor()?, to_categorical(&y, 10)?);
//!         let mut model = Sequential::new()
//!             .input_shape(&[28, 28, 1])
//!             .add(Flatten::new())
//!             .add(Dense::new(10, Act::Softmax));
//!         model.compile(Optimizer::adam(), Loss::categorical_crossentropy(), &[])?;
//!         let cfg = FitConfig::new().batch_size(256).verbose(if comm.rank() == 0 { 1 } else { 0 });
//!         model.fit_distributed(&x, &y, &cfg, comm, &mut [])?;
//!         Ok(())
//!     })
//! }
//! ```
//!
//! Faults: a panic on any rank, or an error returned to [`run`], ends the whole job at once
//! with a non-zero exit (MPI_Abort: the other ranks, waiting in a collective, would otherwise
//! wait forever, and MPI_Finalize while unwinding would too). A rank killed from outside ends
//! the job through the launcher. A process whose MPI library sees another world size than its
//! launcher started (the binary linked to one MPI, launched by another's `mpirun`) is refused
//! at [`Mpi::init`].

#![forbid(unsafe_code)]

mod worker;

use std::collections::VecDeque;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mpi::topology::{Communicator, SimpleCommunicator};
use mpi::Threading;
use nn::distributed::Collective;
use nn::{Error, Result};

use worker::{Done, Job};

/// This process's place in an MPI job (see the crate's documentation).
pub struct Mpi {
    rank: usize,
    size: usize,
    jobs: Option<Sender<Job>>,
    done: Receiver<Done>,
    /// Sums finished while a blocking call waited for its own answer, oldest first.
    finished: VecDeque<Vec<f32>>,
    /// Sums started and not yet handed back.
    in_flight: usize,
    stats: SumStats,
    /// The vector `sum_f64` sends its values in and gets them back in (no allocation a step).
    spare_f64: Vec<f64>,
    /// Set while this thread waits for an answer (and the communication thread unparked): it
    /// then tests its requests without pausing.
    waiting: Arc<AtomicBool>,
    worker: Option<JoinHandle<()>>,
}

/// See [`Mpi::sum_stats`].
#[derive(Clone, Copy, Debug, Default)]
pub struct SumStats {
    /// Sums started.
    pub sums: u64,
    /// Values summed (f32), over all sums.
    pub values: u64,
    /// Time the communication thread spent on the sums (moving the data, adding, and waiting
    /// for the other ranks' parts).
    pub busy: Duration,
    /// Time the caller of `finish_sum` waited for a sum: the communication not hidden.
    pub waited: Duration,
}

impl SumStats {
    /// The fraction of the sums' time hidden behind the caller's work (1 − waited ÷ busy).
    pub fn hidden(&self) -> f64 {
        let busy = self.busy.as_secs_f64();
        if busy > 0.0 {
            (1.0 - self.waited.as_secs_f64() / busy).max(0.0)
        } else {
            1.0
        }
    }
}

fn lost() -> Error {
    Error::Distributed("the MPI communication thread has ended".into())
}

/// The world size the launcher says it started, from the variables launchers set: Open MPI's
/// `mpirun`, then Hydra's (MPICH, Intel MPI) and Slurm's PMI, then `srun`'s own.
fn launcher_size() -> Option<(usize, &'static str)> {
    ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "SLURM_STEP_NUM_TASKS"]
        .into_iter()
        .find_map(|var| {
            let v = std::env::var(var).ok()?;
            Some((v.trim().parse().ok()?, var))
        })
}

impl Mpi {
    /// Initialises MPI (on a thread of its own, which makes every MPI call of the process) and
    /// checks that the world is the one the launcher started. Once per process.
    pub fn init() -> Result<Mpi> {
        let (jobs, job_rx) = channel();
        let (done_tx, done) = channel();
        let (ready_tx, ready) = channel::<Result<(usize, usize)>>();
        let waiting = Arc::new(AtomicBool::new(false));
        let caller_waits = waiting.clone();
        let worker = std::thread::Builder::new()
            .name("mpi".into())
            .spawn(move || {
                // MPI_Init_thread on this thread: it is MPI's main thread (FUNNELED). MULTIPLE
                // is asked for so that a panicking thread may call MPI_Abort itself.
                let Some((universe, provided)) =
                    mpi::initialize_with_threading(Threading::Multiple)
                else {
                    let _ = ready_tx.send(Err(Error::Distributed(
                        "MPI was initialised already in this process".into(),
                    )));
                    return;
                };
                // MPI_Abort from another thread (a panic's, or `run`'s on an error) is only
                // defined with MULTIPLE; below it, such a thread ends the process instead.
                ABORT_BY_MPI.store(provided == Threading::Multiple, Ordering::SeqCst);
                let world = universe.world();
                let (rank, size) = (world.rank() as usize, world.size() as usize);
                if let Some((expected, var)) = launcher_size() {
                    if expected != size {
                        let _ = ready_tx.send(Err(Error::Distributed(format!(
                            "the launcher started {expected} processes ({var}), but this \
                             process's MPI library sees a world of {size}: the program is \
                             linked to another MPI than the launcher's (use the mpirun of the \
                             MPI it was built with)"
                        ))));
                        return;
                    }
                }
                if ready_tx.send(Ok((rank, size))).is_err() {
                    return;
                }
                worker::serve(&world, job_rx, done_tx, &caller_waits, worker::max_piece());
                // MPI_Finalize when `universe` drops, here on MPI's main thread; no MPI call
                // may follow it.
                ABORT_BY_MPI.store(false, Ordering::SeqCst);
            })
            .map_err(|e| Error::Distributed(format!("cannot start the MPI thread: {e}")))?;
        let (rank, size) = ready.recv().map_err(|_| lost())??;
        install_abort_on_panic(rank, size);
        Ok(Mpi {
            rank,
            size,
            jobs: Some(jobs),
            done,
            finished: VecDeque::new(),
            in_flight: 0,
            stats: SumStats::default(),
            spare_f64: vec![],
            waiting,
            worker: Some(worker),
        })
    }

    /// This process's rank, 0-based (also through [`Collective`]).
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// The number of ranks in the job.
    pub fn size(&self) -> usize {
        self.size
    }

    /// What the sums (the gradients' buckets) cost so far: how long the communication thread
    /// worked on them, and how much of that the training thread waited for — the rest was
    /// hidden behind the backward pass.
    pub fn sum_stats(&self) -> SumStats {
        self.stats
    }

    /// Ends the whole job now, every rank, with exit code `code` (MPI_Abort).
    pub fn abort(&self, code: i32) -> ! {
        abort_job(code)
    }

    fn send(&mut self, job: Job) -> Result<()> {
        self.jobs
            .as_ref()
            .ok_or_else(lost)?
            .send(job)
            .map_err(|_| lost())
    }

    /// The next answer of the communication thread, waited for.
    fn receive(&self) -> Result<Done> {
        self.waiting.store(true, Ordering::Relaxed);
        if let Some(w) = &self.worker {
            w.thread().unpark();
        }
        let done = self.done.recv().map_err(|_| lost());
        self.waiting.store(false, Ordering::Relaxed);
        done
    }

    /// The answer to the last blocking job, keeping the sums that finish before it.
    fn answer(&mut self) -> Result<Done> {
        loop {
            match self.receive()? {
                Done::Sum(v, busy) => {
                    self.in_flight -= 1;
                    self.stats.busy += busy;
                    self.finished.push_back(v);
                }
                other => return Ok(other),
            }
        }
    }
}

impl Drop for Mpi {
    fn drop(&mut self) {
        // Closing the channel ends the thread, which finalises MPI.
        self.jobs.take();
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

/// Whether MPI_Abort may be called from any thread now (MPI initialised with MULTIPLE and not
/// yet finalised).
static ABORT_BY_MPI: AtomicBool = AtomicBool::new(false);

/// Ends the job: MPI_Abort where it may be called (every rank ends); else this process aborts
/// (no exit handlers: the MPI library's might wait for the other ranks), which launchers take
/// as the job's failure too.
fn abort_job(code: i32) -> ! {
    use mpi::topology::Communicator as _;
    if ABORT_BY_MPI.load(Ordering::SeqCst) {
        SimpleCommunicator::world().abort(code)
    }
    std::process::abort()
}

/// A panic on any thread prints its message as usual, then ends the job (MPI_Abort), rather
/// than leave the other ranks waiting for this one.
fn install_abort_on_panic(rank: usize, size: usize) {
    let print = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        print(info);
        eprintln!("rank {rank} of {size} panicked: ending the job");
        abort_job(101);
    }));
}

impl Collective for Mpi {
    fn rank(&self) -> usize {
        self.rank
    }
    fn size(&self) -> usize {
        self.size
    }
    fn broadcast(&mut self, data: &mut [f32], root: usize) -> Result<()> {
        if root >= self.size {
            return Err(Error::Distributed(format!(
                "broadcast from rank {root} in a world of {}",
                self.size
            )));
        }
        self.send(Job::Broadcast(data.to_vec(), root))?;
        match self.answer()? {
            Done::F32(v) => data.copy_from_slice(&v),
            _ => return Err(lost()),
        }
        Ok(())
    }
    fn all_gather(&mut self, value: u64) -> Result<Vec<u64>> {
        self.send(Job::AllGather(value))?;
        match self.answer()? {
            Done::U64(v) => Ok(v),
            _ => Err(lost()),
        }
    }
    fn sum_f64(&mut self, data: &mut [f64]) -> Result<()> {
        let mut values = std::mem::take(&mut self.spare_f64);
        values.clear();
        values.extend_from_slice(data);
        self.send(Job::SumF64(values))?;
        match self.answer()? {
            Done::F64(v) => {
                data.copy_from_slice(&v);
                self.spare_f64 = v;
            }
            _ => return Err(lost()),
        }
        Ok(())
    }
    fn start_sum(&mut self, data: Vec<f32>) -> Result<()> {
        self.stats.sums += 1;
        self.stats.values += data.len() as u64;
        self.send(Job::Sum(data))?;
        self.in_flight += 1;
        Ok(())
    }
    fn finish_sum(&mut self) -> Result<Vec<f32>> {
        if let Some(v) = self.finished.pop_front() {
            return Ok(v);
        }
        if self.in_flight == 0 {
            return Err(Error::Distributed(
                "finish_sum without a sum started".into(),
            ));
        }
        let start = Instant::now();
        let done = self.receive()?;
        self.stats.waited += start.elapsed();
        match done {
            Done::Sum(v, busy) => {
                self.in_flight -= 1;
                self.stats.busy += busy;
                Ok(v)
            }
            _ => Err(lost()),
        }
    }
}

/// Runs `main` as one rank of an MPI job: initialises MPI, hands `main` the communicator, and
/// ends the job cleanly when it returns `Ok`. An error is printed with the rank's number and
/// ends the whole job (every rank, non-zero exit) — as does a panic. A program's `main` is
/// `fn main() -> ExitCode { nn_mpi::run(|comm| { … }) }`.
pub fn run(main: impl FnOnce(&mut Mpi) -> Result<()>) -> ExitCode {
    let mut mpi = match Mpi::init() {
        Ok(m) => m,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match main(&mut mpi) {
        Ok(()) => {
            drop(mpi);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error on rank {} of {}: {e}", mpi.rank, mpi.size);
            if mpi.size > 1 {
                mpi.abort(1)
            }
            drop(mpi);
            ExitCode::FAILURE
        }
    }
}
