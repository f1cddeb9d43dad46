//! Adam's and RMSprop's steps in explicit vectors, written once over [`Vector`] and compiled for
//! AVX-512 and AVX2, with `1/(√v + ε)` and `1/√(v + ε)` from the instructions' estimates refined
//! by one Newton step in fused multiply-adds instead of a square root and a division. (Adam on
//! AVX2 runs the exact loop: see [`adam_avx2`].)
//!
//! Each register's loads come before its stores: the weights and the state are separate
//! allocations whose addresses agree in their low 12 bits (each a fresh run of pages), and a
//! load of `w` after the stores to `m` and `v` at the same offsets waited on them as if it
//! might read them (4 KiB aliasing). One Zen 4 thread, medians of 7 interleaved rounds, two
//! sets of rounds: AVX-512 Adam over 100 352 weights 1.12–1.14× as fast, fused into Dense
//! 784→128's backward 1.04–1.07×, RMSprop 1.16×.
//!
//! Why: both rules take a square root and a division per weight, and on x86 the two share one
//! divider that serves a 16-lane register every ~8–12 cycles each: the compiled loops ran at
//! 0.35 ns per weight on one thread of a 2-core AVX-512 Xeon whether their 50 000–400 000
//! weights sat in L2 or not — ~17 cycles per register, a fifth of program A's training step
//! (Dense 784→128 with Adam, batch 32). The estimates run on the multiply-add ports: 0.32 ns
//! (Adam) and 0.20 ns (RMSprop) per weight at 50 000 weights when they came in, of which the
//! exact ends (+∞, negatives) cost 0.02–0.03 — since then chosen only in a register that holds
//! one (see [`as_exact_at_the_ends`]), and each operand's lines asked for ahead
//! ([`FETCH_AHEAD`]): together another 1.1–1.5× (state in L3 to 20 000 weights) on one thread
//! of a later Xeon.
//!
//! Accuracy: an estimate's relative error δ ≤ 1.5·2⁻¹² becomes about 1.5·δ² after the Newton
//! step, so the factor is within a few units in the last place of the exact one (over the
//! tests' sweep: Adam's 2.3 ulp on AVX-512 — 3.6 with AVX2's estimates, which Adam no longer
//! takes — against ~1.5 for the square root and the division rounded in turn); the weight's
//! step `α·m·q` differs from the exact `α·m / d` by as much, far below the weight's own
//! rounding. The moments (`m`, `v`) are computed with the portable
//! loops' operations in their order: the same bits on every path. Every element of a slice takes
//! the same arithmetic (a partial last register is masked, not left to the portable loop), so
//! the bits do not depend on where a caller cuts its slices. `v` is raised to
//! f32::MIN_POSITIVE before its estimate (an estimate at 0 would turn the Newton step into NaN),
//! which changes a finite `√v + ε` only where ε ≥ [`MIN_EPS`] absorbs it (with a smaller ε the
//! exact loops run); where v is +∞ the factor is the exact loops' 0, where it is negative (a
//! state no step leaves) their NaN — chosen only in a register that holds such a lane (one
//! comparison a register finds them). A NaN in `v` or the gradient still reaches the weight.

use std::arch::x86_64::{__m256, __m512};

use crate::arch::vector::Vector;

/// The smallest ε the estimates serve: √(f32::MIN_POSITIVE) ≈ 1.1·10⁻¹⁹ added to it is below
/// half its unit in the last place, so raising `v` to f32::MIN_POSITIVE changes no `√v + ε`.
pub(super) const MIN_EPS: f32 = 1e-10;

/// `1/√x` from `y`, an estimate of it: `y + y·(1 − x·y²)/2`.
///
/// # Safety
/// The CPU has `V`'s instruction set.
#[inline(always)]
unsafe fn refine_rsqrt<V: Vector>(x: V, y: V, half: V, one: V) -> V {
    // SAFETY: the caller's contract.
    unsafe {
        let e = V::fnmadd(V::mul(x, y), y, one);
        V::fmadd(V::mul(y, half), e, y)
    }
}

