//! The one-input-channel direct convolution (forward, forward through a 2×2 max pooling, and
//! weight gradient) for 3×3 kernels whose windows all lie inside the input (no padding), in
//! explicit AVX-512 and AVX2: the first layer of an MNIST-style CNN.
//!
//! The portable direct kernel reloads each tap's weights per block of pixels and walks its taps
//! with run-time bounds, and its 16-lane accumulators outgrow AVX2's sixteen registers; here a
//! pass over the pixels holds `G` lane groups' weights for all nine taps in registers (AVX-512:
//! two groups, 18 of its 32 registers; AVX2: one group, 9 of 16), so a block of four pixels is
//! 36 broadcasts and 36·G FMAs and nothing else but its stores. One generic body serves both
//! instruction sets through [`Vector`] (shared with the GEMM's microkernels). Same operations in the same order as the portable kernel
//! (bias, then one FMA per tap in tap order): the same bits.

use std::arch::x86_64::*;

use super::pooled_grads::PooledGrads;
use super::Conv2d;
use crate::arch::vector::Vector;
use crate::Isa;

/// Taps of the kernel.
const TAPS: usize = 9;
/// Output pixels of one block of the forward pass (each weight vector serves all of them).
const PX: usize = 4;

/// Whether this kernel takes `s` on `isa`: one input channel, 3×3, every window inside the
/// input, and an instruction set it is written for.
pub(super) fn applies(s: &Conv2d, isa: Isa) -> bool {
    matches!(isa, Isa::Avx512 | Isa::Avx2)
        && s.in_c == 1
        && (s.kernel_h, s.kernel_w) == (3, 3)
        && s.pad_top() == 0
        && s.pad_left() == 0
        && s.out_h() > 0
        && s.out_w() > 0
        && (s.out_h() - 1) * s.stride_h + 3 <= s.in_h
        && (s.out_w() - 1) * s.stride_w + 3 <= s.in_w
}

/// `y` (the rows of output pixels `pixels`, `out_c` floats each) ← conv + bias, then ReLU if
/// `relu`, with `packed` as the portable kernel's `pack` laid it out: the bias row, then one row
/// per tap, each `ocp` (out_c rounded up to 16) floats.
///
/// # Safety
/// [`applies`]`(s, isa)`, and the CPU has `isa`.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn forward(
    isa: Isa,
    s: &Conv2d,
    x: &[f32],
    packed: &[f32],
    ocp: usize,
    pixels: std::ops::Range<usize>,
    y: &mut [f32],
    relu: bool,
) {
    assert!(applies(s, isa) && ocp.is_multiple_of(16) && ocp >= s.out_c);
    assert!(packed.len() >= (1 + TAPS) * ocp && x.len() >= s.input_len());
    assert!(pixels.end <= s.batch * s.out_pixels() && y.len() == pixels.len() * s.out_c);
    // SAFETY: the CPU has `isa` (caller's contract); the shapes were asserted.
    unsafe {
        match isa {
            Isa::Avx512 => forward_avx512(s, x, packed, ocp, Outputs::Pixels(pixels), y, relu),
            _ => forward_avx2(s, x, packed, ocp, Outputs::Pixels(pixels), y, relu),
        }
    }
}

/// What one call of the forward entry points computes: rows of output pixels ([`forward`]), or
/// whole images' pooled outputs and, where given, their argmax ([`forward_pooled`]).
enum Outputs<'a> {
    Pixels(std::ops::Range<usize>),
    PooledImages(std::ops::Range<usize>, Option<&'a mut [u32]>),
}

#[target_feature(enable = "avx512f")]
fn forward_avx512(
    s: &Conv2d,
    x: &[f32],
    packed: &[f32],
    ocp: usize,
    outputs: Outputs<'_>,
    y: &mut [f32],
    relu: bool,
) {
    forward_outputs::<__m512, 2>(s, x, packed, ocp, outputs, y, relu)
}

#[target_feature(enable = "avx2,fma")]
fn forward_avx2(
    s: &Conv2d,
    x: &[f32],
    packed: &[f32],
    ocp: usize,
    outputs: Outputs<'_>,
    y: &mut [f32],
    relu: bool,
) {
    forward_outputs::<__m256, 1>(s, x, packed, ocp, outputs, y, relu)
}

/// The entry points' body, `G` lane groups per pass.
#[inline(always)]
fn forward_outputs<V: Vector, const G: usize>(
    s: &Conv2d,
    x: &[f32],
    packed: &[f32],
    ocp: usize,
    outputs: Outputs<'_>,
    y: &mut [f32],
    relu: bool,
) {
    match outputs {
        Outputs::Pixels(pixels) => forward_passes::<V, G>(s, x, packed, ocp, pixels, y, relu),
        Outputs::PooledImages(images, argmax) => {
            pooled_passes::<V, G>(s, x, packed, ocp, images, y, argmax, relu)
        }
    }
}

