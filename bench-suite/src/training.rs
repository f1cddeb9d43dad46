//! The training part of the report: the seven reference programs (nn's examples `mlp_adam`,
//! `mlp_rmsprop`, `cnn_sparse`, `cnn_onehot`, `synthetic`, `cnn_bn`, `cnn_stacked` — the very
//! programs a user runs) on MNIST and Fashion-MNIST, each in a child process of its own (so its peak resident memory is its
//! own), against Keras/TensorFlow, PyTorch and burn (the `peers` module): measured in the same
//! run where those frameworks can run here, otherwise the recorded figures of
//! `shared/reference/`, labelled as such.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::peers::PeerFigure;
use crate::programs::{Program, PROGRAMS};

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
    /// Each seed's test accuracy where the report ran several (`--seeds`): `test_accuracy` and
    /// `test_loss` are then the means over them, `seed` the first (absent, empty, for one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub accuracy_by_seed: Vec<(u64, f64)>,
    /// The model's cost (`nn::cost::TrainingCost`) and the epoch's sample counts, as the
    /// example printed them (absent in reports before the roofline).
    #[serde(default)]
    pub cost: Option<RunCost>,
    /// Where the run's time went (`nn::anatomy`), as the example printed it.
    #[serde(default)]
    pub anatomy: Option<RunAnatomy>,
    /// The FMA peak on the run's threads as the report measured it right before this program's
    /// first run and right after its last, the better of the two: the machine's speed in this
    /// program's phase of a run (absent where the report did not measure it, and in reports
    /// before it did).
    #[serde(default)]
    pub fma_peak_beside_gflops: Option<f64>,
}

/// Where one run's training time went ([`TrainRun::anatomy`]).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunAnatomy {
    pub steps: u64,
    pub samples: u64,
    pub parts: Vec<AnatomyPart>,
}

/// One part of a run's anatomy: a unit's pass (or the loss, optimizer, gather, validation), its
/// wall time and useful FLOPs over the whole run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AnatomyPart {
    pub name: String,
    pub pass: String,
    pub seconds: f64,
    pub flops: u64,
}

/// What one epoch of a program must do ([`TrainRun::cost`]).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct RunCost {
    /// The trainable weights (absent, 0, in reports before it was printed; nothing below
    /// reads it).
    #[serde(default)]
    pub trainable_weights: u64,
    pub forward_flops_per_sample: u64,
    pub backward_flops_per_sample: u64,
    pub optimizer_flops_per_step: u64,
    pub optimizer_bytes_per_step: u64,
    pub input_bytes_per_sample: u64,
    pub train_samples: u64,
    pub validation_samples: u64,
}

/// The machine's limits, measured in the same run, that a program's epoch is held against.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct MachineLimits {
    /// The FMA peak on the training's thread count.
    pub fma_peak_gflops: f64,
    /// The memory bandwidth (triad) on the training's thread count.
    pub memory_bandwidth_gbs: f64,
    /// The last-level cache: an optimizer step whose weights, gradients and state fit in it is
    /// charged no memory traffic.
    pub last_level_cache_bytes: u64,
    /// Whether the peak is the best of measurements spread over the run (at the start, between
    /// programs, in the GEMM part where it ran) rather than one at the start, as in runs before
    /// this field.
    #[serde(default)]
    pub peak_best_of_run: bool,
}

/// A program's roofline: the least time one epoch can take on this machine.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Roofline {
    pub epoch_gflop: f64,
    pub epoch_gb: f64,
    /// max(GFLOP ÷ FMA peak, GB ÷ bandwidth).
    pub limit_epoch_s: f64,
}

impl RunCost {
    /// The model's cost as `nn` counted it.
    pub fn model(&self) -> nn::cost::TrainingCost {
        nn::cost::TrainingCost {
            forward_flops_per_sample: self.forward_flops_per_sample,
            backward_flops_per_sample: self.backward_flops_per_sample,
            trainable_weights: self.trainable_weights,
            optimizer_flops_per_step: self.optimizer_flops_per_step,
            optimizer_bytes_per_step: self.optimizer_bytes_per_step,
            input_bytes_per_sample: self.input_bytes_per_sample,
        }
    }

