//! The C interface, used as C programs use it: `tests/c/check_sgemm.c` compiled with the system
//! `cc` against the shared and the static library, and the reference BLAS's own level-3 single
//! precision test program (Debian's `libblas-test`, `xblat3s`) run with our library preloaded in
//! place of the system BLAS's `sgemm_`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The directory holding this crate's shared and static libraries, as `cargo test` built them:
/// beside the test binary in `deps/` (or one level up, where `cargo build` copies them).
fn lib_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap().to_path_buf();
    [deps.clone(), deps.parent().unwrap().to_path_buf()]
        .into_iter()
        .find(|d| {
            ["libkernels_capi.so", "libkernels_capi.a"]
                .iter()
                .all(|l| d.join(l).exists())
        })
        .unwrap_or_else(|| {
            panic!(
                "libkernels_capi.so and .a were not built beside {}",
                deps.display()
            )
        })
}

fn crate_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn compile(out: &Path, link: &[String]) {
    compile_program("check_sgemm.c", out, link)
}

fn compile_program(source: &str, out: &Path, link: &[String]) {
    let status = Command::new("cc")
        .arg("-O1")
        .arg("-Wall")
        .arg("-Werror")
        .arg("-I")
        .arg(crate_dir().join("include"))
        .arg(crate_dir().join("tests/c").join(source))
        .arg("-o")
        .arg(out)
        .args(link)
        .arg("-lm")
        .status()
        .expect("the system C compiler (cc)");
    assert!(status.success(), "compiling {source} with {link:?} failed");
}

/// The link line of a program against the static library in `dir`: the system libraries Rust's
/// runtime needs, and OpenBLAS only if the kernels crate was built with that path.
fn static_link(dir: &Path) -> Vec<String> {
    vec![
        dir.join("libkernels_capi.a").display().to_string(),
        "-Wl,--as-needed".into(),
        "-lopenblas".into(),
        "-lgcc_s".into(),
        "-lpthread".into(),
        "-ldl".into(),
    ]
}

fn run_check(exe: &Path) {
    let out = Command::new(exe).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}: {stdout}", exe.display());
    let summary = stdout.lines().last().unwrap_or("");
    assert!(summary.ends_with(" passed, 0 failed"), "{summary}");
    let passed: usize = summary.split(' ').next().unwrap().parse().unwrap();
    assert!(passed > 200, "{summary}");
}

#[test]
fn c_program_against_the_shared_library() {
    let dir = lib_dir();
    let exe = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("check_sgemm_shared");
    compile(
        &exe,
        &[
            format!("-L{}", dir.display()),
            "-lkernels_capi".into(),
            format!("-Wl,-rpath,{}", dir.display()),
        ],
    );
    run_check(&exe);
}

/// A C program that forks after products (our helper threads spinning, then parked) and runs
/// products of every kind in the child, which has none of the parent's threads: no hang, right
/// answers, and the parent goes on.
#[test]
fn products_work_in_a_forked_child() {
    let stdout = run_against_shared_library("fork_sgemm.c", "fork_sgemm");
    assert_eq!(
        stdout.lines().last(),
        Some("6 passed, 0 failed"),
        "{stdout}"
    );
}

/// Compiles `source` (from `tests/c/`) against the shared library, runs it on two threads'
/// worth of rayon pool, and returns what it printed, after asserting that it exited 0.
fn run_against_shared_library(source: &str, name: &str) -> String {
    let dir = lib_dir();
    let exe = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    compile_program(
        source,
        &exe,
        &[
            format!("-L{}", dir.display()),
            "-lkernels_capi".into(),
            format!("-Wl,-rpath,{}", dir.display()),
            "-pthread".into(),
        ],
    );
    let out = Command::new(&exe)
        .env("RAYON_NUM_THREADS", "2")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}\n{stdout}\n{stderr}", out.status);
    stdout
}

