//! The direct forward convolution for one input channel, where im2col would write as many floats
//! per pixel as the GEMM then has multiply-adds per output (K = kernel_h·kernel_w, e.g. 9): the
//! GEMM's tiles would be mostly loads and stores of C.
//!
//! A block of [`PX`] output pixels gathers its patches into registers/stack, then each group of
//! [`LANES`] output channels is accumulated in `PX` vector registers over the taps (one weight
//! vector load serves `PX` pixels), starting from the bias; the block's outputs are written once
//! and the activation applied while they are in L1. Weights and bias are first copied into a
//! `taps × out_c` layout padded to whole lane groups. The loop is compiled per instruction set
//! like [`crate::math`]'s; the compiler keeps the fixed-size accumulators in registers.

use super::pooled_grads::PooledGrads;
use super::Conv2d;
use crate::activation::{bias_act_row, Activation, RowBias};
use crate::{Backend, Isa};

/// Output channels per accumulator (one AVX-512 register, two AVX2, four NEON).
pub(crate) const LANES: usize = 16;
/// Output pixels sharing each weight load.
const PX: usize = 4;
/// The largest kernel (taps) the direct path takes; larger ones go through im2col.
const MAX_TAPS: usize = 49;

/// Whether the direct path is the one for `s` (measured with the bench-suite conv group on
/// the reference CNN's first layer: several times faster than im2col + GEMM). Under the OpenBLAS
/// backend every convolution is im2col + its GEMM (the yardstick the report measures).
pub(crate) fn applies(s: &Conv2d, backend: Backend) -> bool {
    s.in_c == 1 && s.kernel_h * s.kernel_w <= MAX_TAPS && backend == Backend::Native
}

/// Output channels rounded up to whole lane groups.
pub(crate) fn padded_channels(s: &Conv2d) -> usize {
    s.out_c.next_multiple_of(LANES)
}

/// Floats [`pack`] writes: the bias row then one row per tap.
pub(crate) fn packed_len(s: &Conv2d) -> usize {
    (1 + s.kernel_h * s.kernel_w) * padded_channels(s)
}

/// `dst` ← [bias; w] with rows padded to [`padded_channels`] by zeros.
pub(crate) fn pack(s: &Conv2d, w: &[f32], bias: Option<&[f32]>, dst: &mut [f32]) {
    let (oc, ocp) = (s.out_c, padded_channels(s));
    dst.fill(0.0);
    if let Some(b) = bias {
        dst[..oc].copy_from_slice(b);
    }
    for (t, row) in w.chunks_exact(oc).enumerate() {
        dst[(1 + t) * ocp..][..oc].copy_from_slice(row);
    }
}

/// Lane groups accumulated in one pass over the taps: up to 4 × 16 = 64 output channels, so
/// that each broadcast input value feeds several FMAs.
const MAX_GROUPS: usize = 4;

