//! What training measures: per batch, per epoch, and the whole run's `History`; and the
//! quantities callbacks watch. A leaf: the trainer writes these, callbacks and the progress bar
//! read them.

/// What one epoch measured.
#[derive(Debug, Clone, PartialEq)]
pub struct EpochLogs {
    /// 0-based.
    pub epoch: usize,
    pub loss: f32,
    /// `None` unless `Metric::Accuracy` was compiled in.
    pub accuracy: Option<f32>,
    /// `None` without validation data.
    pub val_loss: Option<f32>,
    /// `None` without validation data or without `Metric::Accuracy`.
    pub val_accuracy: Option<f32>,
    /// The optimizer's learning rate at the epoch's end (what the next step would use; Keras
    /// logs it when a learning-rate callback runs).
    pub learning_rate: f32,
    /// Wall time of the epoch (training and validation).
    pub seconds: f64,
}

impl EpochLogs {
    /// The quantities after `epoch` in Keras's CSV order (its logs' keys sorted), each with its
    /// value this epoch, `None` where fit does not measure it.
    fn keras_columns(&self) -> [(&'static str, Option<f32>); 5] {
        [
            ("accuracy", self.accuracy),
            ("learning_rate", Some(self.learning_rate)),
            ("loss", Some(self.loss)),
            ("val_accuracy", self.val_accuracy),
            ("val_loss", self.val_loss),
        ]
    }

    /// The CSV columns after `epoch` of a fit whose epochs log as this one (the measured
    /// quantities, in Keras's order): the header of `CsvLogger` and `History::to_csv`.
    pub(crate) fn csv_columns(&self) -> Vec<&'static str> {
        self.keras_columns()
            .iter()
            .filter(|(_, v)| v.is_some())
            .map(|(name, _)| *name)
            .collect()
    }

    /// The CSV header line: `epoch`, then `columns`.
    pub(crate) fn write_csv_header(columns: &[&str], separator: char, out: &mut String) {
        out.push_str("epoch");
        for name in columns {
            out.push(separator);
            out.push_str(name);
        }
        out.push('\n');
    }

    /// This epoch's CSV row under `columns` (a value not measured: `NA`, as Keras writes it),
    /// with its line end.
    pub(crate) fn write_csv_row(&self, columns: &[&str], separator: char, out: &mut String) {
        let values = self.keras_columns();
        out.push_str(&self.epoch.to_string());
        for name in columns {
            out.push(separator);
            match values.iter().find(|(n, _)| n == name).and_then(|(_, v)| *v) {
                Some(v) => out.push_str(&v.to_string()),
                None => out.push_str("NA"),
            }
        }
        out.push('\n');
    }

    /// The value of `monitor` this epoch, if measured.
    pub fn get(&self, monitor: Monitor) -> Option<f32> {
        match monitor {
            Monitor::Loss => Some(self.loss),
            Monitor::Accuracy => self.accuracy,
            Monitor::ValLoss => self.val_loss,
            Monitor::ValAccuracy => self.val_accuracy,
        }
    }
}

/// What one training step measured (for the batch hooks), as running means over the epoch so
/// far, as Keras's batch logs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchLogs {
    /// 0-based, within the epoch.
    pub batch: usize,
    /// Samples in this batch.
    pub size: usize,
    /// The mean loss over the epoch's batches so far.
    pub loss: f32,
    /// The accuracy over the epoch's batches so far (`None` unless `Metric::Accuracy` was
    /// compiled in).
    pub accuracy: Option<f32>,
}

/// `fit`'s result: one entry per epoch run (Keras's `History.history`, by epoch).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct History {
    pub epochs: Vec<EpochLogs>,
    /// Where the time went, part by part, when `FitConfig::anatomy` asked.
    pub anatomy: Option<crate::anatomy::Anatomy>,
}

impl History {
    /// The learning rate at each epoch's end.
    pub fn learning_rate(&self) -> Vec<f32> {
        self.epochs.iter().map(|e| e.learning_rate).collect()
    }
    /// The training loss per epoch.
    pub fn loss(&self) -> Vec<f32> {
        self.epochs.iter().map(|e| e.loss).collect()
    }
    /// The training accuracy per epoch, if it was measured (`Metric::Accuracy`).
    pub fn accuracy(&self) -> Option<Vec<f32>> {
        self.epochs.iter().map(|e| e.accuracy).collect()
    }
    /// The validation loss per epoch, if there was validation data.
    pub fn val_loss(&self) -> Option<Vec<f32>> {
        self.epochs.iter().map(|e| e.val_loss).collect()
    }
    /// The validation accuracy per epoch, if measured.
    pub fn val_accuracy(&self) -> Option<Vec<f32>> {
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
    pub(crate) fn improved(self, value: f32, best: f32, min_delta: f32) -> bool {
        match self {
            Monitor::Loss | Monitor::ValLoss => value < best - min_delta.abs(),
            Monitor::Accuracy | Monitor::ValAccuracy => value > best + min_delta.abs(),
        }
    }
    pub(crate) fn worst(self) -> f32 {
        match self {
            Monitor::Loss | Monitor::ValLoss => f32::INFINITY,
            Monitor::Accuracy | Monitor::ValAccuracy => f32::NEG_INFINITY,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Monitor::Loss => "loss",
            Monitor::Accuracy => "accuracy",
            Monitor::ValLoss => "val_loss",
            Monitor::ValAccuracy => "val_accuracy",
        }
    }
}
