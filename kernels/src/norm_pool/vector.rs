//! The gradient rows of [`super::batch_norm_max_pool_backward`] in explicit vectors, for channel
//! counts that are whole vectors (16 on AVX-512, 8 on AVX2): written once over [`Vector`] and
//! compiled for both. The portable loop vectorised its compare and select but summed the routed
//! count across lanes at every row, and with the per-row setup of a loop over 16 channels it
//! made the fused pass slower than the two passes it replaces (program F's first normalisation
//! on a 2-core AVX-512 Xeon: 430 µs per step against 400).
//!
//! And the training forward's pooled image, [`forward_image`], for 8 to 32 channels: the
//! portable loop ran in 8-lane vectors, found each window's place with a division and formed
//! γ·(1/σ) anew at every position; 0.27 ms of program F's 1.6 ms step (its first block, 64
//! images of 26×26×16, one thread of the same Xeon).

use std::arch::x86_64::{__m256, __m512};

use super::Affine;
use crate::activation::Activation;
use crate::arch::vector::Vector;
use crate::conv_pool::PooledGradient;
use crate::norm::vector::{act_code, gradient, IDENTITY, RELU, SIGMOID, TANH};
use crate::pool::Pool2d;
use crate::Isa;

/// One image of the fused training forward ([`super::batch_norm_max_pool_forward_training`]):
/// its pooled output `yi` and argmax `ai`, as the portable `forward_image` (the same bits), for
/// 8, 16, 24 or 32 channels (16 and 32 in AVX-512 registers, the others in AVX2's, also on an
/// AVX-512 CPU that has AVX2 and FMA) under no activation or a ReLU; returns whether a vector
/// path took it.
///
/// # Safety
/// This CPU has `isa`.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn forward_image(
    isa: Isa,
    p: &Pool2d,
    img: &[f32],
    affine: Affine<'_>,
    act: Activation,
    yi: &mut [f32],
    ai: &mut [u32],
) -> bool {
    let code = act_code(act);
    if code != IDENTITY && code != RELU {
        return false;
    }
    macro_rules! go {
        ($set:ident, $nv:literal) => {
            if code == RELU {
                forward_entry::$set::<$nv, RELU>(p, img, affine, yi, ai)
            } else {
                forward_entry::$set::<$nv, IDENTITY>(p, img, affine, yi, ai)
            }
        };
    }
    // SAFETY: (every arm) this CPU has `isa` (the caller's contract), and the AVX-512 path's
    // CPU AVX2 and FMA too (`Isa::Avx512` checks them); the loop checks its slices.
    unsafe {
        match (isa, p.channels) {
            (Isa::Avx512, 16) => go!(avx512, 1),
            (Isa::Avx512, 32) => go!(avx512, 2),
            (Isa::Avx512 | Isa::Avx2, 8) => go!(avx2, 1),
            (Isa::Avx2, 16) => go!(avx2, 2),
            (Isa::Avx512 | Isa::Avx2, 24) => go!(avx2, 3),
            (Isa::Avx2, 32) => go!(avx2, 4),
            _ => return false,
        }
    }
    true
}

mod forward_entry {
    use super::*;
    #[target_feature(enable = "avx512f")]
    pub(super) fn avx512<const NV: usize, const ACT: u8>(
        p: &Pool2d,
        img: &[f32],
        affine: Affine<'_>,
        yi: &mut [f32],
        ai: &mut [u32],
    ) {
        // SAFETY: this function's target feature is the instruction set of `__m512`.
        unsafe { forward_image_v::<__m512, NV, ACT>(p, img, affine, yi, ai) }
    }
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn avx2<const NV: usize, const ACT: u8>(
        p: &Pool2d,
        img: &[f32],
        affine: Affine<'_>,
        yi: &mut [f32],
        ai: &mut [u32],
    ) {
        // SAFETY: this function's target features are the instruction set of `__m256`.
        unsafe { forward_image_v::<__m256, NV, ACT>(p, img, affine, yi, ai) }
    }
}

