//! AVX-512F microkernels: tiles of `MR × 16·NV` 512-bit accumulators, the generic body of
//! [`super::tile`] compiled for AVX-512. The shapes registered in [`crate::gemm::config`] keep
//! accumulators + B vectors + one broadcast within the 32 zmm registers.

microkernels!(std::arch::x86_64::__m512, "avx512f", "AVX-512F");
