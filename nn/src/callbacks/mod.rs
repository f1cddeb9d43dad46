//! Callbacks with Keras's hooks — train, epoch and batch, begin and end, with their logs — and
//! Keras's built-in ones with its semantics and defaults: `EarlyStopping`, `ModelCheckpoint`,
//! `LearningRateScheduler`, `ReduceLROnPlateau`, `CSVLogger`, `TerminateOnNaN`. A callback sees the model
//! through [`TrainingModel`], a narrow handle (weights, saving, learning rate, the stop flag),
//! so this room knows nothing of the model's or the trainer's insides.

use std::path::Path;

use crate::error::Result;
pub use crate::logs::{BatchLogs, EpochLogs, History, Monitor};
use crate::tensor::Tensor;

mod checkpoint;
mod csv_logger;
mod early_stopping;
mod learning_rate;
mod terminate_on_nan;

pub use checkpoint::ModelCheckpoint;
pub use csv_logger::CsvLogger;
pub use early_stopping::EarlyStopping;
pub use learning_rate::{LearningRateScheduler, ReduceLrOnPlateau};
pub use terminate_on_nan::TerminateOnNan;

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
    /// In data-parallel training, whether only rank 0 runs this callback (those that write
    /// files or print: ModelCheckpoint, CsvLogger); the others run on every rank, where they
    /// see the same logs and so decide alike.
    fn rank_zero_only(&self) -> bool {
        false
    }
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
