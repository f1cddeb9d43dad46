//! Batch normalisation's training forward pass and the max pooling after it as one pass: the
//! normalised, activated values are pooled as they are formed, so the full-size tensor between
//! the two is never written nor read back (x is read twice, for the statistics and for the
//! pooling; the pooled output and argmax are written). The same arithmetic in the same order as
//! [`batch_norm_forward_training`](crate::norm::batch_norm_forward_training) then
//! [`max_pool2d_forward`](crate::pool::max_pool2d_forward): the same bits. The backward passes
//! need no fused twin to skip that tensor (the pooling's takes the activation's derivative from
//! the pooled output and the normalisation's reads x); [`batch_norm_max_pool_backward`] runs them
//! as one all the same, so that the pooling's full-size gradient is never written either.
//!
//! Only for windows apart ([`Pool2d::windows_apart`], Keras's default pooling). A room above
//! both `norm` and `pool`.

use crate::activation::Activation;
use crate::conv_pool::PooledGradient;
use crate::error::{check_len, Error, Result};
use crate::gemm::ExecOptions;
use crate::norm::{
    self, lane_steps, lanes, lanes_mut, with_activation, BatchNorm, BatchNormGrads, BatchStats,
    LANES,
};
use crate::pool::Pool2d;
use crate::team::for_each_piece_pair;
use crate::Isa;

#[cfg(target_arch = "x86_64")]
mod vector;

/// The normalisation over the pooling `p`'s input, its positions as rows of channels, after
/// checking the pooling (windows apart), ε, and that `x` is that input (the input's length fits:
/// `Pool2d::validate`).
fn normalisation_of(what: &'static str, p: &Pool2d, epsilon: f32, x: &[f32]) -> Result<BatchNorm> {
    check_pooling(what, p)?;
    let s = BatchNorm {
        rows: p.batch * p.in_h * p.in_w,
        channels: p.channels,
        epsilon,
    };
    s.len()?;
    check_len(what, "input x", x.len(), p.input_len(), || p.desc_in())?;
    Ok(s)
}

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
    let s = normalisation_of(what, p, epsilon, x)?;
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
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `isa` was resolved, so this CPU has it.
        if unsafe { vector::forward_image(isa, p, img, affine, act, yi, ai) } {
            return;
        }
        // SAFETY: as above.
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

/// The most channels [`batch_norm_max_pool_backward`] takes (rows of them are formed on the
/// stack).
pub const MAX_FUSED_BACKWARD_CHANNELS: usize = norm::FORMED_FLOATS;

/// Training backward of a max pooling `p` (windows apart) and the batch normalisation before it,
/// with the activation between them that the pooling took over (`pooled.act`), as one pass: the
/// gradient of the normalised output — the pooling's gradient times the activation's derivative
/// at each window's argmax, zero elsewhere — is formed a few rows at a time as the
/// normalisation's two passes over `x` need it, and never written whole. What
/// [`max_pool2d_activation_backward`] then [`batch_norm_backward`] (no activation) compute,
/// without the full-size tensor between them (the same bits where the vector loops serve and
/// there are at most 256 channels: wider rows are formed fewer than 16 at a time, which groups
/// the f32 sums differently). `x` is the
/// normalisation's input (the pooling's input's shape, NHWC), `stats` its batch mean and
/// 1/√(variance + ε); `dx`, when given, gets the gradient with respect to `x`. At most
/// [`MAX_FUSED_BACKWARD_CHANNELS`] channels. Argmax entries outside their windows are an error
/// that writes nothing.
///
/// [`max_pool2d_activation_backward`]: crate::pool::max_pool2d_activation_backward
/// [`batch_norm_backward`]: crate::norm::batch_norm_backward
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_max_pool_backward(
    opts: &ExecOptions,
    p: &Pool2d,
    epsilon: f32,
    x: &[f32],
    pooled: PooledGradient<'_>,
    gamma: &[f32],
    stats: (&[f32], &[f32]),
    dx: Option<&mut [f32]>,
    grads: BatchNormGrads<'_>,
) -> Result<()> {
    let what = "batch_norm_max_pool_backward";
    if let Some(dx) = &dx {
        check_len(what, "input gradient dx", dx.len(), p.input_len(), || {
            p.desc_in()
        })?;
    }
    let layers = PooledNormalisation {
        p,
        epsilon,
        x,
        pooled,
        gamma,
        stats,
    };
    backward_then(what, opts, layers, grads, |input_gradient| {
        if let (Some(ig), Some(dx)) = (input_gradient, dx) {
            ig.all_rows(opts, dx);
        }
        Ok(())
    })
}

