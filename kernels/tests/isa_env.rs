//! `KERNELS_ISA` and `KERNELS_BACKEND` are read once per process, so each case runs this test
//! binary again as a child with the variable set, and checks what the child reports.

use kernels::{gemm, Backend, Isa, MatMut, MatRef};

/// The child's side: prints the active path and whether a product runs. Does nothing unless
/// started by `kernels_isa_forces_a_path_or_fails_clearly`.
#[test]
fn child_reports_active_isa() {
    if std::env::var_os("KERNELS_ISA_CHILD").is_none() {
        return;
    }
    let a = [1.0f32, 2.0, 3.0, 4.0];
    let mut c = [0.0f32; 4];
    let run = gemm(
        1.0,
        MatRef::row_major(&a, 2, 2, 2),
        MatRef::row_major(&a, 2, 2, 2),
        0.0,
        MatMut::row_major(&mut c, 2, 2, 2),
    );
    if std::env::var_os("KERNELS_BACKEND").is_some() {
        match Backend::active() {
            Ok(b) => println!("ACTIVE_BACKEND={b} GEMM={:?} C={c:?}", run.is_ok()),
            Err(e) => println!("ACTIVE_BACKEND_ERR={e} GEMM_ERR={}", run.unwrap_err()),
        }
        return;
    }
    match Isa::active() {
        Ok(isa) => println!("ACTIVE={isa} GEMM={:?} C={c:?}", run.is_ok()),
        Err(e) => println!("ACTIVE_ERR={e} GEMM_ERR={}", run.unwrap_err()),
    }
}

fn child(value: &str) -> String {
    child_with("KERNELS_ISA", value)
}

fn child_with(variable: &str, value: &str) -> String {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_reports_active_isa",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(variable, value)
        .env("KERNELS_ISA_CHILD", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    // The harness may print its "test … ..." prefix on the same line.
    stdout
        .lines()
        .find_map(|l| l.find("ACTIVE").map(|at| l[at..].to_string()))
        .unwrap_or_else(|| {
            panic!(
                "no report from the child ({}): {stdout}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )
        })
}

#[test]
fn kernels_isa_forces_a_path_or_fails_clearly() {
    if std::env::var_os("KERNELS_EMULATED").is_some() {
        // Under user-mode QEMU (scripts/test-aarch64.sh) a test binary cannot start a copy of
        // itself; the parsing and dispatch checked here are the same code on every target, and
        // the native run covers them.
        eprintln!("skipped under emulation");
        return;
    }
    for isa in Isa::available() {
        // Case and spaces do not matter.
        let line = child(&format!(" {} ", isa.name().to_uppercase()));
        assert_eq!(
            line,
            format!("ACTIVE={isa} GEMM=true C=[7.0, 10.0, 15.0, 22.0]")
        );
    }
    for isa in Isa::ALL.into_iter().filter(|i| !i.is_available()) {
        let reason = isa.check_available().unwrap_err().to_string();
        assert_eq!(
            child(isa.name()),
            format!("ACTIVE_ERR={reason} GEMM_ERR={reason}")
        );
    }
    let unknown = "unknown instruction-set path \"sse9\" (from KERNELS_ISA); expected one of: \
                   scalar, avx2, avx512, neon";
    assert_eq!(
        child("sse9"),
        format!("ACTIVE_ERR={unknown} GEMM_ERR={unknown}")
    );
    // Empty means "not set".
    assert_eq!(
        child("").split(' ').next().unwrap(),
        format!("ACTIVE={}", Isa::best())
    );
}

#[test]
fn kernels_backend_chooses_or_fails_clearly() {
    if std::env::var_os("KERNELS_EMULATED").is_some() {
        eprintln!("skipped under emulation");
        return;
    }
    for backend in Backend::ALL {
        let line = child_with(
            "KERNELS_BACKEND",
            &format!(" {} ", backend.name().to_uppercase()),
        );
        match backend.check_available() {
            Ok(()) => assert_eq!(
                line,
                format!("ACTIVE_BACKEND={backend} GEMM=true C=[7.0, 10.0, 15.0, 22.0]")
            ),
            Err(e) => assert_eq!(line, format!("ACTIVE_BACKEND_ERR={e} GEMM_ERR={e}")),
        }
    }
    let unknown = "unknown GEMM backend \"mkl\" (from KERNELS_BACKEND); expected one of: \
                   native, openblas";
    assert_eq!(
        child_with("KERNELS_BACKEND", "mkl"),
        format!("ACTIVE_BACKEND_ERR={unknown} GEMM_ERR={unknown}")
    );
    // The old way of asking for OpenBLAS says where it went.
    let line = child("openblas");
    assert!(
        line.contains(
            "OpenBLAS is a GEMM backend, not an instruction set: KERNELS_BACKEND=openblas"
        ),
        "{line}"
    );
}
