//! The checked GEMM API: `C ← alpha·A·B + beta·C` on f32 matrix views.
//!
//! Everything a caller passes is checked here (shapes, buffer lengths, overlapping output strides,
//! the instruction-set path) before any unchecked code runs; then the quick returns of the
//! reference BLAS are taken, and the product goes to the blocked driver or to OpenBLAS.
//!
//! BLAS's meaning of alpha and beta is kept exactly:
//! * `beta == 0`: C is written, never read — NaN or garbage in C does not reach the result.
//! * `alpha == 0` (or K = 0): A and B are not read; C ← beta·C.
//! * otherwise NaN and infinities propagate as IEEE arithmetic says.

mod blocking;
pub(crate) mod config;
pub(crate) mod dot_form;
pub(crate) mod driver;
pub(crate) mod epilogue;
mod gemv;
mod in_place;
pub(crate) mod pack;
mod plan;
mod price;
pub(crate) mod problem;
mod transposed_b;

use crate::activation::Activation;
use crate::error::{Error, Result};
use crate::mat::{MatMut, MatRef};
use crate::{Backend, Isa};
/// Where the native GEMM reads A in place, never packed (see `in_place`): C of at most
/// `IN_PLACE_ROWS` rows at any depth, or a K of at most `IN_PLACE_DEPTH` with N at most that.
pub(crate) use config::SMALL as IN_PLACE_DEPTH;
pub use epilogue::Bias;
use epilogue::Epilogue;
pub(crate) use in_place::FEW_ROWS as IN_PLACE_ROWS;
pub use plan::GemmPlan;
use problem::{Operand, Output, Problem};

pub use crate::process::{ExecOptions, Threading};

/// One microkernel tile of an instruction-set path and the block sizes the cache model gave it
/// on this CPU (see [`crate::cpu::cache_info`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TileBlocking {
    /// Rows × columns of C one microkernel call computes.
    pub mr: usize,
    pub nr: usize,
    /// Rows of A packed per block (kept in L2).
    pub mc: usize,
    /// Depth of a K slice (B's micro-panel in L1); also fixes the summation order.
    pub kc: usize,
    /// Columns of B packed per panel (kept in the last-level cache).
    pub nc: usize,
}

impl std::fmt::Display for TileBlocking {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}×{} tile: mc {}, kc {}, nc {}",
            self.mr, self.nr, self.mc, self.kc, self.nc
        )
    }
}

/// The tiles `isa` registers, with this CPU's block sizes.
pub fn gemm_blocking(isa: Isa) -> Vec<TileBlocking> {
    config::kernels_of(isa)
        .iter()
        .map(|c| TileBlocking {
            mr: c.mr,
            nr: c.nr,
            mc: c.mc,
            kc: c.kc,
            nc: c.nc,
        })
        .collect()
}

/// `C ← alpha·A·B + beta·C` with the default options (active path, rayon threads).
///
/// A is m×k, B is k×n and C is m×n; pass `a.t()` or `b.t()` for a transposed operand.
///
/// ```
/// use kernels::{gemm, MatMut, MatRef};
/// let a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]; // 2×3, row-major
/// let b = [1.0, 0.0, 0.0, 1.0, 1.0, 1.0]; // 3×2, row-major
/// let mut c = [0.0; 4];
/// gemm(1.0, MatRef::row_major(&a, 2, 3, 3), MatRef::row_major(&b, 3, 2, 2), 0.0,
///      MatMut::row_major(&mut c, 2, 2, 2)).unwrap();
/// assert_eq!(c, [4.0, 5.0, 10.0, 11.0]);
/// ```
pub fn gemm(alpha: f32, a: MatRef<'_>, b: MatRef<'_>, beta: f32, c: MatMut<'_>) -> Result<()> {
    gemm_with(&ExecOptions::default(), alpha, a, b, beta, c)
}

/// `C ← alpha·A·B + beta·C` with explicit options.
pub fn gemm_with(
    opts: &ExecOptions,
    alpha: f32,
    a: MatRef<'_>,
    b: MatRef<'_>,
    beta: f32,
    c: MatMut<'_>,
) -> Result<()> {
    gemm_fused(opts, alpha, a, b, beta, Bias::None, Activation::Identity, c)
}

