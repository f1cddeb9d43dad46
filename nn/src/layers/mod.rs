//! Layers. Each owns its parameters, their gradients and every buffer its forward and backward
//! passes need, sized once by [`Layer::allocate`] for the largest batch: a training step then
//! allocates nothing.
//!
//! Data flow (see `Sequential`): `forward(x, n)` reads `n` samples of the previous layer's output
//! and writes `n` samples into its own [`Layer::output`]; `backward(x, grad, dx, n)` receives
//! dL/d(output) in `grad` (which it may overwrite), fills its parameter gradients and, when asked,
//! writes dL/d(input) into `dx`.

/// The three [`Layer`] methods that every layer writes alike, for a layer struct with a
/// `name: String` field: its Keras class name, its name, and setting it.
macro_rules! layer_identity {
    ($class:literal) => {
        fn class_name(&self) -> &'static str {
            $class
        }
        fn name(&self) -> &str {
            &self.name
        }
        fn set_name(&mut self, name: String) {
            self.name = name;
        }
    };
}

mod activation;
mod avg_pooling;
mod batch_norm;
mod config;
mod conv2d;
mod dense;
mod dropout;
mod flatten;
mod fold;
mod fused;
mod pooling;
mod stack;

pub use activation::Activation;
pub use avg_pooling::{AveragePooling2D, GlobalAveragePooling2D, GlobalMaxPooling2D};
pub use batch_norm::BatchNormalization;
pub use conv2d::Conv2D;
pub use dense::Dense;
pub use dropout::Dropout;
pub use flatten::Flatten;
pub use pooling::MaxPooling2D;

pub use config::LayerConfig;
pub(crate) use fold::{find_fold, fold_pools, forward_folded, refresh_fold, Fold, Folded};
pub(crate) use fused::{
    backward_conv_norm_pool, backward_conv_pool, backward_norm_pool, forward_conv_pool,
    forward_norm_pool, fuses_backward, fuses_conv_norm_pool_backward, fuses_forward,
    fuses_norm_pool, fuses_norm_pool_backward,
};
pub(crate) use stack::{get_weights, infer_all, name_layers, set_weights};

use rand::rngs::StdRng;

use crate::activations::Act;
use crate::error::{Error, Result};

/// One weight tensor of a layer, with its gradient, as the optimizer and saving see it.
pub struct Param<'a> {
    /// "kernel", "bias", "gamma", "moving_mean", …, as Keras names them.
    pub name: &'static str,
    pub shape: &'a [usize],
    pub value: &'a mut [f32],
    /// The gradient's storage itself: data-parallel training lends a large one to the
    /// communication and puts another of the same length (the sum) in its place.
    pub grad: &'a mut Vec<f32>,
    /// Whether the optimizer steps it; a non-trainable tensor (BatchNormalization's moving
    /// statistics) is saved, loaded and counted but updated by its layer alone.
    pub trainable: bool,
}

/// Where a layer's fused backward pass (`Dense::backward_stepping`) takes the optimizer's step
/// for one of its parameters.
pub trait ParamSteps {
    /// This step's rule and the state buffers of the layer's parameter number `param` (in
    /// `for_each_param` order; the first [`Rule::state_buffers`] of the two are used). The
    /// caller updates that parameter itself: the optimizer leaves it alone this step.
    ///
    /// [`Rule::state_buffers`]: kernels::optim::Rule::state_buffers
    fn take(&mut self, param: usize) -> (kernels::optim::Rule, [&mut [f32]; 2]);
}

/// A linear layer's weights and activation, as its forward pass takes them (its own, or those a
/// BatchNormalization after it was folded into).
#[derive(Clone, Copy)]
pub(crate) struct Weights<'a> {
    pub kernel: &'a [f32],
    pub bias: &'a [f32],
    pub act: Act,
}

/// A layer of a `Sequential` model.
pub trait Layer: Send {
    /// Keras's class name ("Dense", "Conv2D", …).
    fn class_name(&self) -> &'static str;
    /// This layer's name ("dense", "dense_1", …; set by the model when empty).
    fn name(&self) -> &str;
    fn set_name(&mut self, name: String);

