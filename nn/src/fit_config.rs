//! What `compile` and `fit` take beyond the data (the metrics, Keras's `fit` keyword arguments)
//! and what `evaluate` returns. A leaf: the trainer reads these.

use crate::tensor::Tensor;

/// A metric reported next to the loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// Keras's "accuracy", interpreted for the loss (categorical, sparse or binary).
    Accuracy,
}

/// `fit`'s arguments beyond the data: Keras's keyword arguments, with its defaults, set by name
/// (`FitConfig::new().epochs(5).batch_size(32)`), so two numbers cannot be swapped unnoticed.
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
    /// Time each pass of each layer (`History::anatomy`).
    pub anatomy: bool,
    /// Each batch runs as this many micro-batches (see [`FitConfig::micro_batches`]).
    pub micro_batches: usize,
}

impl Default for FitConfig<'_> {
    fn default() -> Self {
        FitConfig::new()
    }
}

impl<'a> FitConfig<'a> {
    /// Keras's defaults: 1 epoch, batches of 32, shuffled, verbose 1, no validation.
    pub fn new() -> Self {
        FitConfig {
            epochs: 1,
            batch_size: 32,
            validation_data: None,
            validation_split: 0.0,
            shuffle: true,
            verbose: 1,
            anatomy: false,
            micro_batches: 1,
        }
    }
    /// Passes over the training data.
    pub fn epochs(mut self, epochs: usize) -> Self {
        self.epochs = epochs;
        self
    }
    /// Records where the time goes — each layer's forward and backward pass, the loss, the
    /// optimizer, the batches' gathering, the validation — into `History::anatomy` (a clock
    /// read between the passes: no allocation per step).
    pub fn anatomy(mut self, on: bool) -> Self {
        self.anatomy = on;
        self
    }
    /// Runs each batch as `parts` micro-batches — consecutive slices, their sizes differing by
    /// at most one, as `fit_distributed` splits a batch over that many ranks — one after the
    /// other, their gradients summed in order before the one optimizer step: the same step as
    /// the whole batch at once, in a fraction of the memory for activations, and the same bits
    /// as a data-parallel run over `parts` ranks. BatchNormalization normalises each
    /// micro-batch by its own statistics and keeps the mean of the micro-batches' moving
    /// statistics, as data-parallel ranks do. Default 1.
    pub fn micro_batches(mut self, parts: usize) -> Self {
        self.micro_batches = parts;
        self
    }
    /// Samples per step (the last batch of an epoch may be shorter).
    pub fn batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size;
        self
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

/// Loss and the compiled metrics over a data set (`accuracy` is `None` unless
/// `Metric::Accuracy` was asked for at `compile`, as Keras reports only what it was given).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Evaluation {
    pub loss: f32,
    pub accuracy: Option<f32>,
}
