//! The serialisable description of a layer: what a model file's architecture holds, and the
//! layer it describes.

use serde::{Deserialize, Serialize};

use super::{
    Activation, AveragePooling2D, BatchNormalization, Conv2D, Dense, Dropout, Flatten,
    GlobalAveragePooling2D, GlobalMaxPooling2D, Layer, MaxPooling2D,
};
use crate::activations::Act;
use crate::error::{Error, Result};

/// The serialisable description of a layer (Keras's `get_config`, reduced to what we use).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "class_name")]
pub enum LayerConfig {
    Dense {
        name: String,
        units: usize,
        activation: Act,
    },
    Conv2D {
        name: String,
        filters: usize,
        kernel_size: [usize; 2],
        strides: [usize; 2],
        padding: String,
        activation: Act,
    },
    MaxPooling2D {
        name: String,
        pool_size: [usize; 2],
        strides: [usize; 2],
        padding: String,
    },
    AveragePooling2D {
        name: String,
        pool_size: [usize; 2],
        strides: [usize; 2],
        padding: String,
    },
    GlobalAveragePooling2D {
        name: String,
    },
    GlobalMaxPooling2D {
        name: String,
    },
    BatchNormalization {
        name: String,
        momentum: f32,
        epsilon: f32,
    },
    Flatten {
        name: String,
    },
    Dropout {
        name: String,
        rate: f32,
    },
    Activation {
        name: String,
        activation: Act,
    },
}

impl LayerConfig {
    /// The layer this configuration describes (unbuilt).
    pub fn to_layer(&self) -> Result<Box<dyn Layer>> {
        let padding = |p: &str| match p {
            "valid" => Ok(kernels::Padding::Valid),
            "same" => Ok(kernels::Padding::Same),
            other => Err(Error::UnknownName {
                kind: "padding",
                name: other.to_string(),
                expected: "\"valid\" or \"same\"",
            }),
        };
        let mut layer: Box<dyn Layer> = match self {
            LayerConfig::Dense {
                units, activation, ..
            } => Box::new(Dense::new(*units, *activation)),
            LayerConfig::Conv2D {
                filters,
                kernel_size,
                strides,
                padding: p,
                activation,
                ..
            } => Box::new(
                Conv2D::new(*filters, (kernel_size[0], kernel_size[1]), *activation)
                    .strides((strides[0], strides[1]))
                    .padding(padding(p)?),
            ),
            LayerConfig::MaxPooling2D {
                pool_size,
                strides,
                padding: p,
                ..
            } => Box::new(
                MaxPooling2D::new((pool_size[0], pool_size[1]))
                    .strides((strides[0], strides[1]))
                    .padding(padding(p)?),
            ),
            LayerConfig::AveragePooling2D {
                pool_size,
                strides,
                padding: p,
                ..
            } => Box::new(
                AveragePooling2D::new((pool_size[0], pool_size[1]))
                    .strides((strides[0], strides[1]))
                    .padding(padding(p)?),
            ),
            LayerConfig::GlobalAveragePooling2D { .. } => Box::new(GlobalAveragePooling2D::new()),
            LayerConfig::GlobalMaxPooling2D { .. } => Box::new(GlobalMaxPooling2D::new()),
            LayerConfig::BatchNormalization {
                momentum, epsilon, ..
            } => Box::new(
                BatchNormalization::new()
                    .momentum(*momentum)
                    .epsilon(*epsilon),
            ),
            LayerConfig::Flatten { .. } => Box::new(Flatten::new()),
            LayerConfig::Dropout { rate, .. } => Box::new(Dropout::new(*rate)),
            LayerConfig::Activation { activation, .. } => Box::new(Activation::new(*activation)),
        };
        let name = match self {
            LayerConfig::Dense { name, .. }
            | LayerConfig::Conv2D { name, .. }
            | LayerConfig::MaxPooling2D { name, .. }
            | LayerConfig::AveragePooling2D { name, .. }
            | LayerConfig::GlobalAveragePooling2D { name }
            | LayerConfig::GlobalMaxPooling2D { name }
            | LayerConfig::BatchNormalization { name, .. }
            | LayerConfig::Flatten { name }
            | LayerConfig::Dropout { name, .. }
            | LayerConfig::Activation { name, .. } => name.clone(),
        };
        layer.set_name(name);
        Ok(layer)
    }
}
