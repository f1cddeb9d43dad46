//! For the benchmarks only (never a dependency of the library crates): safe, checked entry
//! points to the peer GEMM libraries the benchmarks compare against — `matrixmultiply`, the
//! `gemm` crate, BLIS loaded at run time when the system has it, LIBXSMM linked by `build.rs`
//! when found — and the machine's FMA peak ([`peak`]), the benchmarks' denominator. The wrappers
//! take the same views as `kernels::gemm` and check them the same way
//! ([`kernels::check_product`]), so the benchmark code needs no `unsafe`; the `unsafe` here is the
//! FFI those libraries need, each block with its SAFETY line.

#![deny(clippy::undocumented_unsafe_blocks, unsafe_op_in_unsafe_fn)]

pub mod peak;

use kernels::check_product as check;
use kernels::{Error, MatMut, MatRef, Result};

/// The six strides of A, B and C as the peers take them.
fn strides(a: &MatRef<'_>, b: &MatRef<'_>, c: &MatMut<'_>) -> Result<[isize; 6]> {
    Ok([
        stride("A rows", a.row_stride())?,
        stride("A cols", a.col_stride())?,
        stride("B rows", b.row_stride())?,
        stride("B cols", b.col_stride())?,
        stride("C rows", c.row_stride())?,
        stride("C cols", c.col_stride())?,
    ])
}

fn stride(name: &'static str, s: usize) -> Result<isize> {
    isize::try_from(s).map_err(|_| Error::InvalidArgument {
        name,
        value: s.to_string(),
        reason: "strides must fit in isize".into(),
    })
}

/// The kernel set ("core") the system's OpenBLAS chose when it loaded: its own pick for this
/// CPU, or the one `OPENBLAS_CORETYPE` named.
#[cfg(feature = "openblas")]
pub fn openblas_core() -> String {
    extern "C" {
        fn openblas_get_corename() -> *const std::os::raw::c_char;
    }
    // SAFETY: OpenBLAS's function takes nothing and returns a pointer to a static,
    // NUL-terminated name (checked for null before it is read).
    unsafe {
        let name = openblas_get_corename();
        if name.is_null() {
            return String::new();
        }
        std::ffi::CStr::from_ptr(name)
            .to_string_lossy()
            .into_owned()
    }
}

/// `C ← alpha·A·B + beta·C` by `matrixmultiply::sgemm` (its threads: `MATMUL_NUM_THREADS`).
pub fn matrixmultiply_gemm(
    alpha: f32,
    a: MatRef<'_>,
    b: MatRef<'_>,
    beta: f32,
    mut c: MatMut<'_>,
) -> Result<()> {
    check(&a, &b, &c)?;
    let (m, k, n) = (a.rows(), a.cols(), b.cols());
    let [rsa, csa, rsb, csb, rsc, csc] = strides(&a, &b, &c)?;
    if m == 0 || n == 0 {
        return Ok(());
    }
    // SAFETY: the three views were checked to lie inside their buffers with matching shapes, and
    // C's strides to address distinct elements; matrixmultiply reads and writes only those.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            alpha,
            a.data().as_ptr(),
            rsa,
            csa,
            b.data().as_ptr(),
            rsb,
            csb,
            beta,
            c.data_mut().as_mut_ptr(),
            rsc,
            csc,
        )
    };
    Ok(())
}

/// `C ← alpha·A·B + beta·C` by the `gemm` crate, on `threads` rayon threads (1 = sequential).
pub fn gemm_crate_gemm(
    alpha: f32,
    a: MatRef<'_>,
    b: MatRef<'_>,
    beta: f32,
    mut c: MatMut<'_>,
    threads: usize,
) -> Result<()> {
    check(&a, &b, &c)?;
    let (m, k, n) = (a.rows(), a.cols(), b.cols());
    let [rsa, csa, rsb, csb, rsc, csc] = strides(&a, &b, &c)?;
    if m == 0 || n == 0 {
        return Ok(());
    }
    let parallelism = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // The gemm crate computes dst ← α·dst + β·lhs·rhs: its α is BLAS's β and its β is BLAS's α;
    // with read_dst = false it does not read dst (BLAS's β = 0).
    // SAFETY: as for matrixmultiply above: checked views, distinct output elements.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.data_mut().as_mut_ptr(),
            csc,
            rsc,
            beta != 0.0,
            a.data().as_ptr(),
            csa,
            rsa,
            b.data().as_ptr(),
            csb,
            rsb,
            beta,
            alpha,
            false,
            false,
            false,
            parallelism,
        )
    };
    Ok(())
}

