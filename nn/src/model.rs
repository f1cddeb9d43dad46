//! `Sequential`: a stack of layers with Keras's build / compile / fit / evaluate / predict.
//!
//! A training step, as data flows: the batch is gathered (shuffled order) into the model's input
//! buffer → each layer's `forward` writes its own preallocated output → the loss writes its
//! value and gradient (fused with a final softmax/sigmoid: p − y) → each layer's `backward`, in
//! reverse, fills its parameter gradients and the gradient buffer of the layer below → the
//! optimizer updates the parameters in place. Every buffer is sized at compile time for the
//! largest batch: no step allocates (tested with a counting allocator).
//!
//! Training runs on one of the rayon pool's threads (the calling thread waits for the whole
//! `fit`), so the kernels' parallel loops fork and join inside the pool; results are identical
//! for every thread count. (One hand-off per `fit` rather than per step: measured 10 % faster
//! per epoch on the reference MLP.)

use std::time::Instant;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

use crate::activations::Act;
use crate::callbacks::{Callback, EpochLogs, History};
use crate::error::{Error, Result};
use crate::layers::{Layer, Param};
use crate::loss::Loss;
use crate::optimizers::Optimizer;
use crate::progress::Progress;
use crate::tensor::Tensor;

/// Samples per forward pass in `evaluate` and `predict` (and the validation after each epoch)
/// when larger than the training batch.
const INFERENCE_BATCH: usize = 256;

/// A linear stack of layers.
pub struct Sequential {
    layers: Vec<Box<dyn Layer>>,
    input_shape: Option<Vec<usize>>,
    seed: u64,
    built: bool,
    compiled: Option<Compiled>,
    /// Samples every buffer holds.
    capacity: usize,
    /// The input batch and its targets, gathered from the data set.
    x_buf: Vec<f32>,
    y_buf: Vec<f32>,
    /// dL/d(output of layer i), one buffer per layer.
    grads: Vec<Vec<f32>>,
    /// The sample order of the current epoch.
    order: Vec<usize>,
    /// Set by a callback to end training after the current epoch.
    pub(crate) stop_training: bool,
    /// `kernels::scratch_generation()` when the pool's scratch buffers were last prepared.
    prepared_generation: usize,
    /// Whether layers that can apply the optimizer's step inside their backward pass do
    /// (`Layer::backward_stepping`; on by default, the same bits either way).
    fused_steps: bool,
    /// The model was compiled, then changed: the error of `fit` says so.
    recompile: bool,
}

struct Compiled {
    optimizer: Optimizer,
    loss: Loss,
    /// The loss is differentiated through the last layer's softmax/sigmoid.
    fused: bool,
    metrics: Vec<Metric>,
}

/// A metric reported next to the loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// Keras's "accuracy", interpreted for the loss (categorical, sparse or binary).
    Accuracy,
}

/// `fit`'s arguments beyond the data (Keras's keyword arguments, with its defaults).
#[derive(Clone)]
pub struct FitConfig<'a> {
    pub epochs: usize,
    pub batch_size: usize,
    /// Data evaluated after each epoch (takes precedence over `validation_split`).
    pub validation_data: Option<(&'a Tensor, &'a Tensor)>,
    /// Fraction of the training data, taken from its end before shuffling, held out.
    pub validation_split: f32,
    pub shuffle: bool,
    /// 0: silent; 1: a progress bar per epoch (plain lines when not on a terminal); 2: one
    /// line per epoch.
    pub verbose: u8,
}

impl<'a> FitConfig<'a> {
    /// `epochs`, `batch_size`; shuffled, verbose 1, no validation.
    pub fn new(epochs: usize, batch_size: usize) -> Self {
        FitConfig {
            epochs,
            batch_size,
            validation_data: None,
            validation_split: 0.0,
            shuffle: true,
            verbose: 1,
        }
    }
    pub fn validation_data(mut self, x: &'a Tensor, y: &'a Tensor) -> Self {
        self.validation_data = Some((x, y));
        self
    }
    pub fn validation_split(mut self, fraction: f32) -> Self {
        self.validation_split = fraction;
        self
    }
    pub fn shuffle(mut self, on: bool) -> Self {
        self.shuffle = on;
        self
    }
    pub fn verbose(mut self, level: u8) -> Self {
        self.verbose = level;
        self
    }
}

