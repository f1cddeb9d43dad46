//! Convolution and max pooling as one pass: the forward pass pools each group of images while
//! its convolution output is in cache (a one-channel 3×3 layer whose output is not kept pools
//! in registers as it convolves); the first pair's backward pass forms the convolution's
//! weight gradient straight from the pooling's. A room above both `conv` and `pool`, which know nothing of each
//! other — except that the one-channel 3×3 kernels (`conv::direct3x3`) apply max pooling's rule
//! (`arch::vector::Vector::takes_over`) to the windows they pool in registers or read gradients
//! from.

use crate::activation::Activation;
use crate::conv::pooled_grads::PooledGrads;
use crate::conv::{
    check_forward_args, check_weights_args, conv2d_backward_weights, direct,
    direct_weights_of_formed, forward_groups, forward_pooled_in_registers, sum_task_partials,
    Conv2d, PartialLayout, Plan,
};
use crate::error::{check_len, Error, Result};
use crate::gemm::ExecOptions;
use crate::pool::Pool2d;
use crate::scratch::CONV_GRAD;
use crate::shared::SharedOut;

/// A convolution's parameters as the fused passes take them: weights (`kernel_h × kernel_w ×
/// in_c × out_c`), the optional bias (`out_c`), the elementwise activation after the bias.
#[derive(Debug, Clone, Copy)]
pub struct Filter<'a> {
    pub weights: &'a [f32],
    pub bias: Option<&'a [f32]>,
    pub act: Activation,
}

/// Where [`conv2d_maxpool_forward`] writes: the convolution's output (`None`: never written, as
/// at inference), the pooled output, and the argmax (`None` at inference).
#[derive(Debug)]
pub struct PooledOutput<'a> {
    pub y_conv: Option<&'a mut [f32]>,
    pub y_pool: &'a mut [f32],
    pub argmax: Option<&'a mut [u32]>,
}

/// What [`conv2d_maxpool_backward_weights`] reads of the pooling: the activation it took over,
/// its output and argmax from the forward pass, and the gradient of its output.
#[derive(Debug, Clone, Copy)]
pub struct PooledGradient<'a> {
    pub act: Activation,
    pub y_pool: &'a [f32],
    pub dy_pool: &'a [f32],
    pub argmax: &'a [u32],
}

/// Convolution then max pooling in one pass over the data: each group of images is convolved
/// and pooled while its convolution output is still in cache. `out.y_conv` keeps the
/// convolution's output, for an activation's backward pass; `None` where nothing reads it (at
/// inference, or in training where the pooling's backward pass takes over the activation): it
/// then lives only in a per-thread buffer in cache or, for a one-channel 3×3 layer under 2×2
/// stride-2 pooling, in registers. `pool` describes the pooling of the convolution's output (its batch
/// and input sizes must be the convolution's output's); `out.y_pool` and `out.argmax` are as
/// [`crate::pool::max_pool2d_forward`]'s. Results are bit-identical to the two calls in turn.
pub fn conv2d_maxpool_forward(
    opts: &ExecOptions,
    s: &Conv2d,
    pool: &Pool2d,
    x: &[f32],
    filter: Filter<'_>,
    out: PooledOutput<'_>,
) -> Result<()> {
    let Filter {
        weights: w,
        bias,
        act,
    } = filter;
    let PooledOutput {
        y_conv,
        y_pool,
        argmax,
    } = out;
    check_forward_args(s, x, w, bias, y_conv.as_ref().map(|y| y.len()))?;
    check_pool_of("conv2d_maxpool_forward", s, pool)?;
    let pooled = pool.out_h() * pool.out_w() * pool.channels;
    check_len(
        "conv2d_maxpool_forward",
        "pooled output y_pool",
        y_pool.len(),
        s.batch * pooled,
        || pool.desc_out(),
    )?;
    if let Some(argmax) = &argmax {
        check_len(
            "conv2d_maxpool_forward",
            "argmax",
            argmax.len(),
            s.batch * pooled,
            || pool.desc_out(),
        )?;
    }
    // Keras's default pooling, the convolution's output not kept (inference, or training where
    // the pooling took over the activation): the windows pooled in registers as they are
    // convolved, where the convolution's kernel can.
    let mut argmax = argmax;
    if y_conv.is_none()
        && pool.is_2x2_stride_2_valid()
        && forward_pooled_in_registers(opts, s, x, w, bias, act, y_pool, argmax.as_deref_mut())?
    {
        return Ok(());
    }
    let pool_isa = crate::Isa::resolve(opts.isa)?;
    let image_out = s.out_pixels() * s.out_c;
    let (yp, am) = (SharedOut::new(y_pool), argmax.map(SharedOut::new));
    let then = |first: usize, y_group: &[f32]| {
        for (i, img) in y_group.chunks_exact(image_out).enumerate() {
            let n = first + i;
            // SAFETY: image n belongs to the calling task only.
            let (yi, ai) = unsafe {
                (
                    yp.slice(n * pooled..(n + 1) * pooled),
                    am.as_ref().map(|am| am.slice(n * pooled..(n + 1) * pooled)),
                )
            };
            // SAFETY: `resolve` checked that this CPU has the path's features.
            unsafe { crate::pool::max_image(pool_isa, pool, img, yi, ai) };
        }
    };
    forward_groups(opts, s, x, w, bias, act, y_conv, true, Some(&then))
}

