//! Safe, checked entry points to the peer GEMM libraries the benchmarks compare against
//! (`matrixmultiply` and the `gemm` crate), behind the cargo feature `peers`. They take the same
//! views as [`crate::gemm`] and check them the same way, so the benchmark code needs no `unsafe`.

use crate::error::{Error, Result};
use crate::mat::{MatMut, MatRef};

fn check(a: &MatRef<'_>, b: &MatRef<'_>, c: &MatMut<'_>) -> Result<()> {
    a.validate("A")?;
    b.validate("B")?;
    c.validate("C")?;
    if a.cols() != b.rows() || c.rows() != a.rows() || c.cols() != b.cols() {
        return Err(Error::ShapeMismatch {
            what: "peer GEMM operands",
            detail: format!(
                "A {}×{}, B {}×{}, C {}×{}",
                a.rows(),
                a.cols(),
                b.rows(),
                b.cols(),
                c.rows(),
                c.cols()
            ),
        });
    }
    Ok(())
}

fn stride(name: &'static str, s: usize) -> Result<isize> {
    isize::try_from(s).map_err(|_| Error::InvalidArgument {
        name,
        value: s.to_string(),
        reason: "strides must fit in isize".into(),
    })
}

/// `C ← alpha·A·B + beta·C` by `matrixmultiply::sgemm` (its threads: `MATMUL_NUM_THREADS`).
pub fn matrixmultiply_gemm(
    alpha: f32,
    a: MatRef<'_>,
    b: MatRef<'_>,
    beta: f32,
    mut c: MatMut<'_>,
) -> Result<()> {
    check(&a, &b, &c)?;
    let (m, k, n) = (a.rows(), a.cols(), b.cols());
    let (rsa, csa) = (
        stride("A rows", a.row_stride())?,
        stride("A cols", a.col_stride())?,
    );
    let (rsb, csb) = (
        stride("B rows", b.row_stride())?,
        stride("B cols", b.col_stride())?,
    );
    let (rsc, csc) = (
        stride("C rows", c.row_stride())?,
        stride("C cols", c.col_stride())?,
    );
    if m == 0 || n == 0 {
        return Ok(());
    }
    // SAFETY: the three views were checked to lie inside their buffers with matching shapes, and
    // C's strides to address distinct elements; matrixmultiply reads and writes only those.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            alpha,
            a.data().as_ptr(),
            rsa,
            csa,
            b.data().as_ptr(),
            rsb,
            csb,
            beta,
            c.data_mut().as_mut_ptr(),
            rsc,
            csc,
        )
    };
    Ok(())
}

/// `C ← alpha·A·B + beta·C` by the `gemm` crate, on `threads` rayon threads (1 = sequential).
pub fn gemm_crate_gemm(
    alpha: f32,
    a: MatRef<'_>,
    b: MatRef<'_>,
    beta: f32,
    mut c: MatMut<'_>,
    threads: usize,
) -> Result<()> {
    check(&a, &b, &c)?;
    let (m, k, n) = (a.rows(), a.cols(), b.cols());
    let (rsa, csa) = (
        stride("A rows", a.row_stride())?,
        stride("A cols", a.col_stride())?,
    );
    let (rsb, csb) = (
        stride("B rows", b.row_stride())?,
        stride("B cols", b.col_stride())?,
    );
    let (rsc, csc) = (
        stride("C rows", c.row_stride())?,
        stride("C cols", c.col_stride())?,
    );
    if m == 0 || n == 0 {
        return Ok(());
    }
    let parallelism = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // The gemm crate computes dst ← α·dst + β·lhs·rhs: its α is BLAS's β and its β is BLAS's α;
    // with read_dst = false it does not read dst (BLAS's β = 0).
    // SAFETY: as for matrixmultiply above: checked views, distinct output elements.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.data_mut().as_mut_ptr(),
            csc,
            rsc,
            beta != 0.0,
            a.data().as_ptr(),
            csa,
            rsa,
            b.data().as_ptr(),
            csb,
            rsb,
            beta,
            alpha,
            false,
            false,
            false,
            parallelism,
        )
    };
    Ok(())
}