/// A normalisation and the max pooling after it, as their fused backward pass reads them (see
/// [`batch_norm_max_pool_backward`]).
#[derive(Clone, Copy)]
pub(crate) struct PooledNormalisation<'a> {
    pub p: &'a Pool2d,
    pub epsilon: f32,
    /// The normalisation's input.
    pub x: &'a [f32],
    pub pooled: PooledGradient<'a>,
    pub gamma: &'a [f32],
    /// Batch mean and 1/√(variance + ε).
    pub stats: (&'a [f32], &'a [f32]),
}

/// The checks and the sums' pass of [`batch_norm_max_pool_backward`] (writing `grads`), then
/// `then` with the input gradient to take on whatever rows it wants (`None`: there are no rows).
/// Argmax entries outside their windows are an error found before anything is written.
pub(crate) fn backward_then(
    what: &'static str,
    opts: &ExecOptions,
    layers: PooledNormalisation<'_>,
    grads: BatchNormGrads<'_>,
    then: impl FnOnce(Option<&norm::FormedInputGradient<'_>>) -> Result<()>,
) -> Result<()> {
    let PooledNormalisation {
        p,
        epsilon,
        x,
        pooled,
        gamma,
        stats,
    } = layers;
    let s = normalisation_of(what, p, epsilon, x)?;
    for (name, v) in [
        ("pooled output y", pooled.y_pool.len()),
        ("pooled gradient dy", pooled.dy_pool.len()),
        ("argmax", pooled.argmax.len()),
    ] {
        check_len(what, name, v, p.output_len(), || p.desc_out())?;
    }
    norm::check_backward_params(what, &s, gamma, stats, &grads)?;
    if p.channels > MAX_FUSED_BACKWARD_CHANNELS {
        return Err(Error::InvalidArgument {
            name: "channels",
            value: p.channels.to_string(),
            reason: format!(
                "{what} takes at most {} channels; run the pooling's and the normalisation's \
                 backward passes in turn",
                MAX_FUSED_BACKWARD_CHANNELS
            ),
        });
    }
    if s.rows == 0 {
        grads.dgamma.fill(0.0);
        grads.dbeta.fill(0.0);
        return then(None);
    }
    let isa = Isa::resolve(opts.isa)?;
    let form = |rows: std::ops::Range<usize>, out: &mut [f32]| {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `isa` was resolved, so this CPU has it.
        if let Some(routed) = unsafe { vector::form_rows(isa, p, pooled, rows.start, out) } {
            return routed;
        }
        let mut routed = 0;
        // SAFETY: `isa` was resolved, so this CPU has it.
        unsafe { form_rows_loops::run(isa, p, pooled, rows.start, out, &mut routed) };
        routed
    };
    let total = p.output_len();
    match norm::backward_formed(opts, &s, x, &form, |r| r == total, stats, gamma, grads)? {
        None => Err(crate::pool::argmax_error(pooled.argmax, p)),
        Some(input_gradient) => then(Some(&input_gradient)),
    }
}

/// The gradient of the normalised output on the rows from `r0` (as many as `out` holds, rows of
/// `p.channels`; rows count positions across the batch): at each position, in each channel, the
/// pooling's `dy` times the activation's derivative at the pooled value `y` where the position is
/// its window's argmax (`0 + g`, as the pooling's backward pass forms it: the same bits), zero
/// elsewhere; `routed` counts the argmax entries met. One compiled loop per activation.
#[inline(always)]
fn form_rows_body(
    p: &Pool2d,
    pooled: PooledGradient<'_>,
    r0: usize,
    out: &mut [f32],
    routed: &mut usize,
) {
    *routed = match pooled.act {
        Activation::Identity => form_rows(p, Activation::Identity, pooled, r0, out),
        Activation::Relu => form_rows(p, Activation::Relu, pooled, r0, out),
        Activation::Sigmoid => form_rows(p, Activation::Sigmoid, pooled, r0, out),
        Activation::Tanh => form_rows(p, Activation::Tanh, pooled, r0, out),
    };
}

#[inline(always)]
fn form_rows(
    p: &Pool2d,
    act: Activation,
    PooledGradient {
        y_pool,
        dy_pool,
        argmax,
        ..
    }: PooledGradient<'_>,
    r0: usize,
    out: &mut [f32],
) -> usize {
    let c = p.channels;
    let mut place = RowPlace::at(p, r0);
    let mut routed = 0;
    for px in out.chunks_exact_mut(c) {
        if let Some((q, first)) = place.window(p) {
            let first = first as u32;
            let window = argmax[q..q + c]
                .iter()
                .zip(&dy_pool[q..q + c])
                .zip(&y_pool[q..q + c]);
            for ((d, ((&a, &g), &v)), ch) in px.iter_mut().zip(window).zip(0u32..) {
                let g = 0.0 + act.backward(v, g);
                let hit = a == first + ch;
                *d = if hit { g } else { 0.0 };
                routed += hit as usize;
            }
        } else {
            px.fill(0.0);
        }
        place.step(p);
    }
    routed
}

/// Where a row (a position across the batch) lies under a pooling with windows apart: its
/// image, its place in the image and its window's, stepped row by row — a division per row for
/// each of them cost more than the row's 16 channels of work (the fused backward pass ran at a
/// quarter of the speed of the two passes it replaces, program F's shapes).
struct RowPlace {
    /// The pooled output's width and height and its length per image (their divisions taken
    /// once, not per row).
    out_w: usize,
    out_h: usize,
    out_image: usize,
    n: usize,
    iy: usize,
    ix: usize,
    /// The window's row and column, and the row's offsets from their starts.
    qy: usize,
    ry: usize,
    qx: usize,
    rx: usize,
}

impl RowPlace {
    /// Row `r`'s place.
    fn at(p: &Pool2d, r: usize) -> RowPlace {
        let (image, in_w) = (p.in_h * p.in_w, p.in_w);
        let at = r % image;
        let (iy, ix) = (at / in_w, at % in_w);
        RowPlace {
            out_w: p.out_w(),
            out_h: p.out_h(),
            out_image: p.out_image_len(),
            n: r / image,
            iy,
            ix,
            qy: iy / p.stride_h,
            ry: iy % p.stride_h,
            qx: ix / p.stride_w,
            rx: ix % p.stride_w,
        }
    }

    /// The first element of the row's window in the pooled output (across the batch) and of the
    /// row in its image, or `None` where no window covers the row.
    #[inline(always)]
    fn window(&self, p: &Pool2d) -> Option<(usize, usize)> {
        let (c, ow) = (p.channels, self.out_w);
        let inside = self.qy < self.out_h && self.ry < p.pool_h;
        (inside && self.qx < ow && self.rx < p.pool_w).then(|| {
            let q = self.n * self.out_image + (self.qy * ow + self.qx) * c;
            (q, (self.iy * p.in_w + self.ix) * c)
        })
    }

    /// On to the next row.
    #[inline(always)]
    fn step(&mut self, p: &Pool2d) {
        self.ix += 1;
        self.rx += 1;
        if self.rx == p.stride_w {
            (self.rx, self.qx) = (0, self.qx + 1);
        }
        if self.ix == p.in_w {
            (self.ix, self.rx, self.qx) = (0, 0, 0);
            self.iy += 1;
            self.ry += 1;
            if self.ry == p.stride_h {
                (self.ry, self.qy) = (0, self.qy + 1);
            }
            if self.iy == p.in_h {
                (self.iy, self.ry, self.qy) = (0, 0, 0);
                self.n += 1;
            }
        }
    }
}

crate::dispatch::per_isa!(form_rows_loops, form_rows_body, form_rows_body,
    (p: &Pool2d, pooled: PooledGradient<'_>, r0: usize, out: &mut [f32], routed: &mut usize));
