//! The committed results — the newest `results/<date>-<host>.json` — must parse as the report's
//! current schema and hold every column the report promises: the machine's peak and bandwidth;
//! every library on every GEMM shape at every thread count with a summary row for each; every
//! reference program on every data set with its peers and targets. A report that silently dropped
//! a column fails here.

use bench_suite::gemm_bench::{all_shapes, Library, OURS_PLANNED, READ_OPERANDS};
use bench_suite::programs::PROGRAMS;
use bench_suite::readme::results_markdown;
use bench_suite::report::{gemm_markdown, GemmReport, Results, SCHEMA_VERSION};

fn results_dir() -> std::path::PathBuf {
    std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../results"))
}

/// A file name's sort key: its runs of digits compared as numbers, the rest as text, so that
/// `2026-12-04-vm-11-zen4.json` comes after `2026-12-04-vm-9-zen4.json`.
fn natural_key(name: &str) -> Vec<(u64, String)> {
    let mut key = Vec::new();
    let mut rest = name;
    while !rest.is_empty() {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        let (head, tail) = if digits > 0 {
            rest.split_at(digits)
        } else {
            rest.split_at(
                rest.find(|c: char| c.is_ascii_digit())
                    .unwrap_or(rest.len()),
            )
        };
        key.push(if digits > 0 {
            (head.parse().unwrap_or(u64::MAX), String::new())
        } else {
            (0, head.to_owned())
        });
        rest = tail;
    }
    key
}

#[test]
fn run_numbers_sort_as_numbers() {
    let mut names = [
        "2026-12-04-vm-9-zen4.json",
        "2026-12-04-vm-11-zen4.json",
        "2026-12-03-vm-12-xeon.json",
    ];
    names.sort_by_key(|n| natural_key(n));
    assert_eq!(
        names,
        [
            "2026-12-03-vm-12-xeon.json",
            "2026-12-04-vm-9-zen4.json",
            "2026-12-04-vm-11-zen4.json"
        ]
    );
}

/// The newest full results file (names start with the date, then the run's number, so the last
/// in natural order is newest).
fn committed_results() -> (String, Results) {
    let mut names: Vec<String> = std::fs::read_dir(results_dir())
        .expect("results/ exists")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json") && n.as_bytes().first().is_some_and(u8::is_ascii_digit))
        .collect();
    names.sort_by_key(|n| natural_key(n));
    let name = names.pop().expect("a results/<date>-<host>.json");
    let path = results_dir().join(&name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
    let r = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{name} does not match the schema: {e}"));
    (name, r)
}

fn committed() -> GemmReport {
    let (name, r) = committed_results();
    r.gemm
        .unwrap_or_else(|| panic!("{name} has no GEMM part (commit a full run)"))
}

#[test]
fn committed_machine_and_training_results_are_complete() {
    let (name, r) = committed_results();
    assert_eq!(r.schema_version, SCHEMA_VERSION);
    assert!(r
        .machine_perf
        .fma_peak_gflops
        .iter()
        .any(|&(t, p)| t == 1 && p > 0.0));
    assert!(r
        .machine_perf
        .memory_bandwidth_gbs
        .iter()
        .any(|&(t, b)| t >= 2 && b > 0.0));
    let t = r
        .training
        .as_ref()
        .unwrap_or_else(|| panic!("{name} has no training part"));
    for p in PROGRAMS {
        for ds in p.datasets {
            let row = t
                .summary
                .iter()
                .find(|s| s.program == p.id && s.dataset == *ds)
                .unwrap_or_else(|| panic!("no training row for {} on {ds}", p.id));
            assert!(
                row.ours_epoch_s > 0.0 && row.ours_test_accuracy > 0.5,
                "{row:?}"
            );
            assert!(row.ours_peak_rss_mib > 0.0 && row.ours_inference_images_per_s > 0.0);
            // The recorded reference has Keras on every program on Fashion-MNIST (and E), and on
            // A–C on MNIST; PyTorch on A–C.
            if *ds != "mnist" || "ABC".contains(p.id) {
                assert!(
                    row.keras_epoch_s.is_some(),
                    "no Keras figure for {} on {ds}",
                    p.id
                );
            }
            if "ABC".contains(p.id) {
                assert!(
                    row.torch_epoch_s.is_some(),
                    "no PyTorch figure for {} on {ds}",
                    p.id
                );
            }
            let run = t
                .runs
                .iter()
                .find(|r| r.program == p.id && r.dataset == *ds)
                .unwrap();
            assert_eq!(
                run.epoch_s.len(),
                run.epochs * bench_suite::training::RUNS_OF_OURS,
                "one time per epoch of each run"
            );
        }
    }
    let l = r
        .layers
        .as_ref()
        .unwrap_or_else(|| panic!("{name} has no layers part"));
    assert_eq!(l.measurements.len(), 9, "three passes of three layers");
    for m in &l.measurements {
        assert!(
            m.ours_gflops > 0.0 && m.speedup_vs_openblas.is_some_and(f64::is_finite),
            "{m:?}"
        );
    }
    assert!(l.ours_gemm_1024_gflops > 0.0);
    for m in l.measurements.iter().filter(|m| m.layer.starts_with("56")) {
        assert!(
            m.gemm_1024_gflops.is_some_and(|g| g > 0.0),
            "the VGG-style passes carry their same-round GEMM yardstick: {m:?}"
        );
    }
    let md = results_markdown(&r, &name);
    let committed_md = std::fs::read_to_string(results_dir().join("README.md")).unwrap();
    assert_eq!(
        md, committed_md,
        "results/README.md was not written from {name}"
    );
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
            // LIBXSMM (and our planned products beside it) is measured on the small products
            // only, reading A and B alone on the one-row and one-column ones.
            let serves = |lib: &str| match lib {
                "libxsmm" => Library::Libxsmm.serves(shape),
                OURS_PLANNED => Library::OursPlanned.serves(shape),
                READ_OPERANDS => shape.is_vector(),
                _ => true,
            };
            for lib in libs.iter().filter(|l| serves(l)) {
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
            assert_eq!(
                row.fraction_of_memory_bandwidth.is_some(),
                shape.is_vector(),
                "{}: the fraction of the memory bandwidth is for vector products",
                shape.label()
            );
            // Where the run read the operands alone, its vector rows are held against that.
            if libs.iter().any(|l| l == READ_OPERANDS) {
                assert_eq!(
                    row.fraction_of_read_bandwidth.is_some(),
                    shape.is_vector(),
                    "{}: the fraction of reading A and B is for vector products",
                    shape.label()
                );
            }
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

#[test]
fn the_committed_data_parallel_run_is_complete_and_its_page_is_its_rendering() {
    use bench_suite::distributed::{markdown, DistributedReport};
    let text = std::fs::read_to_string(results_dir().join("distributed.json"))
        .expect("results/distributed.json (the report's distributed part)");
    let r: DistributedReport = serde_json::from_str(&text).expect("the schema");
    // Both batches compared, 2 and 4 ranks' sums, every projected point.
    let batches: Vec<usize> = r.comparisons.iter().map(|c| c.batch).collect();
    assert_eq!(batches, [256, 32]);
    for ranks in [2, 4] {
        assert!(r.sums.iter().filter(|s| s.ranks == ranks).count() >= 5);
    }
    assert_eq!(r.projections.len(), 18);
    for c in &r.comparisons {
        assert!(c.ratio > 0.0 && !c.rounds.is_empty());
    }
    let page = std::fs::read_to_string(results_dir().join("distributed.md")).expect("the page");
    assert_eq!(
        page,
        markdown(&r),
        "results/distributed.md is not distributed.json rendered"
    );
}
