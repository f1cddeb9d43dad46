//! AVX-512F: the [`Vector`] register (`__m512`, 16 lanes) and the microkernels, tiles of
//! `MR × 16·NV` 512-bit accumulators, the generic body of [`super::tile`] compiled for AVX-512. The shapes registered in [`crate::gemm::config`] keep
//! accumulators + B vectors + one broadcast within the 32 zmm registers.

use std::arch::x86_64::*;

use super::vector::Vector;

microkernels!(__m512, "avx512f", "AVX-512F");
// The dot form: 4 × 4 sums of one register each (16 of the 32 registers, 4 of B beside
// them and one of A).
dot_kernel!(__m512, "avx512f", 1, 4, 4);

impl Vector for __m512 {
    const LANES: usize = 16;
    const REGISTERS: usize = 32;
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

    type Choice = __mmask16;
    type Offsets = __m512i;
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: Self) {
        // SAFETY: caller's contract.
        unsafe { _mm512_storeu_ps(p, v) }
    }
    #[inline(always)]
    unsafe fn takes_over(v: Self, best: Self) -> __mmask16 {
        // SAFETY: the caller's contract: the CPU has the instruction set.
        unsafe {
            _mm512_cmp_ps_mask::<_CMP_NLE_UQ>(v, best)
                & _mm512_cmp_ps_mask::<_CMP_ORD_Q>(best, best)
        }
    }
    #[inline(always)]
    unsafe fn choose(take: __mmask16, a: Self, b: Self) -> Self {
        // SAFETY: the caller's contract: the CPU has the instruction set.
        unsafe { _mm512_mask_blend_ps(take, a, b) }
    }
    #[inline(always)]
    unsafe fn offsets(at: usize) -> __m512i {
        // SAFETY: the caller's contract: the CPU has the instruction set.
        unsafe {
            let iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
            _mm512_add_epi32(_mm512_set1_epi32(at as i32), iota)
        }
    }
    #[inline(always)]
    unsafe fn choose_offsets(take: __mmask16, a: __m512i, b: __m512i) -> __m512i {
        // SAFETY: the caller's contract: the CPU has the instruction set.
        unsafe { _mm512_mask_blend_epi32(take, a, b) }
    }
    #[inline(always)]
    unsafe fn store_offsets(p: *mut u32, o: __m512i) {
        // SAFETY: caller's contract.
        unsafe { _mm512_storeu_si512(p.cast(), o) }
    }
    #[inline(always)]
    unsafe fn load_offsets_live(p: *const u32, m: __mmask16) -> __m512i {
        // SAFETY: caller's contract; masked-out lanes are not accessed.
        unsafe { _mm512_maskz_loadu_epi32(m, p.cast()) }
    }
    #[inline(always)]
    unsafe fn same_offsets(a: __m512i, b: __m512i) -> __mmask16 {
        // SAFETY: the caller's contract: the CPU has the instruction set.
        unsafe { _mm512_cmpeq_epi32_mask(a, b) }
    }
    #[inline(always)]
    unsafe fn chosen(take: __mmask16) -> u32 {
        take.count_ones()
    }
}
