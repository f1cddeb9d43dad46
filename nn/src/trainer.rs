//! The trainer: what `compile` prepares and `fit`, `evaluate`, `predict` and `train_on_batch`
//! run — the optimizer, the loss, the metrics, the execution plan, and every buffer a step
//! needs. The model (`Sequential`) holds the structure and the weights; it hands the trainer its
//! layers (a [`Net`]) for each call.
//!
//! A training step, as data flows: the batch is gathered (shuffled order) into the input buffer
//! → the plan's forward units write their layers' preallocated outputs → the loss writes its
//! value and gradient (fused with a final softmax/sigmoid: p − y) → the plan's backward units, last
//! layer first, fill the parameter gradients and the gradient buffer of the layer below (a large
//! Dense steps its optimizer inside its backward pass) → the optimizer updates the rest. Every
//! buffer is sized for the largest batch before the first step: no step allocates (tested with a
//! counting allocator).
//!
//! Training runs on the calling thread; the kernels' parallel loops hand their tasks to the
//! kernels' own helper threads, which stay awake from one pass to the next (called from a
//! rayon pool thread, as a distributed rank on its own pool, the kernels use that pool).
//! Results are identical for every thread count.

use std::path::Path;
use std::time::Instant;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

use crate::anatomy::{Part, Pass, Recorder, Slot};
use crate::callbacks::{Callback, TrainingModel};
use crate::distributed::{self, Buckets, Collective};
use crate::error::{Error, Result};
pub use crate::fit_config::{Evaluation, FitConfig, Metric};
use crate::layers::{self, Kind, Layer};
use crate::logs::{BatchLogs, EpochLogs, History};
use crate::loss::Loss;
use crate::optimizers::Optimizer;
use crate::plan::{NormBelow, Plan, Unit};
use crate::progress::ProgbarLogger;
use crate::tensor::Tensor;

/// A batch's inputs of at least this many bytes are gathered on every thread.
const GATHER_SPLIT_BYTES: usize = 64 << 10;

/// Whether a batch of `samples` inputs of `input_len` floats is gathered on every thread.
fn gathered_in_parallel(samples: usize, input_len: usize) -> bool {
    input_len > 0
        && samples >= 2
        && samples * input_len * std::mem::size_of::<f32>() >= GATHER_SPLIT_BYTES
}

/// Asks for the samples `idx` of `x` and `y` (the next batch's) to be fetched into L2 while the
/// current batch is computed, when a gather takes them on one thread. Program E (batch 32 of
/// 100 features, from a 24 MB data set) spent a fifth of its step gathering rows that missed
/// every cache; a larger batch's prefetches (program A's 1568 lines) made its gathering slower,
/// and its epoch no shorter.
fn prefetch_samples(net: &Net<'_>, (x, y): (&Tensor, &Tensor), idx: &[usize]) {
    if gathered_in_parallel(idx.len(), net.input_len()) {
        return;
    }
    for &i in idx {
        for sample in [x.sample(i), y.sample(i)].into_iter().flatten() {
            kernels::prefetch_to_l2(sample);
        }
    }
}

/// Samples per forward pass of the validation after each epoch when larger than the training
/// batch (`fit` sizes the layers' buffers for it; `evaluate` takes its batch from the caller,
/// `predict` passes of at most [`PREDICT_PASS`]). 128, not 256: the layers' buffers for the
/// larger batch set the process's peak memory (programs C and F, one Zen 5: 298 → 263 and
/// 314 → 266 MiB), and the validation pass took as long within the noise (F up to 10 % longer,
/// 0.3 % of its epoch); the outputs are the same bits, as no sample's arithmetic depends on
/// its batch.
const INFERENCE_BATCH: usize = 128;

/// Samples per forward pass of `predict`, at most. No sample's arithmetic depends on which others
/// share its pass (every kernel works per sample or per row, and the GEMM's sums run in an order
/// fixed by the shape of K alone), so a larger batch split into passes of this size gives the
/// same predictions; the passes' activations stay in cache between layers. Measured on the
/// reference CNN at batch 1000: 157 k images/s in passes of 256 against 145 k in one pass
/// (250–400 were alike; 125 and less were slower again). Half of it for networks whose
/// activations would not stay in cache (more than a quarter of the last-level cache for a pass
/// of this size).
pub const PREDICT_PASS: usize = 256;

/// Samples per forward pass of `predict` for `net`: [`PREDICT_PASS`], or half of it where the
/// layers' outputs for a pass of that size — every layer's output shape summed, counting those
/// that copy nothing (Flatten) or run inside a fused unit too: an upper bound of what a pass
/// writes — would fill more than a quarter of the last-level cache (the passes' activations
/// then left it between layers). Measured at batch 1000 on two
/// Zen 4 threads (32 MiB L3; medians of 9 interleaved runs, passes of 256 → 128): program G,
/// 106 KiB of outputs a sample, 32.9 → 31.2 ms; the reference CNN (130 KiB) 10.3 → 10.2;
/// program F's network 8.11 → 8.13 — and program A's (4 KiB a sample, a pass's outputs well
/// inside L3) 1.09 → 1.22 ms, its passes' fixed costs (hand-offs, the input's check) then
/// paid twice as often.
fn predict_pass(net: &Net<'_>) -> usize {
    let floats: usize = net
        .layers
        .iter()
        .map(|l| l.output_shape().iter().product::<usize>())
        .sum();
    let caches = kernels::cpu::cache_info();
    pass_for(floats, caches.l3.as_ref().unwrap_or(&caches.l2).size)
}

/// [`predict_pass`] for a network whose layers output `floats` a sample, on a CPU whose
/// last-level cache holds `last_level` bytes.
fn pass_for(floats: usize, last_level: usize) -> usize {
    let bytes = PREDICT_PASS
        .saturating_mul(floats)
        .saturating_mul(std::mem::size_of::<f32>());
    if bytes > last_level / 4 {
        PREDICT_PASS / 2
    } else {
        PREDICT_PASS
    }
}

/// The model as the trainer sees it for one call: its (built) layers, and what saving it needs.
pub(crate) struct Net<'a> {
    pub layers: &'a mut [Box<dyn Layer>],
    pub input_shape: &'a [usize],
    pub seed: u64,
}

impl Net<'_> {
    fn input_len(&self) -> usize {
        self.input_shape.iter().product()
    }
    fn output_len(&self) -> usize {
        self.layers
            .last()
            .map_or(0, |l| l.output_shape().iter().product())
    }
}

/// What `compile` chose.
struct Compiled {
    optimizer: Optimizer,
    loss: Loss,
    /// The loss is differentiated through the last layer's softmax/sigmoid.
    fused: bool,
    metrics: Vec<Metric>,
}

