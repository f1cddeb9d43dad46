//! Activations as layers use them: `+bias` and an activation applied to rows of a matrix in one
//! pass (the GEMM epilogue uses the same row routine on each finished tile), and their backward
//! pass, which needs only the forward *output* `y`:
//!
//! | activation | forward       | dL/dx from dL/dy and y |
//! |------------|---------------|------------------------|
//! | identity   | x             | dy                     |
//! | relu       | max(x, 0)     | dy where y > 0, else 0 |
//! | sigmoid    | 1/(1+e^−x)    | dy·y·(1 − y)           |
//! | tanh       | tanh x        | dy·(1 − y²)            |
//!
//! As in [`crate::math`], each loop is written once and compiled per instruction set inside a
//! `#[target_feature]` function, where the compiler vectorises it at that set's width.

use crate::team::for_each_piece;

use crate::error::{Error, Result};
use crate::math::{sigmoid1, tanh1};
use crate::process::ExecOptions;
use crate::Isa;

/// Elements from which the separate passes ([`bias_activation`], [`activation_backward`]) split
/// across the pool (when the options allow): one pass over a convolution layer's output at
/// batch 128 (0.8–1.6 M floats) on one thread took as long as that layer's weight gradient on
/// two (program G's first layer: 0.9 s of its 1.04 s backward per epoch, measured on a 2-core
/// Xeon). Each element is computed alone, so the bits do not depend on the split.
const PARALLEL_ELEMENTS: usize = 1 << 16;
/// Elements per piece of a parallel pass (whole rows for [`bias_activation`]).
const PIECE: usize = 1 << 14;

/// Whether a separate pass over `len` elements runs in pieces on the pool.
fn in_pieces(opts: &ExecOptions, len: usize) -> bool {
    len >= PARALLEL_ELEMENTS && crate::process::parallel(opts.threading)
}

/// `pass(out, ins)` over the whole of `out` and its inputs (each as long as `out`), or over
/// matching pieces of [`PIECE`] elements on the pool ([`in_pieces`]): the same bits either way.
fn by_pieces<const N: usize>(
    opts: &ExecOptions,
    out: &mut [f32],
    ins: [&[f32]; N],
    pass: impl Fn(&mut [f32], [&[f32]; N]) + Sync + Send,
) {
    if in_pieces(opts, out.len()) {
        for_each_piece(opts.threading, out, PIECE, |p, piece| {
            let at = p * PIECE;
            pass(piece, ins.map(|x| &x[at..at + piece.len()]))
        });
    } else {
        pass(out, ins);
    }
}

/// An elementwise activation with a cheap derivative, as Keras names them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Activation {
    /// `x` (Keras's "linear").
    #[default]
    Identity,
    /// `max(x, 0)`; its derivative at 0 is taken as 0, as TensorFlow and PyTorch do.
    Relu,
    /// `1 / (1 + e^−x)`.
    Sigmoid,
    /// `tanh x`.
    Tanh,
}

impl Activation {
    /// Keras's name of the activation ("linear", "relu", "sigmoid", "tanh").
    pub fn name(self) -> &'static str {
        match self {
            Activation::Identity => "linear",
            Activation::Relu => "relu",
            Activation::Sigmoid => "sigmoid",
            Activation::Tanh => "tanh",
        }
    }

    /// The activation with Keras's name `name` (`"linear"` or `"identity"` for the identity).
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "linear" | "identity" => Activation::Identity,
            "relu" => Activation::Relu,
            "sigmoid" => Activation::Sigmoid,
            "tanh" => Activation::Tanh,
            _ => return None,
        })
    }

    /// The gradient through the activation for one value: `g·act'(x)` where `y = act(x)` is the
    /// activation's output (every derivative here is a function of it).
    #[inline(always)]
    pub fn backward(self, y: f32, g: f32) -> f32 {
        match self {
            Activation::Identity => g,
            Activation::Relu => {
                if y > 0.0 {
                    g
                } else {
                    0.0
                }
            }
            Activation::Sigmoid => g * (y * (1.0 - y)),
            Activation::Tanh => g * (1.0 - y * y),
        }
    }

    /// The activation of one value, with the same arithmetic as the vectorised loops.
    #[inline(always)]
    pub fn apply(self, x: f32) -> f32 {
        match self {
            Activation::Identity => x,
            Activation::Relu => relu1(x),
            Activation::Sigmoid => sigmoid1(x),
            Activation::Tanh => tanh1(x),
        }
    }
}

