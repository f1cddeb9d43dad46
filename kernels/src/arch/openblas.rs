//! The OpenBLAS backend: the system library's `cblas_sgemm`, selectable as `Backend::OpenBlas`. A
//! fallback to ask for, and the peer our benchmarks measure against.

// Links the system OpenBLAS (Debian: libopenblas-dev) into any binary that uses this path.
extern crate blas_src;

use std::os::raw::c_int;
use std::sync::atomic::{AtomicI32, Ordering};

use crate::error::{Error, Result};
use crate::gemm::problem::{Operand, Problem};
use crate::scratch::STAGE;

extern "C" {
    // OpenBLAS's own control of its thread pool (not part of CBLAS).
    fn openblas_set_num_threads(num_threads: c_int);
}

/// The thread count last handed to OpenBLAS, so we only call into it when it changes.
static OPENBLAS_THREADS: AtomicI32 = AtomicI32::new(-1);

/// OpenBLAS's thread pool is process-wide: when this product runs inside rayon work (another
/// thread of ours may be in OpenBLAS at the same moment) it must use one thread, or the two pools
/// oversubscribe the cores.
fn set_threads(threads: usize) {
    let wanted = if rayon::current_thread_index().is_some() {
        1
    } else {
        threads.clamp(1, c_int::MAX as usize) as c_int
    };
    if OPENBLAS_THREADS.swap(wanted, Ordering::Relaxed) != wanted {
        // SAFETY: a plain setter in OpenBLAS with no preconditions on its argument (≥ 1).
        unsafe { openblas_set_num_threads(wanted) };
    }
}

fn to_int(name: &'static str, v: usize) -> Result<i32> {
    i32::try_from(v).map_err(|_| Error::InvalidArgument {
        name,
        value: v.to_string(),
        reason: "the OpenBLAS path takes dimensions and strides up to i32::MAX".into(),
    })
}

/// How CBLAS can read an operand in place: (transpose flag, leading dimension), or `None` when
/// its strides have no unit direction or its leading dimension is too small (it is then copied).
/// A single row or column has no second stride to speak of, so any leading dimension ≥ its
/// length serves.
fn cblas_layout(x: Operand<'_>, rows: usize, cols: usize) -> Option<(cblas::Transpose, usize)> {
    if x.cs == 1 && (x.rs >= cols.max(1) || rows <= 1) {
        Some((cblas::Transpose::None, x.rs.max(cols.max(1))))
    } else if x.rs == 1 && (x.cs >= rows.max(1) || cols <= 1) {
        Some((cblas::Transpose::Ordinary, x.cs.max(rows.max(1))))
    } else {
        None
    }
}

/// Copies `rows × cols` of `x` into `dense`, row-major.
fn copy_dense(x: Operand<'_>, rows: usize, cols: usize, dense: &mut [f32]) {
    for (i, row) in dense.chunks_exact_mut(cols).take(rows).enumerate() {
        for (j, d) in row.iter_mut().enumerate() {
            *d = x.data[i * x.rs + j * x.cs];
        }
    }
}

pub(crate) fn gemm(prob: &Problem<'_>, threads: usize) -> Result<()> {
    let Problem {
        m,
        n,
        k,
        alpha,
        a,
        a_packer,
        b,
        beta,
        c,
        epilogue: _, // applied by the caller
    } = *prob;
    // A packed on the fly exists only for our own paths (`gemm_fused_packed_a` refuses OpenBLAS).
    assert!(a_packer.is_none(), "OpenBLAS needs A stored");
    let (a_in_place, b_in_place) = (cblas_layout(a, m, k), cblas_layout(b, k, n));
    let c_in_place = c.cs == 1 && (c.rs >= n || m == 1);
    let (mi, ni, ki) = (to_int("m", m)?, to_int("n", n)?, to_int("k", k)?);
    // Operands CBLAS cannot read in place are staged, dense, in this thread's scratch buffer
    // (reused from call to call: no allocation once it has grown).
    let a_len = if a_in_place.is_some() { 0 } else { m * k };
    let b_len = if b_in_place.is_some() { 0 } else { k * n };
    let c_len = if c_in_place { 0 } else { m * n };
    let total = a_len + b_len + c_len;
    STAGE.with(total, total, |stage| -> Result<()> {
        let (a_stage, rest) = stage.split_at_mut(a_len);
        let (b_stage, c_stage) = rest.split_at_mut(b_len);
        let (ta, lda, a_data): (_, _, &[f32]) = match a_in_place {
            Some((t, ld)) => (t, ld, a.data),
            None => {
                copy_dense(a, m, k, a_stage);
                (cblas::Transpose::None, k, a_stage)
            }
        };
        let (tb, ldb, b_data): (_, _, &[f32]) = match b_in_place {
            Some((t, ld)) => (t, ld, b.data),
            None => {
                copy_dense(b, k, n, b_stage);
                (cblas::Transpose::None, n, b_stage)
            }
        };
        let (lda, ldb) = (to_int("lda", lda)?, to_int("ldb", ldb)?);
        let ldc = if c_in_place { c.rs.max(n) } else { n };
        let ldc_i = to_int("ldc", ldc)?;
        set_threads(threads);
        let c_slice: &mut [f32] = if c_in_place {
            // SAFETY: the checked API verified that C's m×n elements at row stride c.rs lie inside
            // its buffer; `(m - 1) * ldc + n` is the span they occupy (one row when m = 1), and no
            // other reference to it is live.
            unsafe { std::slice::from_raw_parts_mut(c.ptr, (m - 1) * ldc + n) }
        } else {
            if beta != 0.0 {
                for (i, row) in c_stage.chunks_exact_mut(n).enumerate() {
                    for (j, x) in row.iter_mut().enumerate() {
                        // SAFETY: (i, j) is inside C, checked by the caller.
                        *x = unsafe { *c.ptr.add(i * c.rs + j * c.cs) };
                    }
                }
            }
            c_stage
        };
        // SAFETY: dimensions and leading dimensions describe exactly the views the caller checked
        // against their buffers (or the dense copies made above); CBLAS reads and writes no more.
        unsafe {
            cblas::sgemm(
                cblas::Layout::RowMajor,
                ta,
                tb,
                mi,
                ni,
                ki,
                alpha,
                a_data,
                lda,
                b_data,
                ldb,
                beta,
                c_slice,
                ldc_i,
            );
        }
        if !c_in_place {
            for (i, row) in c_slice.chunks_exact(n).enumerate() {
                for (j, &x) in row.iter().enumerate() {
                    // SAFETY: (i, j) is inside C, checked by the caller.
                    unsafe { *c.ptr.add(i * c.rs + j * c.cs) = x };
                }
            }
        }
        Ok(())
    })
}
