//! Batch normalisation over the last axis (channels) of row-major data, `rows × channels` (NHWC
//! images are `batch·height·width` rows): the statistics, the normalisation and its backward
//! pass, each loop compiled per instruction set by `per_isa!` (the channel loop vectorises).
//!
//! Sums run in f64, in row order (on the vector paths of `vector.rs`, over blocks of 16 rows
//! summed in f32), stripe by stripe, the stripes cut by the row count alone: the same bits for
//! any thread count. The variance is the biased one (divided by `rows`), as Keras's and TensorFlow's
//! batch normalisation use in training and for the moving variance.

use crate::team::for_each_piece;

#[cfg(target_arch = "x86_64")]
pub(crate) mod vector;

use crate::activation::Activation;
use crate::error::{check_len, Error, Result};
use crate::process::ExecOptions;

/// The shape of one batch normalisation: `rows` rows of `channels` values, and ε.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchNorm {
    pub rows: usize,
    pub channels: usize,
    pub epsilon: f32,
}

impl BatchNorm {
    /// `rows × channels`, checked, and ε checked.
    pub(crate) fn len(&self) -> Result<usize> {
        check_epsilon(self.epsilon)?;
        self.rows
            .checked_mul(self.channels)
            .ok_or_else(|| Error::InvalidArgument {
                name: "rows × channels",
                value: format!("{} × {}", self.rows, self.channels),
                reason: "more elements than memory can hold".into(),
            })
    }
}

fn check_epsilon(epsilon: f32) -> Result<()> {
    if epsilon.is_finite() && epsilon > 0.0 {
        return Ok(());
    }
    Err(Error::InvalidArgument {
        name: "epsilon",
        value: epsilon.to_string(),
        reason: "batch normalisation needs a finite epsilon > 0".into(),
    })
}

/// Per channel: the statistics a training step normalises with.
pub struct BatchStats<'a> {
    /// The batch mean.
    pub mean: &'a mut [f32],
    /// The batch variance (biased).
    pub variance: &'a mut [f32],
    /// 1 / √(variance + ε).
    pub inv_std: &'a mut [f32],
}

/// Training forward: per channel the batch mean and (biased) variance of `x`, then
/// `y = act(gamma·(x − mean)·inv_std + beta)` (an activation after the normalisation applied in
/// the same pass: [`Activation::Identity`] for none); the statistics are written to `stats`.
pub fn batch_norm_forward_training(
    opts: &ExecOptions,
    s: &BatchNorm,
    x: &[f32],
    (gamma, beta): (&[f32], &[f32]),
    act: Activation,
    y: &mut [f32],
    mut stats: BatchStats<'_>,
) -> Result<()> {
    let what = "batch_norm_forward_training";
    let len = s.len()?;
    check_len(what, "input x", x.len(), len, || desc(s))?;
    check_len(what, "output y", y.len(), len, || desc(s))?;
    check_training(what, s, (gamma, beta), &stats)?;
    let isa = crate::Isa::resolve(opts.isa)?;
    let c = s.channels;
    statistics(opts, s, x, isa, &mut stats);
    for c0 in (0..c).step_by(HALF) {
        let w = HALF.min(c - c0);
        let mut scale = [0.0f32; HALF];
        for i in 0..w {
            scale[i] = gamma[c0 + i] * stats.inv_std[c0 + i];
        }
        let affine = (&stats.mean[c0..c0 + w], &scale[..w], &beta[c0..c0 + w]);
        striped_map(opts, s, y, |rows, y| {
            let x = &x[rows.start * c..rows.end * c];
            // SAFETY: `isa` was resolved, so this CPU has it.
            unsafe { scale_shift_stripe(isa, x, c, c0, affine, act, y) }
        });
    }
    Ok(())
}

/// A training pass's per-channel arguments (γ, β and the statistics' buffers, one value per
/// channel each) and its batch (statistics need at least one row).
pub(crate) fn check_training(
    what: &'static str,
    s: &BatchNorm,
    (gamma, beta): (&[f32], &[f32]),
    stats: &BatchStats<'_>,
) -> Result<()> {
    check_per_channel(
        what,
        s,
        [
            ("gamma", gamma.len()),
            ("beta", beta.len()),
            ("mean", stats.mean.len()),
            ("variance", stats.variance.len()),
            ("inv_std", stats.inv_std.len()),
        ],
    )?;
    if s.rows == 0 {
        return Err(Error::InvalidArgument {
            name: "rows",
            value: "0".into(),
            reason: "batch statistics need at least one row".into(),
        });
    }
    Ok(())
}

/// Per channel, the batch mean, (biased) variance and 1/√(variance + ε) of `x` (checked by the
/// caller, `s.rows` ≥ 1), into `stats`; `isa` resolved.
pub(crate) fn statistics(
    opts: &ExecOptions,
    s: &BatchNorm,
    x: &[f32],
    isa: crate::Isa,
    stats: &mut BatchStats<'_>,
) {
    let (n, c) = (s.rows as f64, s.channels);
    // Channel blocks of HALF, both sums of a channel in one accumulator array on the stack: no
    // allocation per call.
    for c0 in (0..c).step_by(HALF) {
        let w = HALF.min(c - c0);
        // One pass for both moments, about the first row's values: Σ (x − x₀) and
        // Σ (x − x₀)² in f64 (each difference exact there). Shifted by a value of the data, the
        // variance E[(x − x₀)²] − E[x − x₀]² cancels nothing of note, unlike E[x²] − E[x]²
        // where the mean is large beside the spread; the pass over x that a centred second sum
        // needs is saved.
        let shift = &x[c0..c0 + w];
        let sums = striped_sums(opts, s, |rows, acc| {
            let (s1, rest) = acc.split_at_mut(w);
            let (x, s2) = (&x[rows.start * c..rows.end * c], &mut rest[..w]);
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `isa` was resolved, so this CPU has it.
            if unsafe { vector::column_sums(isa, x, c, c0, shift, s1, s2) } {
                return;
            }
            // SAFETY: `isa` was resolved, so this CPU has it.
            unsafe { column_sums_loops::run(isa, x, c, c0, shift, s1, s2) }
        });
        for i in 0..w {
            let d = sums[i] / n;
            let mean = shift[i] as f64 + d;
            let var = (sums[w + i] / n - d * d).max(0.0);
            let inv_std = (1.0 / (var + s.epsilon as f64).sqrt()) as f32;
            stats.mean[c0 + i] = mean as f32;
            stats.variance[c0 + i] = var as f32;
            stats.inv_std[c0 + i] = inv_std;
        }
    }
}