/// max(x, 0) that keeps NaN (f32::max would return 0 for a NaN x), as a bit mask.
#[inline(always)]
fn relu1(x: f32) -> f32 {
    let keep = x >= 0.0 || x.is_nan();
    f32::from_bits(x.to_bits() & 0u32.wrapping_sub(keep as u32))
}

/// What is added to each element of a row before the activation.
#[derive(Clone, Copy)]
pub(crate) enum RowBias<'a> {
    None,
    /// `row[j] += bias[j]` (a bias per column of the matrix).
    Each(&'a [f32]),
    /// `row[j] += b` (a bias per row).
    Same(f32),
}

/// `row[j] ← act(row[j] + bias_j)`: the body every instruction set compiles.
#[inline(always)]
fn bias_act_body(act: Activation, row: &mut [f32], bias: RowBias<'_>) {
    #[inline(always)]
    fn each(row: &mut [f32], bias: RowBias<'_>, f: impl Fn(f32) -> f32) {
        match bias {
            RowBias::None => row.iter_mut().for_each(|v| *v = f(*v)),
            RowBias::Each(b) => row.iter_mut().zip(b).for_each(|(v, &b)| *v = f(*v + b)),
            RowBias::Same(b) => row.iter_mut().for_each(|v| *v = f(*v + b)),
        }
    }
    match act {
        Activation::Identity => each(row, bias, |x| x),
        // `+ 0.0` (which only turns −0 into +0) makes every element's new value depend on an
        // addition, so the compiler cannot turn the loop into masked stores of zeros (measured
        // 3× slower than the plain `and` of `relu1`).
        Activation::Relu => match bias {
            RowBias::None => each(row, RowBias::Same(0.0), relu1),
            _ => each(row, bias, relu1),
        },
        Activation::Sigmoid => each(row, bias, sigmoid1),
        Activation::Tanh => each(row, bias, tanh1),
    }
}

/// [`bias_act_body`]'s arithmetic over each row of `block` (whole rows of `cols` floats, one
/// after another), the bias per column.
#[inline(always)]
fn bias_act_rows_body(act: Activation, block: &mut [f32], cols: usize, bias: Option<&[f32]>) {
    // The activation chosen once for the block, not once per row: per row, the choice (a jump
    // through a table) and the function's constants, loaded again after it, took half of a
    // 32-column block's tanh time (9 % of a batch-1000 forward pass of program G in a profile
    // on two Zen 4 threads).
    #[inline(always)]
    fn rows(block: &mut [f32], cols: usize, bias: Option<&[f32]>, f: impl Fn(f32) -> f32) {
        match bias {
            // Without a bias the rows are one run.
            None => block.iter_mut().for_each(|v| *v = f(*v)),
            Some(b) => {
                for row in block.chunks_exact_mut(cols) {
                    row.iter_mut().zip(b).for_each(|(v, &b)| *v = f(*v + b));
                }
            }
        }
    }
    // The arithmetic of `bias_act_body`, row by row: the same bits.
    match act {
        Activation::Identity => rows(block, cols, bias, |x| x),
        Activation::Relu => match bias {
            None => rows(block, cols, None, |x| relu1(x + 0.0)),
            Some(_) => rows(block, cols, bias, relu1),
        },
        Activation::Sigmoid => rows(block, cols, bias, sigmoid1),
        Activation::Tanh => rows(block, cols, bias, tanh1),
    }
}

/// `dy[i] ← dy[i]·act'(x_i)`, with the derivative written through the output `y[i]`.
#[inline(always)]
fn backward_body(act: Activation, y: &[f32], dy: &mut [f32]) {
    // One match outside the loop, so each arm's loop vectorises on its own.
    match act {
        Activation::Identity => {}
        Activation::Relu => dy
            .iter_mut()
            .zip(y)
            .for_each(|(g, &y)| *g = Activation::Relu.backward(y, *g)),
        Activation::Sigmoid => dy
            .iter_mut()
            .zip(y)
            .for_each(|(g, &y)| *g = Activation::Sigmoid.backward(y, *g)),
        Activation::Tanh => dy
            .iter_mut()
            .zip(y)
            .for_each(|(g, &y)| *g = Activation::Tanh.backward(y, *g)),
    }
}

