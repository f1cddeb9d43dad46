//! What the GEMM tests share: one product's case (shape, layouts, α, β, data seed, threading)
//! and its proptest strategy over the sides a test draws.

use kernels::Threading;
use proptest::prelude::*;

#[derive(Debug, Clone, Copy)]
pub struct Case {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub trans_a: bool,
    pub trans_b: bool,
    pub c_col_major: bool,
    /// Extra elements between rows (or columns) beyond the dense width.
    pub pad: usize,
    pub alpha: f32,
    pub beta: f32,
    pub seed: u64,
    pub threading: Threading,
}

/// α or β: 0 and ±1 (the BLAS rules' special values) or any in [−2, 2).
pub fn scalar_choice() -> impl Strategy<Value = f32> {
    prop_oneof![Just(0.0f32), Just(1.0), Just(-1.0), -2.0f32..2.0]
}

/// Cases with M, N and K drawn from `dim`, every layout, padding, α, β and threading.
pub fn case_of<S: Strategy<Value = usize>>(dim: fn() -> S) -> impl Strategy<Value = Case> {
    (
        (dim(), dim(), dim()),
        (any::<bool>(), any::<bool>(), any::<bool>()),
        prop_oneof![Just(0usize), 1usize..5],
        (scalar_choice(), scalar_choice()),
        any::<u64>(),
        prop_oneof![Just(Threading::Single), Just(Threading::Rayon)],
    )
        .prop_map(
            |((m, n, k), (ta, tb, ccm), pad, (alpha, beta), seed, threading)| Case {
                m,
                n,
                k,
                trans_a: ta,
                trans_b: tb,
                c_col_major: ccm,
                pad,
                alpha,
                beta,
                seed,
                threading,
            },
        )
}
