//! The peer wrappers the report measures give correct products (against the f64 reference),
//! and refuse what they cannot do with an error.

use bench_peers::Libxsmm;
use kernels::{reference, MatMut, MatRef};

fn values(n: usize, seed: u64) -> Vec<f32> {
    bench_suite::gemm_bench::filled(n, seed)
}

#[test]
fn libxsmm_matches_the_reference_where_the_build_has_it() {
    let xsmm = match Libxsmm::get() {
        Ok(x) => x,
        Err(why) => {
            // Builds without the library say so, and nothing else depends on it.
            assert!(why.contains("LIBXSMM"), "{why}");
            return;
        }
    };
    assert!(!xsmm.target().is_empty());
    for (s, &(m, k, n)) in [
        (1, 1, 1),
        (16, 16, 16),
        (13, 27, 40),
        (64, 64, 64),
        (5, 1, 3),
    ]
    .iter()
    .enumerate()
    {
        let (a, b) = (values(m * k, s as u64), values(k * n, 100 + s as u64));
        // Padded leading dimensions, and beta = 1 onto a non-zero C.
        let (lda, ldb, ldc) = (k + 1, n + 2, n + 3);
        let pad = |x: &[f32], rows: usize, cols: usize, ld: usize| {
            let mut out = vec![f32::NAN; rows * ld];
            for i in 0..rows {
                out[i * ld..i * ld + cols].copy_from_slice(&x[i * cols..(i + 1) * cols]);
            }
            out
        };
        let (ap, bp) = (pad(&a, m, k, lda), pad(&b, k, n, ldb));
        let c0 = values(m * ldc, 200 + s as u64);
        for beta in [0.0, 1.0] {
            let av = MatRef::row_major(&ap, m, k, lda);
            let bv = MatRef::row_major(&bp, k, n, ldb);
            let mut ours = c0.clone();
            xsmm.gemm(1.0, av, bv, beta, MatMut::row_major(&mut ours, m, n, ldc))
                .unwrap();
            let mut want = c0.clone();
            reference::gemm(1.0, av, bv, beta, MatMut::row_major(&mut want, m, n, ldc)).unwrap();
            let bound =
                reference::gemm_error_bound(1.0, av, bv, beta, MatRef::row_major(&c0, m, n, ldc));
            for i in 0..m {
                for j in 0..n {
                    let (got, exp) = (ours[i * ldc + j], want[i * ldc + j]);
                    assert!(
                        ((got - exp) as f64).abs() <= bound[i * n + j],
                        "{m}×{k}×{n} beta {beta}: C[{i},{j}] = {got}, reference {exp}"
                    );
                }
                // Padding of C untouched.
                for j in n..ldc {
                    assert_eq!(ours[i * ldc + j].to_bits(), c0[i * ldc + j].to_bits());
                }
            }
        }
    }
    // What LIBXSMM's kernels do not take is an error, not a wrong answer.
    let (a, b) = (values(4, 1), values(4, 2));
    let mut c = vec![0.0; 4];
    let err = xsmm
        .gemm(
            2.0,
            MatRef::row_major(&a, 2, 2, 2),
            MatRef::row_major(&b, 2, 2, 2),
            0.0,
            MatMut::row_major(&mut c, 2, 2, 2),
        )
        .unwrap_err();
    assert!(err.to_string().contains("alpha"), "{err}");
    let err = xsmm
        .gemm(
            1.0,
            MatRef::row_major(&a, 2, 2, 2).t(),
            MatRef::row_major(&b, 2, 2, 2),
            0.0,
            MatMut::row_major(&mut c, 2, 2, 2),
        )
        .unwrap_err();
    assert!(err.to_string().contains("row-major"), "{err}");
}