    /// What [`Layer::build`] would make of a per-sample `input` shape, allocating nothing: the
    /// output shape and the parameters' shapes, or the error `build` would return (naming the
    /// layer and the shapes). Every size product is checked against overflow: a model read from
    /// a file is checked against the file with this before anything is built.
    fn infer(&self, input: &[usize]) -> Result<Inferred>;
    /// Shape inference ([`Layer::infer`]) and, the first time (or for a new input shape), the
    /// parameters (Keras's initialisers, from `rng`); returns the per-sample output shape.
    /// Memory the system refuses is an error, never an abort.
    fn build(&mut self, input: &[usize], rng: &mut StdRng) -> Result<Vec<usize>>;
    /// Sizes every buffer for up to `batch` samples (a size that overflows, or memory the
    /// system refuses, is an error).
    fn allocate(&mut self, batch: usize) -> Result<()>;
    /// The per-sample output shape (after `build`).
    fn output_shape(&self) -> &[usize];

    /// Forward pass over `n` samples of `x`; `training` turns on dropout and keeps what
    /// `backward` needs (max pooling's argmax): `backward` follows a training pass.
    fn forward(&mut self, x: &[f32], n: usize, training: bool) -> Result<()>;
    /// The output buffer (its first `n` samples are the last forward pass's result).
    fn output(&self) -> &[f32];
    /// Backward pass: `grad` holds dL/d(output) for `n` samples (may be overwritten); fills the
    /// parameter gradients and, if `dx` is given, dL/d(input).
    fn backward(
        &mut self,
        x: &[f32],
        grad: &mut [f32],
        dx: Option<&mut [f32]>,
        n: usize,
    ) -> Result<()>;

    /// Calls `f` on each trainable tensor with its gradient, in a fixed order (kernel, bias);
    /// nothing for layers without parameters. (A visitor, not a `Vec`: no allocation per step.)
    fn for_each_param(&mut self, f: &mut dyn FnMut(Param<'_>));
    /// Moves whatever random stream the training forward pass draws from on as if that pass
    /// had run over `n` more samples (a data-parallel rank skips the other ranks' slices of the
    /// batch, so that each slice gets the numbers one process would give it).
    fn skip_samples(&mut self, _n: usize) {}
    /// Number of trainable scalars.
    fn param_count(&self) -> usize;
    /// The serialisable configuration.
    fn config(&self) -> LayerConfig;

    /// The activation applied last by this layer (for fusing softmax/sigmoid with the loss).
    fn output_activation(&self) -> Act {
        Act::Linear
    }
    /// When set, `backward` receives dL/d(pre-activation) instead of dL/d(output): the loss
    /// differentiated through the final softmax or sigmoid itself (p − y).
    fn set_grad_is_preactivation(&mut self, _on: bool) {}
    /// Which built-in layer this is ([`Kind`]); a layer of one's own is [`Kind::Other`].
    fn kind(&mut self) -> Kind<'_> {
        Kind::Other
    }
    /// The floating-point operations of this layer's products for one sample (after `build`):
    /// none for layers without products (activations, pooling, normalisation move more data
    /// than they compute; a roofline charges them nothing).
    fn flops(&self) -> LayerFlops {
        LayerFlops::default()
    }
}

/// The floating-point operations (two per multiply-add) of a layer's products for one sample
/// ([`Layer::flops`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LayerFlops {
    pub forward: u64,
    /// The gradient of the weights.
    pub weight_gradient: u64,
    /// The gradient of the input (needed only above a layer with trainable weights).
    pub input_gradient: u64,
}

impl LayerFlops {
    /// A layer whose three products each do `multiply_adds` multiply-adds per sample (Dense,
    /// Conv2D).
    pub fn linear(multiply_adds: u64) -> LayerFlops {
        LayerFlops {
            forward: 2 * multiply_adds,
            weight_gradient: 2 * multiply_adds,
            input_gradient: 2 * multiply_adds,
        }
    }
}

