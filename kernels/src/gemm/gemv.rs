//! One-row and one-column products (`1 × k · k × n` and `m × k · k × 1`): matrix–vector
//! products, bound by the speed at which the matrix streams from memory, not by the FMA units.
//! The blocked driver would pad the vector to a whole MR × NR tile (1 useful row in 8 or 24) and
//! pack the matrix first; here the matrix is read once, in place.
//!
//! Two loop forms cover every layout with a unit stride somewhere:
//! * **dot**: output `r` is the dot product of the matrix's row `r` (unit stride along `p`) with
//!   the vector: eight rows at a time (then four, then one), 16 lanes of partial sums each
//!   (lane `l` the products at `p ≡ l (mod 16)`, the last `k mod 16` too, as one more step
//!   padded with zeros), summed in a fixed tree.
//!   This order is not the microkernels': an output of a dot-form product (a one-column product
//!   of a row-major A, a one-row product of a column-major B, a single dot product) has the same
//!   bits in every such product, whatever its other dimension or the thread count, but not the
//!   bits the tiles give it inside a product of several rows and columns. Summing in the tiles'
//!   order needs one FMA chain per row (vectorised across rows, so A transposed on the way):
//!   measured on one Zen 5 thread at 12–17 GB/s against this form's 28–31.
//! * **axpy**: the outputs are contiguous in the matrix's rows (`M[p][r]`, unit stride along
//!   `r`): each step of `p` adds `x[p]·M[p][..]` to a block of outputs kept in L1 (half of it), eight
//!   rows of the matrix at a time. Every output is summed exactly as the microkernels sum an
//!   element of C: in increasing `p`, one K slice of the tile's `kc` at a time, each slice's
//!   sum scaled by alpha and added to C with the instruction set's rounding. So a one-row
//!   product gives the bits that the same row gets inside a larger product (a model's
//!   `predict` is the same for one sample as for a batch).
//!
//! Outputs are split among threads in contiguous ranges; each output's sum is formed by one
//! thread in an order fixed by the shape, so every thread count gives the same bits.

use super::config::slice_depth;
use super::problem::{Output, Problem};
use crate::arch::{reduce_lanes, DOT_LANES};
use crate::dispatch::per_isa;
use crate::scratch::STAGE;
use crate::team::run_parallel;
use crate::Isa;

/// Lanes of partial sums per row in the dot form.
const LANES: usize = DOT_LANES;
/// Most outputs accumulated together, in either form (16 KiB of sums); fewer where half of L1d
/// holds fewer (`axpy_block`).
const BLOCK: usize = 4096;
/// Outputs of a range whose sums take a small array on the stack rather than `BLOCK`'s.
const FEW_OUTPUTS: usize = 256;
/// Matrix bytes per thread below which a second thread does not pay for its hand-off.
const BYTES_PER_THREAD: usize = 256 << 10;

/// Which loop form, and the matrix the outputs come from.
#[derive(Clone, Copy)]
enum Form {
    /// `out[r] = Σₚ mat[r·ld + p] · x[p]`.
    Dot,
    /// `out[r] = Σₚ x[p] · mat[p·ld + r]`.
    Axpy,
}

/// A matrix–vector product in the terms of this module.
struct Gemv<'a> {
    form: Form,
    /// The matrix, from its first element; `ld` apart along the strided dimension.
    mat: &'a [f32],
    ld: usize,
    /// The vector: `k` elements `inc` apart.
    x: &'a [f32],
    inc: usize,
    outputs: usize,
    k: usize,
    /// Output `r` is at `y + r·y_inc` (`y` is passed apart: threads share it).
    y_inc: usize,
}

