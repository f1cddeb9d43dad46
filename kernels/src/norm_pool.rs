//! Batch normalisation's training forward pass and the max pooling after it as one pass: the
//! normalised, activated values are pooled as they are formed, so the full-size tensor between
//! the two is never written nor read back (x is read twice, for the statistics and for the
//! pooling; the pooled output and argmax are written). The same arithmetic in the same order as
//! [`batch_norm_forward_training`](crate::norm::batch_norm_forward_training) then
//! [`max_pool2d_forward`](crate::pool::max_pool2d_forward): the same bits. The backward passes
//! need no fused twin: the pooling's takes the activation's derivative from the pooled output and
//! the normalisation's reads x, so neither reads the tensor this pass does not write.
//!
//! Only for windows apart ([`Pool2d::windows_apart`], Keras's default pooling). A room above
//! both `norm` and `pool`.

use crate::activation::Activation;
use crate::error::{check_len, Error, Result};
use crate::gemm::ExecOptions;
use crate::norm::{
    self, lane_steps, lanes, lanes_mut, with_activation, BatchNorm, BatchStats, LANES,
};
use crate::pool::Pool2d;
use crate::team::for_each_piece_pair;
use crate::Isa;

/// The pooling, checked, and that its windows lie apart.
fn check_pooling(what: &'static str, p: &Pool2d) -> Result<()> {
    p.validate()?;
    if p.windows_apart() {
        return Ok(());
    }
    Err(Error::InvalidArgument {
        name: "pool2d",
        value: format!(
            "{}×{} windows, strides {}×{}, {:?} padding",
            p.pool_h, p.pool_w, p.stride_h, p.stride_w, p.padding
        ),
        reason: format!(
            "{what} needs windows apart ('valid' padding, strides at least the window); run the \
             normalisation and the pooling as two passes"
        ),
    })
}

/// Training forward: per channel the batch mean and (biased) variance of `x` (`p`'s input,
/// NHWC), then `act(gamma·(x − mean)·inv_std + beta)` max-pooled by `p` into `y`, each window's
/// source offset into `argmax` — what [`batch_norm_forward_training`] then
/// [`max_pool2d_forward`] write into `stats`, `y` and `argmax`, bit for bit, without the
/// normalised tensor between them.
///
/// [`batch_norm_forward_training`]: crate::norm::batch_norm_forward_training
/// [`max_pool2d_forward`]: crate::pool::max_pool2d_forward
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_max_pool_forward_training(
    opts: &ExecOptions,
    p: &Pool2d,
    epsilon: f32,
    x: &[f32],
    (gamma, beta): (&[f32], &[f32]),
    act: Activation,
    (y, argmax): (&mut [f32], &mut [u32]),
    mut stats: BatchStats<'_>,
) -> Result<()> {
    let what = "batch_norm_max_pool_forward_training";
    check_pooling(what, p)?;
    // The normalisation over the pooling's input: its positions as rows of channels (the
    // input's length fits: `Pool2d::validate`); ε checked.
    let s = BatchNorm {
        rows: p.batch * p.in_h * p.in_w,
        channels: p.channels,
        epsilon,
    };
    s.len()?;
    check_len(what, "input x", x.len(), p.input_len(), || p.desc_in())?;
    check_len(what, "pooled output y", y.len(), p.output_len(), || {
        p.desc_out()
    })?;
    check_len(what, "argmax", argmax.len(), p.output_len(), || {
        p.desc_out()
    })?;
    norm::check_training(what, &s, (gamma, beta), &stats)?;
    let isa = Isa::resolve(opts.isa)?;
    norm::statistics(opts, &s, x, isa, &mut stats);
    let affine = Affine {
        mean: stats.mean,
        inv_std: stats.inv_std,
        gamma,
        beta,
    };
    let (il, ol) = (p.image_len(), p.out_image_len());
    for_each_piece_pair(opts.threading, (y, ol), (argmax, ol), |n, yi, ai| {
        let img = &x[n * il..(n + 1) * il];
        // SAFETY: `isa` was resolved, so this CPU has it.
        unsafe { forward_image_loops::run(isa, p, img, affine, act, yi, ai) }
    });
    Ok(())
}