/// The forward pass as passes of `G` lane groups (the last pass one group when `G` does not
/// divide them).
#[inline(always)]
fn forward_passes<V: Vector, const G: usize>(
    s: &Conv2d,
    x: &[f32],
    packed: &[f32],
    ocp: usize,
    pixels: std::ops::Range<usize>,
    y: &mut [f32],
    relu: bool,
) {
    let groups = s.out_c.div_ceil(V::LANES);
    let mut g0 = 0;
    while g0 < groups {
        let all = g0 + G <= groups;
        let px = pixels.clone();
        match (all, relu) {
            (true, true) => pass::<V, G, true>(s, x, packed, ocp, g0, px, y),
            (true, false) => pass::<V, G, false>(s, x, packed, ocp, g0, px, y),
            (false, true) => pass::<V, 1, true>(s, x, packed, ocp, g0, px, y),
            (false, false) => pass::<V, 1, false>(s, x, packed, ocp, g0, px, y),
        }
        g0 += if all { G } else { 1 };
    }
}

/// `y_pool` ← the 2×2, stride-2 'valid' max pooling of the activated convolution of images
/// `images` (their pooled pixels, `out_c` floats each, one image after another), with `packed`
/// as [`forward`] takes it: each pooling window's four output pixels computed together and only
/// their maximum stored — the convolution's output is never written, nor read back by a pooling
/// pass. With `argmax` (as long as `y_pool`), each maximum's offset within its image's
/// convolution output too, as the pooling writes it. The bits of [`forward`] then the pooling,
/// whichever path `pool::max_image` takes (its rule — the first NaN, else the first maximum —
/// is associative, so every order of the window's four gives the same value and argmax).
/// Output rows and columns past the last whole window (an odd output size) are not computed:
/// no window takes them.
///
/// # Safety
/// [`applies`]`(s, isa)`, and the CPU has `isa`.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn forward_pooled(
    isa: Isa,
    s: &Conv2d,
    x: &[f32],
    packed: &[f32],
    ocp: usize,
    images: std::ops::Range<usize>,
    y_pool: &mut [f32],
    argmax: Option<&mut [u32]>,
    relu: bool,
) {
    let pooled = (s.out_h() / 2) * (s.out_w() / 2) * s.out_c;
    assert!(applies(s, isa) && ocp.is_multiple_of(16) && ocp >= s.out_c);
    assert!(packed.len() >= (1 + TAPS) * ocp && x.len() >= s.input_len());
    assert!(images.end <= s.batch && y_pool.len() == images.len() * pooled);
    assert!(argmax.as_ref().is_none_or(|a| a.len() == y_pool.len()));
    // Offsets are u32: an image's convolution output is at most 2³² elements.
    assert!(s.out_pixels() * s.out_c <= u32::MAX as usize);
    // SAFETY: the CPU has `isa` (caller's contract); the shapes were asserted.
    unsafe {
        match isa {
            Isa::Avx512 => forward_avx512(
                s,
                x,
                packed,
                ocp,
                Outputs::PooledImages(images, argmax),
                y_pool,
                relu,
            ),
            _ => forward_avx2(
                s,
                x,
                packed,
                ocp,
                Outputs::PooledImages(images, argmax),
                y_pool,
                relu,
            ),
        }
    }
}

/// [`forward_pooled`] image by image, each in passes of `G` lane groups (the last pass one
/// group when `G` does not divide them) over its pooling windows: an image's input and pooled
/// output stay in L1 from one pass to the next (AVX2 takes four passes for 32 channels).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn pooled_passes<V: Vector, const G: usize>(
    s: &Conv2d,
    x: &[f32],
    packed: &[f32],
    ocp: usize,
    images: std::ops::Range<usize>,
    y: &mut [f32],
    mut argmax: Option<&mut [u32]>,
    relu: bool,
) {
    let groups = s.out_c.div_ceil(V::LANES);
    let pooled = (s.out_h() / 2) * (s.out_w() / 2) * s.out_c;
    if pooled == 0 {
        return;
    }
    for (i, (n, y)) in images.zip(y.chunks_exact_mut(pooled)).enumerate() {
        // The image's argmax (empty without: never touched then).
        let a = match argmax.as_deref_mut() {
            Some(argmax) => &mut argmax[i * pooled..(i + 1) * pooled],
            None => &mut [][..],
        };
        let mut g0 = 0;
        while g0 < groups {
            let all = g0 + G <= groups;
            let args = (s, x, packed, ocp, g0, n);
            match (all, relu, !a.is_empty()) {
                (true, true, true) => pooled_pass::<V, G, true, true>(args, y, a),
                (true, true, false) => pooled_pass::<V, G, true, false>(args, y, a),
                (true, false, true) => pooled_pass::<V, G, false, true>(args, y, a),
                (true, false, false) => pooled_pass::<V, G, false, false>(args, y, a),
                (false, true, true) => pooled_pass::<V, 1, true, true>(args, y, a),
                (false, true, false) => pooled_pass::<V, 1, true, false>(args, y, a),
                (false, false, true) => pooled_pass::<V, 1, false, true>(args, y, a),
                (false, false, false) => pooled_pass::<V, 1, false, false>(args, y, a),
            }
            g0 += if all { G } else { 1 };
        }
    }
}