/// Runs `prob` as a matrix–vector product if it is one (m = 1 or n = 1) and its matrix has a
/// unit stride along one dimension; `false` (nothing done) otherwise. The epilogue, if any, is
/// the caller's to apply.
pub(crate) fn try_gemv(isa: Isa, prob: &Problem<'_>, threads: usize) -> bool {
    if prob.a_packer.is_some() {
        return false;
    }
    let (a, b, c) = (prob.a, prob.b, prob.c);
    let g = if prob.m == 1 && prob.n == 1 && (a.cs == 1 || b.rs == 1) {
        // One dot product: summed as the dot form of a longer row or column would sum it (the
        // product of two elements is the same whichever is the matrix's).
        let (mat, ld, x, inc) = if a.cs == 1 {
            (a.data, a.rs, b.data, b.rs)
        } else {
            (b.data, b.cs, a.data, a.cs)
        };
        Gemv {
            form: Form::Dot,
            mat,
            ld,
            x,
            inc,
            outputs: 1,
            k: prob.k,
            y_inc: c.rs,
        }
    } else if prob.n == 1 {
        // A (m × k) times the column B[.., 0]; outputs down C's column.
        let (form, ld) = if a.cs == 1 {
            (Form::Dot, a.rs)
        } else if a.rs == 1 || prob.m == 1 {
            (Form::Axpy, a.cs)
        } else {
            return false;
        };
        Gemv {
            form,
            mat: a.data,
            ld,
            x: b.data,
            inc: b.rs,
            outputs: prob.m,
            k: prob.k,
            y_inc: c.rs,
        }
    } else if prob.m == 1 {
        // The row A[0, ..] times B (k × n); outputs along C's row.
        let (form, ld) = if b.cs == 1 {
            (Form::Axpy, b.rs)
        } else if b.rs == 1 {
            (Form::Dot, b.cs)
        } else {
            return false;
        };
        Gemv {
            form,
            mat: b.data,
            ld,
            x: a.data,
            inc: a.cs,
            outputs: prob.n,
            k: prob.k,
            y_inc: c.cs,
        }
    } else {
        return false;
    };
    // The K slices the tiles sum in.
    let Some(kc) = slice_depth(isa) else {
        return false;
    };
    let bytes = g.outputs * g.k * std::mem::size_of::<f32>();
    let tasks = threads.min(bytes / BYTES_PER_THREAD).max(1);
    // Whole lane groups per task, so the split never changes how an output is summed.
    let per_task = g.outputs.div_ceil(tasks).next_multiple_of(LANES);
    let tasks = g.outputs.div_ceil(per_task);

    run_parallel(tasks, threads, &|t| {
        let r0 = t * per_task;
        let r1 = (r0 + per_task).min(g.outputs);
        // The whole `Output` (the shared handle on C) is taken into the closure, not its
        // pointer field alone.
        let c: Output = c;
        // SAFETY: outputs r0..r1 belong to this task alone; the view of C was checked, so each
        // lies inside C's buffer.
        unsafe { run_range(isa, &g, kc, r0..r1, prob.alpha, prob.beta, c.ptr) };
    });
    true
}

/// Outputs `range` of `g`: `y[r] ← alpha·sum + beta·y[r]` (y not read when beta = 0); in the
/// axpy form one `kc`-deep slice of the sum at a time, as the microkernels do.
///
/// # Safety
/// `y + r·y_inc` is writable for every `r` in `range`, and no other thread touches those.
unsafe fn run_range(
    isa: Isa,
    g: &Gemv<'_>,
    kc: usize,
    range: std::ops::Range<usize>,
    alpha: f32,
    beta: f32,
    y: *mut f32,
) {
    let len = range.len();
    // The microkernels' last step: SIMD ones add beta·C to the scaled sum in one rounding, the
    // portable one in two.
    let fused = isa != Isa::Scalar;
    // The vector, contiguous (staged when strided).
    STAGE.with(if g.inc == 1 { 0 } else { g.k }, 0, |stage| {
        let x: &[f32] = if g.inc == 1 {
            &g.x[..g.k]
        } else {
            for (p, s) in stage.iter_mut().enumerate() {
                *s = g.x[p * g.inc];
            }
            stage
        };
        let slice = match g.form {
            Form::Dot => g.k.max(1),
            Form::Axpy => kc,
        };
        // The block's sums (every kernel writes each before reading it), in an array of
        // [`FEW_OUTPUTS`] where that holds the range: zeroing all of `BLOCK`'s 16 KiB took a
        // third of a Dense layer's bias gradient (one Zen 4 thread: 1×32×64 as a product 0.48
        // → 0.32 µs, 1×32×10 0.35 → 0.2, 64×64×1 0.65 → 0.47; program E's epoch 0.956×).
        let mut few;
        let mut many;
        let sums: &mut [f32] = if len <= FEW_OUTPUTS {
            few = [0.0f32; FEW_OUTPUTS];
            &mut few
        } else {
            many = [0.0f32; BLOCK];
            &mut many
        };
        let block = axpy_block();
        for b0 in (0..len).step_by(block) {
            let n = block.min(len - b0);
            let r0 = range.start + b0;
            let sums = &mut sums[..n];
            for p0 in (0..g.k).step_by(slice) {
                let x = &x[p0..(p0 + slice).min(g.k)];
                match g.form {
                    Form::Dot => {
                        let mat = &g.mat[r0 * g.ld..];
                        // SAFETY: `isa` was checked available by the caller of the driver.
                        unsafe { dot_rows::run(isa, mat, g.ld, x, sums) };
                    }
                    Form::Axpy => {
                        let mat = &g.mat[p0 * g.ld + r0..];
                        // SAFETY: as above.
                        unsafe { axpy_rows::run(isa, mat, g.ld, x, sums) };
                    }
                }
                let beta = if p0 == 0 { beta } else { 1.0 };
                for (i, &s) in sums.iter().enumerate() {
                    // SAFETY: output r0 + i lies in `range` (the function's contract).
                    let dst = unsafe { &mut *y.add((r0 + i) * g.y_inc) };
                    let scaled = alpha * s;
                    *dst = if beta == 0.0 {
                        scaled
                    } else if fused {
                        beta.mul_add(*dst, scaled)
                    } else {
                        scaled + beta * *dst
                    };
                }
            }
        }
    });
}

