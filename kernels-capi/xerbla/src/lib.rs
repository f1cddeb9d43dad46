//! The default BLAS error handlers of `kernels-capi`. They live in a crate of their own so that
//! in the static library they are archive members of their own: a program that defines its own
//! `xerbla_` or `cblas_xerbla` (as the reference BLAS allows) gets its own and the linker never
//! pulls these in. In the shared library they are exported, and the C interface looks the
//! handler up through the dynamic linker, so a program's own definition comes first there too.

#![deny(clippy::undocumented_unsafe_blocks, unsafe_op_in_unsafe_fn)]

use std::ffi::{c_char, c_int, CStr};

/// The reference XERBLA: prints which argument of which routine was bad, then stops the
/// program, as the reference BLAS does.
///
/// # Safety
/// `srname` points to `srname_len` characters and `info` to an integer (gfortran's convention).
#[no_mangle]
pub unsafe extern "C" fn xerbla_(srname: *const c_char, info: *const c_int, srname_len: usize) {
    // SAFETY: the caller's contract above.
    let (name, info) = unsafe {
        (
            std::slice::from_raw_parts(srname.cast::<u8>(), srname_len),
            *info,
        )
    };
    let name = String::from_utf8_lossy(name);
    println!(
        " ** On entry to {} parameter number {info:2} had an illegal value",
        name.trim_end()
    );
    std::process::exit(1);
}

/// The reference CBLAS's cblas_xerbla (its trailing format arguments are not used here).
///
/// # Safety
/// `rout` and `form` are NUL-terminated strings.
#[no_mangle]
pub unsafe extern "C" fn cblas_xerbla(p: c_int, rout: *const c_char, form: *const c_char) {
    // SAFETY: the caller's contract above.
    let (rout, form) = unsafe { (CStr::from_ptr(rout), CStr::from_ptr(form)) };
    if p != 0 {
        eprintln!(
            "Parameter {p} to routine {} was incorrect",
            rout.to_string_lossy()
        );
    }
    eprint!("{}", form.to_string_lossy());
    // SAFETY: exit with the reference's status; no Rust state needs unwinding.
    unsafe { libc::exit(-1) };
}