/// The trainer of one model (see the module's documentation).
pub(crate) struct Trainer {
    compiled: Option<Compiled>,
    /// The model was compiled, then changed: the error of `fit` says so.
    recompile: bool,
    plan: Plan,
    /// Samples every buffer holds.
    capacity: usize,
    /// The input batch and its targets, gathered from the data set.
    x_buf: Vec<f32>,
    y_buf: Vec<f32>,
    /// dL/d(output of layer i), one buffer per layer.
    grads: Vec<Vec<f32>>,
    /// The sample order of the current epoch.
    order: Vec<usize>,
    /// Set through a callback's handle to end training after the current epoch.
    stop_training: bool,
    /// `kernels::scratch_generation()` when the pool's scratch buffers were last prepared.
    prepared_generation: usize,
    /// Whether layers that can apply the optimizer's step inside their backward pass do
    /// (`Dense::backward_stepping`; on by default, the same bits either way).
    fused_steps: bool,
    /// The weights of the plan's folds (one per `plan.folds`), derived before each inference
    /// call when their sources changed.
    folded: Vec<layers::Folded>,
    /// Whether inference runs the plan's folds (on by default; off runs every layer).
    fold_batch_norm: bool,
    /// Whether a BatchNormalization runs the Activation layer after it (on by default; decided
    /// at compile).
    norm_runs_activation: bool,
    /// Where the time goes, while a `fit` that asked for its anatomy runs.
    anatomy: Option<Recorder>,
    /// While a `fit` shares its steps (micro-batches or ranks): the gradient buckets, a
    /// buffer per bucket (packed, or summed across shares), the micro-batches' running sums,
    /// and the non-trainable values at the step's start.
    buckets: Option<Buckets>,
    packed: Vec<Vec<f32>>,
    summed: Vec<Vec<f32>>,
    step_start: Vec<f32>,
    started_order: Vec<usize>,
}

/// How `fit` makes each step's gradient.
pub(crate) enum Sharing<'c> {
    /// One forward and backward pass over the batch.
    Alone,
    /// The batch as this many micro-batches (slices as ranks would take them), run one after
    /// the other, their gradients summed in order: the data-parallel reference.
    MicroBatches(usize),
    /// This rank's slice of the batch; the gradients summed across the ranks.
    Ranks(&'c mut dyn Collective),
}

impl Sharing<'_> {
    fn shared(&self) -> bool {
        !matches!(self, Sharing::Alone)
    }
    fn rank(&self) -> usize {
        match self {
            Sharing::Ranks(c) => c.rank(),
            _ => 0,
        }
    }
    /// How many slices a batch is cut into.
    fn parts(&self) -> usize {
        match self {
            Sharing::Alone => 1,
            Sharing::MicroBatches(k) => *k,
            Sharing::Ranks(c) => c.size(),
        }
    }
}

/// The handle callbacks get during `fit` ([`TrainingModel`]).
struct Handle<'a, 'n> {
    net: &'a mut Net<'n>,
    optimizer: &'a mut Optimizer,
    stop: &'a mut bool,
}

impl TrainingModel for Handle<'_, '_> {
    fn get_weights(&mut self) -> Vec<(String, Tensor)> {
        layers::get_weights(self.net.layers)
    }
    fn set_weights(&mut self, weights: &[(String, Tensor)]) -> Result<()> {
        layers::set_weights(self.net.layers, weights)
    }
    fn save(&mut self, path: &Path) -> Result<()> {
        crate::io::write_model(path, self.net.input_shape, self.net.seed, self.net.layers)
    }
    fn learning_rate(&self) -> f32 {
        self.optimizer.learning_rate()
    }
    fn set_learning_rate(&mut self, lr: f32) {
        self.optimizer.set_learning_rate(lr);
    }
    fn stop_training(&mut self) {
        *self.stop = true;
    }
}

impl Default for Trainer {
    fn default() -> Self {
        Trainer {
            compiled: None,
            recompile: false,
            plan: Plan::default(),
            capacity: 0,
            x_buf: vec![],
            y_buf: vec![],
            grads: vec![],
            order: vec![],
            stop_training: false,
            prepared_generation: usize::MAX,
            fused_steps: true,
            folded: vec![],
            fold_batch_norm: true,
            norm_runs_activation: true,
            anatomy: None,
            buckets: None,
            packed: vec![],
            summed: vec![],
            step_start: vec![],
            started_order: vec![],
        }
    }
}

impl Trainer {
    /// The model's structure changed: it must be built and compiled again.
    pub fn changed(&mut self) {
        self.capacity = 0;
        self.set_plan(Plan::default());
        if self.compiled.take().is_some() {
            self.recompile = true;
        }
    }

    /// The model was (re)built: a new plan, buffers sized anew.
    pub fn built(&mut self, net: &mut Net<'_>) {
        self.capacity = 0;
        self.set_plan(Plan::new(net.layers));
    }

    /// Keras's `compile`: decides which BatchNormalizations run the Activation after them, which
    /// layers receive dL/d(pre-activation) (the last when the loss differentiates through its
    /// softmax/sigmoid, and any whose activation the next layer's backward pass takes over:
    /// MaxPooling2D after Conv2D, or after a BatchNormalization that runs a ReLU), plans the
    /// passes, and starts a fresh optimizer.
    pub fn compile(
        &mut self,
        net: &mut Net<'_>,
        optimizer: Optimizer,
        loss: Loss,
        metrics: &[Metric],
    ) -> Result<()> {
        let mut optimizer = optimizer;
        optimizer.validate()?;
        let layers = &mut *net.layers;
        let last = layers.last().expect("built").output_activation();
        let fused = loss.fuses_with(last);
        let count = layers.len();
        // A BatchNormalization runs the elementwise Activation right after it (not the model's
        // last layer, whose output is the model's): that layer is then skipped.
        for i in 0..count {
            let next = match layers.get_mut(i + 1).map(|l| l.kind()) {
                Some(Kind::Activation(a)) if i + 2 < count && self.norm_runs_activation => {
                    Some(a.act())
                }
                _ => None,
            };
            if let Kind::BatchNormalization(bn) = layers[i].kind() {
                bn.absorb_activation(next);
            }
        }
        let skip = crate::plan::skipped(layers);
        for i in 0..count {
            // The layer that reads this one's output (past skipped ones).
            let reader = (i + 1..count).find(|&j| !skip[j]);
            let absorbed = !skip[i]
                && reader.is_some_and(|j| {
                    let act = layers[i].output_activation();
                    match layers[j].kind() {
                        Kind::MaxPooling2D(pool) => pool.absorb_input_activation(act),
                        _ => false,
                    }
                });
            layers[i].set_grad_is_preactivation(absorbed || (fused && i + 1 == count));
        }
        self.set_plan(Plan::new(layers));
        optimizer.reset();
        self.recompile = false;
        self.compiled = Some(Compiled {
            optimizer,
            loss,
            fused,
            metrics: metrics.to_vec(),
        });
        Ok(())
    }

    /// Follows `plan` from now on (its folds' weights derived afresh).
    fn set_plan(&mut self, plan: Plan) {
        self.folded = plan.folds.iter().map(|_| Default::default()).collect();
        self.plan = plan;
    }

    #[cfg(test)]
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    pub fn optimizer_mut(&mut self) -> Option<&mut Optimizer> {
        self.compiled.as_mut().map(|c| &mut c.optimizer)
    }

    pub fn loss(&self) -> Option<Loss> {
        self.compiled.as_ref().map(|c| c.loss)
    }

    #[cfg(feature = "bench-hooks")]
    pub fn set_fused_steps(&mut self, on: bool) {
        self.fused_steps = on;
    }

    #[cfg(feature = "bench-hooks")]
    pub fn set_batch_norm_folding(&mut self, on: bool) {
        self.fold_batch_norm = on;
    }

    #[cfg(feature = "bench-hooks")]
    pub fn set_norm_runs_activation(&mut self, on: bool) {
        self.norm_runs_activation = on;
    }

    /// Derives the folds' weights from the layers' current ones where those changed: called
    /// before each inference call's passes.
    fn refresh_folds(&mut self, net: &mut Net<'_>) -> Result<()> {
        if self.fold_batch_norm {
            for (fold, folded) in self.plan.folds.iter().zip(&mut self.folded) {
                layers::refresh_fold(net.layers, fold, folded)?;
            }
        }
        Ok(())
    }