/// `C ← act(alpha·A·B + beta·C + bias)`: the product with a fused epilogue, applied to each tile
/// of C right after its last K slice, while it is still in cache (one pass over C, not three).
///
/// The bias has one entry per column of C ([`Bias::PerColumn`], a Dense layer's `X·W + b`) or per
/// row ([`Bias::PerRow`]); its length is checked. Quick returns (K = 0, alpha = 0) still apply the
/// epilogue to `beta·C`. With `Bias::None` and [`Activation::Identity`] this is [`gemm_with`].
///
/// ```
/// use kernels::{gemm_fused, Activation, Bias, ExecOptions, MatMut, MatRef};
/// let x = [1.0, -2.0]; // 1×2
/// let w = [1.0, 0.0, 0.0, 1.0]; // 2×2 identity
/// let mut y = [0.0; 2];
/// gemm_fused(&ExecOptions::default(), 1.0, MatRef::row_major(&x, 1, 2, 2),
///            MatRef::row_major(&w, 2, 2, 2), 0.0, Bias::PerColumn(&[0.5, 0.5]),
///            Activation::Relu, MatMut::row_major(&mut y, 1, 2, 2)).unwrap();
/// assert_eq!(y, [1.5, 0.0]);
/// ```
#[allow(clippy::too_many_arguments)]
pub fn gemm_fused(
    opts: &ExecOptions,
    alpha: f32,
    a: MatRef<'_>,
    b: MatRef<'_>,
    beta: f32,
    bias: Bias<'_>,
    activation: Activation,
    c: MatMut<'_>,
) -> Result<()> {
    crate::mat::check_product(&a, &b, &c)?;
    check_bias(bias, c.rows(), c.cols())?;
    let isa = Isa::resolve(opts.isa)?;
    let backend = Backend::resolve(opts.backend)?;
    // Under OpenBLAS, which has no epilogue, ours runs after its product.
    let epilogue = Epilogue {
        isa,
        activation,
        bias,
    };
    let epilogue = (!epilogue.is_noop()).then_some(epilogue);
    let (m, n, k) = (a.rows(), b.cols(), a.cols());
    let (c_data, _, _, c_rs, c_cs) = c.into_raw_parts();
    if m == 0 || n == 0 {
        return Ok(());
    }
    if alpha == 0.0 || k == 0 {
        scale(c_data, m, n, c_rs, c_cs, beta);
        if let Some(e) = epilogue {
            // SAFETY: the m×n view was checked against `c_data`, which we hold exclusively; the
            // bias lengths were checked above and the epilogue's ISA is available.
            unsafe { e.apply(c_data.as_mut_ptr(), c_rs, c_cs, (0, 0), (m, n)) };
        }
        return Ok(());
    }
    // With a single column (row) the column (row) stride never multiplies a non-zero index, so
    // it may be taken as 1; the kernels write rows, so a column-major C is computed as
    // Cᵀ = Bᵀ·Aᵀ.
    let c_cs = if n == 1 { 1 } else { c_cs };
    let c_rs = if m == 1 { 1 } else { c_rs };
    let c = Output {
        ptr: c_data.as_mut_ptr(),
        rs: c_rs,
        cs: c_cs,
    };
    let prob = if c.cs != 1 && c.rs == 1 {
        Problem {
            m: n,
            n: m,
            k,
            alpha,
            a: operand(b.t()),
            a_packer: None,
            b: operand(a.t()),
            beta,
            c: Output {
                ptr: c.ptr,
                rs: c.cs,
                cs: c.rs,
            },
            epilogue: epilogue.map(Epilogue::transposed),
        }
    } else {
        Problem {
            m,
            n,
            k,
            alpha,
            a: operand(a),
            a_packer: None,
            b: operand(b),
            beta,
            c,
            epilogue,
        }
    };
    // The thread count is asked for only where it matters: small products run on this thread, and
    // asking the pool took 4 % of a 16³ product's time in a profile.
    let threads = || {
        let threads = crate::process::threads(opts.threading);
        if opts.fresh_operands && !price::shares_repay(isa, m, n, k, threads) {
            1
        } else {
            threads
        }
    };
    let apply_epilogue = |prob: &Problem<'_>| {
        if let Some(e) = prob.epilogue {
            // SAFETY: as for the quick return above, in the problem's orientation of C.
            unsafe { e.apply(prob.c.ptr, prob.c.rs, prob.c.cs, (0, 0), (prob.m, prob.n)) };
        }
    };
    if backend == Backend::OpenBlas {
        run_openblas(&prob, threads())?;
        apply_epilogue(&prob);
        return Ok(());
    }
    // A small product first: the dot form takes none (its K is deep), and the matrix–vector
    // path is left its one-row and one-column products. Asking the other two first took 2 % of
    // a 16³ product's time in a profile.
    if prob.m > 1 && prob.n > 1 && in_place::gemm_small(isa, &prob) {
        return Ok(());
    }
    // The dot form before the matrix–vector path: a one-row product of 2–4 columns over a deep
    // K is its too, for the bits it has inside a product of more rows.
    let (shape, a_cs, b_rs) = ((prob.m, prob.k, prob.n), prob.a.cs, prob.b.rs);
    if dot_form::takes(isa, shape, a_cs, b_rs) && dot_form::try_dot_form(isa, &prob, threads()) {
        apply_epilogue(&prob);
        return Ok(());
    }
    if (prob.m == 1 || prob.n == 1) && gemv::try_gemv(isa, &prob, threads()) {
        apply_epilogue(&prob);
        return Ok(());
    }
    if (prob.m == 1 || prob.n == 1) && in_place::gemm_small(isa, &prob) {
        return Ok(());
    }
    driver::gemm_blocked(isa, &prob, threads());
    Ok(())
}

