//! The one error type of `nn`. Every variant says which layer, file or argument is at fault and
//! the numbers that do not fit.

use std::path::PathBuf;

/// Everything an `nn` call can reject. `Debug` prints the message too (as `Display`), so a
/// `main() -> Result<…>` that returns the error shows a sentence (with its cause), not a struct.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A kernel rejected its arguments while running `layer`.
    #[error("layer {layer}: {source}")]
    Kernel {
        layer: String,
        #[source]
        source: kernels::Error,
    },
    /// Shapes that do not fit together (model building, data against the model).
    #[error("{0}")]
    Shape(String),
    /// An argument out of its range.
    #[error("{0}")]
    InvalidArgument(String),
    /// The model is used before `compile` (or `build`).
    #[error("{0}")]
    NotReady(String),
    /// Memory the system refused for a model's parameters or buffers.
    #[error("not enough memory: {0}")]
    Memory(String),
    /// The loss became NaN or infinite during training.
    #[error("the loss became {loss} at epoch {epoch}, step {step}: training stopped (try a lower learning rate)")]
    NonFiniteLoss {
        epoch: usize,
        step: usize,
        loss: f32,
    },
    /// A data or model file is missing, truncated, corrupt or does not match.
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
    /// An I/O error on a file.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl std::fmt::Debug for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// `Result` with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn kernel(layer: &str) -> impl FnOnce(kernels::Error) -> Error + '_ {
        move |source| Error::Kernel {
            layer: layer.to_string(),
            source,
        }
    }
    pub(crate) fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
        move |source| Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }
    pub(crate) fn file(path: &std::path::Path, reason: impl Into<String>) -> Error {
        Error::File {
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }
}
