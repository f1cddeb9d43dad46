//! One image of max pooling in explicit vectors, for channel counts that are whole vectors (the
//! compiler's vectorisation of the portable loop, with its NaN rule and argmax, measured as a
//! fifth of a CNN training step): written once over [`Vector`] and compiled for AVX-512 and AVX2.
//!
//! Per output position and vector of channels: the window's first input vector seeds the running
//! maximum `b` (and its offsets `a`); every position then replaces the lanes where
//! `!isnan(b) && !(v <= b)` — larger, or the window's first NaN — exactly the portable rule.

use std::arch::x86_64::{__m256, __m512};

use super::Pool2d;
use crate::arch::vector::Vector;

/// AVX-512 (`channels` a multiple of 16); see [`image`].
#[target_feature(enable = "avx512f")]
pub(super) fn image_avx512<const ARGMAX: bool>(
    s: &Pool2d,
    img: &[f32],
    yi: &mut [f32],
    ai: &mut [u32],
) {
    image::<__m512, ARGMAX>(s, img, yi, ai)
}

/// AVX2 (`channels` a multiple of 8); see [`image`].
#[target_feature(enable = "avx2,fma")]
pub(super) fn image_avx2<const ARGMAX: bool>(
    s: &Pool2d,
    img: &[f32],
    yi: &mut [f32],
    ai: &mut [u32],
) {
    image::<__m256, ARGMAX>(s, img, yi, ai)
}

/// One image (`channels` a multiple of `V::LANES`; runs only inside the entry points above, whose
/// instruction set `V` is). With `ARGMAX`, `ai` (as long as `yi`) gets each maximum's offset
/// within the image; without, `ai` is not touched. Loads and stores go through bounds-checked
/// slices of whole vectors.
#[inline(always)]
fn image<V: Vector, const ARGMAX: bool>(s: &Pool2d, img: &[f32], yi: &mut [f32], ai: &mut [u32]) {
    let (ow, c, in_w, lanes) = (s.out_w(), s.channels, s.in_w, V::LANES);
    assert!(c.is_multiple_of(lanes) && yi.len() == s.out_h() * ow * c);
    assert!(!ARGMAX || ai.len() == yi.len());
    // Offsets are u32 (`Pool2d::validate` bounds an image by 2³² elements).
    assert!(img.len() <= u32::MAX as usize);
    let load = |at: usize| {
        let v = &img[at..at + lanes];
        // SAFETY: `v` holds LANES floats; the instruction set is the caller's.
        unsafe { V::load(v.as_ptr()) }
    };
    // SAFETY: (all `offsets` calls) the instruction set is the caller's; `at` lies in the image.
    let offsets = |at: usize| unsafe { V::offsets(at) };
    let mut store = |o: usize, (b, a): (V, V::Offsets)| {
        let out = &mut yi[o..o + lanes];
        // SAFETY: `out` holds LANES floats; the instruction set is the caller's.
        unsafe { V::store(out.as_mut_ptr(), b) };
        if ARGMAX {
            let out = &mut ai[o..o + lanes];
            // SAFETY: `out` holds LANES u32.
            unsafe { V::store_offsets(out.as_mut_ptr(), a) };
        }
    };
    // `b` where it takes over from `a` (the sequential scan's step).
    let step = |(a, ia): (V, V::Offsets), (b, ib): (V, V::Offsets)| {
        // SAFETY: the instruction set is the caller's.
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
    if s.is_2x2_stride_2_valid() {
        // Keras's default pooling: the window's four vectors loaded at once and combined as a
        // tree, (0 ∘ 1) ∘ (2 ∘ 3). The rule is associative, so the tree gives the sequential
        // scan's value and argmax.
        for oy in 0..s.out_h() {
            for ox in 0..ow {
                let o = (oy * ow + ox) * c;
                let corner = (2 * oy * in_w + 2 * ox) * c;
                let at = [
                    corner,
                    corner + c,
                    corner + in_w * c,
                    corner + (in_w + 1) * c,
                ];
                for k in (0..c).step_by(lanes) {
                    let v = at.map(|a| (load(a + k), offsets(a + k)));
                    store(o + k, step(step(v[0], v[1]), step(v[2], v[3])));
                }
            }
        }
        return;
    }
    let pad = s.padding();
    for oy in 0..s.out_h() {
        for ox in 0..ow {
            let (y0, y1, x0, x1) = s.window(pad, oy, ox);
            let o = (oy * ow + ox) * c;
            for k in (0..c).step_by(lanes) {
                let first = (y0 * in_w + x0) * c + k;
                let mut best = (load(first), offsets(first));
                for iy in y0..y1 {
                    for ix in x0..x1 {
                        let at = (iy * in_w + ix) * c + k;
                        best = step(best, (load(at), offsets(at)));
                    }
                }
                store(o + k, best);
            }
        }
    }
}
