//! One SIMD register of f32 lanes behind a small trait, for kernels written once and compiled
//! per instruction set: the GEMM's microkernels ([`super::tile`]), the dot form
//! ([`super::dot`]), the one-channel 3×3 convolution (`conv::direct3x3`) and max pooling
//! (`pool::max_vector`) and batch normalisation's per-channel loops (`norm::vector`). AVX-512 (`__m512`, 16 lanes, implemented in `avx512.rs`) and AVX2
//! (`__m256`, 8, in `avx2.rs`).

#[cfg(doc)]
use super::{reduce_lanes, DOT_LANES, DOT_SUMS};

/// One SIMD register of f32 lanes as the generic kernels use it. Every method is
/// `inline(always)`, so the generic bodies compile inside their `#[target_feature]` entry points.
pub(crate) trait Vector: Copy {
    /// f32 lanes per register.
    const LANES: usize;
    /// Vector registers the instruction set names (32 for AVX-512, 16 for AVX2).
    const REGISTERS: usize;
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
    /// `a − b`.
    unsafe fn sub(a: Self, b: Self) -> Self;
    /// `c − a·b`, one rounding.
    unsafe fn fnmadd(a: Self, b: Self, c: Self) -> Self;
    /// The larger of `a` and `b` per lane, `b` where either is NaN (`maxps`): a bound goes
    /// first, so a NaN in `b` passes.
    unsafe fn max(a: Self, b: Self) -> Self;
    /// An estimate of `1/√a` for a normal positive `a`, relative error at most 1.5·2⁻¹² (the
    /// instruction's: AVX2's `rsqrtps`; AVX-512's `rsqrt14ps`, 2⁻¹⁴).
    unsafe fn rsqrt_estimate(a: Self) -> Self;
    /// An estimate of `1/a` for a normal `a`, the same bound (`rcpps`, `rcp14ps`).
    unsafe fn recip_estimate(a: Self) -> Self;
    /// The activation's ReLU bit for bit: NaN kept, x < 0 to +0, the rest (−0 too) kept.
    unsafe fn relu(a: Self) -> Self;

    /// A per-lane choice (a comparison's result).
    type Choice: Copy;
    /// A register of `LANES` u32 (element offsets).
    type Offsets: Copy;
    /// All `LANES` floats to `p`.
    unsafe fn store(p: *mut f32, v: Self);
    /// The lanes where `v` takes over from a running maximum `best`: `!isnan(best) && !(v <=
    /// best)` — larger, or the first NaN (max pooling's rule).
    unsafe fn takes_over(v: Self, best: Self) -> Self::Choice;
    /// `b` in the chosen lanes, `a` in the others.
    unsafe fn choose(take: Self::Choice, a: Self, b: Self) -> Self;
    /// `at, at + 1, …, at + LANES − 1` (`at + LANES ≤ 2³²`).
    unsafe fn offsets(at: usize) -> Self::Offsets;
    /// `b` in the chosen lanes, `a` in the others.
    unsafe fn choose_offsets(
        take: Self::Choice,
        a: Self::Offsets,
        b: Self::Offsets,
    ) -> Self::Offsets;
    /// All `LANES` offsets to `p`.
    unsafe fn store_offsets(p: *mut u32, o: Self::Offsets);
    /// The live lanes of `o` to `p` (the others not touched).
    unsafe fn store_offsets_live(p: *mut u32, m: Self::Mask, o: Self::Offsets);
    /// The live lanes of offsets at `p` (the others zero, never read).
    unsafe fn load_offsets_live(p: *const u32, m: Self::Mask) -> Self::Offsets;
    /// The lanes where `a` and `b` are equal.
    unsafe fn same_offsets(a: Self::Offsets, b: Self::Offsets) -> Self::Choice;
    /// The lanes where `a > 0` (a NaN is not).
    unsafe fn positive(a: Self) -> Self::Choice;
    /// The lanes where `a > b` (a NaN in either is not).
    unsafe fn greater(a: Self, b: Self) -> Self::Choice;
    /// How many lanes `take` chose.
    unsafe fn chosen(take: Self::Choice) -> u32;
    /// Per-lane counts at zero.
    unsafe fn zero_counts() -> Self::Offsets;
    /// `counts` plus one in the lanes `take` chose (a count per lane: no scalar popcount and
    /// no memory in a loop that counts per step).
    unsafe fn count_chosen(counts: Self::Offsets, take: Self::Choice) -> Self::Offsets;
    /// The sum of the lanes' counts.
    unsafe fn sum_counts(counts: Self::Offsets) -> usize;
    /// Whether any lane of `a` is not a finite number without its sign bit: a negative, −0,
    /// +∞ or a NaN (its bits, as an unsigned integer, above `f32::MAX`'s).
    unsafe fn any_signed_or_beyond_max(a: Self) -> bool;

    /// A register of f64 lanes, half as many as `Self`'s.
    type Wide: Copy;
    /// `v`'s lanes as f64, the first half then the second (exact).
    unsafe fn widen(v: Self) -> [Self::Wide; 2];
    unsafe fn wide_zero() -> Self::Wide;
    unsafe fn wide_sub(a: Self::Wide, b: Self::Wide) -> Self::Wide;
    unsafe fn wide_add(a: Self::Wide, b: Self::Wide) -> Self::Wide;
    unsafe fn wide_mul(a: Self::Wide, b: Self::Wide) -> Self::Wide;
    /// All `LANES / 2` f64 to `p`.
    unsafe fn wide_store(p: *mut f64, v: Self::Wide);

    /// The dot forms' sums of up to [`DOT_SUMS`] accumulators at once: `out[e]` =
    /// `reduce_lanes` of `acc[e]`'s [`DOT_LANES`] lanes (`W` registers, `W·LANES` =
    /// `DOT_LANES`), bit for bit — the same additions in the same tree, several sums' in each
    /// instruction, where one at a time cost more than the products of a short K (15 scalar
    /// additions per sum).
    unsafe fn dot_sums<const W: usize>(acc: &[[Self; W]], out: &mut [f32]);
}
