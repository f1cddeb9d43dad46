//! A raw handle on an output buffer that parallel tasks fill in disjoint parts (whole images,
//! whole task partials, blocks of rows), where the parts are not one contiguous split that
//! `chunks_mut` could hand out.

use std::marker::PhantomData;

/// Handle on an output buffer shared by tasks that write disjoint parts of it. It borrows the
/// buffer mutably for `'a`, so the borrow checker proves that the buffer outlives every task
/// holding the handle, and that nothing else touches it meanwhile; that the tasks' parts do not
/// overlap is [`SharedOut::slice`]'s contract.
pub(crate) struct SharedOut<'a, T> {
    ptr: *mut T,
    len: usize,
    buf: PhantomData<&'a mut [T]>,
}

// SAFETY: tasks only form slices of disjoint ranges of the buffer (`slice`'s contract), and the
// handle holds the buffer's exclusive borrow for as long as it lives.
unsafe impl<T: Send> Send for SharedOut<'_, T> {}
// SAFETY: as above.
unsafe impl<T: Send> Sync for SharedOut<'_, T> {}

impl<'a, T> SharedOut<'a, T> {
    pub(crate) fn new(buf: &'a mut [T]) -> Self {
        SharedOut {
            ptr: buf.as_mut_ptr(),
            len: buf.len(),
            buf: PhantomData,
        }
    }
    /// Elements `range` of the buffer.
    ///
    /// # Safety
    /// No two live slices from the same `SharedOut` overlap.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn slice(&self, range: std::ops::Range<usize>) -> &'a mut [T] {
        assert!(range.start <= range.end && range.end <= self.len);
        // SAFETY: in bounds (asserted) of a buffer borrowed for `'a`; exclusivity is the
        // caller's contract.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(range.start), range.len()) }
    }
}
