//! The peers of the training part, figure by figure: Keras/TensorFlow and PyTorch run by the
//! scripts of `bench-suite/peers/` under a Python that has them, burn by its own cargo project
//! in `bench-suite/peers/burn/` (never a dependency of the workspace: built only when the report
//! is asked for it), and the recorded figures of `shared/reference/` where a framework cannot run
//! here. Every peer prints the same JSON line as our examples' `--json`.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::programs::{Program, PROGRAMS};

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
    /// The epochs it trained (its accuracy is compared with ours only at equal epochs).
    #[serde(default)]
    pub epochs: Option<usize>,
    /// Each seed's test accuracy where the report ran several (`--seeds`): `test_accuracy` is
    /// then their mean (absent, empty, for one seed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub accuracy_by_seed: Vec<(u64, f64)>,
    /// "same run" or where the recorded figure comes from.
    pub source: String,
}

impl PeerFigure {
    /// One framework's figures for one program and data set on several seeds (in seed order)
    /// as one: the median of their epoch times and inference rates, the largest peak RSS, the
    /// mean test accuracy. `None` for no figure; one figure stands as it is.
    pub fn over_seeds(figures: Vec<(u64, PeerFigure)>) -> Option<PeerFigure> {
        let (_, first) = figures.first()?.clone();
        if figures.len() == 1 {
            return Some(first);
        }
        let n = figures.len() as f64;
        let median_of =
            |v: Vec<f64>| (!v.is_empty()).then(|| crate::timing::median(&mut v.clone()));
        let epoch_s: Vec<f64> = figures.iter().map(|(_, f)| f.epoch_s_median).collect();
        let inference: Vec<f64> = figures
            .iter()
            .filter_map(|(_, f)| f.inference_images_per_s)
            .collect();
        let rss = figures.iter().filter_map(|(_, f)| f.peak_rss_mib);
        Some(PeerFigure {
            epoch_s_median: median_of(epoch_s).unwrap_or(first.epoch_s_median),
            test_accuracy: figures.iter().map(|(_, f)| f.test_accuracy).sum::<f64>() / n,
            peak_rss_mib: rss.reduce(f64::max),
            inference_images_per_s: median_of(inference),
            accuracy_by_seed: figures.iter().map(|(s, f)| (*s, f.test_accuracy)).collect(),
            ..first
        })
    }

    /// Whether it trained as many epochs as `epochs` (a figure that does not say is taken to
    /// have): only then are its accuracy and ours compared.
    pub fn same_epochs_as(&self, epochs: Option<usize>) -> bool {
        self.epochs.is_none_or(|e| Some(e) == epochs)
    }
}

/// The peers the report can run in the same process tree as ours.
pub const FRAMEWORKS: [&str; 3] = ["keras", "torch", "burn"];

/// The peers run unless the report is told otherwise: burn's first build takes minutes, so it
/// runs only when asked.
pub const DEFAULT_FRAMEWORKS: [&str; 2] = ["keras", "torch"];

/// The programs each framework has a version of: PyTorch's are A–C (the recorded reference's),
/// F and G; Keras and burn have all seven.
fn has_program(framework: &str, p: &Program) -> bool {
    framework != "torch" || "ABCFG".contains(p.id)
}

/// The figure in a peer's output: its last line that is a JSON object.
fn figure_from_output(
    framework: &str,
    p: &Program,
    dataset: &str,
    stdout: &str,
) -> Option<PeerFigure> {
    let v = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok())?;
    Some(PeerFigure {
        framework: framework.into(),
        program: p.id.into(),
        dataset: dataset.into(),
        epoch_s_median: v["epoch_s_median"].as_f64()?,
        test_accuracy: v["test_accuracy"].as_f64()?,
        peak_rss_mib: v["peak_rss_mib"].as_f64(),
        inference_images_per_s: v["inference_images_per_s"].as_f64(),
        epochs: v["epochs"].as_u64().map(|e| e as usize),
        accuracy_by_seed: vec![],
        source: "same run".into(),
    })
}

/// Builds the burn project of `peers_dir/burn` (its locked dependencies, release profile) into
/// `target_dir` and returns its binary.
pub fn build_burn_peer(peers_dir: &Path, target_dir: &Path) -> Result<PathBuf, String> {
    let manifest = peers_dir.join("burn").join("Cargo.toml");
    eprintln!("report: building the burn peer (its first build takes minutes)");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--release", "--locked", "--manifest-path"])
        .arg(&manifest)
        .arg("--target-dir")
        .arg(target_dir)
        .status()
        .map_err(|e| format!("running cargo: {e}"))?;
    if !status.success() {
        return Err(format!("building {} failed ({status})", manifest.display()));
    }
    Ok(target_dir.join("release").join("burn-programs"))
}

/// A peer framework ready to run: its command with the framework's own settings, given the
/// common arguments per program by [`PeerRunner::run`].
pub struct PeerRunner {
    pub framework: String,
    command: Box<dyn Fn() -> Command>,
}

