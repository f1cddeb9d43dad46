//! AVX2 + FMA microkernels: tiles of `MR × 8·NV` 256-bit accumulators, the generic body of
//! [`super::tile`] compiled for AVX2. The registered shapes keep accumulators + B vectors + one
//! broadcast within the 16 ymm registers (6 × 16 is the classic Haswell shape). Edge columns
//! use `vmaskmov` loads and stores, which never touch masked-out lanes.

microkernels!(std::arch::x86_64::__m256, "avx2,fma", "AVX2 and FMA");
