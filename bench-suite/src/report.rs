//! The report's data model (what `results/*.json` holds), its markdown rendering, and atomic file
//! writes. Kept in the library so a test can check the schema the report program writes.

use serde::{Deserialize, Serialize};

use crate::gemm_bench::{Measurement, Shape, FMA_PEAK, READ_OPERANDS};
use crate::layers_bench::LayersReport;
use crate::training::TrainingReport;

/// Bumped whenever a field is renamed or removed.
pub const SCHEMA_VERSION: u32 = 2;

/// What the report knows of the machine it ran on.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MachineInfo {
    pub cpu: String,
    pub cores: usize,
    pub host: String,
    pub best_isa: String,
    pub available_isas: Vec<String>,
    pub kernels_version: String,
    /// BLIS's version and the kernel configuration it chose here, when BLIS is installed.
    #[serde(default)]
    pub blis: Option<String>,
    /// The data caches `kernels` detected (and where it read them), absent in older reports.
    #[serde(default)]
    pub caches: Option<String>,
    /// Our path's tiles with the block sizes the cache model derived from those caches.
    #[serde(default)]
    pub gemm_blocking: Vec<String>,
    /// `OPENBLAS_CORETYPE` when the run's environment forced OpenBLAS's kernel choice.
    #[serde(default)]
    pub openblas_coretype: Option<String>,
    /// The kernel set OpenBLAS ran in this run (its `openblas_get_corename`), absent in older
    /// reports and in builds without OpenBLAS.
    #[serde(default)]
    pub openblas_core: Option<String>,
    /// What OpenBLAS picked by itself when the report forced another set because that pick was
    /// its fallback for an unknown CPU ([`crate::machine::openblas_core_to_force`]).
    #[serde(default)]
    pub openblas_picked: Option<String>,
    /// LIBXSMM's code-generation target, when the build linked it.
    #[serde(default)]
    pub libxsmm: Option<String>,
}

impl MachineInfo {
    pub fn detect() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let field = |name: &str| {
            cpuinfo
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split(':').nth(1))
                .map(|v| v.trim().to_string())
        };
        let cpu = match (field("model name"), field("cpu family"), field("model\t")) {
            (Some(name), Some(fam), Some(model)) => format!("{name} (family {fam}, model {model})"),
            (Some(name), _, _) => name,
            _ => std::env::consts::ARCH.to_string(),
        };
        MachineInfo {
            cpu,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            host: std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "unknown".into()),
            best_isa: kernels::Isa::best().to_string(),
            available_isas: kernels::Isa::available()
                .iter()
                .map(|i| i.to_string())
                .collect(),
            kernels_version: env!("CARGO_PKG_VERSION").to_string(),
            blis: bench_peers::Blis::get()
                .ok()
                .map(|b| format!("BLIS {} (configuration '{}')", b.version(), b.config())),
            caches: Some(kernels::cpu::cache_info().to_string()),
            gemm_blocking: kernels::gemm_blocking(kernels::Isa::best())
                .iter()
                .map(|t| t.to_string())
                .collect(),
            openblas_coretype: std::env::var("OPENBLAS_CORETYPE").ok(),
            #[cfg(feature = "openblas")]
            openblas_core: Some(bench_peers::openblas_core()),
            #[cfg(not(feature = "openblas"))]
            openblas_core: None,
            openblas_picked: std::env::var(crate::machine::OPENBLAS_PICKED_VAR).ok(),
            libxsmm: bench_peers::Libxsmm::get().ok().map(|x| {
                format!(
                    "LIBXSMM 1.17 (static; code generated for '{}'; BLAS fallback {}; \
                     single-threaded, measured on products of at most 64 on every side)",
                    x.target(),
                    if cfg!(feature = "openblas") {
                        "OpenBLAS"
                    } else {
                        "none"
                    }
                )
            }),
        }
    }

    /// The lines that say what the peers and our blocking were on this machine (markdown).
    pub fn setup_markdown(&self) -> String {
        let mut out = String::new();
        if let Some(c) = &self.caches {
            out += &format!(
                "Caches: {c}.
"
            );
        }
        if !self.gemm_blocking.is_empty() {
            out += &format!(
                "Our {} blocking from the cache model: {}.
",
                self.best_isa,
                self.gemm_blocking.join("; ")
            );
        }
        if let Some(b) = &self.blis {
            out += &format!(
                "{b}.
"
            );
        }
        if let Some(x) = &self.libxsmm {
            out += &format!("{x}.\n");
        }
        match (
            &self.openblas_coretype,
            &self.openblas_picked,
            &self.openblas_core,
        ) {
            (Some(t), Some(picked), core) => {
                out += &format!(
                    "OpenBLAS picked its '{picked}' kernels for this CPU, its fallback for a CPU \
                     its tables do not list: the report forced the set for the CPU's \
                     instructions (OPENBLAS_CORETYPE={t}){}.\n",
                    match core {
                        Some(c) if c != t => format!(", and OpenBLAS ran its '{c}' kernels"),
                        _ => String::new(),
                    }
                );
            }
            (Some(t), None, _) => {
                out += &format!("OpenBLAS's kernels forced by OPENBLAS_CORETYPE={t}.\n");
            }
            (None, _, Some(core)) if !core.is_empty() => {
                out += &format!("OpenBLAS's kernels: '{core}' (its own pick for this CPU).\n");
            }
            (None, _, _) => {}
        }
        out
    }
}