/// One pass over every pooling window of image `n` for lane groups `g0 .. g0 + G`, into `y`
/// (the image's pooled output) and, with `ARGMAX`, `a` (its argmax, as long as `y`).
#[inline(always)]
fn pooled_pass<V: Vector, const G: usize, const RELU: bool, const ARGMAX: bool>(
    (s, x, packed, ocp, g0, n): (&Conv2d, &[f32], &[f32], usize, usize, usize),
    y: &mut [f32],
    a: &mut [u32],
) {
    let (ow, ph, pw, oc) = (s.out_w(), s.out_h() / 2, s.out_w() / 2, s.out_c);
    let (sh, sw, in_w) = (s.stride_h, s.stride_w, s.in_w);
    assert!(y.len() == ph * pw * oc && n < s.batch);
    assert!(!ARGMAX || a.len() == y.len());
    // SAFETY: runs inside `forward_avx512` / `forward_avx2`, on a CPU with their instruction set.
    let tile = unsafe { Tile::<V, G>::new(s, x, packed, ocp, g0) };
    // The window's four output pixels' offsets from its top-left one: that one, one to the
    // right, one down, one down and right (the pooling's order) — in the input, and in the
    // convolution's output (the argmax's offsets).
    let pixel_offsets = [0, sw, sh * in_w, sh * in_w + sw];
    let conv_offsets = [0, oc, ow * oc, (ow + 1) * oc];
    let (yp, ap) = (y.as_mut_ptr(), a.as_mut_ptr());
    let mut at = g0 * V::LANES;
    for py in 0..ph {
        let row = n * s.in_h * in_w + 2 * py * sh * in_w;
        for px in 0..pw {
            // The window's top-left output pixel's first lane of the pass in the image's
            // convolution output (below 2³², asserted by `forward_pooled`).
            let conv_at = (2 * py * ow + 2 * px) * oc + g0 * V::LANES;
            let window = Window {
                first: row + 2 * px * sw,
                pixel_offsets,
                conv_at,
                conv_offsets,
            };
            // SAFETY: output pixels (2py + 1, 2px + 1) and before lie inside the convolution's
            // output, so their windows inside x (`applies`; x's length asserted by
            // `forward_pooled`); pooled pixel (py, px)'s `oc` floats (and offsets, with ARGMAX)
            // from g0's first lane lie inside y (and a: their lengths asserted).
            unsafe { tile.pooled_block::<RELU, ARGMAX>(window, yp.add(at), ap.wrapping_add(at)) };
            at += oc;
        }
    }
}

/// One 2×2 pooling window of [`Tile::pooled_block`]: its four output pixels' windows' top-left
/// input elements at `x[first + pixel_offsets[q]]`, in pooling order (top left, top right,
/// bottom left, bottom right), and their first lanes of the pass at `conv_at +
/// conv_offsets[q]` in the image's convolution output.
#[derive(Clone, Copy)]
struct Window {
    first: usize,
    pixel_offsets: [usize; 4],
    conv_at: usize,
    conv_offsets: [usize; 4],
}

/// One pass over `pixels` for lane groups `g0 .. g0 + G`.
#[inline(always)]
fn pass<V: Vector, const G: usize, const RELU: bool>(
    s: &Conv2d,
    x: &[f32],
    packed: &[f32],
    ocp: usize,
    g0: usize,
    pixels: std::ops::Range<usize>,
    y: &mut [f32],
) {
    let (oh, ow, oc) = (s.out_h(), s.out_w(), s.out_c);
    let (sh, sw, in_w) = (s.stride_h, s.stride_w, s.in_w);
    let image_len = s.in_h * in_w;
    let lanes = V::LANES;
    // SAFETY: runs inside `forward_avx512` / `forward_avx2`, on a CPU with their instruction
    // set.
    let tile = unsafe { Tile::<V, G>::new(s, x, packed, ocp, g0) };
    let yp = y.as_mut_ptr();
    let mut p = pixels.start;
    while p < pixels.end {
        let (n, rest) = (p / (oh * ow), p % (oh * ow));
        let (oy, ox0) = (rest / ow, rest % ow);
        let row_end = (p - ox0 + ow).min(pixels.end);
        let row = n * image_len + oy * sh * in_w;
        let mut ix = ox0 * sw;
        // SAFETY (both blocks): pixels p.. of this output row are inside `pixels`, so their rows
        // of `oc` floats from g0's first lane are inside y (asserted length), and their windows
        // inside x (`applies`; x's length asserted by `forward`).
        while p + PX <= row_end {
            let at = (p - pixels.start) * oc + g0 * lanes;
            // SAFETY: as above.
            unsafe { tile.block::<RELU, PX>(row + ix, yp.add(at), oc) };
            p += PX;
            ix += PX * sw;
        }
        while p < row_end {
            let at = (p - pixels.start) * oc + g0 * lanes;
            // SAFETY: as above.
            unsafe { tile.block::<RELU, 1>(row + ix, yp.add(at), oc) };
            p += 1;
            ix += sw;
        }
    }
}

/// What one forward pass holds in registers: `G` lane groups' weights for the nine taps and
/// bias, their store masks, and where the input is.
struct Tile<V: Vector, const G: usize> {
    w: [[V; G]; TAPS],
    bias: [V; G],
    mask: [V::Mask; G],
    x: *const f32,
    in_w: usize,
    sw: usize,
}