/// One loop for both sets (`NV` vectors of channels, all of them; runs only inside the entry
/// points above): per output position and vector of channels, each window value
/// `act((x − mean)·scale + beta)` with `scale = gamma·inv_std` rounded once (formed once per
/// image here, per position there: the same value), the running maximum and its offset taken
/// over by a larger value or the window's first NaN, window positions in the portable loop's
/// order. Its first position seeds the maximum and is not compared again (a value never takes
/// over from itself, nor anything from a NaN).
///
/// # Safety
/// The CPU has `V`'s instruction set (the entry points above are compiled for it).
#[inline(always)]
unsafe fn forward_image_v<V: Vector, const NV: usize, const ACT: u8>(
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
) {
    let (lanes, c) = (V::LANES, NV * V::LANES);
    let (oh, ow, in_w) = (p.out_h(), p.out_w(), p.in_w);
    assert!(p.channels == c && img.len() == p.image_len());
    assert!(yi.len() == oh * ow * c && ai.len() == yi.len());
    assert!([mean, inv_std, gamma, beta].iter().all(|s| s.len() == c));
    let load = |s: &[f32], at: usize| -> V {
        let v = &s[at..at + lanes];
        // SAFETY: `v` holds LANES floats; the CPU has the instruction set (this function's
        // contract).
        unsafe { V::load(v.as_ptr()) }
    };
    // SAFETY: (every vector operation below) as in `load`.
    let (m, scale, b): ([V; NV], [V; NV], [V; NV]) = unsafe {
        (
            std::array::from_fn(|v| load(mean, v * lanes)),
            std::array::from_fn(|v| V::mul(load(gamma, v * lanes), load(inv_std, v * lanes))),
            std::array::from_fn(|v| load(beta, v * lanes)),
        )
    };
    let value = |x: V, v: usize| -> V {
        // SAFETY: as above.
        unsafe {
            let t = V::fmadd(V::sub(x, m[v]), scale[v], b[v]);
            if ACT == RELU {
                V::relu(t)
            } else {
                t
            }
        }
    };
    let mut o = 0;
    for oy in 0..oh {
        let y0 = oy * p.stride_h;
        for ox in 0..ow {
            let first = (y0 * in_w + ox * p.stride_w) * c;
            for v in 0..NV {
                let i = v * lanes;
                let mut best = value(load(img, first + i), v);
                // Offsets within an image fit in u32 (`Pool2d::validate`).
                // SAFETY: as above.
                let mut at = unsafe { V::offsets(first + i) };
                for wy in 0..p.pool_h {
                    for wx in 0..p.pool_w {
                        if wy == 0 && wx == 0 {
                            continue;
                        }
                        let base = first + (wy * in_w + wx) * c + i;
                        let x = value(load(img, base), v);
                        // SAFETY: as above.
                        unsafe {
                            let take = V::takes_over(x, best);
                            best = V::choose(take, best, x);
                            at = V::choose_offsets(take, at, V::offsets(base));
                        }
                    }
                }
                let (yo, ao) = (&mut yi[o + i..o + i + lanes], &mut ai[o + i..o + i + lanes]);
                // SAFETY: as above; each slice holds LANES elements.
                unsafe {
                    V::store(yo.as_mut_ptr(), best);
                    V::store_offsets(ao.as_mut_ptr(), at);
                }
            }
            o += c;
        }
    }
}

/// The rows of the normalised output's gradient from row `r0` into `out`, as the portable
/// `form_rows` (the same bits), on a vector path where one serves `p.channels` under `isa`;
/// returns the routed count, or `None` for the portable loop.
///
/// # Safety
/// This CPU has `isa`.
pub(super) unsafe fn form_rows(
    isa: Isa,
    p: &Pool2d,
    pooled: PooledGradient<'_>,
    r0: usize,
    out: &mut [f32],
) -> Option<usize> {
    let c = p.channels;
    let popcnt = std::arch::is_x86_feature_detected!("popcnt");
    let wide = isa == Isa::Avx512 && c.is_multiple_of(16) && popcnt;
    // The AVX-512 path's CPU has AVX2 (`Isa::Avx512` checks it), for channel counts that are
    // whole 8-lane vectors only.
    let narrow = matches!(isa, Isa::Avx512 | Isa::Avx2) && c.is_multiple_of(8) && popcnt;
    macro_rules! by_act {
        ($entry:ident) => {
            match act_code(pooled.act) {
                IDENTITY => $entry::<IDENTITY>(p, pooled, r0, out),
                RELU => $entry::<RELU>(p, pooled, r0, out),
                SIGMOID => $entry::<SIGMOID>(p, pooled, r0, out),
                _ => $entry::<TANH>(p, pooled, r0, out),
            }
        };
    }
    // SAFETY: (both arms) this CPU has `isa` (the caller's contract; on the AVX-512 path AVX2
    // and FMA too), and popcnt; the loops check their slices.
    unsafe {
        if wide {
            Some(by_act!(avx512))
        } else if narrow {
            Some(by_act!(avx2))
        } else {
            None
        }
    }
}

// popcnt: the routed count's popcount in one instruction (every AVX-512 CPU has it; without it
// the compiler counted the mask's bits in a dozen).
#[target_feature(enable = "avx512f,popcnt")]
fn avx512<const ACT: u8>(
    p: &Pool2d,
    pooled: PooledGradient<'_>,
    r0: usize,
    out: &mut [f32],
) -> usize {
    form_rows_v::<__m512, ACT>(p, pooled, r0, out)
}

