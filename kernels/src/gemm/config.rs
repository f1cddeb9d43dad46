//! The register of GEMM microkernels and their cache block sizes: a few rows per instruction
//! set. The driver reads this table and never names an instruction set itself (BLIS's
//! `config/<arch>`).
//!
//! Each instruction set registers tiles of several widths, and [`kernel_config`] picks, per
//! product, the one that wastes least work on padding: a 9-column C (the im2col products of a
//! 3×3 convolution's weight gradient) would run a 48-wide tile at under a fifth of its speed.
//! `cost` is each tile's time per useful multiply-add relative to the widest one (the
//! broadcast-heavier narrow tiles issue more loads per FMA), measured on the bench-suite GEMM
//! group and rounded up.
//!
//! Block sizes follow the BLIS analysis for this project's machine kind (AMD EPYC, per core 48 KiB
//! L1d, 1 MiB L2, 32 MiB shared L3):
//! * `kc` = 512 for the SIMD tiles: every KC slice reads and writes all of C once more, and at
//!   large sizes that traffic (C does not fit in L2) costs more than serving the `kc × NR`
//!   micro-panel of B from L2 instead of L1 (16 bytes per cycle, well within L2's bandwidth).
//!   Measured on this machine kind with the report's `--shapes`: the 8 × 48 tile at 2048³ runs
//!   at 130 GFLOP/s with kc = 128, 157 with 256 and 186 with 512 (768 and 1024 no better); the
//!   AVX2 tiles were indifferent there.
//! * `kc` = 256 for the AVX2 tiles: AVX2-only CPUs mostly have a 32 KiB L1d (Zen 2/3, Intel
//!   before Ice Lake), which one 512-deep 16-wide micro-panel of B would fill on its own.
//!   Measured on a Zen 3 VM (report `--shapes`, 1 thread, ours ÷ OpenBLAS in the same run, two
//!   runs against one): 784×32×128 1.34–1.35 against 1.10, 128×784×512 0.83–0.91 against 0.77,
//!   32×784×128 0.92–0.93 against 0.86; square sizes alike.
//! * `mc`: the packed `mc × kc` block of A stays in L2 across the loop over B's micro-panels.
//! * `nc`: the packed `kc × nc` panel of B stays in the shared L3.
//!
//! `mc` is a multiple of MR and `nc` of NR, so a tile never straddles two blocks. `kc` also fixes
//! the order of the sum over K (one partial sum per `kc` block); it depends on the kernel only,
//! never on the thread count, so results are bit-identical however many threads run.

use crate::arch::{self, KernelFn};
use crate::Isa;

/// One microkernel and the block sizes the driver uses with it.
#[derive(Clone, Copy)]
pub(crate) struct KernelConfig {
    pub mr: usize,
    pub nr: usize,
    pub mc: usize,
    pub kc: usize,
    pub nc: usize,
    pub kernel: KernelFn,
    /// Whether the kernel can read B in place (row stride `rsb`, masked edge columns) instead
    /// of from a packed panel.
    pub direct_b: bool,
    /// Time per useful multiply-add relative to this instruction set's widest tile.
    pub cost: f64,
}

/// The common block sizes for a tile of `mr × nr`.
const fn blocked(
    mr: usize,
    nr: usize,
    kernel: KernelFn,
    direct_b: bool,
    cost: f64,
) -> KernelConfig {
    KernelConfig {
        mr,
        nr,
        mc: mr * (240 / mr),
        kc: 512,
        nc: nr * (4096 / nr),
        kernel,
        direct_b,
        cost,
    }
}

const SCALAR: [KernelConfig; 1] = [KernelConfig {
    kc: 256,
    ..blocked(
        arch::scalar::MR,
        arch::scalar::NR,
        arch::scalar::kernel,
        false,
        1.0,
    )
}];

#[cfg(target_arch = "x86_64")]
const AVX2: [KernelConfig; 2] = [
    KernelConfig {
        kc: 256,
        ..blocked(6, 16, arch::avx2::kernel::<6, 2>, true, 1.0)
    },
    KernelConfig {
        kc: 256,
        ..blocked(12, 8, arch::avx2::kernel::<12, 1>, true, 1.15)
    },
];

#[cfg(target_arch = "x86_64")]
const AVX512: [KernelConfig; 4] = [
    blocked(8, 48, arch::avx512::kernel::<8, 3>, true, 1.0),
    blocked(12, 32, arch::avx512::kernel::<12, 2>, true, 1.05),
    // 9 rows: a 3×3 convolution's weight gradient has exactly 9 (one input channel).
    blocked(9, 32, arch::avx512::kernel::<9, 2>, true, 1.1),
    blocked(24, 16, arch::avx512::kernel::<24, 1>, true, 1.15),
];

#[cfg(target_arch = "aarch64")]
const NEON: [KernelConfig; 2] = [
    blocked(8, 12, arch::neon::kernel::<8, 3>, false, 1.0),
    blocked(12, 8, arch::neon::kernel::<12, 2>, false, 1.1),
];

/// Every tile registered for `isa` (empty for paths that do not use our driver).
pub(crate) fn kernels_of(isa: Isa) -> &'static [KernelConfig] {
    match isa {
        Isa::Scalar => &SCALAR,
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => &AVX2,
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => &AVX512,
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => &NEON,
        _ => &[],
    }
}

/// The tile of `isa` that computes an `m × n` C cheapest: least padded work times `cost`.
/// Depends on the shape only, so the choice (and the bits) are the same on every thread count.
/// `None` for paths that do not use our driver (OpenBLAS).
pub(crate) fn kernel_config(isa: Isa, m: usize, n: usize) -> Option<&'static KernelConfig> {
    let padded = |cfg: &KernelConfig| {
        (m.next_multiple_of(cfg.mr) * n.next_multiple_of(cfg.nr)) as f64 * cfg.cost
    };
    kernels_of(isa)
        .iter()
        .min_by(|x, y| padded(x).total_cmp(&padded(y)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_sizes_are_multiples_of_the_tile() {
        for isa in Isa::ALL {
            for cfg in kernels_of(isa) {
                assert_eq!(cfg.mc % cfg.mr, 0, "{isa}: mc");
                assert_eq!(cfg.nc % cfg.nr, 0, "{isa}: nc");
                assert!(
                    cfg.mr * cfg.nr <= crate::gemm::driver::MAX_TILE,
                    "{isa}: tile"
                );
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn narrow_products_get_narrow_tiles() {
        assert_eq!(kernel_config(Isa::Avx512, 1024, 1024).unwrap().nr, 48);
        assert_eq!(kernel_config(Isa::Avx512, 21632, 9).unwrap().nr, 16);
        assert_eq!(kernel_config(Isa::Avx512, 9, 32).unwrap().mr, 9);
        assert_eq!(kernel_config(Isa::Avx2, 21632, 9).unwrap().nr, 16);
        assert_eq!(kernel_config(Isa::Avx2, 5000, 8).unwrap().nr, 8);
    }
}