/// One thread count's measurements, as a measuring child process reports them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GemmChildReport {
    pub threads: usize,
    pub fma_peak_avx512_gflops: Option<f64>,
    pub fma_peak_avx2_gflops: Option<f64>,
    pub measurements: Vec<Measurement>,
}

impl GemmChildReport {
    /// The child's FMA peak for the instruction set named `best_isa` (our best path's).
    pub fn peak_of(&self, best_isa: &str) -> Option<f64> {
        if best_isa == "avx512" {
            self.fma_peak_avx512_gflops
        } else {
            self.fma_peak_avx2_gflops
        }
    }
}

/// One line of the summary: our default path against the peers on one shape and thread count.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SummaryRow {
    pub shape: String,
    pub threads: usize,
    pub ours_path: String,
    pub ours_gflops: f64,
    pub openblas_gflops: f64,
    pub best_peer: String,
    pub best_peer_gflops: f64,
    pub ours_over_openblas: f64,
    pub ours_over_best_peer: f64,
    pub fraction_of_fma_peak: Option<f64>,
    /// What `fraction_of_fma_peak` divides by: the FMA peak timed in the shape's own rounds
    /// where the run did ([`FMA_PEAK`]), else the best FMA-peak measurement of the run on this
    /// thread count for our path's instruction set (absent in reports written before either).
    #[serde(default)]
    pub fma_peak_gflops: Option<f64>,
    /// One-row and one-column products: bytes of A and B ÷ our time ÷ the same run's memory
    /// bandwidth on this thread count.
    #[serde(default)]
    pub fraction_of_memory_bandwidth: Option<f64>,
    /// One-row and one-column products: our speed ÷ the speed of only reading A and B, timed
    /// interleaved with the libraries ([`READ_OPERANDS`]): the product's own limit, from
    /// whichever cache or memory holds its matrix (absent in reports written before it was
    /// measured).
    #[serde(default)]
    pub fraction_of_read_bandwidth: Option<f64>,
}

impl SummaryRow {
    /// The last column of the tables: for vector products (bandwidth-bound) the fraction of the
    /// rate of reading their bytes, and of the triad's bandwidth; of the FMA peak otherwise.
    pub fn fraction_of_limit(&self) -> String {
        match (self.fraction_of_memory_bandwidth, self.fraction_of_fma_peak) {
            (Some(f), _) => match self.fraction_of_read_bandwidth {
                Some(r) => format!(
                    "{:.0} % of reading its bytes ({:.0} % of triad)",
                    100.0 * r,
                    100.0 * f
                ),
                None => format!("{:.0} % of bandwidth", 100.0 * f),
            },
            (None, Some(f)) => format!("{:.0} %", 100.0 * f),
            (None, None) => "—".into(),
        }
    }
}

