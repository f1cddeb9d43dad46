//! The machine's FMA peak, measured rather than read off a datasheet: independent chains of fused
//! multiply-adds (enough of them to hide the FMA latency on every current core), on 1..n threads.
//! Benchmarks divide their GFLOP/s by this figure.

use std::time::Instant;

use kernels::{Error, Isa, Result};

/// FMA iterations per timed run and thread: long enough (tens of milliseconds) to swamp timer
/// and thread start-up noise.
const ITERS: usize = 20_000_000;

/// A peak loop: runs its FMA chains for the given number of iterations.
type PeakLoop = fn(usize) -> f32;

/// Floating-point operations per iteration of `isa`'s peak loop, and the loop itself.
fn peak_loop(isa: Isa) -> Result<(f64, PeakLoop)> {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => Ok((24.0 * 16.0 * 2.0, x86::avx512_chains)),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => Ok((12.0 * 8.0 * 2.0, x86::avx2_chains)),
        _ => Err(Error::InvalidArgument {
            name: "isa",
            value: isa.to_string(),
            reason: "the FMA peak is measured for the x86 SIMD paths (avx512, avx2)".into(),
        }),
    }
}

/// Peak single-precision GFLOP/s of `isa`'s FMA on `threads` threads at once (the median of
/// `reps` timed runs, each of which counts until the slowest thread finishes).
pub fn fma_peak_gflops(isa: Isa, threads: usize, reps: usize) -> Result<f64> {
    isa.check_available()?;
    let (flops_per_iter, chains) = peak_loop(isa)?;
    let threads = threads.max(1);
    let mut rates: Vec<f64> = (0..reps.max(1))
        .map(|_| {
            let start = Instant::now();
            std::thread::scope(|s| {
                for _ in 1..threads {
                    s.spawn(|| std::hint::black_box(chains(std::hint::black_box(ITERS))));
                }
                // The calling thread runs one of the loops itself.
                std::hint::black_box(chains(std::hint::black_box(ITERS)));
            });
            let secs = start.elapsed().as_secs_f64();
            flops_per_iter * ITERS as f64 * threads as f64 / secs / 1e9
        })
        .collect();
    rates.sort_by(f64::total_cmp);
    Ok(rates[rates.len() / 2])
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! The loops have the shape of a GEMM microkernel's inner step: each FMA takes one operand
    //! as a broadcast from (L1-resident) memory, one from a register, and accumulates into its own
    //! chain. On AMD Zen cores an FMA with three register operands issues more slowly than this
    //! (register-file reads), so a register-only loop under-reports the peak GEMM can reach.
    use std::arch::x86_64::*;

    /// Broadcast operands: four groups, cycled so that the loads cannot be hoisted.
    const OPERANDS: [f32; 64] = {
        let mut v = [0.0f32; 64];
        let mut i = 0;
        while i < 64 {
            v[i] = 1e-7 * (i as f32 + 1.0);
            i += 1;
        }
        v
    };

    /// 24 independent 512-bit FMA chains per iteration (a 12 × 32 tile's worth).
    pub(super) fn avx512_chains(iters: usize) -> f32 {
        // SAFETY: only reached through `fma_peak_gflops`, which checked AVX-512F is available.
        unsafe { avx512_inner(iters) }
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn avx512_inner(iters: usize) -> f32 {
        let mut acc = [[_mm512_set1_ps(1.0); 2]; 12];
        for it in 0..iters {
            let group = &OPERANDS[(it & 1) * 32..][..32];
            // SAFETY: `group` holds 32 floats, two vectors' worth.
            let b = unsafe {
                [
                    _mm512_loadu_ps(group.as_ptr()),
                    _mm512_loadu_ps(group.as_ptr().add(16)),
                ]
            };
            for (a, &x) in acc.iter_mut().zip(group) {
                let x = _mm512_set1_ps(x);
                a[0] = _mm512_fmadd_ps(x, b[0], a[0]);
                a[1] = _mm512_fmadd_ps(x, b[1], a[1]);
            }
        }
        let mut total = _mm512_setzero_ps();
        for a in acc.iter().flatten() {
            total = _mm512_add_ps(total, *a);
        }
        _mm512_reduce_add_ps(total)
    }

    /// 12 independent 256-bit FMA chains per iteration (a 6 × 16 tile's worth).
    pub(super) fn avx2_chains(iters: usize) -> f32 {
        // SAFETY: only reached through `fma_peak_gflops`, which checked AVX2 and FMA are available.
        unsafe { avx2_inner(iters) }
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn avx2_inner(iters: usize) -> f32 {
        let mut acc = [[_mm256_set1_ps(1.0); 2]; 6];
        for it in 0..iters {
            let group = &OPERANDS[(it & 3) * 16..][..16];
            // SAFETY: `group` holds 16 floats, two vectors' worth.
            let b = unsafe {
                [
                    _mm256_loadu_ps(group.as_ptr()),
                    _mm256_loadu_ps(group.as_ptr().add(8)),
                ]
            };
            for (a, &x) in acc.iter_mut().zip(group) {
                let x = _mm256_set1_ps(x);
                a[0] = _mm256_fmadd_ps(x, b[0], a[0]);
                a[1] = _mm256_fmadd_ps(x, b[1], a[1]);
            }
        }
        let mut lanes = [0.0f32; 8];
        let mut total = _mm256_setzero_ps();
        for a in acc.iter().flatten() {
            total = _mm256_add_ps(total, *a);
        }
        // SAFETY: `lanes` holds 8 floats.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), total) };
        lanes.iter().sum()
    }
}
