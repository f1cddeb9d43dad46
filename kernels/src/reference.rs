//! Plain references with f64 accumulation, for tests and benchmark cross-checks. Slow on purpose:
//! simple enough to be obviously right.

use crate::error::Result;
use crate::mat::{MatMut, MatRef};

/// `C ← alpha·A·B + beta·C`, summing in f64 and rounding once, with BLAS's alpha/beta rules
/// (beta = 0 does not read C; alpha = 0 does not read A or B). Checks its arguments as
/// [`crate::gemm`] does.
pub fn gemm(alpha: f32, a: MatRef<'_>, b: MatRef<'_>, beta: f32, mut c: MatMut<'_>) -> Result<()> {
    crate::mat::check_product(&a, &b, &c)?;
    let (rs, cs) = (c.row_stride(), c.col_stride());
    let (m, n, k) = (a.rows(), b.cols(), a.cols());
    let data = c.data_mut();
    for i in 0..m {
        for j in 0..n {
            let ab = if alpha == 0.0 {
                0.0
            } else {
                (0..k)
                    .map(|p| a.at(i, p) as f64 * b.at(p, j) as f64)
                    .sum::<f64>()
            };
            let old = &mut data[i * rs + j * cs];
            let bc = if beta == 0.0 {
                0.0
            } else {
                beta as f64 * *old as f64
            };
            *old = (alpha as f64 * ab + bc) as f32;
        }
    }
    Ok(())
}

/// The forward error bound our GEMM is held to, element by element:
/// `|Ĉ − C| ≤ 2·(k + 2)·ε·(|alpha|·Σₚ|aᵢₚ|·|bₚⱼ| + |beta|·|cᵢⱼ|)` plus the smallest normal f32,
/// with ε the f32 unit roundoff (2⁻²⁴). This is the classical dot-product bound γₖ with a factor
/// of two of slack for the final scaling and the rounding of the reference.
pub fn gemm_error_bound(
    alpha: f32,
    a: MatRef<'_>,
    b: MatRef<'_>,
    beta: f32,
    c_old: MatRef<'_>,
) -> Vec<f64> {
    let (m, n, k) = (a.rows(), b.cols(), a.cols());
    let eps = f32::EPSILON as f64 / 2.0;
    let mut bound = Vec::with_capacity(m * n);
    for i in 0..m {
        for j in 0..n {
            let abs_ab: f64 = (0..k)
                .map(|p| (a.at(i, p) as f64 * b.at(p, j) as f64).abs())
                .sum();
            let bc = if beta == 0.0 {
                0.0
            } else {
                (beta as f64 * c_old.at(i, j) as f64).abs()
            };
            bound.push(
                2.0 * (k as f64 + 2.0) * eps * (alpha.abs() as f64 * abs_ab + bc)
                    + f32::MIN_POSITIVE as f64,
            );
        }
    }
    bound
}
