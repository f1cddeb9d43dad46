//! The one-input-channel direct convolution (forward and weight gradient) for 3×3 kernels whose
//! windows all lie inside the input (no padding), in explicit AVX-512: the first layer of an
//! MNIST-style CNN.
//!
//! The portable direct kernel reloads each tap's weights per block of pixels and walks its taps
//! with run-time bounds; here a pass over the pixels holds two lane groups' weights for all nine
//! taps in registers (18 of the 32), so a block of four pixels is 36 broadcasts and 72 FMAs and
//! nothing else but its eight stores. Same operations in the same order as the portable kernel
//! (bias, then one FMA per tap in tap order): the same bits.

use std::arch::x86_64::*;

use super::Conv2d;

/// Taps of the kernel.
const TAPS: usize = 9;
/// Output channels per vector.
const LANES: usize = 16;

/// Whether this kernel takes `s`: one input channel, 3×3, every window inside the input.
pub(super) fn applies(s: &Conv2d) -> bool {
    s.in_c == 1
        && (s.kernel_h, s.kernel_w) == (3, 3)
        && s.pad_top() == 0
        && s.pad_left() == 0
        && s.out_h() > 0
        && s.out_w() > 0
        && (s.out_h() - 1) * s.stride_h + 3 <= s.in_h
        && (s.out_w() - 1) * s.stride_w + 3 <= s.in_w
}

/// `y` (the rows of output pixels `pixels`, `out_c` floats each) ← conv + bias, then ReLU if
/// `relu` (the bits of `activation`'s: NaN kept, negatives to +0), with `packed` as the portable
/// kernel's `pack` laid it out: the bias row, then one row per tap, each `ocp` (out_c rounded up
/// to 16) floats.
#[target_feature(enable = "avx512f")]
pub(super) fn forward(
    s: &Conv2d,
    x: &[f32],
    packed: &[f32],
    ocp: usize,
    pixels: std::ops::Range<usize>,
    y: &mut [f32],
    relu: bool,
) {
    assert!(applies(s) && ocp.is_multiple_of(LANES) && ocp >= s.out_c);
    assert!(packed.len() >= (1 + TAPS) * ocp && x.len() >= s.input_len());
    assert!(pixels.end <= s.batch * s.out_pixels() && y.len() == pixels.len() * s.out_c);
    let groups = ocp / LANES;
    for g0 in (0..groups).step_by(2) {
        match (g0 + 1 < groups, relu) {
            (true, true) => pass::<true, true>(s, x, packed, ocp, g0, pixels.clone(), y),
            (true, false) => pass::<true, false>(s, x, packed, ocp, g0, pixels.clone(), y),
            (false, true) => pass::<false, true>(s, x, packed, ocp, g0, pixels.clone(), y),
            (false, false) => pass::<false, false>(s, x, packed, ocp, g0, pixels.clone(), y),
        }
    }
}

/// One pass over `pixels` for lane group `g0` and, with `TWO`, `g0 + 1`.
#[target_feature(enable = "avx512f")]
fn pass<const TWO: bool, const RELU: bool>(
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
    let load = |row: usize, g: usize| {
        let v = &packed[row * ocp + (g0 + g) * LANES..][..LANES];
        // SAFETY: `v` holds 16 floats (bounds-checked slice).
        unsafe { _mm512_loadu_ps(v.as_ptr()) }
    };
    let group = |row: usize| {
        [
            load(row, 0),
            if TWO {
                load(row, 1)
            } else {
                _mm512_setzero_ps()
            },
        ]
    };
    let bias = group(0);
    let w: [[__m512; 2]; TAPS] = std::array::from_fn(|t| group(1 + t));
    // Lanes of each group inside out_c (the last group may be partial).
    let lanes = |g: usize| {
        let n = oc.saturating_sub((g0 + g) * LANES).min(LANES);
        ((1u32 << n) - 1) as u16
    };
    let mask = [lanes(0), if TWO { lanes(1) } else { 0 }];
    let xp = x.as_ptr();
    let yp = y.as_mut_ptr();
    // `PX` pixels of one output row from output pixel `p` (global) on, at input column `ix`.
    let block = |p: usize, row: usize, ix: usize, px: usize| {
        let mut acc = [[bias[0], bias[1]]; 4];
        for ky in 0..3 {
            for kx in 0..3 {
                let t = ky * 3 + kx;
                for (q, aq) in acc.iter_mut().enumerate().take(px) {
                    // SAFETY: the window of output pixel (row, ix/sw + q) lies inside its image
                    // (`applies`: no padding, the last window ends inside), and x holds every
                    // image (asserted above).
                    let v = unsafe { _mm512_set1_ps(*xp.add(row + ky * in_w + ix + q * sw + kx)) };
                    aq[0] = _mm512_fmadd_ps(v, w[t][0], aq[0]);
                    if TWO {
                        aq[1] = _mm512_fmadd_ps(v, w[t][1], aq[1]);
                    }
                }
            }
        }
        if RELU {
            for aq in acc.iter_mut() {
                for a in aq.iter_mut() {
                    let keep = _mm512_cmp_ps_mask::<_CMP_NLT_UQ>(*a, _mm512_setzero_ps());
                    *a = _mm512_maskz_mov_ps(keep, *a);
                }
            }
        }
        for (q, aq) in acc.iter().enumerate().take(px) {
            let at = (p - pixels.start + q) * oc + g0 * LANES;
            // SAFETY: pixel p + q is inside `pixels`, so its row of `oc` floats is inside y
            // (asserted length); the masks keep the stores to lanes below out_c.
            unsafe {
                _mm512_mask_storeu_ps(yp.add(at), mask[0], aq[0]);
                if TWO {
                    _mm512_mask_storeu_ps(yp.add(at + LANES), mask[1], aq[1]);
                }
            }
        }
    };
    let mut p = pixels.start;
    while p < pixels.end {
        let (n, rest) = (p / (oh * ow), p % (oh * ow));
        let (oy, ox0) = (rest / ow, rest % ow);
        let row_end = (p - ox0 + ow).min(pixels.end);
        let row = n * image_len + oy * sh * in_w;
        let mut ix = ox0 * sw;
        while p + 4 <= row_end {
            block(p, row, ix, 4);
            p += 4;
            ix += 4 * sw;
        }
        while p < row_end {
            block(p, row, ix, 1);
            p += 1;
            ix += sw;
        }
    }
}