    /// The compiled state `what` (fit, evaluate, train_on_batch) needs, or the error that says
    /// why there is none.
    fn compiled_for(&self, what: &str) -> Result<&Compiled> {
        self.compiled
            .as_ref()
            .ok_or_else(|| self.not_compiled(what))
    }

    /// The error of `what` (fit, evaluate, train_on_batch) on a model not compiled, or changed
    /// since it was.
    pub fn not_compiled(&self, what: &str) -> Error {
        let operation = what.to_string();
        if self.recompile {
            Error::ChangedAfterCompile { operation }
        } else {
            Error::NotCompiled { operation }
        }
    }

    fn has_accuracy(&self) -> bool {
        self.compiled
            .as_ref()
            .is_some_and(|c| c.metrics.contains(&Metric::Accuracy))
    }

    /// Sizes every buffer for `batch` samples (grows only); a size that overflows or memory the
    /// system refuses is an error (the buffers grown so far stay, unused).
    fn ensure_capacity(&mut self, net: &mut Net<'_>, batch: usize) -> Result<()> {
        use crate::layers::grow;
        if batch <= self.capacity {
            return Ok(());
        }
        for layer in net.layers.iter_mut() {
            layer.allocate(batch)?;
        }
        let output_len = net.output_len();
        let target = self
            .compiled
            .as_ref()
            .map_or(output_len, |c| c.loss.target_len(output_len));
        grow(&mut self.x_buf, batch, net.input_len(), 0.0, "input")?;
        grow(&mut self.y_buf, batch, target, 0.0, "target")?;
        self.grads.resize_with(net.layers.len(), Vec::new);
        for (g, l) in self.grads.iter_mut().zip(net.layers.iter()) {
            let per = l.output_shape().iter().product::<usize>();
            grow(g, batch, per, 0.0, l.name())?;
        }
        self.capacity = batch;
        Ok(())
    }

    fn check_input(net: &Net<'_>, x: &Tensor, what: &str) -> Result<()> {
        Self::check_shape(net, x, what)?;
        Self::check_finite(x.data(), 0, what)
    }