#[inline(always)]
fn body<const FMA: bool>(
    s: &Conv2d,
    x: &[f32],
    packed: &[f32],
    pixels: std::ops::Range<usize>,
    y: &mut [f32],
) {
    let (ow, oh, oc) = (s.out_w(), s.out_h(), s.out_c);
    let ocp = padded_channels(s);
    let groups = ocp / LANES;
    let (pt, pl) = (s.pad_top() as isize, s.pad_left() as isize);
    let (sh, sw) = (s.stride_h as isize, s.stride_w as isize);
    let (kh, kw) = (s.kernel_h, s.kernel_w);
    let (in_h, in_w) = (s.in_h as isize, s.in_w as isize);
    let taps = kh * kw;
    let image_len = s.in_h * s.in_w;
    // Offset of each tap from the window's top-left input element.
    let mut offset = [0usize; MAX_TAPS];
    for ky in 0..kh {
        for kx in 0..kw {
            offset[ky * kw + kx] = ky * s.in_w + kx;
        }
    }
    let mut patch = [[0.0f32; MAX_TAPS]; PX];
    let mut p = pixels.start;
    // Over output rows (one division per row, none per pixel).
    while p < pixels.end {
        let (n, rest) = (p / (oh * ow), p % (oh * ow));
        let (oy, ox0) = ((rest / ow) as isize, rest % ow);
        let row_end = (p - ox0 + ow).min(pixels.end);
        let y0 = oy * sh - pt;
        let rows_inside = y0 >= 0 && y0 + kh as isize <= in_h;
        let mut ox = ox0 as isize;
        // Over blocks of PX pixels of the row.
        while p < row_end {
            let npx = PX.min(row_end - p);
            let x_first = ox * sw - pl;
            let x_last = (ox + npx as isize - 1) * sw - pl;
            let inside = rows_inside && x_first >= 0 && x_last + kw as isize <= in_w;
            let mut base = [0usize; PX];
            if inside {
                for (q, b) in base.iter_mut().enumerate() {
                    // Pixels past npx repeat the last one (computed, never stored).
                    let xq = x_first + q.min(npx - 1) as isize * sw;
                    *b = n * image_len + y0 as usize * s.in_w + xq as usize;
                }
            } else {
                for (q, pq) in patch.iter_mut().enumerate() {
                    pq[..taps].fill(0.0);
                    let xq = x_first + q.min(npx - 1) as isize * sw;
                    for ky in 0..kh {
                        for kx in 0..kw {
                            let (iy, ix) = (y0 + ky as isize, xq + kx as isize);
                            if iy >= 0 && ix >= 0 && iy < in_h && ix < in_w {
                                pq[ky * kw + kx] = x[n * image_len + (iy * in_w + ix) as usize];
                            }
                        }
                    }
                }
            }
            let out = &mut y[(p - pixels.start) * oc..][..npx * oc];
            let mut g0 = 0;
            while g0 < groups {
                let g = (groups - g0).min(MAX_GROUPS);
                let lanes = Lanes {
                    packed,
                    ocp,
                    f0: g0 * LANES,
                    taps,
                };
                macro_rules! run {
                    ($g:literal) => {
                        if inside {
                            // SAFETY: every pixel's window lies inside its image
                            // (`inside`), so base + offset indexes an element of that image
                            // within `x`, whose length the caller checked.
                            lanes.block::<FMA, $g>(out, oc, npx, |q, t| unsafe {
                                *x.get_unchecked(base[q] + offset[t])
                            })
                        } else {
                            lanes.block::<FMA, $g>(out, oc, npx, |q, t| patch[q][t])
                        }
                    };
                }
                match g {
                    1 => run!(1),
                    2 => run!(2),
                    3 => run!(3),
                    _ => run!(4),
                }
                g0 += g;
            }
            p += npx;
            ox += npx as isize;
        }
    }
}

/// The packed weights seen from one run of lane groups starting at output channel `f0`.
struct Lanes<'a> {
    packed: &'a [f32],
    ocp: usize,
    f0: usize,
    taps: usize,
}

impl Lanes<'_> {
    /// `G` lane groups of output channels for the block's `PX` pixels: bias plus, for each
    /// tap, `value(pixel, tap)` times the tap's weights (each weight vector serves all
    /// pixels, each input value all groups); then the first `npx` pixels' rows are stored.
    #[inline(always)]
    fn block<const FMA: bool, const G: usize>(
        &self,
        out: &mut [f32],
        oc: usize,
        npx: usize,
        value: impl Fn(usize, usize) -> f32,
    ) {
        let lanes = |row: usize, g: usize| -> &[f32; LANES] {
            self.packed[row * self.ocp + self.f0 + g * LANES..][..LANES]
                .try_into()
                .unwrap()
        };
        let mut acc = [[[0.0f32; LANES]; G]; PX];
        for aq in acc.iter_mut() {
            for (g, a) in aq.iter_mut().enumerate() {
                *a = *lanes(0, g);
            }
        }
        for t in 0..self.taps {
            let w: [&[f32; LANES]; G] = std::array::from_fn(|g| lanes(1 + t, g));
            for (q, aq) in acc.iter_mut().enumerate() {
                let v = value(q, t);
                for (a, wg) in aq.iter_mut().zip(&w) {
                    for l in 0..LANES {
                        // Rust never fuses a·b + c by itself; `mul_add` is one FMA where
                        // the set has it (and a slow libm call where it does not).
                        a[l] = if FMA {
                            v.mul_add(wg[l], a[l])
                        } else {
                            a[l] + v * wg[l]
                        };
                    }
                }
            }
        }
        // Stores index by a run-time count; done on a copy, so the accumulators themselves
        // are only ever indexed by constants and stay in registers.
        let done = acc;
        for (q, aq) in done.iter().enumerate().take(npx) {
            for (g, a) in aq.iter().enumerate() {
                let c0 = self.f0 + g * LANES;
                if c0 >= oc {
                    break;
                }
                let dst = &mut out[q * oc + c0..][..LANES.min(oc - c0)];
                if let Ok(dst) = <&mut [f32; LANES]>::try_from(&mut *dst) {
                    // A fixed-size store (a copy of a variable count is a memcpy call).
                    *dst = *a;
                } else {
                    store_partial(dst, a);
                }
            }
        }
    }
}

