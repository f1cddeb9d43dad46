//! Batch normalisation's per-channel loops in explicit vectors, for blocks of channels that are
//! whole vectors (16 or 32 channels on AVX-512, 8 to 32 in steps of 8 on AVX2) around no
//! activation or an elementwise one: written once over [`Vector`] and compiled for AVX-512 and
//! AVX2. Other blocks and instruction sets take the portable loops in `norm.rs`.
//!
//! Why: the compiler's vectorisation of the portable loops kept their f64 sums latency-bound
//! (one widened f64 addition per row and lane group, in one chain) and moved the widened lanes
//! through the stack, and the maps over 16 channels ran at about a third of a vector per cycle.
//! On one thread of a 2-core AVX-512 Xeon (the `norm_probe` example), program F's second layer
//! (7 744 rows × 32 channels) took 176 µs for the training forward pass and 358 µs for the
//! backward pass through its ReLU; its first (43 264 × 16, 2.8 MB per tensor) moves at the
//! memory's speed either way.
//!
//! The statistics' sums run in f64 as the portable loop's (the same bits). The gradient's sums
//! run in f32 over blocks of [`SUM_ROWS`] rows, in two chains (even rows, odd rows), then join
//! f64 totals in row order: the same bits for any thread count (the stripes are cut by the row
//! count). An f32 sum of eight terms is off by at most 8 ulp of the sum of their magnitudes; the
//! f64 totals keep the error from growing with the batch. The maps round as the portable loops
//! do (the same operations in the same order): the same bits.

use std::arch::x86_64::{__m256, __m512};

use crate::activation::Activation;
use crate::arch::vector::Vector;
use crate::Isa;

/// Rows summed in f32 (two chains of half as many) before their sums join the f64 totals.
const SUM_ROWS: usize = 16;

/// The per-channel values one of the loops reads, one per channel of the block: for the sums,
/// the shift (the statistics) or the mean and 1/σ (the gradient's); for the maps, the three
/// values of their formula.
pub(super) type Params<'a> = [&'a [f32]; 3];

/// The vector register and vectors per row that serve a block of `w` channels under `isa`:
/// `Some(true, n)` for `n` AVX-512 vectors, `Some(false, n)` for `n` AVX2 ones, `None` for the
/// portable loops (the block is not whole vectors, or wider than the loops' registers allow).
fn shape(isa: Isa, w: usize) -> Option<(bool, usize)> {
    match isa {
        Isa::Avx512 if w.is_multiple_of(16) && (1..=2).contains(&(w / 16)) => Some((true, w / 16)),
        Isa::Avx512 | Isa::Avx2 if w.is_multiple_of(8) && (1..=4).contains(&(w / 8)) => {
            Some((false, w / 8))
        }
        _ => None,
    }
}

/// The activation around a loop, as the loops' const parameter `ACT`.
pub(crate) const IDENTITY: u8 = 0;
pub(crate) const RELU: u8 = 1;
pub(crate) const SIGMOID: u8 = 2;
pub(crate) const TANH: u8 = 3;

/// `act` as a loop's `ACT`.
pub(crate) fn act_code(act: Activation) -> u8 {
    match act {
        Activation::Identity => IDENTITY,
        Activation::Relu => RELU,
        Activation::Sigmoid => SIGMOID,
        Activation::Tanh => TANH,
    }
}

/// Runs `$name` (its AVX-512 and AVX2 entry points, `$name::avx512::<NV, ACT>` and
/// `$name::avx2::<NV, ACT>`) for a block of `$w` channels under `$isa`, the activation `$act`
/// (a code above), with `$args`; evaluates to whether a vector path took it.
macro_rules! run_vectors {
    ($isa:expr, $w:expr, $act:expr, $name:ident($($arg:expr),*)) => {{
        macro_rules! by_act {
            ($set:ident, $nv:literal) => {
                match $act {
                    IDENTITY => $name::$set::<$nv, IDENTITY>($($arg),*),
                    RELU => $name::$set::<$nv, RELU>($($arg),*),
                    SIGMOID => $name::$set::<$nv, SIGMOID>($($arg),*),
                    _ => $name::$set::<$nv, TANH>($($arg),*),
                }
            };
        }
        // SAFETY: (every arm) this CPU has `isa` (the caller's contract), and an AVX-512 CPU
        // has AVX2 and FMA; the loops check their slices.
        unsafe {
            match shape($isa, $w) {
                Some((true, 1)) => by_act!(avx512, 1),
                Some((true, 2)) => by_act!(avx512, 2),
                Some((false, 1)) => by_act!(avx2, 1),
                Some((false, 2)) => by_act!(avx2, 2),
                Some((false, 3)) => by_act!(avx2, 3),
                Some((false, 4)) => by_act!(avx2, 4),
                _ => return false,
            }
        }
        true
    }};
}

