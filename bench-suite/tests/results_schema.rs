//! The committed `results/gemm.json` must parse as the report's current schema and hold every
//! column the report promises: every library on every shape at every thread count, a summary row
//! for each, and the measured FMA peak. A report that silently dropped a column fails here.

use bench_suite::gemm_bench::all_shapes;
use bench_suite::report::{gemm_markdown, GemmReport, SCHEMA_VERSION};

fn committed() -> GemmReport {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../results/gemm.json");
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path} does not match the schema: {e}"))
}

#[test]
fn committed_gemm_results_are_complete() {
    let report = committed();
    assert_eq!(report.schema_version, SCHEMA_VERSION);
    assert!(
        report.runs.iter().any(|r| r.threads == 1),
        "no 1-thread run"
    );
    assert!(
        report.runs.iter().any(|r| r.threads >= 2),
        "no multi-thread run"
    );
    for run in &report.runs {
        // Every library the run measured must appear on every shape; the peers and at least one
        // of our paths must be there.
        let mut libs: Vec<String> = run.measurements.iter().map(|m| m.library.clone()).collect();
        libs.sort();
        libs.dedup();
        for needed in ["openblas", "matrixmultiply", "gemm-crate"] {
            assert!(
                libs.iter().any(|l| l == needed),
                "{needed} missing at {} threads",
                run.threads
            );
        }
        assert!(
            libs.iter().any(|l| l.starts_with("ours-")),
            "none of our paths at {} threads",
            run.threads
        );
        assert!(run
            .fma_peak_avx512_gflops
            .or(run.fma_peak_avx2_gflops)
            .is_some());
        for shape in all_shapes() {
            for lib in &libs {
                let m = run
                    .measurements
                    .iter()
                    .find(|m| m.shape == shape && &m.library == lib)
                    .unwrap_or_else(|| {
                        panic!(
                            "{lib} missing on {} at {} threads",
                            shape.label(),
                            run.threads
                        )
                    });
                assert!(m.gflops_median.is_finite() && m.gflops_median > 0.0);
                assert!(
                    m.max_rel_diff_vs_openblas < 1e-4,
                    "{lib} {}: wrong result",
                    shape.label()
                );
            }
            let row = report
                .summary
                .iter()
                .find(|r| r.shape == shape.label() && r.threads == run.threads)
                .unwrap_or_else(|| {
                    panic!(
                        "no summary row for {} at {} threads",
                        shape.label(),
                        run.threads
                    )
                });
            assert!(row.ours_over_openblas.is_finite() && row.ours_over_best_peer.is_finite());
            assert!(row.fraction_of_fma_peak.is_some());
        }
    }
}

#[test]
fn markdown_has_a_row_per_shape_and_thread_count() {
    let report = committed();
    let md = gemm_markdown(&report);
    for run in &report.runs {
        assert!(md.contains(&format!("## {} thread(s)", run.threads)));
    }
    let rows = md
        .lines()
        .filter(|l| l.starts_with("| ") && l.chars().nth(2).is_some_and(|c| c.is_ascii_digit()))
        .count();
    assert_eq!(rows, report.summary.len());
}
