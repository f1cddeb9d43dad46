//! One SIMD register of f32 lanes behind a small trait, for kernels written once and compiled
//! per instruction set: the GEMM's microkernels ([`super::tile`]) and the one-channel 3×3
//! convolution (`conv::direct3x3`). AVX-512 (`__m512`, 16 lanes) and AVX2 (`__m256`, 8).

use std::arch::x86_64::*;

/// One SIMD register of f32 lanes as the generic kernels use it. Every method is
/// `inline(always)`, so the generic bodies compile inside their `#[target_feature]` entry points.
pub(crate) trait Vector: Copy {
    /// f32 lanes per register.
    const LANES: usize;
    /// Which lanes of a register are live (the last lane group of a row may be partial).
    type Mask: Copy;
    /// # Safety (every method)
    /// The CPU has the instruction set; pointers are valid for the live lanes.
    unsafe fn mask(live: usize) -> Self::Mask;
    unsafe fn zero() -> Self;
    unsafe fn splat(p: *const f32) -> Self;
    /// All `LANES` floats at `p`.
    unsafe fn load(p: *const f32) -> Self;
    /// The live lanes at `p` (the others zero, never read).
    unsafe fn load_live(p: *const f32, m: Self::Mask) -> Self;
    /// The live lanes to `p` (the others never written).
    unsafe fn store_live(p: *mut f32, m: Self::Mask, v: Self);
    /// `a·b + c`, one rounding.
    unsafe fn fmadd(a: Self, b: Self, c: Self) -> Self;
    unsafe fn add(a: Self, b: Self) -> Self;
    unsafe fn mul(a: Self, b: Self) -> Self;
    /// The activation's ReLU bit for bit: NaN kept, x < 0 to +0, the rest (−0 too) kept.
    unsafe fn relu(a: Self) -> Self;
}

impl Vector for __m512 {
    const LANES: usize = 16;
    type Mask = __mmask16;
    #[inline(always)]
    unsafe fn mask(live: usize) -> __mmask16 {
        ((1u32 << live.min(16)) - 1) as u16
    }
    #[inline(always)]
    unsafe fn zero() -> Self {
        // SAFETY: the caller's contract: the CPU has the instruction set.
        unsafe { _mm512_setzero_ps() }
    }
    #[inline(always)]
    unsafe fn splat(p: *const f32) -> Self {
        // SAFETY: caller's contract.
        unsafe { _mm512_set1_ps(*p) }
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        // SAFETY: caller's contract.
        unsafe { _mm512_loadu_ps(p) }
    }
    #[inline(always)]
    unsafe fn load_live(p: *const f32, m: __mmask16) -> Self {
        // SAFETY: caller's contract; masked-out lanes are not accessed.
        unsafe { _mm512_maskz_loadu_ps(m, p) }
    }
    #[inline(always)]
    unsafe fn store_live(p: *mut f32, m: __mmask16, v: Self) {
        // SAFETY: caller's contract; masked-out lanes are not accessed.
        unsafe { _mm512_mask_storeu_ps(p, m, v) }
    }
    #[inline(always)]
    unsafe fn fmadd(a: Self, b: Self, c: Self) -> Self {
        // SAFETY: the caller's contract: the CPU has the instruction set.
        unsafe { _mm512_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    unsafe fn add(a: Self, b: Self) -> Self {
        // SAFETY: the caller's contract: the CPU has the instruction set.
        unsafe { _mm512_add_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn mul(a: Self, b: Self) -> Self {
        // SAFETY: the caller's contract: the CPU has the instruction set.
        unsafe { _mm512_mul_ps(a, b) }
    }

    #[inline(always)]
    unsafe fn relu(a: Self) -> Self {
        // SAFETY: the caller's contract: the CPU has the instruction set.
        unsafe {
            let keep = _mm512_cmp_ps_mask::<_CMP_NLT_UQ>(a, _mm512_setzero_ps());
            _mm512_maskz_mov_ps(keep, a)
        }
    }
}

/// AVX2's lane mask, and whether every lane is live (then plain loads and stores: AMD's
/// `vmaskmov` stores are slow).
#[derive(Clone, Copy)]
pub(crate) struct Mask256 {
    lanes: __m256i,
    full: bool,
}

impl Vector for __m256 {
    const LANES: usize = 8;
    type Mask = Mask256;
    #[inline(always)]
    unsafe fn mask(live: usize) -> Mask256 {
        // SAFETY: the caller's contract: the CPU has the instruction set.
        unsafe {
            let index = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
            let lanes = _mm256_cmpgt_epi32(_mm256_set1_epi32(live.min(8) as i32), index);
            Mask256 {
                lanes,
                full: live >= 8,
            }
        }
    }
    #[inline(always)]
    unsafe fn zero() -> Self {
        // SAFETY: the caller's contract: the CPU has the instruction set.
        unsafe { _mm256_setzero_ps() }
    }
    #[inline(always)]
    unsafe fn splat(p: *const f32) -> Self {
        // SAFETY: caller's contract.
        unsafe { _mm256_broadcast_ss(&*p) }
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        // SAFETY: caller's contract.
        unsafe { _mm256_loadu_ps(p) }
    }
    #[inline(always)]
    unsafe fn load_live(p: *const f32, m: Mask256) -> Self {
        // SAFETY: caller's contract; masked-out lanes are not accessed.
        unsafe {
            if m.full {
                _mm256_loadu_ps(p)
            } else {
                _mm256_maskload_ps(p, m.lanes)
            }
        }
    }
    #[inline(always)]
    unsafe fn store_live(p: *mut f32, m: Mask256, v: Self) {
        // SAFETY: caller's contract; masked-out lanes are not accessed.
        unsafe {
            if m.full {
                _mm256_storeu_ps(p, v)
            } else {
                _mm256_maskstore_ps(p, m.lanes, v)
            }
        }
    }
    #[inline(always)]
    unsafe fn fmadd(a: Self, b: Self, c: Self) -> Self {
        // SAFETY: the caller's contract: the CPU has the instruction set.
        unsafe { _mm256_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    unsafe fn add(a: Self, b: Self) -> Self {
        // SAFETY: the caller's contract: the CPU has the instruction set.
        unsafe { _mm256_add_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn mul(a: Self, b: Self) -> Self {
        // SAFETY: the caller's contract: the CPU has the instruction set.
        unsafe { _mm256_mul_ps(a, b) }
    }

    #[inline(always)]
    unsafe fn relu(a: Self) -> Self {
        // SAFETY: the caller's contract: the CPU has the instruction set.
        unsafe {
            let keep = _mm256_cmp_ps::<_CMP_NLT_UQ>(a, _mm256_setzero_ps());
            _mm256_and_ps(keep, a)
        }
    }
}
