//! [`LocalGroup`]: the ranks of a data-parallel job as threads of one process, talking through
//! shared memory. For tests, and for trying a program's data-parallel behaviour without a
//! launcher. Unlike the MPI backend it allocates a little per operation.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use super::{sum_in_order, Collective};
use crate::error::{Error, Result};

/// Makes the ranks of an in-process group: one [`LocalComm`] per rank, each to be moved to its
/// own thread (each with its own rayon pool: a rank waiting in a collective holds its thread).
pub struct LocalGroup;

impl LocalGroup {
    #[allow(clippy::new_ret_no_self)]
    pub fn new(size: usize) -> Vec<LocalComm> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                ops: HashMap::new(),
                departed: vec![false; size],
            }),
            changed: Condvar::new(),
        });
        (0..size)
            .map(|rank| LocalComm {
                rank,
                size,
                shared: shared.clone(),
                issued: 0,
                pending: VecDeque::new(),
            })
            .collect()
    }
}

/// One rank of a [`LocalGroup`].
pub struct LocalComm {
    rank: usize,
    size: usize,
    shared: Arc<Shared>,
    /// Operations this rank has started (each rank's n-th operation meets the others' n-th).
    issued: u64,
    /// Sums started and not yet finished, oldest first.
    pending: VecDeque<u64>,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

struct State {
    /// Operation number → every rank's part (None: not yet deposited) and how many read it.
    ops: HashMap<u64, Op>,
    /// Ranks whose handle was dropped (a thread that ended or panicked).
    departed: Vec<bool>,
}

struct Op {
    parts: Vec<Option<Part>>,
    read: usize,
}

impl Part {
    fn kind(&self) -> &'static str {
        match self {
            Part::F32(_) => "a sum or broadcast of f32",
            Part::F64(_) => "a sum of f64",
            Part::U64(_) => "an all-gather",
        }
    }
}

enum Part {
    F32(Vec<f32>),
    F64(Vec<f64>),
    U64(u64),
}

impl LocalComm {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A rank that panicked while holding the lock poisons it; the state itself stays
        // consistent (every update is a single assignment), and `departed` reports the rank.
        self.shared
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Deposits this rank's part of a new operation; returns the operation's number.
    fn deposit(&mut self, part: Part) -> u64 {
        let seq = self.issued;
        self.issued += 1;
        let size = self.size;
        let mut state = self.lock();
        let op = state.ops.entry(seq).or_insert_with(|| Op {
            parts: (0..size).map(|_| None).collect(),
            read: 0,
        });
        op.parts[self.rank] = Some(part);
        drop(state);
        self.shared.changed.notify_all();
        seq
    }

    /// Waits until every rank's part of operation `seq` is in, then reads them with `read`.
    fn complete<R>(&self, seq: u64, read: impl FnOnce(&[Option<Part>]) -> R) -> Result<R> {
        let mut state = self.lock();
        loop {
            let parts = &state.ops[&seq].parts;
            if parts.iter().all(Option::is_some) {
                break;
            }
            if let Some(r) = (0..self.size).find(|&r| parts[r].is_none() && state.departed[r]) {
                return Err(Error::Distributed(format!(
                    "rank {r} of the in-process group left before taking part in operation {seq}"
                )));
            }
            state = self
                .shared
                .changed
                .wait(state)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
        let op = state.ops.get_mut(&seq).expect("present");
        // Every rank must be in the same operation: a rank that called another is a bug of the
        // caller's, reported rather than read as data.
        let kinds: Vec<&str> = op.parts.iter().flatten().map(Part::kind).collect();
        if let Some(r) = kinds.iter().position(|k| *k != kinds[0]) {
            return Err(Error::Distributed(format!(
                "operation {seq}: rank {r} called {} where rank 0 called {}",
                kinds[r], kinds[0]
            )));
        }
        let out = read(&op.parts);
        op.read += 1;
        if op.read == self.size {
            state.ops.remove(&seq);
        }
        Ok(out)
    }
}

impl Drop for LocalComm {
    fn drop(&mut self) {
        self.lock().departed[self.rank] = true;
        self.shared.changed.notify_all();
    }
}

fn f32s(p: &Option<Part>) -> &[f32] {
    match p {
        Some(Part::F32(v)) => v,
        _ => &[],
    }
}

impl Collective for LocalComm {
    fn rank(&self) -> usize {
        self.rank
    }
    fn size(&self) -> usize {
        self.size
    }
    fn broadcast(&mut self, data: &mut [f32], root: usize) -> Result<()> {
        if root >= self.size {
            return Err(Error::Distributed(format!(
                "broadcast from rank {root} in a group of {}",
                self.size
            )));
        }
        let part = if self.rank == root {
            data.to_vec()
        } else {
            vec![]
        };
        let seq = self.deposit(Part::F32(part));
        let len = data.len();
        self.complete(seq, |parts| {
            let from = f32s(&parts[root]);
            if from.len() == len {
                data.copy_from_slice(from);
                Ok(())
            } else {
                Err(Error::Distributed(format!(
                    "broadcast of {len} values, but rank {root} sent {}",
                    from.len()
                )))
            }
        })?
    }
    fn all_gather(&mut self, value: u64) -> Result<Vec<u64>> {
        let seq = self.deposit(Part::U64(value));
        self.complete(seq, |parts| {
            parts
                .iter()
                .map(|p| match p {
                    Some(Part::U64(v)) => *v,
                    _ => 0,
                })
                .collect()
        })
    }
    fn sum_f64(&mut self, data: &mut [f64]) -> Result<()> {
        let seq = self.deposit(Part::F64(data.to_vec()));
        let len = data.len();
        self.complete(seq, |parts| {
            data.fill(0.0);
            for (r, p) in parts.iter().enumerate() {
                if let Some(Part::F64(v)) = p {
                    if v.len() != len {
                        return Err(Error::Distributed(format!(
                            "a sum of {len} values here but {} on rank {r}",
                            v.len()
                        )));
                    }
                    for (d, &x) in data.iter_mut().zip(v) {
                        *d += x;
                    }
                }
            }
            Ok(())
        })?
    }
    fn start_sum(&mut self, data: Vec<f32>) -> Result<()> {
        let seq = self.deposit(Part::F32(data));
        self.pending.push_back(seq);
        Ok(())
    }
    fn finish_sum(&mut self) -> Result<Vec<f32>> {
        let Some(seq) = self.pending.pop_front() else {
            return Err(Error::Distributed(
                "finish_sum without a sum started".into(),
            ));
        };
        self.complete(seq, |parts| {
            let len = f32s(&parts[0]).len();
            if let Some(r) = (0..parts.len()).find(|&r| f32s(&parts[r]).len() != len) {
                return Err(Error::Distributed(format!(
                    "a sum of {len} values on rank 0 but {} on rank {r}",
                    f32s(&parts[r]).len()
                )));
            }
            let mut out = vec![0.0; len];
            sum_in_order(&mut out, parts.iter().map(f32s));
            Ok(out)
        })?
    }
}
