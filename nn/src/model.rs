//! `Sequential`: a stack of layers with Keras's build / compile / fit / evaluate / predict. The
//! model holds the structure (layers, input shape, seed) and the weights; what `compile`
//! prepares and training runs is the trainer's (`trainer.rs`), to which the model hands its
//! layers for each call.

use std::path::Path;

use crate::activations::Act;
use crate::callbacks::Callback;
use crate::cost::TrainingCost;
use crate::distributed::Collective;
use crate::error::{Error, Result};
use crate::layers::{self, Layer};
use crate::logs::History;
use crate::loss::Loss;
use crate::optimizers::Optimizer;
use crate::tensor::Tensor;
pub use crate::trainer::{Evaluation, FitConfig, Metric, PREDICT_PASS};
use crate::trainer::{Net, Sharing, Trainer};

/// A linear stack of layers.
pub struct Sequential {
    layers: Vec<Box<dyn Layer>>,
    input_shape: Option<Vec<usize>>,
    seed: u64,
    built: bool,
    trainer: Trainer,
}

impl Default for Sequential {
    fn default() -> Self {
        Self::new()
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
            trainer: Trainer::default(),
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
        self.trainer.changed();
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

    /// Shape inference: names the layers ("dense", "dense_1", … as Keras; a name given twice is
    /// an error), creates their parameters from the seed and checks that each layer accepts the
    /// previous one's output; an error names the layer and the shapes.
    pub fn build(&mut self) -> Result<()> {
        let input = self.input_shape.clone().ok_or(Error::NotBuilt {
            missing: "it has no input shape (call input_shape(&[…]) first)",
        })?;
        if self.layers.is_empty() {
            return Err(Error::NotBuilt {
                missing: "it has no layers",
            });
        }
        layers::name_layers(&mut self.layers)?;
        layers::elements(&input, "input")?;
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(self.seed);
        let mut shape = input.clone();
        for layer in &mut self.layers {
            shape = layer.build(&shape, &mut rng)?;
        }
        self.built = true;
        let Sequential {
            layers,
            trainer,
            seed,
            ..
        } = self;
        trainer.built(&mut Net {
            layers,
            input_shape: &input,
            seed: *seed,
        });
        Ok(())
    }

    /// Builds the model if needed; then the model as the trainer takes it, and the trainer.
    fn net(&mut self) -> Result<(Net<'_>, &mut Trainer)> {
        if !self.built {
            self.build()?;
        }
        let Sequential {
            layers,
            input_shape,
            seed,
            trainer,
            ..
        } = self;
        let net = Net {
            layers,
            input_shape: input_shape.as_deref().expect("built"),
            seed: *seed,
        };
        Ok((net, trainer))
    }

    /// Keras's `compile(optimizer, loss, metrics)`: builds the model if needed and prepares
    /// training (a fresh optimizer state); hyperparameters out of their range are an error.
    pub fn compile(
        &mut self,
        optimizer: impl Into<Optimizer>,
        loss: Loss,
        metrics: &[Metric],
    ) -> Result<()> {
        let (mut net, trainer) = self.net()?;
        trainer.compile(&mut net, optimizer.into(), loss, metrics)
    }

    /// The optimizer (to read or change its learning rate between epochs).
    pub fn optimizer_mut(&mut self) -> Option<&mut Optimizer> {
        self.trainer.optimizer_mut()
    }

    pub fn loss(&self) -> Option<Loss> {
        self.trainer.loss()
    }

    /// Per-sample output shape (after `build`).
    pub fn output_shape(&self) -> Option<&[usize]> {
        self.built
            .then(|| self.layers.last().expect("built").output_shape())
    }

    /// Turns off (or back on) the optimizer steps fused into layers' backward passes
    /// (`Dense::backward_stepping`): the same bits either way on the library's own GEMM paths;
    /// for tests and measurements (cargo feature `bench-hooks`).
    #[cfg(feature = "bench-hooks")]
    pub fn set_fused_steps(&mut self, on: bool) {
        self.trainer.set_fused_steps(on);
    }

    /// Whether inference (`predict`, `evaluate`, validation) folds each BatchNormalization into
    /// the linear Conv2D or Dense before it, with the Activation after it (on by default; the
    /// same function up to rounding, one or two passes over memory fewer per fold); for tests
    /// and measurements (cargo feature `bench-hooks`).
    #[cfg(feature = "bench-hooks")]
    pub fn set_batch_norm_folding(&mut self, on: bool) {
        self.trainer.set_batch_norm_folding(on);
    }

    /// Whether a BatchNormalization runs the elementwise Activation layer after it inside its
    /// own passes (on by default; the same values, two passes over memory fewer each way);
    /// decided at `compile`, so set it before. For tests and measurements (cargo feature
    /// `bench-hooks`).
    #[cfg(feature = "bench-hooks")]
    pub fn set_norm_runs_activation(&mut self, on: bool) {
        self.trainer.set_norm_runs_activation(on);
    }

    /// The execution plan (for the plan's tests).
    #[cfg(test)]
    pub(crate) fn plan_for_tests(&self) -> &crate::plan::Plan {
        self.trainer.plan()
    }

    /// Keras's `train_on_batch`: one step on the samples `x` (`n × input`) with targets `y`,
    /// checked as `fit` checks them; returns (mean loss, accuracy). Allocates nothing once the
    /// buffers have grown to `n`.
    pub fn train_on_batch(&mut self, x: &[f32], y: &[f32], n: usize) -> Result<(f32, f32)> {
        if !self.built {
            return Err(self.trainer.not_compiled("train_on_batch"));
        }
        let (mut net, trainer) = self.net()?;
        trainer.train_on_batch(&mut net, x, y, n)
    }

    /// Keras's `fit`: trains for `cfg.epochs` epochs and returns the per-epoch history.
    /// Callbacks get Keras's hooks (train, epoch and batch, begin and end) and may stop
    /// training.
    pub fn fit(
        &mut self,
        x: &Tensor,
        y: &Tensor,
        cfg: &FitConfig<'_>,
        callbacks: &mut [&mut dyn Callback],
    ) -> Result<History> {
        if !self.built {
            return Err(self.trainer.not_compiled("fit"));
        }
        let (mut net, trainer) = self.net()?;
        let sharing = match cfg.micro_batches {
            1 => Sharing::Alone,
            parts => Sharing::MicroBatches(parts),
        };
        trainer.fit(&mut net, x, y, cfg, callbacks, sharing)
    }

    /// Data-parallel `fit` on one rank of a job (see [`crate::distributed`]); every rank calls
    /// it with the same model, settings and data. `batch_size` is the *global* batch, as in
    /// Keras's distribution strategies: each step, every rank draws the same shuffled batch
    /// (same seed) and trains on its contiguous slice of it, the loss scaled by 1 ÷ the global
    /// batch, and the ranks' gradients are summed — in buckets that leave as soon as the
    /// backward pass has filled them — before the one optimizer step, so that every rank keeps
    /// the same weights, bit for bit. Before the first step, the ranks compare their models,
    /// settings and data (a mismatch is an error on every rank) and take rank 0's weights.
    ///
    /// The logs (loss, accuracy, validation) are sums over all ranks, the same everywhere;
    /// only rank 0 prints (`verbose`) and runs the callbacks that write files
    /// ([`Callback::rank_zero_only`]); a stop asked for on any rank stops every rank.
    /// Every rank returns the same `History` (but for the seconds). An error on one rank
    /// leaves the others waiting in a collective and the communicator with sums in flight: end
    /// the job (`nn_mpi::run` does) rather than train on with it.
    pub fn fit_distributed(
        &mut self,
        x: &Tensor,
        y: &Tensor,
        cfg: &FitConfig<'_>,
        comm: &mut dyn Collective,
        callbacks: &mut [&mut dyn Callback],
    ) -> Result<History> {
        if !self.built {
            return Err(self.trainer.not_compiled("fit"));
        }
        let (mut net, trainer) = self.net()?;
        trainer.fit(&mut net, x, y, cfg, callbacks, Sharing::Ranks(comm))
    }

    /// Keras's `evaluate`: mean loss and accuracy over `x`, `y`.
    pub fn evaluate(&mut self, x: &Tensor, y: &Tensor, batch_size: usize) -> Result<Evaluation> {
        if !self.built {
            return Err(self.trainer.not_compiled("evaluate"));
        }
        let (mut net, trainer) = self.net()?;
        trainer.evaluate(&mut net, x, y, batch_size)
    }

    /// Keras's `predict`: the model's outputs for every sample of `x`, `batch_size` samples at a
    /// time — in forward passes of at most [`PREDICT_PASS`] samples, which give the same bits.
    pub fn predict(&mut self, x: &Tensor, batch_size: usize) -> Result<Tensor> {
        let (mut net, trainer) = self.net()?;
        trainer.predict(&mut net, x, batch_size)
    }

    /// Every trainable tensor, in order (layer by layer, kernel then bias), with its name
    /// ("dense/kernel") and shape.
    pub fn get_weights(&mut self) -> Vec<(String, Tensor)> {
        layers::get_weights(&mut self.layers)
    }

    /// Replaces every trainable tensor; names, count and shapes must match `get_weights`, and
    /// every value must be finite. All are checked before any is written: a call that fails
    /// changes nothing.
    pub fn set_weights(&mut self, weights: &[(String, Tensor)]) -> Result<()> {
        layers::set_weights(&mut self.layers, weights)
    }

    /// Saves the weights only (Keras's `save_weights`), as safetensors.
    pub fn save_weights(&mut self, path: impl AsRef<Path>) -> Result<()> {
        let (net, _) = self.net()?;
        crate::io::write_weights(path.as_ref(), net.layers)
    }

    /// Loads weights saved by `save_weights` or `save` into this model (built if needed); every
    /// tensor's name and shape must match.
    pub fn load_weights(&mut self, path: impl AsRef<Path>) -> Result<()> {
        let (net, _) = self.net()?;
        let weights = crate::io::read_weights(path.as_ref(), net.layers)?;
        self.set_weights(&weights)
    }

    /// Saves the model: architecture and weights in one safetensors file, with a checksum,
    /// written atomically.
    pub fn save(&mut self, path: impl AsRef<Path>) -> Result<()> {
        let (net, _) = self.net()?;
        crate::io::write_model(path.as_ref(), net.input_shape, net.seed, net.layers)
    }

    /// Loads a model saved by [`Sequential::save`]: the same layers and weights, so it predicts
    /// identically. Compile it again to train it. The file is checked before anything is
    /// allocated (see the README: what loading an untrusted file guarantees).
    pub fn load(path: impl AsRef<Path>) -> Result<Sequential> {
        let file = crate::io::read_model(path.as_ref())?;
        let mut model = Sequential::new()
            .input_shape(&file.input_shape)
            .seed(file.seed);
        for layer in file.layers {
            model.push(layer);
        }
        model.build()?;
        model.set_weights(&file.weights)?;
        Ok(model)
    }

    /// The work training this model must do at the least, counted from its layers and its
    /// optimizer's rule ([`TrainingCost`]: a roofline's numerator). Needs `compile`.
    pub fn training_cost(&mut self) -> Result<TrainingCost> {
        if !self.built || self.trainer.optimizer_mut().is_none() {
            return Err(self.trainer.not_compiled("training_cost"));
        }
        let (net, trainer) = self.net()?;
        let optimizer = trainer.optimizer_mut().expect("compiled: checked above");
        Ok(crate::cost::training_cost(
            net.layers,
            net.input_shape,
            optimizer,
        ))
    }

    /// Parameters in all layers, trainable or not (Keras's `count_params`).
    pub fn count_params(&self) -> usize {
        self.layers.iter().map(|l| l.param_count()).sum()
    }

    /// Parameters the optimizer does not step (BatchNormalization's moving statistics).
    fn non_trainable_params(&mut self) -> usize {
        let mut n = 0;
        for l in &mut self.layers {
            l.for_each_param(&mut |p| {
                if !p.trainable {
                    n += p.value.len();
                }
            });
        }
        n
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
        let frozen = self.non_trainable_params();
        s += &format!(
            " Total params: {n} ({:.2} KB)\n Trainable params: {}\n Non-trainable params: \
             {frozen}\n",
            n as f64 * 4.0 / 1024.0,
            n - frozen
        );
        Ok(s)
    }

    /// The last layer's activation.
    pub fn output_activation(&self) -> Option<Act> {
        self.layers.last().map(|l| l.output_activation())
    }
}
