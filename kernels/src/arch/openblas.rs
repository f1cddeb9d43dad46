//! The OpenBLAS path: the system library's `cblas_sgemm`, selectable as `Isa::OpenBlas`. Used on
//! targets without a hand-written kernel and as the peer our benchmarks measure against.

// Links the system OpenBLAS (Debian: libopenblas-dev) into any binary that uses this path.
extern crate blas_src;

use std::os::raw::c_int;
use std::sync::atomic::{AtomicI32, Ordering};

use crate::error::{Error, Result};
use crate::gemm::driver::{Operand, Problem};

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

/// An operand as CBLAS takes it (row-major storage, maybe transposed), copying it into a dense
/// row-major buffer when its strides have no unit direction or its leading dimension is too small.
fn as_cblas(
    x: Operand<'_>,
    rows: usize,
    cols: usize,
) -> (cblas::Transpose, usize, std::borrow::Cow<'_, [f32]>) {
    if x.cs == 1 && x.rs >= cols.max(1) {
        (cblas::Transpose::None, x.rs, x.data.into())
    } else if x.rs == 1 && x.cs >= rows.max(1) {
        (cblas::Transpose::Ordinary, x.cs, x.data.into())
    } else {
        let mut dense = Vec::with_capacity(rows * cols);
        for i in 0..rows {
            dense.extend((0..cols).map(|j| x.data[i * x.rs + j * x.cs]));
        }
        (cblas::Transpose::None, cols.max(1), dense.into())
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
    let (ta, lda, a_data) = as_cblas(a, m, k);
    let (tb, ldb, b_data) = as_cblas(b, k, n);
    let (mi, ni, ki) = (to_int("m", m)?, to_int("n", n)?, to_int("k", k)?);
    let (lda, ldb) = (to_int("lda", lda)?, to_int("ldb", ldb)?);
    set_threads(threads);
    let direct = c.cs == 1 && c.rs >= n;
    let ldc = if direct { c.rs } else { n };
    let ldc_i = to_int("ldc", ldc)?;
    let c_len = (m - 1) * ldc + n;
    let mut staged;
    let c_slice: &mut [f32] = if direct {
        // SAFETY: the checked API verified that C's m×n elements at row stride c.rs lie inside its
        // buffer; `c_len` is exactly the span they occupy, and no other reference to it is live.
        unsafe { std::slice::from_raw_parts_mut(c.ptr, c_len) }
    } else {
        staged = vec![0.0f32; m * n];
        if beta != 0.0 {
            for i in 0..m {
                for j in 0..n {
                    // SAFETY: (i, j) is inside C, checked by the caller.
                    staged[i * n + j] = unsafe { *c.ptr.add(i * c.rs + j * c.cs) };
                }
            }
        }
        &mut staged
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
            &a_data,
            lda,
            &b_data,
            ldb,
            beta,
            c_slice,
            ldc_i,
        );
    }
    if !direct {
        for i in 0..m {
            for j in 0..n {
                // SAFETY: (i, j) is inside C, checked by the caller.
                unsafe { *c.ptr.add(i * c.rs + j * c.cs) = c_slice[i * n + j] };
            }
        }
    }
    Ok(())
}
