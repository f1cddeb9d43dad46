//! LIBXSMM's set-up writes OMP_PROC_BIND=TRUE into the environment; the wrapper puts it back,
//! so that the processes the report starts afterwards are not pinned by an OpenMP runtime (one
//! test in its own process: the environment is process-wide).

use bench_peers::Libxsmm;

#[test]
fn initialising_libxsmm_leaves_the_environment_as_it_was() {
    std::env::remove_var("OMP_PROC_BIND");
    if Libxsmm::get().is_err() {
        // Built without the library: nothing was initialised.
        return;
    }
    assert_eq!(std::env::var_os("OMP_PROC_BIND"), None);
}
