//! Every argument error of the GEMM API is an `Err` with a message naming the argument and the
//! numbers, and nothing is written to C.

use kernels::{gemm, gemm_with, sgemm, ExecOptions, Isa, Layout, MatMut, MatRef, Transpose};

fn err(r: kernels::Result<()>) -> String {
    r.unwrap_err().to_string()
}

#[test]
fn short_buffers_name_the_matrix() {
    let a = [0.0f32; 11];
    let b = [0.0f32; 12];
    let mut c = [7.0f32; 9];
    let msg = err(gemm(
        1.0,
        MatRef::row_major(&a, 3, 4, 4),
        MatRef::row_major(&b, 4, 3, 3),
        0.0,
        MatMut::row_major(&mut c, 3, 3, 3),
    ));
    assert_eq!(
        msg,
        "matrix A (3×4, row stride 4, column stride 1) needs a buffer of at least 12 elements, \
         but the buffer has 11"
    );
    let a = [0.0f32; 12];
    let msg = err(gemm(
        1.0,
        MatRef::row_major(&a, 3, 4, 4),
        MatRef::row_major(&b, 4, 3, 3).t().t(),
        0.0,
        MatMut::row_major(&mut c, 3, 3, 4),
    ));
    assert_eq!(
        msg,
        "matrix C (3×3, row stride 4, column stride 1) needs a buffer of at least 11 elements, \
         but the buffer has 9"
    );
    let msg = err(gemm(
        1.0,
        MatRef::row_major(&a, 3, 4, 4),
        MatRef::col_major(&b, 4, 3, 5),
        0.0,
        MatMut::row_major(&mut c, 3, 3, 3),
    ));
    assert!(
        msg.starts_with(
            "matrix B (4×3, row stride 1, column stride 5) needs a buffer of at least 14"
        ),
        "{msg}"
    );
    assert!(
        c.iter().all(|&x| x == 7.0),
        "C was written despite the error"
    );
}

#[test]
fn shape_mismatches_name_both_shapes() {
    let a = [0.0f32; 12];
    let b = [0.0f32; 12];
    let mut c = [0.0f32; 16];
    let msg = err(gemm(
        1.0,
        MatRef::row_major(&a, 3, 4, 4),
        MatRef::row_major(&b, 3, 4, 4),
        0.0,
        MatMut::row_major(&mut c, 3, 4, 4),
    ));
    assert_eq!(msg, "inner dimensions of A·B: A is 3×4 but B is 3×4");
    let msg = err(gemm(
        1.0,
        MatRef::row_major(&a, 3, 4, 4),
        MatRef::row_major(&b, 4, 3, 3),
        0.0,
        MatMut::row_major(&mut c, 4, 4, 4),
    ));
    assert_eq!(msg, "output C: C is 4×4 but A·B is 3×3");
}

#[test]
fn overlapping_output_strides_are_rejected() {
    let a = [1.0f32; 4];
    let mut c = [0.0f32; 8];
    let msg = err(gemm(
        1.0,
        MatRef::row_major(&a, 2, 2, 2),
        MatRef::row_major(&a, 2, 2, 2),
        0.0,
        MatMut::strided(&mut c, 2, 2, 1, 1),
    ));
    assert_eq!(
        msg,
        "matrix C (2×2) has strides (row 1, column 1) under which distinct elements overlap"
    );
}

#[test]
fn overflowing_views_are_rejected() {
    let a = [1.0f32; 4];
    let mut c = [0.0f32; 4];
    let msg = err(gemm(
        1.0,
        MatRef::strided(&a, usize::MAX, 2, usize::MAX, 1),
        MatRef::row_major(&a, 2, 2, 2),
        0.0,
        MatMut::row_major(&mut c, 2, 2, 2),
    ));
    assert!(
        msg.starts_with("matrix A: 18446744073709551615×2 with strides"),
        "{msg}"
    );
    assert!(msg.ends_with("overflows usize"), "{msg}");
}

#[test]
fn blas_leading_dimensions_follow_the_reference_rules() {
    let a = [0.0f32; 64];
    let mut c = [0.0f32; 64];
    let call = |layout, ta, lda, ldb, ldc, c: &mut [f32]| {
        sgemm(
            layout,
            ta,
            Transpose::No,
            3,
            5,
            4,
            1.0,
            &a,
            lda,
            &a,
            ldb,
            0.0,
            c,
            ldc,
        )
    };
    assert_eq!(
        err(call(Layout::RowMajor, Transpose::No, 3, 5, 5, &mut c)),
        "leading dimension lda = 3 is too small: it must be at least 4"
    );
    assert_eq!(
        err(call(Layout::RowMajor, Transpose::Yes, 2, 5, 5, &mut c)),
        "leading dimension lda = 2 is too small: it must be at least 3"
    );
    assert_eq!(
        err(call(Layout::ColMajor, Transpose::No, 3, 3, 3, &mut c)),
        "leading dimension ldb = 3 is too small: it must be at least 4"
    );
    assert_eq!(
        err(call(Layout::ColMajor, Transpose::No, 3, 4, 2, &mut c)),
        "leading dimension ldc = 2 is too small: it must be at least 3"
    );
    assert_eq!(
        call(Layout::ColMajor, Transpose::No, 3, 4, 3, &mut c),
        Ok(())
    );
}

#[test]
fn unavailable_or_unbuilt_paths_are_errors() {
    let a = [1.0f32; 4];
    let mut c = [0.0f32; 4];
    for isa in Isa::ALL {
        let r = gemm_with(
            &ExecOptions::with_isa(isa),
            1.0,
            MatRef::row_major(&a, 2, 2, 2),
            MatRef::row_major(&a, 2, 2, 2),
            0.0,
            MatMut::row_major(&mut c, 2, 2, 2),
        );
        match isa.check_available() {
            Ok(()) => assert_eq!(r, Ok(()), "{isa}"),
            Err(e) => {
                let msg = e.to_string();
                assert!(
                    msg.starts_with(&format!("instruction-set path {isa} is not available: ")),
                    "{msg}"
                );
                assert_eq!(r.unwrap_err().to_string(), msg);
            }
        }
    }
}