/// `f` where `x` is finite and not negative; where it is +∞, 0 (the exact loops' 1/∞, so a
/// finite moment steps by 0 and an infinite one by NaN); where it is negative, NaN (their √ of
/// it). The estimates alone would have turned both into finite factors or NaN. The ends are
/// rare: one comparison tells whether a register holds any (or a −0 or a NaN, which keep `f`),
/// and only then are they chosen lane by lane. With the clamp of `v` to f32::MAX dropped (only
/// the ends needed it), five instructions a register (the clamp, two comparisons, two blends)
/// become one comparison and a branch on the common path: an AVX-512 Xeon runs 16-lane
/// operations on two ports, and the step is bound by them. One thread of a
/// 2-core AVX-512 Xeon, medians of 9 interleaved rounds, against every register choosing:
/// Adam over 100 352 weights 1.08–1.10× as fast (20 000: 1.19×), fused into Dense 784→128's
/// backward at batch 128 1.05×; RMSprop 1.10×, forced AVX2 1.15×.
///
/// # Safety
/// The CPU has `V`'s instruction set.
#[inline(always)]
unsafe fn as_exact_at_the_ends<V: Vector>(x: V, f: V, k: &Constants<V>) -> V {
    // SAFETY: the caller's contract.
    unsafe {
        if !V::any_signed_or_beyond_max(x) {
            return f;
        }
        // Above f32::MAX only +∞; below zero only a negative (a NaN is neither).
        let f = V::choose(V::greater(x, k.hi), f, k.zero);
        V::choose(V::greater(k.zero, x), f, k.nan)
    }
}

/// `1/(√v + ε)` (as the exact loops' at v = +∞, v < 0 and NaN).
///
/// # Safety
/// The CPU has `V`'s instruction set.
#[inline(always)]
unsafe fn inverse_root_plus<V: Vector>(v_in: V, eps: V, k: &Constants<V>) -> V {
    let Constants { lo, half, one, .. } = *k;
    // SAFETY: the caller's contract.
    unsafe {
        // Raised to a normal number (an estimate at 0 is ∞, and the Newton step's ∞·0 NaN);
        // +∞ is left to the ends' choice below.
        let v = V::max(lo, v_in);
        let r = V::rsqrt_estimate(v);
        // √v ≈ s = v·r, refined: s + (v − s²)·r/2.
        let s = V::mul(v, r);
        let root = V::fmadd(V::fnmadd(s, s, v), V::mul(r, half), s);
        let d = V::add(root, eps);
        // 1/d ≈ q, refined: q + q·(1 − d·q).
        let q = V::recip_estimate(d);
        as_exact_at_the_ends(v_in, V::fmadd(q, V::fnmadd(d, q, one), q), k)
    }
}

/// How far ahead of the register in use (floats) each operand's line is asked for: the
/// hardware's streamers fetch only within a 4 KiB page and start over at every page, and the
/// step's three or four streams spent that restart waiting. One thread of a 2-core AVX-512
/// Xeon, against no software prefetch, medians of 7 interleaved rounds: Adam over 692 224
/// weights (its state in L3) 1.12× as fast at 256 or 512 floats ahead, 1.07 at 64 and 1024;
/// two threads 1.10×; over 100 352 (in L2) 1.17×, 20 000 1.25×; fused into Dense 5408→128's
/// backward (program C's, batch 32, two threads) 1.02–1.09×, Dense 784→128's at batch 128
/// 1.02–1.06×; RMSprop over 692 224 weights 1.09×, forced AVX2 1.09×. Whole epochs (five
/// interleaved, on a machine whose speed swung 1.3× between them): program C 2.75 → 2.60 s,
/// A 0.33 → 0.29 s.
const FETCH_AHEAD: usize = 512;

/// Asks for the line [`FETCH_AHEAD`] floats past element `i` of each of `streams`, at every
/// 16th float: each line once, whatever the slices' alignment.
#[inline(always)]
fn fetch_ahead<const S: usize>(streams: [*const f32; S], i: usize) {
    if i.is_multiple_of(16) {
        for p in streams {
            // Past a slice's end near its last registers: a hint, which cannot fault.
            crate::arch::prefetch_line(p.wrapping_add(i + FETCH_AHEAD));
        }
    }
}