/// BLIS (`libblis.so.4`, Debian's `libblis4-pthread` or `-openmp`), loaded at run time so that the
/// benchmarks can measure it in the same run when it is installed, and do without it when not.
pub struct Blis {
    _lib: libloading::Library,
    sgemm: BliSgemm,
    set_threads: unsafe extern "C" fn(n: i64),
    version: String,
    config: String,
}

/// `bli_sgemm` of BLIS's typed API (dim_t and inc_t are 64-bit in Debian's build; trans_t an enum).
type BliSgemm = unsafe extern "C" fn(
    transa: u32,
    transb: u32,
    m: i64,
    n: i64,
    k: i64,
    alpha: *const f32,
    a: *const f32,
    rs_a: i64,
    cs_a: i64,
    b: *const f32,
    rs_b: i64,
    cs_b: i64,
    beta: *const f32,
    c: *mut f32,
    rs_c: i64,
    cs_c: i64,
);

/// BLIS_NO_TRANSPOSE: strides carry the transposes.
const BLIS_NO_TRANSPOSE: u32 = 0;

impl Blis {
    /// The process's BLIS, loaded on first use; `Err` says why it is not available.
    pub fn get() -> std::result::Result<&'static Blis, String> {
        static BLIS: std::sync::OnceLock<std::result::Result<Blis, String>> =
            std::sync::OnceLock::new();
        BLIS.get_or_init(Blis::load).as_ref().map_err(|e| e.clone())
    }

    fn load() -> std::result::Result<Blis, String> {
        let mut errors = Vec::new();
        for name in ["libblis.so.4", "libblis.so"] {
            // SAFETY: loading a shared library runs its initialisers; BLIS's only set up its
            // global configuration.
            match unsafe { libloading::Library::new(name) } {
                Ok(lib) => {
                    // SAFETY: the symbols are looked up with the C signatures BLIS 0.9 declares.
                    let found = unsafe {
                        let sgemm = lib.get::<BliSgemm>(b"bli_sgemm\0").map(|s| *s);
                        let set_threads = lib
                            .get::<unsafe extern "C" fn(i64)>(b"bli_thread_set_num_threads\0")
                            .map(|s| *s);
                        let version = lib
                            .get::<unsafe extern "C" fn() -> *const std::os::raw::c_char>(
                                b"bli_info_get_version_str\0",
                            )
                            .map(|f| std::ffi::CStr::from_ptr(f()).to_string_lossy().into_owned());
                        // The sub-configuration BLIS picked for this CPU (e.g. "zen3", "generic").
                        let query =
                            lib.get::<unsafe extern "C" fn() -> i32>(b"bli_arch_query_id\0");
                        let string = lib
                            .get::<unsafe extern "C" fn(i32) -> *const std::os::raw::c_char>(
                                b"bli_arch_string\0",
                            );
                        let config = match (query, string) {
                            (Ok(q), Ok(s)) => std::ffi::CStr::from_ptr(s(q()))
                                .to_string_lossy()
                                .into_owned(),
                            _ => "unknown".into(),
                        };
                        (sgemm, set_threads, version, config)
                    };
                    match found {
                        (Ok(sgemm), Ok(set_threads), version, config) => {
                            return Ok(Blis {
                                _lib: lib,
                                sgemm,
                                set_threads,
                                version: version.unwrap_or_else(|_| "unknown".into()),
                                config,
                            })
                        }
                        (Err(e), _, _, _) | (_, Err(e), _, _) => {
                            errors.push(format!("{name}: {e}"))
                        }
                    }
                }
                Err(e) => errors.push(format!("{name}: {e}")),
            }
        }
        Err(format!("BLIS is not loadable ({})", errors.join("; ")))
    }

    /// BLIS's version string.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The sub-configuration (kernel set) BLIS chose for this CPU; "generic" means its portable
    /// reference kernels, i.e. this BLIS build does not know the CPU.
    pub fn config(&self) -> &str {
        &self.config
    }

    /// `C ← alpha·A·B + beta·C` by `bli_sgemm` on `threads` threads.
    pub fn gemm(
        &self,
        alpha: f32,
        a: MatRef<'_>,
        b: MatRef<'_>,
        beta: f32,
        mut c: MatMut<'_>,
        threads: usize,
    ) -> Result<()> {
        check(&a, &b, &c)?;
        let dim = |name: &'static str, v: usize| {
            i64::try_from(v).map_err(|_| Error::InvalidArgument {
                name,
                value: v.to_string(),
                reason: "BLIS takes dimensions and strides up to i64::MAX".into(),
            })
        };
        let (m, k, n) = (
            dim("m", a.rows())?,
            dim("k", a.cols())?,
            dim("n", b.cols())?,
        );
        if m == 0 || n == 0 {
            return Ok(());
        }
        let [rsa, csa, rsb, csb, rsc, csc] = strides(&a, &b, &c)?.map(|s| s as i64);
        let threads = dim("threads", threads.max(1))?;
        // SAFETY: checked views as above; BLIS reads and writes exactly the elements they describe
        // (beta = 0 does not read C, as in BLAS); the thread setter takes any positive count.
        unsafe {
            (self.set_threads)(threads);
            (self.sgemm)(
                BLIS_NO_TRANSPOSE,
                BLIS_NO_TRANSPOSE,
                m,
                n,
                k,
                &alpha,
                a.data().as_ptr(),
                rsa,
                csa,
                b.data().as_ptr(),
                rsb,
                csb,
                &beta,
                c.data_mut().as_mut_ptr(),
                rsc,
                csc,
            )
        };
        Ok(())
    }
}

