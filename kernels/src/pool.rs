//! 2-D max and average pooling on NHWC tensors, forward and backward.
//!
//! Windows of `pool_h × pool_w` positions, `stride_h`/`stride_w` apart, over each channel; the
//! output size and padding follow [`crate::window::output_len`] / [`crate::window::padding_before`]
//! (TensorFlow's rules). Positions in the padding take no part: a max ignores them, an average
//! divides by the number of positions inside the input (TensorFlow's `avg_pool`).
//!
//! Max pooling keeps, for every output element, the index of the input element it came from
//! (its offset within the image, `(iy·in_w + ix)·channels + c`), so the backward pass routes each
//! gradient to its source without comparing again (inference skips it). The backward pass can
//! also apply the derivative of the activation before the pooling, which at a window's argmax is
//! a function of the pooled value. A NaN in a window wins the max (NaN propagates). Loops run over the channels innermost (contiguous in NHWC), images in parallel.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::team::{for_each_piece, for_each_piece_pair};

#[cfg(target_arch = "x86_64")]
mod max_vector;

use crate::activation::Activation;
use crate::error::{check_len, Error, Result};
use crate::gemm::ExecOptions;
use crate::window::{output_len, padding_before, Padding};
use crate::Isa;

/// The shape of one pooling operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Pool2d {
    pub batch: usize,
    pub in_h: usize,
    pub in_w: usize,
    pub channels: usize,
    pub pool_h: usize,
    pub pool_w: usize,
    pub stride_h: usize,
    pub stride_w: usize,
    pub padding: Padding,
}

impl Pool2d {
    /// Keras's default: strides equal to the pool size, 'valid' padding.
    pub fn new(batch: usize, (in_h, in_w, channels): (usize, usize, usize), pool: usize) -> Self {
        Pool2d {
            batch,
            in_h,
            in_w,
            channels,
            pool_h: pool,
            pool_w: pool,
            stride_h: pool,
            stride_w: pool,
            padding: Padding::Valid,
        }
    }
    pub fn out_h(&self) -> usize {
        output_len(self.in_h, self.pool_h, self.stride_h, self.padding)
    }
    /// Keras's default: 2×2 windows, stride 2, no padding (the kernels' vector tree, the
    /// one-channel convolution's pooling in registers and average pooling's own loops serve
    /// it).
    pub(crate) fn is_2x2_stride_2_valid(&self) -> bool {
        (self.pool_h, self.pool_w, self.stride_h, self.stride_w) == (2, 2, 2, 2)
            && self.padding == Padding::Valid
    }
    pub fn out_w(&self) -> usize {
        output_len(self.in_w, self.pool_w, self.stride_w, self.padding)
    }
    pub(crate) fn image_len(&self) -> usize {
        self.in_h * self.in_w * self.channels
    }
    pub(crate) fn out_image_len(&self) -> usize {
        self.out_h() * self.out_w() * self.channels
    }
    pub fn input_len(&self) -> usize {
        self.batch * self.image_len()
    }
    pub fn output_len(&self) -> usize {
        self.batch * self.out_image_len()
    }

    /// Whether every input position lies in at most one window and windows start at the
    /// image's corner ('valid' padding, strides at least the window): then each input gradient is
    /// one window's or zero, and can be written in input order instead of scattered (what
    /// `norm_pool`'s fused passes need).
    pub fn windows_apart(&self) -> bool {
        self.padding == Padding::Valid
            && self.stride_h >= self.pool_h
            && self.stride_w >= self.pool_w
    }