/// Which built-in layer a layer is, for the model's plan: the reshape it elides (Flatten), the
/// pairs it runs as one pass (Conv2D + MaxPooling2D or AveragePooling2D, BatchNormalization +
/// MaxPooling2D), the layer that takes over the activation before it (MaxPooling2D), the one
/// that steps its optimizer inside its backward pass (Dense) and the layers folded into the one
/// before them at inference (BatchNormalization, then an Activation) are built-in layers' own
/// business, not the `Layer` trait's. A layer of one's own is `Other` and simply runs.
#[non_exhaustive]
pub enum Kind<'a> {
    Dense(&'a mut Dense),
    Conv2D(&'a mut Conv2D),
    MaxPooling2D(&'a mut MaxPooling2D),
    AveragePooling2D(&'a mut AveragePooling2D),
    Flatten(&'a mut Flatten),
    BatchNormalization(&'a mut BatchNormalization),
    Activation(&'a mut Activation),
    Other,
}

/// A new version number for a layer's weights, unique in the process: a layer takes one each
/// time its weights may have changed, so that what was derived from them (the weights folded for
/// inference) knows when to be derived again — even across layers that replace one another.
pub(crate) fn next_version() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// What a layer makes of an input shape ([`Layer::infer`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inferred {
    /// The per-sample output shape.
    pub output: Vec<usize>,
    /// Each parameter's name ("kernel", "bias") and shape, in `for_each_param` order.
    pub params: Vec<(&'static str, Vec<usize>)>,
}

impl Inferred {
    /// A layer without parameters whose output has `shape`.
    pub(crate) fn output(shape: Vec<usize>) -> Inferred {
        Inferred {
            output: shape,
            params: vec![],
        }
    }
}

/// The number of elements of `shape`, or an error naming `layer` when the product overflows.
pub(crate) fn elements(shape: &[usize], layer: &str) -> Result<usize> {
    crate::tensor::checked_product(shape).ok_or_else(|| Error::TooLarge {
        what: format!("layer {layer}: a tensor"),
        shape: shape.to_vec(),
    })
}

/// Grows `buf` to `rows × per` elements (new ones `fill`; a longer buffer is left as it is); a
/// size that overflows, or memory the system refuses, is an error naming `layer` — never an
/// abort.
pub(crate) fn grow<T: Clone>(
    buf: &mut Vec<T>,
    rows: usize,
    per: usize,
    fill: T,
    layer: &str,
) -> Result<()> {
    let len = rows.checked_mul(per).ok_or_else(|| Error::TooLarge {
        what: format!("layer {layer}: a buffer of {rows} samples"),
        shape: vec![rows, per],
    })?;
    if len > buf.len() {
        buf.try_reserve_exact(len - buf.len())
            .map_err(|_| Error::Memory {
                what: format!("layer {layer}: {len} values for {rows} samples"),
                bytes: (len as u64).saturating_mul(std::mem::size_of::<T>() as u64),
            })?;
        buf.resize(len, fill);
    }
    Ok(())
}

/// `len` zeros (see [`grow`]).
pub(crate) fn zeros(len: usize, layer: &str) -> Result<Vec<f32>> {
    let mut v = vec![];
    grow(&mut v, 1, len, 0.0, layer)?;
    Ok(v)
}

/// Keras's glorot_uniform: U(−l, l) with l = √(6 / (fan_in + fan_out)).
pub(crate) fn glorot_uniform(values: &mut [f32], fan_in: usize, fan_out: usize, rng: &mut StdRng) {
    use rand::Rng;
    let limit = (6.0 / (fan_in + fan_out) as f64).sqrt() as f32;
    for v in values.iter_mut() {
        *v = rng.gen_range(-limit..limit);
    }
}

/// The first `n` samples of a buffer of `per` elements per sample.
pub(crate) fn samples(buf: &[f32], n: usize, per: usize) -> &[f32] {
    &buf[..n * per]
}

/// The first `n` samples of a mutable buffer.
pub(crate) fn samples_mut(buf: &mut [f32], n: usize, per: usize) -> &mut [f32] {
    &mut buf[..n * per]
}
