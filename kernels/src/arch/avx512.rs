//! AVX-512F microkernels: an `MR × 16·NV` tile of 512-bit accumulators (`MR` rows of `NV`
//! vectors); per step of k they load `NV` vectors of B and broadcast `MR` values of A. The shapes
//! registered in [`crate::gemm::config`] keep accumulators + B vectors + one broadcast within the
//! 32 zmm registers. Edge columns use masked loads and stores, which never touch masked-out
//! lanes, so the same code reads B in place and writes partial tiles of C.

use std::arch::x86_64::*;

/// The lane mask of vector `v` of a row whose first `cols` columns are live.
#[inline(always)]
fn lane_mask(v: usize, cols: usize) -> __mmask16 {
    let live = cols.saturating_sub(16 * v).min(16);
    ((1u32 << live) - 1) as __mmask16
}

/// The AVX-512 tile `MR × 16·NV`; contract in [`crate::arch`].
///
/// # Safety
/// As [`crate::arch::KernelFn`]; the CPU must have AVX-512F.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn kernel<const MR: usize, const NV: usize>(
    k: usize,
    alpha: f32,
    a: *const f32,
    b: *const f32,
    rsb: usize,
    beta: f32,
    c: *mut f32,
    rsc: usize,
    rows: usize,
    cols: usize,
) {
    let mut masks = [0 as __mmask16; NV];
    for (v, m) in masks.iter_mut().enumerate() {
        *m = lane_mask(v, cols);
    }
    // Start fetching the C tile now: it is read (or written) only after the k loop, and its
    // rows are far apart, so without this each row would miss the cache at the end.
    for i in 0..rows {
        for v in 0..NV {
            // SAFETY: prefetching is a hint and cannot fault; the addresses are C's tile anyway.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(c.add(i * rsc + 16 * v) as *const i8) };
        }
    }
    // SAFETY: forwarded from this function's contract.
    let acc = unsafe {
        if cols == 16 * NV {
            accumulate::<MR, NV, true>(k, a, b, rsb, &masks)
        } else {
            accumulate::<MR, NV, false>(k, a, b, rsb, &masks)
        }
    };
    let valpha = _mm512_set1_ps(alpha);
    let vbeta = _mm512_set1_ps(beta);
    for (i, acc_i) in acc.iter().enumerate() {
        if i >= rows {
            break;
        }
        // SAFETY: row i < rows of the tile has `cols` writable floats (caller's contract); the
        // masks keep every access inside them.
        unsafe {
            let row = c.add(i * rsc);
            for (v, &acc_iv) in acc_i.iter().enumerate() {
                let p = row.add(16 * v);
                let scaled = _mm512_mul_ps(valpha, acc_iv);
                let out = if beta == 0.0 {
                    scaled
                } else {
                    _mm512_fmadd_ps(vbeta, _mm512_maskz_loadu_ps(masks[v], p), scaled)
                };
                _mm512_mask_storeu_ps(p, masks[v], out);
            }
        }
    }
}

/// The k loop: Σₚ a[p·MR + i]·B[p][..] into MR × NV accumulators. With `FULL` every lane of B is
/// live and plain loads are used; otherwise masked ones.
///
/// # Safety
/// As [`kernel`]'s contract for `a` and `b`; AVX-512F available.
#[inline(always)]
unsafe fn accumulate<const MR: usize, const NV: usize, const FULL: bool>(
    k: usize,
    a: *const f32,
    b: *const f32,
    rsb: usize,
    masks: &[__mmask16; NV],
) -> [[__m512; NV]; MR] {
    let mut acc = [[_mm512_setzero_ps(); NV]; MR];
    let (mut a, mut b) = (a, b);
    for _ in 0..k {
        // SAFETY: row p of B has `cols` readable floats at `b` (masked lanes are not accessed;
        // with FULL all 16·NV are) and `a` has MR floats left (caller's contract).
        unsafe {
            let mut bv = [_mm512_setzero_ps(); NV];
            for (v, x) in bv.iter_mut().enumerate() {
                *x = if FULL {
                    _mm512_loadu_ps(b.add(16 * v))
                } else {
                    _mm512_maskz_loadu_ps(masks[v], b.add(16 * v))
                };
            }
            for (i, acc_i) in acc.iter_mut().enumerate() {
                let ai = _mm512_set1_ps(*a.add(i));
                for (acc_iv, &bv) in acc_i.iter_mut().zip(&bv) {
                    *acc_iv = _mm512_fmadd_ps(ai, bv, *acc_iv);
                }
            }
            a = a.add(MR);
            b = b.add(rsb);
        }
    }
    acc
}
