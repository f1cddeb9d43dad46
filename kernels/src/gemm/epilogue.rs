//! The fused epilogue: `+bias` and an activation applied to a tile of C right after its last K
//! slice was accumulated, while the tile is still in L1 — so a Dense or Conv2D forward pass is one
//! pass over its output instead of three.

use crate::activation::{bias_act_row, bias_act_rows, Activation, RowBias};
use crate::Isa;

/// A bias vector added to the product before the activation, as [`crate::gemm_fused`] takes it.
#[derive(Debug, Clone, Copy, Default)]
pub enum Bias<'a> {
    /// No bias.
    #[default]
    None,
    /// `C[i][j] += bias[j]`: one value per column of C (a Dense layer's bias with C = X·W).
    PerColumn(&'a [f32]),
    /// `C[i][j] += bias[i]`: one value per row of C (the bias of C = W·X).
    PerRow(&'a [f32]),
}

/// The epilogue as the driver applies it, in the driver's orientation of C (which is Cᵀ of the
/// caller's when the caller's C is column-major: then a per-column bias becomes per-row).
#[derive(Clone, Copy)]
pub(crate) struct Epilogue<'a> {
    /// The instruction set whose loops apply it (available on this CPU: checked by the caller).
    pub isa: Isa,
    pub activation: Activation,
    pub bias: Bias<'a>,
}

impl Epilogue<'_> {
    /// The same epilogue for Cᵀ.
    pub fn transposed(self) -> Self {
        let bias = match self.bias {
            Bias::None => Bias::None,
            Bias::PerColumn(b) => Bias::PerRow(b),
            Bias::PerRow(b) => Bias::PerColumn(b),
        };
        Epilogue { bias, ..self }
    }

    /// Whether applying it changes anything.
    pub fn is_noop(&self) -> bool {
        matches!(self.bias, Bias::None) && self.activation == Activation::Identity
    }

    fn row_bias(&self, i: usize, j: usize, cols: usize) -> RowBias<'_> {
        match self.bias {
            Bias::None => RowBias::None,
            Bias::PerColumn(b) => RowBias::Each(&b[j..j + cols]),
            Bias::PerRow(b) => RowBias::Same(b[i]),
        }
    }

    /// Applies the epilogue to the `rows × cols` block of C at (`i`, `j`), whose element (0, 0)
    /// is at `c` and whose strides are `rs`, `cs`.
    ///
    /// # Safety
    /// The block's elements are valid for reads and writes and no one else accesses them; the
    /// bias holds an entry for every row (per-row) or column (per-column) of the block;
    /// `self.isa` is available on this CPU.
    pub unsafe fn apply(
        &self,
        c: *mut f32,
        rs: usize,
        cs: usize,
        (i, j): (usize, usize),
        (rows, cols): (usize, usize),
    ) {
        // Rows one after another (a tile as wide as C): one call for the block.
        if cs == 1 && rs == cols && rows > 0 && !matches!(self.bias, Bias::PerRow(_)) {
            // SAFETY: the block's rows are contiguous, so its `rows · cols` elements are one
            // run, valid and exclusively ours (caller's contract).
            let block = unsafe { std::slice::from_raw_parts_mut(c, rows * cols) };
            let bias = match self.bias {
                Bias::PerColumn(b) => Some(&b[j..j + cols]),
                _ => None,
            };
            // SAFETY: the caller guarantees `isa` is available.
            unsafe { bias_act_rows(self.isa, self.activation, block, cols, bias) };
            return;
        }
        for r in 0..rows {
            // SAFETY: row r of the block lies inside C (caller's contract).
            let start = unsafe { c.add(r * rs) };
            if cs == 1 {
                // SAFETY: the row's `cols` elements are contiguous and exclusively ours.
                let row = unsafe { std::slice::from_raw_parts_mut(start, cols) };
                // SAFETY: the caller guarantees `isa` is available.
                unsafe {
                    bias_act_row(
                        self.isa,
                        self.activation,
                        row,
                        self.row_bias(i + r, j, cols),
                    )
                };
            } else {
                for col in 0..cols {
                    // SAFETY: element (r, col) lies inside the block.
                    let x = unsafe { &mut *start.add(col * cs) };
                    let v = match self.bias {
                        Bias::None => *x,
                        Bias::PerColumn(b) => *x + b[j + col],
                        Bias::PerRow(b) => *x + b[i + r],
                    };
                    *x = self.activation.apply(v);
                }
            }
        }
    }
}
