//! Data-parallel training: every process (a *rank*) holds the whole model, trains on its share
//! of each batch, and the ranks' gradients are summed before each optimizer step
//! ([`Sequential::fit_distributed`]).
//!
//! `nn` knows nothing of MPI: the ranks talk through a [`Collective`], which the `nn-mpi` crate
//! implements over MPI and [`LocalGroup`] over threads of one process (for tests, and to try a
//! program's data-parallel behaviour without a launcher).
//!
//! Determinism: every sum across ranks is taken in rank order — `((x₀ + x₁) + x₂) + …`, the
//! first term copied — whatever the rank count and message size, so every rank ends each step
//! with the same weights, bit for bit, and with the same bits as one process that runs the
//! ranks' shares as micro-batches in rank order and sums their gradients so
//! ([`FitConfig::micro_batches`](crate::model::FitConfig::micro_batches)).
//!
//! [`Sequential::fit_distributed`]: crate::model::Sequential::fit_distributed

mod buckets;
mod join;
mod local;

pub(crate) use buckets::Buckets;
pub(crate) use join::{agree, start_from_rank_zero, Fingerprint};
pub use local::{LocalComm, LocalGroup};

use crate::error::Result;

/// How the ranks of a data-parallel job talk to each other. Every method is collective: all
/// ranks call it, in the same order, with data of the same length; a rank that does not would
/// leave the others waiting (the MPI backend ends the whole job on an error or a panic).
pub trait Collective: Send {
    /// This process's rank, 0-based.
    fn rank(&self) -> usize;
    /// How many ranks take part.
    fn size(&self) -> usize;
    /// Replaces `data` on every rank with rank `root`'s.
    fn broadcast(&mut self, data: &mut [f32], root: usize) -> Result<()>;
    /// Every rank's `value`, in rank order.
    fn all_gather(&mut self, value: u64) -> Result<Vec<u64>>;
    /// Sums `data` element-wise across the ranks, in rank order (the same bits on every rank).
    fn sum_f64(&mut self, data: &mut [f64]) -> Result<()>;
    /// Starts summing `data` across the ranks, in rank order, in the background; the sum comes
    /// back from [`Collective::finish_sum`]. Several sums may be in flight: they finish in the
    /// order they were started.
    fn start_sum(&mut self, data: Vec<f32>) -> Result<()>;
    /// The oldest sum started and not yet finished, once every rank's part has arrived (the
    /// vector handed to `start_sum`, overwritten with the sum).
    fn finish_sum(&mut self) -> Result<Vec<f32>>;
}

/// The samples of a batch of `n` that part `part` of `parts` (≥ 1) takes: a contiguous slice,
/// the parts' sizes differing by at most one (a part may be empty when `n < parts`).
pub(crate) fn share(n: usize, part: usize, parts: usize) -> std::ops::Range<usize> {
    n * part / parts..n * (part + 1) / parts
}

/// Sums `parts` (each as long as `out`) element-wise into `out` in the order given, the first
/// copied: the one order every backend and the micro-batch reference use.
pub(crate) fn sum_in_order<'a>(out: &mut [f32], mut parts: impl Iterator<Item = &'a [f32]>) {
    if let Some(first) = parts.next() {
        out.copy_from_slice(first);
    }
    for p in parts {
        add_to(out, p);
    }
}

/// `acc += part`, element by element: one step of [`sum_in_order`].
pub(crate) fn add_to(acc: &mut [f32], part: &[f32]) {
    for (a, &p) in acc.iter_mut().zip(part) {
        *a += p;
    }
}