impl<V: Vector, const G: usize> Tile<V, G> {
    /// Lane groups `g0 .. g0 + G`'s weights and bias from `packed` (as [`forward`] takes it).
    ///
    /// # Safety
    /// The CPU has `V`'s instruction set.
    #[inline(always)]
    unsafe fn new(s: &Conv2d, x: &[f32], packed: &[f32], ocp: usize, g0: usize) -> Self {
        let lanes = V::LANES;
        let group = |row: usize| -> [V; G] {
            std::array::from_fn(|g| {
                let v = &packed[row * ocp + (g0 + g) * lanes..][..lanes];
                // SAFETY: `v` holds LANES floats (bounds-checked slice); the CPU has the set
                // (this function's contract).
                unsafe { V::load(v.as_ptr()) }
            })
        };
        Tile {
            w: std::array::from_fn(|t| group(1 + t)),
            bias: group(0),
            mask: std::array::from_fn(|g| {
                // SAFETY: register arithmetic on a CPU with the set (this function's contract).
                unsafe { V::mask(s.out_c.saturating_sub((g0 + g) * lanes)) }
            }),
            x: x.as_ptr(),
            in_w: s.in_w,
            sw: s.stride_w,
        }
    }

    /// The four output pixels of one 2×2 pooling `window`, then their maximum by max pooling's
    /// rule, stored to `y` (the `G` groups' lanes, masked) and, with `ARGMAX`, its offset in
    /// the image's convolution output to `a`. Each pixel is [`Tile::block`]'s sum in its order
    /// (bias, then one FMA per tap), then the activation; the maximum is the vector pooling
    /// kernel's tree, (0 ∘ 1) ∘ (2 ∘ 3), its offsets chosen with it: the bits of the
    /// convolution then the pooling.
    ///
    /// # Safety
    /// The four windows lie inside `x`, and the pooled outputs inside y (and, with `ARGMAX`,
    /// their offsets inside a).
    #[inline(always)]
    unsafe fn pooled_block<const RELU: bool, const ARGMAX: bool>(
        &self,
        window: Window,
        y: *mut f32,
        a: *mut u32,
    ) {
        let Window {
            first,
            pixel_offsets,
            conv_at,
            conv_offsets,
        } = window;
        let mut acc = [self.bias; 4];
        for ky in 0..3 {
            for kx in 0..3 {
                let t = ky * 3 + kx;
                for (aq, &oq) in acc.iter_mut().zip(&pixel_offsets) {
                    // SAFETY: inside pixel q's window (caller's contract).
                    let v = unsafe { V::splat(self.x.add(first + oq + ky * self.in_w + kx)) };
                    for (a, &wg) in aq.iter_mut().zip(&self.w[t]) {
                        // SAFETY: register arithmetic on a CPU with the set.
                        *a = unsafe { V::fmadd(v, wg, *a) };
                    }
                }
            }
        }
        // `b` where it takes over from the running maximum `a`: the pooling's step, its
        // offsets chosen alike with ARGMAX (else left as they are: never stored).
        let step = |(a, ia): (V, V::Offsets), (b, ib): (V, V::Offsets)| {
            // SAFETY: register arithmetic on a CPU with the set.
            unsafe {
                let take = V::takes_over(b, a);
                let i = if ARGMAX {
                    V::choose_offsets(take, ia, ib)
                } else {
                    ia
                };
                (V::choose(take, a, b), i)
            }
        };
        for (g, &mask) in self.mask.iter().enumerate() {
            let lane0 = conv_at + g * V::LANES;
            let px: [(V, V::Offsets); 4] = std::array::from_fn(|q| {
                // SAFETY: register arithmetic on a CPU with the set; the offsets stay below
                // 2³² (the caller's image bound).
                unsafe {
                    let v = if RELU { V::relu(acc[q][g]) } else { acc[q][g] };
                    (v, V::offsets(lane0 + conv_offsets[q]))
                }
            });
            let (best, offsets) = step(step(px[0], px[1]), step(px[2], px[3]));
            // SAFETY: the pooled outputs (and with ARGMAX their offsets) are inside y (and a:
            // the caller's contract); the masks keep the stores to lanes below out_c.
            unsafe {
                V::store_live(y.add(g * V::LANES), mask, best);
                if ARGMAX {
                    V::store_offsets_live(a.add(g * V::LANES), mask, offsets);
                }
            }
        }
    }

    /// `N` consecutive output pixels of one row: the first window's top-left input element is
    /// `x[first]`; pixel q's outputs go to `y + q·oc` (its `G` groups' lanes, masked).
    ///
    /// # Safety
    /// The `N` windows lie inside `x`, and those outputs inside y.
    #[inline(always)]
    unsafe fn block<const RELU: bool, const N: usize>(&self, first: usize, y: *mut f32, oc: usize) {
        let mut acc = [self.bias; N];
        for ky in 0..3 {
            for kx in 0..3 {
                let t = ky * 3 + kx;
                for (q, aq) in acc.iter_mut().enumerate() {
                    // SAFETY: inside pixel q's window (caller's contract).
                    let v =
                        unsafe { V::splat(self.x.add(first + ky * self.in_w + q * self.sw + kx)) };
                    for (a, &wg) in aq.iter_mut().zip(&self.w[t]) {
                        // SAFETY: register arithmetic on a CPU with the set.
                        *a = unsafe { V::fmadd(v, wg, *a) };
                    }
                }
            }
        }
        for (q, aq) in acc.iter().enumerate() {
            for (g, &a) in aq.iter().enumerate() {
                // SAFETY: pixel q's outputs are inside y (caller's contract); the masks keep the
                // stores to lanes below out_c.
                unsafe {
                    let a = if RELU { V::relu(a) } else { a };
                    V::store_live(y.add(q * oc + g * V::LANES), self.mask[g], a);
                }
            }
        }
    }
}