/// The weight and bias gradients of a convolution whose activation `act` is followed by the max
/// pooling `pool`, from the pooling's output `y_pool`, gradient `dy_pool` and `argmax` (as
/// [`crate::pool::max_pool2d_forward`] wrote them): what
/// [`crate::pool::max_pool2d_activation_backward`] then [`conv2d_backward_weights`] compute,
/// bit for bit, for a convolution whose input gradient is not needed (a model's first layer).
///
/// For one-channel 3×3 convolutions without padding on x86-64 under windows apart, the weight
/// pass reads each pixel's gradient from the pooled entries by their argmax, and the output
/// gradient is never formed; for other one-channel convolutions (the direct kernels) each task
/// forms its images' output gradient in a buffer that stays in cache and runs the weight
/// gradient on it at once, so the whole batch's output gradient is never written to memory;
/// other convolutions write it to a scratch buffer between the two passes.
pub fn conv2d_maxpool_backward_weights(
    opts: &ExecOptions,
    s: &Conv2d,
    pool: &Pool2d,
    x: &[f32],
    pooled: PooledGradient<'_>,
    dw: &mut [f32],
    db: Option<&mut [f32]>,
) -> Result<()> {
    let PooledGradient {
        act,
        y_pool,
        dy_pool,
        argmax,
    } = pooled;
    let what = "conv2d_maxpool_backward_weights";
    check_weights_args(what, s, x, dw, db.as_deref())?;
    check_pool_of(what, s, pool)?;
    for (name, len) in [
        ("pooled output y_pool", y_pool.len()),
        ("pooled gradient dy_pool", dy_pool.len()),
        ("argmax", argmax.len()),
    ] {
        check_len(what, name, len, pool.output_len(), || pool.desc_out())?;
    }
    let isa = crate::Isa::resolve(opts.isa)?;
    if !direct::applies(s, crate::Backend::resolve(opts.backend)?) {
        return CONV_GRAD.with(s.output_len(), s.output_len(), |dy| {
            crate::pool::max_pool2d_activation_backward(
                opts, pool, act, y_pool, dy_pool, argmax, dy,
            )?;
            conv2d_backward_weights(opts, s, x, dy, dw, db)
        });
    }
    let plan = Plan::new(s);
    let (image_out, pooled) = (
        s.out_pixels() * s.out_c,
        pool.out_h() * pool.out_w() * s.out_c,
    );
    if pool.windows_apart() && direct::takes_pooled(s, isa) {
        // Each task turns its images' pooled gradients through the activation (a quarter of
        // the convolution's output for 2×2 windows) and the weight pass picks each pixel's out
        // of them by the argmax, never writing the dense gradient: on program C (26×26×32
        // outputs pooled 2×2) the pooling's backward pass into that gradient had taken 8 % of
        // the epoch, the weight gradient 3 %.
        return sum_task_partials(
            opts,
            s,
            &plan,
            PartialLayout::AsWeights,
            dw,
            db,
            |t, part_w, part_b| {
                let pixels = plan.pixels(s, t);
                let images = pixels.start / s.out_pixels()..pixels.end / s.out_pixels();
                let at = images.start * pooled..images.end * pooled;
                CONV_GRAD.with(at.len(), at.len(), |g| {
                    through_activation(act, &y_pool[at.clone()], &dy_pool[at.clone()], g);
                    let grads = PooledGrads {
                        g,
                        argmax: &argmax[at.clone()],
                        first_image: images.start,
                        window: (pool.pool_h, pool.pool_w),
                        stride: (pool.stride_h, pool.stride_w),
                        out: (pool.out_h(), pool.out_w()),
                    };
                    let routed =
                        direct::backward_weights_pooled(isa, s, x, grads, pixels, part_w, part_b);
                    if routed != at.len() {
                        return Err(crate::pool::argmax_error(argmax, pool));
                    }
                    Ok(())
                })
            },
        );
    }
    // An argmax entry outside its window is found as the images are unpooled; the weight
    // gradient is then not formed (dw and db are left unspecified) and the error names the entry.
    let unpool = |images: std::ops::Range<usize>, dy: &mut [f32]| {
        for (i, dy_image) in dy.chunks_exact_mut(image_out).enumerate() {
            let at = (images.start + i) * pooled..(images.start + i + 1) * pooled;
            // SAFETY: `Isa::resolve` checked that this CPU has `isa` (one of our own paths:
            // `direct::applies`).
            let routed = unsafe {
                crate::pool::max_backward_image(
                    isa,
                    pool,
                    Some((act, &y_pool[at.clone()])),
                    &dy_pool[at.clone()],
                    &argmax[at],
                    dy_image,
                )
            };
            if !routed {
                return Err(crate::pool::argmax_error(argmax, pool));
            }
        }
        Ok(())
    };
    direct_weights_of_formed(opts, s, isa, x, (dw, db), unpool)
}

