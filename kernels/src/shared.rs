//! A raw handle on an output buffer that parallel tasks fill in disjoint parts (whole images,
//! whole task partials, blocks of rows), where the parts are not one contiguous split that
//! `chunks_mut` could hand out.

/// Raw pointer to an output buffer shared by tasks that write disjoint parts of it.
#[derive(Clone, Copy)]
pub(crate) struct SharedOut<T>(*mut T, usize);
// SAFETY: tasks only form slices of disjoint ranges of the buffer (`slice`'s contract), and the
// `&mut [T]` it came from outlives the parallel section.
unsafe impl<T: Send> Send for SharedOut<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Sync for SharedOut<T> {}

impl<T> SharedOut<T> {
    pub(crate) fn new(buf: &mut [T]) -> Self {
        SharedOut(buf.as_mut_ptr(), buf.len())
    }
    /// # Safety
    /// No two live slices from the same `SharedOut` overlap.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn slice(&self, range: std::ops::Range<usize>) -> &mut [T] {
        assert!(range.start <= range.end && range.end <= self.1);
        // SAFETY: in bounds (asserted); exclusivity is the caller's contract.
        unsafe { std::slice::from_raw_parts_mut(self.0.add(range.start), range.len()) }
    }
}
