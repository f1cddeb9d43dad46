//! Keras's learning-rate callbacks: `LearningRateScheduler` and `ReduceLROnPlateau`.

use super::{Callback, EpochLogs, Monitor, TrainingModel};
use crate::error::{Error, Result};

/// Keras's `LearningRateScheduler(schedule, verbose=0)`: at the start of each epoch sets the
/// learning rate to `schedule(epoch, current_rate)` (`epoch` 0-based). A rate that is not a
/// finite number ≥ 0 ends `fit` with an error naming the epoch.
pub struct LearningRateScheduler {
    schedule: Box<dyn FnMut(usize, f32) -> f32 + Send>,
    verbose: bool,
}

impl LearningRateScheduler {
    pub fn new(schedule: impl FnMut(usize, f32) -> f32 + Send + 'static) -> Self {
        LearningRateScheduler {
            schedule: Box::new(schedule),
            verbose: false,
        }
    }
    /// Prints each epoch's new rate (Keras's `verbose=1`).
    pub fn verbose(mut self, on: bool) -> Self {
        self.verbose = on;
        self
    }
}

impl Callback for LearningRateScheduler {
    fn on_epoch_begin(&mut self, epoch: usize, model: &mut dyn TrainingModel) -> Result<()> {
        let lr = (self.schedule)(epoch, model.learning_rate());
        if !(lr.is_finite() && lr >= 0.0) {
            return Err(Error::Misuse {
                call: format!("LearningRateScheduler at epoch {}", epoch + 1),
                reason: format!("returned {lr}, not a learning rate (a finite number ≥ 0)"),
            });
        }
        model.set_learning_rate(lr);
        if self.verbose {
            eprintln!(
                "Epoch {}: LearningRateScheduler setting learning rate to {lr}.",
                epoch + 1
            );
        }
        Ok(())
    }
}

/// Keras's `ReduceLROnPlateau(monitor="val_loss", factor=0.1, patience=10, verbose=0,
/// min_delta=1e-4, cooldown=0, min_lr=0.0)`: when the monitored value has not improved by
/// more than `min_delta` for `patience` epochs, multiplies the learning rate by `factor` (never
/// below `min_lr`), then waits `cooldown` epochs before counting again.
#[derive(Debug, Clone)]
pub struct ReduceLrOnPlateau {
    pub monitor: Monitor,
    pub factor: f32,
    pub patience: usize,
    pub min_delta: f32,
    pub cooldown: usize,
    pub min_lr: f32,
    pub verbose: bool,
    best: f32,
    wait: usize,
    cooldown_counter: usize,
    /// The epochs (0-based) at whose end the rate was reduced.
    pub reduced_at: Vec<usize>,
}

impl Default for ReduceLrOnPlateau {
    fn default() -> Self {
        ReduceLrOnPlateau {
            monitor: Monitor::ValLoss,
            factor: 0.1,
            patience: 10,
            min_delta: 1e-4,
            cooldown: 0,
            min_lr: 0.0,
            verbose: false,
            best: Monitor::ValLoss.worst(),
            wait: 0,
            cooldown_counter: 0,
            reduced_at: vec![],
        }
    }
}

impl ReduceLrOnPlateau {
    /// Keras's defaults (monitor val_loss, factor 0.1, patience 10, min_delta 1e-4).
    pub fn new() -> Self {
        Self::default()
    }
    pub fn monitor(mut self, monitor: Monitor) -> Self {
        self.monitor = monitor;
        self
    }
    pub fn factor(mut self, factor: f32) -> Self {
        self.factor = factor;
        self
    }
    pub fn patience(mut self, patience: usize) -> Self {
        self.patience = patience;
        self
    }
    pub fn min_delta(mut self, min_delta: f32) -> Self {
        self.min_delta = min_delta;
        self
    }
    pub fn cooldown(mut self, cooldown: usize) -> Self {
        self.cooldown = cooldown;
        self
    }
    pub fn min_lr(mut self, min_lr: f32) -> Self {
        self.min_lr = min_lr;
        self
    }
    pub fn verbose(mut self, on: bool) -> Self {
        self.verbose = on;
        self
    }
}

impl Callback for ReduceLrOnPlateau {
    fn on_train_begin(&mut self, _model: &mut dyn TrainingModel) -> Result<()> {
        let setting = |name, value: f32, allowed: &str| {
            Err(Error::Setting {
                owner: "ReduceLROnPlateau",
                name,
                value: value.to_string(),
                allowed: allowed.into(),
            })
        };
        // Keras refuses factor ≥ 1 (the rate would never fall).
        if !(self.factor >= 0.0 && self.factor < 1.0) {
            return setting("factor", self.factor, "in [0, 1)");
        }
        if !self.min_delta.is_finite() {
            return setting("min_delta", self.min_delta, "a finite number");
        }
        if !(self.min_lr.is_finite() && self.min_lr >= 0.0) {
            return setting("min_lr", self.min_lr, "in [0, ∞)");
        }
        self.best = self.monitor.worst();
        self.wait = 0;
        self.cooldown_counter = 0;
        Ok(())
    }

    fn on_epoch_end(&mut self, logs: &EpochLogs, model: &mut dyn TrainingModel) -> Result<()> {
        let Some(current) = logs.get(self.monitor) else {
            return Err(Error::Misuse {
                call: format!("ReduceLROnPlateau monitors {}", self.monitor.name()),
                reason: "but fit does not measure it (give validation data)".into(),
            });
        };
        if self.cooldown_counter > 0 {
            self.cooldown_counter -= 1;
            self.wait = 0;
        }
        if self.monitor.improved(current, self.best, self.min_delta) {
            self.best = current;
            self.wait = 0;
        } else if self.cooldown_counter == 0 {
            self.wait += 1;
            if self.wait >= self.patience {
                let old = model.learning_rate();
                if old > self.min_lr {
                    let new = (old * self.factor).max(self.min_lr);
                    model.set_learning_rate(new);
                    self.reduced_at.push(logs.epoch);
                    if self.verbose {
                        eprintln!(
                            "Epoch {}: ReduceLROnPlateau reducing learning rate to {new}.",
                            logs.epoch + 1
                        );
                    }
                    self.cooldown_counter = self.cooldown;
                    self.wait = 0;
                }
            }
        }
        Ok(())
    }
}
