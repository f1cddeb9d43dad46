//! AVX2 + FMA: the [`Vector`] register (`__m256`, 8 lanes) and the microkernels, tiles of
//! `MR × 8·NV` 256-bit accumulators, the generic body of [`super::tile`] compiled for AVX2. The registered shapes keep accumulators + B vectors + one
//! broadcast within the 16 ymm registers (6 × 16 is the classic Haswell shape). Edge columns
//! use `vmaskmov` loads and stores, which never touch masked-out lanes.

use std::arch::x86_64::*;

use super::vector::Vector;

microkernels!(__m256, "avx2,fma", "AVX2 and FMA");
// The dot form: 2 × 2 sums of two registers each (8 of the 16 registers, 4 of B beside
// them and one of A); a third row or a fourth pair takes B's columns again.
dot_kernel!(__m256, "avx2,fma", 2, dot_2x2: 2 x 2);

/// AVX2's lane mask, and whether every lane is live (then plain loads and stores: AMD's
/// `vmaskmov` stores are slow).
#[derive(Clone, Copy)]
pub(crate) struct Mask256 {
    lanes: __m256i,
    full: bool,
}

impl Vector for __m256 {
    const LANES: usize = 8;
    const REGISTERS: usize = 16;
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
    unsafe fn sub(a: Self, b: Self) -> Self {
        // SAFETY: the caller's contract: the CPU has the instruction set.
        unsafe { _mm256_sub_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn fnmadd(a: Self, b: Self, c: Self) -> Self {
        // SAFETY: the caller's contract: the CPU has the instruction set.
        unsafe { _mm256_fnmadd_ps(a, b, c) }
    }
    #[inline(always)]
    unsafe fn max(a: Self, b: Self) -> Self {
        // SAFETY: the caller's contract: the CPU has the instruction set.
        unsafe { _mm256_max_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn rsqrt_estimate(a: Self) -> Self {
        // SAFETY: the caller's contract: the CPU has the instruction set.
        unsafe { _mm256_rsqrt_ps(a) }
    }
    #[inline(always)]
    unsafe fn recip_estimate(a: Self) -> Self {
        // SAFETY: the caller's contract: the CPU has the instruction set.
        unsafe { _mm256_rcp_ps(a) }
    }

    #[inline(always)]
    unsafe fn relu(a: Self) -> Self {
        // SAFETY: the caller's contract: the CPU has the instruction set.
        unsafe {
            let keep = _mm256_cmp_ps::<_CMP_NLT_UQ>(a, _mm256_setzero_ps());
            _mm256_and_ps(keep, a)
        }
    }

    type Choice = __m256;
    type Offsets = __m256i;
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: Self) {
        // SAFETY: caller's contract.
        unsafe { _mm256_storeu_ps(p, v) }
    }
    #[inline(always)]
    unsafe fn takes_over(v: Self, best: Self) -> __m256 {
        // SAFETY: the caller's contract: the CPU has the instruction set.
        unsafe {
            _mm256_and_ps(
                _mm256_cmp_ps::<_CMP_NLE_UQ>(v, best),
                _mm256_cmp_ps::<_CMP_ORD_Q>(best, best),
            )
        }
    }
    #[inline(always)]
    unsafe fn choose(take: __m256, a: Self, b: Self) -> Self {
        // SAFETY: the caller's contract: the CPU has the instruction set.
        unsafe { _mm256_blendv_ps(a, b, take) }
    }
    #[inline(always)]
    unsafe fn offsets(at: usize) -> __m256i {
        // SAFETY: the caller's contract: the CPU has the instruction set.
        unsafe {
            let iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
            _mm256_add_epi32(_mm256_set1_epi32(at as i32), iota)
        }
    }
    #[inline(always)]
    unsafe fn choose_offsets(take: __m256, a: __m256i, b: __m256i) -> __m256i {
        // SAFETY: the caller's contract: the CPU has the instruction set.
        unsafe { _mm256_blendv_epi8(a, b, _mm256_castps_si256(take)) }
    }
    #[inline(always)]
    unsafe fn store_offsets(p: *mut u32, o: __m256i) {
        // SAFETY: caller's contract.
        unsafe { _mm256_storeu_si256(p.cast(), o) }
    }
    #[inline(always)]
    unsafe fn store_offsets_live(p: *mut u32, m: Mask256, o: __m256i) {
        // SAFETY: caller's contract; masked-out lanes are not accessed.
        unsafe {
            if m.full {
                _mm256_storeu_si256(p.cast(), o)
            } else {
                _mm256_maskstore_epi32(p.cast(), m.lanes, o)
            }
        }
    }
    #[inline(always)]
    unsafe fn load_offsets_live(p: *const u32, m: Mask256) -> __m256i {
        // SAFETY: caller's contract; masked-out lanes are not accessed.
        unsafe {
            if m.full {
                _mm256_loadu_si256(p.cast())
            } else {
                _mm256_maskload_epi32(p.cast(), m.lanes)
            }
        }
    }
    #[inline(always)]
    unsafe fn same_offsets(a: __m256i, b: __m256i) -> __m256 {
        // SAFETY: the caller's contract: the CPU has the instruction set.
        unsafe { _mm256_castsi256_ps(_mm256_cmpeq_epi32(a, b)) }
    }
    #[inline(always)]
    unsafe fn positive(a: Self) -> __m256 {
        // SAFETY: the caller's contract: the CPU has the instruction set.
        unsafe { _mm256_cmp_ps::<_CMP_GT_OQ>(a, _mm256_setzero_ps()) }
    }
    #[inline(always)]
    unsafe fn greater(a: Self, b: Self) -> __m256 {
        // SAFETY: the caller's contract: the CPU has the instruction set.
        unsafe { _mm256_cmp_ps::<_CMP_GT_OQ>(a, b) }
    }
    #[inline(always)]
    unsafe fn chosen(take: __m256) -> u32 {
        // SAFETY: the caller's contract: the CPU has the instruction set.
        unsafe { (_mm256_movemask_ps(take) as u32).count_ones() }
    }
    #[inline(always)]
    unsafe fn zero_counts() -> __m256i {
        // SAFETY: the caller's contract: the CPU has the instruction set.
        unsafe { _mm256_setzero_si256() }
    }
    #[inline(always)]
    unsafe fn count_chosen(counts: __m256i, take: __m256) -> __m256i {
        // A chosen lane is all ones, −1 as an integer.
        // SAFETY: the caller's contract: the CPU has the instruction set.
        unsafe { _mm256_sub_epi32(counts, _mm256_castps_si256(take)) }
    }
    #[inline(always)]
    unsafe fn sum_counts(counts: __m256i) -> usize {
        let mut lanes = [0u32; 8];
        // SAFETY: `lanes` holds 8 u32; the CPU has the instruction set (caller's contract).
        unsafe { _mm256_storeu_si256(lanes.as_mut_ptr().cast(), counts) };
        lanes.iter().map(|&c| c as usize).sum()
    }
    #[inline(always)]
    unsafe fn any_signed_or_beyond_max(a: Self) -> bool {
        // The sign bits, or'ed with the lanes above f32::MAX or unordered (+∞, a NaN).
        // SAFETY: the caller's contract: the CPU has the instruction set.
        unsafe {
            let beyond = _mm256_cmp_ps::<_CMP_NLE_UQ>(a, _mm256_set1_ps(f32::MAX));
            _mm256_movemask_ps(_mm256_or_ps(a, beyond)) != 0
        }
    }
    type Wide = __m256d;
    #[inline(always)]
    unsafe fn widen(v: Self) -> [__m256d; 2] {
        // SAFETY: the caller's contract: the CPU has the instruction set.
        unsafe {
            [
                _mm256_cvtps_pd(_mm256_castps256_ps128(v)),
                _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(v)),
            ]
        }
    }
    #[inline(always)]
    unsafe fn wide_zero() -> __m256d {
        // SAFETY: the caller's contract: the CPU has the instruction set.
        unsafe { _mm256_setzero_pd() }
    }
    #[inline(always)]
    unsafe fn wide_sub(a: __m256d, b: __m256d) -> __m256d {
        // SAFETY: the caller's contract: the CPU has the instruction set.
        unsafe { _mm256_sub_pd(a, b) }
    }
    #[inline(always)]
    unsafe fn wide_add(a: __m256d, b: __m256d) -> __m256d {
        // SAFETY: the caller's contract: the CPU has the instruction set.
        unsafe { _mm256_add_pd(a, b) }
    }
    #[inline(always)]
    unsafe fn wide_mul(a: __m256d, b: __m256d) -> __m256d {
        // SAFETY: the caller's contract: the CPU has the instruction set.
        unsafe { _mm256_mul_pd(a, b) }
    }
    #[inline(always)]
    unsafe fn wide_store(p: *mut f64, v: __m256d) {
        // SAFETY: caller's contract.
        unsafe { _mm256_storeu_pd(p, v) }
    }
    #[inline(always)]
    unsafe fn dot_sums<const W: usize>(acc: &[[Self; W]], out: &mut [f32]) {
        const AT_ONCE: usize = 8;
        debug_assert!(W == 2 && out.len() == acc.len());
        for (acc, out) in acc.chunks(AT_ONCE).zip(out.chunks_mut(AT_ONCE)) {
            // SAFETY: the caller's contract: the CPU has the instruction set.
            unsafe {
                // As AVX-512's (see there), 8 sums at a time: the first level adds a sum's
                // two registers (lanes l and l + 8), the next packs two sums per register.
                let mut v = [_mm256_setzero_ps(); AT_ONCE];
                for (v, a) in v.iter_mut().zip(acc) {
                    *v = _mm256_add_ps(a[0], a[1]);
                }
                // 4 apart: [x's four | y's four] per pair of sums.
                let v: [__m256; 4] = std::array::from_fn(|i| {
                    let (x, y) = (v[2 * i], v[2 * i + 1]);
                    _mm256_add_ps(
                        _mm256_permute2f128_ps::<0x20>(x, y),
                        _mm256_permute2f128_ps::<0x31>(x, y),
                    )
                });
                // 2 apart: half h of register g holds sums 4g + h and 4g + 2 + h.
                let v: [__m256; 2] = std::array::from_fn(|g| {
                    let (x, y) = (v[2 * g], v[2 * g + 1]);
                    _mm256_add_ps(
                        _mm256_shuffle_ps::<0b01_00_01_00>(x, y),
                        _mm256_shuffle_ps::<0b11_10_11_10>(x, y),
                    )
                });
                // 1 apart: lane 4h + r holds sum h + 2r.
                let v = _mm256_add_ps(
                    _mm256_shuffle_ps::<0b10_00_10_00>(v[0], v[1]),
                    _mm256_shuffle_ps::<0b11_01_11_01>(v[0], v[1]),
                );
                let mut lanes = [0.0f32; AT_ONCE];
                _mm256_storeu_ps(lanes.as_mut_ptr(), v);
                for (e, o) in out.iter_mut().enumerate() {
                    *o = lanes[4 * (e % 2) + e / 2];
                }
            }
        }
    }
}