/// The constants of the refinements and the ends: the least normal number, f32::MAX, ½, 1, 0
/// and NaN.
#[derive(Clone, Copy)]
struct Constants<V> {
    lo: V,
    hi: V,
    half: V,
    one: V,
    zero: V,
    nan: V,
}

/// [`Constants`] in registers of `V`.
///
/// # Safety
/// The CPU has `V`'s instruction set.
#[inline(always)]
unsafe fn constants<V: Vector>() -> Constants<V> {
    // SAFETY: the caller's contract; the pointers are to locals.
    let [lo, hi, half, one, zero, nan] =
        [f32::MIN_POSITIVE, f32::MAX, 0.5, 1.0, 0.0, f32::NAN].map(|c| unsafe { V::splat(&c) });
    Constants {
        lo,
        hi,
        half,
        one,
        zero,
        nan,
    }
}

/// `$body` for each register of an `$n`-long slice, with `$i` its first element and `$live`
/// `None` for a whole register, `Some(mask)` for a partial last one. Every element takes the
/// same arithmetic wherever the slice's registers start (a partial register is masked, not
/// left to the portable loop): a fused step cuts a weight matrix into blocks of rows that
/// `update` takes whole, and the two must give the same bits. Used inside an `unsafe` block
/// of a function compiled for `$V`'s instruction set. A macro, not a function taking
/// a closure: a closure is not compiled with its caller's target features (left out of line,
/// it called every vector operation: 12 ns per weight instead of 0.3).
macro_rules! for_registers {
    ($V:ty, $n:expr, |$i:ident, $live:ident| $body:block) => {{
        let n = $n;
        let whole = n - n % <$V>::LANES;
        for $i in (0..whole).step_by(<$V>::LANES) {
            let $live: Option<<$V as Vector>::Mask> = None;
            $body
        }
        if whole < n {
            let $i = whole;
            // (Expanded inside the caller's `unsafe` block: the instruction set is its.)
            let $live = Some(<$V>::mask(n - whole));
            $body
        }
    }};
}

/// The register at `p`, or its live lanes (the others zero).
///
/// # Safety
/// The CPU has `V`'s instruction set; `p` is valid for the register's (live) lanes.
#[inline(always)]
unsafe fn get<V: Vector>(p: *const f32, live: Option<V::Mask>) -> V {
    // SAFETY: the caller's contract.
    unsafe {
        match live {
            None => V::load(p),
            Some(m) => V::load_live(p, m),
        }
    }
}

/// The register to `p`, or its live lanes.
///
/// # Safety
/// As [`get`].
#[inline(always)]
unsafe fn put<V: Vector>(p: *mut f32, live: Option<V::Mask>, v: V) {
    // SAFETY: the caller's contract.
    unsafe {
        match live {
            None => V::store(p, v),
            Some(m) => V::store_live(p, m, v),
        }
    }
}

/// Adam's step (`super::adam_body`'s rule, the factor estimated), or the portable loop's for
/// an ε below [`MIN_EPS`].
///
/// # Safety
/// The CPU has `V`'s instruction set (the entry points below are compiled for it).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn adam<V: Vector>(
    w: &mut [f32],
    g: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    alpha: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
) {
    let n = w.len();
    assert!(g.len() == n && m.len() == n && v.len() == n);
    if eps < MIN_EPS {
        return super::adam_body(w, g, m, v, alpha, beta1, beta2, eps);
    }
    let scalars = [1.0 - beta1, 1.0 - beta2, alpha, eps];
    let (w, g, m, v) = (w.as_mut_ptr(), g.as_ptr(), m.as_mut_ptr(), v.as_mut_ptr());
    // SAFETY: the CPU has `V`'s instruction set (this function's contract); every access is to
    // the (live lanes of the) register at i < n within the four slices, n long (asserted above).
    unsafe {
        let [one_b1, one_b2, alpha, eps] = scalars.map(|c| V::splat(&c));
        let k = constants::<V>();
        for_registers!(V, n, |i, live| {
            fetch_ahead([g, m, v, w], i);
            // Every load before the first store (see the module's documentation).
            let gi: V = get(g.add(i), live);
            let mi: V = get(m.add(i), live);
            let vi: V = get(v.add(i), live);
            let wi: V = get(w.add(i), live);
            let m1 = V::add(mi, V::mul(V::sub(gi, mi), one_b1));
            let v1 = V::add(vi, V::mul(V::sub(V::mul(gi, gi), vi), one_b2));
            put(m.add(i), live, m1);
            put(v.add(i), live, v1);
            let step = V::mul(V::mul(alpha, m1), inverse_root_plus(v1, eps, &k));
            put(w.add(i), live, V::sub(wi, step));
        });
    }
}

