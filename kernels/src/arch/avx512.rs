//! AVX-512F microkernel: a `12 × 32` tile, twenty-four 512-bit accumulators, two vectors of B and
//! one broadcast of A per step (27 of the 32 zmm registers).

use std::arch::x86_64::*;

/// Tile rows.
pub(crate) const MR: usize = 12;
/// Tile columns (two 16-float vectors).
pub(crate) const NR: usize = 32;

/// The `12 × 32` AVX-512 tile; contract in [`crate::arch`].
///
/// # Safety
/// As [`crate::arch::KernelFn`]; the CPU must have AVX-512F.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn kernel(
    k: usize,
    alpha: f32,
    a: *const f32,
    b: *const f32,
    beta: f32,
    c: *mut f32,
    rsc: usize,
) {
    let mut acc = [[_mm512_setzero_ps(); 2]; MR];
    let (mut a, mut b) = (a, b);
    for _ in 0..k {
        // SAFETY: `b` has NR floats left for this step and `a` has MR (caller's contract).
        unsafe {
            let b0 = _mm512_loadu_ps(b);
            let b1 = _mm512_loadu_ps(b.add(16));
            for (i, acc_i) in acc.iter_mut().enumerate() {
                let ai = _mm512_set1_ps(*a.add(i));
                acc_i[0] = _mm512_fmadd_ps(ai, b0, acc_i[0]);
                acc_i[1] = _mm512_fmadd_ps(ai, b1, acc_i[1]);
            }
            a = a.add(MR);
            b = b.add(NR);
        }
    }
    let valpha = _mm512_set1_ps(alpha);
    for (i, acc_i) in acc.iter().enumerate() {
        // SAFETY: row i of the tile holds NR writable floats (caller's contract).
        unsafe {
            let row = c.add(i * rsc);
            for (v, &acc_iv) in acc_i.iter().enumerate() {
                let p = row.add(16 * v);
                let scaled = _mm512_mul_ps(valpha, acc_iv);
                let out = if beta == 0.0 {
                    scaled
                } else {
                    _mm512_fmadd_ps(_mm512_set1_ps(beta), _mm512_loadu_ps(p), scaled)
                };
                _mm512_storeu_ps(p, out);
            }
        }
    }
}
