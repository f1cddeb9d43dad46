//! The pairs of built-in layers the model runs as one pass (Conv2D + MaxPooling2D or
//! AveragePooling2D, forward and the first pair's backward; BatchNormalization + MaxPooling2D,
//! forward and backward, with the Conv2D below the normalisation in the backward pass when it is
//! the model's first layer), recognised by their [`Kind`].

use super::{Folded, Kind, Layer};
use crate::error::Result;

/// Whether [`forward_conv_pool`] runs `conv` and `pool` as one pass: a Conv2D whose activation is
/// elementwise, then a MaxPooling2D or an AveragePooling2D (decided once, by the model's plan).
pub(crate) fn fuses_forward(conv: &mut dyn Layer, pool: &mut dyn Layer) -> bool {
    match (conv.kind(), pool.kind()) {
        (Kind::Conv2D(c), Kind::MaxPooling2D(_) | Kind::AveragePooling2D(_)) => {
            c.pools_in_one_pass()
        }
        _ => false,
    }
}

/// Whether [`backward_conv_pool`] runs the backward passes of `pool` and `conv` as one: a
/// MaxPooling2D that took over the activation of the Conv2D below it, or an AveragePooling2D
/// after a Conv2D with an elementwise activation (decided at compile).
pub(crate) fn fuses_backward(conv: &mut dyn Layer, pool: &mut dyn Layer) -> bool {
    match (conv.kind(), pool.kind()) {
        (Kind::Conv2D(c), Kind::MaxPooling2D(p)) => {
            c.gets_preactivation_gradient() && p.takes_activation()
        }
        // The average pooling's gradient goes through the convolution's activation there.
        (Kind::Conv2D(c), Kind::AveragePooling2D(_)) => {
            c.pools_in_one_pass() && !c.gets_preactivation_gradient()
        }
        _ => false,
    }
}

/// Runs `conv` then `pool` as one pass when `conv` is a Conv2D with an elementwise activation and
/// `pool` a MaxPooling2D or an AveragePooling2D (each group of images is pooled while its
/// convolution output is in cache; where nothing reads that output — at inference, or in
/// training once the max pooling took over the activation — it is not kept at all),
/// with the convolution's own weights or, at inference before a MaxPooling2D, those `folded`
/// from the BatchNormalization after it. Returns `None` when the pair is not of that kind.
pub(crate) fn forward_conv_pool(
    conv: &mut dyn Layer,
    pool: &mut dyn Layer,
    x: &[f32],
    n: usize,
    training: bool,
    folded: Option<&Folded>,
) -> Option<Result<()>> {
    match (conv.kind(), pool.kind()) {
        (Kind::Conv2D(conv), Kind::MaxPooling2D(pool)) => {
            conv.forward_pooled(pool, x, n, training, folded.map(Folded::weights))
        }
        (Kind::Conv2D(conv), Kind::AveragePooling2D(pool)) => {
            conv.forward_avg_pooled(pool, x, n, training, folded.map(Folded::weights))
        }
        _ => None,
    }
}

/// The backward passes of `pool` then `conv` as one, when they fuse ([`fuses_backward`]) and the
/// convolution's input gradient is not needed (the model's first layer): the convolution's
/// parameter gradients straight from the pooling's gradient `grad` (see
/// `kernels::conv_pool::conv2d_maxpool_backward_weights`,
/// `kernels::conv_avg_pool::conv2d_avgpool_backward_weights`). Returns `None` when the pair is
/// not of that kind.
pub(crate) fn backward_conv_pool(
    conv: &mut dyn Layer,
    pool: &mut dyn Layer,
    x: &[f32],
    grad: &[f32],
    n: usize,
) -> Option<Result<()>> {
    match (conv.kind(), pool.kind()) {
        (Kind::Conv2D(conv), Kind::MaxPooling2D(pool)) => conv.backward_pooled(pool, x, grad, n),
        (Kind::Conv2D(conv), Kind::AveragePooling2D(pool)) => {
            conv.backward_avg_pooled(pool, x, grad, n)
        }
        _ => None,
    }
}