    /// The roofline of one epoch in batches of `batch` against `m`: the products of every
    /// training sample (forward and backward) and of the validation samples (forward), the
    /// optimizer's arithmetic per step; the data set read once (training and validation
    /// inputs), and the optimizer's traffic per step where its weights, gradients and state
    /// do not fit in the last-level cache.
    pub fn roofline(&self, batch: u64, m: &MachineLimits) -> Roofline {
        let steps = self.train_samples.div_ceil(batch.max(1));
        let flops = self
            .model()
            .epoch_flops(self.train_samples, batch, self.validation_samples);
        let mut bytes =
            (self.train_samples + self.validation_samples) * self.input_bytes_per_sample;
        if self.optimizer_bytes_per_step > m.last_level_cache_bytes {
            bytes += steps * self.optimizer_bytes_per_step;
        }
        let (gflop, gb) = (flops as f64 / 1e9, bytes as f64 / 1e9);
        Roofline {
            epoch_gflop: gflop,
            epoch_gb: gb,
            limit_epoch_s: (gflop / m.fma_peak_gflops).max(gb / m.memory_bandwidth_gbs),
        }
    }
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
    /// burn's figures (absent in reports before it was a peer, and when it was not asked for).
    #[serde(default)]
    pub burn_epoch_s: Option<f64>,
    #[serde(default)]
    pub burn_test_accuracy: Option<f64>,
    #[serde(default)]
    pub speedup_vs_burn: Option<f64>,
    #[serde(default)]
    pub burn_epochs: Option<usize>,
    /// Our test accuracy minus Keras's, in percentage points.
    pub accuracy_points_vs_keras: Option<f64>,
    /// Within [`ACCURACY_FLOOR_POINTS`] of Keras's accuracy after as many epochs.
    pub meets_accuracy_floor: Option<bool>,
    /// Where the Keras and PyTorch figures come from ("same run" or a recorded file).
    #[serde(default)]
    pub keras_source: Option<String>,
    #[serde(default)]
    pub torch_source: Option<String>,
    /// Our epochs and the peers' (the accuracies are compared only where they are equal).
    #[serde(default)]
    pub ours_epochs: Option<usize>,
    #[serde(default)]
    pub keras_epochs: Option<usize>,
    #[serde(default)]
    pub torch_epochs: Option<usize>,
    /// The program's roofline on this machine, and our epoch time ÷ its limit.
    #[serde(default)]
    pub roofline: Option<Roofline>,
    #[serde(default)]
    pub ours_vs_limit: Option<f64>,
    /// Our epoch time ÷ the limit at the peak measured beside the program
    /// ([`TrainRun::fma_peak_beside_gflops`]) instead of the run's best.
    #[serde(default)]
    pub ours_vs_limit_beside: Option<f64>,
    /// Our batch-1000 inference: useful FLOP/s ÷ the FMA peak.
    #[serde(default)]
    pub inference_fraction_of_peak: Option<f64>,
}

/// The training part of the report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainingReport {
    pub threads: usize,
    pub method: String,
    /// The limits the rooflines are computed against (absent in reports before them).
    #[serde(default)]
    pub limits: Option<MachineLimits>,
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

/// Our figure for one program and data set from its [`RUNS_OF_OURS`] runs per seed (each a
/// process of [`run_ours_once`]): the medians over all runs' epochs and inference rates, the
/// largest peak RSS, and — over several seeds — the mean test loss and accuracy; an error when
/// two runs with one seed disagree.
pub fn merge_runs(
    program: &Program,
    dataset: &str,
    runs: Vec<TrainRun>,
) -> Result<TrainRun, String> {
    let first = runs
        .first()
        .ok_or_else(|| format!("{} on {dataset}: no run", program.example))?;
    // Each seed's runs, in the order their seeds first came.
    let mut by_seed: Vec<&TrainRun> = vec![];
    for r in &runs {
        match by_seed.iter().find(|s| s.seed == r.seed) {
            // Same seed, same program: the same bits (the library's determinism, checked here
            // too).
            Some(s) if (s.test_loss, s.test_accuracy) != (r.test_loss, r.test_accuracy) => {
                return Err(format!(
                    "{} on {dataset}: two runs with seed {} disagree (test loss {} vs {})",
                    program.example, r.seed, s.test_loss, r.test_loss
                ));
            }
            Some(_) => {}
            None => by_seed.push(r),
        }
    }
    let seeds = by_seed.len() as f64;
    let epoch_s: Vec<f64> = runs.iter().flat_map(|r| r.epoch_s.clone()).collect();
    let mut inference: Vec<f64> = runs.iter().map(|r| r.inference_images_per_s).collect();
    let epoch_s_median = crate::timing::median(&mut epoch_s.clone());
    Ok(TrainRun {
        epoch_s,
        epoch_s_median,
        peak_rss_mib: runs.iter().map(|r| r.peak_rss_mib).fold(0.0, f64::max),
        inference_images_per_s: crate::timing::median(&mut inference),
        test_loss: by_seed.iter().map(|r| r.test_loss).sum::<f64>() / seeds,
        test_accuracy: by_seed.iter().map(|r| r.test_accuracy).sum::<f64>() / seeds,
        accuracy_by_seed: if by_seed.len() > 1 {
            by_seed.iter().map(|r| (r.seed, r.test_accuracy)).collect()
        } else {
            vec![]
        },
        ..first.clone()
    })
}

