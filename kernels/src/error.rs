//! The one error type of the `kernels` crate. Every variant names the argument at fault and the
//! numbers that do not fit, so a caller can tell what went wrong without a debugger.

use crate::{Backend, Isa};

/// Everything a `kernels` call can reject. `Debug` prints the message too (as `Display`), so a
/// `main` that returns the error shows a sentence, not a struct.
#[derive(Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A matrix view reaches past the end of its buffer.
    #[error(
        "matrix {name} ({rows}×{cols}, row stride {row_stride}, column stride {col_stride}) \
         needs a buffer of at least {needed} elements, but the buffer has {len}"
    )]
    BufferTooSmall {
        name: &'static str,
        rows: usize,
        cols: usize,
        row_stride: usize,
        col_stride: usize,
        needed: usize,
        len: usize,
    },

    /// A leading dimension smaller than the BLAS rules allow.
    #[error("leading dimension {name} = {ld} is too small: it must be at least {min}")]
    LeadingDimension {
        name: &'static str,
        ld: usize,
        min: usize,
    },

    /// The strides of an output view would make two of its elements share one memory slot.
    #[error(
        "matrix {name} ({rows}×{cols}) has strides (row {row_stride}, column {col_stride}) \
         under which distinct elements overlap"
    )]
    OverlappingStrides {
        name: &'static str,
        rows: usize,
        cols: usize,
        row_stride: usize,
        col_stride: usize,
    },

    /// A size or an index computation does not fit in `usize`.
    #[error(
        "matrix {name}: {rows}×{cols} with strides ({row_stride}, {col_stride}) overflows usize"
    )]
    Overflow {
        name: &'static str,
        rows: usize,
        cols: usize,
        row_stride: usize,
        col_stride: usize,
    },

    /// The operands of a product do not fit together.
    #[error("{what}: {detail}")]
    ShapeMismatch { what: &'static str, detail: String },

    /// A length or dimension argument is out of its allowed range.
    #[error("argument {name} = {value} is invalid: {reason}")]
    InvalidArgument {
        name: &'static str,
        value: String,
        reason: String,
    },

    /// A forced instruction-set path that this CPU (or this build) cannot run.
    #[error("instruction-set path {isa} is not available: {reason}")]
    IsaUnavailable { isa: Isa, reason: String },

    /// An instruction-set name (from `KERNELS_ISA` or `Isa::from_str`) that names no path.
    #[error(
        "unknown instruction-set path {name:?} (from {source_name}); expected one of: {expected}"
    )]
    UnknownIsa {
        name: String,
        source_name: &'static str,
        expected: String,
    },

    /// A GEMM backend this build cannot run (OpenBLAS without the `openblas` feature).
    #[error("GEMM backend {backend} is not available: {reason}")]
    BackendUnavailable { backend: Backend, reason: String },

    /// A backend name (from `KERNELS_BACKEND` or `Backend::from_str`) that names no backend.
    #[error("unknown GEMM backend {name:?} (from {source_name}); expected one of: {expected}")]
    UnknownBackend {
        name: String,
        source_name: &'static str,
        expected: String,
    },
}

impl std::fmt::Debug for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// `Result` with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// The elements of a `rows × cols` matrix, or an `Err` naming the operation `what` when the
/// count overflows `usize`.
pub(crate) fn matrix_len(what: &'static str, rows: usize, cols: usize) -> Result<usize> {
    rows.checked_mul(cols).ok_or_else(|| Error::ShapeMismatch {
        what,
        detail: format!("a {rows}×{cols} matrix has more elements than memory can hold"),
    })
}

/// `Err` unless a buffer of `len` elements holds the `want` a tensor needs: the message names the
/// operation `what`, the buffer `name`, and the tensor's `shape` (formatted only on error, so
/// that checking allocates nothing).
pub(crate) fn check_len(
    what: &'static str,
    name: &str,
    len: usize,
    want: usize,
    shape: impl FnOnce() -> String,
) -> Result<()> {
    if len != want {
        return Err(Error::ShapeMismatch {
            what,
            detail: format!(
                "{name} has {len} elements but a {} tensor needs {want}",
                shape()
            ),
        });
    }
    Ok(())
}
