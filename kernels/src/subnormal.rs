//! Subnormal floats flushed to zero for the span of a guard, on the calling thread.
//!
//! Optimizer state that decays geometrically turns subnormal: Adam's first moment of a weight
//! whose input is zero in most batches (an MNIST border pixel feeding a Dense layer) shrinks
//! by β₁ = 0.9 a step and falls below the smallest normal f32 (1.2e-38) within about 800 steps
//! of its last nudge. On x86 every operation that reads or yields a subnormal then takes a
//! microcode assist (of the order of a hundred cycles), and the step of the CNN's 692 k-weight
//! Dense layer ran about three times as long; measured on a 2-core Xeon (AVX-512), one epoch of
//! that CNN on MNIST took 19–24 s with the optimizer on subnormals and 7.6–11.7 s with them
//! flushed (2 runs each, interleaved). TensorFlow runs its CPU kernels with subnormals flushed
//! for the same reason; the optimizer rules here do so too (`optim`), and nothing else does: a
//! GEMM caller gets IEEE arithmetic.
//!
//! x86-64: MXCSR's flush-to-zero (results) and denormals-are-zero (inputs) bits; AArch64:
//! FPCR.FZ (both). Elsewhere the guard does nothing. The mode is restored when the guard drops,
//! also when unwinding.

/// While alive, this thread's f32 arithmetic treats subnormal inputs and results as zero.
pub(crate) struct FlushSubnormals {
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    saved: Control,
}

#[cfg(target_arch = "x86_64")]
type Control = u32;
#[cfg(target_arch = "aarch64")]
type Control = u64;

/// MXCSR: FTZ (bit 15) and DAZ (bit 6).
#[cfg(target_arch = "x86_64")]
const FLUSH_BITS: Control = 1 << 15 | 1 << 6;
/// FPCR: FZ (bit 24).
#[cfg(target_arch = "aarch64")]
const FLUSH_BITS: Control = 1 << 24;

#[cfg(target_arch = "x86_64")]
fn read() -> Control {
    let mut csr: Control = 0;
    // SAFETY: STMXCSR stores the 32-bit control register to the valid, aligned `csr`; every
    // x86-64 CPU has SSE.
    unsafe {
        std::arch::asm!("stmxcsr [{}]", in(reg) &mut csr, options(nostack, preserves_flags));
    }
    csr
}

#[cfg(target_arch = "x86_64")]
fn write(csr: Control) {
    // SAFETY: LDMXCSR loads from the valid, aligned `csr`, a value read from MXCSR with at most
    // FTZ and DAZ added (both defined on every x86-64 CPU, so no reserved bit is set). Not
    // marked `nomem`, so memory accesses do not move across it.
    unsafe {
        std::arch::asm!("ldmxcsr [{}]", in(reg) &csr, options(nostack, preserves_flags, readonly));
    }
}

#[cfg(target_arch = "aarch64")]
fn read() -> Control {
    let fpcr: Control;
    // SAFETY: reading FPCR is allowed at EL0 and has no side effect.
    unsafe {
        std::arch::asm!("mrs {}, fpcr", out(reg) fpcr, options(nomem, nostack, preserves_flags));
    }
    fpcr
}

#[cfg(target_arch = "aarch64")]
fn write(fpcr: Control) {
    // SAFETY: FPCR is writable at EL0; the value is one read from it with at most FZ added.
    // Not marked `nomem`, so memory accesses do not move across it.
    unsafe {
        std::arch::asm!("msr fpcr, {}", in(reg) fpcr, options(nostack, preserves_flags));
    }
}

impl FlushSubnormals {
    pub(crate) fn new() -> Self {
        #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
        {
            let saved = read();
            if saved & FLUSH_BITS != FLUSH_BITS {
                write(saved | FLUSH_BITS);
            }
            FlushSubnormals { saved }
        }
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        FlushSubnormals {}
    }
}

impl Drop for FlushSubnormals {
    fn drop(&mut self) {
        #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
        if self.saved & FLUSH_BITS != FLUSH_BITS {
            write(self.saved);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::FlushSubnormals;

    /// Half the smallest normal f32, formed at run time so that no constant folding sees it.
    fn halve(x: f32) -> f32 {
        std::hint::black_box(x) * std::hint::black_box(0.5)
    }

    #[test]
    fn subnormals_are_zero_inside_the_guard_and_back_after_it() {
        let tiny = f32::MIN_POSITIVE;
        assert!(halve(tiny) > 0.0, "IEEE arithmetic before the guard");
        {
            let _flush = FlushSubnormals::new();
            #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
            assert_eq!(halve(tiny), 0.0, "a subnormal result is flushed");
            {
                let _nested = FlushSubnormals::new();
            }
            #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
            assert_eq!(
                halve(tiny),
                0.0,
                "a nested guard leaves the mode as it found it"
            );
        }
        assert_eq!(
            halve(tiny),
            tiny / 2.0,
            "IEEE arithmetic again after the guard"
        );
    }

    #[test]
    fn the_mode_is_restored_when_unwinding() {
        let _ = std::panic::catch_unwind(|| {
            let _flush = FlushSubnormals::new();
            panic!("inside the guard");
        });
        assert!(halve(f32::MIN_POSITIVE) > 0.0);
    }
}
