//! One GEMM problem as the driver, the packing routines and the other paths see it: the
//! operands' buffers and strides (checked by the caller), C as a raw pointer that parallel tasks
//! write in disjoint parts, and what packs an A that is never stored. A leaf: it imports none of
//! the modules that use it.

use super::epilogue::Epilogue;

/// Packs blocks of an A that is never stored whole (an implicit im2col matrix): what
/// [`super::pack::pack_a`] does for a stored A, for `dst`, rows `i0..i0 + mb`, columns `p0..p0 + kb` and
/// micro-panels of `mr` rows (the rows past `mb` zero).
pub(crate) trait PackA: Sync {
    fn pack(&self, dst: &mut [f32], i0: usize, p0: usize, mb: usize, kb: usize, mr: usize);
}

/// An input matrix: its buffer and element strides (checked against the buffer by the caller).
#[derive(Clone, Copy)]
pub(crate) struct Operand<'a> {
    pub data: &'a [f32],
    pub rs: usize,
    pub cs: usize,
}

/// The output matrix as a raw pointer, so threads can write disjoint tiles of it at once.
#[derive(Clone, Copy)]
pub(crate) struct Output {
    pub ptr: *mut f32,
    pub rs: usize,
    pub cs: usize,
}

// SAFETY: `Output` is only shared between tasks that write disjoint elements of C (the grid of
// rectangles of the driver, a matrix-vector product's output ranges), and the `&mut [f32]` it came from outlives the parallel section.
unsafe impl Send for Output {}
// SAFETY: as for `Send`: concurrent users touch disjoint elements.
unsafe impl Sync for Output {}

/// One GEMM problem as the driver sees it: C (m×n) ← alpha·A (m×k)·B (k×n) + beta·C, with
/// m, n, k > 0 and alpha ≠ 0 (the caller handled the quick returns).
#[derive(Clone, Copy)]
pub(crate) struct Problem<'a> {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub alpha: f32,
    pub a: Operand<'a>,
    /// When set, A's blocks come from here and `a` is not read.
    pub a_packer: Option<&'a dyn PackA>,
    pub b: Operand<'a>,
    pub beta: f32,
    pub c: Output,
    /// Bias and activation applied to each tile after its last K slice.
    pub epilogue: Option<Epilogue<'a>>,
}
