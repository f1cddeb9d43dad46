//! The library at a process's odd moments, from Rust (the C interface's twin of this is
//! `kernels-capi/tests/c/lifecycle_sgemm.c`): a child forked after training — the thread pool
//! and the library's helper threads did not survive the fork — trains and predicts with the same
//! bits as its parent; products run from a thread-local destructor and from an `atexit`
//! handler. Each scenario runs in a fresh process of this test binary, so no other test's
//! threads are forked along.
//!
//! `unsafe` here is only the calls to `fork`, `waitpid`, `alarm`, `_exit` and `atexit` that the
//! scenarios are about.

use std::cell::Cell;
use std::sync::atomic::{AtomicU8, Ordering};

use kernels::{gemm, MatMut, MatRef};
use nn::prelude::*;
use workspace_tests::*;

/// A 300³ product through the default (threaded) path, checked against a plain f64 loop.
fn product_is_right() -> bool {
    let n = 300;
    let a: Vec<f32> = (0..n * n)
        .map(|i| ((i * 7) % 17) as f32 / 16.0 - 0.5)
        .collect();
    let b: Vec<f32> = (0..n * n)
        .map(|i| ((i * 13) % 19) as f32 / 18.0 - 0.5)
        .collect();
    let mut c = vec![0.0f32; n * n];
    if gemm(
        1.0,
        MatRef::row_major(&a, n, n, n),
        MatRef::row_major(&b, n, n, n),
        0.0,
        MatMut::row_major(&mut c, n, n, n),
    )
    .is_err()
    {
        return false;
    }
    (0..n).step_by(37).all(|i| {
        (0..n).step_by(41).all(|j| {
            let want: f64 = (0..n)
                .map(|p| a[i * n + p] as f64 * b[p * n + j] as f64)
                .sum();
            (c[i * n + j] as f64 - want).abs() < 1e-3
        })
    })
}

/// One epoch of the small CNN from seed 9 on 64 images, then its predictions' bits.
fn train_and_predict() -> Vec<u32> {
    let mut m = small_cnn(9);
    let (x, y) = images(64);
    m.fit(
        &x,
        &y,
        &FitConfig::new().epochs(1).batch_size(16).verbose(0),
        &mut [],
    )
    .unwrap();
    predictions(&mut m)
}

fn check_child(name: &str, marker: &str) {
    let (status, text) = run_child_test(name, &[("RAYON_NUM_THREADS", "2")]);
    assert!(
        status.success() && text.contains(marker),
        "{status:?}\n{text}"
    );
}

#[test]
fn a_child_forked_after_training_trains_alike() {
    check_child("child_trains_then_forks", "FORKED CHILD: same bits");
}

#[test]
#[ignore = "run by a_child_forked_after_training_trains_alike in a fresh process"]
fn child_trains_then_forks() {
    // The parent's pool, helpers and scratch buffers all in use before the fork.
    let before = train_and_predict();
    assert!(product_is_right());
    let dir = Scratch::new("fork");
    let out = dir.join("child.txt");
    // SAFETY: fork(2); the child runs this library's code (which sees the fork), writes a file
    // and leaves with _exit, never returning into the test harness.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        // SAFETY: as above; the alarm ends a child that hangs.
        unsafe { libc::alarm(120) };
        let bits = train_and_predict();
        let ok = product_is_right() && kernels::forked_child();
        kernels::prepare_threads();
        let text = format!("{ok} {bits:?}");
        std::fs::write(&out, text).unwrap();
        // SAFETY: ends the child without running the parent's exit handlers or destructors.
        unsafe { libc::_exit(0) };
    }
    let mut status = 0;
    // SAFETY: waits for the child forked above.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "child status {status}"
    );
    let text = std::fs::read_to_string(&out).unwrap();
    assert_eq!(text, format!("true {before:?}"));
    // The parent goes on, its pool intact.
    assert_eq!(train_and_predict(), before);
    assert!(!kernels::forked_child());
    println!("FORKED CHILD: same bits");
}

/// 0: not run; 1: right; 2: wrong.
static DESTRUCTOR_RESULT: AtomicU8 = AtomicU8::new(0);

struct ProductsOnDrop(Cell<bool>);

impl Drop for ProductsOnDrop {
    fn drop(&mut self) {
        let ok = product_is_right() && train_and_predict().len() == 15;
        DESTRUCTOR_RESULT.store(if ok { 1 } else { 2 }, Ordering::SeqCst);
    }
}

thread_local! {
    static ON_EXIT: ProductsOnDrop = const { ProductsOnDrop(Cell::new(false)) };
}

#[test]
fn products_in_a_thread_local_destructor() {
    // Registered before the thread's own scratch buffers exist, and after.
    for first in [false, true] {
        DESTRUCTOR_RESULT.store(0, Ordering::SeqCst);
        std::thread::spawn(move || {
            if first {
                assert!(product_is_right());
            }
            ON_EXIT.with(|d| d.0.set(true));
            assert!(product_is_right());
        })
        .join()
        .unwrap();
        assert_eq!(
            DESTRUCTOR_RESULT.load(Ordering::SeqCst),
            1,
            "first product {first}"
        );
    }
}

#[test]
fn products_in_an_atexit_handler() {
    check_child("child_registers_atexit", "ATEXIT: right");
}

extern "C" fn at_exit() {
    if product_is_right() && train_and_predict().len() == 15 {
        println!("ATEXIT: right");
    } else {
        // SAFETY: ends the process with a failure status from an exit handler.
        unsafe { libc::_exit(3) };
    }
}

#[test]
#[ignore = "run by products_in_an_atexit_handler in a fresh process"]
fn child_registers_atexit() {
    assert!(product_is_right());
    // SAFETY: registers a plain function to run at exit.
    unsafe { libc::atexit(at_exit) };
}