/// The OpenMP variable LIBXSMM's set-up writes when it is unset (see [`Libxsmm::get`]).
#[cfg(libxsmm)]
const OMP_PROC_BIND: &str = "OMP_PROC_BIND";

/// LIBXSMM (Debian's `libxsmm-dev`, linked statically when the build finds it): small products
/// by machine code generated at run time for each shape. The kernel of the last shape is kept
/// per thread, so a loop over one shape pays for the code generation (and the look-up) once,
/// as LIBXSMM's own users dispatch once and call many times. Single-threaded, as LIBXSMM's
/// small-product kernels are. Products it generates no code for go to its BLAS fallback
/// (OpenBLAS's `sgemm_` in builds with the `openblas` feature).
pub struct Libxsmm {
    target: String,
}

#[cfg(libxsmm)]
mod xsmm_ffi {
    use std::os::raw::{c_char, c_int};

    /// `libxsmm_smmfunction`: C-variadic in LIBXSMM's header (prefetch pointers may follow).
    pub(super) type Kernel = unsafe extern "C" fn(a: *const f32, b: *const f32, c: *mut f32, ...);

    extern "C" {
        pub(super) fn libxsmm_init();
        pub(super) fn libxsmm_get_target_arch() -> *const c_char;
        #[allow(clippy::too_many_arguments)]
        pub(super) fn libxsmm_smmdispatch(
            m: c_int,
            n: c_int,
            k: c_int,
            lda: *const c_int,
            ldb: *const c_int,
            ldc: *const c_int,
            alpha: *const f32,
            beta: *const f32,
            flags: *const c_int,
            prefetch: *const c_int,
        ) -> Option<Kernel>;
    }
}

