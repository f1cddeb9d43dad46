//! One image of max pooling in explicit AVX-512 / AVX2 vectors, for channel counts that are whole
//! vectors (the compiler's vectorisation of the portable loop, with its NaN rule and argmax,
//! measured as a fifth of a CNN training step).
//!
//! Per output position and vector of channels: the window's first input vector seeds the running
//! maximum `b` (and its offsets `a`); every position then replaces the lanes where
//! `!isnan(b) && !(v <= b)` — larger, or the window's first NaN — exactly the portable rule.

use std::arch::x86_64::*;

use super::Pool2d;

/// Lane offsets 0, 1, … within a vector of channels.
const IOTA: [i32; 16] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];

/// Keras's default: 2×2 windows, stride 2, no padding.
fn is_2x2(s: &Pool2d) -> bool {
    (s.pool_h, s.pool_w, s.stride_h, s.stride_w) == (2, 2, 2, 2)
        && s.padding == crate::window::Padding::Valid
}

/// AVX-512 (`channels` a multiple of 16). With `ARGMAX`, `ai` (as long as `yi`) gets each
/// maximum's offset within the image; without, `ai` is not touched.
#[target_feature(enable = "avx512f")]
pub(super) fn image_avx512<const ARGMAX: bool>(
    s: &Pool2d,
    img: &[f32],
    yi: &mut [f32],
    ai: &mut [u32],
) {
    let (ow, c, in_w) = (s.out_w(), s.channels, s.in_w);
    assert!(c.is_multiple_of(16) && yi.len() == s.out_h() * ow * c);
    assert!(!ARGMAX || ai.len() == yi.len());
    let pad = s.padding();
    // SAFETY: IOTA holds 16 i32.
    let iota = unsafe { _mm512_loadu_si512(IOTA.as_ptr().cast()) };
    let load = |at: usize| {
        let v = &img[at..at + 16];
        // SAFETY: `v` holds 16 floats (the slice above is bounds-checked).
        unsafe { _mm512_loadu_ps(v.as_ptr()) }
    };
    if is_2x2(s) {
        // Keras's default pooling: the window's four vectors loaded at once and combined as a
        // tree, (0 ∘ 1) ∘ (2 ∘ 3), where a ∘ b takes b where it is larger or the first NaN.
        // The rule is associative, so the tree gives the sequential scan's value and argmax.
        let comb = |(a, ia): (__m512, __m512i), (b, ib): (__m512, __m512i)| {
            let take =
                _mm512_cmp_ps_mask::<_CMP_NLE_UQ>(b, a) & _mm512_cmp_ps_mask::<_CMP_ORD_Q>(a, a);
            let i = if ARGMAX {
                _mm512_mask_blend_epi32(take, ia, ib)
            } else {
                ia
            };
            (_mm512_mask_blend_ps(take, a, b), i)
        };
        let offsets = |at: usize| _mm512_add_epi32(_mm512_set1_epi32(at as i32), iota);
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
                for k in (0..c).step_by(16) {
                    let v = at.map(|a| (load(a + k), offsets(a + k)));
                    let (b, a) = comb(comb(v[0], v[1]), comb(v[2], v[3]));
                    let out = &mut yi[o + k..o + k + 16];
                    // SAFETY: `out` holds 16 floats.
                    unsafe { _mm512_storeu_ps(out.as_mut_ptr(), b) };
                    if ARGMAX {
                        let out = &mut ai[o + k..o + k + 16];
                        // SAFETY: `out` holds 16 u32.
                        unsafe { _mm512_storeu_si512(out.as_mut_ptr().cast(), a) };
                    }
                }
            }
        }
        return;
    }
    for oy in 0..s.out_h() {
        for ox in 0..ow {
            let (y0, y1, x0, x1) = s.window(pad, oy, ox);
            let o = (oy * ow + ox) * c;
            for k in (0..c).step_by(16) {
                let first = (y0 * in_w + x0) * c + k;
                let mut b = load(first);
                let mut a = _mm512_add_epi32(_mm512_set1_epi32(first as i32), iota);
                for iy in y0..y1 {
                    for ix in x0..x1 {
                        let at = (iy * in_w + ix) * c + k;
                        let v = load(at);
                        let take = _mm512_cmp_ps_mask::<_CMP_NLE_UQ>(v, b)
                            & _mm512_cmp_ps_mask::<_CMP_ORD_Q>(b, b);
                        b = _mm512_mask_blend_ps(take, b, v);
                        if ARGMAX {
                            let here = _mm512_add_epi32(_mm512_set1_epi32(at as i32), iota);
                            a = _mm512_mask_blend_epi32(take, a, here);
                        }
                    }
                }
                let out = &mut yi[o + k..o + k + 16];
                // SAFETY: `out` holds 16 floats.
                unsafe { _mm512_storeu_ps(out.as_mut_ptr(), b) };
                if ARGMAX {
                    let out = &mut ai[o + k..o + k + 16];
                    // SAFETY: `out` holds 16 u32.
                    unsafe { _mm512_storeu_si512(out.as_mut_ptr().cast(), a) };
                }
            }
        }
    }
}

