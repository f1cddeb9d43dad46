//! Shared measurement code for the criterion benchmarks and the `report` program: the shapes we
//! benchmark, the libraries we compare (ours per forced path, OpenBLAS, `matrixmultiply`, the
//! `gemm` crate), and a timer that interleaves them so each ratio comes from one run.

pub mod gemm_bench;
pub mod report;
pub mod timing;
