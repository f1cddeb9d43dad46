//! f32 compute kernels for CPU deep-learning training.
//!
//! The centre is [`gemm`]: a BLIS-style matrix product (packing, cache blocking, register-tiled
//! microkernels) whose microkernel is chosen at run time from the CPU's features — AVX-512,
//! AVX2+FMA, NEON or portable scalar — with the system OpenBLAS as a backend to ask for instead
//! of our driver (cargo feature `openblas`). See `ARCHITECTURE.md` for the map.
//!
//! * Choose or inspect the path: [`Isa::best`], [`Isa::active`], the `KERNELS_ISA` environment
//!   variable, or [`ExecOptions::isa`] per call; the backend likewise ([`Backend::active`],
//!   `KERNELS_BACKEND`, [`ExecOptions::backend`]).
//! * Threads come from the rayon pool the call runs in; results are bit-identical for every
//!   thread count (K is never split).
//! * Every argument is checked; bad input is an [`Error`] naming the argument and the numbers.

#![deny(clippy::undocumented_unsafe_blocks, unsafe_op_in_unsafe_fn)]

pub mod activation;
mod arch;
mod backend;
pub mod conv;
pub mod conv_avg_pool;
pub mod conv_norm_pool;
pub mod conv_pool;
pub mod cpu;
mod dispatch;
mod error;
mod gather;
mod gemm;
mod mat;
pub mod math;
pub mod norm;
pub mod norm_pool;
pub mod optim;
pub mod owned;
pub mod pool;
mod process;
#[cfg(any(test, feature = "reference"))]
pub mod reference;
mod scratch;
mod shared;
mod subnormal;
mod team;
mod window;

pub use activation::Activation;
pub use backend::{Backend, BACKEND_ENV_VAR};
pub use conv::{conv2d_backward_input, conv2d_backward_weights, conv2d_forward, Conv2d, Padding};
pub use dispatch::{Isa, ISA_ENV_VAR};
pub use error::{Error, Result};
pub use gather::gather_rows;
pub use gemm::{
    gemm, gemm_blocking, gemm_fused, gemm_with, sgemm, Bias, ExecOptions, GemmPlan, Layout,
    Threading, TileBlocking, Transpose,
};
pub use mat::{check_product, MatLayout, MatMut, MatRef};
pub use pool::{
    avg_pool2d_backward, avg_pool2d_forward, max_pool2d_activation_backward, max_pool2d_backward,
    max_pool2d_forward, Pool2d,
};
pub use process::forked_child;
pub use scratch::{prepare_threads, scratch_generation};
pub use team::on_every_thread;

/// Asks for every cache line of `data` to be fetched into L2: a hint for data wanted soon,
/// such as the next batch's samples, scattered over a data set, while the current one is
/// computed. Never faults and changes nothing observable; nothing on other architectures.
pub fn prefetch_to_l2(data: &[f32]) {
    arch::prefetch_run_to_l2(data.as_ptr(), data.len());
}

#[cfg(test)]
mod prefetch_tests {
    /// A hint that reads nothing: any slice will do, the empty one too (no line before it is
    /// asked for, and no length underflows).
    #[test]
    fn prefetching_any_slice_is_harmless() {
        let data = vec![1.0f32; 1000];
        for range in [0..0, 0..1, 3..20, 17..1000] {
            super::prefetch_to_l2(&data[range]);
        }
        super::prefetch_to_l2(&[]);
        assert!(data.iter().all(|&v| v == 1.0));
    }
}