#[target_feature(enable = "avx2,fma,popcnt")]
fn avx2<const ACT: u8>(
    p: &Pool2d,
    pooled: PooledGradient<'_>,
    r0: usize,
    out: &mut [f32],
) -> usize {
    form_rows_v::<__m256, ACT>(p, pooled, r0, out)
}

/// One loop for both sets (`p.channels` a multiple of `V::LANES`; runs only inside the entry
/// points above): per position inside a window, per vector of channels, the pooled gradient
/// times the activation's derivative (`0 + g`) where the argmax entry names this position, zero
/// elsewhere; positions outside every window zero. The rows are taken an image row at a time
/// and, per vector of channels, window by window along it: a window's argmax, gradient and
/// derivative are loaded and formed once for all its positions in the row (the windows lie
/// apart), and a position's place is a counter, not a division — row by row, with the
/// window found anew for each 16-channel position, this loop took a tenth of program F's
/// epoch on a 2-core AVX-512 Xeon.
#[inline(always)]
fn form_rows_v<V: Vector, const ACT: u8>(
    p: &Pool2d,
    PooledGradient {
        y_pool,
        dy_pool,
        argmax,
        ..
    }: PooledGradient<'_>,
    r0: usize,
    out: &mut [f32],
) -> usize {
    let (c, lanes) = (p.channels, V::LANES);
    assert!(c.is_multiple_of(lanes) && out.len().is_multiple_of(c));
    // SAFETY: (every vector operation below) the instruction set is the caller's; loads and
    // stores go through bounds-checked slices of whole vectors.
    let (zero, full) = unsafe { (V::zero(), V::mask(lanes)) };
    let (in_w, image) = (p.in_w, p.in_h * p.in_w);
    let (out_w, out_h, out_image) = (p.out_w(), p.out_h(), p.out_image_len());
    let (sw, pw) = (p.stride_w, p.pool_w);
    let mut routed = 0;
    let mut r = r0;
    let mut rest = out;
    while !rest.is_empty() {
        // The rest of image row `iy` from column `ix0`, or as much of it as `out` holds.
        let (n, at) = (r / image, r % image);
        let (iy, ix0) = (at / in_w, at % in_w);
        let len = (in_w - ix0).min(rest.len() / c);
        let (seg, tail) = std::mem::take(&mut rest).split_at_mut(len * c);
        rest = tail;
        r += len;
        let (qy, ry) = (iy / p.stride_h, iy % p.stride_h);
        if qy >= out_h || ry >= p.pool_h {
            seg.fill(0.0);
            continue;
        }
        let windows = n * out_image + qy * out_w * c;
        let row_first = iy * in_w * c;
        for ch in (0..c).step_by(lanes) {
            // Column `ix` of the row: element `first` of the image, `dst` of `seg`.
            let (end, mut ix) = (ix0 + len, ix0);
            let (mut first, mut dst) = (row_first + ix0 * c + ch, ch);
            while ix < end {
                // The stride cell of window `qx` from column `ix`: its first `pw` columns lie in
                // the window (when there is one), the rest in none.
                let (qx, rx) = (ix / sw, ix % sw);
                let cell_end = ((qx + 1) * sw).min(end);
                if qx < out_w && rx < pw {
                    let q = windows + qx * c + ch;
                    // SAFETY: as above; each slice holds LANES elements from q.
                    let (offsets, through) = unsafe {
                        let a = V::load_offsets_live(argmax[q..q + lanes].as_ptr(), full);
                        let dy = V::load(dy_pool[q..q + lanes].as_ptr());
                        let yv = V::load(y_pool[q..q + lanes].as_ptr());
                        (a, V::add(zero, gradient::<V, ACT>(dy, yv)))
                    };
                    let inside_end = (qx * sw + pw).min(cell_end);
                    while ix < inside_end {
                        let d = &mut seg[dst..dst + lanes];
                        // SAFETY: as above; `d` holds LANES elements.
                        unsafe {
                            let hit = V::same_offsets(offsets, V::offsets(first));
                            V::store(d.as_mut_ptr(), V::choose(hit, zero, through));
                            routed += V::chosen(hit) as usize;
                        }
                        (ix, first, dst) = (ix + 1, first + c, dst + c);
                    }
                }
                while ix < cell_end {
                    seg[dst..dst + lanes].fill(0.0);
                    (ix, first, dst) = (ix + 1, first + c, dst + c);
                }
            }
        }
    }
    routed
}