/// `mod $name` with `avx512::<NV, ACT>` and `avx2::<NV, ACT>`: `$generic::<V, NV, ACT>`
/// compiled inside each instruction set's `#[target_feature]`.
macro_rules! entry_points {
    ($name:ident, $generic:ident, ($($arg:ident: $ty:ty),*)) => {
        mod $name {
            use super::*;
            #[allow(clippy::too_many_arguments)]
            #[target_feature(enable = "avx512f")]
            pub(super) fn avx512<const NV: usize, const ACT: u8>($($arg: $ty),*) {
                $generic::<__m512, NV, ACT>($($arg),*)
            }
            #[allow(clippy::too_many_arguments)]
            #[target_feature(enable = "avx2,fma")]
            pub(super) fn avx2<const NV: usize, const ACT: u8>($($arg: $ty),*) {
                $generic::<__m256, NV, ACT>($($arg),*)
            }
        }
    };
}

/// `NV` vectors of `s` from `at`.
#[inline(always)]
fn load_row<V: Vector, const NV: usize>(s: &[f32], at: usize) -> [V; NV] {
    let row = &s[at..at + NV * V::LANES];
    // SAFETY: `row` holds NV·LANES floats; the instruction set is the caller's (every generic
    // loop here runs inside an entry point of `V`'s set).
    std::array::from_fn(|v| unsafe { V::load(row[v * V::LANES..].as_ptr()) })
}

/// `NV` vectors into `s` from `at`.
#[inline(always)]
fn store_row<V: Vector, const NV: usize>(s: &mut [f32], at: usize, vs: [V; NV]) {
    let row = &mut s[at..at + NV * V::LANES];
    for (v, x) in vs.into_iter().enumerate() {
        // SAFETY: as in `load_row`.
        unsafe { V::store(row[v * V::LANES..].as_mut_ptr(), x) };
    }
}

/// Adds the two chains' f32 sums into the f64 totals, lane by lane.
#[inline(always)]
fn flush<V: Vector, const NV: usize>(chains: [[V; NV]; 2], totals: &mut [f64]) {
    let mut lanes = [0.0f32; 16];
    for v in 0..NV {
        // SAFETY: `lanes` holds at least LANES floats; the instruction set is the caller's.
        unsafe { V::store(lanes.as_mut_ptr(), V::add(chains[0][v], chains[1][v])) };
        for (t, &s) in totals[v * V::LANES..(v + 1) * V::LANES]
            .iter_mut()
            .zip(&lanes)
        {
            *t += s as f64;
        }
    }
}

/// For every block of [`SUM_ROWS`] of `$rows` rows: `$step` with `$r` the row and `$acc` its
/// chain's `[[V; NV]; 2]` sums (chain 0 for the block's even rows, 1 for its odd ones), then
/// `$flush` with `$chains` both chains; the chains start at zero in each block. A macro, not a
/// function taking closures: a closure is not compiled with its caller's target features, and
/// left out of line it called every vector operation (a third of the time in calls).
macro_rules! row_blocks {
    ($V:ty, $NV:expr, $rows:expr, |$r:ident, $acc:ident| $step:block, |$chains:ident| $flush:block) => {{
        let rows = $rows;
        let mut r = 0;
        while r < rows {
            let end = (r + SUM_ROWS).min(rows);
            // SAFETY: the instruction set is the caller's.
            let zero = unsafe { <$V>::zero() };
            let mut $chains = [[[zero; $NV]; 2]; 2];
            while r + 2 <= end {
                for h in 0..2 {
                    let ($r, $acc) = (r + h, &mut $chains[h]);
                    $step
                }
                r += 2;
            }
            if r < end {
                let ($r, $acc) = (r, &mut $chains[0]);
                $step
                r += 1;
            }
            $flush
        }
    }};
}

entry_points!(column_sums_entry, column_sums_v, (x: &[f32], c: usize, c0: usize,
    shift: &[f32], s1: &mut [f64], s2: &mut [f64]));

/// Σ (x − shift) into `s1` and Σ (x − shift)² into `s2` per channel of the block at `c0`
/// (`s1.len()` channels of rows `c` wide), as the portable `column_sums_body` (the same bits);
/// returns whether a vector path served the block.
///
/// # Safety (this and the three functions below)
/// This CPU has `isa`.
pub(super) unsafe fn column_sums(
    isa: Isa,
    x: &[f32],
    c: usize,
    c0: usize,
    shift: &[f32],
    s1: &mut [f64],
    s2: &mut [f64],
) -> bool {
    run_vectors!(
        isa,
        s1.len(),
        IDENTITY,
        column_sums_entry(x, c, c0, shift, s1, s2)
    )
}