/// `y[i] ← act(x[i])`, with the arithmetic of [`bias_act_body`] without a bias (so the same
/// bits as a copy activated in place).
#[inline(always)]
fn forward_into_body(act: Activation, x: &[f32], y: &mut [f32]) {
    #[inline(always)]
    fn each(x: &[f32], y: &mut [f32], f: impl Fn(f32) -> f32) {
        y.iter_mut().zip(x).for_each(|(y, &x)| *y = f(x));
    }
    match act {
        Activation::Identity => y.copy_from_slice(x),
        Activation::Relu => each(x, y, |v| relu1(v + 0.0)),
        Activation::Sigmoid => each(x, y, sigmoid1),
        Activation::Tanh => each(x, y, tanh1),
    }
}

/// `dx[i] ← dy[i]·act'(x_i)` from the forward output `y`, out of place.
#[inline(always)]
fn backward_into_body(act: Activation, y: &[f32], dy: &[f32], dx: &mut [f32]) {
    #[inline(always)]
    fn each(y: &[f32], dy: &[f32], dx: &mut [f32], act: Activation) {
        for ((d, &g), &y) in dx.iter_mut().zip(dy).zip(y) {
            *d = act.backward(y, g);
        }
    }
    match act {
        Activation::Identity => dx.copy_from_slice(dy),
        Activation::Relu => each(y, dy, dx, Activation::Relu),
        Activation::Sigmoid => each(y, dy, dx, Activation::Sigmoid),
        Activation::Tanh => each(y, dy, dx, Activation::Tanh),
    }
}

