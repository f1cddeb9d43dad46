//! The standard BLAS interface to our GEMM, for C, C++ and Fortran programs: a shared library
//! (`libkernels_capi.so`) and a static one (`libkernels_capi.a`) exporting
//!
//! * `cblas_sgemm` — CBLAS, row- and column-major, every transpose (header: `include/kernels_cblas.h`);
//! * `sgemm_` — the Fortran 77 BLAS symbol as gfortran calls it (arguments by reference, the two
//!   hidden `size_t` lengths of the character arguments last).
//!
//! Both keep the reference BLAS's contract: arguments are checked in the reference order and the
//! first bad one is reported by position through `xerbla_` (Fortran) or `cblas_xerbla` (CBLAS),
//! which a program may define itself, as with the reference BLAS; quick returns for M = 0,
//! N = 0, and alpha = 0 or K = 0 with beta = 1; beta = 0 never reads C.
//!
//! The product runs on this crate's dispatched kernels (`KERNELS_ISA` applies), never on
//! OpenBLAS, whatever `KERNELS_BACKEND` says: standing in for the system BLAS, forwarding to it could call back into this library.

#![deny(clippy::undocumented_unsafe_blocks, unsafe_op_in_unsafe_fn)]

use std::ffi::{c_char, c_int, CStr};

use kernels::{gemm_with, Backend, ExecOptions, Isa, MatMut, MatRef};

// CBLAS enumerations (cblas.h).
pub const CBLAS_ROW_MAJOR: c_int = 101;
pub const CBLAS_COL_MAJOR: c_int = 102;
pub const CBLAS_NO_TRANS: c_int = 111;
pub const CBLAS_TRANS: c_int = 112;
pub const CBLAS_CONJ_TRANS: c_int = 113;

use kernels_capi_xerbla::{cblas_xerbla, xerbla_};

type XerblaFn = unsafe extern "C" fn(*const c_char, *const c_int, usize);
type CblasXerblaFn = unsafe extern "C" fn(c_int, *const c_char, *const c_char, ...);

/// The handler named `name` as the dynamic linker resolves it: the program's own if it defines
/// one, else the first loaded library's (ours, when we are a shared library). `None` when the
/// program is statically linked without exporting symbols: then the static linker already chose
/// (the program's own, or our default archive member).
fn lookup(name: &CStr) -> Option<*mut libc::c_void> {
    // SAFETY: dlsym with RTLD_DEFAULT and a NUL-terminated name only reads the symbol tables.
    let sym = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
    (!sym.is_null()).then_some(sym)
}

/// Reports bad argument number `info` of the Fortran routine `name` (6 characters, blank padded).
fn report_f77(name: &[u8; 6], info: c_int) {
    let handler: XerblaFn = match lookup(c"xerbla_") {
        // SAFETY: a symbol named xerbla_ has the reference XERBLA's C signature.
        Some(sym) => unsafe { std::mem::transmute::<*mut libc::c_void, XerblaFn>(sym) },
        None => xerbla_,
    };
    // SAFETY: `name` holds 6 characters, passed with their length as gfortran does.
    unsafe { handler(name.as_ptr().cast(), &info, name.len()) };
}

/// Reports bad argument number `p` of `cblas_sgemm`.
fn report_cblas(p: c_int, message: &CStr) {
    let rout = c"cblas_sgemm";
    match lookup(c"cblas_xerbla") {
        // SAFETY: a symbol named cblas_xerbla has the reference CBLAS signature (variadic); both
        // strings are NUL-terminated and the format has no conversions.
        Some(sym) => unsafe {
            let handler = std::mem::transmute::<*mut libc::c_void, CblasXerblaFn>(sym);
            handler(p, rout.as_ptr(), message.as_ptr())
        },
        // SAFETY: as above, for our default.
        None => unsafe { cblas_xerbla(p, rout.as_ptr(), message.as_ptr()) },
    }
}

/// Our own fastest path, or the one `KERNELS_ISA` forces (an unknown or unavailable one: the
/// fastest, since a BLAS call has no way to report it).
fn isa() -> Isa {
    Isa::active().unwrap_or_else(|_| Isa::best())
}

