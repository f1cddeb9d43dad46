//! NEON (AArch64 Advanced SIMD) microkernels: an `MR × 4·NV` tile of 128-bit accumulators; per
//! step of k they load `NV` vectors of packed B and multiply them by each of the `MR` values of A
//! (`fmla` by element). The registered 8 × 12 tile keeps 24 accumulators + 3 B vectors + 2 A
//! vectors within the 32 vector registers.
//!
//! NEON has no masked loads, so these kernels read packed B only (whose edge panels are
//! zero-padded to full width), and write edge tiles of C through a small stack buffer.

use std::arch::aarch64::*;

/// The NEON tile `MR × 4·NV`; contract in [`crate::arch`] (packed B only: `rsb = 4·NV`).
///
/// # Safety
/// As [`crate::arch::KernelFn`]; the CPU must have NEON (every AArch64 CPU does).
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "neon")]
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
    debug_assert_eq!(rsb, 4 * NV, "NEON kernels read packed B only");
    let mut acc = [[vdupq_n_f32(0.0); NV]; MR];
    let (mut a, mut b) = (a, b);
    for _ in 0..k {
        // SAFETY: packed B has 4·NV floats for this step and packed A has MR (caller's contract).
        unsafe {
            let mut bv = [vdupq_n_f32(0.0); NV];
            for (v, x) in bv.iter_mut().enumerate() {
                *x = vld1q_f32(b.add(4 * v));
            }
            for (i, acc_i) in acc.iter_mut().enumerate() {
                let ai = *a.add(i);
                for (acc_iv, &bv) in acc_i.iter_mut().zip(&bv) {
                    *acc_iv = vfmaq_n_f32(*acc_iv, bv, ai);
                }
            }
            a = a.add(MR);
            b = b.add(4 * NV);
        }
    }
    let full = rows == MR && cols == 4 * NV;
    if full {
        for (i, acc_i) in acc.iter().enumerate() {
            // SAFETY: a full tile: row i has 4·NV writable floats (caller's contract).
            unsafe {
                let row = c.add(i * rsc);
                for (v, &acc_iv) in acc_i.iter().enumerate() {
                    let p = row.add(4 * v);
                    let scaled = vmulq_n_f32(acc_iv, alpha);
                    let out = if beta == 0.0 {
                        scaled
                    } else {
                        vfmaq_n_f32(scaled, vld1q_f32(p), beta)
                    };
                    vst1q_f32(p, out);
                }
            }
        }
        return;
    }
    // Edge tile: spill the accumulators, then touch only the rows × cols that lie inside C.
    let mut tile = [[0.0f32; 64]; MR];
    for (acc_i, out) in acc.iter().zip(tile.iter_mut()) {
        for (v, &acc_iv) in acc_i.iter().enumerate() {
            // SAFETY: `out` holds 64 ≥ 4·NV floats.
            unsafe { vst1q_f32(out.as_mut_ptr().add(4 * v), acc_iv) };
        }
    }
    for (i, t) in tile.iter().enumerate().take(rows) {
        for (j, &x) in t.iter().enumerate().take(cols) {
            // SAFETY: (i, j) < (rows, cols) lies inside C's tile (caller's contract).
            unsafe {
                let p = c.add(i * rsc + j);
                // As the full tiles' vfmaq: one rounding of scaled + beta·C, so a row gets the
                // same bits wherever the tile edges fall.
                *p = if beta == 0.0 {
                    alpha * x
                } else {
                    beta.mul_add(*p, alpha * x)
                };
            }
        }
    }
}
