//! Borrowed matrix views: a slice plus rows, columns and element strides.
//!
//! Constructing a view checks nothing; the operation that takes it checks it, so the error can name
//! the argument ("matrix A …"). `t()` transposes a view for free, which is how callers ask for
//! op(A) = Aᵀ.

use crate::error::{Error, Result};

/// A read-only `rows × cols` matrix whose element (i, j) is `data[i * row_stride + j * col_stride]`.
#[derive(Debug, Clone, Copy)]
pub struct MatRef<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

/// A writable `rows × cols` matrix whose element (i, j) is `data[i * row_stride + j * col_stride]`.
#[derive(Debug)]
pub struct MatMut<'a> {
    data: &'a mut [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

/// The shape and element strides of a `rows × cols` matrix without its buffer: element (i, j)
/// lies at `i * row_stride + j * col_stride` of whatever buffer is later given for it (a
/// [`crate::GemmPlan`]'s operands, planned before their data exist).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MatLayout {
    pub rows: usize,
    pub cols: usize,
    pub row_stride: usize,
    pub col_stride: usize,
}

impl MatLayout {
    /// Row-major storage with leading dimension `ld` (the distance between rows).
    pub fn row_major(rows: usize, cols: usize, ld: usize) -> Self {
        Self::strided(rows, cols, ld, 1)
    }

    /// Column-major storage with leading dimension `ld` (the distance between columns).
    pub fn col_major(rows: usize, cols: usize, ld: usize) -> Self {
        Self::strided(rows, cols, 1, ld)
    }

    /// Any element strides.
    pub fn strided(rows: usize, cols: usize, row_stride: usize, col_stride: usize) -> Self {
        MatLayout {
            rows,
            cols,
            row_stride,
            col_stride,
        }
    }

    /// The transposed layout (the same elements, read by columns).
    pub fn t(self) -> Self {
        Self::strided(self.cols, self.rows, self.col_stride, self.row_stride)
    }

    /// How many elements a buffer needs for this layout; an error naming the matrix `name`
    /// where that overflows.
    pub(crate) fn needed(&self, name: &'static str) -> Result<usize> {
        let (rows, cols, row_stride, col_stride) =
            (self.rows, self.cols, self.row_stride, self.col_stride);
        // A match, not `ok_or(Error…)`: that builds the error and drops it on every call.
        let Some(needed) = extent(rows, cols, row_stride, col_stride) else {
            return Err(Error::Overflow {
                name,
                rows,
                cols,
                row_stride,
                col_stride,
            });
        };
        Ok(needed)
    }

    /// Checks that every element lies inside a buffer of `len` elements.
    pub(crate) fn check_extent(&self, name: &'static str, len: usize) -> Result<()> {
        let needed = self.needed(name)?;
        if needed > len {
            return Err(Error::BufferTooSmall {
                name,
                rows: self.rows,
                cols: self.cols,
                row_stride: self.row_stride,
                col_stride: self.col_stride,
                needed,
                len,
            });
        }
        Ok(())
    }

    /// Checks that no two elements share a slot (an output's strides); after
    /// [`MatLayout::check_extent`], whose checked arithmetic bounds the products here.
    pub(crate) fn check_distinct(&self, name: &'static str) -> Result<()> {
        let (r, c, rs, cs) = (self.rows, self.cols, self.row_stride, self.col_stride);
        let distinct = if r == 0 || c == 0 || (r <= 1 && c <= 1) {
            true
        } else if r <= 1 {
            cs >= 1
        } else if c <= 1 {
            rs >= 1
        } else {
            // Rows lie side by side, or columns do. (The extent's checked arithmetic passed first:
            // these products are bounded by it, or harmless where they saturate.)
            (cs >= 1 && rs >= c.saturating_mul(cs)) || (rs >= 1 && cs >= r.saturating_mul(rs))
        };
        if distinct {
            Ok(())
        } else {
            Err(Error::OverlappingStrides {
                name,
                rows: r,
                cols: c,
                row_stride: rs,
                col_stride: cs,
            })
        }
    }
}

impl<'a> MatRef<'a> {
    /// Row-major storage with leading dimension `ld` (the distance between rows).
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize, ld: usize) -> Self {
        Self::strided(data, rows, cols, ld, 1)
    }

    /// Column-major storage with leading dimension `ld` (the distance between columns).
    pub fn col_major(data: &'a [f32], rows: usize, cols: usize, ld: usize) -> Self {
        Self::strided(data, rows, cols, 1, ld)
    }

    /// Any element strides.
    pub fn strided(
        data: &'a [f32],
        rows: usize,
        cols: usize,
        row_stride: usize,
        col_stride: usize,
    ) -> Self {
        MatRef {
            data,
            rows,
            cols,
            row_stride,
            col_stride,
        }
    }

    /// Columns `first..first + count` (a view of the same buffer; `validate` checks it).
    pub(crate) fn columns(self, first: usize, count: usize) -> Self {
        let offset = (first * self.col_stride).min(self.data.len());
        MatRef {
            data: &self.data[offset..],
            cols: count,
            ..self
        }
    }

    /// The transposed view (no copy).
    pub fn t(self) -> Self {
        MatRef {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
        }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }
    pub fn cols(&self) -> usize {
        self.cols
    }
    pub fn row_stride(&self) -> usize {
        self.row_stride
    }
    pub fn col_stride(&self) -> usize {
        self.col_stride
    }
    pub fn data(&self) -> &'a [f32] {
        self.data
    }

    /// Element (i, j); panics out of range (for tests and references, not hot loops).
    pub fn at(&self, i: usize, j: usize) -> f32 {
        assert!(
            i < self.rows && j < self.cols,
            "({i}, {j}) out of {}×{}",
            self.rows,
            self.cols
        );
        self.data[i * self.row_stride + j * self.col_stride]
    }

    /// Checks that every element lies inside the buffer.
    pub(crate) fn validate(&self, name: &'static str) -> Result<()> {
        self.layout().check_extent(name, self.data.len())
    }

    /// The view's shape and strides, without its buffer.
    pub fn layout(&self) -> MatLayout {
        MatLayout::strided(self.rows, self.cols, self.row_stride, self.col_stride)
    }
}