/// op(A) is `m × k` and op(B) `k × n`, stored column-major with leading dimensions: the
/// Fortran view. Arguments are already checked; `a`, `b`, `c` are valid for the extents below.
///
/// # Safety
/// The pointers address the column-major matrices the dimensions and leading dimensions
/// describe (the caller's side of the BLAS contract). `c` may overlap `a` or `b` (which BLAS
/// forbids): the overlapped operand is then read from a copy.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_col_major(
    trans_a: bool,
    trans_b: bool,
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: *const f32,
    lda: usize,
    b: *const f32,
    ldb: usize,
    beta: f32,
    c: *mut f32,
    ldc: usize,
) {
    // Quick returns, as the reference: nothing to do, and A, B (and C) must not be touched.
    if m == 0 || n == 0 || ((alpha == 0.0 || k == 0) && beta == 1.0) {
        return;
    }
    let (ar, ac) = if trans_a { (k, m) } else { (m, k) };
    let (br, bc) = if trans_b { (n, k) } else { (k, n) };
    // Column-major r × c with leading dimension ld spans (c − 1)·ld + r elements.
    let span = |r: usize, c: usize, ld: usize| {
        if r == 0 || c == 0 {
            0
        } else {
            (c - 1) * ld + r
        }
    };
    let reads_ab = alpha != 0.0 && k != 0;
    let (a_len, b_len) = if reads_ab {
        (span(ar, ac, lda), span(br, bc, ldb))
    } else {
        (0, 0)
    };
    let c_len = span(m, n, ldc);
    // BLAS forbids C to overlap A or B, and the reference then returns garbage; one range check
    // each finds it, and a copy of the operand C overlaps gives the product as written.
    let overlaps_c = |p: *const f32, len: usize| {
        let (p, q) = (p as usize, c as usize);
        let size = std::mem::size_of::<f32>();
        len > 0 && p < q + c_len * size && q < p + len * size
    };
    // SAFETY: the caller guarantees these extents (the BLAS contract: lda ≥ rows, and so on);
    // each copy's source slice is dropped before C's mutable slice is formed.
    let (a_copy, b_copy) = unsafe {
        (
            overlaps_c(a, a_len).then(|| std::slice::from_raw_parts(a, a_len).to_vec()),
            overlaps_c(b, b_len).then(|| std::slice::from_raw_parts(b, b_len).to_vec()),
        )
    };
    // SAFETY: as above; A and B are read through these slices only where they do not overlap C
    // (otherwise through the copies).
    let (a, b, c) = unsafe {
        (
            match &a_copy {
                Some(copy) => &copy[..],
                None if a_len > 0 => std::slice::from_raw_parts(a, a_len),
                None => &[][..],
            },
            match &b_copy {
                Some(copy) => &copy[..],
                None if b_len > 0 => std::slice::from_raw_parts(b, b_len),
                None => &[][..],
            },
            std::slice::from_raw_parts_mut(c, c_len),
        )
    };
    let view = |data, r, c, ld, t: bool| {
        let v = MatRef::col_major(data, r, c, ld);
        if t {
            v.t()
        } else {
            v
        }
    };
    let (av, bv) = if reads_ab {
        (view(a, ar, ac, lda, trans_a), view(b, br, bc, ldb, trans_b))
    } else {
        // alpha = 0 or k = 0: A and B are not read; empty k-dimension views say so.
        (
            MatRef::col_major(&[], m, 0, 1),
            MatRef::col_major(&[], 0, n, 1),
        )
    };
    // Our own driver whatever `KERNELS_BACKEND` says (see the module documentation).
    let opts = ExecOptions {
        backend: Some(Backend::Native),
        ..ExecOptions::with_isa(isa())
    };
    // The checks above are the BLAS's; the views satisfy the checked API's by construction, so
    // this cannot fail, and a BLAS routine has no error return: a failure would be our bug.
    gemm_with(&opts, alpha, av, bv, beta, MatMut::col_major(c, m, n, ldc))
        .expect("BLAS arguments already checked");
}

fn transpose_flag(t: u8) -> Option<bool> {
    match t.to_ascii_uppercase() {
        b'N' => Some(false),
        b'T' | b'C' => Some(true),
        _ => None,
    }
}

/// Fortran 77 `SGEMM(TRANSA, TRANSB, M, N, K, ALPHA, A, LDA, B, LDB, BETA, C, LDC)`, as gfortran
/// calls it: every argument by reference, then the hidden lengths of TRANSA and TRANSB.
///
/// # Safety
/// The reference BLAS's contract: valid pointers to the arguments, and matrices of the extents
/// the (valid) arguments describe.
#[no_mangle]
pub unsafe extern "C" fn sgemm_(
    transa: *const c_char,
    transb: *const c_char,
    m: *const c_int,
    n: *const c_int,
    k: *const c_int,
    alpha: *const f32,
    a: *const f32,
    lda: *const c_int,
    b: *const f32,
    ldb: *const c_int,
    beta: *const f32,
    c: *mut f32,
    ldc: *const c_int,
    _transa_len: usize,
    _transb_len: usize,
) {
    no_unwind("SGEMM", || {
        // SAFETY: the caller passes valid pointers to each scalar argument.
        let (ta, tb, m, n, k, alpha, lda, ldb, beta, ldc) = unsafe {
            (
                *transa.cast::<u8>(),
                *transb.cast::<u8>(),
                *m,
                *n,
                *k,
                *alpha,
                *lda,
                *ldb,
                *beta,
                *ldc,
            )
        };
        let (ta, tb) = (transpose_flag(ta), transpose_flag(tb));
        let nrowa = if ta == Some(true) { k } else { m };
        let nrowb = if tb == Some(true) { n } else { k };
        // The reference order of the checks, and the argument positions it reports.
        let info = if ta.is_none() {
            1
        } else if tb.is_none() {
            2
        } else if m < 0 {
            3
        } else if n < 0 {
            4
        } else if k < 0 {
            5
        } else if lda < nrowa.max(1) {
            8
        } else if ldb < nrowb.max(1) {
            10
        } else if ldc < m.max(1) {
            13
        } else {
            0
        };
        if info != 0 {
            report_f77(b"SGEMM ", info);
            return;
        }
        // SAFETY: the arguments passed the reference checks; the caller guarantees the matrices.
        unsafe {
            gemm_col_major(
                ta == Some(true),
                tb == Some(true),
                m as usize,
                n as usize,
                k as usize,
                alpha,
                a,
                lda as usize,
                b,
                ldb as usize,
                beta,
                c,
                ldc as usize,
            )
        };
    })
}