/// The last, partial lane group of a pixel's outputs; out of line, so that the compiler does
/// not merge it with the full-group store into one variable-length memcpy.
#[inline(never)]
fn store_partial(out: &mut [f32], acc: &[f32; LANES]) {
    out.copy_from_slice(&acc[..out.len()]);
}

crate::dispatch::per_isa!(forward_loops, body::<true>, body::<false>,
    (s: &Conv2d, x: &[f32], packed: &[f32], pixels: std::ops::Range<usize>, y: &mut [f32]));

/// The 'valid' convolution of the zero-padded input that a padded one-channel 3×3 convolution
/// is, when the explicit 3×3 kernel would take it (it wants every window inside its input):
/// the padding is then written into a copy of the images (a few hundred floats per image,
/// against nine multiply-adds per output channel per pixel) instead of being tested per pixel.
/// Measured on a 2-core Zen 4, program G's first layer ('same', 16 filters): the portable
/// kernel's forward ran at 27 GFLOP/s and its weight gradient at 13.
#[cfg(target_arch = "x86_64")]
fn padded_valid(s: &Conv2d, isa: Isa) -> Option<Conv2d> {
    let v = Conv2d {
        in_h: (s.out_h().checked_sub(1)?) * s.stride_h + s.kernel_h,
        in_w: (s.out_w().checked_sub(1)?) * s.stride_w + s.kernel_w,
        padding: super::Padding::Valid,
        ..*s
    };
    // Padding on some side (not a 'valid' convolution whose last rows or columns no window
    // reaches: that one needs no copy).
    let padded = (v.in_h, v.in_w) != (s.in_h, s.in_w);
    let fits = v.in_h >= s.in_h + s.pad_top() && v.in_w >= s.in_w + s.pad_left();
    (padded && fits && super::direct3x3::applies(&v, isa)).then_some(v)
}

/// Runs `f` on the images that output pixels `pixels` (whole images) come from, zero-padded
/// to `v`'s input size, with `v`'s batch set to their count and the pixels counted from the
/// first of them.
#[cfg(target_arch = "x86_64")]
fn with_padded<R>(
    s: &Conv2d,
    v: &Conv2d,
    x: &[f32],
    pixels: std::ops::Range<usize>,
    f: impl FnOnce(&Conv2d, &[f32], std::ops::Range<usize>) -> R,
) -> R {
    let opx = s.out_pixels();
    let (n0, n1) = (pixels.start / opx, pixels.end.div_ceil(opx));
    let (src, dst) = (s.in_h * s.in_w, v.in_h * v.in_w);
    let (pt, pl) = (s.pad_top(), s.pad_left());
    crate::scratch::PADDED.with((n1 - n0) * dst, (n1 - n0) * dst, |buf| {
        buf.fill(0.0);
        for (i, image) in buf.chunks_exact_mut(dst).enumerate() {
            let from = &x[(n0 + i) * src..][..src];
            for (r, row) in from.chunks_exact(s.in_w).enumerate() {
                image[(pt + r) * v.in_w + pl..][..s.in_w].copy_from_slice(row);
            }
        }
        let vs = Conv2d {
            batch: n1 - n0,
            ..*v
        };
        f(&vs, buf, pixels.start - n0 * opx..pixels.end - n0 * opx)
    })
}

/// `y` (the rows of output pixels `pixels`) ← act(conv + bias), with weights and bias as
/// [`pack`] laid them out. Pixels go in slabs small enough that the activation pass finds
/// them in L1.
pub(crate) fn forward(
    isa: Isa,
    s: &Conv2d,
    x: &[f32],
    packed: &[f32],
    act: Activation,
    pixels: std::ops::Range<usize>,
    y: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if let Some(v) = padded_valid(s, isa) {
        return with_padded(s, &v, x, pixels, |vs, xp, px| {
            forward(isa, vs, xp, packed, act, px, y)
        });
    }
    let oc = s.out_c;
    let slab = (2048 / oc).max(PX);
    for p0 in pixels.clone().step_by(slab) {
        let p1 = (p0 + slab).min(pixels.end);
        let ys = &mut y[(p0 - pixels.start) * oc..(p1 - pixels.start) * oc];
        #[cfg(target_arch = "x86_64")]
        if super::direct3x3::applies(s, isa) {
            let relu = act == Activation::Relu;
            let ocp = padded_channels(s);
            // SAFETY: the caller checked that this CPU has `isa`, which `applies` accepts.
            unsafe { super::direct3x3::forward(isa, s, x, packed, ocp, p0..p1, ys, relu) };
            if relu {
                continue;
            }
        } else {
            // SAFETY: the caller checked that this CPU has `isa`'s features.
            unsafe { forward_loops::run(isa, s, x, packed, p0..p1, ys) };
        }
        #[cfg(not(target_arch = "x86_64"))]
        // SAFETY: the caller checked that this CPU has `isa`'s features.
        unsafe {
            forward_loops::run(isa, s, x, packed, p0..p1, ys)
        };
        if act != Activation::Identity {
            // SAFETY: as above.
            unsafe { bias_act_row(isa, act, ys, RowBias::None) };
        }
    }
}

