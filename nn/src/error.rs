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
    // Building the model.
    /// The model cannot be built yet (`missing`: no input shape, no layers).
    #[error("the model cannot be built: {missing}")]
    NotBuilt { missing: &'static str },
    /// A layer cannot take the shape of its input.
    #[error("layer {layer} ({class}) expects {expected}, but its input has shape {input:?}{hint}")]
    LayerInput {
        layer: String,
        class: &'static str,
        expected: &'static str,
        input: Vec<usize>,
        /// What to do about it, or empty.
        hint: &'static str,
    },
    /// A layer's setting that cannot work.
    #[error("layer {layer} ({class}): {setting} = {value}: {reason}")]
    LayerSetting {
        layer: String,
        class: &'static str,
        setting: &'static str,
        value: String,
        reason: String,
    },
    /// Two layers with one name (weights are saved and loaded by name).
    #[error(
        "layer {index} ({class}) is named {name:?}, as an earlier layer is: layer names must be \
         unique"
    )]
    DuplicateLayerName {
        index: usize,
        class: &'static str,
        name: String,
    },
    /// A shape whose element count overflows: more than memory can hold.
    #[error("{what} of shape {shape:?} has more elements than memory can hold")]
    TooLarge { what: String, shape: Vec<usize> },
    /// Memory the system refused for a model's parameters, buffers or a file's contents.
    #[error("not enough memory: {what} needs {bytes} bytes")]
    Memory { what: String, bytes: u64 },

    // Tensors.
    /// Data whose length does not match the shape given for it.
    #[error("a tensor of shape {shape:?} needs {needed} elements, but {given} {unit} were given")]
    TensorLength {
        shape: Vec<usize>,
        needed: usize,
        given: usize,
        /// "elements" or "bytes".
        unit: &'static str,
    },
    /// A reshape to a shape with another element count.
    #[error("cannot reshape {from:?} ({elements} elements) to {to:?} ({needed})")]
    Reshape {
        from: Vec<usize>,
        elements: usize,
        to: Vec<usize>,
        needed: usize,
    },
    /// Samples past the end of a tensor.
    #[error("samples {start}..{end} of a tensor of shape {shape:?}: out of range")]
    SampleRange {
        start: usize,
        end: usize,
        shape: Vec<usize>,
    },
    /// A label `to_categorical` cannot encode.
    #[error(
        "to_categorical: label {label} at index {index} is not below the class count {classes}"
    )]
    Label {
        label: u8,
        index: usize,
        classes: usize,
    },

    // Data against the model.
    /// Inputs or targets whose shape does not fit the model, or each other.
    #[error("{what}: shape {shape:?}, but {expected}")]
    DataShape {
        what: String,
        shape: Vec<usize>,
        expected: String,
    },
    /// `train_on_batch` buffers whose lengths do not fit its sample count.
    #[error(
        "train_on_batch: {samples} samples need {inputs_needed} input and {targets_needed} \
         target values, got {inputs} and {targets}"
    )]
    BatchLength {
        samples: usize,
        inputs_needed: usize,
        targets_needed: usize,
        inputs: usize,
        targets: usize,
    },
    /// A value that must be finite and is not (inputs, targets, weights).
    #[error("{what} holds a non-finite value ({value}) at element {index}")]
    NonFinite {
        what: String,
        index: usize,
        value: f32,
    },
    /// A target the loss does not take (a label out of range, a binary target outside [0, 1]).
    #[error("target value {index} is {value}: {loss} takes {takes}")]
    Target {
        loss: &'static str,
        index: usize,
        value: f32,
        takes: String,
    },
    /// No samples to work on.
    #[error("{operation}: there are no {what}")]
    NoSamples {
        operation: &'static str,
        what: &'static str,
    },

    // Settings.
    /// A hyperparameter, fit argument or callback setting out of its range.
    #[error("{owner}: {name} = {value} is not {allowed}")]
    Setting {
        owner: &'static str,
        name: &'static str,
        value: String,
        allowed: String,
    },
    /// A call that does not apply to what it was made on (momentum on Adam, a callback
    /// monitoring what fit does not measure).
    #[error("{call} {reason}")]
    Misuse { call: String, reason: String },
    /// A name (activation, optimizer, loss, padding) that names nothing.
    #[error("unknown {kind} {name:?}: expected {expected}")]
    UnknownName {
        kind: &'static str,
        name: String,
        expected: &'static str,
    },

    // Weights.
    /// `set_weights` with another number of tensors than the model has.
    #[error("the model has {expected} weight tensors but {given} were given")]
    WeightCount { expected: usize, given: usize },
    /// `set_weights` with a tensor whose name is not the one in the model's order.
    #[error("tensor {index} is {given}, expected {expected}")]
    WeightName {
        index: usize,
        given: String,
        expected: String,
    },
    /// `set_weights` with a tensor of another shape than the model's.
    #[error("{tensor} has shape {expected:?} in the model but {given:?} was given")]
    WeightShape {
        tensor: String,
        expected: Vec<usize>,
        given: Vec<usize>,
    },
    /// Weights or an architecture the file format cannot hold.
    #[error("serialising {what}: {reason}")]
    Serialize { what: String, reason: String },

    // The model's state.
    /// `operation` (fit, evaluate, train_on_batch) on a model not compiled.
    #[error("{operation} before compile: call compile first")]
    NotCompiled { operation: String },
    /// `operation` on a model whose input shape, seed or layers changed after compile.
    #[error(
        "{operation}: the model's input shape, seed or layers changed after compile: call compile \
         again"
    )]
    ChangedAfterCompile { operation: String },
    /// Data-parallel training: the ranks could not talk, or they disagree (models, data,
    /// settings), or the launcher and the MPI library do not match.
    #[error("data-parallel training: {0}")]
    Distributed(String),
    /// A broken invariant of `nn` itself: a bug, never the caller's input.
    #[error("internal error (a bug in nn): {0}")]
    Internal(String),
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
    /// A chart that could not be drawn (no font, an empty history).
    #[error("{path}: cannot draw the chart: {reason}")]
    Plot { path: PathBuf, reason: String },
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
