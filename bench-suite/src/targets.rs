//! The GEMM work's targets judged from one run's figures: each target, what the run measured
//! for it, and whether it holds. The figures are the report's own (the summary's ratios, the
//! fractions of the same run's peak and bandwidth, the layers' speed-ups); nothing here
//! measures, so a committed run can be re-judged by rendering it again.

use crate::gemm_bench::{Shape, OURS_PLANNED};
use crate::layers_bench::LayersReport;
use crate::report::{GemmReport, SummaryRow};

/// Ours ÷ the best peer on every shape, every thread count.
const EVERY_SHAPE: f64 = 1.0;
/// The geometric mean of ours ÷ the best peer over a thread count's shapes.
const GEOMEAN: f64 = 1.15;
/// The large squares' fraction of the same run's FMA peak: one thread, and more.
const SQUARES_OF_PEAK: (f64, f64) = (0.90, 0.85);
/// The large squares the peak targets name.
const SQUARES: [usize; 2] = [1024, 2048];
/// One-row and one-column products: the bytes of their operands ÷ our time ÷ the run's memory
/// bandwidth.
const VECTOR_OF_BANDWIDTH: f64 = 0.85;
/// Products of at most this on every side are LIBXSMM's ground.
const SMALL_SIDE: usize = 64;
/// Ours ÷ LIBXSMM on those.
const SMALL_OVER_LIBXSMM: f64 = 0.9;
/// Every convolution pass: im2col + OpenBLAS's time ÷ ours.
const CONVOLUTION: f64 = 1.0;

/// One target and what the run measured for it.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub what: String,
    pub measured: String,
    /// `None` where the run measured nothing the target speaks of.
    pub met: Option<bool>,
}

/// The thread counts of the summary, in the order they first appear.
fn thread_counts(g: &GemmReport) -> Vec<usize> {
    let mut counts = Vec::new();
    for row in &g.summary {
        if !counts.contains(&row.threads) {
            counts.push(row.threads);
        }
    }
    counts
}

fn threads_label(t: usize) -> String {
    if t == 1 {
        "1 thread".into()
    } else {
        format!("{t} threads")
    }
}

/// The lowest of `ratios` (label, ratio) with its label, and how many reach `at_least`.
fn lowest(ratios: &[(String, f64)], at_least: f64) -> (usize, Option<&(String, f64)>) {
    let reaching = ratios.iter().filter(|(_, r)| *r >= at_least).count();
    (reaching, ratios.iter().min_by(|a, b| a.1.total_cmp(&b.1)))
}

/// "k of n …; lowest x (label)" for a target over several figures, and whether all reach it.
fn every(what: String, ratios: &[(String, f64)], at_least: f64, fmt: fn(f64) -> String) -> Target {
    let (reaching, low) = lowest(ratios, at_least);
    match low {
        None => Target {
            what,
            measured: "not measured".into(),
            met: None,
        },
        Some((label, r)) => Target {
            what,
            measured: format!(
                "{reaching} of {}; lowest {} ({label})",
                ratios.len(),
                fmt(*r)
            ),
            met: Some(reaching == ratios.len()),
        },
    }
}

/// Rounded down, so that a figure short of its target never prints as the target itself.
fn ratio(r: f64) -> String {
    format!("{:.2}", (100.0 * r).floor() / 100.0)
}

/// Rounded down, as [`ratio`].
fn percent(r: f64) -> String {
    format!("{:.0} %", (100.0 * r).floor())
}