/// Whether [`forward_norm_pool`] runs `norm` and `pool` as one pass: a BatchNormalization (with
/// the Activation it runs, if any) whose output a MaxPooling2D with windows apart reads, having
/// taken over that activation's derivative — so that no backward pass reads the normalisation's
/// output, which the fused pass does not write (decided at compile, by the model's plan).
pub(crate) fn fuses_norm_pool(norm: &mut dyn Layer, pool: &mut dyn Layer) -> bool {
    match (norm.kind(), pool.kind()) {
        (Kind::BatchNormalization(n), Kind::MaxPooling2D(p)) => {
            n.gets_preactivation_gradient() && p.takes_activation() && p.windows_apart()
        }
        _ => false,
    }
}

/// Runs `norm` then `pool` as one pass when they fuse ([`fuses_norm_pool`]): in training the
/// normalised tensor is never written (the pooling's output and argmax are); at inference the
/// two layers' own passes in turn. Returns `None` when the pair is not of that kind.
pub(crate) fn forward_norm_pool(
    norm: &mut dyn Layer,
    pool: &mut dyn Layer,
    x: &[f32],
    n: usize,
    training: bool,
) -> Option<Result<()>> {
    match (norm.kind(), pool.kind()) {
        (Kind::BatchNormalization(norm), Kind::MaxPooling2D(pool)) => {
            Some(norm.forward_pooled(pool, x, n, training))
        }
        _ => None,
    }
}

/// Whether [`backward_norm_pool`] runs the backward passes of `pool` and `norm` as one: they
/// fuse forward ([`fuses_norm_pool`]) and the normalisation has at most
/// `kernels::norm_pool::MAX_FUSED_BACKWARD_CHANNELS` channels (else the two passes in turn).
pub(crate) fn fuses_norm_pool_backward(norm: &mut dyn Layer, pool: &mut dyn Layer) -> bool {
    let narrow = match norm.kind() {
        Kind::BatchNormalization(n) => {
            n.channels() <= kernels::norm_pool::MAX_FUSED_BACKWARD_CHANNELS
        }
        _ => false,
    };
    narrow && fuses_norm_pool(norm, pool)
}

/// The backward passes of `pool` then `norm` as one, when they fuse ([`fuses_norm_pool_backward`]): the
/// gradient of the normalised output is formed from the pooling's gradient `grad` as the
/// normalisation's passes need it (see `kernels::norm_pool::batch_norm_max_pool_backward`), and
/// `dx` gets the gradient with respect to the normalisation's input `x`. Returns `None` when the
/// pair is not of that kind.
pub(crate) fn backward_norm_pool(
    norm: &mut dyn Layer,
    pool: &mut dyn Layer,
    x: &[f32],
    grad: &[f32],
    dx: Option<&mut [f32]>,
    n: usize,
) -> Option<Result<()>> {
    match (norm.kind(), pool.kind()) {
        (Kind::BatchNormalization(norm), Kind::MaxPooling2D(pool)) => {
            norm.backward_pooled(pool, x, grad, dx, n)
        }
        _ => None,
    }
}

/// Whether [`backward_conv_norm_pool`] runs the Conv2D `conv` below a BatchNormalization whose
/// backward pass runs with its MaxPooling2D's ([`fuses_norm_pool_backward`]) in that pass too: a
/// linear Conv2D, the model's first layer (decided at compile, by the model's plan).
pub(crate) fn fuses_conv_norm_pool_backward(conv: &mut dyn Layer) -> bool {
    matches!(conv.kind(), Kind::Conv2D(c) if c.is_linear())
}

/// The backward passes of `pool`, `norm` and `conv` as one, when they fuse
/// ([`fuses_conv_norm_pool_backward`]): the convolution's gradient (the normalisation's input
/// gradient) is formed a task of images at a time where the convolution's weight pass reads it
/// (see `kernels::conv_norm_pool::conv2d_batch_norm_max_pool_backward`); `x` is the
/// convolution's input. Returns `None` when the layers are not of that kind.
pub(crate) fn backward_conv_norm_pool(
    conv: &mut dyn Layer,
    norm: &mut dyn Layer,
    pool: &mut dyn Layer,
    x: &[f32],
    grad: &[f32],
    n: usize,
) -> Option<Result<()>> {
    match (conv.kind(), norm.kind(), pool.kind()) {
        (Kind::Conv2D(conv), Kind::BatchNormalization(norm), Kind::MaxPooling2D(pool)) => {
            norm.backward_pooled_into_conv(conv, pool, x, grad, n)
        }
        _ => None,
    }
}
