//! The portable microkernel: plain Rust over fixed-size arrays, which the compiler keeps in
//! registers (and vectorises with whatever baseline SIMD the target has). Runs on every target.

/// Tile rows.
pub(crate) const MR: usize = 4;
/// Tile columns.
pub(crate) const NR: usize = 8;

/// The `MR × NR` portable tile; contract in [`crate::arch`].
///
/// # Safety
/// As [`crate::arch::KernelFn`] (no instruction-set requirement).
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn kernel(
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
) {
    debug_assert_eq!(rsb, NR, "the scalar kernel reads packed B only");
    // SAFETY: the caller guarantees `a` holds k·MR floats, and `b` k rows of NR (packed B).
    let (a, b) = unsafe {
        (
            std::slice::from_raw_parts(a, k * MR),
            std::slice::from_raw_parts(b, k * NR),
        )
    };
    let mut acc = [[0.0f32; NR]; MR];
    for (ap, bp) in a.chunks_exact(MR).zip(b.chunks_exact(NR)) {
        for i in 0..MR {
            for j in 0..NR {
                acc[i][j] += ap[i] * bp[j];
            }
        }
    }
    for (i, acc_row) in acc.iter().enumerate().take(rows) {
        // SAFETY: the caller guarantees `rows` rows of `cols` writable floats at stride `rsc`.
        let row = unsafe { std::slice::from_raw_parts_mut(c.add(i * rsc), cols) };
        if beta == 0.0 {
            for (cij, &v) in row.iter_mut().zip(acc_row) {
                *cij = alpha * v;
            }
        } else {
            for (cij, &v) in row.iter_mut().zip(acc_row) {
                *cij = alpha * v + beta * *cij;
            }
        }
    }
}