/// Rows are cut into this many stripes by the row count alone, never by the thread count: sums
/// are taken per stripe and added in stripe order, so the bits are the same on any number of
/// threads (and on one); the stripes run in parallel when the options allow and the data is
/// large enough to pay for it.
const STRIPES: usize = 8;
/// Elements from which the stripes run in parallel.
const PARALLEL_ELEMENTS: usize = 1 << 15;

fn stripe_rows(rows: usize) -> usize {
    rows.div_ceil(STRIPES).max(1)
}

fn in_parallel(opts: &ExecOptions, s: &BatchNorm) -> bool {
    s.rows * s.channels >= PARALLEL_ELEMENTS && crate::process::parallel(opts.threading)
}

/// `Σ_t f(rows of stripe t, acc_t)`, the stripes' sums added in stripe order.
fn striped_sums(
    opts: &ExecOptions,
    s: &BatchNorm,
    f: impl Fn(std::ops::Range<usize>, &mut [f64; BLOCK]) + Sync,
) -> [f64; BLOCK] {
    let mut part = [[0.0f64; BLOCK]; STRIPES];
    let sr = stripe_rows(s.rows);
    let run = |(t, acc): (usize, &mut [f64; BLOCK])| {
        f((t * sr).min(s.rows)..((t + 1) * sr).min(s.rows), acc)
    };
    if in_parallel(opts, s) {
        for_each_piece(opts.threading, &mut part, 1, |t, acc| run((t, &mut acc[0])));
    } else {
        part.iter_mut().enumerate().for_each(run);
    }
    let mut total = [0.0f64; BLOCK];
    for p in &part {
        for (t, &v) in total.iter_mut().zip(p) {
            *t += v;
        }
    }
    total
}

/// `f(rows of stripe t, those rows of out)` for every stripe.
fn striped_map(
    opts: &ExecOptions,
    s: &BatchNorm,
    out: &mut [f32],
    f: impl Fn(std::ops::Range<usize>, &mut [f32]) + Sync + Send,
) {
    let (sr, c) = (stripe_rows(s.rows), s.channels.max(1));
    let run = |(t, o): (usize, &mut [f32])| f(t * sr..t * sr + o.len() / c, o);
    let out = &mut out[..s.rows * s.channels];
    if in_parallel(opts, s) {
        for_each_piece(opts.threading, out, sr * c, |t, o| run((t, o)));
    } else {
        out.chunks_mut(sr * c).enumerate().for_each(run);
    }
}

/// Channels per block of the per-channel loops (their accumulators live on the stack).
const BLOCK: usize = 64;
/// Channels per block of the loops that take two sums per channel, side by side in one
/// accumulator array of BLOCK.
const HALF: usize = BLOCK / 2;

/// Inference forward (or any fixed statistics): `y = act((x − mean)·scale + beta)` per channel,
/// with `scale = gamma / √(variance + ε)` computed by the caller once (see [`batch_norm_scale`])
/// and `act` an activation after the normalisation ([`Activation::Identity`] for none).
/// Subtracting the mean first keeps the result accurate where the variance is small beside the
/// mean (folding it into a shift, `x·scale + (beta − mean·scale)`, cancels catastrophically).
pub fn batch_norm_forward_inference(
    opts: &ExecOptions,
    s: &BatchNorm,
    x: &[f32],
    (mean, scale, beta): (&[f32], &[f32], &[f32]),
    act: Activation,
    y: &mut [f32],
) -> Result<()> {
    let what = "batch_norm_forward_inference";
    let len = s.len()?;
    check_len(what, "input x", x.len(), len, || desc(s))?;
    check_len(what, "output y", y.len(), len, || desc(s))?;
    check_per_channel(
        what,
        s,
        [
            ("mean", mean.len()),
            ("scale", scale.len()),
            ("beta", beta.len()),
        ],
    )?;
    let isa = crate::Isa::resolve(opts.isa)?;
    let c = s.channels;
    for c0 in (0..c).step_by(BLOCK) {
        let w = BLOCK.min(c - c0);
        let affine = (&mean[c0..c0 + w], &scale[c0..c0 + w], &beta[c0..c0 + w]);
        striped_map(opts, s, y, |rows, y| {
            let x = &x[rows.start * c..rows.end * c];
            // SAFETY: `isa` was resolved, so this CPU has it.
            unsafe { scale_shift_stripe(isa, x, c, c0, affine, act, y) }
        });
    }
    Ok(())
}

/// The per-channel scale of fixed statistics: `scale = gamma / √(variance + ε)` (in f64).
pub fn batch_norm_scale(
    gamma: &[f32],
    variance: &[f32],
    epsilon: f32,
    scale: &mut [f32],
) -> Result<()> {
    check_epsilon(epsilon)?;
    let c = gamma.len();
    for (name, len) in [("variance", variance.len()), ("scale", scale.len())] {
        check_len("batch_norm_scale", name, len, c, || format!("{c} channels"))?;
    }
    for i in 0..c {
        scale[i] = (gamma[i] as f64 / (variance[i] as f64 + epsilon as f64).sqrt()) as f32;
    }
    Ok(())
}

