//! The training part of the report: the six reference programs (nn's examples `mlp_adam`,
//! `mlp_rmsprop`, `cnn_sparse`, `cnn_onehot`, `synthetic`, `cnn_bn` — the very programs a user
//! runs) on
//! MNIST and Fashion-MNIST, each in a child process of its own (so its peak resident memory is its
//! own), against Keras/TensorFlow and PyTorch: measured in the same run by the scripts in
//! `bench-suite/peers/` when those frameworks are installed, otherwise the recorded figures of
//! `shared/reference/`, labelled as such.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

/// One reference program: its letter (as in `shared/reference`), the example that implements
/// it, the data sets it runs on, and the targets.
#[derive(Debug, Clone, Copy)]
pub struct Program {
    pub id: &'static str,
    pub example: &'static str,
    pub description: &'static str,
    pub datasets: &'static [&'static str],
    /// The seconds per epoch the first wave set as our target (2 threads, one machine kind);
    /// `None` for programs added since, whose targets are the same-run ratios.
    pub target_epoch_s: Option<f64>,
}

pub const PROGRAMS: [Program; 6] = [
    Program {
        id: "A",
        example: "mlp_adam",
        description: "Flatten → Dense(128, relu) → Dense(10, softmax); adam; 10 epochs, batch 32",
        datasets: &["mnist", "fashion"],
        target_epoch_s: Some(0.35),
    },
    Program {
        id: "B",
        example: "mlp_rmsprop",
        description: "Dense(512, relu) → Dense(10, softmax); rmsprop; 5 epochs, batch 128",
        datasets: &["mnist", "fashion"],
        target_epoch_s: Some(0.6),
    },
    Program {
        id: "C",
        example: "cnn_sparse",
        description:
            "Conv2D(32, 3×3) → MaxPool(2×2) → Dense(128) → Dense(10); adam; sparse CE; 5 epochs",
        datasets: &["mnist", "fashion"],
        target_epoch_s: Some(2.5),
    },
    Program {
        id: "D",
        example: "cnn_onehot",
        description: "the CNN of C with one-hot labels, categorical CE; 5 epochs",
        datasets: &["mnist", "fashion"],
        target_epoch_s: Some(2.5),
    },
    Program {
        id: "E",
        example: "synthetic",
        description:
            "Dense(64, relu) on 100 features → Dense(10, softmax); adam; 10 epochs, synthetic",
        datasets: &["synthetic"],
        target_epoch_s: Some(0.1),
    },
    Program {
        id: "F",
        example: "cnn_bn",
        description: "Conv2D(16) → BatchNorm → ReLU → MaxPool → Conv2D(32) → BatchNorm → ReLU → \
                      GlobalAvgPool → Dense(10); adam; sparse CE; 5 epochs, batch 64",
        datasets: &["fashion"],
        target_epoch_s: None,
    },
];

/// What one of our runs measured (the example's `--json` line).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrainRun {
    pub program: String,
    pub dataset: String,
    pub seed: u64,
    pub epochs: usize,
    pub batch_size: usize,
    pub threads: usize,
    pub epoch_s: Vec<f64>,
    pub epoch_s_median: f64,
    pub test_loss: f64,
    pub test_accuracy: f64,
    pub peak_rss_mib: f64,
    pub inference_images_per_s: f64,
}

/// A peer framework's figures for one program and data set.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PeerFigure {
    pub framework: String,
    pub program: String,
    pub dataset: String,
    pub epoch_s_median: f64,
    pub test_accuracy: f64,
    pub peak_rss_mib: Option<f64>,
    pub inference_images_per_s: Option<f64>,
    /// "same run" or where the recorded figure comes from.
    pub source: String,
}

/// One line of the training summary.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrainSummaryRow {
    pub program: String,
    pub dataset: String,
    pub ours_epoch_s: f64,
    pub ours_test_accuracy: f64,
    pub ours_peak_rss_mib: f64,
    pub ours_inference_images_per_s: f64,
    pub keras_epoch_s: Option<f64>,
    pub keras_test_accuracy: Option<f64>,
    pub torch_epoch_s: Option<f64>,
    pub torch_test_accuracy: Option<f64>,
    /// Keras's seconds per epoch ÷ ours (> 1: we are faster).
    pub speedup_vs_keras: Option<f64>,
    pub speedup_vs_torch: Option<f64>,
    /// Our test accuracy minus Keras's, in percentage points.
    pub accuracy_points_vs_keras: Option<f64>,
    pub target_epoch_s: Option<f64>,
    pub meets_time_target: Option<bool>,
    /// Within 0.5 points of Keras (the floor).
    pub meets_accuracy_floor: Option<bool>,
    /// Where the Keras and PyTorch figures come from ("same run" or a recorded file).
    #[serde(default)]
    pub keras_source: Option<String>,
    #[serde(default)]
    pub torch_source: Option<String>,
}