/// The bias must have one entry per column (row) of the m×n C.
fn check_bias(bias: Bias<'_>, m: usize, n: usize) -> Result<()> {
    let (len, want, of) = match bias {
        Bias::None => return Ok(()),
        Bias::PerColumn(b) => (b.len(), n, "columns"),
        Bias::PerRow(b) => (b.len(), m, "rows"),
    };
    if len != want {
        return Err(Error::ShapeMismatch {
            what: "gemm_fused bias",
            detail: format!("the bias has {len} elements but C ({m}×{n}) has {want} {of}"),
        });
    }
    Ok(())
}

fn operand<'a>(x: MatRef<'a>) -> Operand<'a> {
    Operand {
        data: x.data(),
        rs: x.row_stride(),
        cs: x.col_stride(),
    }
}

/// `C ← act(A·B + bias)` (C written over, never read) where the `m × k` matrix A is never stored:
/// `packer` packs the blocks the driver asks for (an implicit im2col matrix, say). C must be
/// row-major. Our own driver whatever the backend: OpenBLAS needs A stored.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_fused_packed_a(
    opts: &ExecOptions,
    packer: &dyn problem::PackA,
    m: usize,
    k: usize,
    b: MatRef<'_>,
    bias: Bias<'_>,
    activation: Activation,
    c: MatMut<'_>,
) -> Result<()> {
    b.validate("B")?;
    c.validate("C")?;
    let n = b.cols();
    if b.rows() != k || (c.rows(), c.cols()) != (m, n) || (c.col_stride() != 1 && n > 1) {
        return Err(Error::ShapeMismatch {
            what: "gemm with a packed A",
            detail: format!(
                "A is {m}×{k}, B is {}×{n} and C is {}×{} (row-major needed)",
                b.rows(),
                c.rows(),
                c.cols()
            ),
        });
    }
    check_bias(bias, m, n)?;
    let isa = Isa::resolve(opts.isa)?;
    let epilogue = Epilogue {
        isa,
        activation,
        bias,
    };
    let epilogue = (!epilogue.is_noop()).then_some(epilogue);
    let (c_data, _, _, c_rs, _) = c.into_raw_parts();
    if m == 0 || n == 0 {
        return Ok(());
    }
    if k == 0 {
        scale(c_data, m, n, c_rs, 1, 0.0);
        if let Some(e) = epilogue {
            // SAFETY: the m×n view was checked against `c_data`, which we hold exclusively; the
            // bias lengths were checked above and the epilogue's ISA is available.
            unsafe { e.apply(c_data.as_mut_ptr(), c_rs, 1, (0, 0), (m, n)) };
        }
        return Ok(());
    }
    let prob = Problem {
        m,
        n,
        k,
        alpha: 1.0,
        a: Operand {
            data: &[],
            rs: 0,
            cs: 0,
        },
        a_packer: Some(packer),
        b: operand(b),
        beta: 0.0,
        c: Output {
            ptr: c_data.as_mut_ptr(),
            rs: if m == 1 { 1 } else { c_rs },
            cs: 1,
        },
        epilogue,
    };
    let threads = crate::process::threads(opts.threading);
    driver::gemm_blocked(isa, &prob, threads);
    Ok(())
}

