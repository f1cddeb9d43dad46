//! Keras-like progress output: a live bar per epoch on a terminal (`indicatif`), plain lines
//! otherwise, nothing at verbose 0.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::callbacks::EpochLogs;

pub(crate) struct Progress {
    bar: Option<ProgressBar>,
    verbose: u8,
    steps: usize,
    epoch: usize,
    epochs: usize,
}

impl Progress {
    pub fn new(verbose: u8, epoch: usize, epochs: usize, steps: usize) -> Progress {
        let live = verbose == 1 && std::io::stderr().is_terminal();
        if verbose > 0 && live {
            eprintln!("Epoch {}/{epochs}", epoch + 1);
        }
        let bar = live.then(|| {
            let bar = ProgressBar::with_draw_target(
                Some(steps as u64),
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
        Progress {
            bar,
            verbose,
            steps,
            epoch,
            epochs,
        }
    }

    /// After step `step` (1-based) with the running means so far.
    pub fn step(&mut self, step: usize, loss: f32, accuracy: f32) {
        if let Some(bar) = &self.bar {
            bar.set_position(step as u64);
            // Formatting allocates: only every 16 steps and at the end.
            if step.is_multiple_of(16) || step == self.steps {
                bar.set_message(format!("- accuracy: {accuracy:.4} - loss: {loss:.4}"));
            }
        }
    }

    pub fn finish(&mut self, logs: &EpochLogs, with_accuracy: bool) {
        if self.verbose == 0 {
            return;
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
        if with_accuracy {
            line += &format!(" - accuracy: {:.4}", logs.accuracy);
        }
        line += &format!(" - loss: {:.4}", logs.loss);
        if let (true, Some(a)) = (with_accuracy, logs.val_accuracy) {
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