/// The training part of the report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainingReport {
    pub threads: usize,
    pub method: String,
    pub runs: Vec<TrainRun>,
    pub peers: Vec<PeerFigure>,
    pub summary: Vec<TrainSummaryRow>,
}

/// The examples' directory next to the report binary (`target/release/examples`), building them
/// first when they are missing.
pub fn examples_dir() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let dir = exe
        .parent()
        .ok_or("no directory for the report binary")?
        .join("examples");
    if PROGRAMS.iter().all(|p| dir.join(p.example).is_file()) {
        return Ok(dir);
    }
    eprintln!("report: building nn's examples (cargo build --release -p nn --examples)");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--release", "-p", "nn", "--examples"])
        .status()
        .map_err(|e| format!("running cargo: {e}"))?;
    if !status.success() {
        return Err(format!("building the examples failed ({status})"));
    }
    Ok(dir)
}

/// Runs `program` on `dataset` with `threads` threads (optionally fewer epochs) and parses its
/// measurements.
pub fn run_ours(
    dir: &Path,
    program: &Program,
    dataset: &str,
    threads: usize,
    epochs: Option<usize>,
    data_dir: Option<&Path>,
) -> Result<TrainRun, String> {
    let runs = (0..RUNS_OF_OURS)
        .map(|_| run_ours_once(dir, program, dataset, threads, epochs, data_dir))
        .collect::<Result<Vec<_>, _>>()?;
    let first = &runs[0];
    // Same seed, same program: the same bits (the library's determinism, checked here too).
    if let Some(other) = runs
        .iter()
        .find(|r| (r.test_loss, r.test_accuracy) != (first.test_loss, first.test_accuracy))
    {
        return Err(format!(
            "{} on {dataset}: two runs with one seed disagree (test loss {} vs {})",
            program.example, first.test_loss, other.test_loss
        ));
    }
    let epoch_s: Vec<f64> = runs.iter().flat_map(|r| r.epoch_s.clone()).collect();
    let mut inference: Vec<f64> = runs.iter().map(|r| r.inference_images_per_s).collect();
    let epoch_s_median = crate::timing::median(&mut epoch_s.clone());
    Ok(TrainRun {
        epoch_s,
        epoch_s_median,
        peak_rss_mib: runs.iter().map(|r| r.peak_rss_mib).fold(0.0, f64::max),
        inference_images_per_s: crate::timing::median(&mut inference),
        ..first.clone()
    })
}

/// Each of our programs runs this many times, each in its own process; its figures are the
/// medians over all runs' epochs (and inference rates): a slow minute of this shared VM then
/// moves one run's epochs, not the whole figure.
pub const RUNS_OF_OURS: usize = 2;