#[cfg(feature = "openblas")]
fn run_openblas(prob: &Problem<'_>, threads: usize) -> Result<()> {
    crate::arch::openblas::gemm(prob, threads)
}

#[cfg(not(feature = "openblas"))]
fn run_openblas(_prob: &Problem<'_>, _threads: usize) -> Result<()> {
    // `Backend::resolve` rejects OpenBLAS in such builds before we get here.
    crate::Backend::OpenBlas.check_available()
}

/// C ← beta·C; with beta = 0, C ← 0 without reading C.
fn scale(c: &mut [f32], m: usize, n: usize, rs: usize, cs: usize, beta: f32) {
    if beta == 1.0 {
        return;
    }
    for i in 0..m {
        for j in 0..n {
            let x = &mut c[i * rs + j * cs];
            *x = if beta == 0.0 { 0.0 } else { beta * *x };
        }
    }
}

/// Storage order of the matrices of [`sgemm`], as CBLAS's `CBLAS_ORDER`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    RowMajor,
    ColMajor,
}

/// Whether [`sgemm`] uses a matrix as stored or transposed, as CBLAS's `CBLAS_TRANSPOSE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transpose {
    No,
    Yes,
}

/// The BLAS-style entry point: `C ← alpha·op(A)·op(B) + beta·C` with op(A) m×k, op(B) k×n and
/// C m×n, each stored in `layout` with its leading dimension. Leading dimensions follow the BLAS
/// rule (at least the stored row length, and at least 1) and are checked, as are buffer lengths.
///
/// ```
/// use kernels::{sgemm, Layout, Transpose};
/// // C = Aᵀ·B with A stored 2×2 row-major.
/// let a = [1.0, 2.0, 3.0, 4.0];
/// let b = [1.0, 1.0, 1.0, 1.0];
/// let mut c = [f32::NAN; 4]; // beta = 0: never read
/// sgemm(Layout::RowMajor, Transpose::Yes, Transpose::No, 2, 2, 2,
///       1.0, &a, 2, &b, 2, 0.0, &mut c, 2).unwrap();
/// assert_eq!(c, [4.0, 4.0, 6.0, 6.0]);
/// ```
#[allow(clippy::too_many_arguments)]
pub fn sgemm(
    layout: Layout,
    trans_a: Transpose,
    trans_b: Transpose,
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: &[f32],
    lda: usize,
    b: &[f32],
    ldb: usize,
    beta: f32,
    c: &mut [f32],
    ldc: usize,
) -> Result<()> {
    // The stored shape of each operand, as (rows, cols) in the given layout.
    let stored = |t: Transpose, r: usize, cl: usize| match t {
        Transpose::No => (r, cl),
        Transpose::Yes => (cl, r),
    };
    let check_ld = |name: &'static str, ld: usize, (rows, cols): (usize, usize)| {
        let min = match layout {
            Layout::RowMajor => cols,
            Layout::ColMajor => rows,
        }
        .max(1);
        if ld < min {
            Err(Error::LeadingDimension { name, ld, min })
        } else {
            Ok(())
        }
    };
    let a_stored = stored(trans_a, m, k);
    let b_stored = stored(trans_b, k, n);
    check_ld("lda", lda, a_stored)?;
    check_ld("ldb", ldb, b_stored)?;
    check_ld("ldc", ldc, (m, n))?;
    let view = |data, (rows, cols): (usize, usize), ld, t: Transpose| {
        let v = match layout {
            Layout::RowMajor => MatRef::row_major(data, rows, cols, ld),
            Layout::ColMajor => MatRef::col_major(data, rows, cols, ld),
        };
        match t {
            Transpose::No => v,
            Transpose::Yes => v.t(),
        }
    };
    let a = view(a, a_stored, lda, trans_a);
    let b = view(b, b_stored, ldb, trans_b);
    let c = match layout {
        Layout::RowMajor => MatMut::row_major(c, m, n, ldc),
        Layout::ColMajor => MatMut::col_major(c, m, n, ldc),
    };
    gemm(alpha, a, b, beta, c)
}