    /// `x`'s samples have the model's input shape.
    fn check_shape(net: &Net<'_>, x: &Tensor, what: &str) -> Result<()> {
        let want = net.input_shape;
        if x.shape().len() != want.len() + 1 || &x.shape()[1..] != want {
            return Err(Error::DataShape {
                what: what.to_string(),
                shape: x.shape().to_vec(),
                expected: format!(
                    "the model takes samples of shape {want:?} (expected [n, {}])",
                    want.iter()
                        .map(|d| d.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
        Ok(())
    }

    /// Every value of `values` (the input's values from index `offset` on) is finite.
    fn check_finite(values: &[f32], offset: usize, what: &str) -> Result<()> {
        match crate::tensor::first_non_finite(values) {
            Some(i) => Err(Error::NonFinite {
                what: what.to_string(),
                index: offset + i,
                value: values[i],
            }),
            None => Ok(()),
        }
    }

    /// Forward pass over the first `n` samples of `x_buf`, as the plan says.
    fn forward(&mut self, net: &mut Net<'_>, n: usize, training: bool) -> Result<()> {
        self.forward_from(net, None, n, training)
    }

    /// Forward pass over `n` samples of `x` — `x_buf` where `None` — as the plan says.
    fn forward_from(
        &mut self,
        net: &mut Net<'_>,
        x: Option<&[f32]>,
        n: usize,
        training: bool,
    ) -> Result<()> {
        let layers = &mut *net.layers;
        let x_buf = x.unwrap_or(&self.x_buf);
        // Inference runs the folds, whose weights `refresh_folds` derived before the call.
        let units = if training || !self.fold_batch_norm {
            &self.plan.forward
        } else {
            &self.plan.inference
        };
        // The layer whose output is the data so far (None: the input buffer).
        let mut source: Option<usize> = None;
        let mut anatomy = self.anatomy.as_mut().filter(|_| training);
        for (u, &unit) in units.iter().enumerate() {
            let i = *unit.layers().start();
            let (before, rest) = layers.split_at_mut(i);
            let input: &[f32] = match source {
                Some(j) => before[j].output(),
                None => x_buf,
            };
            match unit {
                Unit::Layer(_) => rest[0].forward(input, n, training)?,
                Unit::Folded { fold, .. } => {
                    layers::forward_folded(rest[0].as_mut(), &self.folded[fold], input, n)
                        .unwrap_or_else(|| Err(planned(unit.layers(), "folded layer")))?
                }
                Unit::ConvPool { pool, fold, .. } => {
                    let (conv, pool) = rest.split_at_mut(pool - i);
                    layers::forward_conv_pool(
                        conv[0].as_mut(),
                        pool[0].as_mut(),
                        input,
                        n,
                        training,
                        fold.map(|f| &self.folded[f]),
                    )
                    .unwrap_or_else(|| Err(planned(unit.layers(), "Conv2D + pooling forward")))?
                }
                Unit::NormPool { pool, .. } => {
                    let (norm, pool) = rest.split_at_mut(pool - i);
                    layers::forward_norm_pool(
                        norm[0].as_mut(),
                        pool[0].as_mut(),
                        input,
                        n,
                        training,
                    )
                    .unwrap_or_else(|| {
                        Err(planned(
                            unit.layers(),
                            "BatchNormalization + MaxPooling2D forward",
                        ))
                    })?
                }
            }
            source = Some(*unit.layers().end());
            if let Some(a) = anatomy.as_deref_mut() {
                a.mark(slots::FORWARD + u, n);
            }
        }
        Ok(())
    }

    /// The forward pass and the loss over the first `n` samples of the input and target
    /// buffers, which are part of a batch of `batch` (the loss's gradient is that of the whole
    /// batch's mean); returns (summed loss, correct predictions, prediction count).
    fn forward_loss(
        &mut self,
        net: &mut Net<'_>,
        n: usize,
        batch: usize,
    ) -> Result<(f64, usize, usize)> {
        self.forward(net, n, true)?;
        let k = net.output_len();
        let last = net.layers.len() - 1;
        let c = self.compiled.as_mut().expect("compiled");
        let out = &net.layers[last].output()[..n * k];
        let y = &self.y_buf;
        let loss = c
            .loss
            .compute_part(out, y, &mut self.grads[last], (n, batch), k, c.fused);
        let (hits, of) = c.loss.correct(out, y, n, k);
        if let Some(a) = self.anatomy.as_mut() {
            a.mark(slots::Layout::of(&self.plan).loss, n);
        }
        Ok((loss, hits, of))
    }

    /// The backward pass over the first `n` samples, last layer first, calling `after_unit`
    /// with each backward unit's index once it is done. With `fused_steps`, a large Dense
    /// layer takes its optimizer step inside its pass (`Optimizer::begin_step` was called).
    fn backward(
        &mut self,
        net: &mut Net<'_>,
        n: usize,
        fused_steps: bool,
        mut after_unit: impl FnMut(usize, &mut [Box<dyn Layer>]) -> Result<()>,
    ) -> Result<()> {
        let layers = &mut *net.layers;
        let Trainer {
            x_buf,
            grads,
            compiled,
            plan,
            anatomy,
            ..
        } = self;
        let slot = slots::Layout::of(plan);
        let c = compiled.as_mut().expect("compiled");
        for (b, back) in plan.backward.iter().enumerate() {
            let i = back.layer;
            let (below, here) = grads.split_at_mut(i);
            let (lower, upper) = layers.split_at_mut(i);
            if back.with_conv_below {
                // The convolution's gradients straight from the pooling's, in one pass.
                layers::backward_conv_pool(
                    lower[i - 1].as_mut(),
                    upper[0].as_mut(),
                    x_buf,
                    &here[0],
                    n,
                )
                .unwrap_or_else(|| Err(planned(i - 1..=i, "pooling + Conv2D backward")))?;
            } else if let (
                Some(NormBelow {
                    source: Some(k),
                    with_conv: true,
                }),
                Some(j),
            ) = (back.norm_below, back.source)
            {
                // The pooling's, the normalisation's and the first convolution's backward
                // passes in one: the convolution's gradients straight from the pooling's.
                let (under, norm) = lower.split_at_mut(j);
                layers::backward_conv_norm_pool(
                    under[k].as_mut(),
                    norm[0].as_mut(),
                    upper[0].as_mut(),
                    x_buf,
                    &here[0],
                    n,
                )
                .unwrap_or_else(|| {
                    Err(planned(
                        k..=i,
                        "MaxPooling2D + BatchNormalization + Conv2D backward",
                    ))
                })?;
            } else if let (Some(nb), Some(j)) = (back.norm_below, back.source) {
                // The pooling's and the normalisation's backward passes in one, into the
                // gradient of the normalisation's input.
                let (under, norm) = lower.split_at_mut(j);
                let input: &[f32] = match nb.source {
                    Some(k) => under[k].output(),
                    None => x_buf,
                };
                let dx = nb.source.map(|k| &mut below[k][..]);
                layers::backward_norm_pool(
                    norm[0].as_mut(),
                    upper[0].as_mut(),
                    input,
                    &here[0],
                    dx,
                    n,
                )
                .unwrap_or_else(|| {
                    Err(planned(j..=i, "MaxPooling2D + BatchNormalization backward"))
                })?;
            } else {
                let input: &[f32] = match back.source {
                    Some(j) => lower[j].output(),
                    None => x_buf,
                };
                // The model's input gradient is never needed.
                let mut done = false;
                if fused_steps {
                    if let Kind::Dense(dense) = upper[0].kind() {
                        let dx = back.source.map(|j| &mut below[j][..]);
                        let mut steps = c.optimizer.steps_for(back.first_param);
                        if let Some(r) =
                            dense.backward_stepping(input, &mut here[0], dx, n, &mut steps)
                        {
                            r?;
                            done = true;
                        }
                    }
                } else if let (Kind::Dense(dense), Some(j)) = (upper[0].kind(), back.source) {
                    // The weights' gradients first, then whoever waits for them (a data-
                    // parallel bucket starts its sum), then the input's gradient: the sum
                    // overlaps that product.
                    dense.backward_weights(input, &mut here[0], n)?;
                    after_unit(b, layers)?;
                    if let Kind::Dense(dense) = layers[i].kind() {
                        dense.backward_input(&here[0], &mut below[j], n)?;
                    }
                    if let Some(a) = anatomy.as_mut() {
                        a.mark(slot.backward + b, n);
                    }
                    continue;
                }
                if !done {
                    let dx = back.source.map(|j| &mut below[j][..]);
                    upper[0].backward(input, &mut here[0], dx, n)?;
                }
            }
            if let Some(a) = anatomy.as_mut() {
                a.mark(slot.backward + b, n);
            }
            after_unit(b, layers)?;
        }
        Ok(())
    }

    /// Ends a step: the optimizer updates what the backward pass did not.
    fn apply_step(&mut self, net: &mut Net<'_>, n: usize) -> Result<()> {
        let c = self.compiled.as_mut().expect("compiled");
        c.optimizer.finish_step(net.layers)?;
        // A kernel's per-thread scratch grew past every earlier size: grow every worker's to
        // match, so that later steps allocate nothing whichever worker runs which task.
        let generation = kernels::scratch_generation();
        if generation != self.prepared_generation {
            kernels::prepare_threads();
            self.prepared_generation = generation;
        }
        if let Some(a) = self.anatomy.as_mut() {
            a.mark(slots::Layout::of(&self.plan).optimizer, n);
            a.steps += 1;
            a.samples += n as u64;
        }
        Ok(())
    }

    /// One optimisation step on the first `n` samples of the input and target buffers; returns
    /// (summed loss, correct predictions, prediction count).
    fn step(
        &mut self,
        net: &mut Net<'_>,
        n: usize,
        epoch: usize,
        step: usize,
    ) -> Result<(f64, usize, usize)> {
        let (loss, hits, of) = self.forward_loss(net, n, n)?;
        if !loss.is_finite() {
            return Err(Error::NonFiniteLoss {
                epoch: epoch + 1,
                step: step + 1,
                loss: loss as f32,
            });
        }
        let c = self.compiled.as_mut().expect("compiled");
        c.optimizer.begin_step(net.layers)?;
        if let Some(a) = self.anatomy.as_mut() {
            a.mark(slots::Layout::of(&self.plan).optimizer, n);
        }
        let fused = self.fused_steps;
        self.backward(net, n, fused, |_, _| Ok(()))?;
        self.apply_step(net, n)?;
        Ok((loss, hits, of))
    }

    /// One step over the batch `idx` of `x`, `y` whose gradient is summed over shares: the
    /// micro-batches in order, or the ranks (each gathers and runs its own slice). Every share
    /// packs its gradients into the same buckets; ranks start each bucket's sum as soon as the
    /// backward pass has filled it. Returns the batch's (summed loss, hits, predictions), the
    /// same on every rank.
    fn shared_step(
        &mut self,
        net: &mut Net<'_>,
        (x, y): (&Tensor, &Tensor),
        idx: &[usize],
        sharing: &mut Sharing<'_>,
        (epoch, step): (usize, usize),
    ) -> Result<(f64, usize, usize)> {
        let n = idx.len();
        let buckets = self.buckets.take().expect("prepared by fit");
        let result = self.shared_step_with(net, x, y, idx, sharing, &buckets);
        self.buckets = Some(buckets);
        let (loss, hits, count) = result?;
        if !loss.is_finite() {
            // Every rank sees the same sum: all stop here, none steps.
            return Err(Error::NonFiniteLoss {
                epoch: epoch + 1,
                step: step + 1,
                loss: loss as f32,
            });
        }
        // The optimizer's step begins only now (no fused step runs in a shared backward pass):
        // a step not taken does not count.
        self.compiled
            .as_mut()
            .expect("compiled")
            .optimizer
            .begin_step(net.layers)?;
        self.apply_step(net, n)?;
        Ok((loss, hits, count))
    }

    fn shared_step_with(
        &mut self,
        net: &mut Net<'_>,
        x: &Tensor,
        y: &Tensor,
        idx: &[usize],
        sharing: &mut Sharing<'_>,
        buckets: &Buckets,
    ) -> Result<(f64, usize, usize)> {
        let n = idx.len();
        let count = buckets.count();
        self.packed.resize_with(count, Vec::new);
        self.summed.resize_with(count, Vec::new);
        // The loss sum, hits and count of the whole batch: summed in f64 over the shares in
        // order (on ranks, across the ranks once the gradients' sums are in).
        let mut total = [0.0f64; 3];
        match sharing {
            Sharing::Alone => unreachable!("a shared step shares"),
            Sharing::MicroBatches(parts) => {
                let parts = *parts;
                if buckets.has_non_trainable() {
                    buckets.save_non_trainable(net.layers, &mut self.step_start);
                }
                for part in 0..parts {
                    let slice = distributed::share(n, part, parts);
                    if part > 0 && buckets.has_non_trainable() {
                        buckets.restore_non_trainable(net.layers, &self.step_start);
                    }
                    let (loss, hits, of) = self.run_share(net, x, y, &idx[slice.clone()], n)?;
                    for (t, v) in total.iter_mut().zip([loss, hits as f64, of as f64]) {
                        *t += v;
                    }
                    for b in 0..count {
                        let mut packed = std::mem::take(&mut self.packed[b]);
                        buckets.pack(b, net.layers, slice.is_empty(), &mut packed);
                        // The running sum in part order, as the ranks' sum is taken.
                        let sum = &mut self.summed[b];
                        if part == 0 {
                            sum.clear();
                            sum.extend_from_slice(&packed);
                        } else {
                            distributed::add_to(sum, &packed);
                        }
                        self.packed[b] = packed;
                    }
                }
                for b in 0..count {
                    buckets.unpack(b, net.layers, &self.summed[b], parts);
                }
            }
            Sharing::Ranks(comm) => {
                let slice = distributed::share(n, comm.rank(), comm.size());
                let empty = slice.is_empty();
                // The layers that draw random numbers (Dropout) draw for the whole batch, each
                // rank using its slice's: the same masks as one process.
                for l in net.layers.iter_mut() {
                    l.skip_samples(slice.start);
                }
                let (loss, hits, of) = self.forward_share(net, x, y, &idx[slice.clone()], n)?;
                total = [loss, hits as f64, of as f64];
                for l in net.layers.iter_mut() {
                    l.skip_samples(n - slice.end);
                }
                // The buckets' buffers travel to the collective and come back summed (a
                // whole bucket's: the gradient's own storage, a spare left in its place).
                let mut packed = std::mem::take(&mut self.packed);
                // The order the sums started in, which is the order they finish in.
                let mut started_order = std::mem::take(&mut self.started_order);
                started_order.clear();
                let units = self.plan.backward.len();
                let mut start = |b: usize, layers: &mut [Box<dyn Layer>]| -> Result<()> {
                    started_order.push(b);
                    let mut buf = std::mem::take(&mut packed[b]);
                    if buckets.is_whole(b) {
                        buf = buckets.lend(b, layers, empty, buf);
                    } else {
                        buckets.pack(b, layers, empty, &mut buf);
                    }
                    comm.start_sum(buf)
                };
                let started = if empty {
                    (0..units).try_for_each(|u| {
                        buckets
                            .closing_after(u)
                            .iter()
                            .try_for_each(|&b| start(b, net.layers))
                    })
                } else {
                    self.backward(net, slice.len(), false, |u, layers| {
                        buckets
                            .closing_after(u)
                            .iter()
                            .try_for_each(|&b| start(b, layers))
                    })
                };
                let started = started.and_then(|()| {
                    buckets
                        .closing_without_units(units)
                        .iter()
                        .try_for_each(|&b| start(b, net.layers))
                });
                let finished = started.and_then(|()| {
                    for &b in &started_order {
                        let sum = comm.finish_sum()?;
                        if sum.len() != buckets.len(b) {
                            return Err(Error::Distributed(format!(
                                "the collective returned a sum of {} values for a bucket of {}",
                                sum.len(),
                                buckets.len(b)
                            )));
                        }
                        packed[b] = if buckets.is_whole(b) {
                            buckets.take_back(b, net.layers, sum)
                        } else {
                            buckets.unpack(b, net.layers, &sum, comm.size());
                            sum
                        };
                    }
                    Ok(())
                });
                self.packed = packed;
                self.started_order = started_order;
                finished?;
                // The ranks meet here, just after the last sum: the metrics' sum waits little.
                comm.sum_f64(&mut total)?;
            }
        }
        if let Some(a) = self.anatomy.as_mut() {
            a.mark(slots::Layout::of(&self.plan).exchange, n);
        }
        Ok((total[0], total[1] as usize, total[2] as usize))
    }

    /// Gathers the share `idx` of a batch of `batch` samples and runs its forward pass and the
    /// loss (nothing for an empty share); returns its loss sum, hits and count.
    fn forward_share(
        &mut self,
        net: &mut Net<'_>,
        x: &Tensor,
        y: &Tensor,
        idx: &[usize],
        batch: usize,
    ) -> Result<(f64, usize, usize)> {
        if idx.is_empty() {
            return Ok((0.0, 0, 0));
        }
        self.gather(net, x, y, idx);
        if let Some(a) = self.anatomy.as_mut() {
            a.mark(slots::GATHER, idx.len());
        }
        self.forward_loss(net, idx.len(), batch)
    }

    /// [`Trainer::forward_share`], then the share's backward pass.
    fn run_share(
        &mut self,
        net: &mut Net<'_>,
        x: &Tensor,
        y: &Tensor,
        idx: &[usize],
        batch: usize,
    ) -> Result<(f64, usize, usize)> {
        let sums = self.forward_share(net, x, y, idx, batch)?;
        if !idx.is_empty() {
            self.backward(net, idx.len(), false, |_, _| Ok(()))?;
        }
        Ok(sums)
    }

    /// Keras's `train_on_batch` (see `Sequential::train_on_batch`).
    pub fn train_on_batch(
        &mut self,
        net: &mut Net<'_>,
        x: &[f32],
        y: &[f32],
        n: usize,
    ) -> Result<(f32, f32)> {
        let c = self.compiled_for("train_on_batch")?;
        let loss = c.loss;
        let (il, tl) = (net.input_len(), loss.target_len(net.output_len()));
        if x.len() != n * il || y.len() != n * tl || n == 0 {
            return Err(Error::BatchLength {
                samples: n,
                inputs_needed: n * il,
                targets_needed: n * tl,
                inputs: x.len(),
                targets: y.len(),
            });
        }
        if let Some(i) = crate::tensor::first_non_finite(x) {
            return Err(Error::NonFinite {
                what: "train_on_batch's input".into(),
                index: i,
                value: x[i],
            });
        }
        loss.check_target_values(y, net.output_len())?;
        self.ensure_capacity(net, n)?;
        self.x_buf[..x.len()].copy_from_slice(x);
        self.y_buf[..y.len()].copy_from_slice(y);
        let (loss, hits, of) = self.step(net, n, 0, 0)?;
        Ok(((loss / n as f64) as f32, hits as f32 / of.max(1) as f32))
    }

    /// Copies samples `idx` of `x` and `y` into the batch buffers. The inputs of a large batch
    /// are copied on every thread (`kernels::gather_rows`): the shuffled samples lie anywhere in
    /// the data set, so the copy waits on memory more than it moves it.
    fn gather(&mut self, net: &Net<'_>, x: &Tensor, y: &Tensor, idx: &[usize]) {
        let il = net.input_len();
        let threading = if gathered_in_parallel(idx.len(), il) {
            kernels::Threading::Rayon
        } else {
            kernels::Threading::Single
        };
        let opts = kernels::ExecOptions {
            threading,
            ..kernels::ExecOptions::default()
        };
        kernels::gather_rows(&opts, x.data(), il, idx, &mut self.x_buf[..idx.len() * il])
            .expect("the indices are the data set's own samples, the buffer sized for the batch");
        let tl = y.sample_len();
        for (r, &i) in idx.iter().enumerate() {
            self.y_buf[r * tl..(r + 1) * tl].copy_from_slice(y.sample(i).expect("i < samples"));
        }
    }

    /// Keras's `fit` (see `Sequential::fit` and `Sequential::fit_distributed`).
    pub fn fit(
        &mut self,
        net: &mut Net<'_>,
        x: &Tensor,
        y: &Tensor,
        cfg: &FitConfig<'_>,
        callbacks: &mut [&mut dyn Callback],
        mut sharing: Sharing<'_>,
    ) -> Result<History> {
        let loss = self.compiled_for("fit")?.loss;
        Self::check_input(net, x, "the training input")?;
        loss.check_targets(y, x.samples(), net.output_len())?;
        let fit_setting = |name, value: String, allowed: &str| Error::Setting {
            owner: "fit",
            name,
            value,
            allowed: allowed.into(),
        };
        if cfg.batch_size == 0 {
            return Err(fit_setting("batch_size", "0".into(), "at least 1"));
        }
        if cfg.epochs == 0 {
            return Err(fit_setting("epochs", "0".into(), "at least 1"));
        }
        if cfg.verbose > 2 {
            return Err(fit_setting(
                "verbose",
                cfg.verbose.to_string(),
                "0 (silent), 1 (a progress bar) or 2 (a line per epoch)",
            ));
        }
        if !(0.0..1.0).contains(&cfg.validation_split) {
            return Err(fit_setting(
                "validation_split",
                cfg.validation_split.to_string(),
                "in [0, 1)",
            ));
        }
        if cfg.micro_batches == 0 {
            return Err(fit_setting("micro_batches", "0".into(), "at least 1"));
        }
        if cfg.micro_batches > 1 && matches!(sharing, Sharing::Ranks(_)) {
            return Err(fit_setting(
                "micro_batches",
                cfg.micro_batches.to_string(),
                "1 in fit_distributed (the ranks are the micro-batches)",
            ));
        }
        // Keras holds out the *last* samples, before shuffling.
        let total = x.samples();
        let held_out = if cfg.validation_data.is_none() {
            (total as f64 * cfg.validation_split as f64) as usize
        } else {
            0
        };
        let train_n = total - held_out;
        if train_n == 0 {
            return Err(Error::NoSamples {
                operation: "fit",
                what: "training samples",
            });
        }
        let split_val;
        let validation = match cfg.validation_data {
            Some((vx, vy)) => {
                Self::check_input(net, vx, "the validation input")?;
                loss.check_targets(vy, vx.samples(), net.output_len())?;
                Some((vx, vy))
            }
            None if held_out > 0 => {
                split_val = (
                    x.slice_samples(train_n..total)?,
                    y.slice_samples(train_n..total)?,
                );
                Some((&split_val.0, &split_val.1))
            }
            None => None,
        };
        let batch = cfg.batch_size.min(train_n);
        // A shared step holds one slice of the batch at a time: buffers for a slice (and for
        // the inference passes) suffice — micro-batches train a large batch in a fraction of
        // the activations' memory, ranks hold only their own share.
        let slice_capacity = batch.div_ceil(sharing.parts());
        self.ensure_capacity(net, slice_capacity.max(INFERENCE_BATCH.min(total)))?;
        if let Sharing::Ranks(comm) = &mut sharing {
            self.join_ranks(net, &mut **comm, x, y, cfg, validation)?;
        }
        self.buckets = sharing
            .shared()
            .then(|| Buckets::new(net.layers, &self.plan));
        let rank = sharing.rank();
        self.order = (0..train_n).collect();
        self.stop_training = false;
        let mut shuffle_rng = StdRng::seed_from_u64(net.seed ^ 0x5eed_5eed);
        let steps = train_n.div_ceil(batch);
        // Keras adds its ProgbarLogger to the callbacks when verbose; it prints first here.
        let with_accuracy = self.has_accuracy();
        let accuracy =
            |hits: usize, count: usize| with_accuracy.then(|| hits as f32 / count.max(1) as f32);
        let mut progbar = ProgbarLogger::new(cfg.verbose, cfg.epochs, steps);
        let mut all: Vec<&mut dyn Callback> = Vec::with_capacity(callbacks.len() + 1);
        // Of the ranks, only rank 0 prints and writes files.
        if cfg.verbose > 0 && rank == 0 {
            all.push(&mut progbar);
        }
        for c in callbacks.iter_mut() {
            if rank == 0 || !c.rank_zero_only() {
                all.push(&mut **c);
            }
        }
        self.anatomy = cfg
            .anatomy
            .then(|| Recorder::new(slots::layout(net.layers, &self.plan, sharing.shared())));
        // The loop's errors end it here, where the anatomy and the buckets are put away.
        let mut train = || {
            let mut history = History::default();
            self.each(net, &mut all, |cb, m| cb.on_train_begin(m))?;
            for epoch in 0..cfg.epochs {
                let start = Instant::now();
                self.each(net, &mut all, |cb, m| cb.on_epoch_begin(epoch, m))?;
                if cfg.shuffle {
                    self.order.shuffle(&mut shuffle_rng);
                }
                let (mut loss_sum, mut hits, mut count, mut seen) =
                    (0.0f64, 0usize, 0usize, 0usize);
                for step in 0..steps {
                    self.each(net, &mut all, |cb, m| cb.on_train_batch_begin(step, m))?;
                    let from = step * batch;
                    let n = batch.min(train_n - from);
                    let idx = std::mem::take(&mut self.order);
                    if let Some(a) = self.anatomy.as_mut() {
                        a.start();
                    }
                    let done = if sharing.shared() {
                        let batch_idx = &idx[from..from + n];
                        self.shared_step(net, (x, y), batch_idx, &mut sharing, (epoch, step))
                    } else {
                        self.gather(net, x, y, &idx[from..from + n]);
                        let next = &idx[from + n..(from + n + batch).min(train_n)];
                        prefetch_samples(net, (x, y), next);
                        if let Some(a) = self.anatomy.as_mut() {
                            a.mark(slots::GATHER, n);
                        }
                        self.step(net, n, epoch, step)
                    };
                    self.order = idx;
                    // A loss that is not a number took no step: the callbacks see it
                    // (TerminateOnNaN stops training there, as in Keras); if none stops,
                    // training ends with the error rather than go on with NaN weights.
                    let (l, h, c, not_finite) = match done {
                        Err(e @ Error::NonFiniteLoss { loss, .. }) => (loss as f64, 0, 0, Some(e)),
                        r => {
                            let (l, h, c) = r?;
                            (l, h, c, None)
                        }
                    };
                    loss_sum += l;
                    hits += h;
                    count += c;
                    seen += n;
                    let logs = BatchLogs {
                        batch: step,
                        size: n,
                        loss: (loss_sum / seen as f64) as f32,
                        accuracy: accuracy(hits, count),
                    };
                    self.each(net, &mut all, |cb, m| cb.on_train_batch_end(&logs, m))?;
                    self.share_stop(&mut sharing)?;
                    if let (Some(e), false) = (not_finite, self.stop_training) {
                        return Err(e);
                    }
                    // As Keras: a stop asked for in a batch hook ends the epoch there.
                    if self.stop_training {
                        break;
                    }
                }
                let mut logs = EpochLogs {
                    epoch,
                    loss: (loss_sum / seen as f64) as f32,
                    accuracy: accuracy(hits, count),
                    val_loss: None,
                    val_accuracy: None,
                    learning_rate: self
                        .compiled
                        .as_ref()
                        .expect("compiled")
                        .optimizer
                        .learning_rate(),
                    seconds: 0.0,
                };
                if let Some((vx, vy)) = validation {
                    if let Some(a) = self.anatomy.as_mut() {
                        a.start();
                    }
                    // In passes of a training batch (or slice), at least INFERENCE_BATCH:
                    // the pass's size changes no sample's bits.
                    let passes = if sharing.shared() {
                        slice_capacity
                    } else {
                        batch
                    };
                    let e = self.evaluate_shared(
                        net,
                        vx,
                        vy,
                        passes.max(INFERENCE_BATCH),
                        &mut sharing,
                    )?;
                    if let Some(a) = self.anatomy.as_mut() {
                        let v = slots::Layout::of(&self.plan).validation;
                        a.mark(v, vx.samples());
                    }
                    logs.val_loss = Some(e.loss);
                    logs.val_accuracy = e.accuracy;
                }
                logs.seconds = start.elapsed().as_secs_f64();
                history.epochs.push(logs.clone());
                self.each(net, &mut all, |cb, m| cb.on_epoch_end(&logs, m))?;
                self.share_stop(&mut sharing)?;
                if self.stop_training {
                    break;
                }
            }
            self.each(net, &mut all, |cb, m| cb.on_train_end(m))?;
            Ok(history)
        };
        let run = train();
        let anatomy = self.anatomy.take();
        self.buckets = None;
        run.map(|mut history| {
            history.anatomy = anatomy.map(Recorder::finish);
            history
        })
    }

    /// Calls `hook` on every callback with the handle to the model.
    fn each(
        &mut self,
        net: &mut Net<'_>,
        callbacks: &mut [&mut dyn Callback],
        mut hook: impl FnMut(&mut dyn Callback, &mut dyn TrainingModel) -> Result<()>,
    ) -> Result<()> {
        let Trainer {
            compiled,
            stop_training,
            ..
        } = self;
        let optimizer = &mut compiled.as_mut().expect("compiled").optimizer;
        let mut handle = Handle {
            net,
            optimizer,
            stop: stop_training,
        };
        for cb in callbacks.iter_mut() {
            hook(&mut **cb, &mut handle)?;
        }
        Ok(())
    }

    /// Makes a stop asked for on any rank everyone's (a callback may decide from what only its
    /// rank sees, such as the time).
    fn share_stop(&mut self, sharing: &mut Sharing<'_>) -> Result<()> {
        if let Sharing::Ranks(comm) = sharing {
            let mut stop = [self.stop_training as u8 as f64];
            comm.sum_f64(&mut stop)?;
            self.stop_training = stop[0] > 0.0;
        }
        Ok(())
    }

    /// Before a distributed `fit`: the ranks must have the same model, optimizer, settings and
    /// data; then every rank takes rank 0's weights and optimizer state.
    fn join_ranks(
        &mut self,
        net: &mut Net<'_>,
        comm: &mut dyn Collective,
        x: &Tensor,
        y: &Tensor,
        cfg: &FitConfig<'_>,
        validation: Option<(&Tensor, &Tensor)>,
    ) -> Result<()> {
        use distributed::{agree, Fingerprint};
        let c = self.compiled.as_mut().expect("compiled");
        let mut model = Fingerprint::new();
        for &d in net.input_shape {
            model.word(d as u64);
        }
        for l in net.layers.iter_mut() {
            model.text(&format!("{:?}", l.config()));
            l.for_each_param(&mut |p| {
                model.text(p.name);
                p.shape.iter().for_each(|&d| model.word(d as u64));
            });
        }
        model.text(&format!("{:?} {:?} {}", c.loss, c.metrics, c.fused));
        agree(comm, "the models (layers, shapes, loss)", model.value())?;
        let mut optimizer = Fingerprint::new();
        optimizer.text(&c.optimizer.describe());
        for s in c.optimizer.state_mut() {
            optimizer.word(s.len() as u64);
        }
        agree(
            comm,
            "the optimizers (kind, settings, steps taken, schedule)",
            optimizer.value(),
        )?;
        let mut settings = Fingerprint::new();
        settings.text(&format!(
            "{} {} {} {} {} {}",
            cfg.epochs,
            cfg.batch_size,
            cfg.shuffle,
            cfg.validation_split,
            cfg.micro_batches,
            net.seed
        ));
        agree(
            comm,
            "the fit settings (epochs, batch size, shuffle, validation, seed)",
            settings.value(),
        )?;
        let mut data = Fingerprint::new();
        data.tensor(x);
        data.tensor(y);
        if let Some((vx, vy)) = validation {
            data.tensor(vx);
            data.tensor(vy);
        }
        agree(comm, "the training or validation data", data.value())?;
        distributed::start_from_rank_zero(comm, net.layers, &mut c.optimizer)
    }

    /// The validation after an epoch: over all of `x`; or on ranks over this rank's slice of
    /// it, the sums then taken across the ranks (every rank gets the same figures), and with
    /// micro-batches over the same slices one after the other (the same figures again).
    fn evaluate_shared(
        &mut self,
        net: &mut Net<'_>,
        x: &Tensor,
        y: &Tensor,
        batch: usize,
        sharing: &mut Sharing<'_>,
    ) -> Result<Evaluation> {
        let total = x.samples();
        let mut sums = [0.0f64; 3];
        match sharing {
            Sharing::Alone => return self.evaluate_inner(net, x, y, batch),
            // The shares one after the other, their sums added in order: the ranks' figures.
            Sharing::MicroBatches(parts) => {
                for part in 0..*parts {
                    let slice = distributed::share(total, part, *parts);
                    if !slice.is_empty() {
                        let (loss, hits, count) = self.evaluate_sums(net, x, y, batch, slice)?;
                        for (s, v) in sums.iter_mut().zip([loss, hits as f64, count as f64]) {
                            *s += v;
                        }
                    }
                }
            }
            Sharing::Ranks(comm) => {
                let slice = distributed::share(total, comm.rank(), comm.size());
                if !slice.is_empty() {
                    let (loss, hits, count) = self.evaluate_sums(net, x, y, batch, slice)?;
                    sums = [loss, hits as f64, count as f64];
                }
                comm.sum_f64(&mut sums)?;
            }
        }
        Ok(Evaluation {
            loss: (sums[0] / total.max(1) as f64) as f32,
            accuracy: self
                .has_accuracy()
                .then(|| (sums[1] / sums[2].max(1.0)) as f32),
        })
    }

    /// Keras's `evaluate` (see `Sequential::evaluate`).
    pub fn evaluate(
        &mut self,
        net: &mut Net<'_>,
        x: &Tensor,
        y: &Tensor,
        batch_size: usize,
    ) -> Result<Evaluation> {
        let loss = self.compiled_for("evaluate")?.loss;
        Self::check_input(net, x, "the input")?;
        loss.check_targets(y, x.samples(), net.output_len())?;
        if batch_size == 0 {
            return Err(Error::Setting {
                owner: "evaluate",
                name: "batch_size",
                value: "0".into(),
                allowed: "at least 1".into(),
            });
        }
        self.evaluate_inner(net, x, y, batch_size)
    }

    fn evaluate_inner(
        &mut self,
        net: &mut Net<'_>,
        x: &Tensor,
        y: &Tensor,
        batch: usize,
    ) -> Result<Evaluation> {
        let total = x.samples();
        if total == 0 {
            return Err(Error::NoSamples {
                operation: "evaluate",
                what: "samples",
            });
        }
        let (loss_sum, hits, count) = self.evaluate_sums(net, x, y, batch, 0..total)?;
        Ok(Evaluation {
            loss: (loss_sum / total as f64) as f32,
            accuracy: self
                .has_accuracy()
                .then(|| hits as f32 / count.max(1) as f32),
        })
    }

    /// The loss summed over samples `range` of `x`, `y`, the correct predictions and their
    /// count, in forward passes of at most `batch` samples.
    fn evaluate_sums(
        &mut self,
        net: &mut Net<'_>,
        x: &Tensor,
        y: &Tensor,
        batch: usize,
        range: std::ops::Range<usize>,
    ) -> Result<(f64, usize, usize)> {
        let batch = batch.min(range.len()).max(1);
        self.ensure_capacity(net, batch)?;
        self.refresh_folds(net)?;
        let k = net.output_len();
        let (mut loss_sum, mut hits, mut count) = (0.0f64, 0usize, 0usize);
        let mut scratch = vec![0.0f32; batch * k];
        for from in range.clone().step_by(batch) {
            let n = batch.min(range.end - from);
            // The samples straight from `x`: a copy into the input buffer first cost a pass
            // over them on one thread while the others waited.
            let xv = x.rows(from..from + n).expect("in range");
            let yv = y.rows(from..from + n).expect("as many targets as inputs");
            self.forward_from(net, Some(xv), n, false)?;
            let c = self.compiled.as_ref().expect("compiled");
            let out = &net.layers.last().expect("built").output()[..n * k];
            loss_sum += c.loss.compute(out, yv, &mut scratch, n, k, c.fused);
            let (h, of) = c.loss.correct(out, yv, n, k);
            hits += h;
            count += of;
        }
        Ok((loss_sum, hits, count))
    }

    /// Keras's `predict` (see `Sequential::predict`).
    pub fn predict(&mut self, net: &mut Net<'_>, x: &Tensor, batch_size: usize) -> Result<Tensor> {
        // The values are checked a pass at a time, just before the pass reads them (from
        // cache then): a check of the whole input first read it from memory once more, on one
        // thread while the others waited (1.5 % of a CNN's inference at batch 1000, and as
        // much again in the helper's wait).
        Self::check_shape(net, x, "the input")?;
        if batch_size == 0 {
            return Err(Error::Setting {
                owner: "predict",
                name: "batch_size",
                value: "0".into(),
                allowed: "at least 1".into(),
            });
        }
        let total = x.samples();
        let batch = batch_size.min(total.max(1)).min(predict_pass(net));
        self.ensure_capacity(net, batch)?;
        self.refresh_folds(net)?;
        let k = net.output_len();
        let mut out = Vec::with_capacity(total * k);
        for from in (0..total).step_by(batch) {
            let n = batch.min(total - from);
            let il = net.input_len();
            let xv = x.rows(from..from + n).expect("in range");
            Self::check_finite(xv, from * il, "the input")?;
            self.forward_from(net, Some(xv), n, false)?;
            out.extend_from_slice(&net.layers.last().expect("built").output()[..n * k]);
        }
        let mut shape = vec![total];
        shape.extend_from_slice(net.layers.last().expect("built").output_shape());
        Tensor::from_vec(out, &shape)
    }
}

/// The error of a fused unit the plan chose but its layers declined (a bug, not the caller's).
fn planned(layers: std::ops::RangeInclusive<usize>, what: &str) -> Error {
    Error::Internal(format!(
        "the plan runs layers {}–{} as one {what}, which they declined",
        layers.start(),
        layers.end()
    ))
}

/// The anatomy's slots (see `crate::anatomy`): gather, each forward unit of the training plan,
/// the loss, each backward unit, the optimizer, the validation.
mod slots {
    use super::*;

    pub const GATHER: usize = 0;
    pub const FORWARD: usize = 1;

    /// Where the slots after the forward units are, for `plan`.
    pub struct Layout {
        pub loss: usize,
        pub backward: usize,
        pub optimizer: usize,
        pub exchange: usize,
        pub validation: usize,
    }

    impl Layout {
        pub fn of(plan: &Plan) -> Layout {
            let loss = FORWARD + plan.forward.len();
            let optimizer = loss + 1 + plan.backward.len();
            Layout {
                loss,
                backward: loss + 1,
                optimizer,
                validation: optimizer + 1,
                exchange: optimizer + 2,
            }
        }
    }

    /// The slots of `plan` over `layers`, named after the layers each unit runs, with their
    /// products' FLOPs per sample; with `shared` steps, the gradients' exchange last.
    pub fn layout(layers: &[Box<dyn Layer>], plan: &Plan, shared: bool) -> Vec<Slot> {
        let slot = |name: String, pass: Pass, flops_per_sample: u64| Slot {
            part: Part {
                name,
                pass,
                seconds: 0.0,
                flops: 0,
            },
            flops_per_sample,
        };
        // A unit's layers by name, less those the layer before runs (an Activation inside its
        // BatchNormalization's name).
        let names = |range: std::ops::RangeInclusive<usize>| {
            let start = *range.start();
            range
                .filter(|&i| i == start || !plan.runs_next[i - 1])
                .map(|i| plan.unit_name(layers, i))
                .collect::<Vec<_>>()
                .join(" + ")
        };
        let mut out = vec![slot("gather".into(), Pass::Gather, 0)];
        for unit in &plan.forward {
            let flops = unit.layers().map(|i| layers[i].flops().forward).sum();
            out.push(slot(names(unit.layers()), Pass::Forward, flops));
        }
        out.push(slot("loss".into(), Pass::Loss, 0));
        for back in &plan.backward {
            let i = back.layer;
            let own = layers[i].flops();
            let (name, flops) = if back.with_conv_below {
                (
                    format!("{} + {}", layers[i].name(), layers[i - 1].name()),
                    own.weight_gradient + layers[i - 1].flops().weight_gradient,
                )
            } else if let (Some(nb), Some(j)) = (back.norm_below, back.source) {
                let mut name = format!("{} + {}", layers[i].name(), plan.unit_name(layers, j));
                let mut flops = own.weight_gradient + layers[j].flops().weight_gradient;
                if let (true, Some(k)) = (nb.with_conv, nb.source) {
                    name = format!("{name} + {}", layers[k].name());
                    flops += layers[k].flops().weight_gradient;
                }
                (name, flops)
            } else {
                let input = if back.source.is_some() {
                    own.input_gradient
                } else {
                    0
                };
                (plan.unit_name(layers, i), own.weight_gradient + input)
            };
            out.push(slot(name, Pass::Backward, flops));
        }
        out.push(slot("optimizer".into(), Pass::Optimizer, 0));
        let forward = layers.iter().map(|l| l.flops().forward).sum();
        out.push(slot("validation".into(), Pass::Validation, forward));
        if shared {
            out.push(slot("exchange".into(), Pass::Exchange, 0));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn predict_passes_halve_where_the_outputs_leave_the_last_level_cache() {
        let l3 = 32 << 20;
        // Program A's network (784 + 128 + 10 floats a sample): 0.9 MiB a pass of 256.
        assert_eq!(pass_for(922, l3), PREDICT_PASS);
        // Program G's (26 602 floats a sample): 26 MiB a pass of 256.
        assert_eq!(pass_for(26_602, l3), PREDICT_PASS / 2);
        // The boundary: a quarter of the cache exactly still takes the whole pass.
        let quarter = l3 / 4 / (PREDICT_PASS * 4);
        assert_eq!(pass_for(quarter, l3), PREDICT_PASS);
        assert_eq!(pass_for(quarter + 1, l3), PREDICT_PASS / 2);
        assert_eq!(pass_for(usize::MAX, l3), PREDICT_PASS / 2);
        assert_eq!(pass_for(0, l3), PREDICT_PASS);
    }
}