impl<'a> MatMut<'a> {
    /// Row-major storage with leading dimension `ld`.
    pub fn row_major(data: &'a mut [f32], rows: usize, cols: usize, ld: usize) -> Self {
        Self::strided(data, rows, cols, ld, 1)
    }

    /// Column-major storage with leading dimension `ld`.
    pub fn col_major(data: &'a mut [f32], rows: usize, cols: usize, ld: usize) -> Self {
        Self::strided(data, rows, cols, 1, ld)
    }

    /// Any element strides (they must not make two elements share a slot).
    pub fn strided(
        data: &'a mut [f32],
        rows: usize,
        cols: usize,
        row_stride: usize,
        col_stride: usize,
    ) -> Self {
        MatMut {
            data,
            rows,
            cols,
            row_stride,
            col_stride,
        }
    }

    /// The transposed view (no copy).
    pub fn t(self) -> Self {
        MatMut {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
        }
    }

    /// A shorter-lived view of the same matrix.
    pub fn rb_mut(&mut self) -> MatMut<'_> {
        MatMut {
            data: self.data,
            rows: self.rows,
            cols: self.cols,
            row_stride: self.row_stride,
            col_stride: self.col_stride,
        }
    }

    /// A read-only view of the same matrix.
    pub fn as_ref(&self) -> MatRef<'_> {
        MatRef::strided(
            self.data,
            self.rows,
            self.cols,
            self.row_stride,
            self.col_stride,
        )
    }

    pub fn rows(&self) -> usize {
        self.rows
    }
    pub fn cols(&self) -> usize {
        self.cols
    }
    pub fn row_stride(&self) -> usize {
        self.row_stride
    }
    pub fn col_stride(&self) -> usize {
        self.col_stride
    }
    pub fn data_mut(&mut self) -> &mut [f32] {
        self.data
    }

    /// Checks that every element lies inside the buffer and that no two elements overlap.
    pub(crate) fn validate(&self, name: &'static str) -> Result<()> {
        let layout = self.layout();
        layout.check_extent(name, self.data.len())?;
        layout.check_distinct(name)
    }

    /// The view's shape and strides, without its buffer.
    pub fn layout(&self) -> MatLayout {
        MatLayout::strided(self.rows, self.cols, self.row_stride, self.col_stride)
    }

    pub(crate) fn into_raw_parts(self) -> (&'a mut [f32], usize, usize, usize, usize) {
        (
            self.data,
            self.rows,
            self.cols,
            self.row_stride,
            self.col_stride,
        )
    }
}

/// Checks the operands of `C ← A·B (+ C)`: each view inside its buffer, C's elements distinct,
/// A's columns matching B's rows and C matching the product's shape. Every GEMM entry point
/// (ours, the reference, the benchmarks' wrappers of other libraries) checks through this one
/// function.
pub fn check_product(a: &MatRef<'_>, b: &MatRef<'_>, c: &MatMut<'_>) -> Result<()> {
    a.validate("A")?;
    b.validate("B")?;
    c.validate("C")?;
    check_product_shapes(&a.layout(), &b.layout(), &c.layout())
}

/// Checks that A's columns match B's rows and C matches the product's shape (the shapes'
/// half of [`check_product`], for views and for a plan's layouts alike).
pub(crate) fn check_product_shapes(a: &MatLayout, b: &MatLayout, c: &MatLayout) -> Result<()> {
    if a.cols != b.rows {
        return Err(Error::ShapeMismatch {
            what: "inner dimensions of A·B",
            detail: format!("A is {}×{} but B is {}×{}", a.rows, a.cols, b.rows, b.cols),
        });
    }
    if c.rows != a.rows || c.cols != b.cols {
        return Err(Error::ShapeMismatch {
            what: "output C",
            detail: format!(
                "C is {}×{} but A·B is {}×{}",
                c.rows, c.cols, a.rows, b.cols
            ),
        });
    }
    Ok(())
}

/// The number of buffer elements a `rows × cols` view with these strides reaches.
fn extent(rows: usize, cols: usize, rs: usize, cs: usize) -> Option<usize> {
    if rows == 0 || cols == 0 {
        return Some(0);
    }
    (rows - 1)
        .checked_mul(rs)?
        .checked_add((cols - 1).checked_mul(cs)?)?
        .checked_add(1)
}
