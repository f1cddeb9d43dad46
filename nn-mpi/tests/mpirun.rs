//! The MPI backend under a real launcher: `mpirun` with 2 and 3 ranks (3 on fewer cores, so
//! oversubscribed), bit-identical training, and a job that ends — non-zero, within seconds —
//! when a rank panics, returns an error or is killed. Needs the MPI the crate was built with
//! (`mpirun` on the PATH); CI installs Open MPI.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const CHECK: &str = env!("CARGO_BIN_EXE_nn-mpi-check");

/// Runs `mpirun -np <ranks> nn-mpi-check <args>`; returns its output and how long it took,
/// or fails the test if it runs longer than `limit`.
fn mpirun(ranks: usize, args: &[&str], limit: Duration) -> (Output, Duration) {
    mpirun_with(ranks, args, &[], limit)
}

/// [`mpirun`] with variables added to the ranks' environment.
fn mpirun_with(
    ranks: usize,
    args: &[&str],
    env: &[(&str, &str)],
    limit: Duration,
) -> (Output, Duration) {
    let start = Instant::now();
    let mut child = Command::new("mpirun")
        .envs(env.iter().copied())
        // Root in CI containers; more ranks than cores.
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .args(["--oversubscribe", "-np", &ranks.to_string(), CHECK])
        .args(args)
        .env("RAYON_NUM_THREADS", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mpirun on the PATH (install Open MPI: libopenmpi-dev openmpi-bin)");
    loop {
        if child.try_wait().expect("mpirun's status").is_some() {
            break;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "mpirun {args:?} ran longer than {limit:?}:\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let elapsed = start.elapsed();
    (child.wait_with_output().expect("output"), elapsed)
}

fn text(out: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn two_and_three_ranks_train_bit_identically_to_the_micro_batch_reference() {
    for ranks in [2, 3] {
        let (out, _) = mpirun(ranks, &["train"], Duration::from_secs(120));
        assert!(out.status.success(), "{}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stdout).contains(&format!("ok {ranks} ranks")),
            "{}",
            text(&out)
        );
    }
}

/// Vectors longer than one MPI call may carry (2³¹ − 1 values: MPI counts are C ints) go in
/// pieces, each summed or broadcast as the whole would be: with the piece made small, the
/// weights' broadcast and the gradients' sums all go in pieces, and the bits do not change.
#[test]
fn vectors_too_long_for_one_mpi_call_go_in_pieces_with_the_same_bits() {
    let (out, _) = mpirun_with(
        3,
        &["train"],
        &[("NN_MPI_MAX_PIECE", "1000")],
        Duration::from_secs(300),
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("ok 3 ranks"),
        "{}",
        text(&out)
    );
}

/// The job of `ranks` ranks in which rank 1 meets `fault` ends non-zero within 10 s of it.
fn ends_the_job(fault: &str, ranks: usize) {
    let (out, elapsed) = mpirun(ranks, &[fault, "1"], Duration::from_secs(60));
    assert!(!out.status.success(), "{fault}: {}", text(&out));
    // The fault comes at the end of the second epoch (a fraction of a second in).
    assert!(elapsed < Duration::from_secs(10), "{fault}: {elapsed:?}");
    eprintln!("{fault} on rank 1 of {ranks}: the job ended in {elapsed:?}");
}

#[test]
fn a_panic_on_one_rank_ends_the_job() {
    ends_the_job("panic", 2);
    ends_the_job("panic", 3);
}

#[test]
fn an_error_on_one_rank_ends_the_job() {
    ends_the_job("error", 2);
    let (out, _) = mpirun(2, &["error", "1"], Duration::from_secs(60));
    assert!(
        text(&out).contains("error on rank 1 of 2"),
        "{}",
        text(&out)
    );
}

#[test]
fn a_killed_rank_ends_the_job() {
    ends_the_job("kill", 2);
}

#[test]
fn a_world_the_launcher_did_not_start_is_refused() {
    // As if launched by another MPI's launcher for 2 ranks: this library sees a world of 1.
    let out = Command::new(CHECK)
        .arg("train")
        .env("PMI_SIZE", "2")
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let t = text(&out);
    assert!(
        t.contains("launcher started 2") && t.contains("world of 1"),
        "{t}"
    );
}