/// The whole GEMM report (`results/gemm.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GemmReport {
    pub schema_version: u32,
    pub date_utc: String,
    pub machine: MachineInfo,
    pub method: String,
    pub rounds: usize,
    pub runs: Vec<GemmChildReport>,
    pub summary: Vec<SummaryRow>,
}

impl GemmReport {
    /// The summary of the children's `runs`. `machine_peaks` are the FMA peaks (thread count,
    /// GFLOP/s) the same run measured for our path's instruction set outside the children: a
    /// peak measurement can only come out low (the VM's noise slows it, nothing speeds it up), so
    /// each thread count's fraction of peak divides by the best of its measurements.
    pub fn new(
        machine: MachineInfo,
        rounds: usize,
        runs: Vec<GemmChildReport>,
        machine_peaks: &[(usize, f64)],
        machine_bandwidths: &[(usize, f64)],
    ) -> Self {
        let ours_name = format!("ours-{}", machine.best_isa);
        let mut summary = Vec::new();
        for run in &runs {
            let child_peak = run.peak_of(&machine.best_isa);
            let peak = machine_peaks
                .iter()
                .filter(|&&(t, _)| t == run.threads)
                .map(|&(_, p)| p)
                .chain(child_peak)
                .max_by(f64::total_cmp);
            let bandwidth = machine_bandwidths
                .iter()
                .find(|&&(t, _)| t == run.threads)
                .map(|&(_, b)| b);
            let mut shapes: Vec<Shape> = Vec::new();
            for m in &run.measurements {
                if !shapes.contains(&m.shape) {
                    shapes.push(m.shape);
                }
            }
            for shape in shapes {
                let label = shape.label();
                let of = |pred: &dyn Fn(&str) -> bool| {
                    run.measurements
                        .iter()
                        .filter(|m| m.shape.label() == label && pred(&m.library))
                        .map(|m| (m.library.clone(), m.gflops_median))
                        .max_by(|a, b| a.1.total_cmp(&b.1))
                };
                let Some((_, ours)) = of(&|l| l == ours_name) else {
                    continue;
                };
                let openblas = of(&|l| l == "openblas").map_or(f64::NAN, |x| x.1);
                let (best_peer, best) =
                    of(&|l| !l.starts_with("ours-") && l != READ_OPERANDS && l != FMA_PEAK)
                        .unwrap_or(("none".into(), f64::NAN));
                // Measured on the vector products only.
                let read = of(&|l| l == READ_OPERANDS).map(|(_, read)| read);
                // The peak timed in this shape's own rounds where the run did (a swinging
                // machine's run-wide best stands against figures from its slow moments).
                let peak = of(&|l| l == FMA_PEAK).map(|(_, p)| p).or(peak);
                summary.push(SummaryRow {
                    shape: label,
                    threads: run.threads,
                    ours_path: ours_name.clone(),
                    ours_gflops: ours,
                    openblas_gflops: openblas,
                    best_peer,
                    best_peer_gflops: best,
                    ours_over_openblas: ours / openblas,
                    ours_over_best_peer: ours / best,
                    fraction_of_fma_peak: peak.map(|p| ours / p),
                    fma_peak_gflops: peak,
                    fraction_of_memory_bandwidth: bandwidth
                        .filter(|_| shape.is_vector())
                        .map(|bw| ours * shape.bytes() / shape.flops() / bw),
                    fraction_of_read_bandwidth: read.map(|read| ours / read),
                });
            }
        }
        GemmReport {
            schema_version: SCHEMA_VERSION,
            date_utc: utc_date_now(),
            machine,
            method: "f32 C = A·B, row-major (A or B stored transposed where a shape says :at or :bt), alpha = 1, beta = 0; per shape, each library is timed in \
                     interleaved rounds (one sample of each per round, a sample being ≥ 30 ms of back-to-back \
                     calls after a warm-up; on several threads a pause before each sample, at least 50 ms and \
                     then until the process's other threads have been idle for 20 ms (at most 500 ms), for the \
                     previous library's spinning threads to let go of the cores (OpenBLAS's spin about \
                     100 ms after a call), then a quarter of a \
                     sample's calls untimed, for the idle cores to come back up); figures are the \
                     median over rounds; each thread count runs in \
                     its own process with OPENBLAS/MATMUL/RAYON_NUM_THREADS set; FMA peak = independent \
                     FMA chains of our path's instructions on the same threads, timed once per round \
                     right after our path like a library (ours ÷ FMA peak divides by the median of \
                     those samples of the same shape's rounds, where the loop exists for our path: x86; \
                     the child's and the run's best peak measurements are in the tables' headings); \
                     ours-planned: our best path through a GemmPlan made once per shape (kept per \
                     thread, as the LIBXSMM peer keeps its dispatched kernel), timed on LIBXSMM's \
                     shapes only and set against LIBXSMM alone: ours ÷ best peer uses our plain calls"
                .into(),
            rounds,
            runs,
            summary,
        }
    }
}