fn run_ours_once(
    dir: &Path,
    program: &Program,
    dataset: &str,
    threads: usize,
    epochs: Option<usize>,
    data_dir: Option<&Path>,
) -> Result<TrainRun, String> {
    let mut cmd = Command::new(dir.join(program.example));
    cmd.args(["--json", "--verbose", "0"]);
    if dataset != "synthetic" {
        cmd.args(["--dataset", dataset]);
    }
    if let (Some(d), "mnist") = (data_dir, dataset) {
        cmd.arg("--data-dir").arg(d);
    }
    if let Some(e) = epochs {
        cmd.args(["--epochs", &e.to_string()]);
    }
    cmd.env("RAYON_NUM_THREADS", threads.to_string());
    let out = cmd
        .output()
        .map_err(|e| format!("running {}: {e}", program.example))?;
    if !out.status.success() {
        return Err(format!(
            "{} on {dataset} failed ({}): {}",
            program.example,
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .ok_or_else(|| format!("{} printed no JSON line", program.example))?;
    serde_json::from_str(line).map_err(|e| format!("{}'s JSON: {e}", program.example))
}

/// Peer figures recorded in `reference_dir` (`frameworks.json`: Fashion-MNIST,
/// `frameworks_mnist.json`: MNIST; program E is synthetic).
pub fn recorded_peers(reference_dir: &Path) -> Vec<PeerFigure> {
    let mut out = vec![];
    for (file, dataset) in [
        ("frameworks.json", "fashion"),
        ("frameworks_mnist.json", "mnist"),
    ] {
        let path = reference_dir.join(file);
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let Ok(entries) = serde_json::from_str::<Vec<serde_json::Value>>(&text) else {
            continue;
        };
        for e in entries {
            let (Some(fw), Some(program), Some(epoch_s), Some(acc)) = (
                e["framework"].as_str(),
                e["model"].as_str(),
                e["epoch_s_median"].as_f64(),
                e["test_accuracy"].as_f64(),
            ) else {
                continue;
            };
            let versions = e["versions"]
                .as_object()
                .map(|v| {
                    v.iter()
                        .map(|(k, v)| format!("{k} {}", v.as_str().unwrap_or("?")))
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default();
            out.push(PeerFigure {
                framework: fw.to_string(),
                program: program.to_string(),
                dataset: if program == "E" {
                    "synthetic".into()
                } else {
                    dataset.into()
                },
                epoch_s_median: epoch_s,
                test_accuracy: acc,
                peak_rss_mib: e["peak_rss_mib_after_train"].as_f64(),
                inference_images_per_s: e["inference"]["call_images_per_s"]["median"].as_f64(),
                source: format!(
                    "recorded in shared/reference/{file} ({versions}; Zen 4 VM, 2 threads, \
                     2026-11-22)"
                ),
            });
        }
    }
    out
}

/// Runs the peer scripts of `bench-suite/peers/` with the interpreter `python` for every program
/// when it has the framework; returns what they measured (empty when neither is installed).
pub fn run_peers(
    python: &Path,
    peers_dir: &Path,
    threads: usize,
    data_dirs: &[(&str, PathBuf)],
) -> Vec<PeerFigure> {
    let mut out = vec![];
    for (framework, module, script) in [
        ("keras", "tensorflow", "keras_programs.py"),
        ("torch", "torch", "torch_programs.py"),
    ] {
        let has = Command::new(python)
            .args(["-c", &format!("import {module}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !has {
            eprintln!(
                "report: {framework}: python3 cannot import {module}; using recorded figures"
            );
            continue;
        }
        // PyTorch versions of A–C (the recorded reference's) and F.
        let programs = PROGRAMS
            .iter()
            .filter(|p| framework == "keras" || "ABCF".contains(p.id));
        for p in programs {
            for &ds in p.datasets {
                let mut cmd = Command::new(python);
                cmd.arg(peers_dir.join(script)).args([
                    "--program",
                    p.id,
                    "--threads",
                    &threads.to_string(),
                ]);
                if let Some((_, dir)) = data_dirs.iter().find(|(d, _)| *d == ds) {
                    cmd.arg("--data-dir").arg(dir);
                }
                eprintln!("report: {framework} program {} on {ds}", p.id);
                match cmd.output() {
                    Ok(o) if o.status.success() => {
                        let text = String::from_utf8_lossy(&o.stdout);
                        if let Some(v) = text
                            .lines()
                            .rev()
                            .find(|l| l.starts_with('{'))
                            .and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                        {
                            out.push(PeerFigure {
                                framework: framework.into(),
                                program: p.id.into(),
                                dataset: ds.into(),
                                epoch_s_median: v["epoch_s_median"].as_f64().unwrap_or(f64::NAN),
                                test_accuracy: v["test_accuracy"].as_f64().unwrap_or(f64::NAN),
                                peak_rss_mib: v["peak_rss_mib"].as_f64(),
                                inference_images_per_s: v["inference_images_per_s"].as_f64(),
                                source: "same run".into(),
                            });
                        }
                    }
                    Ok(o) => eprintln!(
                        "report: {framework} {} failed: {}",
                        p.id,
                        String::from_utf8_lossy(&o.stderr).trim()
                    ),
                    Err(e) => eprintln!("report: {framework}: {e}"),
                }
            }
        }
    }
    out
}

impl TrainingReport {
    /// Pairs our runs with the peers' figures (same-run figures preferred over recorded ones).
    pub fn new(threads: usize, runs: Vec<TrainRun>, peers: Vec<PeerFigure>) -> Self {
        let find = |fw: &str, program: &str, dataset: &str| {
            let matching = || {
                peers.iter().filter(move |p| {
                    p.framework == fw && p.program == program && p.dataset == dataset
                })
            };
            matching()
                .find(|p| p.source == "same run")
                .or_else(|| {
                    // Several recorded runs: the median epoch time's entry.
                    let mut v: Vec<&PeerFigure> = matching().collect();
                    v.sort_by(|a, b| a.epoch_s_median.total_cmp(&b.epoch_s_median));
                    v.get(v.len().saturating_sub(1) / 2).copied()
                })
                .cloned()
        };
        let summary = runs
            .iter()
            .map(|r| {
                let keras = find("keras", &r.program, &r.dataset);
                let torch = find("torch", &r.program, &r.dataset);
                let target = PROGRAMS
                    .iter()
                    .find(|p| p.id == r.program)
                    .and_then(|p| p.target_epoch_s);
                TrainSummaryRow {
                    program: r.program.clone(),
                    dataset: r.dataset.clone(),
                    ours_epoch_s: r.epoch_s_median,
                    ours_test_accuracy: r.test_accuracy,
                    ours_peak_rss_mib: r.peak_rss_mib,
                    ours_inference_images_per_s: r.inference_images_per_s,
                    keras_epoch_s: keras.as_ref().map(|k| k.epoch_s_median),
                    keras_test_accuracy: keras.as_ref().map(|k| k.test_accuracy),
                    torch_epoch_s: torch.as_ref().map(|t| t.epoch_s_median),
                    torch_test_accuracy: torch.as_ref().map(|t| t.test_accuracy),
                    speedup_vs_keras: keras.as_ref().map(|k| k.epoch_s_median / r.epoch_s_median),
                    speedup_vs_torch: torch.as_ref().map(|t| t.epoch_s_median / r.epoch_s_median),
                    accuracy_points_vs_keras: keras
                        .as_ref()
                        .map(|k| 100.0 * (r.test_accuracy - k.test_accuracy)),
                    target_epoch_s: target,
                    meets_time_target: target.map(|t| r.epoch_s_median <= t),
                    meets_accuracy_floor: keras
                        .as_ref()
                        .map(|k| r.test_accuracy >= k.test_accuracy - 0.005),
                    keras_source: keras.as_ref().map(|k| k.source.clone()),
                    torch_source: torch.as_ref().map(|t| t.source.clone()),
                }
            })
            .collect();
        TrainingReport {
            threads,
            method: "each program is nn's example of the same name, run in its own process with \
                     RAYON_NUM_THREADS set, seed 42, the reference hyperparameters; epoch time is \
                     wall time per epoch including the validation pass where the program has one \
                     (as Keras's), median over epochs; test accuracy after the last epoch; peak RSS \
                     is the process's VmHWM; inference is a batch-1000 forward pass, median of 15; each program runs twice (two processes) and its figures are the medians over both runs' epochs and inference rates. \
                     Peers: same-run figures where Python has the framework, otherwise the recorded \
                     figures named in each peer's source (a different VM: compare with care)"
                .into(),
            runs,
            peers,
            summary,
        }
    }
}

/// The training tables in markdown.
pub fn training_markdown(t: &TrainingReport) -> String {
    let f = |v: Option<f64>, digits: usize| v.map_or("—".into(), |x| format!("{x:.digits$}"));
    let mut out = format!(
        "## Training: the six reference programs ({} threads)\n\n\
         | program | data | ours s/epoch | target | Keras s/epoch | ours faster than Keras | \
         PyTorch s/epoch | ours faster than PyTorch | ours test acc. | Keras test acc. | \
         Δ points | peak RSS MiB | inference images/s |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        t.threads
    );
    for r in &t.summary {
        out += &format!(
            "| {} | {} | {:.3} | {} | {} | {} | {} | {} | {:.4} | {} | {} | {:.0} | {:.0} |\n",
            r.program,
            r.dataset,
            r.ours_epoch_s,
            match (r.meets_time_target, r.target_epoch_s) {
                (Some(true), Some(t)) => format!("≤ {t:.2}"),
                (Some(false), Some(t)) => format!("✗ ≤ {t:.2}"),
                _ => "—".into(),
            },
            f(r.keras_epoch_s, 2),
            r.speedup_vs_keras
                .map_or("—".into(), |s| format!("{s:.1}×")),
            f(r.torch_epoch_s, 2),
            r.speedup_vs_torch
                .map_or("—".into(), |s| format!("{s:.1}×")),
            r.ours_test_accuracy,
            f(r.keras_test_accuracy, 4),
            r.accuracy_points_vs_keras
                .map_or("—".into(), |d| format!("{d:+.2}")),
            r.ours_peak_rss_mib,
            r.ours_inference_images_per_s,
        );
    }
    // The sources of the figures in the table (not of every peer figure known).
    let sources: std::collections::BTreeSet<&str> = t
        .summary
        .iter()
        .flat_map(|r| [&r.keras_source, &r.torch_source])
        .filter_map(|s| s.as_deref())
        .collect();
    out += "\nPeer figures: ";
    out += &sources.into_iter().collect::<Vec<_>>().join("; ");
    out += &format!(".\n\nMethod: {}.\n", t.method);
    out
}