/// The weight and bias gradients of the same layers: `dw` (9 × out_c) ← Σ over `pixels` of
/// patchᵀ·dy and `db` ← Σ dy, written over, with `dy` the gradients of `pixels` only. A pass
/// holds `G` lane groups' tap accumulators (all nine taps; on AVX2 two groups' taps 0–4 and
/// bias, then their taps 5–8: see `weights_avx2`) and bias accumulator in registers; per
/// pixel, a broadcast of the input per tap and the pixel's dy vectors. Same operations in the
/// same order as the portable kernel (from zero, pixel by pixel: one FMA per tap, one add for
/// the bias): the same bits.
///
/// # Safety
/// [`applies`]`(s, isa)`, and the CPU has `isa`.
pub(super) unsafe fn backward_weights(
    isa: Isa,
    s: &Conv2d,
    x: &[f32],
    dy: &[f32],
    pixels: std::ops::Range<usize>,
    dw: &mut [f32],
    db: &mut [f32],
) {
    let oc = s.out_c;
    assert!(applies(s, isa) && x.len() >= s.input_len());
    assert!(pixels.end <= s.batch * s.out_pixels() && dy.len() == pixels.len() * oc);
    assert!(dw.len() == TAPS * oc && db.len() == oc);
    let grads = DenseGrads {
        dy: dy.as_ptr(),
        first: pixels.start,
        oc,
    };
    // SAFETY: the CPU has `isa` (caller's contract); the shapes were asserted.
    unsafe {
        match isa {
            Isa::Avx512 => weights_avx512(s, x, &grads, pixels, dw, db),
            _ => weights_avx2(s, x, &grads, pixels, dw, db),
        }
    };
}

/// [`backward_weights`] with the output gradient read from the max pooling that followed the
/// convolution ([`PooledGrads`]) instead of from a dense array: the same bits as that pooling's
/// backward pass then [`backward_weights`], without writing (and reading back) the dense
/// gradient, three quarters zeros for 2×2 windows. Returns how many entries of `pooled` were
/// routed to a pixel: all of the images' unless some argmax lies outside its window.
///
/// # Safety
/// [`applies`]`(s, isa)`, and the CPU has `isa`.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn backward_weights_pooled(
    isa: Isa,
    s: &Conv2d,
    x: &[f32],
    pooled: PooledGrads<'_>,
    pixels: std::ops::Range<usize>,
    dw: &mut [f32],
    db: &mut [f32],
) -> usize {
    let oc = s.out_c;
    let (ph, pw) = pooled.out;
    let (sh, sw) = pooled.stride;
    assert!(applies(s, isa) && x.len() >= s.input_len());
    assert!(pixels.end <= s.batch * s.out_pixels() && dw.len() == TAPS * oc && db.len() == oc);
    // Windows apart and inside the convolution's output; whole images, all of them in `pooled`.
    assert!(pooled.window.0 <= sh && pooled.window.1 <= sw && sh > 0 && sw > 0);
    assert!(
        ph * sh <= s.out_h() + sh - pooled.window.0 && pw * sw <= s.out_w() + sw - pooled.window.1
    );
    let image = s.out_pixels();
    assert!(pixels.start.is_multiple_of(image) && pixels.end.is_multiple_of(image));
    let images = pixels.end / image - pixels.start / image;
    assert!(pixels.start / image >= pooled.first_image);
    let skipped = (pixels.start / image - pooled.first_image) * ph * pw * oc;
    assert!(pooled.g.len() >= skipped + images * ph * pw * oc);
    assert!(pooled.argmax.len() == pooled.g.len());
    let grads = PooledPixels {
        g: pooled.g.as_ptr(),
        argmax: pooled.argmax.as_ptr(),
        first_image: pooled.first_image,
        image_len: ph * pw * oc,
        window: pooled.window,
        stride: pooled.stride,
        out: pooled.out,
        ow: s.out_w(),
        oc,
        routed: std::cell::Cell::new(0),
    };
    // SAFETY: the CPU has `isa` (caller's contract); the shapes were asserted.
    unsafe {
        match isa {
            Isa::Avx512 => weights_avx512(s, x, &grads, pixels, dw, db),
            _ => weights_avx2(s, x, &grads, pixels, dw, db),
        }
    };
    grads.routed.get()
}