/// The seeds a report's runs trained with: 42 where one seed, 42, 43, … for `--seeds N`.
pub fn seeds(n: usize) -> Vec<u64> {
    (0..n.max(1) as u64).map(|i| DEFAULT_SEED + i).collect()
}

/// The seed of every framework's runs unless the report runs several.
pub const DEFAULT_SEED: u64 = 42;

/// Every program's target: at most this many times its limit time (its roofline).
pub const LIMIT_TARGET: f64 = 1.5;

/// Every program's accuracy target: our test accuracy at least Keras's in the same run, after
/// as many epochs, minus this many percentage points.
pub const ACCURACY_FLOOR_POINTS: f64 = 0.3;

/// Each of our programs runs this many times, each in its own process, and the report runs the
/// peers' versions of the program between them (ours, Keras, PyTorch, burn, ours): its figures
/// are the medians over all runs' epochs (and inference rates), so a slow minute of this shared
/// VM moves one run's epochs, not the whole figure, and a slow phase that lasts falls on every
/// framework of the program alike.
pub const RUNS_OF_OURS: usize = 2;

/// Runs `program` on `dataset` once, in its own process, with `threads` threads and `seed`
/// (optionally fewer epochs), and parses its measurements.
pub fn run_ours_once(
    dir: &Path,
    (program, dataset): (&Program, &str),
    threads: usize,
    seed: u64,
    epochs: Option<usize>,
    data_dir: Option<&Path>,
) -> Result<TrainRun, String> {
    let mut cmd = Command::new(dir.join(program.example));
    cmd.args(["--json", "--verbose", "0", "--seed", &seed.to_string()]);
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

/// The figure of framework `fw` for a program and data set that the tables show: the same
/// run's where there is one, otherwise the recorded run of median epoch time.
fn chosen_peer<'a>(
    peers: &'a [PeerFigure],
    fw: &str,
    program: &str,
    dataset: &str,
) -> Option<&'a PeerFigure> {
    let matching = || {
        peers
            .iter()
            .filter(move |p| p.framework == fw && p.program == program && p.dataset == dataset)
    };
    matching().find(|p| p.source == "same run").or_else(|| {
        let mut v: Vec<&PeerFigure> = matching().collect();
        v.sort_by(|a, b| a.epoch_s_median.total_cmp(&b.epoch_s_median));
        v.get(v.len().saturating_sub(1) / 2).copied()
    })
}

