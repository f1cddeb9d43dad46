//! Keras's `ProgbarLogger`, a callback `fit` adds when `verbose` > 0: a live bar per epoch on a
//! terminal (`indicatif`), plain lines otherwise.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::callbacks::{Callback, TrainingModel};
use crate::error::Result;
use crate::logs::{BatchLogs, EpochLogs};

pub(crate) struct ProgbarLogger {
    bar: Option<ProgressBar>,
    verbose: u8,
    steps: usize,
    epoch: usize,
    epochs: usize,
}

impl ProgbarLogger {
    /// For `epochs` epochs of `steps` steps; `verbose` 1 (a bar) or 2 (a line per epoch).
    /// Prints the metrics the logs carry (accuracy only when it was compiled in).
    pub fn new(verbose: u8, epochs: usize, steps: usize) -> ProgbarLogger {
        ProgbarLogger {
            bar: None,
            verbose,
            steps,
            epoch: 0,
            epochs,
        }
    }
}

impl Callback for ProgbarLogger {
    fn on_epoch_begin(&mut self, epoch: usize, _model: &mut dyn TrainingModel) -> Result<()> {
        self.epoch = epoch;
        let live = self.verbose == 1 && std::io::stderr().is_terminal();
        if live {
            eprintln!("Epoch {}/{}", epoch + 1, self.epochs);
        }
        self.bar = live.then(|| {
            let bar = ProgressBar::with_draw_target(
                Some(self.steps as u64),
                ProgressDrawTarget::stderr_with_hz(10),
            );
            bar.set_style(
                ProgressStyle::with_template(
                    "{pos:>5}/{len:5} {bar:20.cyan/blue} {elapsed} (ETA {eta}) {msg}",
                )
                .expect("valid template")
                .progress_chars("━━─"),
            );
            bar
        });
        Ok(())
    }

    fn on_train_batch_end(
        &mut self,
        logs: &BatchLogs,
        _model: &mut dyn TrainingModel,
    ) -> Result<()> {
        if let Some(bar) = &self.bar {
            let step = logs.batch + 1;
            bar.set_position(step as u64);
            // Formatting allocates: only every 16 steps and at the end.
            if step.is_multiple_of(16) || step == self.steps {
                bar.set_message(match logs.accuracy {
                    Some(a) => format!("- accuracy: {a:.4} - loss: {:.4}", logs.loss),
                    None => format!("- loss: {:.4}", logs.loss),
                });
            }
        }
        Ok(())
    }

    fn on_epoch_end(&mut self, logs: &EpochLogs, _model: &mut dyn TrainingModel) -> Result<()> {
        if self.verbose == 0 {
            return Ok(());
        }
        let mut line = String::new();
        if self.bar.is_none() {
            line += &format!("Epoch {}/{} - ", self.epoch + 1, self.epochs);
        }
        line += &format!(
            "{}/{} - {:.1}s {}",
            self.steps,
            self.steps,
            logs.seconds,
            per_step(logs.seconds / self.steps.max(1) as f64)
        );
        if let Some(a) = logs.accuracy {
            line += &format!(" - accuracy: {a:.4}");
        }
        line += &format!(" - loss: {:.4}", logs.loss);
        if let Some(a) = logs.val_accuracy {
            line += &format!(" - val_accuracy: {a:.4}");
        }
        if let Some(l) = logs.val_loss {
            line += &format!(" - val_loss: {l:.4}");
        }
        match self.bar.take() {
            Some(bar) => {
                bar.finish_and_clear();
                eprintln!("{line}");
            }
            None => eprintln!("{line}"),
        }
        Ok(())
    }
}

/// A step's duration as Keras's progress bar shows it: whole seconds from 1 s (and for 0),
/// else whole milliseconds from 1 ms, else whole microseconds ("315us/step" rather than
/// "0ms/step" for the small models' steps).
fn per_step(seconds: f64) -> String {
    if seconds >= 1.0 || seconds == 0.0 {
        format!("{seconds:.0}s/step")
    } else if seconds >= 1e-3 {
        format!("{:.0}ms/step", seconds * 1e3)
    } else {
        format!("{:.0}us/step", seconds * 1e6)
    }
}

#[cfg(test)]
mod tests {
    use super::per_step;

    #[test]
    fn step_times_take_keras_units() {
        assert_eq!(per_step(0.0), "0s/step");
        assert_eq!(per_step(2.4), "2s/step");
        assert_eq!(per_step(1.0), "1s/step");
        assert_eq!(per_step(0.0123), "12ms/step");
        assert_eq!(per_step(0.001), "1ms/step");
        assert_eq!(per_step(0.000315), "315us/step");
    }
}
