//! Any bytes as the arguments of `cblas_sgemm`: order, transposes, sizes, leading dimensions,
//! alpha, beta and the matrices' values. Valid arguments must give the product (checked against
//! a double-precision loop, C full of NaN when beta = 0, which must not be read); invalid ones
//! must report the first bad argument's position through `cblas_xerbla` and end the call as the
//! reference does (its default handler exits) without touching the matrices — the call runs in a
//! forked child with null matrix pointers, and the parent reads what the handler printed. (The
//! child's exit also runs libFuzzer's exit hook, which saves the input as a "crash" in the
//! artifact directory: only the run's own status says whether a check failed.)
//! (`unsafe` here: the FFI call and the POSIX calls around the child.)
#![no_main]

use std::ffi::c_int;

use kernels_capi::{cblas_sgemm, CBLAS_COL_MAJOR, CBLAS_ROW_MAJOR};
use libfuzzer_sys::fuzz_target;

struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn byte(&mut self) -> u8 {
        let (b, rest) = self.0.split_first().unwrap_or((&0, &[]));
        self.0 = rest;
        *b
    }
    fn f32(&mut self) -> f32 {
        f32::from_le_bytes([self.byte(), self.byte(), self.byte(), self.byte()])
    }
}

/// A value of a CBLAS enumeration: usually one of `valid`, sometimes any integer. (Invalid
/// arguments are kept rare: each costs a fork.)
fn enumeration(b: &mut Bytes, valid: &[c_int]) -> c_int {
    let x = b.byte();
    if x < 252 {
        valid[x as usize % valid.len()]
    } else {
        b.f32().to_bits() as c_int
    }
}

/// A size: usually 0..=24, sometimes negative.
fn size(b: &mut Bytes) -> c_int {
    let x = b.byte();
    if x < 252 {
        (x % 25) as c_int
    } else {
        -((x - 251) as c_int)
    }
}

/// A scalar: usually a small exact value, sometimes any bits (NaN, infinities).
fn scalar(b: &mut Bytes) -> f32 {
    let x = b.byte();
    if x < 240 {
        [0.0, 1.0, -1.0, 0.5, 2.0][x as usize % 5]
    } else {
        b.f32()
    }
}