/// The GEMM work's targets for `g` (and the convolution passes of `layers`, where the run had
/// that part).
pub fn gemm_targets(g: &GemmReport, layers: Option<&LayersReport>) -> Vec<Target> {
    let mut out = Vec::new();
    for t in thread_counts(g) {
        let rows: Vec<&SummaryRow> = g.summary.iter().filter(|r| r.threads == t).collect();
        let vs_best: Vec<(String, f64)> = rows
            .iter()
            .filter(|r| r.ours_over_best_peer.is_finite())
            .map(|r| {
                (
                    format!("{}, {}", r.shape, r.best_peer),
                    r.ours_over_best_peer,
                )
            })
            .collect();
        out.push(every(
            format!(
                "every shape, {}: ours ÷ the best peer ≥ {EVERY_SHAPE:.1}",
                threads_label(t)
            ),
            &vs_best,
            EVERY_SHAPE,
            ratio,
        ));
        let geomean = (!vs_best.is_empty()).then(|| {
            (vs_best.iter().map(|(_, r)| r.ln()).sum::<f64>() / vs_best.len() as f64).exp()
        });
        out.push(Target {
            what: format!(
                "geometric mean over the shapes, {}: ours ÷ the best peer ≥ {GEOMEAN:.2}",
                threads_label(t)
            ),
            measured: geomean.map_or("not measured".into(), |m| {
                format!("{} over {} shapes", ratio(m), vs_best.len())
            }),
            met: geomean.map(|m| m >= GEOMEAN),
        });
        let want = if t == 1 {
            SQUARES_OF_PEAK.0
        } else {
            SQUARES_OF_PEAK.1
        };
        let squares: Vec<(String, f64)> = rows
            .iter()
            .filter(|r| {
                Shape::parse_label(&r.shape).is_some_and(|s| {
                    s.is_plain() && s.m == s.k && s.k == s.n && SQUARES.contains(&s.m)
                })
            })
            .filter_map(|r| r.fraction_of_fma_peak.map(|f| (r.shape.clone(), f)))
            .collect();
        out.push(every(
            format!(
                "{}: of the FMA peak ≥ {}",
                SQUARES.map(|s| format!("{s}³")).join(" and ") + ", " + &threads_label(t),
                percent(want)
            ),
            &squares,
            want,
            percent,
        ));
        let vectors: Vec<(String, f64)> = rows
            .iter()
            .filter_map(|r| r.fraction_of_memory_bandwidth.map(|f| (r.shape.clone(), f)))
            .collect();
        out.push(every(
            format!(
                "one-row and one-column products, {}: of the memory bandwidth ≥ {}",
                threads_label(t),
                percent(VECTOR_OF_BANDWIDTH)
            ),
            &vectors,
            VECTOR_OF_BANDWIDTH,
            percent,
        ));
        let ours = rows.first().map(|r| r.ours_path.as_str()).unwrap_or("");
        let planned = g
            .runs
            .iter()
            .filter(|run| run.threads == t)
            .flat_map(|run| &run.measurements)
            .any(|m| m.library == OURS_PLANNED);
        let small: Vec<(String, f64)> = g
            .runs
            .iter()
            .filter(|run| run.threads == t)
            .flat_map(|run| {
                let of = move |library: &str, shape: Shape| {
                    run.measurements
                        .iter()
                        .find(|m| m.library == library && m.shape == shape)
                        .map(|m| m.gflops_median)
                };
                run.measurements
                    .iter()
                    .filter(|m| {
                        m.library == "libxsmm"
                            && m.shape.m.max(m.shape.k).max(m.shape.n) <= SMALL_SIDE
                    })
                    .filter_map(move |m| {
                        // Planned once per shape, as LIBXSMM dispatches once, where the run
                        // measured that (older runs: our plain calls).
                        of(OURS_PLANNED, m.shape)
                            .or_else(|| of(ours, m.shape))
                            .map(|o| (m.shape.label(), o / m.gflops_median))
                    })
            })
            .collect();
        out.push(every(
            format!(
                "products of at most {SMALL_SIDE} on every side, {}: ours{} ÷ LIBXSMM \
                 ≥ {SMALL_OVER_LIBXSMM:.1}",
                threads_label(t),
                if planned {
                    " (planned once per shape, as LIBXSMM's kernels are dispatched once)"
                } else {
                    ""
                }
            ),
            &small,
            SMALL_OVER_LIBXSMM,
            ratio,
        ));
    }
    if let Some(l) = layers {
        let passes: Vec<(String, f64)> = l
            .measurements
            .iter()
            .filter_map(|m| {
                m.speedup_vs_openblas
                    .map(|s| (format!("{} {}", m.layer, m.pass), s))
            })
            .collect();
        out.push(every(
            format!(
                "every convolution pass, {}: im2col + OpenBLAS's time ÷ ours ≥ {CONVOLUTION:.1}",
                threads_label(l.threads)
            ),
            &passes,
            CONVOLUTION,
            ratio,
        ));
    }
    out
}