/// Loss and accuracy over a data set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Evaluation {
    pub loss: f32,
    pub accuracy: f32,
}

impl Default for Sequential {
    fn default() -> Self {
        Self::new()
    }
}

/// Runs `f` on a thread of the rayon pool (the caller waits), so that parallel kernels inside
/// fork and join within the pool.
/// In a child forked from a process with threads (whose pool did not survive the fork), `f`
/// runs on the calling thread, as the kernels then do.
fn in_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if rayon::current_thread_index().is_some() || kernels::forked_child() {
        f()
    } else {
        rayon::scope(|_| f())
    }
}

impl Sequential {
    /// An empty model with seed 0.
    pub fn new() -> Sequential {
        Sequential {
            layers: vec![],
            input_shape: None,
            seed: 0,
            built: false,
            compiled: None,
            capacity: 0,
            x_buf: vec![],
            y_buf: vec![],
            grads: vec![],
            order: vec![],
            stop_training: false,
            prepared_generation: usize::MAX,
            fused_steps: true,
            recompile: false,
        }
    }

    /// The shape of one input sample (Keras's `input_shape`, without the batch dimension).
    pub fn input_shape(mut self, shape: &[usize]) -> Self {
        self.input_shape = Some(shape.to_vec());
        self.changed();
        self
    }