/// Taps accumulated at once by the weight gradient (a 3×3 kernel in one pass).
const TAP_BLOCK: usize = 9;
/// Lane groups accumulated at once by the weight gradient: 9 × 2 accumulators, 32 output
/// channels per pass over dy (AVX-512 keeps all 18 in registers; one group per pass read dy
/// twice and measured 1.3× slower on the reference layer).
const WG_GROUPS: usize = 2;

/// The weight gradient of a one-channel convolution without im2col: `dw[t][o] = Σ_p
/// x(p, t)·dy[p][o]` over the pixels `pixels`, written over `dw` (`taps × out_c`). For each
/// block of taps and output-channel lanes, the sums stay in registers for the whole pixel
/// range: per pixel, one load of dy's lanes and one broadcast per tap.
#[inline(always)]
fn weights_body<const FMA: bool>(
    s: &Conv2d,
    x: &[f32],
    dy: &[f32],
    pixels: std::ops::Range<usize>,
    dw: &mut [f32],
    db: &mut [f32],
) {
    let oc = s.out_c;
    let (pt, pl) = (s.pad_top() as isize, s.pad_left() as isize);
    let (sh, sw) = (s.stride_h as isize, s.stride_w as isize);
    let (kh, kw) = (s.kernel_h, s.kernel_w);
    let (in_h, in_w) = (s.in_h as isize, s.in_w as isize);
    let taps = kh * kw;
    let image_len = s.in_h * s.in_w;
    for t0 in (0..taps).step_by(TAP_BLOCK) {
        // The block's taps as (ky, kx) and offsets; past the last tap, tap t0 again
        // (computed, never stored).
        let tap = |i: usize| {
            let t = if t0 + i < taps { t0 + i } else { t0 };
            (t / kw, t % kw)
        };
        let offset: [usize; TAP_BLOCK] = std::array::from_fn(|i| {
            let (ky, kx) = tap(i);
            ky * s.in_w + kx
        });
        for f0 in (0..oc).step_by(LANES * WG_GROUPS) {
            let mut acc = [[[0.0f32; LANES]; WG_GROUPS]; TAP_BLOCK];
            // The bias gradient rides along with the first tap block (dy is read once).
            let mut acc_b = [[0.0f32; LANES]; WG_GROUPS];
            let mut at = super::PixelWalk::new(s, pixels.start);
            for p in pixels.clone() {
                // dy's lanes for this pixel, zero past out_c.
                let row = &dy[(p - pixels.start) * oc..][..oc];
                let g: [[f32; LANES]; WG_GROUPS] = std::array::from_fn(|gi| {
                    let c0 = f0 + gi * LANES;
                    match row.get(c0..c0 + LANES) {
                        Some(v) => v.try_into().unwrap(),
                        None => {
                            let mut v = [0.0; LANES];
                            if c0 < oc {
                                v[..oc - c0].copy_from_slice(&row[c0..]);
                            }
                            v
                        }
                    }
                });
                let (y0, x0) = (at.oy as isize * sh - pt, at.ox as isize * sw - pl);
                let inside =
                    y0 >= 0 && x0 >= 0 && y0 + kh as isize <= in_h && x0 + kw as isize <= in_w;
                let v: [f32; TAP_BLOCK] = if inside {
                    let base = at.n * image_len + (y0 * in_w + x0) as usize;
                    std::array::from_fn(|i| x[base + offset[i]])
                } else {
                    std::array::from_fn(|i| {
                        let (ky, kx) = tap(i);
                        let (iy, ix) = (y0 + ky as isize, x0 + kx as isize);
                        if iy >= 0 && ix >= 0 && iy < in_h && ix < in_w {
                            x[at.n * image_len + (iy * in_w + ix) as usize]
                        } else {
                            0.0
                        }
                    })
                };
                if t0 == 0 {
                    for (a, gg) in acc_b.iter_mut().zip(&g) {
                        for l in 0..LANES {
                            a[l] += gg[l];
                        }
                    }
                }
                for (at_t, &vt) in acc.iter_mut().zip(&v) {
                    for (a, gg) in at_t.iter_mut().zip(&g) {
                        for l in 0..LANES {
                            a[l] = if FMA {
                                vt.mul_add(gg[l], a[l])
                            } else {
                                a[l] + vt * gg[l]
                            };
                        }
                    }
                }
                at.advance();
            }
            if t0 == 0 {
                let done_b = acc_b;
                for (gi, a) in done_b.iter().enumerate() {
                    let c0 = f0 + gi * LANES;
                    if c0 < oc {
                        let n = LANES.min(oc - c0);
                        db[c0..c0 + n].copy_from_slice(&a[..n]);
                    }
                }
            }
            // Stores index by a run-time count; done on a copy, so the accumulators
            // themselves are only ever indexed by constants and stay in registers.
            let done = acc;
            for (i, at_t) in done.iter().enumerate().take(taps - t0) {
                let row = &mut dw[(t0 + i) * oc..][..oc];
                for (gi, a) in at_t.iter().enumerate() {
                    let c0 = f0 + gi * LANES;
                    if c0 < oc {
                        let n = LANES.min(oc - c0);
                        row[c0..c0 + n].copy_from_slice(&a[..n]);
                    }
                }
            }
        }
    }
}