/// AVX2 (`channels` a multiple of 8); as [`image_avx512`].
#[target_feature(enable = "avx2")]
pub(super) fn image_avx2<const ARGMAX: bool>(
    s: &Pool2d,
    img: &[f32],
    yi: &mut [f32],
    ai: &mut [u32],
) {
    let (ow, c, in_w) = (s.out_w(), s.channels, s.in_w);
    assert!(c.is_multiple_of(8) && yi.len() == s.out_h() * ow * c);
    assert!(!ARGMAX || ai.len() == yi.len());
    let pad = s.padding();
    // SAFETY: IOTA holds at least 8 i32.
    let iota = unsafe { _mm256_loadu_si256(IOTA.as_ptr().cast()) };
    let load = |at: usize| {
        let v = &img[at..at + 8];
        // SAFETY: `v` holds 8 floats (the slice above is bounds-checked).
        unsafe { _mm256_loadu_ps(v.as_ptr()) }
    };
    if is_2x2(s) {
        // As in `image_avx512`: a tree of the window's four vectors.
        let comb = |(a, ia): (__m256, __m256i), (b, ib): (__m256, __m256i)| {
            let take = _mm256_and_ps(
                _mm256_cmp_ps::<_CMP_NLE_UQ>(b, a),
                _mm256_cmp_ps::<_CMP_ORD_Q>(a, a),
            );
            let i = if ARGMAX {
                _mm256_blendv_epi8(ia, ib, _mm256_castps_si256(take))
            } else {
                ia
            };
            (_mm256_blendv_ps(a, b, take), i)
        };
        let offsets = |at: usize| _mm256_add_epi32(_mm256_set1_epi32(at as i32), iota);
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
                for k in (0..c).step_by(8) {
                    let v = at.map(|a| (load(a + k), offsets(a + k)));
                    let (b, a) = comb(comb(v[0], v[1]), comb(v[2], v[3]));
                    let out = &mut yi[o + k..o + k + 8];
                    // SAFETY: `out` holds 8 floats.
                    unsafe { _mm256_storeu_ps(out.as_mut_ptr(), b) };
                    if ARGMAX {
                        let out = &mut ai[o + k..o + k + 8];
                        // SAFETY: `out` holds 8 u32.
                        unsafe { _mm256_storeu_si256(out.as_mut_ptr().cast(), a) };
                    }
                }
            }
        }
        return;
    }
    for oy in 0..s.out_h() {
        for ox in 0..ow {
            let (y0, y1, x0, x1) = s.window(pad, oy, ox);
            let o = (oy * ow + ox) * c;
            for k in (0..c).step_by(8) {
                let first = (y0 * in_w + x0) * c + k;
                let mut b = load(first);
                let mut a = _mm256_add_epi32(_mm256_set1_epi32(first as i32), iota);
                for iy in y0..y1 {
                    for ix in x0..x1 {
                        let at = (iy * in_w + ix) * c + k;
                        let v = load(at);
                        let take = _mm256_and_ps(
                            _mm256_cmp_ps::<_CMP_NLE_UQ>(v, b),
                            _mm256_cmp_ps::<_CMP_ORD_Q>(b, b),
                        );
                        b = _mm256_blendv_ps(b, v, take);
                        if ARGMAX {
                            let here = _mm256_add_epi32(_mm256_set1_epi32(at as i32), iota);
                            a = _mm256_blendv_epi8(a, here, _mm256_castps_si256(take));
                        }
                    }
                }
                let out = &mut yi[o + k..o + k + 8];
                // SAFETY: `out` holds 8 floats.
                unsafe { _mm256_storeu_ps(out.as_mut_ptr(), b) };
                if ARGMAX {
                    let out = &mut ai[o + k..o + k + 8];
                    // SAFETY: `out` holds 8 u32.
                    unsafe { _mm256_storeu_si256(out.as_mut_ptr().cast(), a) };
                }
            }
        }
    }
}