/// RMSprop's step (`super::rmsprop_body`'s rule, the factor estimated), or the portable loop's
/// for an ε below [`MIN_EPS`].
///
/// # Safety
/// As [`adam`].
#[inline(always)]
unsafe fn rmsprop<V: Vector>(w: &mut [f32], g: &[f32], v: &mut [f32], lr: f32, rho: f32, eps: f32) {
    let n = w.len();
    assert!(g.len() == n && v.len() == n);
    if eps < MIN_EPS {
        return super::rmsprop_body(w, g, v, lr, rho, eps);
    }
    let scalars = [rho, 1.0 - rho, lr, eps];
    let (w, g, v) = (w.as_mut_ptr(), g.as_ptr(), v.as_mut_ptr());
    // SAFETY: as in `adam`.
    unsafe {
        let [rho, one_rho, lr, eps] = scalars.map(|c| V::splat(&c));
        let k = constants::<V>();
        for_registers!(V, n, |i, live| {
            fetch_ahead([g, v, w], i);
            // Every load before the first store (see the module's documentation).
            let gi: V = get(g.add(i), live);
            let vi: V = get(v.add(i), live);
            let wi: V = get(w.add(i), live);
            let v1 = V::add(V::mul(rho, vi), V::mul(V::mul(one_rho, gi), gi));
            put(v.add(i), live, v1);
            // v + ε ≥ ε > 0 unless v is negative (or NaN); +∞ is left to the ends' choice.
            let x = V::add(v1, eps);
            let y = refine_rsqrt(x, V::rsqrt_estimate(x), k.half, k.one);
            let y = as_exact_at_the_ends(x, y, &k);
            put(w.add(i), live, V::sub(wi, V::mul(V::mul(lr, gi), y)));
        });
    }
}