fuzz_target!(|data: &[u8]| {
    let mut b = Bytes(data);
    let order = enumeration(&mut b, &[CBLAS_ROW_MAJOR, CBLAS_COL_MAJOR]);
    let ta = enumeration(&mut b, &[111, 112, 113]);
    let tb = enumeration(&mut b, &[111, 112, 113]);
    let (m, n, k) = (size(&mut b), size(&mut b), size(&mut b));
    // ld = minimum + 0..=4, or minimum − 1 (rarely).
    let delta = |x: u8| if x >= 250 { -1 } else { x as c_int % 5 };
    let (da, db, dc) = (delta(b.byte()), delta(b.byte()), delta(b.byte()));
    let (alpha, beta) = (scalar(&mut b), scalar(&mut b));
    let trans = |t: c_int| match t {
        111 => Some(false),
        112 | 113 => Some(true),
        _ => None,
    };
    let row = order == CBLAS_ROW_MAJOR;
    let (ta_t, tb_t) = (trans(ta), trans(tb));
    let (ar, ac) = if ta_t == Some(true) { (k, m) } else { (m, k) };
    let (br, bc) = if tb_t == Some(true) { (n, k) } else { (k, n) };
    let min_ld = |r: c_int, c: c_int| if row { c.max(1) } else { r.max(1) };
    let (lda, ldb, ldc) = (min_ld(ar, ac) + da, min_ld(br, bc) + db, min_ld(m, n) + dc);
    let expect = if order != CBLAS_ROW_MAJOR && order != CBLAS_COL_MAJOR {
        1
    } else if ta_t.is_none() {
        2
    } else if tb_t.is_none() {
        3
    } else if m < 0 {
        4
    } else if n < 0 {
        5
    } else if k < 0 {
        6
    } else if lda < min_ld(ar, ac) {
        9
    } else if ldb < min_ld(br, bc) {
        11
    } else if ldc < min_ld(m, n) {
        14
    } else {
        0
    };
    if expect != 0 {
        return invalid_call(order, ta, tb, m, n, k, alpha, lda, ldb, beta, ldc, expect);
    }
    let (m, n, k) = (m as usize, n as usize, k as usize);
    let (lda, ldb, ldc) = (lda as usize, ldb as usize, ldc as usize);
    // Element (i, j) of a stored matrix in this order.
    let at = |i: usize, j: usize, ld: usize| if row { i * ld + j } else { j * ld + i };
    let extent = |r: usize, c: usize, ld: usize| if row { r * ld } else { c * ld }.max(1);
    let (ar, ac, br, bc) = (ar as usize, ac as usize, br as usize, bc as usize);
    let mut a = vec![0.0f32; extent(ar, ac, lda)];
    let mut bm = vec![0.0f32; extent(br, bc, ldb)];
    for v in a.iter_mut().chain(bm.iter_mut()) {
        *v = (b.byte() % 17) as f32 / 8.0 - 1.0;
    }
    let mut c: Vec<f32> = (0..extent(m, n, ldc))
        .map(|_| {
            if beta == 0.0 {
                f32::NAN
            } else {
                (b.byte() % 9) as f32 / 4.0 - 1.0
            }
        })
        .collect();
    let c0 = c.clone();
    // SAFETY: valid arguments and matrices of exactly the extents they describe.
    unsafe {
        cblas_sgemm(
            order,
            ta,
            tb,
            m as c_int,
            n as c_int,
            k as c_int,
            alpha,
            a.as_ptr(),
            lda as c_int,
            bm.as_ptr(),
            ldb as c_int,
            beta,
            c.as_mut_ptr(),
            ldc as c_int,
        )
    };
    if !(alpha.is_finite() && beta.is_finite()) {
        return;
    }
    for i in 0..m {
        for j in 0..n {
            let mut want = if beta == 0.0 {
                0.0
            } else {
                beta as f64 * c0[at(i, j, ldc)] as f64
            };
            let mut scale = 1.0;
            if alpha != 0.0 {
                for p in 0..k {
                    let x = if ta_t == Some(true) {
                        a[at(p, i, lda)]
                    } else {
                        a[at(i, p, lda)]
                    };
                    let y = if tb_t == Some(true) {
                        bm[at(j, p, ldb)]
                    } else {
                        bm[at(p, j, ldb)]
                    };
                    want += alpha as f64 * x as f64 * y as f64;
                    scale += (alpha as f64 * x as f64 * y as f64).abs();
                }
            }
            let got = c[at(i, j, ldc)] as f64;
            let kept = if beta == 0.0 {
                0.0
            } else {
                beta as f64 * c0[at(i, j, ldc)] as f64
            };
            let tol = 1e-5 * (scale + kept.abs());
            if scale + kept.abs() > 1e30 {
                continue; // beyond f32's range: the f32 product may overflow where f64 does not
            }
            assert!((got - want).abs() <= tol, "C[{i},{j}] = {got}, want {want}");
        }
    }
});

/// Runs the call with null matrices in a forked child; the reference handler must report
/// argument `expect` and exit.
#[allow(clippy::too_many_arguments)]
fn invalid_call(
    order: c_int,
    ta: c_int,
    tb: c_int,
    m: c_int,
    n: c_int,
    k: c_int,
    alpha: f32,
    lda: c_int,
    ldb: c_int,
    beta: f32,
    ldc: c_int,
    expect: c_int,
) {
    let mut fds = [0; 2];
    // SAFETY: plain POSIX calls; the child only makes the call (which ends in the handler's
    // exit) and leaves with _exit otherwise; null matrices must not be touched.
    unsafe {
        assert_eq!(libc::pipe(fds.as_mut_ptr()), 0);
        let pid = libc::fork();
        if pid == 0 {
            libc::dup2(fds[1], 2);
            cblas_sgemm(
                order,
                ta,
                tb,
                m,
                n,
                k,
                alpha,
                std::ptr::null(),
                lda,
                std::ptr::null(),
                ldb,
                beta,
                std::ptr::null_mut(),
                ldc,
            );
            libc::_exit(0);
        }
        libc::close(fds[1]);
        let mut out = vec![0u8; 4096];
        let mut len = 0;
        loop {
            let r = libc::read(fds[0], out[len..].as_mut_ptr().cast(), out.len() - len);
            if r <= 0 {
                break;
            }
            len += r as usize;
        }
        libc::close(fds[0]);
        let mut status = 0;
        libc::waitpid(pid, &mut status, 0);
        let text = String::from_utf8_lossy(&out[..len]);
        // The reference handler exits with status 255; under libFuzzer its exit hook turns any
        // exit of the target into status 77. Either way: ended, not returned (status 0).
        assert!(
            libc::WIFEXITED(status) && [255, 77].contains(&libc::WEXITSTATUS(status)),
            "status {status}: {text}"
        );
        assert!(
            text.starts_with(&format!(
                "Parameter {expect} to routine cblas_sgemm was incorrect"
            )),
            "expected argument {expect}: {text}"
        );
    }
}