impl TrainingReport {
    /// Pairs our runs with the peers' figures (same-run figures preferred over recorded ones)
    /// and holds each against its roofline on `limits`.
    pub fn new(
        threads: usize,
        runs: Vec<TrainRun>,
        peers: Vec<PeerFigure>,
        limits: Option<MachineLimits>,
    ) -> Self {
        let find = |fw: &str, program: &str, dataset: &str| {
            chosen_peer(&peers, fw, program, dataset).cloned()
        };
        let summary = runs
            .iter()
            .map(|r| {
                let keras = find("keras", &r.program, &r.dataset);
                let torch = find("torch", &r.program, &r.dataset);
                let burn = find("burn", &r.program, &r.dataset);
                let roofline = r
                    .cost
                    .zip(limits)
                    .map(|(c, m)| c.roofline(r.batch_size as u64, &m));
                let limit_beside =
                    r.cost
                        .zip(limits)
                        .zip(r.fma_peak_beside_gflops)
                        .map(|((c, m), peak)| {
                            let beside = MachineLimits {
                                fma_peak_gflops: peak,
                                ..m
                            };
                            c.roofline(r.batch_size as u64, &beside).limit_epoch_s
                        });
                let inference_fraction_of_peak = r.cost.zip(limits).map(|(c, m)| {
                    r.inference_images_per_s * c.forward_flops_per_sample as f64
                        / (m.fma_peak_gflops * 1e9)
                });
                // Accuracies after different numbers of epochs are not compared.
                let keras_same_work = keras.as_ref().filter(|k| k.same_epochs_as(Some(r.epochs)));
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
                    burn_epoch_s: burn.as_ref().map(|b| b.epoch_s_median),
                    burn_test_accuracy: burn.as_ref().map(|b| b.test_accuracy),
                    speedup_vs_burn: burn.as_ref().map(|b| b.epoch_s_median / r.epoch_s_median),
                    burn_epochs: burn.as_ref().and_then(|b| b.epochs),
                    accuracy_points_vs_keras: keras_same_work
                        .map(|k| 100.0 * (r.test_accuracy - k.test_accuracy)),
                    meets_accuracy_floor: keras_same_work.map(|k| {
                        100.0 * r.test_accuracy >= 100.0 * k.test_accuracy - ACCURACY_FLOOR_POINTS
                    }),
                    keras_source: keras.as_ref().map(|k| k.source.clone()),
                    torch_source: torch.as_ref().map(|t| t.source.clone()),
                    ours_epochs: Some(r.epochs),
                    keras_epochs: keras.as_ref().and_then(|k| k.epochs),
                    torch_epochs: torch.as_ref().and_then(|t| t.epochs),
                    ours_vs_limit: roofline.map(|l| r.epoch_s_median / l.limit_epoch_s),
                    ours_vs_limit_beside: limit_beside.map(|l| r.epoch_s_median / l),
                    roofline,
                    inference_fraction_of_peak,
                }
            })
            .collect();
        // The seeds as the runs name them (several where the report ran `--seeds`).
        let most = runs
            .iter()
            .map(|r| r.accuracy_by_seed.len())
            .max()
            .unwrap_or(0);
        let seeds = match runs.iter().find(|r| r.accuracy_by_seed.len() == most) {
            Some(r) if most > 1 => format!(
                "seeds {}–{} (every framework trained on each; test accuracy and loss are the \
                 means over them, epoch time the median over all their epochs)",
                r.accuracy_by_seed[0].0,
                r.accuracy_by_seed[most - 1].0
            ),
            Some(r) => format!("seed {}", r.seed),
            None => format!("seed {DEFAULT_SEED}"),
        };
        TrainingReport {
            threads,
            limits,
            method: format!(
                "each program is nn's example of the same name, run in its own process with \
                     RAYON_NUM_THREADS set, {seeds}, the reference hyperparameters; epoch time is \
                     wall time per epoch including the validation pass where the program has one \
                     (as Keras's), median over epochs; test accuracy after the last epoch; peak RSS \
                     is the process's VmHWM; inference is a batch-1000 forward pass, median of 15; each program runs twice (two processes) on each seed and its figures are the medians over all runs' epochs and inference rates. \
                     Peers: same-run figures where the framework runs here (Keras and PyTorch \
                     under the Python given, burn's own cargo project when asked), each run once \
                     per seed for as many epochs as ours (the report's --epochs applies to every framework), \
                     between our two runs of the same program and data set (ours, Keras, PyTorch, \
                     burn, ours: a slow phase of the machine falls on all of them alike), otherwise the \
                     recorded figures named in each peer's source (a different VM: compare with \
                     care); a peer's accuracy after a different number of epochs than ours is shown \
                     with its epochs and not compared"
            ),
            runs,
            peers,
            summary,
        }
    }
}