/// The weight and bias gradients of the same layers: `dw` (9 × out_c) ← Σ over `pixels` of
/// patchᵀ·dy and `db` ← Σ dy, written over. A pass holds two lane groups' eighteen tap
/// accumulators and two bias accumulators in registers; per pixel, nine broadcasts of the input
/// and the pixel's dy vectors. Same operations in the same order as the portable kernel (from
/// zero, pixel by pixel: one FMA per tap, one add for the bias): the same bits.
#[target_feature(enable = "avx512f")]
pub(super) fn backward_weights(
    s: &Conv2d,
    x: &[f32],
    dy: &[f32],
    pixels: std::ops::Range<usize>,
    dw: &mut [f32],
    db: &mut [f32],
) {
    let oc = s.out_c;
    assert!(applies(s) && x.len() >= s.input_len());
    assert!(pixels.end <= s.batch * s.out_pixels() && dy.len() >= pixels.end * oc);
    assert!(dw.len() == TAPS * oc && db.len() == oc);
    let groups = oc.div_ceil(LANES);
    for g0 in (0..groups).step_by(2) {
        if g0 + 1 < groups {
            weights_pass::<true>(s, x, dy, pixels.clone(), g0, dw, db);
        } else {
            weights_pass::<false>(s, x, dy, pixels.clone(), g0, dw, db);
        }
    }
}

/// One pass of [`backward_weights`] for lane group `g0` and, with `TWO`, `g0 + 1`.
#[target_feature(enable = "avx512f")]
fn weights_pass<const TWO: bool>(
    s: &Conv2d,
    x: &[f32],
    dy: &[f32],
    pixels: std::ops::Range<usize>,
    g0: usize,
    dw: &mut [f32],
    db: &mut [f32],
) {
    let (oh, ow, oc) = (s.out_h(), s.out_w(), s.out_c);
    let (sh, sw, in_w) = (s.stride_h, s.stride_w, s.in_w);
    let image_len = s.in_h * in_w;
    let lanes = |g: usize| {
        let n = oc.saturating_sub((g0 + g) * LANES).min(LANES);
        ((1u32 << n) - 1) as u16
    };
    let (m0, m1) = (lanes(0), if TWO { lanes(1) } else { 0 });
    let off: [usize; TAPS] = [
        0,
        1,
        2,
        in_w,
        in_w + 1,
        in_w + 2,
        2 * in_w,
        2 * in_w + 1,
        2 * in_w + 2,
    ];
    let zero = _mm512_setzero_ps();
    let (mut a, mut b) = ([zero; TAPS], [zero; TAPS]);
    let (mut bias0, mut bias1) = (zero, zero);
    let (xp, dyp) = (x.as_ptr(), dy.as_ptr());
    let mut p = pixels.start;
    while p < pixels.end {
        let (n, rest) = (p / (oh * ow), p % (oh * ow));
        let (oy, ox0) = (rest / ow, rest % ow);
        let row_end = (p - ox0 + ow).min(pixels.end);
        let mut base = n * image_len + oy * sh * in_w + ox0 * sw;
        while p < row_end {
            // SAFETY: pixel p < pixels.end has `oc` floats of dy (asserted length); the masks
            // keep the loads to lanes below out_c.
            let (g0v, g1v) = unsafe {
                let at = dyp.add(p * oc + g0 * LANES);
                let g1v = if TWO {
                    _mm512_maskz_loadu_ps(m1, at.add(LANES))
                } else {
                    zero
                };
                (_mm512_maskz_loadu_ps(m0, at), g1v)
            };
            bias0 = _mm512_add_ps(bias0, g0v);
            if TWO {
                bias1 = _mm512_add_ps(bias1, g1v);
            }
            for t in 0..TAPS {
                // SAFETY: the window of pixel p lies inside its image (`applies`), and x holds
                // every image (asserted).
                let v = unsafe { _mm512_set1_ps(*xp.add(base + off[t])) };
                a[t] = _mm512_fmadd_ps(v, g0v, a[t]);
                if TWO {
                    b[t] = _mm512_fmadd_ps(v, g1v, b[t]);
                }
            }
            p += 1;
            base += sw;
        }
    }
    let c0 = g0 * LANES;
    // SAFETY: dw holds 9 rows of `oc` floats and db `oc` (asserted); the masks keep the stores
    // to lanes below out_c.
    unsafe {
        let (dwp, dbp) = (dw.as_mut_ptr(), db.as_mut_ptr());
        _mm512_mask_storeu_ps(dbp.add(c0), m0, bias0);
        if TWO {
            _mm512_mask_storeu_ps(dbp.add(c0 + LANES), m1, bias1);
        }
        for t in 0..TAPS {
            _mm512_mask_storeu_ps(dwp.add(t * oc + c0), m0, a[t]);
            if TWO {
                _mm512_mask_storeu_ps(dwp.add(t * oc + c0 + LANES), m1, b[t]);
            }
        }
    }
}
