//! AVX2 + FMA microkernels: an `MR × 8·NV` tile of 256-bit accumulators; per step of k they load
//! `NV` vectors of B and broadcast `MR` values of A. The registered shapes keep accumulators + B
//! vectors + one broadcast within the 16 ymm registers (6 × 16 is the classic Haswell shape).
//! Edge columns use `vmaskmov` loads and stores, which never touch masked-out lanes.

use std::arch::x86_64::*;

/// The lane mask (all-ones lanes are live) of vector `v` of a row whose first `cols` are live.
#[inline(always)]
unsafe fn lane_mask(v: usize, cols: usize) -> __m256i {
    let live = cols.saturating_sub(8 * v).min(8) as i32;
    let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    _mm256_cmpgt_epi32(_mm256_set1_epi32(live), lanes)
}

/// The AVX2 tile `MR × 8·NV`; contract in [`crate::arch`].
///
/// # Safety
/// As [`crate::arch::KernelFn`]; the CPU must have AVX2 and FMA.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma")]
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
    let full = cols == 8 * NV;
    let mut masks = [_mm256_setzero_si256(); NV];
    for (v, m) in masks.iter_mut().enumerate() {
        // SAFETY: plain register arithmetic on a CPU with AVX2 (caller's contract).
        *m = unsafe { lane_mask(v, cols) };
    }
    for i in 0..rows {
        // SAFETY: prefetching is a hint and cannot fault; the addresses are C's tile anyway.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(c.add(i * rsc) as *const i8) };
    }
    let mut acc = [[_mm256_setzero_ps(); NV]; MR];
    let (mut a, mut b) = (a, b);
    for _ in 0..k {
        // SAFETY: row p of B has `cols` readable floats at `b` (masked lanes are not accessed;
        // with `full` all 8·NV are) and `a` has MR floats left (caller's contract).
        unsafe {
            let mut bv = [_mm256_setzero_ps(); NV];
            for (v, x) in bv.iter_mut().enumerate() {
                *x = if full {
                    _mm256_loadu_ps(b.add(8 * v))
                } else {
                    _mm256_maskload_ps(b.add(8 * v), masks[v])
                };
            }
            for (i, acc_i) in acc.iter_mut().enumerate() {
                let ai = _mm256_broadcast_ss(&*a.add(i));
                for (acc_iv, &bv) in acc_i.iter_mut().zip(&bv) {
                    *acc_iv = _mm256_fmadd_ps(ai, bv, *acc_iv);
                }
            }
            a = a.add(MR);
            b = b.add(rsb);
        }
    }
    let valpha = _mm256_set1_ps(alpha);
    let vbeta = _mm256_set1_ps(beta);
    for (i, acc_i) in acc.iter().enumerate() {
        if i >= rows {
            break;
        }
        // SAFETY: row i < rows of the tile has `cols` writable floats (caller's contract); the
        // masks keep every access inside them.
        unsafe {
            let row = c.add(i * rsc);
            for (v, &acc_iv) in acc_i.iter().enumerate() {
                let p = row.add(8 * v);
                let scaled = _mm256_mul_ps(valpha, acc_iv);
                let old = if beta == 0.0 {
                    None
                } else if full {
                    Some(_mm256_loadu_ps(p))
                } else {
                    Some(_mm256_maskload_ps(p, masks[v]))
                };
                let out = match old {
                    None => scaled,
                    Some(old) => _mm256_fmadd_ps(vbeta, old, scaled),
                };
                if full {
                    _mm256_storeu_ps(p, out);
                } else {
                    _mm256_maskstore_ps(p, masks[v], out);
                }
            }
        }
    }
}
