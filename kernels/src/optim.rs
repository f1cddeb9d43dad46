//! Optimizer update rules as vectorised in-place loops over a parameter tensor and its gradient,
//! with Keras 3's arithmetic (the step sizes are computed by the caller, once per step):
//!
//! * SGD: `v ← μ·v − lr·g`; `w ← w + v` (Nesterov: `w ← w + μ·v − lr·g`); without momentum
//!   `w ← w − lr·g`.
//! * Adam: `m ← m + (g − m)·(1 − β₁)`, `v ← v + (g² − v)·(1 − β₂)`, `w ← w − α·m / (√v + ε)`,
//!   with the bias correction folded into `α = lr·√(1 − β₂ᵗ) / (1 − β₁ᵗ)` as Keras does.
//! * RMSprop: `v ← ρ·v + (1 − ρ)·g²`, `w ← w − lr·g / √(v + ε)` (ε inside the root, as Keras).
//!
//! The rules run with subnormal numbers flushed to zero, inputs and results, as TensorFlow runs
//! its CPU kernels: a state that decays geometrically (Adam's first moment of a weight whose
//! input is mostly zero) would otherwise turn subnormal and cost a microcode assist per element
//! on x86 (measured in the crate's `subnormal` module). No state is left subnormal: a result
//! below the smallest normal f32 becomes 0 (so Adam's `m + (g − m)·(1 − β₁)` keeps its last
//! normal `m` when the increment is that small, as TensorFlow's does).
//!
//! Each loop is compiled per instruction set like [`crate::math`]'s; on AVX-512 and AVX2,
//! Adam's and RMSprop's run in explicit vectors with estimated reciprocal roots (`vector`: the
//! divider was their bound), but for Adam on AVX2, whose estimates' long chain of latency
//! ran slower than the divider. Large tensors are updated
//! in chunks on the rayon pool (the update is elementwise and memory-bound: a CNN's 700 000
//! parameters move 20 MB per Adam step); the result does not depend on the split.
//!
//! [`update_from_product`] fuses a step with the products that feed it: a weight matrix whose
//! gradient is a product `Aᵀ·B` (a dense layer's kernel) is updated block of rows by block of
//! rows while each block's gradient is still in cache, and the product `B·Wᵀ` that needs the old
//! weights (the layer's input gradient) is formed from the same blocks just before: the
//! weights and optimizer state are streamed once instead of three times, and the gradient is
//! never stored.

use std::ops::Range;

use crate::error::{check_len, matrix_len, Error, Result};
use crate::gemm::pack::transpose_lines;
use crate::gemm::{gemm_with, ExecOptions, Threading};
use crate::owned::WeightStrips;
use crate::scratch::{PRODUCT, PRODUCT_OPERAND};
use crate::shared::SharedOut;
use crate::subnormal::FlushSubnormals;
use crate::{Isa, MatMut, MatRef};

#[inline(always)]
fn sgd_body(w: &mut [f32], g: &[f32], lr: f32) {
    for (w, &g) in w.iter_mut().zip(g) {
        *w -= lr * g;
    }
}

#[inline(always)]
fn sgd_momentum_body(w: &mut [f32], g: &[f32], vel: &mut [f32], lr: f32, mu: f32, nesterov: bool) {
    if nesterov {
        for ((w, &g), v) in w.iter_mut().zip(g).zip(vel.iter_mut()) {
            *v = mu * *v - lr * g;
            *w += mu * *v - lr * g;
        }
    } else {
        for ((w, &g), v) in w.iter_mut().zip(g).zip(vel.iter_mut()) {
            *v = mu * *v - lr * g;
            *w += *v;
        }
    }
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn adam_body(
    w: &mut [f32],
    g: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    alpha: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
) {
    let (one_b1, one_b2) = (1.0 - beta1, 1.0 - beta2);
    for (((w, &g), m), v) in w.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
        *m += (g - *m) * one_b1;
        *v += (g * g - *v) * one_b2;
        *w -= alpha * *m / (v.sqrt() + eps);
    }
}

#[inline(always)]
fn rmsprop_body(w: &mut [f32], g: &[f32], v: &mut [f32], lr: f32, rho: f32, eps: f32) {
    let one_rho = 1.0 - rho;
    for ((w, &g), v) in w.iter_mut().zip(g).zip(v.iter_mut()) {
        *v = rho * *v + one_rho * g * g;
        *w -= lr * g / (*v + eps).sqrt();
    }
}

