//! The register of GEMM microkernels and their cache block sizes: one row per instruction set.
//! The driver reads this table and never names an instruction set itself (BLIS's `config/<arch>`).
//!
//! Block sizes follow the BLIS analysis for this project's machine kind (AMD EPYC, per core 48 KiB
//! L1d, 1 MiB L2, 32 MiB shared L3):
//! * `kc`: a `kc × NR` micro-panel of B stays in L1 while the micro-panels of A stream past it,
//!   so `kc·NR·4` bytes take about half of L1, leaving room for the A micro-panel and C.
//! * `mc`: the packed `mc × kc` block of A stays in L2 (about a third of it) across the loop
//!   over B's micro-panels.
//! * `nc`: the packed `kc × nc` panel of B stays in the shared L3.
//!
//! `mc` is a multiple of MR and `nc` of NR, so a tile never straddles two blocks. `kc` also fixes
//! the order of the sum over K (one partial sum per `kc` block), so it is the same for every thread
//! count: results are bit-identical however many threads run.

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
}

const SCALAR: KernelConfig = KernelConfig {
    mr: arch::scalar::MR,
    nr: arch::scalar::NR,
    mc: 128,
    kc: 256,
    nc: 4096,
    kernel: arch::scalar::kernel,
};

#[cfg(target_arch = "x86_64")]
const AVX2: KernelConfig = KernelConfig {
    mr: arch::avx2::MR,
    nr: arch::avx2::NR,
    mc: 240,
    kc: 256,
    nc: 4096,
    kernel: arch::avx2::kernel,
};

#[cfg(target_arch = "x86_64")]
const AVX512: KernelConfig = KernelConfig {
    mr: arch::avx512::MR,
    nr: arch::avx512::NR,
    mc: 240,
    kc: 256,
    nc: 4096,
    kernel: arch::avx512::kernel,
};

/// The blocked-driver configuration of `isa`, or `None` for paths that do not use our driver
/// (OpenBLAS) or do not exist on this target. Callers check availability first.
pub(crate) fn kernel_config(isa: Isa) -> Option<&'static KernelConfig> {
    match isa {
        Isa::Scalar => Some(&SCALAR),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => Some(&AVX2),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => Some(&AVX512),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_sizes_are_multiples_of_the_tile() {
        for isa in Isa::ALL {
            if let Some(cfg) = kernel_config(isa) {
                assert_eq!(cfg.mc % cfg.mr, 0, "{isa}: mc");
                assert_eq!(cfg.nc % cfg.nr, 0, "{isa}: nc");
                assert!(
                    cfg.mr * cfg.nr <= crate::gemm::driver::MAX_TILE,
                    "{isa}: tile"
                );
            }
        }
    }
}