/// Where a weight pass reads each pixel's output gradient, a row of pixels at a time.
trait PixelGrads {
    /// Where a row's next pixel's gradient is (copied per pass, stepped per pixel).
    type Cursor: Copy;
    /// The cursor at pixel `p`, column `ox` of row `oy` of image `n`.
    fn cursor(&self, p: usize, n: usize, oy: usize, ox: usize) -> Self::Cursor;
    /// The cursor of the next pixel of the row.
    fn step(&self, at: &mut Self::Cursor);
    /// The gradient of lanes `c0 ..` (the live ones of `mask`) at `at`; the lanes it routes
    /// from pooled entries are counted in `counts`.
    ///
    /// # Safety
    /// The CPU has `V`'s instruction set; `at` is a pixel of the pass.
    unsafe fn load<V: Vector>(
        &self,
        at: &Self::Cursor,
        c0: usize,
        mask: V::Mask,
        counts: &mut V::Offsets,
    ) -> V;
    /// `n` more entries routed (a row's counts, from a pass's first reading of its lanes:
    /// passes over a split of the taps read them again).
    fn add_routed(&self, n: usize) {
        let _ = n;
    }
}

/// The gradients of pixels `first ..` in a dense array, `oc` floats each.
struct DenseGrads {
    dy: *const f32,
    first: usize,
    oc: usize,
}

impl PixelGrads for DenseGrads {
    /// The pixel's offset into `dy`.
    type Cursor = usize;
    #[inline(always)]
    fn cursor(&self, p: usize, _: usize, _: usize, _: usize) -> usize {
        (p - self.first) * self.oc
    }
    #[inline(always)]
    fn step(&self, at: &mut usize) {
        *at += self.oc;
    }
    #[inline(always)]
    unsafe fn load<V: Vector>(
        &self,
        at: &usize,
        c0: usize,
        mask: V::Mask,
        _: &mut V::Offsets,
    ) -> V {
        // SAFETY: the pixel has `oc` floats of dy at `at` (the caller's assertions); the mask
        // keeps the load to lanes below out_c.
        unsafe { V::load_live(self.dy.add(at + c0), mask) }
    }
}

/// [`PooledGrads`] as a pass reads it, counting the entries it routes.
struct PooledPixels {
    g: *const f32,
    argmax: *const u32,
    first_image: usize,
    image_len: usize,
    window: (usize, usize),
    stride: (usize, usize),
    out: (usize, usize),
    ow: usize,
    oc: usize,
    routed: std::cell::Cell<usize>,
}

/// A pixel as [`PooledPixels`] finds its gradient: its row's first pooled entry (`None` for a
/// row no window covers), its window's column and its column inside it, its own offset in the
/// image.
#[derive(Clone, Copy)]
struct PooledPixelCursor {
    row: Option<usize>,
    qx: usize,
    rx: usize,
    offset: usize,
}

impl PixelGrads for PooledPixels {
    type Cursor = PooledPixelCursor;
    #[inline(always)]
    fn cursor(&self, _: usize, n: usize, oy: usize, ox: usize) -> PooledPixelCursor {
        let qy = oy / self.stride.0;
        let covered = qy < self.out.0 && oy % self.stride.0 < self.window.0;
        PooledPixelCursor {
            row: covered
                .then(|| (n - self.first_image) * self.image_len + qy * self.out.1 * self.oc),
            qx: ox / self.stride.1,
            rx: ox % self.stride.1,
            offset: (oy * self.ow + ox) * self.oc,
        }
    }
    #[inline(always)]
    fn step(&self, at: &mut PooledPixelCursor) {
        at.rx += 1;
        if at.rx == self.stride.1 {
            at.rx = 0;
            at.qx += 1;
        }
        at.offset += self.oc;
    }
    #[inline(always)]
    unsafe fn load<V: Vector>(
        &self,
        at: &PooledPixelCursor,
        c0: usize,
        mask: V::Mask,
        counts: &mut V::Offsets,
    ) -> V {
        // SAFETY: register arithmetic on a CPU with the set; the entry of a covered pixel is
        // inside the pooled arrays (the caller's assertions), the mask keeps the loads below
        // out_c.
        unsafe {
            let Some(row) = at
                .row
                .filter(|_| at.qx < self.out.1 && at.rx < self.window.1)
            else {
                return V::zero();
            };
            let q = row + at.qx * self.oc + c0;
            let argmax = V::load_offsets_live(self.argmax.add(q), mask);
            // Dead lanes load 0, and their offsets here are at least out_c: never chosen.
            let hit = V::same_offsets(argmax, V::offsets(at.offset + c0));
            *counts = V::count_chosen(*counts, hit);
            V::choose(hit, V::zero(), V::load_live(self.g.add(q), mask))
        }
    }
    fn add_routed(&self, n: usize) {
        self.routed.set(self.routed.get() + n);
    }
}

#[target_feature(enable = "avx512f")]
fn weights_avx512<S: PixelGrads>(
    s: &Conv2d,
    x: &[f32],
    grads: &S,
    pixels: std::ops::Range<usize>,
    dw: &mut [f32],
    db: &mut [f32],
) {
    weights_passes::<__m512, 2, S>(s, x, grads, pixels, dw, db)
}