use crate::dispatch::{per_isa, per_isa_x86};

#[cfg(target_arch = "x86_64")]
mod vector;

per_isa!(sgd_run, sgd_body, sgd_body, (w: &mut [f32], g: &[f32], lr: f32));
per_isa!(sgd_momentum_run, sgd_momentum_body, sgd_momentum_body,
    (w: &mut [f32], g: &[f32], vel: &mut [f32], lr: f32, mu: f32, nesterov: bool));
per_isa_x86!(adam_run, (vector::adam_avx512, vector::adam_avx2), adam_body, adam_body,
    (w: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], alpha: f32, beta1: f32, beta2: f32, eps: f32));
per_isa_x86!(rmsprop_run, (vector::rmsprop_avx512, vector::rmsprop_avx2), rmsprop_body,
    rmsprop_body, (w: &mut [f32], g: &[f32], v: &mut [f32], lr: f32, rho: f32, eps: f32));

/// Elements per parallel chunk: below this a tensor is updated on the calling thread.
const CHUNK: usize = 1 << 15;

fn check(what: &'static str, w: usize, others: &[(&str, usize)]) -> Result<()> {
    for &(name, len) in others {
        if len != w {
            return Err(Error::ShapeMismatch {
                what,
                detail: format!("the parameters have {w} elements but {name} has {len}"),
            });
        }
    }
    Ok(())
}

/// Plain SGD, or with momentum `mu` (velocity `vel`, Nesterov optional): see the module docs.
/// `vel` is required when `mu ≠ 0`.
pub fn sgd_update(
    opts: &ExecOptions,
    w: &mut [f32],
    g: &[f32],
    vel: Option<&mut [f32]>,
    lr: f32,
    mu: f32,
    nesterov: bool,
) -> Result<()> {
    let rule = Rule::Sgd {
        lr,
        momentum: mu,
        nesterov,
    };
    match vel {
        Some(vel) => {
            check(
                "sgd_update",
                w.len(),
                &[("the gradient", g.len()), ("the velocity", vel.len())],
            )?;
            update(opts, rule, w, g, &mut [vel])
        }
        None if mu == 0.0 => {
            check("sgd_update", w.len(), &[("the gradient", g.len())])?;
            update(opts, rule, w, g, &mut [])
        }
        None => Err(Error::InvalidArgument {
            name: "vel",
            value: "None".into(),
            reason: format!("momentum {mu} needs a velocity buffer"),
        }),
    }
}

/// One Adam step with the bias-corrected step size `alpha` (see the module docs).
#[allow(clippy::too_many_arguments)]
pub fn adam_update(
    opts: &ExecOptions,
    w: &mut [f32],
    g: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    alpha: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
) -> Result<()> {
    check(
        "adam_update",
        w.len(),
        &[("the gradient", g.len()), ("m", m.len()), ("v", v.len())],
    )?;
    let rule = Rule::Adam {
        alpha,
        beta1,
        beta2,
        eps,
    };
    update(opts, rule, w, g, &mut [m, v])
}

/// One RMSprop step (see the module docs).
pub fn rmsprop_update(
    opts: &ExecOptions,
    w: &mut [f32],
    g: &[f32],
    v: &mut [f32],
    lr: f32,
    rho: f32,
    eps: f32,
) -> Result<()> {
    check(
        "rmsprop_update",
        w.len(),
        &[("the gradient", g.len()), ("v", v.len())],
    )?;
    update(opts, Rule::RmsProp { lr, rho, eps }, w, g, &mut [v])
}

/// One step of `rule` on the parameters `w` from their gradient `g`; `state` holds the rule's
/// state buffers ([`Rule::state_buffers`] of them, each as long as `w`). What
/// [`sgd_update`], [`adam_update`] and [`rmsprop_update`] run; for callers that hold the rule
/// as a value.
pub fn update(
    opts: &ExecOptions,
    rule: Rule,
    w: &mut [f32],
    g: &[f32],
    state: &mut [&mut [f32]],
) -> Result<()> {
    check_state(rule, state)?;
    check("update", w.len(), &[("the gradient", g.len())])?;
    for s in state.iter() {
        check("update", w.len(), &[("a state buffer", s.len())])?;
    }
    let isa = Isa::resolve(opts.isa)?;
    let (w_out, state_out) = (SharedOut::new(w), state_handles(state));
    crate::team::for_each(opts.threading, g.len().div_ceil(CHUNK), &|t| {
        let span = t * CHUNK..((t + 1) * CHUNK).min(g.len());
        // SAFETY: each task owns its span of the parameters and the state.
        let (w, mut state) = unsafe { (w_out.slice(span.clone()), state_spans(&state_out, &span)) };
        // SAFETY: `resolve` checked that this CPU has `isa`'s features.
        unsafe { rule.apply(isa, w, &g[span], &mut state[..rule.state_buffers()]) };
    });
    Ok(())
}

