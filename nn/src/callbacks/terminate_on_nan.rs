//! Keras's `TerminateOnNaN`.

use super::{BatchLogs, Callback, TrainingModel};
use crate::error::Result;

/// Keras's `TerminateOnNaN()`: ends training, without an error, at the batch whose loss is NaN
/// or infinite. That batch took no step (the weights are those before it); `fit` returns the
/// `History` so far, its last epoch's loss not a number. Without this callback such a loss ends
/// `fit` with `Error::NonFiniteLoss`.
#[derive(Debug, Clone, Default)]
pub struct TerminateOnNan {
    /// The 0-based (epoch, batch) training stopped at, if it did.
    pub stopped_at: Option<(usize, usize)>,
    epoch: usize,
}

impl TerminateOnNan {
    pub fn new() -> Self {
        Self::default()
    }
}

impl Callback for TerminateOnNan {
    fn on_epoch_begin(&mut self, epoch: usize, _model: &mut dyn TrainingModel) -> Result<()> {
        self.epoch = epoch;
        Ok(())
    }

    fn on_train_batch_end(
        &mut self,
        logs: &BatchLogs,
        model: &mut dyn TrainingModel,
    ) -> Result<()> {
        if !logs.loss.is_finite() {
            self.stopped_at = Some((self.epoch, logs.batch));
            model.stop_training();
        }
        Ok(())
    }
}
