//! Keras's `EarlyStopping`.

use super::{Callback, EpochLogs, Monitor, TrainingModel};
use crate::error::Result;
use crate::tensor::Tensor;

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