/// Fixed statistics and their affine parameters, per channel: what [`batch_norm_fold`] folds.
#[derive(Debug, Clone, Copy)]
pub struct FixedNorm<'a> {
    pub gamma: &'a [f32],
    pub beta: &'a [f32],
    pub mean: &'a [f32],
    pub variance: &'a [f32],
    pub epsilon: f32,
}

/// Folds a normalisation with fixed statistics into the linear layer before it: for a layer
/// `z = x·kernel + bias` whose `kernel` is `rows × channels` row-major (a Dense kernel, or a
/// convolution's `kh × kw × in × channels`), writes `folded_kernel = kernel·scale` (per column)
/// and `folded_bias = (bias − mean)·scale + beta`, `scale = gamma / √(variance + ε)`, so that
/// `x·folded_kernel + folded_bias` is the normalised output in one product. Each value is
/// formed in f64 and rounded once. (Inference only: the layer's own rounding of `x·kernel`,
/// about one ulp of `|x|·|kernel|`, is then scaled as the unfolded normalisation scales it.)
pub fn batch_norm_fold(
    norm: &FixedNorm<'_>,
    (kernel, bias): (&[f32], &[f32]),
    (folded_kernel, folded_bias): (&mut [f32], &mut [f32]),
) -> Result<()> {
    let what = "batch_norm_fold";
    check_epsilon(norm.epsilon)?;
    let c = norm.gamma.len();
    let each = || format!("{c}-channel");
    for (name, len) in [
        ("beta", norm.beta.len()),
        ("mean", norm.mean.len()),
        ("variance", norm.variance.len()),
        ("bias", bias.len()),
        ("folded bias", folded_bias.len()),
    ] {
        check_len(what, name, len, c, each)?;
    }
    if c == 0 || kernel.len() % c != 0 {
        return Err(Error::ShapeMismatch {
            what,
            detail: format!(
                "the kernel has {} elements, not a whole number of rows of {c} channels",
                kernel.len()
            ),
        });
    }
    check_len(
        what,
        "folded kernel",
        folded_kernel.len(),
        kernel.len(),
        || format!("{} × {c}", kernel.len() / c),
    )?;
    // Run when the weights have changed (once per inference call after training), not per
    // step: the scales' one small allocation is not in a hot loop.
    let scale: Vec<f64> = (0..c)
        .map(|j| norm.gamma[j] as f64 / (norm.variance[j] as f64 + norm.epsilon as f64).sqrt())
        .collect();
    for (j, &s) in scale.iter().enumerate() {
        folded_bias[j] = ((bias[j] as f64 - norm.mean[j] as f64) * s + norm.beta[j] as f64) as f32;
    }
    for (row, out) in kernel
        .chunks_exact(c)
        .zip(folded_kernel.chunks_exact_mut(c))
    {
        for ((&w, o), &s) in row.iter().zip(out.iter_mut()).zip(&scale) {
            *o = (w as f64 * s) as f32;
        }
    }
    Ok(())
}

/// What the training backward pass returns per channel.
pub struct BatchNormGrads<'a> {
    pub dgamma: &'a mut [f32],
    pub dbeta: &'a mut [f32],
}

/// Training backward, through the batch statistics: with `x̂ = (x − mean)·inv_std`,
/// `dbeta = Σ dy`, `dgamma = Σ dy·x̂` and
/// `dx = gamma·inv_std·(dy − dbeta/rows − x̂·dgamma/rows)`; `dx` is written over.
///
/// With `after = Some((act, y))`, `dy` is the gradient of `y = act(normalised)` (the forward
/// output of [`batch_norm_forward_training`] with that activation): it is taken back through
/// the activation on the fly, element by element, in both passes (no pass of its own).
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_backward(
    opts: &ExecOptions,
    s: &BatchNorm,
    x: &[f32],
    dy: &[f32],
    after: Option<(Activation, &[f32])>,
    gamma: &[f32],
    (mean, inv_std): (&[f32], &[f32]),
    dx: Option<&mut [f32]>,
    mut grads: BatchNormGrads<'_>,
) -> Result<()> {
    let what = "batch_norm_backward";
    let len = s.len()?;
    check_len(what, "input x", x.len(), len, || desc(s))?;
    check_len(what, "output gradient dy", dy.len(), len, || desc(s))?;
    if let Some((_, y)) = after {
        check_len(what, "activation output y", y.len(), len, || desc(s))?;
    }
    if let Some(dx) = &dx {
        check_len(what, "input gradient dx", dx.len(), len, || desc(s))?;
    }
    check_backward_params(what, s, gamma, (mean, inv_std), &grads)?;
    if s.rows == 0 {
        grads.dgamma.fill(0.0);
        grads.dbeta.fill(0.0);
        return Ok(());
    }
    let isa = crate::Isa::resolve(opts.isa)?;
    let (n, c) = (s.rows as f64, s.channels);
    let mut dx = dx;
    // Half blocks: both sums of a channel share one accumulator array.
    for c0 in (0..c).step_by(HALF) {
        let w = HALF.min(c - c0);
        let (m, is) = (&mean[c0..c0 + w], &inv_std[c0..c0 + w]);
        // Σ dy and Σ dy·x̂ side by side: the first w entries and the next w.
        let sums = striped_sums(opts, s, |rows, acc| {
            let data = (
                &x[rows.start * c..rows.end * c],
                stripe_gradient(dy, after, rows, c),
            );
            let (sdy, rest) = acc.split_at_mut(w);
            // SAFETY: `isa` was resolved, so this CPU has it.
            unsafe { gradient_sums_rows(isa, data, c, c0, (m, is), sdy, &mut rest[..w]) }
        });
        let [k, mean_dy, mean_dyx] = block_gradients(&sums, (w, c0, n), gamma, is, &mut grads);
        if let Some(dx) = dx.as_deref_mut() {
            let sums = (&k[..w], &mean_dy[..w], &mean_dyx[..w]);
            striped_map(opts, s, dx, |rows, dx| {
                let data = (
                    &x[rows.start * c..rows.end * c],
                    stripe_gradient(dy, after, rows, c),
                );
                // SAFETY: as above.
                unsafe { input_gradient_rows(isa, data, c, c0, (m, is), sums, dx) }
            });
        }
    }
    Ok(())
}