/// What a shape's `:at` / `:bt` suffix means, on the pages of a run that measured such shapes.
pub(crate) const TRANSPOSED_NOTE: &str =
    "Shapes labelled `:at` have A stored transposed (held as its K × M \
     transpose, row-major, and read by columns), `:bt` B (held as N × K); every library reads \
     them so, LIBXSMM excepted (row-major products only).\n";

/// The markdown summary (`results/gemm.md`).
pub fn gemm_markdown(report: &GemmReport) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "# GEMM: ours against the peers, one run\n\n{} · {} · {} cores · our path {} · {}\n\n",
        report.date_utc,
        report.machine.cpu,
        report.machine.cores,
        report.machine.best_isa,
        report.method
    ));
    out += &report.machine.setup_markdown();
    if report
        .runs
        .iter()
        .flat_map(|r| &r.measurements)
        .any(|m| !m.shape.is_plain())
    {
        out += TRANSPOSED_NOTE;
    }
    for run in &report.runs {
        out.push_str(&format!(
            "\n## {} thread(s)\n\nFMA peak measured in the same run: AVX-512 {} GFLOP/s, AVX2 {} GFLOP/s{}.\n\n",
            run.threads,
            run.fma_peak_avx512_gflops.map_or("n/a".into(), |p| format!("{p:.0}")),
            run.fma_peak_avx2_gflops.map_or("n/a".into(), |p| format!("{p:.0}")),
            report
                .summary
                .iter()
                .find(|r| r.threads == run.threads)
                .and_then(|r| r.fma_peak_gflops)
                .map_or(String::new(), |p| if run.measurements.iter().any(|m| m.library == FMA_PEAK) {
                    "; ours ÷ FMA peak divides by the peak loop timed in each shape's own rounds \
                     (the FMA peak column, our path's instructions, the same threads)"
                        .to_string()
                } else {
                    format!(
                        "; ours ÷ FMA peak divides by {p:.0} GFLOP/s, the run's best on {} thread(s)",
                        run.threads
                    )
                }),
        ));
        let mut libs: Vec<String> = Vec::new();
        for m in &run.measurements {
            if !libs.contains(&m.library) {
                libs.push(m.library.clone());
            }
        }
        out.push_str("| M×K×N |");
        for l in &libs {
            out.push_str(&format!(" {l} |"));
        }
        out.push_str(" ours ÷ OpenBLAS | ours ÷ best peer (which) | ours ÷ FMA peak |\n|---|");
        for _ in &libs {
            out.push_str("---:|");
        }
        out.push_str("---:|---:|---:|\n");
        for row in report.summary.iter().filter(|r| r.threads == run.threads) {
            out.push_str(&format!("| {} |", row.shape));
            for l in &libs {
                let g = run
                    .measurements
                    .iter()
                    .find(|m| m.shape.label() == row.shape && &m.library == l)
                    .map_or(f64::NAN, |m| m.gflops_median);
                out.push_str(&format!(" {g:.1} |"));
            }
            out.push_str(&format!(
                " {:.2} | {:.2} ({}) | {} |\n",
                row.ours_over_openblas,
                row.ours_over_best_peer,
                row.best_peer,
                row.fraction_of_limit(),
            ));
        }
    }
    out.push_str("\nGFLOP/s = 2·M·N·K / time. Worst relative difference of any library's C from OpenBLAS's: ");
    let worst = report
        .runs
        .iter()
        .flat_map(|r| &r.measurements)
        .map(|m| m.max_rel_diff_vs_openblas)
        .fold(0.0f64, f64::max);
    out.push_str(&format!("{worst:.1e}.\n"));
    out
}

