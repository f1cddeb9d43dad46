//! The backward passes of a model's first block — a convolution whose input gradient nobody
//! needs, the batch normalisation of its output, the activation after that and a max pooling —
//! as one: [`conv2d_batch_norm_max_pool_backward`]. The normalisation's input gradient (the
//! convolution's output gradient, as large as the convolution's output) is formed a task of
//! images at a time, in a buffer that stays in cache, and the convolution's weight pass reads it
//! there: it is never written whole nor read back. A room above `conv` and `norm_pool`.

use crate::conv::{
    check_weights_args, conv2d_backward_weights, direct, direct_weights_of_formed, Conv2d,
};
use crate::conv_pool::{check_pool_of, PooledGradient};
use crate::error::Result;
use crate::gemm::ExecOptions;
use crate::norm::BatchNormGrads;
use crate::norm_pool::{backward_then, PooledNormalisation};
use crate::pool::Pool2d;
use crate::scratch::CONV_GRAD;

/// The normalisation between the convolution and the pooling, as
/// [`conv2d_batch_norm_max_pool_backward`] reads it: its input (the convolution's output, which
/// the pooling's shape describes), ε, γ, and the batch mean and 1/√(variance + ε) of the forward
/// pass.
#[derive(Debug, Clone, Copy)]
pub struct Normalisation<'a> {
    pub x: &'a [f32],
    pub epsilon: f32,
    pub gamma: &'a [f32],
    pub mean: &'a [f32],
    pub inv_std: &'a [f32],
}

/// The convolution's parameter gradients: weights (as the weights, `kernel_h × kernel_w × in_c
/// × out_c`) and, optionally, bias.
#[derive(Debug)]
pub struct ConvGrads<'a> {
    pub dw: &'a mut [f32],
    pub db: Option<&'a mut [f32]>,
}

/// Training backward of a convolution `s` (linear: its activation, if any, is the one after the
/// normalisation), the batch normalisation `norm` of its output, the activation the max pooling
/// `p` took over (`pooled.act`) and that pooling (windows apart), for a convolution whose input
/// gradient is not needed (a model's first layer): the normalisation's `grads` and the
/// convolution's, from the pooling's gradient. What
/// [`batch_norm_max_pool_backward`](crate::norm_pool::batch_norm_max_pool_backward) (into the
/// convolution's output gradient) then [`conv2d_backward_weights`] compute, with the same bits,
/// without the output gradient between them: for a one-channel convolution (the direct kernels)
/// each task of the weight pass forms its images' gradient rows in a buffer that stays in cache;
/// other convolutions get the gradient whole in scratch, as the two calls would. `x` is the
/// convolution's input; `p` must pool exactly the convolution's output, which `norm.x` holds.
/// Argmax entries outside their windows are an error that writes nothing.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_batch_norm_max_pool_backward(
    opts: &ExecOptions,
    s: &Conv2d,
    x: &[f32],
    p: &Pool2d,
    norm: Normalisation<'_>,
    pooled: PooledGradient<'_>,
    grads: BatchNormGrads<'_>,
    conv: ConvGrads<'_>,
) -> Result<()> {
    let what = "conv2d_batch_norm_max_pool_backward";
    let ConvGrads { dw, db } = conv;
    check_weights_args(what, s, x, dw, db.as_deref())?;
    check_pool_of(what, s, p)?;
    let isa = crate::Isa::resolve(opts.isa)?;
    let backend = crate::Backend::resolve(opts.backend)?;
    let layers = PooledNormalisation {
        p,
        epsilon: norm.epsilon,
        x: norm.x,
        pooled,
        gamma: norm.gamma,
        stats: (norm.mean, norm.inv_std),
    };
    backward_then(what, opts, layers, grads, |input_gradient| {
        let Some(ig) = input_gradient else {
            // No rows: no images.
            dw.fill(0.0);
            if let Some(db) = db {
                db.fill(0.0);
            }
            return Ok(());
        };
        if !direct::applies(s, backend) {
            let len = s.output_len();
            return CONV_GRAD.with(len, len, |dy| {
                ig.all_rows(opts, dy);
                conv2d_backward_weights(opts, s, x, dy, dw, db)
            });
        }
        // Each task's rows of the gradient formed where its weight pass reads them.
        let rows = |images: std::ops::Range<usize>, dy: &mut [f32]| {
            let pixels = images.start * s.out_pixels()..images.end * s.out_pixels();
            ig.rows(pixels, dy);
            Ok(())
        };
        direct_weights_of_formed(opts, s, isa, x, (dw, db), rows)
    })
}