/// AVX2: two lane groups a pass over the taps in two halves (taps 0–4 with the bias, then
/// 5–8), not one group over all nine: 13 loads (9 broadcasts of the input, 4 of dy) per 18
/// FMAs rather than 20, and a pass over the pixels fed 16 channels — two groups' nine taps and
/// bias would take 20 accumulators of its 16 registers. The reference CNN's first layer at
/// batch 32 (32 channels), forced AVX2 on a Zen 4, medians of 7 interleaved runs: one thread
/// 160 → 141 µs, two 84 → 74; its pooled form in training (program C, two threads) 1.09×.
#[target_feature(enable = "avx2,fma")]
fn weights_avx2<S: PixelGrads>(
    s: &Conv2d,
    x: &[f32],
    grads: &S,
    pixels: std::ops::Range<usize>,
    dw: &mut [f32],
    db: &mut [f32],
) {
    let groups = s.out_c.div_ceil(__m256::LANES);
    let pairs = groups / 2 * 2;
    let mut g0 = 0;
    while g0 < pairs {
        weights_pass::<__m256, 2, S, 0, 5>(s, x, grads, pixels.clone(), g0, dw, db);
        weights_pass::<__m256, 2, S, 5, 4>(s, x, grads, pixels.clone(), g0, dw, db);
        g0 += 2;
    }
    if g0 < groups {
        weights_pass::<__m256, 1, S, 0, TAPS>(s, x, grads, pixels, g0, dw, db);
    }
}

#[inline(always)]
fn weights_passes<V: Vector, const G: usize, S: PixelGrads>(
    s: &Conv2d,
    x: &[f32],
    grads: &S,
    pixels: std::ops::Range<usize>,
    dw: &mut [f32],
    db: &mut [f32],
) {
    let groups = s.out_c.div_ceil(V::LANES);
    let mut g0 = 0;
    while g0 < groups {
        if g0 + G <= groups {
            weights_pass::<V, G, S, 0, TAPS>(s, x, grads, pixels.clone(), g0, dw, db);
            g0 += G;
        } else {
            weights_pass::<V, 1, S, 0, TAPS>(s, x, grads, pixels.clone(), g0, dw, db);
            g0 += 1;
        }
    }
}