/// That `pool` pools exactly the convolution's output.
pub(crate) fn check_pool_of(what: &'static str, s: &Conv2d, pool: &Pool2d) -> Result<()> {
    pool.validate()?;
    if (pool.batch, pool.in_h, pool.in_w, pool.channels) != (s.batch, s.out_h(), s.out_w(), s.out_c)
    {
        return Err(Error::ShapeMismatch {
            what,
            detail: format!(
                "the pooling takes {}×{}×{}×{} inputs but the convolution gives {}",
                pool.batch,
                pool.in_h,
                pool.in_w,
                pool.channels,
                s.output_desc()
            ),
        });
    }
    Ok(())
}

/// `g ← 0 + act'·dy` entry by entry, `act'` from the activation's output `y`: the value the
/// pooling's backward pass routes to each window's argmax (the same arithmetic, so the same
/// bits).
fn through_activation(act: Activation, y: &[f32], dy: &[f32], g: &mut [f32]) {
    // One loop per activation, each compiled with it as a constant.
    #[inline(always)]
    fn each(act: Activation, y: &[f32], dy: &[f32], g: &mut [f32]) {
        for ((g, &v), &d) in g.iter_mut().zip(y).zip(dy) {
            *g = 0.0 + act.backward(v, d);
        }
    }
    match act {
        Activation::Identity => each(Activation::Identity, y, dy, g),
        Activation::Relu => each(Activation::Relu, y, dy, g),
        Activation::Sigmoid => each(Activation::Sigmoid, y, dy, g),
        Activation::Tanh => each(Activation::Tanh, y, dy, g),
    }
}