    /// The seed of weight initialisation, shuffling and dropout: same seed, same training.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self.changed();
        self
    }

    /// A change to the structure (input shape, seed, layers): the model must be built and
    /// compiled again before it trains (its buffers and plan no longer fit).
    fn changed(&mut self) {
        self.built = false;
        self.capacity = 0;
        if self.compiled.take().is_some() {
            self.recompile = true;
        }
    }

    /// Appends `layer` (builder style; Keras's `model.add`).
    #[allow(clippy::should_implement_trait)]
    pub fn add(mut self, layer: impl Layer + 'static) -> Self {
        self.push(Box::new(layer));
        self
    }

    /// Appends `layer`.
    pub fn push(&mut self, layer: Box<dyn Layer>) {
        self.layers.push(layer);
        self.changed();
    }

    /// Whether `build` (or `compile`) has run since the last change.
    pub fn is_built(&self) -> bool {
        self.built
    }

    pub fn layers(&self) -> &[Box<dyn Layer>] {
        &self.layers
    }

    pub fn get_input_shape(&self) -> Option<&[usize]> {
        self.input_shape.as_deref()
    }

    pub fn get_seed(&self) -> u64 {
        self.seed
    }

    /// Shape inference: names the layers ("dense", "dense_1", … as Keras), creates their
    /// parameters from the seed and checks that each layer accepts the previous one's output;
    /// an error names the layer and the shapes.
    pub fn build(&mut self) -> Result<()> {
        let input = self.input_shape.clone().ok_or_else(|| {
            Error::NotReady("the model has no input shape: call input_shape(&[…]) first".into())
        })?;
        if self.layers.is_empty() {
            return Err(Error::NotReady("the model has no layers".into()));
        }
        self.name_layers()?;
        crate::layers::elements(&input, "input")?;
        let mut rng = StdRng::seed_from_u64(self.seed);
        let mut shape = input;
        for layer in &mut self.layers {
            shape = layer.build(&shape, &mut rng)?;
        }
        self.built = true;
        self.capacity = 0;
        Ok(())
    }

    /// Names the unnamed layers as Keras does ("dense", "dense_1", …), skipping names the user
    /// gave other layers; two layers of one name are an error (Keras refuses them too: the
    /// weights are saved by name).
    fn name_layers(&mut self) -> Result<()> {
        let mut taken: std::collections::HashSet<String> = std::collections::HashSet::new();
        for (i, layer) in self.layers.iter().enumerate() {
            let name = layer.name();
            if !name.is_empty() && !taken.insert(name.to_string()) {
                return Err(Error::InvalidArgument(format!(
                    "layer {i} ({}) is named {name:?}, as an earlier layer is: layer names \
                     must be unique",
                    layer.class_name()
                )));
            }
        }
        let mut counts = std::collections::HashMap::new();
        for layer in &mut self.layers {
            if layer.name().is_empty() {
                let base = snake_case(layer.class_name());
                let c = counts.entry(base.clone()).or_insert(0usize);
                let name = loop {
                    let name = if *c == 0 {
                        base.clone()
                    } else {
                        format!("{base}_{c}")
                    };
                    *c += 1;
                    if taken.insert(name.clone()) {
                        break name;
                    }
                };
                layer.set_name(name);
            }
        }
        Ok(())
    }

    /// What building would make of the layers (names given, nothing allocated): each layer's
    /// output and parameter shapes, every size checked; an error names the layer.
    pub(crate) fn infer(&mut self) -> Result<Vec<crate::layers::Inferred>> {
        let input = self.input_shape.clone().ok_or_else(|| {
            Error::NotReady("the model has no input shape: call input_shape(&[…]) first".into())
        })?;
        self.name_layers()?;
        crate::layers::elements(&input, "input")?;
        let mut shape = input;
        let mut all = vec![];
        for layer in &self.layers {
            let inferred = layer.infer(&shape)?;
            shape = inferred.output.clone();
            all.push(inferred);
        }
        Ok(all)
    }

    /// Keras's `compile(optimizer, loss, metrics)`: builds the model if needed and prepares
    /// training (a fresh optimizer state).
    pub fn compile(
        &mut self,
        optimizer: impl Into<Optimizer>,
        loss: Loss,
        metrics: &[Metric],
    ) -> Result<()> {
        if !self.built {
            self.build()?;
        }
        let last = self.layers.last().expect("built").output_activation();
        let fused = loss.fuses_with(last);
        // Which layers receive dL/d(pre-activation): the last when the loss differentiates
        // through its softmax/sigmoid, and any whose activation the next layer's backward pass
        // takes over (MaxPooling2D after Conv2D).
        let count = self.layers.len();
        for i in 0..count {
            let absorbed = i + 1 < count && {
                let act = self.layers[i].output_activation();
                self.layers[i + 1].absorb_input_activation(act)
            };
            self.layers[i].set_grad_is_preactivation(absorbed || (fused && i + 1 == count));
        }
        let mut optimizer = optimizer.into();
        optimizer.validate()?;
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

    /// The optimizer (to read or change its learning rate between epochs).
    pub fn optimizer_mut(&mut self) -> Option<&mut Optimizer> {
        self.compiled.as_mut().map(|c| &mut c.optimizer)
    }

    pub fn loss(&self) -> Option<Loss> {
        self.compiled.as_ref().map(|c| c.loss)
    }

    /// Per-sample output shape (after `build`).
    pub fn output_shape(&self) -> Option<&[usize]> {
        self.built
            .then(|| self.layers.last().expect("built").output_shape())
    }

    fn input_len(&self) -> usize {
        self.input_shape.as_ref().map_or(0, |s| s.iter().product())
    }

    fn output_len(&self) -> usize {
        self.layers
            .last()
            .map_or(0, |l| l.output_shape().iter().product())
    }

    /// Sizes every buffer for `batch` samples (grows only); a size that overflows or memory the
    /// system refuses is an error (the buffers grown so far stay, unused).
    fn ensure_capacity(&mut self, batch: usize) -> Result<()> {
        use crate::layers::grow;
        if batch <= self.capacity {
            return Ok(());
        }
        for layer in &mut self.layers {
            layer.allocate(batch)?;
        }
        let target = self
            .compiled
            .as_ref()
            .map_or(self.output_len(), |c| c.loss.target_len(self.output_len()));
        let input_len = self.input_len();
        grow(&mut self.x_buf, batch, input_len, 0.0, "input")?;
        grow(&mut self.y_buf, batch, target, 0.0, "target")?;
        self.grads.resize_with(self.layers.len(), Vec::new);
        for (g, l) in self.grads.iter_mut().zip(&self.layers) {
            let per = l.output_shape().iter().product::<usize>();
            grow(g, batch, per, 0.0, l.name())?;
        }
        self.capacity = batch;
        Ok(())
    }

    fn check_input(&self, x: &Tensor, what: &str) -> Result<()> {
        let want = self.input_shape.as_deref().unwrap_or(&[]);
        if x.shape().len() != want.len() + 1 || &x.shape()[1..] != want {
            return Err(Error::Shape(format!(
                "{what} has shape {:?}, but the model takes samples of shape {want:?} \
                 (expected [n, {}])",
                x.shape(),
                want.iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        if let Some(i) = x.data().iter().position(|v| !v.is_finite()) {
            return Err(Error::InvalidArgument(format!(
                "{what} holds a non-finite value ({}) at element {i}",
                x.data()[i]
            )));
        }
        Ok(())
    }

    /// Forward pass over the first `n` samples of `x_buf`. A Conv2D followed by a
    /// MaxPooling2D runs as one fused pass (`layers::forward_conv_pool`).
    fn forward(&mut self, n: usize, training: bool) -> Result<()> {
        let Sequential { layers, x_buf, .. } = self;
        // The layer whose output is the data so far (None: the input buffer).
        let mut source: Option<usize> = None;
        let mut i = 0;
        while i < layers.len() {
            if skipped(layers, i) {
                i += 1;
                continue;
            }
            let (before, rest) = layers.split_at_mut(i);
            let input: &[f32] = match source {
                Some(j) => before[j].output(),
                None => x_buf,
            };
            if let [first, second, ..] = rest {
                if let Some(r) = crate::layers::forward_conv_pool(
                    first.as_mut(),
                    second.as_mut(),
                    input,
                    n,
                    training,
                ) {
                    r?;
                    source = Some(i + 1);
                    i += 2;
                    continue;
                }
            }
            rest[0].forward(input, n, training)?;
            source = Some(i);
            i += 1;
        }
        Ok(())
    }

    /// One optimisation step on the first `n` samples of the input and target buffers; returns
    /// (summed loss, correct predictions, prediction count).
    fn step(&mut self, n: usize, epoch: usize, step: usize) -> Result<(f64, usize, usize)> {
        self.forward(n, true)?;
        let k = self.output_len();
        let Sequential {
            layers,
            x_buf,
            y_buf,
            grads,
            compiled,
            fused_steps,
            ..
        } = self;
        let c = compiled.as_mut().expect("compiled");
        let last = layers.len() - 1;
        let out = &layers[last].output()[..n * k];
        let loss = c.loss.compute(out, y_buf, &mut grads[last], n, k, c.fused);
        if !loss.is_finite() {
            return Err(Error::NonFiniteLoss {
                epoch: epoch + 1,
                step: step + 1,
                loss: loss as f32,
            });
        }
        let (hits, of) = c.loss.correct(out, y_buf, n, k);
        c.optimizer.begin_step(layers)?;
        let mut i = layers.len();
        while i > 0 {
            i -= 1;
            if skipped(layers, i) {
                continue;
            }
            // The layer below whose output this one reads, and whose gradient it writes.
            let source = (0..i).rev().find(|&j| !skipped(layers, j));
            // Whether this layer and the one below form the model's first pair (the lower
            // one's input gradient is not needed).
            let bottom_pair =
                i > 0 && source == Some(i - 1) && (0..i - 1).all(|b| skipped(layers, b));
            let (below, here) = grads.split_at_mut(i);
            let (lower, upper) = layers.split_at_mut(i);
            if bottom_pair {
                // A Conv2D + MaxPooling2D pair: the convolution's gradients straight from the
                // pooling's, in one pass (`layers::backward_conv_pool`).
                let conv = lower[i - 1].as_mut();
                if let Some(r) =
                    crate::layers::backward_conv_pool(conv, upper[0].as_mut(), x_buf, &here[0], n)
                {
                    r?;
                    i -= 1;
                    continue;
                }
            }
            let first = first_param(lower);
            let input: &[f32] = match source {
                Some(j) => lower[j].output(),
                None => x_buf,
            };
            // The model's input gradient is never needed.
            let dx = source.map(|j| &mut below[j][..]);
            if *fused_steps {
                let mut steps = c.optimizer.steps_for(first);
                if let Some(r) = upper[0].backward_stepping(input, &mut here[0], dx, n, &mut steps)
                {
                    r?;
                    continue;
                }
            }
            let dx = source.map(|j| &mut below[j][..]);
            upper[0].backward(input, &mut here[0], dx, n)?;
        }
        c.optimizer.finish_step(layers)?;
        // A kernel's per-thread scratch grew past every earlier size: grow every worker's to
        // match, so that later steps allocate nothing whichever worker runs which task.
        let generation = kernels::scratch_generation();
        if generation != self.prepared_generation {
            kernels::prepare_threads();
            self.prepared_generation = generation;
        }
        Ok((loss, hits, of))
    }

    /// Turns off (or back on) the optimizer steps fused into layers' backward passes
    /// (`Layer::backward_stepping`): the same bits either way on the library's own GEMM paths;
    /// for tests and measurements.
    #[doc(hidden)]
    pub fn set_fused_steps(&mut self, on: bool) {
        self.fused_steps = on;
    }

    /// Keras's `train_on_batch`: one step on the samples `x` (`n × input`) with targets `y`;
    /// returns (mean loss, accuracy). Allocates nothing once the buffers have grown to `n`.
    pub fn train_on_batch(&mut self, x: &[f32], y: &[f32], n: usize) -> Result<(f32, f32)> {
        let c = self.compiled_for("train_on_batch")?;
        let loss = c.loss;
        let (il, tl) = (self.input_len(), c.loss.target_len(self.output_len()));
        if x.len() != n * il || y.len() != n * tl || n == 0 {
            return Err(Error::Shape(format!(
                "train_on_batch: {n} samples need {} input and {} target values, got {} and {}",
                n * il,
                n * tl,
                x.len(),
                y.len()
            )));
        }
        if let Some(i) = x.iter().position(|v| !v.is_finite()) {
            return Err(Error::InvalidArgument(format!(
                "train_on_batch: input value {i} is {}: inputs must be finite",
                x[i]
            )));
        }
        loss.check_target_values(y, self.output_len())
            .map_err(|e| Error::InvalidArgument(format!("train_on_batch: {e}")))?;
        self.ensure_capacity(n)?;
        self.x_buf[..x.len()].copy_from_slice(x);
        self.y_buf[..y.len()].copy_from_slice(y);
        let (loss, hits, of) = in_pool(|| self.step(n, 0, 0))?;
        Ok(((loss / n as f64) as f32, hits as f32 / of.max(1) as f32))
    }

    /// Copies samples `idx` of `x` and `y` into the batch buffers.
    fn gather(&mut self, x: &Tensor, y: Option<&Tensor>, idx: &[usize]) {
        let il = self.input_len();
        for (r, &i) in idx.iter().enumerate() {
            self.x_buf[r * il..(r + 1) * il].copy_from_slice(x.sample(i).expect("i < samples"));
        }
        if let Some(y) = y {
            let tl = y.sample_len();
            for (r, &i) in idx.iter().enumerate() {
                self.y_buf[r * tl..(r + 1) * tl].copy_from_slice(y.sample(i).expect("i < samples"));
            }
        }
    }

    /// Keras's `fit`: trains for `cfg.epochs` epochs and returns the per-epoch history. Callbacks
    /// see each epoch's logs and may stop training.
    pub fn fit(
        &mut self,
        x: &Tensor,
        y: &Tensor,
        cfg: &FitConfig<'_>,
        callbacks: &mut [&mut dyn Callback],
    ) -> Result<History> {
        let loss = self.compiled_for("fit")?.loss;
        self.check_input(x, "the training input")?;
        loss.check_targets(y, x.samples(), self.output_len())?;
        if cfg.batch_size == 0 || cfg.epochs == 0 {
            return Err(Error::InvalidArgument(format!(
                "fit: batch_size ({}) and epochs ({}) must be at least 1",
                cfg.batch_size, cfg.epochs
            )));
        }
        if cfg.verbose > 2 {
            return Err(Error::InvalidArgument(format!(
                "fit: verbose = {} is not 0 (silent), 1 (a progress bar) or 2 (a line per epoch)",
                cfg.verbose
            )));
        }
        if !(0.0..1.0).contains(&cfg.validation_split) {
            return Err(Error::InvalidArgument(format!(
                "fit: validation_split {} is not in [0, 1)",
                cfg.validation_split
            )));
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
            return Err(Error::InvalidArgument(
                "fit: there are no training samples".into(),
            ));
        }
        let split_val;
        let validation = match cfg.validation_data {
            Some((vx, vy)) => {
                self.check_input(vx, "the validation input")?;
                loss.check_targets(vy, vx.samples(), self.output_len())?;
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
        self.ensure_capacity(batch.max(INFERENCE_BATCH.min(total)))?;
        self.order = (0..train_n).collect();
        self.stop_training = false;
        let mut shuffle_rng = StdRng::seed_from_u64(self.seed ^ 0x5eed_5eed);
        let steps = train_n.div_ceil(batch);
        // The whole loop runs on one rayon worker: no per-step hand-off between the calling
        // thread and the pool, and the same worker's buffers serve every step.
        in_pool(|| {
            let mut history = History::default();
            for cb in callbacks.iter_mut() {
                cb.on_train_begin(self)?;
            }
            for epoch in 0..cfg.epochs {
                let start = Instant::now();
                let mut progress = Progress::new(cfg.verbose, epoch, cfg.epochs, steps);
                if cfg.shuffle {
                    self.order.shuffle(&mut shuffle_rng);
                }
                let (mut loss_sum, mut hits, mut count, mut seen) =
                    (0.0f64, 0usize, 0usize, 0usize);
                let mut step = 0;
                while step < steps {
                    let from = step * batch;
                    let n = batch.min(train_n - from);
                    let idx = std::mem::take(&mut self.order);
                    self.gather(x, Some(y), &idx[from..from + n]);
                    self.order = idx;
                    let (l, h, c) = self.step(n, epoch, step)?;
                    loss_sum += l;
                    hits += h;
                    count += c;
                    seen += n;
                    step += 1;
                    progress.step(
                        step,
                        (loss_sum / seen as f64) as f32,
                        hits as f32 / count.max(1) as f32,
                    );
                }
                let mut logs = EpochLogs {
                    epoch,
                    loss: (loss_sum / seen as f64) as f32,
                    accuracy: hits as f32 / count.max(1) as f32,
                    val_loss: None,
                    val_accuracy: None,
                    seconds: 0.0,
                };
                if let Some((vx, vy)) = validation {
                    let e = self.evaluate_inner(vx, vy, batch.max(INFERENCE_BATCH))?;
                    logs.val_loss = Some(e.loss);
                    logs.val_accuracy = Some(e.accuracy);
                }
                logs.seconds = start.elapsed().as_secs_f64();
                progress.finish(&logs, self.has_accuracy());
                history.epochs.push(logs.clone());
                for cb in callbacks.iter_mut() {
                    cb.on_epoch_end(&logs, self)?;
                }
                if self.stop_training {
                    break;
                }
            }
            for cb in callbacks.iter_mut() {
                cb.on_train_end(self)?;
            }
            Ok(history)
        })
    }

    /// The compiled state `what` (fit, evaluate, train_on_batch) needs, or the error that says
    /// why there is none.
    fn compiled_for(&self, what: &str) -> Result<&Compiled> {
        match &self.compiled {
            Some(c) if self.built => Ok(c),
            _ if self.recompile => Err(Error::NotReady(format!(
                "{what}: the model's input shape, seed or layers changed after compile: call \
                 compile again"
            ))),
            _ => Err(Error::NotReady(format!(
                "{what} before compile: call compile first"
            ))),
        }
    }

    fn has_accuracy(&self) -> bool {
        self.compiled
            .as_ref()
            .is_some_and(|c| c.metrics.contains(&Metric::Accuracy))
    }

    /// Keras's `evaluate`: mean loss and accuracy over `x`, `y`.
    pub fn evaluate(&mut self, x: &Tensor, y: &Tensor, batch_size: usize) -> Result<Evaluation> {
        let loss = self.compiled_for("evaluate")?.loss;
        self.check_input(x, "the input")?;
        loss.check_targets(y, x.samples(), self.output_len())?;
        if batch_size == 0 {
            return Err(Error::InvalidArgument(
                "evaluate: batch_size must be at least 1".into(),
            ));
        }
        self.evaluate_inner(x, y, batch_size.max(1))
    }

    fn evaluate_inner(&mut self, x: &Tensor, y: &Tensor, batch: usize) -> Result<Evaluation> {
        let total = x.samples();
        if total == 0 {
            return Err(Error::InvalidArgument(
                "evaluate: there are no samples".into(),
            ));
        }
        let batch = batch.min(total);
        self.ensure_capacity(batch)?;
        let k = self.output_len();
        let (mut loss_sum, mut hits, mut count) = (0.0f64, 0usize, 0usize);
        let mut scratch = vec![0.0f32; batch * k];
        for from in (0..total).step_by(batch) {
            let n = batch.min(total - from);
            let il = self.input_len();
            self.x_buf[..n * il].copy_from_slice(x.rows(from..from + n).expect("in range"));
            let yv = y.rows(from..from + n).expect("as many targets as inputs");
            in_pool(|| self.forward(n, false))?;
            let c = self.compiled.as_ref().expect("compiled");
            let out = &self.layers.last().expect("built").output()[..n * k];
            loss_sum += c.loss.compute(out, yv, &mut scratch, n, k, c.fused);
            let (h, of) = c.loss.correct(out, yv, n, k);
            hits += h;
            count += of;
        }
        Ok(Evaluation {
            loss: (loss_sum / total as f64) as f32,
            accuracy: hits as f32 / count.max(1) as f32,
        })
    }

    /// Keras's `predict`: the model's outputs for every sample of `x`, `batch_size` samples at a
    /// time — in forward passes of at most [`PREDICT_PASS`] samples, which give the same bits.
    pub fn predict(&mut self, x: &Tensor, batch_size: usize) -> Result<Tensor> {
        if !self.built {
            self.build()?;
        }
        self.check_input(x, "the input")?;
        if batch_size == 0 {
            return Err(Error::InvalidArgument(
                "predict: batch_size must be at least 1".into(),
            ));
        }
        let total = x.samples();
        let batch = batch_size.min(total.max(1)).min(PREDICT_PASS);
        self.ensure_capacity(batch)?;
        let k = self.output_len();
        let mut out = Vec::with_capacity(total * k);
        for from in (0..total).step_by(batch) {
            let n = batch.min(total - from);
            let il = self.input_len();
            self.x_buf[..n * il].copy_from_slice(x.rows(from..from + n).expect("in range"));
            in_pool(|| self.forward(n, false))?;
            out.extend_from_slice(&self.layers.last().expect("built").output()[..n * k]);
        }
        let mut shape = vec![total];
        shape.extend_from_slice(self.layers.last().expect("built").output_shape());
        Tensor::from_vec(out, &shape)
    }

    /// Every trainable tensor, in order (layer by layer, kernel then bias), with its name
    /// ("dense/kernel") and shape.
    pub fn get_weights(&mut self) -> Vec<(String, Tensor)> {
        let mut all = vec![];
        for layer in &mut self.layers {
            let lname = layer.name().to_string();
            layer.for_each_param(&mut |p: Param<'_>| {
                let t = Tensor::from_slice(p.value, p.shape).expect("consistent shapes");
                all.push((format!("{lname}/{}", p.name), t));
            });
        }
        all
    }

    /// Replaces every trainable tensor; names, count and shapes must match `get_weights`, and
    /// every value must be finite. All are checked before any is written: a call that fails
    /// changes nothing.
    pub fn set_weights(&mut self, weights: &[(String, Tensor)]) -> Result<()> {
        let mut expected = vec![];
        for layer in &mut self.layers {
            let lname = layer.name().to_string();
            layer.for_each_param(&mut |p: Param<'_>| {
                expected.push((format!("{lname}/{}", p.name), p.shape.to_vec()));
            });
        }
        if expected.len() != weights.len() {
            return Err(Error::Shape(format!(
                "the model has {} weight tensors but {} were given",
                expected.len(),
                weights.len()
            )));
        }
        for (i, ((want, shape), (name, t))) in expected.iter().zip(weights).enumerate() {
            if name != want {
                return Err(Error::Shape(format!(
                    "tensor {i} is {name}, expected {want}"
                )));
            }
            if t.shape() != &shape[..] {
                return Err(Error::Shape(format!(
                    "{want} has shape {shape:?} in the model but {:?} was given",
                    t.shape()
                )));
            }
            if let Some(at) = t.data().iter().position(|v| !v.is_finite()) {
                return Err(Error::InvalidArgument(format!(
                    "{want} holds a non-finite value ({}) at element {at}",
                    t.data()[at]
                )));
            }
        }
        let mut given = weights.iter();
        for layer in &mut self.layers {
            layer.for_each_param(&mut |p: Param<'_>| {
                let (_, t) = given.next().expect("counted above");
                p.value.copy_from_slice(t.data());
            });
        }
        Ok(())
    }

    /// Trainable parameters in all layers.
    pub fn count_params(&self) -> usize {
        self.layers.iter().map(|l| l.param_count()).sum()
    }

    /// Keras's `summary()`: layers, output shapes and parameter counts, as a table.
    pub fn summary(&mut self) -> Result<String> {
        if !self.built {
            self.build()?;
        }
        let mut s = String::new();
        let line = "─".repeat(72);
        s += "Model: \"sequential\"\n";
        s += &format!("┌{line}┐\n");
        s += &format!(
            "│ {:<34}{:<24}{:>12} │\n",
            "Layer (type)", "Output Shape", "Param #"
        );
        s += &format!("├{line}┤\n");
        for l in &self.layers {
            let shape = format!(
                "(None, {})",
                l.output_shape()
                    .iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            s += &format!(
                "│ {:<34}{:<24}{:>12} │\n",
                format!("{} ({})", l.name(), l.class_name()),
                shape,
                l.param_count()
            );
        }
        s += &format!("└{line}┘\n");
        let n = self.count_params();
        s += &format!(
            " Total params: {n} ({:.2} KB)\n Trainable params: {n}\n Non-trainable params: 0\n",
            n as f64 * 4.0 / 1024.0
        );
        Ok(s)
    }

    /// The last layer's activation.
    pub fn output_activation(&self) -> Option<Act> {
        self.layers.last().map(|l| l.output_activation())
    }
}

/// "MaxPooling2D" → "max_pooling2d", as Keras names layers.
fn snake_case(class: &str) -> String {
    let mut out = String::new();
    let chars: Vec<char> = class.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        if c.is_ascii_uppercase() {
            let prev_lower = i > 0 && chars[i - 1].is_ascii_lowercase();
            if prev_lower {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// Samples per forward pass of [`Sequential::predict`], at most. No sample's arithmetic depends on
/// which others share its pass (every kernel works per sample or per row, and the GEMM's sums run
/// in an order fixed by the shape of K alone), so a larger batch split into passes of this size
/// gives the same predictions; the passes' activations stay in cache between layers. Measured on
/// the reference CNN at batch 1000: 157 k images/s in passes of 256 against 145 k in one pass
/// (250–400 were alike; 125 and less were slower again).
pub const PREDICT_PASS: usize = 256;

/// The index of the first parameter of the layer after `below` among the model's parameters
/// (the optimizer's visiting order).
fn first_param(below: &mut [Box<dyn Layer>]) -> usize {
    let mut count = 0;
    for layer in below {
        layer.for_each_param(&mut |_| count += 1);
    }
    count
}

/// Whether the model skips layer `i`: a reshape (Flatten) whose output would be its input's data
/// unchanged, so the layers around it share that buffer instead of copying it both ways. The last
/// layer always runs (its output is the model's).
fn skipped(layers: &[Box<dyn Layer>], i: usize) -> bool {
    i + 1 < layers.len() && layers[i].passes_input_through()
}