    pub fn validate(&self) -> Result<()> {
        for (name, v) in [
            ("in_h", self.in_h),
            ("in_w", self.in_w),
            ("channels", self.channels),
            ("pool_h", self.pool_h),
            ("pool_w", self.pool_w),
            ("stride_h", self.stride_h),
            ("stride_w", self.stride_w),
        ] {
            if v == 0 {
                return Err(Error::InvalidArgument {
                    name,
                    value: "0".into(),
                    reason: "pooling dimensions and strides must be at least 1".into(),
                });
            }
        }
        if self.padding == Padding::Valid && (self.pool_h > self.in_h || self.pool_w > self.in_w) {
            return Err(Error::ShapeMismatch {
                what: "pool2d",
                detail: format!(
                    "a {}×{} pool does not fit a {}×{} input with 'valid' padding",
                    self.pool_h, self.pool_w, self.in_h, self.in_w
                ),
            });
        }
        let image = [self.in_h, self.in_w, self.channels]
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d));
        match image.and_then(|i| i.checked_mul(self.batch)) {
            // Argmax indices are stored as u32 offsets within an image.
            Some(_) if image.unwrap() <= u32::MAX as usize => Ok(()),
            _ => Err(Error::InvalidArgument {
                name: "pool2d shape",
                value: format!(
                    "{}×{}×{}×{}",
                    self.batch, self.in_h, self.in_w, self.channels
                ),
                reason: "an image must have at most 2³² elements".into(),
            }),
        }
    }

    pub(crate) fn desc_in(&self) -> String {
        format!(
            "{}×{}×{}×{}",
            self.batch, self.in_h, self.in_w, self.channels
        )
    }
    pub(crate) fn desc_out(&self) -> String {
        format!(
            "{}×{}×{}×{}",
            self.batch,
            self.out_h(),
            self.out_w(),
            self.channels
        )
    }

    /// The padding before the first row and column.
    fn padding(&self) -> (usize, usize) {
        (
            padding_before(self.in_h, self.pool_h, self.stride_h, self.padding),
            padding_before(self.in_w, self.pool_w, self.stride_w, self.padding),
        )
    }

    /// The input rows `y0..y1` and columns `x0..x1` under output position (oy, ox), given the
    /// padding `(pt, pl)` (computed once per call, not per window).
    #[inline(always)]
    fn window(
        &self,
        (pt, pl): (usize, usize),
        oy: usize,
        ox: usize,
    ) -> (usize, usize, usize, usize) {
        let y0 = (oy * self.stride_h) as isize - pt as isize;
        let x0 = (ox * self.stride_w) as isize - pl as isize;
        let clip = |v: isize, hi: usize| v.clamp(0, hi as isize) as usize;
        (
            clip(y0, self.in_h),
            clip(y0 + self.pool_h as isize, self.in_h),
            clip(x0, self.in_w),
            clip(x0 + self.pool_w as isize, self.in_w),
        )
    }
}

/// Max pooling forward: `y` gets each window's maximum per channel and, when given, `argmax` its
/// source's offset within the image (for [`max_pool2d_backward`]; inference passes `None` and
/// saves writing it). Both are written, never read.
pub fn max_pool2d_forward(
    opts: &ExecOptions,
    s: &Pool2d,
    x: &[f32],
    y: &mut [f32],
    argmax: Option<&mut [u32]>,
) -> Result<()> {
    s.validate()?;
    let what = "max_pool2d_forward";
    check_len(what, "input x", x.len(), s.input_len(), || s.desc_in())?;
    check_len(what, "output y", y.len(), s.output_len(), || s.desc_out())?;
    if let Some(argmax) = &argmax {
        check_len(what, "argmax", argmax.len(), s.output_len(), || {
            s.desc_out()
        })?;
    }
    if s.batch == 0 {
        return Ok(());
    }
    let isa = Isa::resolve(opts.isa)?;
    let (il, ol) = (s.image_len(), s.out_image_len());
    let image = |n: usize| &x[n * il..(n + 1) * il];
    match argmax {
        Some(argmax) => for_each_piece_pair(opts.threading, (y, ol), (argmax, ol), |n, yi, ai| {
            // SAFETY: `resolve` checked that this CPU has `isa`'s features.
            unsafe { max_image(isa, s, image(n), yi, Some(ai)) }
        }),
        None => for_each_piece(opts.threading, y, ol, |n, yi| {
            // SAFETY: as above.
            unsafe { max_image(isa, s, image(n), yi, None) }
        }),
    }
    Ok(())
}