impl PeerRunner {
    /// Runs program `p` on `dataset` with `threads` threads and `seed`, for `epochs` when given
    /// (as ours: equal work), and reads its figure; `None` when the framework has no such
    /// program or the run failed (said so).
    pub fn run(
        &self,
        (p, dataset): (&Program, &str),
        threads: usize,
        seed: u64,
        epochs: Option<usize>,
        data_dirs: &[(&str, PathBuf)],
    ) -> Option<PeerFigure> {
        let framework = self.framework.as_str();
        if !has_program(framework, p) {
            return None;
        }
        let mut cmd = (self.command)();
        cmd.args(["--program", p.id, "--threads", &threads.to_string()]);
        cmd.args(["--seed", &seed.to_string()]);
        if let Some((_, dir)) = data_dirs.iter().find(|(d, _)| *d == dataset) {
            cmd.arg("--data-dir").arg(dir);
        }
        if let Some(e) = epochs {
            cmd.args(["--epochs", &e.to_string()]);
        }
        eprintln!("report: {framework} program {} on {dataset}", p.id);
        match cmd.output() {
            Ok(o) if o.status.success() => {
                let figure =
                    figure_from_output(framework, p, dataset, &String::from_utf8_lossy(&o.stdout));
                if figure.is_none() {
                    eprintln!("report: {framework} {} printed no figure", p.id);
                }
                figure
            }
            Ok(o) => {
                eprintln!(
                    "report: {framework} {} failed: {}",
                    p.id,
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                None
            }
            Err(e) => {
                eprintln!("report: {framework}: {e}");
                None
            }
        }
    }
}

/// Readies the `frameworks` asked for (of [`FRAMEWORKS`]): Keras and PyTorch under `python`
/// when it can import them, burn built into `target_dir` (before anything is timed). A
/// framework that cannot run here is said so and left out (the recorded figures stand in for
/// Keras and PyTorch).
pub fn prepare_peers(
    frameworks: &[String],
    python: &Path,
    peers_dir: &Path,
    target_dir: &Path,
    threads: usize,
) -> Vec<PeerRunner> {
    let mut out = vec![];
    for framework in frameworks {
        let framework = framework.as_str();
        let command: Box<dyn Fn() -> Command> = match framework {
            "keras" | "torch" => {
                let (module, script) = if framework == "keras" {
                    ("tensorflow", "keras_programs.py")
                } else {
                    ("torch", "torch_programs.py")
                };
                let has = Command::new(python)
                    .args(["-c", &format!("import {module}")])
                    .output()
                    .is_ok_and(|o| o.status.success());
                if !has {
                    eprintln!(
                        "report: {framework}: {} cannot import {module}; using recorded figures",
                        python.display()
                    );
                    continue;
                }
                let script = peers_dir.join(script);
                let python = python.to_path_buf();
                Box::new(move || {
                    let mut cmd = Command::new(&python);
                    cmd.arg(&script);
                    cmd
                })
            }
            "burn" => match build_burn_peer(peers_dir, target_dir) {
                Ok(binary) => Box::new(move || {
                    let mut cmd = Command::new(&binary);
                    // burn's Flex backend threads through rayon's global pool.
                    cmd.env("RAYON_NUM_THREADS", threads.to_string());
                    cmd
                }),
                Err(e) => {
                    eprintln!("report: burn: {e}");
                    continue;
                }
            },
            other => {
                eprintln!("report: no peer called {other:?} (peers: {FRAMEWORKS:?})");
                continue;
            }
        };
        out.push(PeerRunner {
            framework: framework.into(),
            command,
        });
    }
    out
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
                epochs: PROGRAMS.iter().find(|p| p.id == program).map(|p| p.epochs),
                accuracy_by_seed: vec![],
                source: format!(
                    "recorded in shared/reference/{file} ({versions}; Zen 4 VM, 2 threads, \
                     2026-11-22)"
                ),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_figure_is_its_last_json_line_and_needs_its_time_and_accuracy() {
        let p = &PROGRAMS[2];
        let out =
            "Epoch 1/5\n{\"not\": \"this\"}\n{\"epoch_s_median\": 2.5, \"test_accuracy\": 0.98, \
                   \"epochs\": 5, \"peak_rss_mib\": 300.0}\ntrailing words\n";
        let f = figure_from_output("burn", p, "mnist", out).unwrap();
        assert_eq!(
            (f.framework.as_str(), f.program.as_str(), f.dataset.as_str()),
            ("burn", "C", "mnist")
        );
        assert_eq!(
            (f.epoch_s_median, f.test_accuracy, f.epochs),
            (2.5, 0.98, Some(5))
        );
        assert_eq!(
            (f.peak_rss_mib, f.inference_images_per_s),
            (Some(300.0), None)
        );
        assert_eq!(f.source, "same run");
        // A line without the epoch time or the accuracy is no figure (not a NaN in a table).
        assert_eq!(
            figure_from_output("burn", p, "mnist", "{\"test_accuracy\": 0.9}\n"),
            None
        );
        assert_eq!(figure_from_output("burn", p, "mnist", "no json\n"), None);
    }

    #[test]
    fn pytorch_has_five_programs_keras_and_burn_seven() {
        let count = |fw| PROGRAMS.iter().filter(|p| has_program(fw, p)).count();
        assert_eq!((count("keras"), count("torch"), count("burn")), (7, 5, 7));
    }
}