impl Libxsmm {
    /// The process's LIBXSMM, initialised on first use; `Err` says why it is not available.
    /// The set-up leaves the process's environment as it found it.
    pub fn get() -> std::result::Result<&'static Libxsmm, String> {
        static XSMM: std::sync::OnceLock<std::result::Result<Libxsmm, String>> =
            std::sync::OnceLock::new();
        XSMM.get_or_init(Libxsmm::init)
            .as_ref()
            .map_err(|e| e.clone())
    }

    #[cfg(libxsmm)]
    fn init() -> std::result::Result<Libxsmm, String> {
        // LIBXSMM's set-up writes OMP_PROC_BIND=TRUE into the environment when it is unset (for
        // its OpenMP extension, not linked here). Left there, it reaches every process started
        // afterwards, and an OpenMP runtime that reads it pins the thread that starts it —
        // measured on a 2-core Zen 3: the report's GEMM child, started by a parent that had
        // initialised LIBXSMM, had its main thread pinned to CPU 0 by BLIS's OpenMP runtime, so
        // every library that spawns its own threads afterwards (ours, matrixmultiply, the gemm
        // crate) ran its 2-thread products on one core (ours 57 GFLOP/s at 1024³ where the
        // same child started cleanly ran 122). So the variable is put back as it was.
        let before = std::env::var_os(OMP_PROC_BIND);
        // SAFETY: LIBXSMM's documented set-up call (idempotent); the target string it returns
        // is a static NUL-terminated string.
        let target = unsafe {
            xsmm_ffi::libxsmm_init();
            std::ffi::CStr::from_ptr(xsmm_ffi::libxsmm_get_target_arch())
                .to_string_lossy()
                .into_owned()
        };
        match before {
            Some(value) => std::env::set_var(OMP_PROC_BIND, value),
            None => std::env::remove_var(OMP_PROC_BIND),
        }
        Ok(Libxsmm { target })
    }

    #[cfg(not(libxsmm))]
    fn init() -> std::result::Result<Libxsmm, String> {
        Err(
            "this build found no LIBXSMM static library (Debian: libxsmm-dev; or set LIBXSMM_DIR)"
                .into(),
        )
    }

    /// The code-generation target LIBXSMM chose for this CPU (e.g. "hsw" for AVX2, "skx" for
    /// AVX-512).
    pub fn target(&self) -> &str {
        &self.target
    }

    /// `C ← alpha·A·B + beta·C` for row-major A, B and C (unit column strides), alpha = 1 and
    /// beta ∈ {0, 1} (what LIBXSMM's kernels take), dimensions and strides up to `i32::MAX`.
    pub fn gemm(
        &self,
        alpha: f32,
        a: MatRef<'_>,
        b: MatRef<'_>,
        beta: f32,
        mut c: MatMut<'_>,
    ) -> Result<()> {
        check(&a, &b, &c)?;
        let invalid = |name: &'static str, value: String, reason: &str| Error::InvalidArgument {
            name,
            value,
            reason: reason.into(),
        };
        if alpha != 1.0 || (beta != 0.0 && beta != 1.0) {
            return Err(invalid(
                "alpha, beta",
                format!("{alpha}, {beta}"),
                "LIBXSMM's kernels take alpha = 1 and beta = 0 or 1",
            ));
        }
        for (name, cs) in [
            ("A", a.col_stride()),
            ("B", b.col_stride()),
            ("C", c.col_stride()),
        ] {
            if cs != 1 && a.rows().max(b.cols()) > 1 {
                return Err(invalid(name, cs.to_string(), "row-major operands only"));
            }
        }
        let int = |name: &'static str, v: usize| {
            i32::try_from(v)
                .map_err(|_| invalid(name, v.to_string(), "LIBXSMM takes 32-bit dimensions"))
        };
        let (m, k, n) = (
            int("m", a.rows())?,
            int("k", a.cols())?,
            int("n", b.cols())?,
        );
        let (lda, ldb, ldc) = (
            int("lda", a.row_stride().max(a.cols()))?,
            int("ldb", b.row_stride().max(b.cols()))?,
            int("ldc", c.row_stride().max(b.cols()))?,
        );
        if m == 0 || n == 0 {
            return Ok(());
        }
        self.run(
            [m, n, k, lda, ldb, ldc],
            beta,
            a.data().as_ptr(),
            b.data().as_ptr(),
            c.data_mut().as_mut_ptr(),
        )
    }

    #[cfg(libxsmm)]
    fn run(
        &self,
        [m, n, k, lda, ldb, ldc]: [i32; 6],
        beta: f32,
        a: *const f32,
        b: *const f32,
        c: *mut f32,
    ) -> Result<()> {
        type Key = ([i32; 6], u32);
        thread_local! {
            static LAST: std::cell::Cell<Option<(Key, xsmm_ffi::Kernel)>> =
                const { std::cell::Cell::new(None) };
        }
        let key = ([m, n, k, lda, ldb, ldc], beta.to_bits());
        let kernel = match LAST.get() {
            Some((last, kernel)) if last == key => Some(kernel),
            _ => {
                // Column-major LIBXSMM computes our row-major C as Cᵀ = Bᵀ·Aᵀ: an n × m
                // product of the n × k Bᵀ (leading dimension ldb) and the k × m Aᵀ (lda).
                // SAFETY: plain values and pointers to locals that outlive the call.
                let kernel = unsafe {
                    xsmm_ffi::libxsmm_smmdispatch(
                        n,
                        m,
                        k,
                        &ldb,
                        &lda,
                        &ldc,
                        &1.0,
                        &beta,
                        std::ptr::null(),
                        std::ptr::null(),
                    )
                };
                if let Some(kernel) = kernel {
                    LAST.set(Some((key, kernel)));
                }
                kernel
            }
        };
        let Some(kernel) = kernel else {
            return Err(Error::InvalidArgument {
                name: "shape",
                value: format!("{m}×{k}×{n}"),
                reason: "LIBXSMM generated no kernel for it".into(),
            });
        };
        // SAFETY: the views were checked against their buffers; the kernel was generated for
        // exactly these dimensions and leading dimensions (B as the left operand, A as the right,
        // both read only; C written, read only when beta = 1).
        unsafe { kernel(b, a, c) };
        Ok(())
    }

    #[cfg(not(libxsmm))]
    fn run(&self, _: [i32; 6], _: f32, _: *const f32, _: *const f32, _: *mut f32) -> Result<()> {
        unreachable!("Libxsmm::get fails in builds without LIBXSMM")
    }
}