/// Outputs per block of the axpy form: as many as half of L1d holds, at most `BLOCK`. Each group
/// of eight matrix rows is then read in runs of the block's width: on one Zen 4 thread,
/// 1×4096×4096 streamed at 18.3 GB/s in blocks of 1024 outputs (runs of one 4 KiB page, where
/// the hardware prefetchers start over), 19.9 in blocks of 2048 and 21.7 in blocks of 4096
/// (medians of six interleaved runs); on two threads (2048 outputs each) 32.7 → 36.6 GB/s.
/// Sixteen rows a group instead of eight lost 20–25 %, four lost 10–15 %.
fn axpy_block() -> usize {
    (crate::cpu::cache_info().l1d.size / 2 / std::mem::size_of::<f32>()).clamp(LANES, BLOCK)
}

#[inline(always)]
fn fma<const FUSED: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FUSED {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// `sums[r] = Σₚ mat[r·ld + p]·x[p]` for `r < sums.len()`, `p < x.len()`. Eight rows at a time
/// rather than four: 4096×4096×1 streamed at 21.9 GB/s against 20.7 on one Zen 4 thread, 37.9
/// against 34.9 on two (medians of eight interleaved runs). Every row is summed alike in either
/// group, so the bits do not depend on the row's place.
#[inline(always)]
fn dot_rows_body<const FUSED: bool>(mat: &[f32], ld: usize, x: &[f32], sums: &mut [f32]) {
    let k = x.len();
    let whole = k / LANES * LANES;
    let row = |r: usize| &mat[r * ld..r * ld + k];
    let mut r = 0;
    while r + 8 <= sums.len() {
        let rows: [&[f32]; 8] = std::array::from_fn(|q| row(r + q));
        let mut acc = [[0.0f32; LANES]; 8];
        let mut p = 0;
        while p < whole {
            let xs = &x[p..p + LANES];
            for q in 0..8 {
                let m = &rows[q][p..p + LANES];
                for l in 0..LANES {
                    acc[q][l] = fma::<FUSED>(m[l], xs[l], acc[q][l]);
                }
            }
            p += LANES;
        }
        for (q, mut acc) in acc.into_iter().enumerate() {
            tail_into_lanes::<FUSED>(&rows[q][whole..], &x[whole..], &mut acc);
            sums[r + q] = reduce_lanes(acc);
        }
        r += 8;
    }
    while r + 4 <= sums.len() {
        let rows = [row(r), row(r + 1), row(r + 2), row(r + 3)];
        let (mut a0, mut a1, mut a2, mut a3) =
            ([0.0f32; LANES], [0.0; LANES], [0.0; LANES], [0.0; LANES]);
        let chunks = |q: usize| rows[q][..whole].chunks_exact(LANES);
        for ((((m0, m1), m2), m3), xs) in chunks(0)
            .zip(chunks(1))
            .zip(chunks(2))
            .zip(chunks(3))
            .zip(x[..whole].chunks_exact(LANES))
        {
            for l in 0..LANES {
                a0[l] = fma::<FUSED>(m0[l], xs[l], a0[l]);
                a1[l] = fma::<FUSED>(m1[l], xs[l], a1[l]);
                a2[l] = fma::<FUSED>(m2[l], xs[l], a2[l]);
                a3[l] = fma::<FUSED>(m3[l], xs[l], a3[l]);
            }
        }
        for (q, mut acc) in [a0, a1, a2, a3].into_iter().enumerate() {
            tail_into_lanes::<FUSED>(&rows[q][whole..], &x[whole..], &mut acc);
            sums[r + q] = reduce_lanes(acc);
        }
        r += 4;
    }
    while r < sums.len() {
        let row_r = row(r);
        let mut acc = [0.0f32; LANES];
        for (m, xs) in row_r[..whole]
            .chunks_exact(LANES)
            .zip(x[..whole].chunks_exact(LANES))
        {
            for l in 0..LANES {
                acc[l] = fma::<FUSED>(m[l], xs[l], acc[l]);
            }
        }
        tail_into_lanes::<FUSED>(&row_r[whole..], &x[whole..], &mut acc);
        sums[r] = reduce_lanes(acc);
        r += 1;
    }
}

/// The last `k mod LANES` products of a row as one more step of the lanes' loop, over the
/// row and the vector padded with zeros to a whole step (where `k mod LANES` is not 0): what
/// the SIMD dot form computes with loads masked to the tail, bit for bit — a lane may hold −0
/// (a negative product that underflows, added to +0 in one rounding), which the padding's
/// +0·+0 turns into +0 on both.
#[inline(always)]
fn tail_into_lanes<const FUSED: bool>(row: &[f32], x: &[f32], acc: &mut [f32; LANES]) {
    if row.is_empty() {
        return;
    }
    for (l, acc) in acc.iter_mut().enumerate() {
        let (m, xp) = match (row.get(l), x.get(l)) {
            (Some(&m), Some(&xp)) => (m, xp),
            _ => (0.0, 0.0),
        };
        *acc = fma::<FUSED>(m, xp, *acc);
    }
}

/// `sums[r] = Σₚ x[p]·mat[p·ld + r]` for `r < sums.len()`, summed in increasing `p`.
#[inline(always)]
fn axpy_rows_body<const FUSED: bool>(mat: &[f32], ld: usize, x: &[f32], sums: &mut [f32]) {
    let n = sums.len();
    sums.fill(0.0);
    let row = |p: usize| &mat[p * ld..p * ld + n];
    let k = x.len();
    let mut p = 0;
    while p + 8 <= k {
        let rows: [&[f32]; 8] = std::array::from_fn(|q| row(p + q));
        let xs: [f32; 8] = std::array::from_fn(|q| x[p + q]);
        for (j, s) in sums.iter_mut().enumerate() {
            let mut acc = *s;
            for q in 0..8 {
                acc = fma::<FUSED>(xs[q], rows[q][j], acc);
            }
            *s = acc;
        }
        p += 8;
    }
    while p < k {
        let (r, xp) = (row(p), x[p]);
        for (s, &m) in sums.iter_mut().zip(r) {
            *s = fma::<FUSED>(xp, m, *s);
        }
        p += 1;
    }
}

#[inline(always)]
fn dot_rows_fused(mat: &[f32], ld: usize, x: &[f32], sums: &mut [f32]) {
    dot_rows_body::<true>(mat, ld, x, sums)
}
#[inline(always)]
fn dot_rows_plain(mat: &[f32], ld: usize, x: &[f32], sums: &mut [f32]) {
    dot_rows_body::<false>(mat, ld, x, sums)
}
#[inline(always)]
fn axpy_rows_fused(mat: &[f32], ld: usize, x: &[f32], sums: &mut [f32]) {
    axpy_rows_body::<true>(mat, ld, x, sums)
}
#[inline(always)]
fn axpy_rows_plain(mat: &[f32], ld: usize, x: &[f32], sums: &mut [f32]) {
    axpy_rows_body::<false>(mat, ld, x, sums)
}

per_isa!(
    dot_rows,
    dot_rows_fused,
    dot_rows_plain,
    (mat: &[f32], ld: usize, x: &[f32], sums: &mut [f32])
);
per_isa!(
    axpy_rows,
    axpy_rows_fused,
    axpy_rows_plain,
    (mat: &[f32], ld: usize, x: &[f32], sums: &mut [f32])
);