/// In f64, row by row, as the portable loop (the same bits: each f32 widened exactly, its
/// difference from the shift taken in f64, the square rounded, then added, in row order per
/// lane) — the variance stays accurate however far the first row lies from the mean (f32 sums
/// of the squared differences lost it in proportion to that distance squared). Two f64
/// vectors per vector of the row, one chain per lane: at 16 channels a row every four cycles,
/// faster than these rows arrive from memory.
#[inline(always)]
fn column_sums_v<V: Vector, const NV: usize, const ACT: u8>(
    x: &[f32],
    c: usize,
    c0: usize,
    shift: &[f32],
    s1: &mut [f64],
    s2: &mut [f64],
) {
    // SAFETY: (this and every vector operation below) the instruction set is the caller's.
    let centre: [[V::Wide; 2]; NV] = load_row::<V, NV>(shift, 0).map(|v| unsafe { V::widen(v) });
    // SAFETY: as above.
    let zero = unsafe { V::wide_zero() };
    let (mut a, mut b) = ([[zero; 2]; NV], [[zero; 2]; NV]);
    for r in 0..x.len() / c {
        let xv: [V; NV] = load_row(x, r * c + c0);
        for v in 0..NV {
            // SAFETY: as above.
            unsafe {
                let halves = V::widen(xv[v]);
                for h in 0..2 {
                    let d = V::wide_sub(halves[h], centre[v][h]);
                    a[v][h] = V::wide_add(a[v][h], d);
                    // A product then a sum, as the portable loop rounds them (not one
                    // fused rounding: d² is not always exact in f64).
                    b[v][h] = V::wide_add(b[v][h], V::wide_mul(d, d));
                }
            }
        }
    }
    let half = V::LANES / 2;
    for (sums, totals) in [(a, &mut *s1), (b, &mut *s2)] {
        let mut lanes = [0.0f64; 16];
        for (v, pair) in sums.iter().enumerate() {
            for (h, &sum) in pair.iter().enumerate() {
                // SAFETY: `lanes` holds at least LANES / 2 f64; as above.
                unsafe { V::wide_store(lanes.as_mut_ptr(), sum) };
                let at = v * V::LANES + h * half;
                for (t, &l) in totals[at..at + half].iter_mut().zip(&lanes) {
                    *t += l;
                }
            }
        }
    }
}

entry_points!(gradient_sums_entry, gradient_sums_v, (x: &[f32], dy: &[f32], y: &[f32],
    c: usize, c0: usize, stats: (&[f32], &[f32]), sdy: &mut [f64], sdyx: &mut [f64]));

/// Σ g and Σ g·x̂ per channel of the block at `c0` (`sdy.len()` channels), g the gradient `dy`
/// (times the derivative of `act` from its output `y`, `act` a code above), x̂ = (x −
/// mean)·inv_std, as the portable `gradient_sums_body`; returns whether a vector path served the
/// block.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn gradient_sums(
    isa: Isa,
    (x, dy, (act, y)): (&[f32], &[f32], (u8, &[f32])),
    c: usize,
    c0: usize,
    stats: (&[f32], &[f32]),
    sdy: &mut [f64],
    sdyx: &mut [f64],
) -> bool {
    run_vectors!(
        isa,
        sdy.len(),
        act,
        gradient_sums_entry(x, dy, y, c, c0, stats, sdy, sdyx)
    )
}

/// The gradient of the normalised output: `dy` times the derivative of `ACT` at its output `y`,
/// rounded as `Activation::backward` rounds it.
#[inline(always)]
pub(crate) fn gradient<V: Vector, const ACT: u8>(dy: V, y: V) -> V {
    // SAFETY: the instruction set is the caller's.
    unsafe {
        let one = V::splat(&1.0);
        match ACT {
            RELU => V::choose(V::positive(y), V::zero(), dy),
            SIGMOID => V::mul(dy, V::mul(y, V::sub(one, y))),
            TANH => V::mul(dy, V::sub(one, V::mul(y, y))),
            _ => dy,
        }
    }
}

#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn gradient_sums_v<V: Vector, const NV: usize, const ACT: u8>(
    x: &[f32],
    dy: &[f32],
    y: &[f32],
    c: usize,
    c0: usize,
    (mean, inv_std): (&[f32], &[f32]),
    sdy: &mut [f64],
    sdyx: &mut [f64],
) {
    let (m, is): ([V; NV], [V; NV]) = (load_row(mean, 0), load_row(inv_std, 0));
    row_blocks!(
        V,
        NV,
        x.len() / c,
        |r, acc| {
            let at = r * c + c0;
            let (xv, gv): ([V; NV], [V; NV]) = (load_row(x, at), load_row(dy, at));
            let yv: [V; NV] = if ACT == IDENTITY { gv } else { load_row(y, at) };
            let [a, b] = acc;
            for v in 0..NV {
                // SAFETY: the instruction set is the caller's.
                unsafe {
                    let xhat = V::mul(V::sub(xv[v], m[v]), is[v]);
                    let g = gradient::<V, ACT>(gv[v], yv[v]);
                    a[v] = V::add(a[v], g);
                    b[v] = V::fmadd(g, xhat, b[v]);
                }
            }
        },
        |chains| {
            let [even, odd] = chains;
            flush([even[0], odd[0]], sdy);
            flush([even[1], odd[1]], sdyx);
        }
    );
}