/// `tests/c/lifecycle_sgemm.c`: a fork while another thread is inside a product, products from a
/// pthread-key destructor (after the thread's thread-local storage is gone) and from an `atexit`
/// handler, and C passed as A or B — no hang, no abort, right answers.
#[test]
fn products_survive_fork_exit_handlers_and_aliasing() {
    let stdout = run_against_shared_library("lifecycle_sgemm.c", "lifecycle_sgemm");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines[lines.len() - 2..],
        ["10 passed, 0 failed", "atexit: right"],
        "{stdout}"
    );
}

#[test]
fn c_program_against_the_static_library_with_its_own_xerbla() {
    let dir = lib_dir();
    let exe = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("check_sgemm_static");
    // The program defines xerbla_ and cblas_xerbla itself: linking must take those, not fail on
    // duplicates. OpenBLAS is only needed when the kernels crate was built with that path.
    compile(&exe, &static_link(&dir));
    run_check(&exe);
}

/// `tests/c/fuzz_args.c`: random calls over the argument space of both entry points (valid and
/// invalid orders, transposes, sizes, leading dimensions; alpha and beta special values), each
/// checked — the first bad argument reported by position with C untouched, or the right product
/// with nothing written outside C. `FUZZ_CASES` sets the count (default 4000).
#[test]
fn random_arguments_are_reported_or_computed_right() {
    let dir = lib_dir();
    let exe = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("fuzz_args");
    compile_program("fuzz_args.c", &exe, &static_link(&dir));
    let cases = std::env::var("FUZZ_CASES").unwrap_or_else(|_| "4000".into());
    let out = Command::new(&exe).arg(&cases).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert_eq!(
        stdout.lines().last(),
        Some(format!("{cases} passed, 0 failed").as_str()),
        "{stdout}"
    );
}

#[test]
fn reference_blas_level3_tests_pass_with_our_sgemm() {
    let blas_tests = Path::new("/usr/lib/x86_64-linux-gnu/blas");
    let xblat3s = blas_tests.join("xblat3s");
    assert!(
        xblat3s.exists(),
        "{} is missing: install Debian's libblas-test (.ci/run does)",
        xblat3s.display()
    );
    // The reference input, with only SGEMM switched on (the other routines are not ours).
    let input = std::fs::read_to_string(blas_tests.join("sblat3.in")).unwrap();
    let input: String = input
        .lines()
        .map(|l| {
            let routine = l.split_whitespace().next().unwrap_or("");
            if l.len() > 7 && ["SSYMM", "STRMM", "STRSM", "SSYRK", "SSYR2K"].contains(&routine) {
                format!("{}F{}\n", &l[..7], &l[8..])
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    let work = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("xblat3s");
    std::fs::create_dir_all(&work).unwrap();
    let lib = lib_dir().join("libkernels_capi.so");
    let mut child = Command::new(&xblat3s)
        .current_dir(&work)
        .env("LD_PRELOAD", &lib)
        .env("LD_DEBUG", "bindings")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "xblat3s failed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let summary = std::fs::read_to_string(work.join("sblat3.out")).unwrap();
    assert!(
        summary.contains("SGEMM  PASSED THE TESTS OF ERROR-EXITS"),
        "{summary}"
    );
    assert!(
        summary.contains("SGEMM  PASSED THE COMPUTATIONAL TESTS"),
        "{summary}"
    );
    assert!(!summary.contains("FAIL"), "{summary}");
    // Proof that the SGEMM tested was ours, and that our error exits went to the test
    // program's own XERBLA (which is how it checks them).
    let bindings = String::from_utf8_lossy(&out.stderr);
    let ours = lib.display().to_string();
    assert!(
        bindings
            .lines()
            .any(|l| l.contains(&format!("to {ours} [0]: normal symbol `sgemm_'"))),
        "sgemm_ was not bound to {ours}"
    );
    assert!(
        bindings.lines().any(|l| l
            .contains(&format!("binding file {ours} [0] to {}", xblat3s.display()))
            && l.contains("`xerbla_'")),
        "our xerbla_ calls did not reach the test program's XERBLA"
    );
}