/// CBLAS `cblas_sgemm`: C ← alpha·op(A)·op(B) + beta·C in `order` (`CblasRowMajor` = 101 or
/// `CblasColMajor` = 102), `trans` in {`CblasNoTrans` = 111, `CblasTrans` = 112,
/// `CblasConjTrans` = 113}.
///
/// # Safety
/// The CBLAS contract: matrices of the extents the (valid) arguments describe.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn cblas_sgemm(
    order: c_int,
    trans_a: c_int,
    trans_b: c_int,
    m: c_int,
    n: c_int,
    k: c_int,
    alpha: f32,
    a: *const f32,
    lda: c_int,
    b: *const f32,
    ldb: c_int,
    beta: f32,
    c: *mut f32,
    ldc: c_int,
) {
    no_unwind("cblas_sgemm", || {
        let flag = |t| match t {
            CBLAS_NO_TRANS => Some(false),
            CBLAS_TRANS | CBLAS_CONJ_TRANS => Some(true),
            _ => None,
        };
        let (ta, tb) = (flag(trans_a), flag(trans_b));
        let row_major = order == CBLAS_ROW_MAJOR;
        // Stored rows of A and B and C in the caller's layout decide the leading-dimension minima.
        let (a_rows, a_cols) = if ta == Some(true) { (k, m) } else { (m, k) };
        let (b_rows, b_cols) = if tb == Some(true) { (n, k) } else { (k, n) };
        let min_ld = |rows: c_int, cols: c_int| if row_major { cols.max(1) } else { rows.max(1) };
        // Positions in cblas_sgemm's own argument list, checked in the reference order.
        let (p, what) = if order != CBLAS_ROW_MAJOR && order != CBLAS_COL_MAJOR {
            (1, c"Illegal Order setting\n")
        } else if ta.is_none() {
            (2, c"Illegal TransA setting\n")
        } else if tb.is_none() {
            (3, c"Illegal TransB setting\n")
        } else if m < 0 {
            (4, c"")
        } else if n < 0 {
            (5, c"")
        } else if k < 0 {
            (6, c"")
        } else if lda < min_ld(a_rows, a_cols) {
            (9, c"")
        } else if ldb < min_ld(b_rows, b_cols) {
            (11, c"")
        } else if ldc < min_ld(m, n) {
            (14, c"")
        } else {
            (0, c"")
        };
        if p != 0 {
            report_cblas(p, what);
            return;
        }
        let (ta, tb) = (ta == Some(true), tb == Some(true));
        let (m, n, k) = (m as usize, n as usize, k as usize);
        let (lda, ldb, ldc) = (lda as usize, ldb as usize, ldc as usize);
        // SAFETY: checked arguments; the caller guarantees the matrices (CBLAS contract).
        unsafe {
            if row_major {
                // Row-major C = op(A)·op(B) is column-major Cᵀ = op(B)ᵀ·op(A)ᵀ.
                gemm_col_major(tb, ta, n, m, k, alpha, b, ldb, a, lda, beta, c, ldc)
            } else {
                gemm_col_major(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
            }
        }
    })
}

/// Runs `body`, an exported routine's, so that no panic unwinds into the C caller (undefined
/// behaviour, and an abort of the whole program in Rust's own runtime): a panic — a bug of
/// ours, since every argument is checked first — is reported on stderr and the routine returns
/// (C is then undefined, as after any failed BLAS call).
fn no_unwind(routine: &str, body: impl FnOnce()) {
    if let Err(payload) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)) {
        use std::io::Write;
        let message = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("(no message)");
        let _ = writeln!(
            std::io::stderr(),
            "{routine}: internal error, the result is undefined: {message}"
        );
    }
}
