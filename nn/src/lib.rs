//! Keras-style `Sequential` training on the `kernels` crate: tensors, layers (Dense, Conv2D,
//! MaxPooling2D, AveragePooling2D, the global poolings, BatchNormalization, Flatten, Dropout,
//! Activation), losses, optimizers (SGD, Adam, RMSprop with Keras's rules and defaults),
//! `fit` / `evaluate` / `predict`, callbacks, save/load, the MNIST-format data sets, and
//! data-parallel training over any [`distributed::Collective`] (`fit_distributed`; MPI in the
//! `nn-mpi` crate).
//!
//! ```no_run
//! use nn::prelude::*;
//! let ((x_train, y_train), (x_test, y_test)) = nn::datasets::mnist::load_data()?;
//! let (x_train, x_test) = (x_train.into_flat_tensor()?, x_test.into_flat_tensor()?);
//! let (y_train, y_test) = (to_categorical(&y_train, 10)?, to_categorical(&y_test, 10)?);
//! let mut model = Sequential::new()
//!     .input_shape(&[784])
//!     .add(Dense::new(128, Act::Relu))
//!     .add(Dense::new(10, Act::Softmax));
//! model.compile(Optimizer::adam(), Loss::categorical_crossentropy(), &[Metric::Accuracy])?;
//! let history = model.fit(&x_train, &y_train,
//!     &FitConfig::new().epochs(10).batch_size(32).validation_data(&x_test, &y_test), &mut [])?;
//! println!("{:?}", model.evaluate(&x_test, &y_test, 32)?); // loss and accuracy
//! # Ok::<(), nn::Error>(())
//! ```
//!
//! Every hot loop runs in `kernels` (GEMM with fused epilogue, convolution, pooling, vectorised
//! activations and optimizer updates); `nn` holds no `unsafe`.

#![forbid(unsafe_code)]

pub mod activations;
pub mod anatomy;
pub mod callbacks;
pub mod cost;
mod curves;
pub mod datasets;
pub mod distributed;
mod error;
mod files;
mod fit_config;
mod io;
pub mod layers;
mod logs;
pub mod loss;
pub mod model;
pub mod optimizers;
mod plan;
mod progress;
pub mod schedules;
pub mod tensor;
mod trainer;

pub use error::{Error, Result};
pub use files::write_atomically;
pub use kernels;

/// Everything a training program needs.
pub mod prelude {
    pub use crate::activations::Act;
    pub use crate::callbacks::{
        Callback, CsvLogger, EarlyStopping, EpochLogs, History, LearningRateScheduler,
        ModelCheckpoint, Monitor, ReduceLrOnPlateau, TerminateOnNan,
    };
    pub use crate::layers::{
        Activation, AveragePooling2D, BatchNormalization, Conv2D, Dense, Dropout, Flatten,
        GlobalAveragePooling2D, GlobalMaxPooling2D, Layer, MaxPooling2D,
    };
    pub use crate::loss::Loss;
    pub use crate::model::{Evaluation, FitConfig, Metric, Sequential};
    pub use crate::optimizers::Optimizer;
    pub use crate::schedules::LearningRateSchedule;
    pub use crate::tensor::{to_categorical, Tensor};
    pub use kernels::Padding;
}