/// The targets as a markdown section.
pub fn gemm_targets_markdown(g: &GemmReport, layers: Option<&LayersReport>) -> String {
    let mut out = String::from(
        "## The GEMM work's targets, judged from this run\n\n\
         Each figure below is one of this page's own (the ratios and fractions of the tables, \
         medians of interleaved rounds), rounded down. A count \"k of n\" is how many of the \
         shapes or passes reach the target.\n\n\
         | target | this run | met |\n|---|---|:---:|\n",
    );
    for t in gemm_targets(g, layers) {
        let met = match t.met {
            Some(true) => "✓",
            Some(false) => "✗",
            None => "—",
        };
        out += &format!("| {} | {} | {met} |\n", t.what, t.measured);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gemm_bench::Measurement;
    use crate::layers_bench::ConvMeasurement;
    use crate::report::{GemmChildReport, MachineInfo};

    fn measurement(library: &str, shape: Shape, threads: usize, gflops: f64) -> Measurement {
        Measurement {
            library: library.into(),
            shape,
            threads,
            gflops_median: gflops,
            samples: 3,
            max_rel_diff_vs_openblas: 0.0,
        }
    }

    /// One thread: 64³ ours 90 against LIBXSMM 100 (0.90, the target's edge) and OpenBLAS 80;
    /// 1024³ ours 180 against OpenBLAS 150 at a peak of 200 (90 %); a one-column product at
    /// twice OpenBLAS's speed. Two threads: 64³ ours 80 (95 planned once) against LIBXSMM
    /// 100 and 1024³ 300 against 310 at a peak of 400 (75 %).
    fn report() -> GemmReport {
        let (small, square, column) = (
            Shape::new(64, 64, 64),
            Shape::new(1024, 1024, 1024),
            Shape::new(4096, 4096, 1),
        );
        let one = GemmChildReport {
            threads: 1,
            fma_peak_avx512_gflops: None,
            fma_peak_avx2_gflops: Some(200.0),
            measurements: vec![
                measurement("ours-avx2", small, 1, 90.0),
                measurement("openblas", small, 1, 80.0),
                measurement("libxsmm", small, 1, 100.0),
                measurement("ours-avx2", square, 1, 180.0),
                measurement("openblas", square, 1, 150.0),
                measurement("ours-avx2", column, 1, 10.0),
                measurement("openblas", column, 1, 5.0),
            ],
        };
        let two = GemmChildReport {
            threads: 2,
            fma_peak_avx512_gflops: None,
            fma_peak_avx2_gflops: Some(400.0),
            measurements: vec![
                measurement("ours-avx2", small, 2, 80.0),
                measurement(OURS_PLANNED, small, 2, 95.0),
                measurement("openblas", small, 2, 70.0),
                measurement("libxsmm", small, 2, 100.0),
                measurement("ours-avx2", square, 2, 300.0),
                measurement("openblas", square, 2, 310.0),
            ],
        };
        // Bandwidth 20 GB/s on one thread: the column product moves 4·(4096² + 4096) bytes per
        // 2·4096² flops, so 10 GFLOP/s is 20.0 GB/s: 100 %.
        GemmReport::new(
            MachineInfo::for_tests(),
            3,
            vec![one, two],
            &[],
            &[(1, 20.0)],
        )
    }

    fn find<'a>(targets: &'a [Target], starts: &str) -> &'a Target {
        targets
            .iter()
            .find(|t| t.what.starts_with(starts))
            .unwrap_or_else(|| panic!("no target starting {starts:?} in {targets:#?}"))
    }

    #[test]
    fn each_target_is_judged_from_the_reports_own_figures() {
        let g = report();
        let targets = gemm_targets(&g, None);
        let every_one = find(&targets, "every shape, 1 thread");
        assert_eq!(
            (every_one.measured.as_str(), every_one.met),
            ("2 of 3; lowest 0.90 (64x64x64, libxsmm)", Some(false))
        );
        let geomean_one = find(&targets, "geometric mean over the shapes, 1 thread");
        // (0.9 · 1.2 · 2)^(1/3) = 1.293.
        assert_eq!(
            (geomean_one.measured.as_str(), geomean_one.met),
            ("1.29 over 3 shapes", Some(true))
        );
        let squares_one = find(&targets, "1024³ and 2048³, 1 thread");
        assert_eq!(
            (squares_one.measured.as_str(), squares_one.met),
            ("1 of 1; lowest 90 % (1024x1024x1024)", Some(true))
        );
        let squares_two = find(&targets, "1024³ and 2048³, 2 threads");
        assert_eq!(
            (squares_two.measured.as_str(), squares_two.met),
            ("0 of 1; lowest 75 % (1024x1024x1024)", Some(false))
        );
        let vector_one = find(&targets, "one-row and one-column products, 1 thread");
        assert_eq!(
            (vector_one.measured.as_str(), vector_one.met),
            ("1 of 1; lowest 100 % (4096x4096x1)", Some(true))
        );
        // No bandwidth measured on two threads: the target is not judged.
        let vector_two = find(&targets, "one-row and one-column products, 2 threads");
        assert_eq!(vector_two.met, None);
        let small_one = find(&targets, "products of at most 64 on every side, 1 thread");
        assert_eq!(
            (small_one.measured.as_str(), small_one.met),
            ("1 of 1; lowest 0.90 (64x64x64)", Some(true))
        );
        assert!(!small_one.what.contains("planned"), "{}", small_one.what);
        // Two threads measured our planned products: they, not the plain calls, stand against
        // LIBXSMM's dispatched kernels (and are no peer of the plain calls).
        let small_two = find(&targets, "products of at most 64 on every side, 2 threads");
        assert_eq!(
            (small_two.measured.as_str(), small_two.met),
            ("1 of 1; lowest 0.95 (64x64x64)", Some(true))
        );
        assert!(
            small_two.what.contains("planned once per shape"),
            "{}",
            small_two.what
        );
        let every_two = find(&targets, "every shape, 2 threads");
        assert!(
            every_two.measured.contains("libxsmm"),
            "{}",
            every_two.measured
        );
        // No layers part: no convolution target.
        assert!(!targets.iter().any(|t| t.what.contains("convolution")));
    }

    #[test]
    fn the_convolution_passes_are_judged_where_the_run_timed_them() {
        let pass = |pass: &str, speedup: Option<f64>| ConvMeasurement {
            layer: "56×56×64 → 64".into(),
            pass: pass.into(),
            flops: 1.0,
            ours_s: 1.0,
            openblas_s: speedup,
            ours_gflops: 1.0,
            openblas_gflops: speedup,
            speedup_vs_openblas: speedup,
            gemm_1024_gflops: None,
        };
        let layers = LayersReport {
            threads: 2,
            rounds: 3,
            measurements: vec![
                pass("forward", Some(1.2)),
                pass("backward input", Some(0.97)),
                pass("backward weights", None),
            ],
            ours_gemm_1024_gflops: 1.0,
        };
        let targets = gemm_targets(&report(), Some(&layers));
        let conv = find(&targets, "every convolution pass, 2 threads");
        assert_eq!(
            (conv.measured.as_str(), conv.met),
            (
                "1 of 2; lowest 0.97 (56×56×64 → 64 backward input)",
                Some(false)
            )
        );
        let md = gemm_targets_markdown(&report(), Some(&layers));
        assert!(
            md.contains(
                "| every convolution pass, 2 threads: im2col + OpenBLAS's time ÷ ours ≥ 1.0 \
                 | 1 of 2; lowest 0.97 (56×56×64 → 64 backward input) | ✗ |"
            ),
            "{md}"
        );
        assert!(md.contains("| — |"), "{md}");
    }
}