/// A backward pass's per-channel arguments: γ, the statistics and the gradients' buffers, one
/// value per channel each.
pub(crate) fn check_backward_params(
    what: &'static str,
    s: &BatchNorm,
    gamma: &[f32],
    (mean, inv_std): (&[f32], &[f32]),
    grads: &BatchNormGrads<'_>,
) -> Result<()> {
    check_per_channel(
        what,
        s,
        [
            ("gamma", gamma.len()),
            ("mean", mean.len()),
            ("inv_std", inv_std.len()),
            ("dgamma", grads.dgamma.len()),
            ("dbeta", grads.dbeta.len()),
        ],
    )
}

/// That each named buffer holds one value per channel of `s`.
fn check_per_channel<const N: usize>(
    what: &'static str,
    s: &BatchNorm,
    lens: [(&'static str, usize); N],
) -> Result<()> {
    for (name, v) in lens {
        check_len(what, name, v, s.channels, || channels(s))?;
    }
    Ok(())
}

/// From a block's sums Σ g and Σ g·x̂ (the first `w` entries and the next `w`), over `n` rows:
/// dbeta and dgamma of the `w` channels at `c0` into `grads`, and the input gradient's factors
/// per channel (γ·1/σ, mean g, mean g·x̂; the first `w` of each).
fn block_gradients(
    sums: &[f64; BLOCK],
    (w, c0, n): (usize, usize, f64),
    gamma: &[f32],
    inv_std: &[f32],
    grads: &mut BatchNormGrads<'_>,
) -> [[f32; HALF]; 3] {
    let (sdy, sdyx) = (&sums[..w], &sums[w..2 * w]);
    let (mut k, mut mean_dy, mut mean_dyx) = ([0.0f32; HALF], [0.0f32; HALF], [0.0f32; HALF]);
    for i in 0..w {
        grads.dbeta[c0 + i] = sdy[i] as f32;
        grads.dgamma[c0 + i] = sdyx[i] as f32;
        k[i] = gamma[c0 + i] * inv_std[i];
        mean_dy[i] = (sdy[i] / n) as f32;
        mean_dyx[i] = (sdyx[i] / n) as f32;
    }
    [k, mean_dy, mean_dyx]
}

/// Rows of the gradient a [`backward_formed`] pass forms at a time, in multiples of this (as many
/// as fit a buffer on the stack of [`FORMED_FLOATS`] floats): 16 (one block of the vector loops'
/// f32 sums), fewer for rows wider than a sixteenth of the buffer.
const FORMED_ROWS: usize = 16;
/// The stack buffer of a [`backward_formed`] pass, in floats (16 KiB): rows of at most this many
/// channels.
pub(crate) const FORMED_FLOATS: usize = 4096;

/// `form(rows, out)`: the gradient of the normalised output on `rows` into `out`
/// (`rows.len() × channels`); returns how many of its nonzero sources it routed there.
pub(crate) type FormFn<'a> = dyn Fn(std::ops::Range<usize>, &mut [f32]) -> usize + Sync + 'a;

/// [`batch_norm_backward`] with the gradient of the normalised output (before any activation:
/// the caller's `form` applies it) formed a few rows at a time by `form`, never written whole:
/// for a gradient that is mostly zeros made from a smaller tensor (a max pooling's). Arguments
/// checked by the caller, `s.rows` ≥ 1, `s.channels` ≤ [`FORMED_FLOATS`]. This pass takes the
/// sums and writes `grads`; the input gradient is then the returned [`FormedInputGradient`]'s,
/// on whatever rows the caller wants it. The sums' pass counts what `form` routed; unless
/// `routed_ok` accepts the count, nothing is written and the result is `Ok(None)`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward_formed<'a>(
    opts: &ExecOptions,
    s: &'a BatchNorm,
    x: &'a [f32],
    form: &'a FormFn<'a>,
    routed_ok: impl Fn(usize) -> bool,
    (mean, inv_std): (&'a [f32], &'a [f32]),
    gamma: &[f32],
    mut grads: BatchNormGrads<'_>,
) -> Result<Option<FormedInputGradient<'a>>> {
    let isa = crate::Isa::resolve(opts.isa)?;
    let (n, c) = (s.rows as f64, s.channels);
    debug_assert!(s.rows >= 1 && (1..=FORMED_FLOATS).contains(&c));
    let mut ig = FormedInputGradient {
        isa,
        s,
        x,
        form,
        stats: (mean, inv_std),
        factors: [[0.0f32; FORMED_FLOATS]; 3],
    };
    // The input gradient's factors (γ·1/σ, mean g, mean g·x̂) of every channel: the sums take a
    // pass over the rows per block of channels, the input gradient then one pass for all of them
    // (its rows formed once, not once per block).
    let mut checked = false;
    for c0 in (0..c).step_by(HALF) {
        let w = HALF.min(c - c0);
        let (m, is) = (&mean[c0..c0 + w], &inv_std[c0..c0 + w]);
        let routed = std::sync::atomic::AtomicUsize::new(0);
        let sums = striped_sums(opts, s, |rows, acc| {
            let (sdy, rest) = acc.split_at_mut(w);
            let sdyx = &mut rest[..w];
            let count = ig.formed(rows, &mut |_, x, g| {
                let data = (x, OutputGradient { dy: g, after: None });
                // SAFETY: `isa` was resolved, so this CPU has it.
                unsafe { gradient_sums_rows(isa, data, c, c0, (m, is), sdy, sdyx) }
            });
            routed.fetch_add(count, std::sync::atomic::Ordering::Relaxed);
        });
        if !checked {
            if !routed_ok(routed.into_inner()) {
                return Ok(None);
            }
            checked = true;
        }
        let block = block_gradients(&sums, (w, c0, n), gamma, is, &mut grads);
        for (all, of_block) in ig.factors.iter_mut().zip(&block) {
            all[c0..c0 + w].copy_from_slice(&of_block[..w]);
        }
    }
    Ok(Some(ig))
}