/// Today's UTC date as YYYY-MM-DD (from the system clock; civil-from-days by H. Hinnant).
pub fn utc_date_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    let z = secs.div_euclid(86_400) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// The machine's own limits, measured in the same run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MachinePerf {
    /// (threads, GFLOP/s) of independent FMA chains on our best path.
    pub fma_peak_gflops: Vec<(usize, f64)>,
    /// (threads, GB/s) of a STREAM-style triad over 128 MiB arrays.
    pub memory_bandwidth_gbs: Vec<(usize, f64)>,
}

impl MachinePerf {
    /// Records `gflops` as the FMA peak on `threads` threads where it beats the figure held: a
    /// peak measurement is only ever lowered by what else the machine does, so the best of a
    /// run's measurements is the truest (on a VM whose speed swings, one measured at a slow
    /// moment put our kernels at 119 % of the "peak").
    pub fn raise_peak(&mut self, threads: usize, gflops: f64) {
        if !gflops.is_finite() {
            return;
        }
        match self.fma_peak_gflops.iter_mut().find(|(t, _)| *t == threads) {
            Some((_, p)) => *p = p.max(gflops),
            None => self.fma_peak_gflops.push((threads, gflops)),
        }
    }
}

/// Everything one report run measured: `results/<date>-<host>.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Results {
    pub schema_version: u32,
    pub date_utc: String,
    pub machine: MachineInfo,
    pub machine_perf: MachinePerf,
    pub gemm: Option<GemmReport>,
    pub layers: Option<LayersReport>,
    pub training: Option<TrainingReport>,
}

