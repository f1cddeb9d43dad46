//! A product of one shape planned once and run many times: what LIBXSMM's users get from its
//! dispatch, and a training loop or a solver that calls the same small product again and again
//! needs — the checks of the shapes and strides, the instruction set, the backend and the choice
//! of path and tile made once, not at every call.
//!
//! Why: on one Zen 4 thread a 16³ product through [`super::gemm_with`] spent 32 % of its time
//! outside the tile's loop in a profile (checking the views, resolving the instruction set and
//! the backend, asking the small path, choosing its tile): 71 GFLOP/s, where LIBXSMM's
//! dispatched kernel ran at 75–80 in the report's runs. Planned, 85 GFLOP/s: a run of a small
//! product checks that its three buffers are long enough and that the product is still too
//! small to share among threads (the hand-off's price is measured once per process, maybe
//! after the plan was made), then runs the tile.
//!
//! The same bits as [`super::gemm_with`] with the same options: a planned small product runs
//! the tile `gemm_with` would run it with, and every other one goes through `gemm_with` itself.

use super::config::SmallTile;
use super::in_place::{run_small, small_tile_for_plan, too_little_to_share};
use super::problem::{Operand, Output, Problem};
use super::{gemm_with, ExecOptions};
use crate::error::Result;
use crate::mat::{check_product_shapes, MatLayout, MatMut, MatRef};
use crate::{Backend, Isa};

/// `C ← alpha·A·B + beta·C` for operands of fixed layouts, checked and planned once
/// ([`GemmPlan::new`]) and run on any buffers of those layouts ([`GemmPlan::run`]): the
/// results of [`crate::gemm_with`] with the same options, bit for bit. A product of more than
/// one row and column, every side at most 128, with B and C stored by rows (unit column
/// strides), on our own driver with an instruction set that has small tiles (AVX-512, AVX2),
/// runs on the calling thread with the tile chosen when the plan was made, wherever it is too
/// small to share among threads: the cheap path, as a LIBXSMM kernel dispatched once. Any other
/// product (one-row or one-column, a C or B stored by columns, larger, OpenBLAS) goes to
/// [`crate::gemm_with`] at each run, with its checks.
///
/// ```
/// use kernels::{ExecOptions, GemmPlan, MatLayout};
/// let plan = GemmPlan::new(&ExecOptions::default(), 1.0, MatLayout::row_major(2, 2, 2),
///                          MatLayout::row_major(2, 2, 2), 0.0, MatLayout::row_major(2, 2, 2))
///     .unwrap();
/// let mut c = [0.0; 4];
/// plan.run(&[1.0, 2.0, 3.0, 4.0], &[1.0, 0.0, 0.0, 1.0], &mut c).unwrap();
/// assert_eq!(c, [1.0, 2.0, 3.0, 4.0]);
/// ```
#[derive(Debug, Clone, Copy)]
pub struct GemmPlan {
    opts: ExecOptions,
    alpha: f32,
    beta: f32,
    a: MatLayout,
    b: MatLayout,
    c: MatLayout,
    /// The buffer lengths the three layouts need.
    needs: [usize; 3],
    path: Path,
}

/// Where a planned product runs.
#[derive(Clone, Copy)]
enum Path {
    /// On the calling thread, with this instruction set's small tile.
    Small(&'static SmallTile),
    /// Through [`gemm_with`] at every run.
    Checked,
}

impl std::fmt::Debug for Path {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Path::Small(tile) => write!(f, "Small({}×{} tile)", tile.mr, tile.nr),
            Path::Checked => write!(f, "Checked"),
        }
    }
}

impl GemmPlan {
    /// Plans `C ← alpha·A·B + beta·C` for an A, B and C of these layouts: checks that the
    /// shapes agree, that no layout's extent overflows, that C's elements are distinct, and
    /// that `opts`'s instruction set and backend are available; resolves them (an unset one
    /// from the environment, now) and chooses the path.
    pub fn new(
        opts: &ExecOptions,
        alpha: f32,
        a: MatLayout,
        b: MatLayout,
        beta: f32,
        c: MatLayout,
    ) -> Result<GemmPlan> {
        // In `check_product`'s order: each operand's extent (C's elements distinct), then the
        // shapes.
        let needs = [a.needed("A")?, b.needed("B")?, c.needed("C")?];
        c.check_distinct("C")?;
        check_product_shapes(&a, &b, &c)?;
        let isa = Isa::resolve(opts.isa)?;
        let backend = Backend::resolve(opts.backend)?;
        let opts = ExecOptions {
            isa: Some(isa),
            backend: Some(backend),
            ..*opts
        };
        let (m, k, n) = (a.rows, a.cols, b.cols);
        // K = 0 and alpha = 0 are `gemm_with`'s quick returns.
        let small = backend == Backend::Native && alpha != 0.0 && k > 0;
        let path = small
            .then(|| small_tile_for_plan(isa, (m, k, n), b.col_stride, c.col_stride))
            .flatten()
            .map_or(Path::Checked, Path::Small);
        Ok(GemmPlan {
            opts,
            alpha,
            beta,
            a,
            b,
            c,
            needs,
            path,
        })
    }

    /// `C ← alpha·A·B + beta·C` with `a`, `b` and `c` the buffers of the planned layouts: an
    /// error (C untouched) where one is too short for its layout.
    pub fn run(&self, a: &[f32], b: &[f32], c: &mut [f32]) -> Result<()> {
        let [need_a, need_b, need_c] = self.needs;
        if a.len() < need_a || b.len() < need_b || c.len() < need_c {
            self.a.check_extent("A", a.len())?;
            self.b.check_extent("B", b.len())?;
            self.c.check_extent("C", c.len())?;
        }
        let (a_l, b_l, c_l) = (self.a, self.b, self.c);
        match self.path {
            // As `gemm_small` decides at its call: shared among threads where the hand-off's
            // price, as known now, makes the product worth it (`gemm_with` then splits it).
            Path::Small(tile) if too_little_to_share(a_l.rows, b_l.cols, a_l.cols) => {
                let prob = Problem {
                    m: a_l.rows,
                    n: b_l.cols,
                    k: a_l.cols,
                    alpha: self.alpha,
                    a: Operand {
                        data: a,
                        rs: a_l.row_stride,
                        cs: a_l.col_stride,
                    },
                    a_packer: None,
                    b: Operand {
                        data: b,
                        rs: b_l.row_stride,
                        cs: b_l.col_stride,
                    },
                    beta: self.beta,
                    // The plan's small path has C's column stride 1 (`small_tile_for_plan`).
                    c: Output {
                        ptr: c.as_mut_ptr(),
                        rs: c_l.row_stride,
                        cs: c_l.col_stride,
                    },
                    epilogue: None,
                };
                run_small(tile, &prob);
                Ok(())
            }
            Path::Small(_) | Path::Checked => {
                let view = |l: MatLayout, data| {
                    MatRef::strided(data, l.rows, l.cols, l.row_stride, l.col_stride)
                };
                let c = MatMut::strided(c, c_l.rows, c_l.cols, c_l.row_stride, c_l.col_stride);
                gemm_with(
                    &self.opts,
                    self.alpha,
                    view(a_l, a),
                    view(b_l, b),
                    self.beta,
                    c,
                )
            }
        }
    }

    /// Whether runs take the small path planned once (on the calling thread, while the product
    /// is too small to share among threads), rather than [`crate::gemm_with`] at each run.
    pub fn is_planned_small(&self) -> bool {
        matches!(self.path, Path::Small(_))
    }
}