/// What a [`FormedInputGradient`] does with each block of rows: `(rows, x of them, the gradient
/// formed for them)`.
type BlockFn<'a> = dyn FnMut(std::ops::Range<usize>, &[f32], &[f32]) + 'a;

/// The input gradient of a normalisation whose sums [`backward_formed`] took: for any rows,
/// each row's the same bits however the rows are cut.
pub(crate) struct FormedInputGradient<'a> {
    isa: crate::Isa,
    s: &'a BatchNorm,
    x: &'a [f32],
    form: &'a FormFn<'a>,
    stats: (&'a [f32], &'a [f32]),
    /// γ·1/σ, mean g and mean g·x̂ per channel.
    factors: [[f32; FORMED_FLOATS]; 3],
}

impl FormedInputGradient<'_> {
    /// For each block of `rows`: the gradient formed into a stack buffer, then `each(block
    /// rows, x of them, gradient of them)`; returns what `form` routed. A block is as many
    /// whole [`FORMED_ROWS`] blocks as the buffer holds (256 rows of 16 channels): the vector
    /// sums group rows by 16 from the start of what they are given, as over a whole stripe, so
    /// their bits are those of 16 rows at a time (the portable sums, which add each call's f64
    /// sums into the totals, group by call: within the portable loops' tolerance of the two
    /// passes, as before, and the same for every thread count). Formed and summed 16 rows at a
    /// time, each call of `form` and of `each` paid its set-up (finding the rows' image and
    /// window, divisions of each; the instruction set's dispatch) for 16 rows' work, and a
    /// profile of program F's first block backward (16 channels) had the forming loop at 8 % of
    /// the epoch.
    fn formed(&self, rows: std::ops::Range<usize>, each: &mut BlockFn<'_>) -> usize {
        let c = self.s.channels;
        // Whole FORMED_ROWS blocks where the buffer holds one, else what it holds (≥ 1 row).
        let fit = (FORMED_FLOATS / c).max(1);
        let block_rows = if fit >= FORMED_ROWS {
            fit / FORMED_ROWS * FORMED_ROWS
        } else {
            fit
        };
        let mut buffer = [0.0f32; FORMED_FLOATS];
        let mut routed = 0;
        let mut r = rows.start;
        while r < rows.end {
            let end = (r + block_rows).min(rows.end);
            let g = &mut buffer[..(end - r) * c];
            routed += (self.form)(r..end, g);
            each(r..end, &self.x[r * c..end * c], g);
            r = end;
        }
        routed
    }

    /// `dx` ← the input gradient of `rows` (`dx` holds exactly theirs).
    pub(crate) fn rows(&self, rows: std::ops::Range<usize>, dx: &mut [f32]) {
        let (c, isa) = (self.s.channels, self.isa);
        let (mean, inv_std) = self.stats;
        let [k, mean_dy, mean_dyx] = &self.factors;
        let first = rows.start;
        self.formed(rows, &mut |block, x, g| {
            let dx = &mut dx[(block.start - first) * c..(block.end - first) * c];
            for c0 in (0..c).step_by(HALF) {
                let span = c0..c0 + HALF.min(c - c0);
                let stats = (&mean[span.clone()], &inv_std[span.clone()]);
                let sums = (&k[span.clone()], &mean_dy[span.clone()], &mean_dyx[span]);
                let data = (x, OutputGradient { dy: g, after: None });
                // SAFETY: `isa` was resolved (by `backward_formed`), so this CPU has it.
                unsafe { input_gradient_rows(isa, data, c, c0, stats, sums, dx) }
            }
        });
    }

    /// `dx` ← the input gradient of every row, the stripes in parallel where `opts` allow.
    pub(crate) fn all_rows(&self, opts: &ExecOptions, dx: &mut [f32]) {
        striped_map(opts, self.s, dx, |rows, dx| self.rows(rows, dx));
    }
}

/// The output gradient of one stripe's rows: `dy`'s, with the activation's output there when
/// the gradient is taken back through one.
fn stripe_gradient<'a>(
    dy: &'a [f32],
    after: Option<(Activation, &'a [f32])>,
    rows: std::ops::Range<usize>,
    c: usize,
) -> OutputGradient<'a> {
    let range = rows.start * c..rows.end * c;
    OutputGradient {
        dy: &dy[range.clone()],
        after: after.map(|(act, y)| (act, &y[range])),
    }
}

/// The gradient a backward loop reads: `dy`, or `dy` of `act`'s output `y`.
#[derive(Clone, Copy)]
struct OutputGradient<'a> {
    dy: &'a [f32],
    after: Option<(Activation, &'a [f32])>,
}

