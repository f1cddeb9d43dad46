//! Activations by Keras's names: the elementwise ones run in `kernels` (fused into the GEMM
//! epilogue where a layer has one), softmax over each sample's last dimension.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// An activation, as Keras's `activation=` argument names it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Act {
    /// The identity ("linear").
    #[default]
    Linear,
    Relu,
    Sigmoid,
    Tanh,
    /// Softmax over the last dimension of each sample.
    Softmax,
}

impl Act {
    /// Keras's name.
    pub fn name(self) -> &'static str {
        match self {
            Act::Linear => "linear",
            Act::Relu => "relu",
            Act::Sigmoid => "sigmoid",
            Act::Tanh => "tanh",
            Act::Softmax => "softmax",
        }
    }

    /// The activation called `name` by Keras.
    pub fn from_name(name: &str) -> Result<Act> {
        Ok(match name {
            "linear" | "identity" | "None" => Act::Linear,
            "relu" => Act::Relu,
            "sigmoid" => Act::Sigmoid,
            "tanh" => Act::Tanh,
            "softmax" => Act::Softmax,
            other => {
                return Err(Error::UnknownName {
                    kind: "activation",
                    name: other.to_string(),
                    expected: "linear, relu, sigmoid, tanh or softmax",
                })
            }
        })
    }

    /// The elementwise part `kernels` applies (softmax: none, it is applied after).
    pub(crate) fn elementwise(self) -> kernels::Activation {
        match self {
            Act::Linear | Act::Softmax => kernels::Activation::Identity,
            Act::Relu => kernels::Activation::Relu,
            Act::Sigmoid => kernels::Activation::Sigmoid,
            Act::Tanh => kernels::Activation::Tanh,
        }
    }
}

/// Applies `act` after an elementwise-free forward pass: softmax over rows of `cols`.
pub(crate) fn finish_forward(act: Act, y: &mut [f32], cols: usize, layer: &str) -> Result<()> {
    if act == Act::Softmax {
        kernels::math::softmax_rows_in_place(y, cols).map_err(Error::kernel(layer))?;
    }
    Ok(())
}

/// `grad ← grad·act'(x)` in place, from the forward output `y`; for softmax the full Jacobian
/// product per row: `g ← y ⊙ (g − Σ g·y)`.
pub(crate) fn backward_in_place(
    act: Act,
    y: &[f32],
    grad: &mut [f32],
    cols: usize,
    layer: &str,
) -> Result<()> {
    match act {
        Act::Linear => Ok(()),
        Act::Softmax => {
            for (yr, gr) in y.chunks_exact(cols).zip(grad.chunks_exact_mut(cols)) {
                let dot: f32 = yr.iter().zip(gr.iter()).map(|(a, b)| a * b).sum();
                for (g, &p) in gr.iter_mut().zip(yr) {
                    *g = p * (*g - dot);
                }
            }
            Ok(())
        }
        _ => kernels::activation::activation_backward(
            &kernels::ExecOptions::default(),
            act.elementwise(),
            y,
            grad,
        )
        .map_err(Error::kernel(layer)),
    }
}
