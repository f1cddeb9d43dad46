//! AVX-512F: the [`Vector`] register (`__m512`, 16 lanes) and the microkernels, tiles of
//! `MR × 16·NV` 512-bit accumulators, the generic body of [`super::tile`] compiled for AVX-512. The shapes registered in [`crate::gemm::config`] keep
//! accumulators + B vectors + one broadcast within the 32 zmm registers.

use std::arch::x86_64::*;

use super::vector::Vector;
use super::DOT_SUMS;

microkernels!(__m512, "avx512f", "AVX-512F");
// The dot form: a product's 2–4 rows in one block of at most 16 sums of one register each
// (with a register of B per column and one of A beside them: at most 25 of the 32), so each
// column of B is read once for every row.
dot_kernel!(__m512, "avx512f", 1, dot_4x4: 4 x 4, dot_3x5: 3 x 5, dot_2x8: 2 x 8);

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
    unsafe fn sub(a: Self, b: Self) -> Self {
        // SAFETY: the caller's contract: the CPU has the instruction set.
        unsafe { _mm512_sub_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn fnmadd(a: Self, b: Self, c: Self) -> Self {
        // SAFETY: the caller's contract: the CPU has the instruction set.
        unsafe { _mm512_fnmadd_ps(a, b, c) }
    }
    #[inline(always)]
    unsafe fn max(a: Self, b: Self) -> Self {
        // SAFETY: the caller's contract: the CPU has the instruction set.
        unsafe { _mm512_max_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn rsqrt_estimate(a: Self) -> Self {
        // SAFETY: the caller's contract: the CPU has the instruction set.
        unsafe { _mm512_rsqrt14_ps(a) }
    }
    #[inline(always)]
    unsafe fn recip_estimate(a: Self) -> Self {
        // SAFETY: the caller's contract: the CPU has the instruction set.
        unsafe { _mm512_rcp14_ps(a) }
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
    unsafe fn store_offsets_live(p: *mut u32, m: __mmask16, o: __m512i) {
        // SAFETY: caller's contract; masked-out lanes are not accessed.
        unsafe { _mm512_mask_storeu_epi32(p.cast(), m, o) }
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
    unsafe fn positive(a: Self) -> __mmask16 {
        // SAFETY: the caller's contract: the CPU has the instruction set.
        unsafe { _mm512_cmp_ps_mask::<_CMP_GT_OQ>(a, _mm512_setzero_ps()) }
    }
    #[inline(always)]
    unsafe fn greater(a: Self, b: Self) -> __mmask16 {
        // SAFETY: the caller's contract: the CPU has the instruction set.
        unsafe { _mm512_cmp_ps_mask::<_CMP_GT_OQ>(a, b) }
    }
    #[inline(always)]
    unsafe fn chosen(take: __mmask16) -> u32 {
        take.count_ones()
    }
    #[inline(always)]
    unsafe fn zero_counts() -> __m512i {
        // SAFETY: the caller's contract: the CPU has the instruction set.
        unsafe { _mm512_setzero_si512() }
    }
    #[inline(always)]
    unsafe fn count_chosen(counts: __m512i, take: __mmask16) -> __m512i {
        // SAFETY: the caller's contract: the CPU has the instruction set.
        unsafe { _mm512_mask_add_epi32(counts, take, counts, _mm512_set1_epi32(1)) }
    }
    #[inline(always)]
    unsafe fn sum_counts(counts: __m512i) -> usize {
        let mut lanes = [0u32; 16];
        // SAFETY: `lanes` holds 16 u32; the CPU has the instruction set (caller's contract).
        unsafe { _mm512_storeu_si512(lanes.as_mut_ptr().cast(), counts) };
        lanes.iter().map(|&c| c as usize).sum()
    }
    #[inline(always)]
    unsafe fn any_signed_or_beyond_max(a: Self) -> bool {
        // One unsigned comparison of the bits: a sign bit makes them larger than any finite
        // non-negative number's, and +∞ and the NaNs lie above f32::MAX's.
        // SAFETY: the caller's contract: the CPU has the instruction set.
        unsafe {
            let max_bits = _mm512_set1_epi32(f32::MAX.to_bits() as i32);
            _mm512_cmpgt_epu32_mask(_mm512_castps_si512(a), max_bits) != 0
        }
    }
    type Wide = __m512d;
    #[inline(always)]
    unsafe fn widen(v: Self) -> [__m512d; 2] {
        // SAFETY: the caller's contract: the CPU has the instruction set.
        unsafe {
            let high = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v)));
            [
                _mm512_cvtps_pd(_mm512_castps512_ps256(v)),
                _mm512_cvtps_pd(high),
            ]
        }
    }
    #[inline(always)]
    unsafe fn wide_zero() -> __m512d {
        // SAFETY: the caller's contract: the CPU has the instruction set.
        unsafe { _mm512_setzero_pd() }
    }
    #[inline(always)]
    unsafe fn wide_sub(a: __m512d, b: __m512d) -> __m512d {
        // SAFETY: the caller's contract: the CPU has the instruction set.
        unsafe { _mm512_sub_pd(a, b) }
    }
    #[inline(always)]
    unsafe fn wide_add(a: __m512d, b: __m512d) -> __m512d {
        // SAFETY: the caller's contract: the CPU has the instruction set.
        unsafe { _mm512_add_pd(a, b) }
    }
    #[inline(always)]
    unsafe fn wide_mul(a: __m512d, b: __m512d) -> __m512d {
        // SAFETY: the caller's contract: the CPU has the instruction set.
        unsafe { _mm512_mul_pd(a, b) }
    }
    #[inline(always)]
    unsafe fn wide_store(p: *mut f64, v: __m512d) {
        // SAFETY: caller's contract.
        unsafe { _mm512_storeu_pd(p, v) }
    }
    #[inline(always)]
    unsafe fn dot_sums<const W: usize>(acc: &[[Self; W]], out: &mut [f32]) {
        debug_assert!(W == 1 && acc.len() <= DOT_SUMS && out.len() == acc.len());
        // SAFETY: the caller's contract: the CPU has the instruction set.
        unsafe {
            // Each level adds the lanes `width` apart of two registers' groups of 2·width
            // lanes, the lower lane first (as `reduce_lanes`), and packs both results into
            // one register: 16 sums' trees in 8 + 4 + 2 + 1 additions. Missing sums are zero
            // registers (their shuffles and additions fold away).
            let mut v = [_mm512_setzero_ps(); DOT_SUMS];
            for (v, a) in v.iter_mut().zip(acc) {
                *v = a[0];
            }
            // 8 apart: [x lanes 0-7 + 8-15 | y's], per pair of sums.
            let v: [__m512; 8] = std::array::from_fn(|i| {
                let (x, y) = (v[2 * i], v[2 * i + 1]);
                _mm512_add_ps(
                    _mm512_shuffle_f32x4::<0b01_00_01_00>(x, y),
                    _mm512_shuffle_f32x4::<0b11_10_11_10>(x, y),
                )
            });
            // 4 apart: a quarter per sum, sums 4j..4j+4 in register j.
            let v: [__m512; 4] = std::array::from_fn(|j| {
                let (x, y) = (v[2 * j], v[2 * j + 1]);
                _mm512_add_ps(
                    _mm512_shuffle_f32x4::<0b10_00_10_00>(x, y),
                    _mm512_shuffle_f32x4::<0b11_01_11_01>(x, y),
                )
            });
            // 2 apart: quarter q of register h holds sums 8h + q and 8h + 4 + q, two lanes each.
            let v: [__m512; 2] = std::array::from_fn(|h| {
                let (x, y) = (v[2 * h], v[2 * h + 1]);
                _mm512_add_ps(
                    _mm512_shuffle_ps::<0b01_00_01_00>(x, y),
                    _mm512_shuffle_ps::<0b11_10_11_10>(x, y),
                )
            });
            // 1 apart: lane 4q + r holds sum q + 4r.
            let v = _mm512_add_ps(
                _mm512_shuffle_ps::<0b10_00_10_00>(v[0], v[1]),
                _mm512_shuffle_ps::<0b11_01_11_01>(v[0], v[1]),
            );
            let mut lanes = [0.0f32; DOT_SUMS];
            _mm512_storeu_ps(lanes.as_mut_ptr(), v);
            for (e, o) in out.iter_mut().enumerate() {
                *o = lanes[4 * (e % 4) + e / 4];
            }
        }
    }
}
