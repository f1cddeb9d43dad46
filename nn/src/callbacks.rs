//! Training history and callbacks: EarlyStopping and ModelCheckpoint with Keras's semantics.

use std::path::PathBuf;

use crate::error::Result;
use crate::model::Sequential;
use crate::tensor::Tensor;

/// What one epoch measured.
#[derive(Debug, Clone, PartialEq)]
pub struct EpochLogs {
    /// 0-based.
    pub epoch: usize,
    pub loss: f32,
    pub accuracy: f32,
    pub val_loss: Option<f32>,
    pub val_accuracy: Option<f32>,
    /// Wall time of the epoch (training and validation).
    pub seconds: f64,
}

impl EpochLogs {
    /// The value of `monitor` this epoch, if measured.
    pub fn get(&self, monitor: Monitor) -> Option<f32> {
        match monitor {
            Monitor::Loss => Some(self.loss),
            Monitor::Accuracy => Some(self.accuracy),
            Monitor::ValLoss => self.val_loss,
            Monitor::ValAccuracy => self.val_accuracy,
        }
    }
}

/// `fit`'s result: one entry per epoch run (Keras's `History.history`, by epoch).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct History {
    pub epochs: Vec<EpochLogs>,
}

impl History {
    pub fn loss(&self) -> Vec<f32> {
        self.epochs.iter().map(|e| e.loss).collect()
    }
    pub fn accuracy(&self) -> Vec<f32> {
        self.epochs.iter().map(|e| e.accuracy).collect()
    }
    pub fn val_loss(&self) -> Vec<Option<f32>> {
        self.epochs.iter().map(|e| e.val_loss).collect()
    }
    pub fn val_accuracy(&self) -> Vec<Option<f32>> {
        self.epochs.iter().map(|e| e.val_accuracy).collect()
    }
}

/// A quantity callbacks watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Monitor {
    Loss,
    Accuracy,
    ValLoss,
    ValAccuracy,
}

impl Monitor {
    /// Losses improve downwards, accuracies upwards (Keras's mode "auto").
    fn improved(self, value: f32, best: f32, min_delta: f32) -> bool {
        match self {
            Monitor::Loss | Monitor::ValLoss => value < best - min_delta.abs(),
            Monitor::Accuracy | Monitor::ValAccuracy => value > best + min_delta.abs(),
        }
    }
    fn worst(self) -> f32 {
        match self {
            Monitor::Loss | Monitor::ValLoss => f32::INFINITY,
            Monitor::Accuracy | Monitor::ValAccuracy => f32::NEG_INFINITY,
        }
    }
    fn name(self) -> &'static str {
        match self {
            Monitor::Loss => "loss",
            Monitor::Accuracy => "accuracy",
            Monitor::ValLoss => "val_loss",
            Monitor::ValAccuracy => "val_accuracy",
        }
    }
}

/// Hooks `fit` calls; `model.stop_training()` ends training after the current epoch.
pub trait Callback: Send {
    fn on_train_begin(&mut self, _model: &mut Sequential) -> Result<()> {
        Ok(())
    }
    fn on_epoch_end(&mut self, logs: &EpochLogs, model: &mut Sequential) -> Result<()>;
    fn on_train_end(&mut self, _model: &mut Sequential) -> Result<()> {
        Ok(())
    }
}

impl Sequential {
    /// Asks `fit` to stop after the current epoch (for callbacks).
    pub fn stop_training(&mut self) {
        self.stop_training = true;
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
    fn on_train_begin(&mut self, _model: &mut Sequential) -> Result<()> {
        // Keras takes |min_delta|; a NaN or infinite one would stop every run after `patience`.
        if !self.min_delta.is_finite() {
            return Err(crate::error::Error::InvalidArgument(format!(
                "EarlyStopping: min_delta = {} is not a finite number",
                self.min_delta
            )));
        }
        self.best = self.monitor.worst();
        self.wait = 0;
        self.best_weights = None;
        self.stopped_epoch = None;
        self.best_epoch = None;
        Ok(())
    }

    fn on_epoch_end(&mut self, logs: &EpochLogs, model: &mut Sequential) -> Result<()> {
        let Some(value) = logs.get(self.monitor) else {
            return Err(crate::error::Error::InvalidArgument(format!(
                "EarlyStopping monitors {} but fit does not measure it (give validation data)",
                self.monitor.name()
            )));
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
    fn on_epoch_end(&mut self, logs: &EpochLogs, model: &mut Sequential) -> Result<()> {
        if self.save_best_only {
            let Some(value) = logs.get(self.monitor) else {
                return Err(crate::error::Error::InvalidArgument(format!(
                    "ModelCheckpoint monitors {} but fit does not measure it",
                    self.monitor.name()
                )));
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
