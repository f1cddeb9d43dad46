//! Keras's `CSVLogger`.

use std::path::PathBuf;

use super::{Callback, EpochLogs, TrainingModel};
use crate::error::{Error, Result};

/// Keras's `CSVLogger(filename, separator=",", append=False)`: one row per epoch — `epoch`, then
/// the measured quantities in Keras's (alphabetical) order: `accuracy`, `learning_rate`, `loss`,
/// `val_accuracy`, `val_loss` (a quantity fit does not measure has no column). The file is
/// rewritten atomically after each epoch, so a reader (or a crash) never sees half a row; with
/// `append`, the rows go after what the file held when training began (no second header).
#[derive(Debug, Clone)]
pub struct CsvLogger {
    pub path: PathBuf,
    pub separator: char,
    pub append: bool,
    /// What the file held before this run (with `append`), then the header and rows so far.
    text: String,
    columns: Vec<&'static str>,
}

impl CsvLogger {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        CsvLogger {
            path: path.into(),
            separator: ',',
            append: false,
            text: String::new(),
            columns: vec![],
        }
    }
    pub fn separator(mut self, separator: char) -> Self {
        self.separator = separator;
        self
    }
    pub fn append(mut self, on: bool) -> Self {
        self.append = on;
        self
    }
}

impl Callback for CsvLogger {
    fn rank_zero_only(&self) -> bool {
        true
    }
    fn on_train_begin(&mut self, _model: &mut dyn TrainingModel) -> Result<()> {
        if self.separator == '\n' || self.separator == '\r' || self.separator == '"' {
            return Err(Error::Setting {
                owner: "CSVLogger",
                name: "separator",
                value: format!("{:?}", self.separator),
                allowed: "a character other than a line break or a quote".into(),
            });
        }
        self.text.clear();
        self.columns.clear();
        if self.append && self.path.exists() {
            let bytes = crate::files::read_regular(&self.path)?;
            self.text = String::from_utf8(bytes).map_err(|_| {
                Error::file(&self.path, "not a text file: cannot append rows to it")
            })?;
            if !self.text.is_empty() && !self.text.ends_with('\n') {
                self.text.push('\n');
            }
        }
        Ok(())
    }

    fn on_epoch_end(&mut self, logs: &EpochLogs, _model: &mut dyn TrainingModel) -> Result<()> {
        let sep = self.separator;
        if self.columns.is_empty() {
            self.columns = logs.csv_columns();
            if self.text.is_empty() {
                EpochLogs::write_csv_header(&self.columns, sep, &mut self.text);
            }
        }
        logs.write_csv_row(&self.columns, sep, &mut self.text);
        crate::files::write_atomically(&self.path, self.text.as_bytes())
    }
}
