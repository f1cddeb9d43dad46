//! Convolution and average pooling as one pass: the forward pass pools each group of images
//! while its convolution output is in cache; the first pair's backward pass forms the
//! convolution's output gradient (the pooling's spread over its windows, through the
//! activation) a task of images at a time, in cache, where the weight pass reads it. A room above
//! both `conv` and `pool`; the same bits as their calls in turn.

use crate::activation::{activation_backward, Activation};
use crate::conv::{
    check_forward_args, check_weights_args, conv2d_backward_weights, direct,
    direct_weights_of_formed, forward_groups, Conv2d,
};
use crate::conv_pool::{check_pool_of, Filter};
use crate::error::{check_len, Result};
use crate::gemm::{ExecOptions, Threading};
use crate::pool::Pool2d;
use crate::scratch::CONV_GRAD;
use crate::shared::SharedOut;

/// Convolution then average pooling `pool` in one pass over the data: each group of images is
/// convolved and pooled while its convolution output is still in cache. `y_conv` keeps the
/// convolution's output (training needs it for the activation's backward pass; `None`: never
/// written); `pool` describes the pooling of the convolution's output, `y_pool` gets it.
/// Bit-identical to [`crate::conv::conv2d_forward`] then [`crate::pool::avg_pool2d_forward`].
pub fn conv2d_avgpool_forward(
    opts: &ExecOptions,
    s: &Conv2d,
    pool: &Pool2d,
    x: &[f32],
    filter: Filter<'_>,
    y_conv: Option<&mut [f32]>,
    y_pool: &mut [f32],
) -> Result<()> {
    let what = "conv2d_avgpool_forward";
    let Filter {
        weights: w,
        bias,
        act,
    } = filter;
    check_forward_args(s, x, w, bias, y_conv.as_ref().map(|y| y.len()))?;
    check_pool_of(what, s, pool)?;
    check_len(
        what,
        "pooled output y_pool",
        y_pool.len(),
        pool.output_len(),
        || pool.desc_out(),
    )?;
    let isa = crate::Isa::resolve(opts.isa)?;
    let (image_out, pooled) = (s.out_pixels() * s.out_c, pool.out_image_len());
    let yp = SharedOut::new(y_pool);
    let then = |first: usize, y_group: &[f32]| {
        for (i, img) in y_group.chunks_exact(image_out).enumerate() {
            let n = first + i;
            // SAFETY: image n belongs to the calling task only.
            let yi = unsafe { yp.slice(n * pooled..(n + 1) * pooled) };
            // SAFETY: `resolve` checked that this CPU has `isa`.
            unsafe { crate::pool::avg_image(isa, pool, img, yi) };
        }
    };
    forward_groups(opts, s, x, w, bias, act, y_conv, true, Some(&then))
}

/// The weight and bias gradients of a convolution whose activation `act` (output `y_conv`) is
/// followed by the average pooling `pool`, from the pooling's output gradient `dy_pool`: what
/// [`crate::pool::avg_pool2d_backward`], [`activation_backward`] then
/// [`conv2d_backward_weights`] compute, bit for bit, for a convolution whose input gradient is
/// not needed (a model's first layer). For one-channel convolutions (the direct kernels) each
/// task of the weight pass forms its images' output gradient in a buffer that stays in cache,
/// so the whole batch's is never written; other convolutions get it whole in scratch.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_avgpool_backward_weights(
    opts: &ExecOptions,
    s: &Conv2d,
    pool: &Pool2d,
    x: &[f32],
    (act, y_conv): (Activation, &[f32]),
    dy_pool: &[f32],
    dw: &mut [f32],
    db: Option<&mut [f32]>,
) -> Result<()> {
    let what = "conv2d_avgpool_backward_weights";
    check_weights_args(what, s, x, dw, db.as_deref())?;
    check_pool_of(what, s, pool)?;
    check_len(
        what,
        "convolution output y_conv",
        y_conv.len(),
        s.output_len(),
        || s.output_desc(),
    )?;
    check_len(
        what,
        "pooled gradient dy_pool",
        dy_pool.len(),
        pool.output_len(),
        || pool.desc_out(),
    )?;
    let isa = crate::Isa::resolve(opts.isa)?;
    let (image_out, pooled) = (s.out_pixels() * s.out_c, pool.out_image_len());
    // The images' output gradient: the pooling's spread over each window, then through the
    // activation (each image, and each element, as the separate passes take them).
    let form = |images: std::ops::Range<usize>, dy: &mut [f32]| {
        for (i, dy_image) in dy.chunks_exact_mut(image_out).enumerate() {
            let n = images.start + i;
            // SAFETY: `resolve` checked that this CPU has `isa`.
            unsafe {
                let dyi = &dy_pool[n * pooled..(n + 1) * pooled];
                crate::pool::avg_backward_image(isa, pool, dy_image, dyi);
            }
        }
        let one = ExecOptions {
            threading: Threading::Single,
            ..*opts
        };
        let y = &y_conv[images.start * image_out..images.end * image_out];
        activation_backward(&one, act, y, dy)
    };
    if !direct::applies(s, crate::Backend::resolve(opts.backend)?) {
        // The calls in turn, each on the caller's threads.
        return CONV_GRAD.with(s.output_len(), s.output_len(), |dy| {
            crate::pool::avg_pool2d_backward(opts, pool, dy_pool, dy)?;
            activation_backward(opts, act, y_conv, dy)?;
            conv2d_backward_weights(opts, s, x, dy, dw, db)
        });
    }
    // Each task's images' gradient formed where its weight pass reads it.
    direct_weights_of_formed(opts, s, isa, x, (dw, db), form)
}
