//! On x86-64 Linux: links LIBXSMM's static library when the system has it
//! (Debian: libxsmm-dev; another prefix through `LIBXSMM_DIR`), so that the benchmarks can
//! measure it as a peer. Its fallback for products it does not generate code for is the BLAS
//! `sgemm_`: OpenBLAS's with the `openblas` feature, else LIBXSMM's own stub library.
//! Without the library nothing is linked and `bench_peers::Libxsmm` reports why.

use std::path::PathBuf;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(libxsmm)");
    println!("cargo::rerun-if-env-changed=LIBXSMM_DIR");
    println!("cargo::rerun-if-changed=build.rs");
    let x86_64 = std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("x86_64");
    let linux = std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux");
    if !(x86_64 && linux) {
        return;
    }
    let dirs: Vec<PathBuf> = match std::env::var_os("LIBXSMM_DIR") {
        Some(dir) => vec![PathBuf::from(dir)],
        None => ["/usr/lib", "/usr/lib/x86_64-linux-gnu", "/usr/local/lib"]
            .iter()
            .map(PathBuf::from)
            .collect(),
    };
    let Some(dir) = dirs.iter().find(|d| d.join("libxsmm.a").is_file()) else {
        return;
    };
    println!(
        "cargo::rerun-if-changed={}",
        dir.join("libxsmm.a").display()
    );
    println!("cargo::rustc-link-search=native={}", dir.display());
    println!("cargo::rustc-link-lib=static=xsmm");
    if std::env::var_os("CARGO_FEATURE_OPENBLAS").is_none() {
        println!("cargo::rustc-link-lib=static=xsmmnoblas");
    }
    for lib in ["pthread", "dl", "m", "rt"] {
        println!("cargo::rustc-link-lib=dylib={lib}");
    }
    println!("cargo::rustc-cfg=libxsmm");
}