crate::dispatch::per_isa!(bias_act_loops, bias_act_body, bias_act_body,
    (act: Activation, row: &mut [f32], bias: RowBias<'_>));
crate::dispatch::per_isa!(bias_act_rows_loops, bias_act_rows_body, bias_act_rows_body,
    (act: Activation, block: &mut [f32], cols: usize, bias: Option<&[f32]>));
crate::dispatch::per_isa!(forward_into_loops, forward_into_body, forward_into_body,
    (act: Activation, x: &[f32], y: &mut [f32]));
crate::dispatch::per_isa!(backward_into_loops, backward_into_body, backward_into_body,
    (act: Activation, y: &[f32], dy: &[f32], dx: &mut [f32]));
crate::dispatch::per_isa!(backward_loops, backward_body, backward_body,
    (act: Activation, y: &[f32], dy: &mut [f32]));

/// `row[j] ← act(row[j] + bias_j)` compiled for `isa` (the GEMM epilogue's row routine).
///
/// # Safety
/// `isa` is available on this CPU.
#[inline]
pub(crate) unsafe fn bias_act_row(isa: Isa, act: Activation, row: &mut [f32], bias: RowBias<'_>) {
    // SAFETY: the caller's contract.
    unsafe { bias_act_loops::run(isa, act, row, bias) }
}

/// [`bias_act_row`] over every row of `block` (rows of `cols` floats one after another, `bias`
/// per column), dispatched once for the block: once per row, the dispatch and call cost ~9 ns
/// a row against a fraction of that for 32 floats' additions (8 % of a 13×13×16 → 32
/// convolution's forward pass in a profile on one Zen 4 thread).
///
/// # Safety
/// `isa` is available on this CPU.
#[inline]
pub(crate) unsafe fn bias_act_rows(
    isa: Isa,
    act: Activation,
    block: &mut [f32],
    cols: usize,
    bias: Option<&[f32]>,
) {
    // SAFETY: the caller's contract.
    unsafe { bias_act_rows_loops::run(isa, act, block, cols, bias) }
}

/// `y[r][j] ← act(y[r][j] + bias[j])` over the row-major matrix `y` of `cols` columns, in place
/// (`bias = None`: the activation alone). This is the GEMM epilogue as a separate pass, for
/// outputs computed elsewhere.
pub fn bias_activation(
    opts: &ExecOptions,
    act: Activation,
    bias: Option<&[f32]>,
    y: &mut [f32],
    cols: usize,
) -> Result<()> {
    if cols == 0 || !y.len().is_multiple_of(cols) {
        return Err(Error::InvalidArgument {
            name: "cols",
            value: cols.to_string(),
            reason: format!(
                "bias_activation: {} elements do not form whole rows of {cols} columns",
                y.len()
            ),
        });
    }
    if let Some(b) = bias {
        if b.len() != cols {
            return Err(Error::ShapeMismatch {
                what: "bias_activation",
                detail: format!("the bias has {} elements but the rows have {cols}", b.len()),
            });
        }
    }
    let isa = Isa::resolve(opts.isa)?;
    // SAFETY: `resolve` checked that this CPU has `isa`'s features.
    let rows = |block: &mut [f32]| unsafe { bias_act_rows(isa, act, block, cols, bias) };
    if in_pieces(opts, y.len()) {
        for_each_piece(
            opts.threading,
            y,
            (PIECE / cols).max(1) * cols,
            |_, block| rows(block),
        );
    } else {
        rows(y);
    }
    Ok(())
}

/// The backward pass of `act` in place: `dy[i] ← dy[i]·act'(x_i)`, where `y = act(x)` is the
/// forward output (every derivative here is a function of it).
pub fn activation_backward(
    opts: &ExecOptions,
    act: Activation,
    y: &[f32],
    dy: &mut [f32],
) -> Result<()> {
    let what = "activation_backward";
    same_lengths(
        what,
        "the forward output",
        y.len(),
        "the gradient",
        dy.len(),
    )?;
    let isa = Isa::resolve(opts.isa)?;
    if act == Activation::Identity {
        return Ok(());
    }
    // SAFETY: `resolve` checked that this CPU has `isa`'s features.
    by_pieces(opts, dy, [y], |dy, [y]| unsafe {
        backward_loops::run(isa, act, y, dy)
    });
    Ok(())
}

/// An activation layer's forward pass, `y[i] ← act(x[i])` in one pass out of place (the bits of
/// `y` copied from `x` and then [`bias_activation`] without a bias).
pub fn activation_forward(
    opts: &ExecOptions,
    act: Activation,
    x: &[f32],
    y: &mut [f32],
) -> Result<()> {
    same_lengths(
        "activation_forward",
        "the input",
        x.len(),
        "the output",
        y.len(),
    )?;
    let isa = Isa::resolve(opts.isa)?;
    // SAFETY: `resolve` checked that this CPU has `isa`'s features.
    by_pieces(opts, y, [x], |y, [x]| unsafe {
        forward_into_loops::run(isa, act, x, y)
    });
    Ok(())
}

/// [`activation_backward`] out of place: `dx[i] ← dy[i]·act'(x_i)` from the forward output `y`,
/// `dy` unchanged (the bits of `dy` taken back in place and then copied).
pub fn activation_backward_into(
    opts: &ExecOptions,
    act: Activation,
    y: &[f32],
    dy: &[f32],
    dx: &mut [f32],
) -> Result<()> {
    let what = "activation_backward_into";
    same_lengths(
        what,
        "the forward output",
        y.len(),
        "the gradient",
        dy.len(),
    )?;
    same_lengths(
        what,
        "the gradient",
        dy.len(),
        "the input gradient",
        dx.len(),
    )?;
    let isa = Isa::resolve(opts.isa)?;
    // SAFETY: `resolve` checked that this CPU has `isa`'s features.
    by_pieces(opts, dx, [dy, y], |dx, [dy, y]| unsafe {
        backward_into_loops::run(isa, act, y, dy, dx)
    });
    Ok(())
}

/// An error naming both operands when their lengths differ.
fn same_lengths(what: &'static str, a: &str, a_len: usize, b: &str, b_len: usize) -> Result<()> {
    if a_len == b_len {
        return Ok(());
    }
    Err(Error::ShapeMismatch {
        what,
        detail: format!("{a} has {a_len} elements but {b} has {b_len}"),
    })
}