/// `$avx512` and `$avx2`: `$generic` compiled inside each set's `#[target_feature]` — or, for
/// `$avx2 = $exact`, the portable loop `$exact` compiled (and vectorised by the compiler)
/// inside AVX2's.
macro_rules! entry_points {
    ($generic:ident: $avx512:ident, $avx2:ident, ($($arg:ident: $ty:ty),*)) => {
        entry_points!(@avx512 $generic: $avx512, ($($arg: $ty),*));
        #[target_feature(enable = "avx2,fma")]
        #[allow(clippy::too_many_arguments)]
        pub(super) fn $avx2($($arg: $ty),*) {
            // SAFETY: this function's target features are the instruction set of `__m256`.
            unsafe { $generic::<__m256>($($arg),*) }
        }
    };
    ($generic:ident: $avx512:ident, $(#[$doc:meta])* $avx2:ident = $exact:path,
     ($($arg:ident: $ty:ty),*)) => {
        entry_points!(@avx512 $generic: $avx512, ($($arg: $ty),*));
        $(#[$doc])*
        #[target_feature(enable = "avx2,fma")]
        #[allow(clippy::too_many_arguments)]
        pub(super) fn $avx2($($arg: $ty),*) {
            $exact($($arg),*)
        }
    };
    (@avx512 $generic:ident: $avx512:ident, ($($arg:ident: $ty:ty),*)) => {
        #[target_feature(enable = "avx512f")]
        #[allow(clippy::too_many_arguments)]
        pub(super) fn $avx512($($arg: $ty),*) {
            // SAFETY: this function's target feature is the instruction set of `__m512`.
            unsafe { $generic::<__m512>($($arg),*) }
        }
    };
}

entry_points!(adam: adam_avx512,
    /// Adam's step on AVX2: the portable loop (a square root and a division), which the
    /// compiler vectorises in 8-lane registers here — not [`adam`]'s estimates. One register's
    /// estimated step is a chain of ~60 cycles' latency in ~30 instructions, and 8 lanes a
    /// chain do not keep the multiply-add ports busy: on one Zen 4 thread, forced AVX2, the
    /// estimates (their loads already first) → exact (medians of 7 interleaved rounds) 3 072
    /// weights 1.44× as fast, 100 352 1.34×, Dense 784→128's fused backward and step at batch
    /// 32 1.08× (with the loads' change, against the loop before both: 1.51× at 100 352, 1.21×
    /// fused, 1.16× fused on two threads). (16 lanes a chain do: AVX-512's estimates ran 1.17×
    /// as fast as its exact loop at 100 352 weights, 1.07× fused. RMSprop's shorter chain ran
    /// as fast either way on AVX2 and keeps its estimates.) The exact loop's results are the
    /// portable ones, bit for bit.
    adam_avx2 = super::adam_body,
    (w: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], alpha: f32, beta1: f32,
    beta2: f32, eps: f32));
entry_points!(rmsprop: rmsprop_avx512, rmsprop_avx2, (w: &mut [f32], g: &[f32], v: &mut [f32],
    lr: f32, rho: f32, eps: f32));

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Isa;

    /// ulps of `got` from `want`, in units of f32's spacing at `want`.
    fn ulps(got: f32, want: f64) -> f64 {
        let spacing = f64::from(f32::EPSILON) * 2f64.powi(want.abs().log2().floor() as i32);
        (got as f64 - want).abs() / spacing
    }

    #[target_feature(enable = "avx512f")]
    fn inverse_root_plus_512(x: &[f32; 16], eps: f32) -> [f32; 16] {
        let mut out = [0.0; 16];
        // SAFETY: this function's target feature (checked by the caller); 16 lanes in and out.
        unsafe {
            let q = inverse_root_plus(
                __m512::load(x.as_ptr()),
                __m512::splat(&eps),
                &constants::<__m512>(),
            );
            __m512::store(out.as_mut_ptr(), q);
        }
        out
    }

    #[target_feature(enable = "avx2,fma")]
    fn inverse_root_plus_256(x: &[f32; 16], eps: f32) -> [f32; 16] {
        let mut out = [0.0; 16];
        // SAFETY: this function's target features (checked by the caller); two registers of 8
        // lanes in and out.
        unsafe {
            let k = constants::<__m256>();
            for h in [0, 8] {
                let v = __m256::load(x.as_ptr().add(h));
                let q = inverse_root_plus(v, __m256::splat(&eps), &k);
                __m256::store(out.as_mut_ptr().add(h), q);
            }
        }
        out
    }

    fn inverse_root_plus_on(isa: Isa, x: &[f32; 16], eps: f32) -> [f32; 16] {
        match isa {
            // SAFETY: `isa` is available (the callers iterate `Isa::available()`).
            Isa::Avx512 => unsafe { inverse_root_plus_512(x, eps) },
            // SAFETY: as above.
            Isa::Avx2 => unsafe { inverse_root_plus_256(x, eps) },
            _ => unreachable!(),
        }
    }

    /// `1/(√v + ε)` against f64 over v from 0 to f32::MAX (every power of two, and 8 192
    /// values per unit from ¼ to 4¼), ε from MIN_EPS to 1: within 2.5 ulp on AVX-512, 4 on AVX2;
    /// ∞ gives 0 and a negative v NaN, as the exact loops; a NaN stays NaN. (Adam runs it on
    /// AVX-512 only; its AVX2 build checks the same generic code on a machine without AVX-512.)
    #[test]
    fn inverse_root_plus_is_within_a_few_ulp() {
        let mut v: Vec<f32> = (-149..128).map(|e| 2f32.powi(e)).collect();
        v.extend((0..8192 * 4).map(|i| 0.25 + i as f32 / 8192.0));
        v.extend([0.0, f32::MAX, 1e-30, 3e-20, 7.5e-8]);
        v.resize(v.len().next_multiple_of(16), 1.0);
        for isa in Isa::available().into_iter().rev() {
            if !matches!(isa, Isa::Avx512 | Isa::Avx2) {
                continue;
            }
            let mut worst = 0.0f64;
            for eps in [MIN_EPS, 1e-7, 1e-3, 1.0] {
                for x in v.chunks_exact(16) {
                    let x: &[f32; 16] = x.try_into().unwrap();
                    let got = inverse_root_plus_on(isa, x, eps);
                    for (&vi, &q) in x.iter().zip(&got) {
                        let want = 1.0 / ((vi as f64).sqrt() + eps as f64);
                        worst = worst.max(ulps(q, want));
                    }
                }
            }
            // Measured: 2.28 (AVX-512's 14-bit estimates), 3.59 (AVX2's 12-bit ones).
            let bound = if isa == Isa::Avx512 { 2.5 } else { 4.0 };
            assert!(worst <= bound, "{isa}: worst {worst} ulp");
            let inf = inverse_root_plus_on(isa, &[f32::INFINITY; 16], 1e-7);
            assert!(inf.iter().all(|&q| q == 0.0), "{isa}: 1/∞ is 0");
            let nan = inverse_root_plus_on(isa, &[f32::NAN; 16], 1e-7);
            assert!(
                nan.iter().all(|q| q.is_nan()),
                "{isa}: a NaN v must stay NaN"
            );
            let negative = inverse_root_plus_on(isa, &[-1e-3; 16], 1e-7);
            assert!(
                negative.iter().all(|q| q.is_nan()),
                "{isa}: √ of a negative is NaN"
            );
            let zero = inverse_root_plus_on(isa, &[-0.0; 16], 1e-7);
            let exact = 1.0 / 1e-7f32;
            assert!(
                zero.iter().all(|&q| q == exact),
                "{isa}: 1/(√−0 + ε) is 1/ε"
            );
        }
    }

    /// A register that holds an end (+∞, −∞, a negative, −0, a NaN of either sign, a negative
    /// subnormal) among ordinary values takes the ends' choice lane by lane: each lane has the
    /// bits it has in a register of its value alone (the ordinary ones as in a register without
    /// ends), in every lane position. f32::MAX, the least normal number and +0 are controls:
    /// ordinary values at the edges.
    #[test]
    fn ends_beside_ordinary_values_change_only_their_own_lanes() {
        let ends = [
            f32::INFINITY,
            f32::NEG_INFINITY,
            -2.5,
            -0.0,
            -1e-45,
            f32::NAN,
            -f32::NAN,
            f32::MAX,
            f32::MIN_POSITIVE,
            0.0,
        ];
        for isa in Isa::available() {
            if !matches!(isa, Isa::Avx512 | Isa::Avx2) {
                continue;
            }
            let alone = |x: f32| inverse_root_plus_on(isa, &[x; 16], 1e-7)[0];
            assert_eq!(alone(f32::INFINITY), 0.0, "{isa}: 1/∞ is 0");
            let nan_at = [-2.5, f32::NEG_INFINITY, -f32::NAN];
            assert!(
                nan_at.iter().all(|&x| alone(x).is_nan()),
                "{isa}: NaN below 0"
            );
            for (e, &end) in ends.iter().enumerate() {
                for at in [0, 5, 7, 8, 15] {
                    let mut x: [f32; 16] = std::array::from_fn(|i| 0.3 + (i + e) as f32 * 1.7);
                    x[at] = end;
                    let got = inverse_root_plus_on(isa, &x, 1e-7);
                    for (i, (&xi, &q)) in x.iter().zip(&got).enumerate() {
                        let want = alone(xi);
                        assert!(
                            q.to_bits() == want.to_bits() || q.is_nan() && want.is_nan(),
                            "{isa}: lane {i} (v = {xi}) beside {end} at {at}: {q} vs {want}"
                        );
                    }
                }
            }
        }
    }
}