/// A machine for the tests of the pages' rendering: two cores, AVX2 our best path, nothing
/// else detected.
#[cfg(test)]
impl MachineInfo {
    pub(crate) fn for_tests() -> MachineInfo {
        MachineInfo {
            cpu: "test".into(),
            cores: 2,
            host: "test".into(),
            best_isa: "avx2".into(),
            available_isas: vec!["avx2".into()],
            kernels_version: "0".into(),
            blis: None,
            caches: None,
            gemm_blocking: vec![],
            openblas_coretype: None,
            openblas_core: None,
            openblas_picked: None,
            libxsmm: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gemm_bench::{Measurement, Shape, READ_OPERANDS};

    fn child(threads: usize, avx2_peak: Option<f64>) -> GemmChildReport {
        let at = |library: &str, gflops_median: f64| Measurement {
            library: library.into(),
            shape: Shape::new(8, 8, 8),
            threads,
            gflops_median,
            samples: 3,
            max_rel_diff_vs_openblas: 0.0,
        };
        GemmChildReport {
            threads,
            fma_peak_avx512_gflops: None,
            fma_peak_avx2_gflops: avx2_peak,
            measurements: vec![at("ours-avx2", 60.0), at("openblas", 50.0)],
        }
    }

    #[test]
    fn a_peak_is_only_ever_raised() {
        let mut perf = MachinePerf {
            fma_peak_gflops: vec![(1, 100.0), (2, 180.0)],
            memory_bandwidth_gbs: vec![],
        };
        perf.raise_peak(1, 90.0);
        perf.raise_peak(2, 200.0);
        perf.raise_peak(2, f64::NAN);
        perf.raise_peak(4, 300.0);
        assert_eq!(
            perf.fma_peak_gflops,
            vec![(1, 100.0), (2, 200.0), (4, 300.0)]
        );
    }

    #[test]
    fn the_fraction_of_peak_divides_by_the_runs_best_peak_measurement() {
        let machine = MachineInfo::for_tests();
        // 1 thread: the child's own peak (80) was low, the machine table's (120) counts;
        // 2 threads: the child's (150) beats the table's (100); 3 threads: only the child's.
        let runs = vec![child(1, Some(80.0)), child(2, Some(150.0)), child(3, None)];
        let report = GemmReport::new(machine, 3, runs, &[(1, 120.0), (2, 100.0)], &[]);
        let peak_of = |t: usize| {
            let row = report.summary.iter().find(|r| r.threads == t).unwrap();
            (row.fma_peak_gflops, row.fraction_of_fma_peak)
        };
        assert_eq!(peak_of(1), (Some(120.0), Some(0.5)));
        assert_eq!(peak_of(2), (Some(150.0), Some(0.4)));
        assert_eq!(peak_of(3), (None, None));
        let md = gemm_markdown(&report);
        assert!(
            md.contains("divides by 120 GFLOP/s, the run's best on 1 thread(s)"),
            "{md}"
        );
        assert!(md.contains("| 50 % |"), "{md}");
    }

    #[test]
    fn a_peak_timed_in_the_shapes_rounds_is_what_its_fraction_divides_by() {
        let mut run = child(1, Some(100.0));
        let mut peak = run.measurements[0].clone();
        peak.library = FMA_PEAK.into();
        peak.gflops_median = 75.0;
        run.measurements.push(peak);
        let report = GemmReport::new(MachineInfo::for_tests(), 3, vec![run], &[(1, 120.0)], &[]);
        let row = &report.summary[0];
        // ours-avx2 at 60 over the same rounds' 75, not the run-wide best 120; the peak loop is
        // no peer.
        assert_eq!(
            (row.fma_peak_gflops, row.fraction_of_fma_peak),
            (Some(75.0), Some(0.8))
        );
        assert_eq!(row.best_peer, "openblas");
        let md = gemm_markdown(&report);
        assert!(md.contains("timed in each shape's own rounds"), "{md}");
    }

    #[test]
    fn vector_products_divide_by_the_rate_of_reading_their_bytes() {
        let machine = MachineInfo::for_tests();
        let shape = Shape::new(1000, 1000, 1);
        // 2 GFLOP/s over 2·10⁶ flops and 4.004·10⁶ bytes: 4.004 GB/s of the operands; reading
        // them alone ran at 4 GFLOP/s of the product.
        let mut run = child(1, None);
        for m in &mut run.measurements {
            m.shape = shape;
            m.gflops_median = if m.library == "ours-avx2" { 2.0 } else { 1.0 };
        }
        let mut read = run.measurements[0].clone();
        read.library = READ_OPERANDS.into();
        read.gflops_median = 4.0;
        run.measurements.push(read);
        let report = GemmReport::new(machine, 3, vec![run], &[], &[(1, 4.004)]);
        let row = &report.summary[0];
        assert!((row.fraction_of_memory_bandwidth.unwrap() - 1.0).abs() < 1e-12);
        assert!((row.fraction_of_read_bandwidth.unwrap() - 0.5).abs() < 1e-12);
        assert_eq!(
            row.fraction_of_limit(),
            "50 % of reading its bytes (100 % of triad)"
        );
        // Reading is not a peer.
        assert_eq!(row.best_peer, "openblas");
    }
}
