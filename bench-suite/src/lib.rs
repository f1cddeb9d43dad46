//! Shared measurement code for the criterion benchmarks and the `report` program: the shapes we
//! benchmark, the libraries we compare (ours per forced path, OpenBLAS, `matrixmultiply`, the
//! `gemm` crate, BLIS), a timer that interleaves them so each ratio comes from one run, the
//! training comparison against Keras, PyTorch and burn, and the report's files and charts.

pub mod distributed;
pub mod gemm_bench;
pub mod layers_bench;
pub mod machine;
pub mod peers;
pub mod plots;
pub mod programs;
pub mod readme;
pub mod report;
pub mod targets;
pub mod timing;
pub mod training;