/// The training statistics and affine parameters, per channel (all channels).
#[derive(Clone, Copy)]
struct Affine<'a> {
    mean: &'a [f32],
    inv_std: &'a [f32],
    gamma: &'a [f32],
    beta: &'a [f32],
}

/// One image: normalise, activate and max-pool, compiled per activation.
#[inline(always)]
fn forward_image_body(
    p: &Pool2d,
    img: &[f32],
    affine: Affine<'_>,
    act: Activation,
    yi: &mut [f32],
    ai: &mut [u32],
) {
    with_activation!(act, |f| forward_image(p, img, affine, yi, ai, f))
}

/// Per output position and channel: the window's values `act((x − mean)·scale + beta)` with
/// `scale = gamma·inv_std` (rounded once, as the normalisation's pass forms it), the largest
/// kept with its offset, the window's first NaN winning — the pooling's rule, over the same
/// values in the same order. Lanes of LANES channels (the loop vectorises), then the rest one
/// by one.
#[inline(always)]
fn forward_image(
    p: &Pool2d,
    img: &[f32],
    Affine {
        mean,
        inv_std,
        gamma,
        beta,
    }: Affine<'_>,
    yi: &mut [f32],
    ai: &mut [u32],
    act: impl Fn(f32) -> f32,
) {
    let (c, ow, in_w) = (p.channels, p.out_w(), p.in_w);
    // Take v over the running max b if larger, or if it is the window's first NaN.
    let take = |v: f32, b: f32| !b.is_nan() & ((v > b) | v.is_nan());
    let value = |x: f32, m: f32, scale: f32, b: f32| act((x - m).mul_add(scale, b));
    for (o, (yo, ao)) in yi
        .chunks_exact_mut(c)
        .zip(ai.chunks_exact_mut(c))
        .enumerate()
    {
        let (y0, x0) = ((o / ow) * p.stride_h, (o % ow) * p.stride_w);
        let first = (y0 * in_w + x0) * c;
        let done = lane_steps!(c, |i| {
            let (m, is, g, b) = (
                lanes(mean, i),
                lanes(inv_std, i),
                lanes(gamma, i),
                lanes(beta, i),
            );
            let scale: [f32; LANES] = std::array::from_fn(|j| g[j] * is[j]);
            let seed = lanes(img, first + i);
            let mut best: [f32; LANES] =
                std::array::from_fn(|j| value(seed[j], m[j], scale[j], b[j]));
            // Offsets within an image fit in u32 (`Pool2d::validate`).
            let mut at: [u32; LANES] = std::array::from_fn(|j| (first + i + j) as u32);
            for wy in 0..p.pool_h {
                for wx in 0..p.pool_w {
                    let base = ((y0 + wy) * in_w + x0 + wx) * c + i;
                    let xv = lanes(img, base);
                    for j in 0..LANES {
                        let v = value(xv[j], m[j], scale[j], b[j]);
                        let t = take(v, best[j]);
                        best[j] = if t { v } else { best[j] };
                        at[j] = if t { (base + j) as u32 } else { at[j] };
                    }
                }
            }
            *lanes_mut(yo, i) = best;
            *lanes_mut(ao, i) = at;
        });
        for ch in done..c {
            let scale = gamma[ch] * inv_std[ch];
            let mut best = value(img[first + ch], mean[ch], scale, beta[ch]);
            let mut at = (first + ch) as u32;
            for wy in 0..p.pool_h {
                for wx in 0..p.pool_w {
                    let base = ((y0 + wy) * in_w + x0 + wx) * c + ch;
                    let v = value(img[base], mean[ch], scale, beta[ch]);
                    if take(v, best) {
                        best = v;
                        at = base as u32;
                    }
                }
            }
            yo[ch] = best;
            ao[ch] = at;
        }
    }
}

crate::dispatch::per_isa!(forward_image_loops, forward_image_body, forward_image_body,
    (p: &Pool2d, img: &[f32], affine: Affine<'_>, act: Activation, yi: &mut [f32],
     ai: &mut [u32]));