impl<'a> OutputGradient<'a> {
    /// `(x, dy, (activation code, its output))` for the vector loops (`dy` in place of the
    /// output where there is no activation, unread).
    #[cfg(target_arch = "x86_64")]
    fn vector_arrays(self, x: &'a [f32]) -> (&'a [f32], &'a [f32], (u8, &'a [f32])) {
        let (act, y) = self.after.unwrap_or((Activation::Identity, self.dy));
        (x, self.dy, (vector::act_code(act), y))
    }
}

/// Σ g and Σ g·x̂ of some rows on the block of channels at `c0`: the vector loops where they
/// serve, the portable ones elsewhere.
///
/// # Safety
/// `isa` is available on this CPU.
unsafe fn gradient_sums_rows(
    isa: crate::Isa,
    data: (&[f32], OutputGradient<'_>),
    c: usize,
    c0: usize,
    stats: (&[f32], &[f32]),
    sdy: &mut [f64],
    sdyx: &mut [f64],
) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the caller's contract.
    if unsafe { vector::gradient_sums(isa, data.1.vector_arrays(data.0), c, c0, stats, sdy, sdyx) }
    {
        return;
    }
    // SAFETY: the caller's contract.
    unsafe { gradient_sums_loops::run(isa, data, c, c0, stats, sdy, sdyx) }
}

