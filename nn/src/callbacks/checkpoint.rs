//! Keras's `ModelCheckpoint`.

use std::path::PathBuf;

use super::{Callback, EpochLogs, Monitor, TrainingModel};
use crate::error::Result;

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
    fn rank_zero_only(&self) -> bool {
        true
    }
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