fn check_state(rule: Rule, state: &[&mut [f32]]) -> Result<()> {
    if state.len() != rule.state_buffers() {
        return Err(Error::InvalidArgument {
            name: "state",
            value: format!("{} buffers", state.len()),
            reason: format!("{rule:?} keeps {} state buffers", rule.state_buffers()),
        });
    }
    Ok(())
}

/// Handles on up to two state buffers, for tasks that each update a span of them.
fn state_handles<'s>(state: &'s mut [&mut [f32]]) -> [Option<SharedOut<'s, f32>>; 2] {
    let mut out = [None, None];
    for (slot, s) in out.iter_mut().zip(state.iter_mut()) {
        *slot = Some(SharedOut::new(s));
    }
    out
}

/// The state buffers' elements `span` (empty slices for the unused ones).
///
/// # Safety
/// No other live slice of the buffers overlaps `span`.
#[allow(clippy::mut_from_ref)]
unsafe fn state_spans<'a>(
    handles: &[Option<SharedOut<'a, f32>>; 2],
    span: &std::ops::Range<usize>,
) -> [&'a mut [f32]; 2] {
    handles.each_ref().map(|h| match h {
        // SAFETY: the caller's contract (no other live slice overlaps `span`).
        Some(h) => unsafe { h.slice(span.clone()) },
        None => &mut [],
    })
}

/// One step of an optimizer rule, with this step's hyperparameters (Adam's bias correction
/// already folded into `alpha`, see the module docs). The state a rule keeps per parameter:
/// SGD with momentum the velocity; Adam `m` then `v`; RMSprop the mean square.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rule {
    /// [`sgd_update`]'s rule (state: the velocity when `momentum ≠ 0`, else none).
    Sgd {
        lr: f32,
        momentum: f32,
        nesterov: bool,
    },
    /// [`adam_update`]'s rule (state: `m`, `v`).
    Adam {
        alpha: f32,
        beta1: f32,
        beta2: f32,
        eps: f32,
    },
    /// [`rmsprop_update`]'s rule (state: the mean square).
    RmsProp { lr: f32, rho: f32, eps: f32 },
}

impl Rule {
    /// How many state buffers (each as long as the parameters) the rule uses.
    pub fn state_buffers(&self) -> usize {
        match *self {
            Rule::Sgd { momentum, .. } => usize::from(momentum != 0.0),
            Rule::Adam { .. } => 2,
            Rule::RmsProp { .. } => 1,
        }
    }

    /// The floating-point operations of one weight's update, counted from the rule's formula
    /// (a square root or a division counts one): what a roofline charges an optimizer step.
    /// SGD `w −= lr·g`: 2; with momentum `v = m·v − lr·g; w += v`: 4; Nesterov
    /// `w += m·v − lr·g`: 7. Adam `m = β₁m + (1−β₁)g; v = β₂v + (1−β₂)g²;
    /// w −= α·m / (√v + ε)`: 12. RMSprop `a = ρa + (1−ρ)g²; w −= lr·g / (√a + ε)`: 9.
    pub fn flops_per_weight(&self) -> u64 {
        match *self {
            Rule::Sgd { momentum: 0.0, .. } => 2,
            Rule::Sgd {
                nesterov: false, ..
            } => 4,
            Rule::Sgd { nesterov: true, .. } => 7,
            Rule::Adam { .. } => 12,
            Rule::RmsProp { .. } => 9,
        }
    }