/// The training tables in markdown.
pub fn training_markdown(t: &TrainingReport) -> String {
    let f = |v: Option<f64>, digits: usize| v.map_or("—".into(), |x| format!("{x:.digits$}"));
    // The programs this run trained, in words ("the six reference programs").
    let programs: std::collections::BTreeSet<&str> =
        t.summary.iter().map(|r| r.program.as_str()).collect();
    let count = [
        "no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    ]
    .get(programs.len())
    .map_or_else(|| programs.len().to_string(), |w| w.to_string());
    let mut out = format!(
        "## Training: the {count} reference programs ({} threads)\n\n\
         | program | data | ours s/epoch | ours ÷ limit (target ≤ {LIMIT_TARGET}×) | Keras s/epoch | \
         ours faster than Keras | PyTorch s/epoch | ours faster than PyTorch | ours test acc. | \
         Keras test acc. | Δ points | peak RSS MiB | inference images/s |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        t.threads
    );
    for r in &t.summary {
        out += &format!(
            "| {} | {} | {:.3} | {} | {} | {} | {} | {} | {:.4} | {} | {} | {:.0} | {:.0} |\n",
            r.program,
            r.dataset,
            r.ours_epoch_s,
            // The target is a ratio to this machine's limit, measured in the same run (seconds
            // set on one CPU could not be judged on another).
            r.ours_vs_limit.map_or("—".into(), |v| {
                format!("{}{v:.2}×", if v <= LIMIT_TARGET { "" } else { "✗ " })
            }),
            f(r.keras_epoch_s, 2),
            r.speedup_vs_keras
                .map_or("—".into(), |s| format!("{s:.1}×")),
            f(r.torch_epoch_s, 2),
            r.speedup_vs_torch
                .map_or("—".into(), |s| format!("{s:.1}×")),
            r.ours_test_accuracy,
            match (r.keras_test_accuracy, r.keras_epochs, r.ours_epochs) {
                // Not the same work: shown with its epochs, not compared.
                (Some(a), Some(k), Some(o)) if k != o => format!("{a:.4} ({k} epochs)"),
                (a, ..) => f(a, 4),
            },
            r.accuracy_points_vs_keras
                .map_or("—".into(), |d| format!("{d:+.2}")),
            r.ours_peak_rss_mib,
            r.ours_inference_images_per_s,
        );
    }
    out += &peers_markdown(t);
    if let Some(m) = &t.limits {
        out += &format!(
            "\n### Against the machine's limit\n\n\
             Each program's limit is the least time one epoch can take here: max(FLOPs ÷ FMA peak, \
             bytes ÷ memory bandwidth), with the peak ({:.0} GFLOP/s) and the triad bandwidth \
             ({:.1} GB/s) measured on {} threads in this run{}. FLOPs, counted from the model \
             (`nn::cost`): two per multiply-add of every product — forward and weight gradient \
             for each training sample, the input gradient of each layer above the first with \
             weights, forward for each validation sample — plus the optimizer rule's operations \
             per weight per step; activations, pooling and normalisation count nothing. Bytes: the \
             training and validation inputs read once, plus the optimizer's weights, gradients and \
             state per step where they exceed the last-level cache ({:.0} MiB). Inference: the \
             batch-1000 forward pass's useful FLOP/s ÷ the peak. At the peak beside it: the same \
             limit with the peak measured right before the program's first run and right after \
             its last (the better of the two), where the run measured it — on a machine whose \
             speed swings within a run, the program against the machine's speed in its own \
             phase.\n\n\
             | program | data | GFLOP/epoch | GB/epoch | limit s/epoch | ours s/epoch | ours ÷ limit \
             | ours ÷ limit at the peak beside it (GFLOP/s) | inference, % of peak | largest parts of our \
             time ([anatomy](anatomy.md)) |\n\
             |---|---|---:|---:|---:|---:|---:|---:|---:|---|\n",
            m.fma_peak_gflops,
            m.memory_bandwidth_gbs,
            t.threads,
            if m.peak_best_of_run {
                " (the peak: the best of its measurements at the start, between programs and, \
                 where the run had one, in the GEMM part)"
            } else {
                ""
            },
            m.last_level_cache_bytes as f64 / (1u64 << 20) as f64,
        );
        for r in &t.summary {
            let Some(l) = r.roofline else { continue };
            let run = t
                .runs
                .iter()
                .find(|run| run.program == r.program && run.dataset == r.dataset);
            let parts = run
                .and_then(|run| run.anatomy.as_ref())
                .map_or("—".into(), |a| {
                    largest_parts(a, Some(m.fma_peak_gflops), 3)
                });
            let beside_peak = run.and_then(|run| run.fma_peak_beside_gflops);
            out += &format!(
                "| {} | {} | {:.1} | {:.2} | {:.3} | {:.3} | {} | {} | {} | {parts} |\n",
                r.program,
                r.dataset,
                l.epoch_gflop,
                l.epoch_gb,
                l.limit_epoch_s,
                r.ours_epoch_s,
                r.ours_vs_limit.map_or("—".into(), |v| format!("{v:.1}×")),
                r.ours_vs_limit_beside
                    .zip(beside_peak)
                    .map_or("—".into(), |(v, p)| format!("{v:.1}× ({p:.0})")),
                r.inference_fraction_of_peak
                    .map_or("—".into(), |v| format!("{:.0} %", 100.0 * v)),
            );
        }
    }
    // The sources of the figures in the table (not of every peer figure known).
    let sources: std::collections::BTreeSet<&str> = t
        .summary
        .iter()
        .flat_map(|r| [&r.keras_source, &r.torch_source])
        .filter_map(|s| s.as_deref())
        .chain(t.summary.iter().filter_map(|r| {
            chosen_peer(&t.peers, "burn", &r.program, &r.dataset).map(|b| b.source.as_str())
        }))
        .collect();
    out += "\nPeer figures: ";
    out += &sources.into_iter().collect::<Vec<_>>().join("; ");
    out += &format!(".\n\nMethod: {}.\n", t.method);
    out
}

/// Every peer beside ours, program by program: seconds per epoch, our speed-up, test accuracy
/// (compared only after equal epochs), peak RSS and inference rate — the figures the main table
/// has no room for, and burn's.
fn peers_markdown(t: &TrainingReport) -> String {
    let names = [("keras", "Keras"), ("torch", "PyTorch"), ("burn", "burn")];
    let mut out = String::from(
        "\n### Every peer beside ours\n\n\
         | program | data | framework | s/epoch | ours faster | test acc. | ours − peer, points \
         | peak RSS MiB | inference images/s | figures |\n\
         |---|---|---|---:|---:|---:|---:|---:|---:|---|\n",
    );
    let opt = |v: Option<f64>, digits: usize| v.map_or("—".into(), |x| format!("{x:.digits$}"));
    for r in &t.summary {
        out += &format!(
            "| {} | {} | ours | {:.3} | — | {:.4} | — | {:.0} | {:.0} | this run |\n",
            r.program,
            r.dataset,
            r.ours_epoch_s,
            r.ours_test_accuracy,
            r.ours_peak_rss_mib,
            r.ours_inference_images_per_s
        );
        for (fw, name) in names {
            let Some(p) = chosen_peer(&t.peers, fw, &r.program, &r.dataset) else {
                continue;
            };
            let same_work = p.same_epochs_as(r.ours_epochs);
            out += &format!(
                "| {} | {} | {name} | {:.3} | {:.1}× | {} | {} | {} | {} | {} |\n",
                r.program,
                r.dataset,
                p.epoch_s_median,
                p.epoch_s_median / r.ours_epoch_s,
                match p.epochs {
                    Some(e) if !same_work => format!("{:.4} ({e} epochs)", p.test_accuracy),
                    _ => format!("{:.4}", p.test_accuracy),
                },
                if same_work {
                    format!("{:+.2}", 100.0 * (r.ours_test_accuracy - p.test_accuracy))
                } else {
                    "—".into()
                },
                opt(p.peak_rss_mib, 0),
                opt(p.inference_images_per_s, 0),
                if p.source == "same run" {
                    "this run"
                } else {
                    "recorded"
                },
            );
        }
    }
    out
}

/// A part's label: "conv2d backward", or the pass alone for the parts that are no layer's.
fn part_label(p: &AnatomyPart) -> String {
    if p.name == p.pass {
        p.name.clone()
    } else {
        format!("{} {}", p.name, p.pass)
    }
}

/// The largest parts of each run's time, in words: "conv2d_1 backward 31 % (38 % of peak)".
fn largest_parts(a: &RunAnatomy, peak_gflops: Option<f64>, count: usize) -> String {
    let total: f64 = a.parts.iter().map(|p| p.seconds).sum();
    let mut parts: Vec<&AnatomyPart> = a.parts.iter().collect();
    parts.sort_by(|x, y| y.seconds.total_cmp(&x.seconds));
    parts
        .iter()
        .take(count)
        .map(|p| {
            let share = 100.0 * p.seconds / total.max(f64::MIN_POSITIVE);
            match peak_gflops.filter(|_| p.flops > 0 && p.seconds > 0.0) {
                Some(peak) => format!(
                    "{} {share:.0} % ({:.0} % of peak)",
                    part_label(p),
                    100.0 * p.flops as f64 / p.seconds / 1e9 / peak
                ),
                None => format!("{} {share:.0} %", part_label(p)),
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// `results/anatomy.md`: where each of our runs spent its time, part by part, with each part's
/// useful FLOP rate against the run's FMA peak.
pub fn anatomy_markdown(t: &TrainingReport) -> String {
    let peak = t.limits.map(|m| m.fma_peak_gflops);
    let mut out = format!(
        "# Where the training time goes ({} threads)\n\n\
         Each of our runs timed every pass of every unit of its plan (a layer, or the layers that \
         run as one pass), the loss, the optimizer's step, the gathering of shuffled batches and \
         the validation (`FitConfig::anatomy`: the clock read between passes). Seconds are per \
         epoch; GFLOP/s counts the products' useful operations (`nn::cost`); the peak is the \
         run's FMA peak{}.\n",
        t.threads,
        peak.map_or(String::new(), |p| format!(" ({p:.0} GFLOP/s)"))
    );
    for r in &t.runs {
        let Some(a) = &r.anatomy else { continue };
        let epochs = r.epochs.max(1) as f64;
        let total: f64 = a.parts.iter().map(|p| p.seconds).sum();
        out += &format!(
            "\n## Program {} on {}: {:.3} s of parts per epoch (epoch {:.3} s)\n\n\
             | part | s/epoch | share | GFLOP/s | of peak |\n|---|---:|---:|---:|---:|\n",
            r.program,
            r.dataset,
            total / epochs,
            r.epoch_s_median
        );
        for p in &a.parts {
            let rate = (p.flops > 0 && p.seconds > 0.0).then(|| p.flops as f64 / p.seconds / 1e9);
            out += &format!(
                "| {} | {:.4} | {:.1} % | {} | {} |\n",
                part_label(p),
                p.seconds / epochs,
                100.0 * p.seconds / total.max(f64::MIN_POSITIVE),
                rate.map_or("—".into(), |g| format!("{g:.1}")),
                rate.zip(peak)
                    .map_or("—".into(), |(g, pk)| format!("{:.0} %", 100.0 * g / pk)),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(epochs: usize) -> TrainRun {
        TrainRun {
            program: "A".into(),
            dataset: "mnist".into(),
            seed: 42,
            epochs,
            batch_size: 32,
            threads: 2,
            epoch_s: vec![1.0; epochs],
            epoch_s_median: 1.0,
            test_loss: 0.1,
            test_accuracy: 0.97,
            peak_rss_mib: 100.0,
            inference_images_per_s: 1e5,
            accuracy_by_seed: vec![],
            cost: None,
            anatomy: None,
            fma_peak_beside_gflops: None,
        }
    }

    fn keras(epochs: Option<usize>) -> PeerFigure {
        PeerFigure {
            framework: "keras".into(),
            program: "A".into(),
            dataset: "mnist".into(),
            epoch_s_median: 3.0,
            test_accuracy: 0.98,
            peak_rss_mib: None,
            inference_images_per_s: None,
            epochs,
            accuracy_by_seed: vec![],
            source: "same run".into(),
        }
    }

    /// Several seeds: our accuracy and loss the means over the seeds (each seed's runs agreeing
    /// bit for bit, else an error), epochs from all runs; a peer's figures merged alike.
    #[test]
    fn runs_over_several_seeds_are_averaged() {
        let program = &PROGRAMS[0];
        let with = |seed: u64, acc: f64, epoch_s: f64| TrainRun {
            seed,
            test_accuracy: acc,
            test_loss: 1.0 - acc,
            epoch_s: vec![epoch_s; 2],
            epoch_s_median: epoch_s,
            ..run(2)
        };
        let runs = vec![
            with(42, 0.90, 1.0),
            with(42, 0.90, 3.0),
            with(43, 0.94, 2.0),
            with(43, 0.94, 2.0),
        ];
        let r = merge_runs(program, "mnist", runs).unwrap();
        assert!((r.test_accuracy - 0.92).abs() < 1e-12 && (r.test_loss - 0.08).abs() < 1e-12);
        assert_eq!(r.accuracy_by_seed, vec![(42, 0.90), (43, 0.94)]);
        assert_eq!((r.epoch_s.len(), r.epoch_s_median), (8, 2.0));
        let t = TrainingReport::new(2, vec![r], vec![], None);
        assert!(t.method.contains("seeds 42–43"), "{}", t.method);
        // One seed: as before, its own figures.
        let one = merge_runs(program, "mnist", vec![with(42, 0.9, 1.0)]).unwrap();
        assert!(one.accuracy_by_seed.is_empty());
        let t = TrainingReport::new(2, vec![one], vec![], None);
        assert!(t.method.contains("seed 42,"), "{}", t.method);
        // Two runs of one seed that differ: the library's determinism broken, said so.
        let err = merge_runs(
            program,
            "mnist",
            vec![with(43, 0.9, 1.0), with(43, 0.8, 1.0)],
        )
        .unwrap_err();
        assert!(err.contains("two runs with seed 43 disagree"), "{err}");
        let peer = |acc: f64, epoch_s: f64| PeerFigure {
            test_accuracy: acc,
            epoch_s_median: epoch_s,
            peak_rss_mib: Some(100.0 * epoch_s),
            ..keras(Some(2))
        };
        let merged = PeerFigure::over_seeds(vec![
            (42, peer(0.8, 1.0)),
            (43, peer(0.9, 3.0)),
            (44, peer(1.0, 2.0)),
        ])
        .unwrap();
        assert!((merged.test_accuracy - 0.9).abs() < 1e-12);
        assert_eq!(
            (merged.epoch_s_median, merged.peak_rss_mib),
            (2.0, Some(300.0))
        );
        assert_eq!(merged.accuracy_by_seed.len(), 3);
        assert!(PeerFigure::over_seeds(vec![]).is_none());
        let single = PeerFigure::over_seeds(vec![(42, peer(0.8, 1.0))]).unwrap();
        assert!(single.accuracy_by_seed.is_empty());
    }

    #[test]
    fn accuracies_after_different_epochs_are_shown_not_compared() {
        let t = TrainingReport::new(2, vec![run(2)], vec![keras(Some(10))], None);
        let row = &t.summary[0];
        assert_eq!(row.speedup_vs_keras, Some(3.0));
        assert_eq!(row.accuracy_points_vs_keras, None);
        assert_eq!(row.meets_accuracy_floor, None);
        let md = training_markdown(&t);
        assert!(md.contains("0.9800 (10 epochs)"), "{md}");

        for peer_epochs in [Some(2), None] {
            let t = TrainingReport::new(2, vec![run(2)], vec![keras(peer_epochs)], None);
            let d = t.summary[0].accuracy_points_vs_keras.unwrap();
            assert!((d + 1.0).abs() < 1e-9, "{d}");
            assert!(!training_markdown(&t).contains("epochs)"));
        }
    }

    #[test]
    fn burn_sits_beside_keras_and_pytorch_with_its_memory() {
        let burn = PeerFigure {
            framework: "burn".into(),
            epoch_s_median: 4.0,
            test_accuracy: 0.965,
            peak_rss_mib: Some(228.0),
            inference_images_per_s: Some(5e5),
            epochs: Some(2),
            ..keras(Some(2))
        };
        // A recorded Keras figure loses to the same run's.
        let recorded = PeerFigure {
            epoch_s_median: 9.0,
            source: "recorded".into(),
            ..keras(Some(2))
        };
        let peers = vec![recorded, burn, keras(Some(2))];
        let t = TrainingReport::new(2, vec![run(2)], peers, None);
        let row = &t.summary[0];
        assert_eq!(row.speedup_vs_burn, Some(4.0));
        assert_eq!(row.burn_test_accuracy, Some(0.965));
        assert_eq!(row.speedup_vs_keras, Some(3.0));
        let md = training_markdown(&t);
        assert!(
            md.contains("| A | mnist | ours | 1.000 | — | 0.9700 | — | 100 | 100000 | this run |"),
            "{md}"
        );
        assert!(
            md.contains(
                "| A | mnist | burn | 4.000 | 4.0× | 0.9650 | +0.50 | 228 | 500000 | this run |"
            ),
            "{md}"
        );
        assert!(
            md.contains("| A | mnist | Keras | 3.000 | 3.0× | 0.9800 | -1.00 | — | — | this run |"),
            "{md}"
        );
        assert!(!md.contains("| A | mnist | PyTorch"), "{md}");
    }

    #[test]
    fn the_roofline_is_the_slower_of_arithmetic_and_traffic() {
        let m = MachineLimits {
            fma_peak_gflops: 100.0,
            memory_bandwidth_gbs: 10.0,
            last_level_cache_bytes: 1 << 20,
            peak_best_of_run: false,
        };
        let cost = RunCost {
            trainable_weights: 1000,
            forward_flops_per_sample: 1_000_000,
            backward_flops_per_sample: 2_000_000,
            optimizer_flops_per_step: 10_000,
            optimizer_bytes_per_step: 1 << 20,
            input_bytes_per_sample: 3136,
            train_samples: 60_000,
            validation_samples: 10_000,
        };
        // 60 000·3 MFLOP + 1875 steps·10 kFLOP + 10 000·1 MFLOP = 190.01875 GFLOP → 1.9 s;
        // 70 000 inputs of 3136 B = 0.21952 GB → 0.022 s (the step's 1 MiB fits in the cache).
        let r = cost.roofline(32, &m);
        assert!((r.epoch_gflop - 190.018_75).abs() < 1e-9, "{r:?}");
        assert!((r.epoch_gb - 0.219_52).abs() < 1e-12, "{r:?}");
        assert!((r.limit_epoch_s - 1.900_187_5).abs() < 1e-9, "{r:?}");
        // A step that does not fit: its traffic every step, and now the bytes bound the epoch.
        let big = RunCost {
            optimizer_bytes_per_step: 100 << 20,
            forward_flops_per_sample: 1000,
            backward_flops_per_sample: 2000,
            ..cost
        };
        let r = big.roofline(32, &m);
        let gb = 0.219_52 + 1875.0 * (100u64 << 20) as f64 / 1e9;
        assert!((r.epoch_gb - gb).abs() < 1e-9, "{r:?}");
        assert!((r.limit_epoch_s - gb / 10.0).abs() < 1e-9, "{r:?}");

        let mut run = run(2);
        run.cost = Some(cost);
        run.epoch_s_median = 3.8;
        let t = TrainingReport::new(2, vec![run], vec![], Some(m));
        let row = &t.summary[0];
        assert!((row.ours_vs_limit.unwrap() - 3.8 / 1.900_187_5).abs() < 1e-9);
        // 1e5 images/s × 1 MFLOP = 100 GFLOP/s: the whole peak.
        assert!((row.inference_fraction_of_peak.unwrap() - 1.0).abs() < 1e-12);
        let md = training_markdown(&t);
        assert!(
            md.contains("| A | mnist | 190.0 | 0.22 | 1.900 | 3.800 | 2.0× | — | 100 % |"),
            "{md}"
        );
        // The peak measured beside the program, half the run's best: its limit twice as long
        // (the arithmetic bounds this epoch), our epoch 1.0× of it.
        let mut beside = t.runs[0].clone();
        beside.fma_peak_beside_gflops = Some(50.0);
        let t = TrainingReport::new(2, vec![beside], vec![], Some(m));
        let row = &t.summary[0];
        assert!((row.ours_vs_limit_beside.unwrap() - 3.8 / 3.800_375).abs() < 1e-9);
        assert!((row.ours_vs_limit.unwrap() - 3.8 / 1.900_187_5).abs() < 1e-9);
        let md = training_markdown(&t);
        assert!(
            md.contains("| A | mnist | 190.0 | 0.22 | 1.900 | 3.800 | 2.0× | 1.0× (50) | 100 % |"),
            "{md}"
        );
    }
}
