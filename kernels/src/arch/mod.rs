//! Microkernels: one register tile each, the only code that differs between instruction sets.
//!
//! # The microkernel contract
//!
//! A microkernel is a [`KernelFn`] that computes one `MR × NR` tile
//!
//! ```text
//! C ← alpha · Ã·B̃ + beta · C
//! ```
//!
//! * `Ã` is a packed `MR × k` micro-panel: column `p` is the `MR` values at `a[p*MR ..]`.
//! * `B̃` is a `k × NR` micro-panel whose row `p` starts at `b[p*rsb]`: packed (`rsb = NR`), or,
//!   for kernels registered with `direct_b`, B itself (unit column stride). Only the first
//!   `cols` columns of each row are read.
//! * `C` is row-major with row stride `rsc` and unit column stride; only its first `rows × cols`
//!   elements are read or written (`rows ≤ MR`, `cols ≤ NR`): edge tiles need no scratch copy.
//! * **`beta == 0` never reads `C`**: whatever `C` held (NaN, garbage) does not reach the result.
//! * `k == 0` is allowed and gives `C ← beta·C` (or zeros when `beta == 0`).
//! * The sum over `p` runs in increasing order, one product at a time per element, so a tile's
//!   result does not depend on how the driver split the work among threads.
//!
//! MR and NR are constants of each kernel, registered with its block sizes in
//! [`crate::gemm::config`]: the driver never names an instruction set.

pub(crate) mod scalar;

// The generic tile and its register trait first: `tile`'s `microkernels!` makes the per-ISA
// entry points below.
#[cfg(target_arch = "x86_64")]
#[macro_use]
mod tile;
#[cfg(target_arch = "x86_64")]
pub(crate) mod vector;
// The dot form's generic body and its `dot_kernel!`, before the per-ISA entry points too.
#[cfg(target_arch = "x86_64")]
#[macro_use]
pub(crate) mod dot;

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2;
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512;

#[cfg(target_arch = "aarch64")]
pub(crate) mod neon;

#[cfg(feature = "openblas")]
pub(crate) mod openblas;

/// The lanes each element's products are summed in by the dot forms (the matrix–vector one
/// and `crate::gemm::dot_form`), whatever the register width: their bits do not depend on it.
pub(crate) const DOT_LANES: usize = 16;

/// Most sums one block of the dot form holds, and `Vector::dot_sums` takes in one call.
pub(crate) const DOT_SUMS: usize = 16;

/// One dot-form entry point (`arch::dot::dot_columns` compiled for an instruction set): `k,
/// a, lda, rows, b, ldb, live, sums` as its arguments.
pub(crate) type DotColumns =
    unsafe fn(usize, *const f32, usize, usize, *const f32, usize, usize, *mut f32);

/// Sums the dot forms' 16 lanes in a fixed tree (8, 4, 2, 1 apart).
#[inline(always)]
pub(crate) fn reduce_lanes(mut acc: [f32; DOT_LANES]) -> f32 {
    let mut width = DOT_LANES / 2;
    while width > 0 {
        for l in 0..width {
            acc[l] += acc[l + width];
        }
        width /= 2;
    }
    acc[0]
}

/// Asks for the cache line holding `p` to be fetched into L1 (one prefetch). A hint, which
/// cannot fault.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) fn prefetch_line(p: *const f32) {
    // SAFETY: prefetching is a hint and cannot fault.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p as *const i8)
    };
}

/// Asks for every cache line of the `len` floats from `p` to be fetched into L1, the last one
/// too (a run need not start on a line, and then it straddles one line more than its length
/// fills). A hint, which cannot fault: any address will do. Nothing on other architectures.
#[inline(always)]
pub(crate) fn prefetch_run(p: *const f32, len: usize) {
    #[cfg(target_arch = "x86_64")]
    prefetch_lines::<{ std::arch::x86_64::_MM_HINT_T0 }>(p, len);
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (p, len);
}

/// [`prefetch_run`] into L2 rather than L1: for data wanted a while later, or more of it than
/// L1 holds beside what is in use now.
#[inline(always)]
pub(crate) fn prefetch_run_to_l2(p: *const f32, len: usize) {
    #[cfg(target_arch = "x86_64")]
    prefetch_lines::<{ std::arch::x86_64::_MM_HINT_T1 }>(p, len);
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (p, len);
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn prefetch_lines<const HINT: i32>(p: *const f32, len: usize) {
    use std::arch::x86_64::_mm_prefetch;
    if len > 0 {
        for j in (0..len).step_by(16) {
            // SAFETY: prefetching is a hint and cannot fault.
            unsafe { _mm_prefetch::<HINT>(p.wrapping_add(j) as *const i8) };
        }
        // SAFETY: as above.
        unsafe { _mm_prefetch::<HINT>(p.wrapping_add(len - 1) as *const i8) };
    }
}

/// The signature of every GEMM microkernel; see the module documentation for the contract.
///
/// # Safety
/// `a` is readable for `k·MR` floats; `b` for `cols` floats at each of `b + p·rsb`, p < k; `c`
/// writable for `rows` rows of `cols` floats at row stride `rsc`; `rows ≤ MR`, `cols ≤ NR`; none
/// of the written elements overlap the read ones; and the CPU has the instruction-set features
/// the kernel was compiled for.
pub(crate) type KernelFn = unsafe fn(
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
);

/// A microkernel that reads A in place instead of from a packed micro-panel: element (i, p) of
/// the tile's A at `a[i·rsa + p·csa]` (`a` = `(pointer, rsa, csa)`); otherwise as [`KernelFn`].
/// For small products, where packing A costs more than the product.
///
/// # Safety
/// As [`KernelFn`], except that `a` must be readable at `i·rsa + p·csa` for `i < rows`, `p < k`
/// (only rows inside the tile are read), and `rows ≥ 1`.
pub(crate) type StridedAKernelFn = unsafe fn(
    k: usize,
    alpha: f32,
    a: (*const f32, usize, usize),
    b: *const f32,
    rsb: usize,
    beta: f32,
    c: *mut f32,
    rsc: usize,
    rows: usize,
    cols: usize,
);

/// A microkernel over a sum of products of segments of K: C ← Σₜ A(t)·B(t) + beta·C, where
/// segment `t = (a_off, b_off)` of `taps` is `tap_k` deep, A(t)'s row `i` has its elements at
/// `a + a_off + a_rows[i] + p·a_step` and B(t)'s row `p` at `b + b_off + p·rsb`. The
/// accumulators stay in registers across the segments, and A's rows may lie anywhere: a
/// convolution's kernel rows as the segments over the shifted views of its input (rows the
/// output pixels, each row's wrapped pixels left out), or its output rows as the segments of
/// a weight gradient's K.
///
/// # Safety
/// `1 ≤ a_rows.len() ≤` the kernel's MR; every element named above readable for `i <
/// a_rows.len()`, `p < tap_k`, and B's for `cols` floats; `c` readable (unless `beta` is 0)
/// and writable for `a_rows.len()` rows of `cols ≤ NR` floats at row stride `rsc`, none of
/// them among those read; the CPU has the kernel's instruction-set features.
pub(crate) type TapsKernelFn = unsafe fn(
    a: (*const f32, &[usize], usize),
    taps: &[(usize, usize)],
    tap_k: usize,
    b: *const f32,
    rsb: usize,
    beta: f32,
    c: *mut f32,
    rsc: usize,
    cols: usize,
);