    /// Applies the rule to one block (`state` holds [`Self::state_buffers`] slices as long as
    /// `w`; the caller checked the lengths).
    ///
    /// # Safety
    /// The CPU has `isa`'s features.
    unsafe fn apply(&self, isa: Isa, w: &mut [f32], g: &[f32], state: &mut [&mut [f32]]) {
        let _flush = FlushSubnormals::new();
        // SAFETY: the caller's contract.
        unsafe {
            match (*self, state) {
                (Rule::Sgd { lr, .. }, []) => sgd_run::run(isa, w, g, lr),
                (
                    Rule::Sgd {
                        lr,
                        momentum,
                        nesterov,
                    },
                    [vel],
                ) => sgd_momentum_run::run(isa, w, g, vel, lr, momentum, nesterov),
                (
                    Rule::Adam {
                        alpha,
                        beta1,
                        beta2,
                        eps,
                    },
                    [m, v],
                ) => adam_run::run(isa, w, g, m, v, alpha, beta1, beta2, eps),
                (Rule::RmsProp { lr, rho, eps }, [v]) => {
                    rmsprop_run::run(isa, w, g, v, lr, rho, eps)
                }
                _ => unreachable!("state buffers checked against the rule"),
            }
        }
    }
}

/// One optimizer step on a weight matrix whose gradient is a product, fused with that product
/// and with the product that needs the weights before the step:
///
/// * `d ← b·wᵀ` (when `d` is given; `n × k`, row-major, overwritten), with `w` as it was before;
/// * `w ← rule(w, aᵀ·b)`, the gradient `aᵀ·b` (`k × n`) formed a block of rows at a time and
///   never stored;
///
/// where `a` is `m × k` (a dense layer's input, one sample per row), `b` is `m × n` (the
/// gradient of its pre-activation output) and `w` is the `k × n` row-major kernel. `state`
/// holds the rule's state buffers ([`Rule::state_buffers`] of them, each `k·n` long).
///
/// On our GEMM paths the results are bit for bit those of the two products by [`gemm_with`]
/// followed by [`update`] (an element of our product does not depend on the rows computed with
/// it); on the OpenBLAS path they agree up to rounding (its kernels change with the block's
/// shape). Blocks are cut by the shape alone and run in parallel over rows of `w`, never over
/// `m`, so every thread count gives the same bits; each block runs on the pool thread that owns
/// its rows ([`crate::owned`]), the one that forms them in [`crate::owned::dense_forward`].
pub fn update_from_product(
    opts: &ExecOptions,
    rule: Rule,
    a: MatRef<'_>,
    b: MatRef<'_>,
    w: &mut [f32],
    state: &mut [&mut [f32]],
    d: Option<&mut [f32]>,
) -> Result<()> {
    let what = "update_from_product";
    let (m, k, n) = (a.rows(), a.cols(), b.cols());
    if b.rows() != m {
        return Err(Error::ShapeMismatch {
            what,
            detail: format!(
                "a is {m}×{k} and b is {}×{n}: they need the same number of rows",
                b.rows()
            ),
        });
    }
    a.validate("A")?;
    b.validate("B")?;
    let size = |r: usize, c: usize| matrix_len(what, r, c);
    let kn = || format!("{k}×{n}");
    check_len(what, "the weights w", w.len(), size(k, n)?, kn)?;
    check_state(rule, state)?;
    for s in state.iter() {
        check_len(what, "a state buffer", s.len(), size(k, n)?, kn)?;
    }
    if let Some(d) = &d {
        check_len(what, "the input gradient d", d.len(), size(m, k)?, || {
            format!("{m}×{k}")
        })?;
    }
    let update_isa = Isa::resolve(opts.isa)?;
    if n == 0 {
        // No gradient to step with, and d = b·wᵀ is a sum over nothing: zero (as a GEMM's).
        if let Some(d) = d {
            d.fill(0.0);
        }
        return Ok(());
    }
    if k == 0 {
        return Ok(());
    }
    let single = ExecOptions {
        threading: Threading::Single,
        ..*opts
    };
    // The input gradient is formed transposed, block by block: dᵀ[rows, :] = w[rows, :]·bᵀ reads
    // the block's weights in place as the product's A (rows of w are rows of A), where
    // d[:, rows] = b·w[rows, :]ᵀ would repack them transposed as B on every call. bᵀ is formed
    // once per call and shared by the blocks. Measured on a 2-core Xeon (AVX-512), Dense
    // 5408→128 at batch 32, one thread: 0.65 ms per step against 0.93 for the 45 blocks'
    // products (the same bits: each element is the same sum in the same order).
    // Where the whole d = b·wᵀ would be formed as dot products (a batch of 2–4, or 2–4 inputs,
    // over more than 128 units), each block's columns of d are formed so too, b · w_blkᵀ, for
    // the same bits; bᵀ is then not needed.
    let dot_form_d = d.is_some()
        && crate::Backend::resolve(opts.backend)? == crate::Backend::Native
        && crate::gemm::dot_form::takes(update_isa, (m, n, k), b.col_stride(), 1);
    let bt_len = if d.is_some() && !dot_form_d { m * n } else { 0 };
    PRODUCT_OPERAND.with(bt_len, 0, |bt| {
        if bt_len > 0 {
            transpose_into(b, bt);
        }
        let bt = MatRef::row_major(bt, n, m, m);
        let strips = WeightStrips::new(k, n);
        let w_out = SharedOut::new(w);
        let d_out = d.map(SharedOut::new);
        let state_out = state_handles(state);
        let block = |rows: Range<usize>| -> Result<()> {
            let (first, r) = (rows.start, rows.len());
            let span = first * n..(first + r) * n;
            // SAFETY: each block owns rows first..first + r of w and of the state, and columns
            // first..first + r of d; no other task forms slices of them.
            let w_blk = unsafe { w_out.slice(span.clone()) };
            let d_len = if d_out.is_some() { r * m } else { 0 };
            PRODUCT.with(r * n + 2 * d_len, 0, |buf| {
                let (g, rest) = buf.split_at_mut(r * n);
                let (dt_blk, d_blk) = rest.split_at_mut(d_len);
                if let Some(d_out) = &d_out {
                    // dᵀ[first..first + r, :] = w_blk · bᵀ, with the weights before the step;
                    // a one-row block (k = 1) as the one-column product b · w_blkᵀ that the
                    // whole d = b·wᵀ is (`gemm::gemv` sums a row and a column differently),
                    // and every block so where the whole d takes the dot form (its elements
                    // are the dot form's sums only when formed by rows of b).
                    if dot_form_d {
                        let w_cols = MatRef::row_major(w_blk, r, n, n).t();
                        let d_part = MatMut::row_major(d_blk, m, r, r);
                        gemm_with(&single, 1.0, b, w_cols, 0.0, d_part)?;
                    } else if r == 1 {
                        let w_col = MatRef::row_major(w_blk, 1, n, n).t();
                        let d_col = MatMut::row_major(dt_blk, m, 1, 1);
                        gemm_with(&single, 1.0, b, w_col, 0.0, d_col)?;
                    } else {
                        let w_rows = MatRef::row_major(w_blk, r, n, n);
                        let dt = MatMut::row_major(dt_blk, r, m, m);
                        gemm_with(&single, 1.0, w_rows, bt, 0.0, dt)?;
                    }
                    if !dot_form_d {
                        let dt_row = |j: usize| &dt_blk[j * m..(j + 1) * m];
                        transpose_lines(dt_row, r, d_blk, 0, r, m);
                    }
                    for (i, src) in d_blk.chunks_exact(r).enumerate() {
                        // SAFETY: as above (row i's columns of this block).
                        unsafe { d_out.slice(i * k + first..i * k + first + r) }
                            .copy_from_slice(src);
                    }
                }
                // g = (a[:, first..first + r])ᵀ · b.
                gemm_with(
                    &single,
                    1.0,
                    a.columns(first, r).t(),
                    b,
                    0.0,
                    MatMut::row_major(g, r, n, n),
                )?;
                // SAFETY: as above.
                let mut blk_state = unsafe { state_spans(&state_out, &span) };
                // SAFETY: `resolve` checked that this CPU has `update_isa`'s features.
                unsafe { rule.apply(update_isa, w_blk, g, &mut blk_state[..rule.state_buffers()]) };
                Ok(())
            })
        };
        // Each strip's blocks on the strip's owner, in order (`owned`): the thread whose
        // forward product read these rows of w steps them.
        strips.run(opts.threading, &|s| {
            strips.blocks_of(s).try_for_each(|b| block(strips.block(b)))
        })
    })
}

/// `out` (`b.cols() × b.rows()`, row-major) ← `bᵀ`.
fn transpose_into(b: MatRef<'_>, out: &mut [f32]) {
    let (m, n) = (b.rows(), b.cols());
    let (data, rs, cs) = (b.data(), b.row_stride(), b.col_stride());
    for i in 0..m {
        for p in 0..n {
            out[p * m + i] = data[i * rs + p * cs];
        }
    }
}