/// One image of max pooling. Per output position: the window's first input row of channels is
/// copied, then each further position is folded in with a select (not a branch) per channel, so
/// the channel loop vectorises; the argmax variant carries u32 offsets alongside.
#[inline(always)]
fn max_image_body(s: &Pool2d, img: &[f32], yi: &mut [f32], ai: Option<&mut [u32]>) {
    let (ow, c) = (s.out_w(), s.channels);
    let pad = s.padding();
    // Take v over the running max b if larger, or if it is the window's first NaN.
    let take = |v: f32, b: f32| !b.is_nan() & ((v > b) | v.is_nan());
    match ai {
        None => {
            // Sixteen channels at a time in a local accumulator (one vector register), seeded
            // with −∞, which every value — NaN included — replaces as the window's first would.
            const L: usize = 16;
            let split = c / L * L;
            for oy in 0..s.out_h() {
                let (y0, y1, _, _) = s.window(pad, oy, 0);
                for ox in 0..ow {
                    let (_, _, x0, x1) = s.window(pad, oy, ox);
                    let yo = &mut yi[(oy * ow + ox) * c..][..c];
                    for (k, out) in yo[..split].chunks_exact_mut(L).enumerate() {
                        // The plain maximum, and apart the window's first NaN (0 until one).
                        let mut acc = [f32::NEG_INFINITY; L];
                        let mut nan = [0.0f32; L];
                        for iy in y0..y1 {
                            for ix in x0..x1 {
                                let src = &img[(iy * s.in_w + ix) * c + k * L..][..L];
                                for l in 0..L {
                                    let v = src[l];
                                    acc[l] = if v > acc[l] { v } else { acc[l] };
                                    nan[l] = if v.is_nan() & !nan[l].is_nan() {
                                        v
                                    } else {
                                        nan[l]
                                    };
                                }
                            }
                        }
                        for l in 0..L {
                            out[l] = if nan[l].is_nan() { nan[l] } else { acc[l] };
                        }
                    }
                    let rest = &mut yo[split..];
                    rest.fill(f32::NEG_INFINITY);
                    for iy in y0..y1 {
                        for ix in x0..x1 {
                            let src = &img[(iy * s.in_w + ix) * c + split..][..c - split];
                            for (b, &v) in rest.iter_mut().zip(src) {
                                *b = if take(v, *b) { v } else { *b };
                            }
                        }
                    }
                }
            }
        }
        Some(ai) => {
            for (o, (yo, ao)) in yi
                .chunks_exact_mut(c)
                .zip(ai.chunks_exact_mut(c))
                .enumerate()
            {
                let (y0, y1, x0, x1) = s.window(pad, o / ow, o % ow);
                let first = (y0 * s.in_w + x0) * c;
                yo.copy_from_slice(&img[first..first + c]);
                for (a, ch) in ao.iter_mut().zip(first as u32..) {
                    *a = ch;
                }
                for iy in y0..y1 {
                    for ix in x0..x1 {
                        let base = (iy * s.in_w + ix) * c;
                        let src = &img[base..base + c];
                        // Offsets fit in u32 (`validate`).
                        for ((b, a), (&v, at)) in yo
                            .iter_mut()
                            .zip(ao.iter_mut())
                            .zip(src.iter().zip(base as u32..))
                        {
                            let t = take(v, *b);
                            *b = if t { v } else { *b };
                            *a = if t { at } else { *a };
                        }
                    }
                }
            }
        }
    }
}

crate::dispatch::per_isa!(max_image_loops, max_image_body, max_image_body,
    (s: &Pool2d, img: &[f32], yi: &mut [f32], ai: Option<&mut [u32]>));

