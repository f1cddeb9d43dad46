//! Callbacks with Keras's hooks — train, epoch and batch, begin and end, with their logs — and
//! `EarlyStopping` and `ModelCheckpoint` with Keras's semantics. A callback sees the model
//! through [`TrainingModel`], a narrow handle (weights, saving, learning rate, the stop flag),
//! so this room knows nothing of the model's or the trainer's insides.

use std::path::{Path, PathBuf};

use crate::error::Result;
pub use crate::logs::{BatchLogs, EpochLogs, History, Monitor};
use crate::tensor::Tensor;

/// What a callback may do to the model being trained.
pub trait TrainingModel {
    /// Every trainable tensor with its name ("dense/kernel"), as `Sequential::get_weights`.
    fn get_weights(&mut self) -> Vec<(String, Tensor)>;
    /// Replaces every trainable tensor, as `Sequential::set_weights` (all or nothing).
    fn set_weights(&mut self, weights: &[(String, Tensor)]) -> Result<()>;
    /// Saves the model (architecture and weights, atomically), as `Sequential::save`.
    fn save(&mut self, path: &Path) -> Result<()>;
    /// The optimizer's learning rate.
    fn learning_rate(&self) -> f32;
    /// Sets the optimizer's learning rate from the next step on (checked at that step).
    fn set_learning_rate(&mut self, lr: f32);
    /// Ends training after the current epoch (Keras's `model.stop_training = True`).
    fn stop_training(&mut self);
}

/// Hooks `fit` calls, in Keras's order: `on_train_begin`; per epoch `on_epoch_begin`, per batch
/// `on_train_batch_begin` and `on_train_batch_end`, then (after validation) `on_epoch_end`;
/// `on_train_end`. An error from any hook ends `fit` with that error. The batch hooks run
/// inside the training loop: they should not allocate (the built-in ones do not).
pub trait Callback: Send {
    fn on_train_begin(&mut self, _model: &mut dyn TrainingModel) -> Result<()> {
        Ok(())
    }
    fn on_train_end(&mut self, _model: &mut dyn TrainingModel) -> Result<()> {
        Ok(())
    }
    /// `epoch` is 0-based.
    fn on_epoch_begin(&mut self, _epoch: usize, _model: &mut dyn TrainingModel) -> Result<()> {
        Ok(())
    }
    fn on_epoch_end(&mut self, _logs: &EpochLogs, _model: &mut dyn TrainingModel) -> Result<()> {
        Ok(())
    }
    /// `batch` is 0-based, within the epoch.
    fn on_train_batch_begin(
        &mut self,
        _batch: usize,
        _model: &mut dyn TrainingModel,
    ) -> Result<()> {
        Ok(())
    }
    fn on_train_batch_end(
        &mut self,
        _logs: &BatchLogs,
        _model: &mut dyn TrainingModel,
    ) -> Result<()> {
        Ok(())
    }
}

/// Keras's `EarlyStopping(monitor, min_delta, patience, restore_best_weights)`: stops when the
/// monitored value has not improved by more than `min_delta` for `patience` epochs; optionally
/// puts back the weights of the best epoch.
#[derive(Debug, Clone)]
pub struct EarlyStopping {
    pub monitor: Monitor,
    pub min_delta: f32,
    pub patience: usize,
    pub restore_best_weights: bool,
    best: f32,
    wait: usize,
    best_weights: Option<Vec<(String, Tensor)>>,
    /// The epoch (0-based) training stopped at, if it did.
    pub stopped_epoch: Option<usize>,
    /// The best epoch (0-based).
    pub best_epoch: Option<usize>,
}

impl EarlyStopping {
    pub fn new(monitor: Monitor, patience: usize) -> Self {
        EarlyStopping {
            monitor,
            min_delta: 0.0,
            patience,
            restore_best_weights: false,
            best: monitor.worst(),
            wait: 0,
            best_weights: None,
            stopped_epoch: None,
            best_epoch: None,
        }
    }
    pub fn restore_best_weights(mut self, on: bool) -> Self {
        self.restore_best_weights = on;
        self
    }
    pub fn min_delta(mut self, d: f32) -> Self {
        self.min_delta = d;
        self
    }
}

impl Callback for EarlyStopping {
    fn on_train_begin(&mut self, _model: &mut dyn TrainingModel) -> Result<()> {
        // Keras takes |min_delta|; a NaN or infinite one would stop every run after `patience`.
        if !self.min_delta.is_finite() {
            return Err(crate::error::Error::Setting {
                owner: "EarlyStopping",
                name: "min_delta",
                value: self.min_delta.to_string(),
                allowed: "a finite number".into(),
            });
        }
        self.best = self.monitor.worst();
        self.wait = 0;
        self.best_weights = None;
        self.stopped_epoch = None;
        self.best_epoch = None;
        Ok(())
    }

    fn on_epoch_end(&mut self, logs: &EpochLogs, model: &mut dyn TrainingModel) -> Result<()> {
        let Some(value) = logs.get(self.monitor) else {
            return Err(crate::error::Error::Misuse {
                call: format!("EarlyStopping monitors {}", self.monitor.name()),
                reason: "but fit does not measure it (give validation data)".into(),
            });
        };
        if self.monitor.improved(value, self.best, self.min_delta) {
            self.best = value;
            self.wait = 0;
            self.best_epoch = Some(logs.epoch);
            if self.restore_best_weights {
                self.best_weights = Some(model.get_weights());
            }
            return Ok(());
        }
        self.wait += 1;
        if self.wait >= self.patience {
            self.stopped_epoch = Some(logs.epoch);
            model.stop_training();
            if let Some(w) = &self.best_weights {
                model.set_weights(w)?;
            }
        }
        Ok(())
    }
}

/// Keras's `ModelCheckpoint(filepath, monitor, save_best_only)`: saves the model (architecture
/// and weights, atomically) after each epoch, or only when the monitored value improved.
#[derive(Debug, Clone)]
pub struct ModelCheckpoint {
    pub path: PathBuf,
    pub monitor: Monitor,
    pub save_best_only: bool,
    best: f32,
    /// Epochs (0-based) at which the file was written.
    pub saved_epochs: Vec<usize>,
}

impl ModelCheckpoint {
    pub fn new(path: impl Into<PathBuf>, monitor: Monitor, save_best_only: bool) -> Self {
        ModelCheckpoint {
            path: path.into(),
            monitor,
            save_best_only,
            best: monitor.worst(),
            saved_epochs: vec![],
        }
    }
}

impl Callback for ModelCheckpoint {
    fn on_epoch_end(&mut self, logs: &EpochLogs, model: &mut dyn TrainingModel) -> Result<()> {
        if self.save_best_only {
            let Some(value) = logs.get(self.monitor) else {
                return Err(crate::error::Error::Misuse {
                    call: format!("ModelCheckpoint monitors {}", self.monitor.name()),
                    reason: "but fit does not measure it (give validation data)".into(),
                });
            };
            if !self.monitor.improved(value, self.best, 0.0) {
                return Ok(());
            }
            self.best = value;
        }
        model.save(&self.path)?;
        self.saved_epochs.push(logs.epoch);
        Ok(())
    }
}