/// One pass of [`backward_weights`] for lane groups `g0 .. g0 + G` and taps `T0 .. T0 + T`,
/// with the bias where `T0` is 0. Each tap's (and the bias's) accumulator takes the pixels in
/// the same order whichever pass it is in: the same bits for any split.
#[inline(always)]
fn weights_pass<V: Vector, const G: usize, S: PixelGrads, const T0: usize, const T: usize>(
    s: &Conv2d,
    x: &[f32],
    grads: &S,
    pixels: std::ops::Range<usize>,
    g0: usize,
    dw: &mut [f32],
    db: &mut [f32],
) {
    // The taps are the kernel's (the SAFETY notes below rely on it).
    const { assert!(T0 + T <= TAPS) };
    let (oh, ow, oc) = (s.out_h(), s.out_w(), s.out_c);
    let (sh, sw, in_w) = (s.stride_h, s.stride_w, s.in_w);
    let image_len = s.in_h * in_w;
    let lanes = V::LANES;
    let mask: [V::Mask; G] = std::array::from_fn(|g| {
        // SAFETY: register arithmetic on a CPU with the set.
        unsafe { V::mask(oc.saturating_sub((g0 + g) * lanes)) }
    });
    let off: [usize; T] = std::array::from_fn(|t| ((T0 + t) / 3) * in_w + (T0 + t) % 3);
    let with_bias = T0 == 0;
    // SAFETY: register arithmetic on a CPU with the set.
    let zero = unsafe { V::zero() };
    let mut acc = [[zero; G]; T];
    let mut bias = [zero; G];
    let xp = x.as_ptr();
    let mut p = pixels.start;
    while p < pixels.end {
        let (n, rest) = (p / (oh * ow), p % (oh * ow));
        let (oy, ox0) = (rest / ow, rest % ow);
        let row_end = (p - ox0 + ow).min(pixels.end);
        let mut base = n * image_len + oy * sh * in_w + ox0 * sw;
        let mut at = grads.cursor(p, n, oy, ox0);
        // The row's routed entries per lane (at most a row's pixels each): counted in
        // registers and summed once a row — a scalar count per pixel, through memory and a
        // popcount without its instruction, had made the pooled pass 2.2× the dense one.
        // SAFETY: register arithmetic on a CPU with the set.
        let mut counts = [unsafe { V::zero_counts() }; G];
        while p < row_end {
            // SAFETY: `at` is pixel p, one of the pass's; the masks keep the loads to lanes
            // below out_c.
            let g: [V; G] = std::array::from_fn(|gi| unsafe {
                grads.load::<V>(&at, (g0 + gi) * lanes, mask[gi], &mut counts[gi])
            });
            if with_bias {
                for (b, &gv) in bias.iter_mut().zip(&g) {
                    // SAFETY: register arithmetic on a CPU with the set.
                    *b = unsafe { V::add(*b, gv) };
                }
            }
            for (acc_t, &o) in acc.iter_mut().zip(&off) {
                // SAFETY: the window of pixel p lies inside its image (`applies`), and x holds
                // every image (asserted).
                let v = unsafe { V::splat(xp.add(base + o)) };
                for (a, &gv) in acc_t.iter_mut().zip(&g) {
                    // SAFETY: register arithmetic on a CPU with the set.
                    *a = unsafe { V::fmadd(v, gv, *a) };
                }
            }
            p += 1;
            grads.step(&mut at);
            base += sw;
        }
        if with_bias {
            // SAFETY: register arithmetic on a CPU with the set.
            grads.add_routed(counts.iter().map(|&c| unsafe { V::sum_counts(c) }).sum());
        }
    }
    let c0 = g0 * lanes;
    // SAFETY: dw holds 9 rows of `oc` floats and db `oc` (asserted); the masks keep the stores
    // to lanes below out_c.
    unsafe {
        let (dwp, dbp) = (dw.as_mut_ptr(), db.as_mut_ptr());
        if with_bias {
            for (g, &b) in bias.iter().enumerate() {
                V::store_live(dbp.add(c0 + g * lanes), mask[g], b);
            }
        }
        for (t, acc_t) in acc.iter().enumerate() {
            for (g, &a) in acc_t.iter().enumerate() {
                V::store_live(dwp.add((T0 + t) * oc + c0 + g * lanes), mask[g], a);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conv::Padding;

    #[target_feature(enable = "avx2,fma")]
    fn forward_avx2_two_groups(
        s: &Conv2d,
        x: &[f32],
        packed: &[f32],
        ocp: usize,
        y: &mut [f32],
        relu: bool,
    ) {
        let pixels = 0..s.batch * s.out_pixels();
        forward_passes::<__m256, 2>(s, x, packed, ocp, pixels, y, relu)
    }

    /// The weight pass over all nine taps with `G` lane groups a pass, on AVX2.
    #[target_feature(enable = "avx2,fma")]
    fn weights_avx2_groups<const G: usize>(
        s: &Conv2d,
        x: &[f32],
        dy: &[f32],
        dw: &mut [f32],
        db: &mut [f32],
    ) {
        let pixels = 0..s.batch * s.out_pixels();
        let grads = DenseGrads {
            dy: dy.as_ptr(),
            first: 0,
            oc: s.out_c,
        };
        weights_passes::<__m256, G, DenseGrads>(s, x, &grads, pixels, dw, db)
    }

    /// The bodies with two lane groups per pass (AVX-512's shape) give the bits of one group per
    /// pass, and so does AVX2's weight pass over the taps in two halves: checked on AVX2, so that
    /// a machine without AVX-512 runs the generic code AVX-512 uses, odd and even group counts
    /// and partial groups (inside a pair of groups too) alike.
    #[test]
    fn two_groups_per_pass_give_the_bits_of_one() {
        if !Isa::Avx2.is_available() {
            return;
        }
        let value = |i: usize| ((i * 7919) % 201) as f32 / 100.0 - 1.0;
        for (oc, stride) in [(8, 1), (12, 1), (15, 2), (17, 1), (24, 2), (32, 1), (40, 1)] {
            let s = Conv2d {
                stride_h: stride,
                stride_w: stride,
                ..Conv2d::square(2, (9, 11, 1), oc, 3, Padding::Valid)
            };
            assert!(applies(&s, Isa::Avx2));
            let ocp = oc.next_multiple_of(16);
            let x: Vec<f32> = (0..s.input_len()).map(value).collect();
            let packed: Vec<f32> = (0..(1 + TAPS) * ocp).map(|i| value(i + 5)).collect();
            let dy: Vec<f32> = (0..s.output_len()).map(|i| value(i + 11)).collect();
            let pixels = 0..s.batch * s.out_pixels();
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            for relu in [false, true] {
                let mut one = vec![f32::NAN; s.output_len()];
                let mut two = vec![f32::NAN; s.output_len()];
                // SAFETY: AVX2 is available (checked above) and `applies` holds.
                unsafe {
                    forward(
                        Isa::Avx2,
                        &s,
                        &x,
                        &packed,
                        ocp,
                        pixels.clone(),
                        &mut one,
                        relu,
                    );
                    forward_avx2_two_groups(&s, &x, &packed, ocp, &mut two, relu);
                }
                assert_eq!(
                    bits(&one),
                    bits(&two),
                    "forward, {oc} channels, relu {relu}"
                );
            }
            let gradients = |run: &dyn Fn(&mut [f32], &mut [f32])| {
                let (mut dw, mut db) = (vec![f32::NAN; TAPS * oc], vec![f32::NAN; oc]);
                run(&mut dw, &mut db);
                (bits(&dw), bits(&db))
            };
            let halves = gradients(&|dw, db| {
                // SAFETY: as above.
                unsafe { backward_weights(Isa::Avx2, &s, &x, &dy, pixels.clone(), dw, db) }
            });
            let one = gradients(&|dw, db| {
                // SAFETY: as above.
                unsafe { weights_avx2_groups::<1>(&s, &x, &dy, dw, db) }
            });
            let two = gradients(&|dw, db| {
                // SAFETY: as above.
                unsafe { weights_avx2_groups::<2>(&s, &x, &dy, dw, db) }
            });
            assert_eq!(halves, one, "weights in tap halves, {oc} channels");
            assert_eq!(two, one, "weights two groups a pass, {oc} channels");
        }
    }
}