crate::dispatch::per_isa!(weights_loops, weights_body::<true>, weights_body::<false>,
    (s: &Conv2d, x: &[f32], dy: &[f32], pixels: std::ops::Range<usize>, dw: &mut [f32],
     db: &mut [f32]));

/// `dw` (`taps × out_c`) ← Σ over `pixels` of patchᵀ·dy and `db` ← Σ dy, for a
/// one-channel input; `dy` holds the gradients of `pixels` only (`out_c` floats each).
pub(crate) fn backward_weights(
    isa: Isa,
    s: &Conv2d,
    x: &[f32],
    dy: &[f32],
    pixels: std::ops::Range<usize>,
    dw: &mut [f32],
    db: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if super::direct3x3::applies(s, isa) {
        // SAFETY: the caller checked that this CPU has `isa`, which `applies` accepts.
        return unsafe { super::direct3x3::backward_weights(isa, s, x, dy, pixels, dw, db) };
    }
    #[cfg(target_arch = "x86_64")]
    if let Some(v) = padded_valid(s, isa) {
        return with_padded(s, &v, x, pixels, |vs, xp, px| {
            backward_weights(isa, vs, xp, dy, px, dw, db)
        });
    }
    // SAFETY: the caller checked that this CPU has `isa`'s features.
    unsafe { weights_loops::run(isa, s, x, dy, pixels, dw, db) }
}

/// Whether [`backward_weights_pooled`] takes `s` on `isa`: where the explicit 3×3 kernel does.
pub(crate) fn takes_pooled(s: &Conv2d, isa: Isa) -> bool {
    // The pass compares argmax entries with an image's offsets in u32 lanes, up to a lane
    // group past its last channel.
    let offsets_fit = s
        .out_pixels()
        .checked_mul(s.out_c)
        .is_some_and(|len| len + 16 <= u32::MAX as usize);
    #[cfg(target_arch = "x86_64")]
    return offsets_fit && super::direct3x3::applies(s, isa);
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (isa, offsets_fit);
        false
    }
}

/// [`backward_weights`] over whole images from the max pooling that followed the convolution
/// (windows apart), where [`takes_pooled`]: the same bits as that pooling's backward pass then
/// [`backward_weights`], without the dense gradient between them. Returns the entries routed
/// (all of the images' unless an argmax lies outside its window).
///
/// # Panics
/// Where not [`takes_pooled`]`(s, isa)` (the caller asks first).
pub(crate) fn backward_weights_pooled(
    isa: Isa,
    s: &Conv2d,
    x: &[f32],
    pooled: PooledGrads<'_>,
    pixels: std::ops::Range<usize>,
    dw: &mut [f32],
    db: &mut [f32],
) -> usize {
    assert!(
        takes_pooled(s, isa),
        "the pooled weight pass does not take {s:?}"
    );
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the caller checked that this CPU has `isa`, which `applies` accepts (asserted).
    return unsafe { super::direct3x3::backward_weights_pooled(isa, s, x, pooled, pixels, dw, db) };
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (x, pooled, pixels, dw, db);
        0
    }
}