/// One image of max pooling compiled for `isa`.
///
/// # Safety
/// `isa` is available on this CPU.
pub(crate) unsafe fn max_image(
    isa: Isa,
    s: &Pool2d,
    img: &[f32],
    yi: &mut [f32],
    ai: Option<&mut [u32]>,
) {
    #[cfg(target_arch = "x86_64")]
    {
        let c = s.channels;
        let wide = isa == Isa::Avx512 && c.is_multiple_of(16);
        // AVX-512 CPUs have AVX2, for channel counts that are whole 8-lane vectors only.
        let narrow = matches!(isa, Isa::Avx512 | Isa::Avx2) && c.is_multiple_of(8);
        // SAFETY: (all five calls) the caller's contract; the chosen set is `isa`'s or part of
        // it.
        unsafe {
            match ai {
                Some(ai) if wide => max_vector::image_avx512::<true>(s, img, yi, ai),
                None if wide => max_vector::image_avx512::<false>(s, img, yi, &mut []),
                Some(ai) if narrow => max_vector::image_avx2::<true>(s, img, yi, ai),
                None if narrow => max_vector::image_avx2::<false>(s, img, yi, &mut []),
                ai => max_image_loops::run(isa, s, img, yi, ai),
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    // SAFETY: the caller's contract.
    unsafe {
        max_image_loops::run(isa, s, img, yi, ai)
    }
}

/// Max pooling backward: `dx` (written over) gets each output gradient at its window's argmax;
/// where windows overlap, contributions add up. An `argmax` entry that is not a position of its
/// window in its channel is an error naming it (`dx` is then unspecified).
pub fn max_pool2d_backward(
    opts: &ExecOptions,
    s: &Pool2d,
    dy: &[f32],
    argmax: &[u32],
    dx: &mut [f32],
) -> Result<()> {
    max_backward("max_pool2d_backward", opts, s, dy, argmax, None, dx)
}

/// The backward passes of an activation and the max pooling after it, in one: `dx` (written
/// over) is the gradient with respect to the activation's *input*, the pooling's gradient `dy`
/// times `act'` at each argmax. Every activation's derivative is a function of its output, and
/// the output at a window's argmax is the pooled value `y` (the pooling's forward output), so the
/// activation's own output is never read and `dx` is written once, not twice. The same as
/// [`max_pool2d_backward`] then [`crate::activation::activation_backward`] (bit for bit where
/// windows do not overlap).
pub fn max_pool2d_activation_backward(
    opts: &ExecOptions,
    s: &Pool2d,
    act: Activation,
    y: &[f32],
    dy: &[f32],
    argmax: &[u32],
    dx: &mut [f32],
) -> Result<()> {
    let what = "max_pool2d_activation_backward";
    check_len(what, "pooled output y", y.len(), s.output_len(), || {
        s.desc_out()
    })?;
    max_backward(what, opts, s, dy, argmax, Some((act, y)), dx)
}

/// That every `argmax` entry of image `n` is a position of its own window, in its own channel —
/// what the forward pass writes; the first entry that is not (past the image, in another window
/// or channel) is an error naming it. Per output position the window's candidate offsets are
/// compared with a whole run of channels at once (no division per entry: the loop over channels
/// vectorises).
fn check_argmax_image(s: &Pool2d, n: usize, argmax: &[u32]) -> Result<()> {
    const LANES: usize = 16;
    let (c, ow, in_w) = (s.channels, s.out_w(), s.in_w);
    let pad = s.padding();
    for oy in 0..s.out_h() {
        for ox in 0..ow {
            let (y0, y1, x0, x1) = s.window(pad, oy, ox);
            let q = (oy * ow + ox) * c;
            // Offsets within an image fit in u32 (`Pool2d::validate`).
            let first = ((y0 * in_w + x0) * c) as u32;
            for (run, entries) in argmax[q..q + c].chunks(LANES).enumerate() {
                let mut hit = [false; LANES];
                let first = first + (run * LANES) as u32;
                for wy in 0..y1 - y0 {
                    for wx in 0..x1 - x0 {
                        let at = first + ((wy * in_w + wx) * c) as u32;
                        for (lane, (h, &a)) in hit.iter_mut().zip(entries).enumerate() {
                            *h |= a == at + lane as u32;
                        }
                    }
                }
                if let Some(lane) = hit[..entries.len()].iter().position(|&h| !h) {
                    let ch = run * LANES + lane;
                    return Err(Error::InvalidArgument {
                        name: "argmax",
                        value: entries[lane].to_string(),
                        reason: format!(
                            "image {n}, output ({oy}, {ox}), channel {ch}: not a position of \
                             its window (rows {y0}..{y1}, columns {x0}..{x1}) in channel {ch}"
                        ),
                    });
                }
            }
        }
    }
    Ok(())
}

fn max_backward(
    what: &'static str,
    opts: &ExecOptions,
    s: &Pool2d,
    dy: &[f32],
    argmax: &[u32],
    through: Option<(Activation, &[f32])>,
    dx: &mut [f32],
) -> Result<()> {
    s.validate()?;
    check_len(what, "output gradient dy", dy.len(), s.output_len(), || {
        s.desc_out()
    })?;
    check_len(what, "argmax", argmax.len(), s.output_len(), || {
        s.desc_out()
    })?;
    check_len(what, "input gradient dx", dx.len(), s.input_len(), || {
        s.desc_in()
    })?;
    let image_len = s.image_len();
    if s.batch == 0 {
        return Ok(());
    }
    let isa = Isa::resolve(opts.isa)?;
    let out_len = s.out_image_len();
    let refused = AtomicBool::new(false);
    for_each_piece(opts.threading, dx, image_len, |n, dxi| {
        let (dyi, ai) = (
            &dy[n * out_len..][..out_len],
            &argmax[n * out_len..][..out_len],
        );
        let through = through.map(|(act, y)| (act, &y[n * out_len..][..out_len]));
        // SAFETY: `resolve` checked that this CPU has the path's features.
        if !unsafe { max_backward_image(isa, s, through, dyi, ai, dxi) } {
            refused.store(true, Ordering::Relaxed);
        }
    });
    if refused.into_inner() {
        return Err(argmax_error(argmax, s));
    }
    Ok(())
}

/// The error for an `argmax` that a backward pass found entries of outside their windows: the
/// first such entry, found by [`check_argmax_image`] image by image (run only then: the passes
/// count the entries that fall in their window as they go, at no cost worth measuring, where a
/// check before them doubled the time of the backward pass of the reference CNN's pooling).
pub(crate) fn argmax_error(argmax: &[u32], s: &Pool2d) -> Error {
    let out_len = s.out_image_len().max(1);
    argmax
        .chunks_exact(out_len)
        .enumerate()
        .find_map(|(n, image)| check_argmax_image(s, n, image).err())
        .unwrap_or(Error::InvalidArgument {
            name: "argmax",
            value: format!("{} entries", argmax.len()),
            reason: "an entry is not a position of its window".into(),
        })
}

/// [`max_pool2d_backward`] (or, with `through`, [`max_pool2d_activation_backward`], given the
/// image's pooled output) of one image, on `isa`. Returns whether every argmax entry is a
/// position of its window in its channel; when one is not, `dx` is left unspecified (windows
/// apart: the pass counts the entries it routes; overlapping windows: they are checked first, as
/// the scatter would write through them).
///
/// # Safety
/// `isa` is available on this CPU.
#[must_use]
pub(crate) unsafe fn max_backward_image(
    isa: Isa,
    s: &Pool2d,
    through: Option<(Activation, &[f32])>,
    dy: &[f32],
    argmax: &[u32],
    dx: &mut [f32],
) -> bool {
    if s.windows_apart() {
        let mut routed = 0;
        // SAFETY: the caller's contract.
        unsafe { backward_apart_loops::run(isa, s, through, dy, argmax, dx, &mut routed) };
        return routed == dy.len();
    }
    if check_argmax_image(s, 0, argmax).is_err() {
        return false;
    }
    dx.fill(0.0);
    match through {
        None => {
            for (&g, &a) in dy.iter().zip(argmax) {
                dx[a as usize] += g;
            }
        }
        Some((act, y)) => {
            for ((&g, &a), &v) in dy.iter().zip(argmax).zip(y) {
                dx[a as usize] += act.backward(v, g);
            }
        }
    }
    true
}

/// The scatter of [`max_backward_image`] for windows apart, as a pass in input order: position
/// (iy, ix) gets, in each channel, its window's (act'·)dy where it is the argmax and 0 elsewhere
/// — `0 + g`, as the scatter's zero-filled sum gives, so the same bits. The channel loop
/// vectorises (a compare and a select).
#[inline(always)]
fn backward_apart_body(
    s: &Pool2d,
    through: Option<(Activation, &[f32])>,
    dy: &[f32],
    argmax: &[u32],
    dx: &mut [f32],
    routed: &mut usize,
) {
    // Without an activation: the identity's derivative (g itself), `y` unread. One call per
    // activation, so each one's loop is compiled with it as a constant.
    let (act, y) = through.unwrap_or((Activation::Identity, dy));
    *routed = match act {
        Activation::Identity => backward_apart(s, Activation::Identity, y, dy, argmax, dx),
        Activation::Relu => backward_apart(s, Activation::Relu, y, dy, argmax, dx),
        Activation::Sigmoid => backward_apart(s, Activation::Sigmoid, y, dy, argmax, dx),
        Activation::Tanh => backward_apart(s, Activation::Tanh, y, dy, argmax, dx),
    };
}

#[inline(always)]
fn backward_apart(
    s: &Pool2d,
    act: Activation,
    y: &[f32],
    dy: &[f32],
    argmax: &[u32],
    dx: &mut [f32],
) -> usize {
    let (c, ow) = (s.channels, s.out_w());
    // Entries routed to their position: every one, unless some lie outside their window.
    let mut routed = 0;
    assert!(dy.len() == s.out_image_len() && argmax.len() == dy.len() && y.len() == dy.len());
    for (iy, row) in dx.chunks_exact_mut(s.in_w * c).enumerate() {
        let qy = iy / s.stride_h;
        if qy >= s.out_h() || iy % s.stride_h >= s.pool_h {
            row.fill(0.0);
            continue;
        }
        for (ix, px) in row.chunks_exact_mut(c).enumerate() {
            let qx = ix / s.stride_w;
            if qx >= ow || ix % s.stride_w >= s.pool_w {
                px.fill(0.0);
                continue;
            }
            let q = (qy * ow + qx) * c;
            let first = ((iy * s.in_w + ix) * c) as u32;
            let window = argmax[q..q + c].iter().zip(&dy[q..q + c]).zip(&y[q..q + c]);
            for ((d, ((&a, &g), &v)), ch) in px.iter_mut().zip(window).zip(0u32..) {
                let g = 0.0 + act.backward(v, g);
                let hit = a == first + ch;
                *d = if hit { g } else { 0.0 };
                routed += hit as usize;
            }
        }
    }
    routed
}

crate::dispatch::per_isa!(backward_apart_loops, backward_apart_body, backward_apart_body,
    (s: &Pool2d, through: Option<(Activation, &[f32])>, dy: &[f32], argmax: &[u32],
     dx: &mut [f32], routed: &mut usize));

/// Average pooling forward: each window's mean over the positions inside the input.
pub fn avg_pool2d_forward(opts: &ExecOptions, s: &Pool2d, x: &[f32], y: &mut [f32]) -> Result<()> {
    s.validate()?;
    let what = "avg_pool2d_forward";
    check_len(what, "input x", x.len(), s.input_len(), || s.desc_in())?;
    check_len(what, "output y", y.len(), s.output_len(), || s.desc_out())?;
    if s.batch == 0 {
        return Ok(());
    }
    let isa = Isa::resolve(opts.isa)?;
    let il = s.image_len();
    // SAFETY: `isa` was resolved, so this CPU has it.
    for_each_piece(opts.threading, y, s.out_image_len(), |n, yi| unsafe {
        avg_image_loops::run(isa, s, &x[n * il..(n + 1) * il], yi)
    });
    Ok(())
}

/// One image of average pooling: per output position the window's rows of channels summed in
/// scan order (the channel loop vectorises), then scaled by one over the positions inside.
#[inline(always)]
fn avg_image_body(s: &Pool2d, img: &[f32], yi: &mut [f32]) {
    if s.is_2x2_stride_2_valid() {
        return avg_image_2x2(s, img, yi);
    }
    let (ow, c) = (s.out_w(), s.channels);
    let pad = s.padding();
    // Output positions row by row: no division per position (with a few channels, two
    // divisions cost as much as the window's sums).
    for (oy, y_row) in yi.chunks_exact_mut(ow * c).enumerate() {
        for (ox, yo) in y_row.chunks_exact_mut(c).enumerate() {
            let (y0, y1, x0, x1) = s.window(pad, oy, ox);
            yo.fill(0.0);
            for iy in y0..y1 {
                for ix in x0..x1 {
                    let src = &img[(iy * s.in_w + ix) * c..][..c];
                    for (b, &v) in yo.iter_mut().zip(src) {
                        *b += v;
                    }
                }
            }
            let inv = 1.0 / ((y1 - y0) * (x1 - x0)) as f32;
            yo.iter_mut().for_each(|b| *b *= inv);
        }
    }
}

/// [`avg_image_body`] for 2×2 windows at stride 2 without padding (every window whole): each
/// output's four inputs summed in the same order from zero, then scaled by 1/4, the channels in
/// one loop the compiler vectorises. The general loop — a window's rows and columns around a
/// loop over the channels, the output zeroed first — took 6 % of a batch-1000 forward pass of
/// program G (its 28×28×16 pooling) in a profile on two Zen 4 threads.
#[inline(always)]
fn avg_image_2x2(s: &Pool2d, img: &[f32], yi: &mut [f32]) {
    let (ow, c, row) = (s.out_w(), s.channels, s.in_w * s.channels);
    for (oy, y_row) in yi.chunks_exact_mut(ow * c).enumerate() {
        let top = &img[2 * oy * row..][..row];
        let bottom = &img[(2 * oy + 1) * row..][..row];
        let pairs = top.chunks_exact(2 * c).zip(bottom.chunks_exact(2 * c));
        for (yo, (t, b)) in y_row.chunks_exact_mut(c).zip(pairs) {
            let (t0, t1) = t.split_at(c);
            let (b0, b1) = b.split_at(c);
            let inputs = t0.iter().zip(t1).zip(b0.iter().zip(b1));
            for (y, ((&p, &q), (&r, &u))) in yo.iter_mut().zip(inputs) {
                *y = ((((0.0 + p) + q) + r) + u) * 0.25;
            }
        }
    }
}

crate::dispatch::per_isa!(avg_image_loops, avg_image_body, avg_image_body,
    (s: &Pool2d, img: &[f32], yi: &mut [f32]));

/// One image of [`avg_pool2d_forward`] (its arithmetic: the same bits), `yi` ← the pooling of
/// `img`.
///
/// # Safety
/// This CPU has `isa`.
pub(crate) unsafe fn avg_image(isa: Isa, s: &Pool2d, img: &[f32], yi: &mut [f32]) {
    // SAFETY: the caller's contract.
    unsafe { avg_image_loops::run(isa, s, img, yi) }
}

/// One image of average pooling's backward pass: each output gradient spread over its window.
#[inline(always)]
fn avg_backward_body(s: &Pool2d, dxi: &mut [f32], dyi: &[f32]) {
    if s.is_2x2_stride_2_valid() {
        return avg_backward_2x2(s, dxi, dyi);
    }
    let (ow, c) = (s.out_w(), s.channels);
    let pad = s.padding();
    dxi.fill(0.0);
    // Row by row, as the forward pass.
    for (oy, dy_row) in dyi.chunks_exact(ow * c).enumerate() {
        for (ox, g) in dy_row.chunks_exact(c).enumerate() {
            let (y0, y1, x0, x1) = s.window(pad, oy, ox);
            let inv = 1.0 / ((y1 - y0) * (x1 - x0)) as f32;
            for iy in y0..y1 {
                for ix in x0..x1 {
                    let dst = &mut dxi[(iy * s.in_w + ix) * c..][..c];
                    for (d, &v) in dst.iter_mut().zip(g) {
                        *d += v * inv;
                    }
                }
            }
        }
    }
}

/// [`avg_backward_body`] for 2×2 windows at stride 2 without padding: the windows do not
/// overlap, so each input position gets `0 + g/4` of its one window (the general loop's sum
/// from zero, the same bits) written once, and the last row and column a window leaves out of
/// an odd side zero, where the general loop zeroes all of `dxi` and adds every window into it.
#[inline(always)]
fn avg_backward_2x2(s: &Pool2d, dxi: &mut [f32], dyi: &[f32]) {
    let (ow, c, row) = (s.out_w(), s.channels, s.in_w * s.channels);
    let (covered_rows, covered) = (2 * s.out_h(), 2 * ow * c);
    let (dx_windows, dx_below) = dxi.split_at_mut(covered_rows * row);
    dx_below.fill(0.0);
    for (dx_rows, g_row) in dx_windows
        .chunks_exact_mut(2 * row)
        .zip(dyi.chunks_exact(ow * c))
    {
        let (top, bottom) = dx_rows.split_at_mut(row);
        for dx in [top, bottom] {
            let (dx_pairs, dx_right) = dx.split_at_mut(covered);
            dx_right.fill(0.0);
            for (pair, g) in dx_pairs.chunks_exact_mut(2 * c).zip(g_row.chunks_exact(c)) {
                let (left, right) = pair.split_at_mut(c);
                for ((l, r), &v) in left.iter_mut().zip(right).zip(g) {
                    let share = 0.0 + v * 0.25;
                    (*l, *r) = (share, share);
                }
            }
        }
    }
}

crate::dispatch::per_isa!(avg_backward_loops, avg_backward_body, avg_backward_body,
    (s: &Pool2d, dxi: &mut [f32], dyi: &[f32]));

/// One image of [`avg_pool2d_backward`] (its arithmetic: the same bits), `dxi` ← the gradient
/// spread from `dyi`.
///
/// # Safety
/// This CPU has `isa`.
pub(crate) unsafe fn avg_backward_image(isa: Isa, s: &Pool2d, dxi: &mut [f32], dyi: &[f32]) {
    // SAFETY: the caller's contract.
    unsafe { avg_backward_loops::run(isa, s, dxi, dyi) }
}

/// Average pooling backward: each output gradient spread evenly over its window's positions
/// inside the input; `dx` is written over.
pub fn avg_pool2d_backward(
    opts: &ExecOptions,
    s: &Pool2d,
    dy: &[f32],
    dx: &mut [f32],
) -> Result<()> {
    s.validate()?;
    let what = "avg_pool2d_backward";
    check_len(what, "output gradient dy", dy.len(), s.output_len(), || {
        s.desc_out()
    })?;
    check_len(what, "input gradient dx", dx.len(), s.input_len(), || {
        s.desc_in()
    })?;
    if s.batch == 0 {
        return Ok(());
    }
    let isa = Isa::resolve(opts.isa)?;
    let ol = s.out_image_len();
    // SAFETY: `isa` was resolved, so this CPU has it.
    for_each_piece(opts.threading, dx, s.image_len(), |n, dxi| unsafe {
        avg_backward_loops::run(isa, s, dxi, &dy[n * ol..(n + 1) * ol])
    });
    Ok(())
}