/// The input gradient of some rows on the block of channels at `c0`, `sums` = (γ·1/σ, mean g,
/// mean g·x̂): the vector loops where they serve, the portable ones elsewhere.
///
/// # Safety
/// `isa` is available on this CPU.
unsafe fn input_gradient_rows(
    isa: crate::Isa,
    data: (&[f32], OutputGradient<'_>),
    c: usize,
    c0: usize,
    stats: (&[f32], &[f32]),
    sums: (&[f32], &[f32], &[f32]),
    dx: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    {
        let (arrays, params) = (data.1.vector_arrays(data.0), [sums.0, sums.1, sums.2]);
        // SAFETY: the caller's contract.
        if unsafe { vector::input_gradient(isa, arrays, c, c0, stats, params, dx) } {
            return;
        }
    }
    // SAFETY: the caller's contract.
    unsafe { input_gradient_loops::run(isa, data, c, c0, stats, sums, dx) }
}

/// One stripe of `y = act((x − mean)·scale + beta)` on the block of channels at `c0`: the
/// vector loops where they serve, the portable ones elsewhere.
///
/// # Safety
/// `isa` is available on this CPU.
unsafe fn scale_shift_stripe(
    isa: crate::Isa,
    x: &[f32],
    c: usize,
    c0: usize,
    affine: (&[f32], &[f32], &[f32]),
    act: Activation,
    y: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the caller's contract.
    if unsafe { vector::scale_shift(isa, x, c, c0, [affine.0, affine.1, affine.2], act, y) } {
        return;
    }
    // SAFETY: the caller's contract.
    unsafe { scale_shift_loops::run(isa, x, c, c0, affine, act, y) }
}

/// Runs `$body` with `$grad` bound to a closure `(dy, y) -> dL/d(normalised)` for
/// `$after`'s activation, and `$y` to the slice the closure's `y` comes from (`$dy` itself,
/// unread, when there is no activation): one arm per activation, so that each loop is compiled
/// (and vectorised) with its own derivative inlined.
macro_rules! with_gradient {
    ($after:expr, $dy:expr, |$grad:ident, $y:ident| $body:expr) => {
        match $after {
            None | Some((Activation::Identity, _)) => {
                let ($grad, $y) = (|g: f32, _y: f32| g, $dy);
                $body
            }
            Some((Activation::Relu, y)) => {
                let ($grad, $y) = (|g: f32, y: f32| Activation::Relu.backward(y, g), y);
                $body
            }
            Some((Activation::Sigmoid, y)) => {
                let ($grad, $y) = (|g: f32, y: f32| Activation::Sigmoid.backward(y, g), y);
                $body
            }
            Some((Activation::Tanh, y)) => {
                let ($grad, $y) = (|g: f32, y: f32| Activation::Tanh.backward(y, g), y);
                $body
            }
        }
    };
}

/// Runs `$body` with `$f` bound to a closure `v -> act(v)` for `$act`: one arm per activation,
/// so that each loop is compiled with its own activation inlined.
macro_rules! with_activation {
    ($act:expr, |$f:ident| $body:expr) => {
        match $act {
            Activation::Identity => {
                let $f = |v: f32| v;
                $body
            }
            Activation::Relu => {
                let $f = |v: f32| Activation::Relu.apply(v);
                $body
            }
            Activation::Sigmoid => {
                let $f = |v: f32| Activation::Sigmoid.apply(v);
                $body
            }
            Activation::Tanh => {
                let $f = |v: f32| Activation::Tanh.apply(v);
                $body
            }
        }
    };
}
pub(crate) use with_activation;

fn desc(s: &BatchNorm) -> String {
    format!("{} rows × {} channels", s.rows, s.channels)
}

fn channels(s: &BatchNorm) -> String {
    format!("{} channels", s.channels)
}

/// Channels per step of the per-channel loops below: each step works on fixed-size arrays of
/// this many channels, which the compiler turns into vector instructions whatever the row
/// width. Written over the row's whole block with a run-time trip count, the loops stayed
/// scalar for the 16 and 32 channels of the reference CNNs (the compiler's vector loop wanted
/// twice the register width); measured on a 2-core Xeon (AVX-512), program F's normalisation
/// passes took 4.2 s of its 13.4 s epoch that way.
pub(crate) const LANES: usize = 8;

/// Runs the body with `i` = 0, LANES, 2·LANES, … for every whole step of LANES that fits in
/// `w` (the body takes its lanes `i..i + LANES` as arrays, see [`lanes`]); evaluates to where
/// the steps ended, from which the caller finishes element by element.
macro_rules! lane_steps {
    ($w:expr, |$i:ident| $body:block) => {{
        let mut $i = 0;
        while $i + LANES <= $w {
            $body
            $i += LANES;
        }
        $i
    }};
}
pub(crate) use lane_steps;

/// `s[i..i + LANES]` as an array.
#[inline(always)]
pub(crate) fn lanes(s: &[f32], i: usize) -> &[f32; LANES] {
    s[i..i + LANES].try_into().expect("LANES elements")
}

/// `s[i..i + LANES]` as a mutable array.
#[inline(always)]
pub(crate) fn lanes_mut<T>(s: &mut [T], i: usize) -> &mut [T; LANES] {
    (&mut s[i..i + LANES]).try_into().expect("LANES elements")
}

/// Runs `$body` with the constant `$groups` bound to `$w / LANES`, one of the listed counts
/// (those the block size allows): loops over `$groups` whole lane groups then unroll, and their
/// accumulators stay in registers (over a run-time count they lived in memory, stored back
/// every row, and the compiler left the loop scalar).
macro_rules! by_groups {
    ($w:expr, [$($g:literal)*], |$groups:ident| $body:expr) => {
        match $w / LANES {
            $(
                $g => {
                    const $groups: usize = $g;
                    $body
                }
            )*
            n => unreachable!("{n} lane groups: more than a block holds"),
        }
    };
}

/// Per channel of the block at `c0` (`s1.len()` channels of rows `c` wide, at most
/// [`HALF`]): Σ (x − shift) into `s1` and Σ (x − shift)² into `s2`, row by row in f64.
#[inline(always)]
fn column_sums_body(x: &[f32], c: usize, c0: usize, shift: &[f32], s1: &mut [f64], s2: &mut [f64]) {
    by_groups!(s1.len(), [0 1 2 3 4], |G| {
        column_sums_groups::<G>(x, c, c0, shift, s1, s2)
    })
}

/// [`column_sums_body`] for a block of `G` whole lane groups and a tail of fewer than LANES.
#[inline(always)]
fn column_sums_groups<const G: usize>(
    x: &[f32],
    c: usize,
    c0: usize,
    shift: &[f32],
    s1: &mut [f64],
    s2: &mut [f64],
) {
    let w = s1.len();
    let whole = G * LANES;
    let s2 = &mut s2[..w];
    let (mut a, mut b) = ([[0.0f64; LANES]; G], [[0.0f64; LANES]; G]);
    let centre: [[f64; LANES]; G] =
        std::array::from_fn(|g| lanes(shift, g * LANES).map(|v| v as f64));
    for row in x.chunks_exact(c) {
        let row = &row[c0..c0 + w];
        for g in 0..G {
            let v = lanes(row, g * LANES);
            for j in 0..LANES {
                let d = v[j] as f64 - centre[g][j];
                a[g][j] += d;
                b[g][j] += d * d;
            }
        }
        for i in whole..w {
            let d = row[i] as f64 - shift[i] as f64;
            s1[i] += d;
            s2[i] += d * d;
        }
    }
    for g in 0..G {
        for j in 0..LANES {
            s1[g * LANES + j] += a[g][j];
            s2[g * LANES + j] += b[g][j];
        }
    }
}

crate::dispatch::per_isa!(column_sums_loops, column_sums_body, column_sums_body,
    (x: &[f32], c: usize, c0: usize, shift: &[f32], s1: &mut [f64], s2: &mut [f64]));

/// `y = act((x − mean)·scale + beta)` on the block of channels at `c0` (`scale.len()` wide).
#[inline(always)]
fn scale_shift_body(
    x: &[f32],
    c: usize,
    c0: usize,
    affine: (&[f32], &[f32], &[f32]),
    act: Activation,
    y: &mut [f32],
) {
    with_activation!(act, |f| scale_shift_with(x, c, c0, affine, y, f))
}

#[inline(always)]
fn scale_shift_with(
    x: &[f32],
    c: usize,
    c0: usize,
    (mean, scale, beta): (&[f32], &[f32], &[f32]),
    y: &mut [f32],
    act: impl Fn(f32) -> f32,
) {
    let w = scale.len();
    let one = |x: f32, m: f32, s: f32, b: f32| act((x - m).mul_add(s, b));
    for (yr, xr) in y.chunks_exact_mut(c).zip(x.chunks_exact(c)) {
        let (yr, xr) = (&mut yr[c0..c0 + w], &xr[c0..c0 + w]);
        let done = lane_steps!(w, |i| {
            let (yv, xv) = (lanes_mut(yr, i), lanes(xr, i));
            let (m, sc, b) = (lanes(mean, i), lanes(scale, i), lanes(beta, i));
            for j in 0..LANES {
                yv[j] = one(xv[j], m[j], sc[j], b[j]);
            }
        });
        for i in done..w {
            yr[i] = one(xr[i], mean[i], scale[i], beta[i]);
        }
    }
}

crate::dispatch::per_isa!(scale_shift_loops, scale_shift_body, scale_shift_body,
    (x: &[f32], c: usize, c0: usize, affine: (&[f32], &[f32], &[f32]), act: Activation,
     y: &mut [f32]));

/// Per channel of the block at `c0`: Σ g and Σ g·x̂, row by row in f64, where g is the
/// gradient of the normalised output.
#[inline(always)]
fn gradient_sums_body(
    (x, out): (&[f32], OutputGradient<'_>),
    c: usize,
    c0: usize,
    stats: (&[f32], &[f32]),
    sdy: &mut [f64],
    sdyx: &mut [f64],
) {
    with_gradient!(out.after, out.dy, |grad, y| {
        gradient_sums_with((x, out.dy, y), c, c0, stats, sdy, sdyx, grad)
    })
}

/// [`gradient_sums_body`] with the gradient `grad(dy, y)`, for a block of at most
/// [`HALF`] channels.
#[inline(always)]
fn gradient_sums_with(
    data: (&[f32], &[f32], &[f32]),
    c: usize,
    c0: usize,
    stats: (&[f32], &[f32]),
    sdy: &mut [f64],
    sdyx: &mut [f64],
    grad: impl Fn(f32, f32) -> f32,
) {
    by_groups!(sdy.len(), [0 1 2 3 4], |G| {
        gradient_sums_groups::<G>(data, c, c0, stats, sdy, sdyx, &grad)
    })
}

/// [`gradient_sums_with`] for a block of `G` whole lane groups and a tail of fewer than LANES.
#[inline(always)]
fn gradient_sums_groups<const G: usize>(
    (x, dy, y): (&[f32], &[f32], &[f32]),
    c: usize,
    c0: usize,
    (mean, inv_std): (&[f32], &[f32]),
    sdy: &mut [f64],
    sdyx: &mut [f64],
    grad: &impl Fn(f32, f32) -> f32,
) {
    let w = sdy.len();
    let whole = G * LANES;
    let sdyx = &mut sdyx[..w];
    let (mut a, mut b) = ([[0.0f64; LANES]; G], [[0.0f64; LANES]; G]);
    let m: [[f32; LANES]; G] = std::array::from_fn(|g| *lanes(mean, g * LANES));
    let is: [[f32; LANES]; G] = std::array::from_fn(|g| *lanes(inv_std, g * LANES));
    for ((xr, gr), yr) in x
        .chunks_exact(c)
        .zip(dy.chunks_exact(c))
        .zip(y.chunks_exact(c))
    {
        let (xr, gr, yr) = (&xr[c0..c0 + w], &gr[c0..c0 + w], &yr[c0..c0 + w]);
        for g in 0..G {
            let i = g * LANES;
            let (xv, gv, yv) = (lanes(xr, i), lanes(gr, i), lanes(yr, i));
            for j in 0..LANES {
                let xhat = (xv[j] - m[g][j]) * is[g][j];
                let d = grad(gv[j], yv[j]);
                a[g][j] += d as f64;
                b[g][j] += (d * xhat) as f64;
            }
        }
        for i in whole..w {
            let xhat = (xr[i] - mean[i]) * inv_std[i];
            let d = grad(gr[i], yr[i]);
            sdy[i] += d as f64;
            sdyx[i] += (d * xhat) as f64;
        }
    }
    for g in 0..G {
        for j in 0..LANES {
            sdy[g * LANES + j] += a[g][j];
            sdyx[g * LANES + j] += b[g][j];
        }
    }
}

crate::dispatch::per_isa!(gradient_sums_loops, gradient_sums_body, gradient_sums_body,
    (data: (&[f32], OutputGradient<'_>), c: usize, c0: usize, stats: (&[f32], &[f32]),
     sdy: &mut [f64], sdyx: &mut [f64]));

/// `dx = k·(g − mean(g) − x̂·mean(g·x̂))` on the block of channels at `c0`, where g is the
/// gradient of the normalised output.
#[inline(always)]
fn input_gradient_body(
    (x, out): (&[f32], OutputGradient<'_>),
    c: usize,
    c0: usize,
    stats: (&[f32], &[f32]),
    sums: (&[f32], &[f32], &[f32]),
    dx: &mut [f32],
) {
    with_gradient!(out.after, out.dy, |grad, y| {
        input_gradient_with((x, out.dy, y), c, c0, stats, sums, dx, grad)
    })
}

#[inline(always)]
fn input_gradient_with(
    (x, dy, y): (&[f32], &[f32], &[f32]),
    c: usize,
    c0: usize,
    (mean, inv_std): (&[f32], &[f32]),
    (k, mean_dy, mean_dyx): (&[f32], &[f32], &[f32]),
    dx: &mut [f32],
    grad: impl Fn(f32, f32) -> f32,
) {
    let w = k.len();
    let one = |x: f32, g: f32, m: f32, is: f32, k: f32, mdy: f32, mdyx: f32| {
        let xhat = (x - m) * is;
        k * (g - mdy - xhat * mdyx)
    };
    for (((dr, xr), gr), yr) in dx
        .chunks_exact_mut(c)
        .zip(x.chunks_exact(c))
        .zip(dy.chunks_exact(c))
        .zip(y.chunks_exact(c))
    {
        let (dr, xr) = (&mut dr[c0..c0 + w], &xr[c0..c0 + w]);
        let (gr, yr) = (&gr[c0..c0 + w], &yr[c0..c0 + w]);
        let done = lane_steps!(w, |i| {
            let (d, xv, gv, yv) = (lanes_mut(dr, i), lanes(xr, i), lanes(gr, i), lanes(yr, i));
            let (m, is) = (lanes(mean, i), lanes(inv_std, i));
            let (kv, mdy, mdyx) = (lanes(k, i), lanes(mean_dy, i), lanes(mean_dyx, i));
            for j in 0..LANES {
                let g = grad(gv[j], yv[j]);
                d[j] = one(xv[j], g, m[j], is[j], kv[j], mdy[j], mdyx[j]);
            }
        });
        for i in done..w {
            let g = grad(gr[i], yr[i]);
            dr[i] = one(xr[i], g, mean[i], inv_std[i], k[i], mean_dy[i], mean_dyx[i]);
        }
    }
}

crate::dispatch::per_isa!(input_gradient_loops, input_gradient_body, input_gradient_body,
    (data: (&[f32], OutputGradient<'_>), c: usize, c0: usize, stats: (&[f32], &[f32]),
     sums: (&[f32], &[f32], &[f32]), dx: &mut [f32]));