entry_points!(input_gradient_entry, input_gradient_v, (x: &[f32], dy: &[f32], y: &[f32],
    c: usize, c0: usize, stats: (&[f32], &[f32]), sums: Params<'_>, dx: &mut [f32]));

/// `dx = k·(g − mean(g) − x̂·mean(g·x̂))` on the block of channels at `c0` (`k.len()` of them,
/// `sums` = (k, mean(g), mean(g·x̂))), g as in [`gradient_sums`], as the portable
/// `input_gradient_body` (the same bits); returns whether a vector path served the block.
pub(super) unsafe fn input_gradient(
    isa: Isa,
    (x, dy, (act, y)): (&[f32], &[f32], (u8, &[f32])),
    c: usize,
    c0: usize,
    stats: (&[f32], &[f32]),
    sums: Params<'_>,
    dx: &mut [f32],
) -> bool {
    run_vectors!(
        isa,
        sums[0].len(),
        act,
        input_gradient_entry(x, dy, y, c, c0, stats, sums, dx)
    )
}

#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn input_gradient_v<V: Vector, const NV: usize, const ACT: u8>(
    x: &[f32],
    dy: &[f32],
    y: &[f32],
    c: usize,
    c0: usize,
    (mean, inv_std): (&[f32], &[f32]),
    [k, mean_dy, mean_dyx]: Params<'_>,
    dx: &mut [f32],
) {
    let (m, is): ([V; NV], [V; NV]) = (load_row(mean, 0), load_row(inv_std, 0));
    let (k, mdy, mdyx): ([V; NV], [V; NV], [V; NV]) =
        (load_row(k, 0), load_row(mean_dy, 0), load_row(mean_dyx, 0));
    for r in 0..x.len() / c {
        let at = r * c + c0;
        let (xv, gv): ([V; NV], [V; NV]) = (load_row(x, at), load_row(dy, at));
        let yv: [V; NV] = if ACT == IDENTITY { gv } else { load_row(y, at) };
        // SAFETY: the instruction set is the caller's.
        let out: [V; NV] = std::array::from_fn(|v| unsafe {
            let xhat = V::mul(V::sub(xv[v], m[v]), is[v]);
            let g = gradient::<V, ACT>(gv[v], yv[v]);
            V::mul(k[v], V::sub(V::sub(g, mdy[v]), V::mul(xhat, mdyx[v])))
        });
        store_row(dx, at, out);
    }
}

entry_points!(scale_shift_entry, scale_shift_v, (x: &[f32], c: usize, c0: usize,
    affine: Params<'_>, y: &mut [f32]));

/// `y = act((x − mean)·scale + beta)` on the block of channels at `c0` (`affine` = (mean,
/// scale, beta), `scale.len()` channels), as the portable `scale_shift_body` (the same bits);
/// returns whether a vector path served the block (for no activation or a ReLU only).
pub(super) unsafe fn scale_shift(
    isa: Isa,
    x: &[f32],
    c: usize,
    c0: usize,
    affine: Params<'_>,
    act: Activation,
    y: &mut [f32],
) -> bool {
    let act = act_code(act);
    if act != IDENTITY && act != RELU {
        return false;
    }
    run_vectors!(
        isa,
        affine[1].len(),
        act,
        scale_shift_entry(x, c, c0, affine, y)
    )
}

#[inline(always)]
fn scale_shift_v<V: Vector, const NV: usize, const ACT: u8>(
    x: &[f32],
    c: usize,
    c0: usize,
    [mean, scale, beta]: Params<'_>,
    y: &mut [f32],
) {
    let (m, s, b): ([V; NV], [V; NV], [V; NV]) =
        (load_row(mean, 0), load_row(scale, 0), load_row(beta, 0));
    for r in 0..x.len() / c {
        let at = r * c + c0;
        let xv: [V; NV] = load_row(x, at);
        // SAFETY: the instruction set is the caller's.
        let out: [V; NV] = std::array::from_fn(|v| unsafe {
            let t = V::fmadd(V::sub(xv[v], m[v]), s[v], b[v]);
            if ACT == RELU {
                V::relu(t)
            } else {
                t
            }
        });
        store_row(y, at, out);
    }
}
