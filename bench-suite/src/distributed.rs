//! The data-parallel part of the report: the reference CNN (program C) trained by 2 MPI ranks of
//! one thread each against one process with both threads, same batch, interleaved rounds; a
//! gradient sum's time against its size on 2 and 4 ranks (4 oversubscribed on a 2-core
//! machine); and, from those measurements, the speed-up projected for 2–64 machines.
//!
//! The projection's model (written into `distributed.md` with the run's numbers): a machine
//! trains `b` samples per step in `t_c` (the one-process run's step, measured); a step's
//! gradients (`G` bytes) are summed by a ring allreduce over `N` machines at bandwidth `B`:
//! `t_a = 2(N − 1)/N · G / B + 2(N − 1)·α`, α the per-message latency; the backward pass covers
//! at most `w` of it, the sums' time it covered per step in the 2-rank run. Step time
//! `t_c + max(0, t_a − w)`; speed-up over one machine `N · t_c / step` (the global batch grows
//! with `N`).

use std::path::Path;
use std::process::Command;

use serde::{Deserialize, Serialize};

/// One run of the example, as its `--json` line says.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExampleRun {
    pub ranks: usize,
    pub threads_per_rank: usize,
    pub batch: usize,
    pub epochs: usize,
    pub epoch_s_median: f64,
    pub test_accuracy: f64,
    pub test_loss: f64,
    pub sums: u64,
    pub sum_s_per_epoch: f64,
    pub waited_s_per_epoch: f64,
    pub hidden_fraction: f64,
    pub gradient_bytes: u64,
    pub steps_per_epoch: usize,
}

/// 2 ranks against one process at one global batch, medians of interleaved rounds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Comparison {
    pub batch: usize,
    pub ranks_epoch_s: f64,
    pub alone_epoch_s: f64,
    /// Ranks ÷ alone (the target: ≤ 1.15 at batch 256).
    pub ratio: f64,
    pub ranks_accuracy: f64,
    pub alone_accuracy: f64,
    pub hidden_fraction: f64,
    pub sum_s_per_epoch: f64,
    pub waited_s_per_epoch: f64,
    /// Every round, for the record.
    pub rounds: Vec<(ExampleRun, ExampleRun)>,
}

/// A sum's median time at one size.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SumTime {
    pub ranks: usize,
    pub bytes: u64,
    pub seconds: f64,
}

/// One projected point.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Projection {
    pub machines: usize,
    pub gbit_s: f64,
    pub allreduce_s: f64,
    pub step_s: f64,
    pub speedup: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DistributedReport {
    pub date_utc: String,
    pub cpu: String,
    pub comparisons: Vec<Comparison>,
    pub sums: Vec<SumTime>,
    /// The model's inputs: one machine's step (s), samples per step, gradient bytes, the share
    /// of the sums' time hidden in the 2-rank run and the time per step that was (s), latency
    /// per message (s, assumed).
    pub step_s: f64,
    pub batch: usize,
    pub gradient_bytes: u64,
    pub hidden_fraction: f64,
    #[serde(default)]
    pub covered_s: f64,
    pub latency_s: f64,
    pub projections: Vec<Projection>,
}

/// The per-message latency the projection assumes for a switched Ethernet network under MPI
/// over TCP (measured here between processes it is microseconds; on a network it is tens).
pub const LATENCY_S: f64 = 20e-6;

/// Builds the MPI examples (`cargo build --release -p nn-mpi --examples`); their directory.
pub fn examples_dir() -> Result<std::path::PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let dir = exe
        .parent()
        .ok_or("no directory for the report binary")?
        .join("examples");
    eprintln!("report: building the MPI examples (cargo build --release -p nn-mpi --examples)");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--release", "-p", "nn-mpi", "--examples"])
        .status()
        .map_err(|e| format!("running cargo: {e}"))?;
    if !status.success() {
        return Err(format!("building the MPI examples failed ({status})"));
    }
    Ok(dir)
}

/// Whether `mpirun` runs here.
pub fn mpirun_available() -> bool {
    Command::new("mpirun")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn mpirun(ranks: usize, exe: &Path, args: &[&str]) -> Command {
    let mut c = Command::new("mpirun");
    c.env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("RAYON_NUM_THREADS", "1")
        .args(["--oversubscribe", "-np", &ranks.to_string()])
        .arg(exe)
        .args(args);
    c
}

fn json_lines<T: for<'de> Deserialize<'de>>(
    mut cmd: Command,
    what: &str,
) -> Result<Vec<T>, String> {
    let out = cmd
        .output()
        .map_err(|e| format!("{what}: cannot run: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).map_err(|e| format!("{what}: {e}: {l}")))
        .collect()
}

/// 2 ranks of 1 thread against one process of `threads` threads at `batch`, `rounds` rounds;
/// `data_dir` holds MNIST.
fn compare(
    dir: &Path,
    data_dir: &Path,
    batch: usize,
    epochs: usize,
    threads: usize,
    rounds: usize,
) -> Result<Comparison, String> {
    let exe = dir.join("cnn_distributed");
    let args = [
        "--batch",
        &batch.to_string(),
        "--epochs",
        &epochs.to_string(),
        "--json",
    ];
    let mut pairs = vec![];
    for round in 0..rounds {
        eprintln!(
            "report: distributed: batch {batch}, round {}/{rounds}",
            round + 1
        );
        let mut ranked = mpirun(2, &exe, &args);
        ranked.env("NN_MNIST_DIR", data_dir);
        let mut alone = Command::new(&exe);
        alone
            .args(args)
            .arg("--alone")
            .env("RAYON_NUM_THREADS", threads.to_string())
            .env("NN_MNIST_DIR", data_dir);
        let r: Vec<ExampleRun> = json_lines(ranked, "the 2-rank run")?;
        let a: Vec<ExampleRun> = json_lines(alone, "the one-process run")?;
        let (Some(r), Some(a)) = (r.into_iter().next(), a.into_iter().next()) else {
            return Err("a run printed no measurements".into());
        };
        pairs.push((r, a));
    }
    let m = |f: &dyn Fn(&(ExampleRun, ExampleRun)) -> f64| {
        crate::timing::median(&mut pairs.iter().map(f).collect::<Vec<_>>())
    };
    let ranks_epoch_s = m(&|p| p.0.epoch_s_median);
    let alone_epoch_s = m(&|p| p.1.epoch_s_median);
    Ok(Comparison {
        batch,
        ranks_epoch_s,
        alone_epoch_s,
        ratio: m(&|p| p.0.epoch_s_median / p.1.epoch_s_median),
        ranks_accuracy: pairs[0].0.test_accuracy,
        alone_accuracy: pairs[0].1.test_accuracy,
        hidden_fraction: m(&|p| p.0.hidden_fraction),
        sum_s_per_epoch: m(&|p| p.0.sum_s_per_epoch),
        waited_s_per_epoch: m(&|p| p.0.waited_s_per_epoch),
        rounds: pairs,
    })
}

/// Ring allreduce time of `bytes` over `n` machines at `gbit_s`, with `latency` per message.
pub fn ring_allreduce_s(n: usize, bytes: u64, gbit_s: f64, latency: f64) -> f64 {
    if n < 2 {
        return 0.0;
    }
    let n = n as f64;
    2.0 * (n - 1.0) / n * bytes as f64 / (gbit_s * 1e9 / 8.0) + 2.0 * (n - 1.0) * latency
}

/// The projection for 2–64 machines at 10, 25 and 100 Gb/s; `covered_s`: the sums' time the
/// backward pass can cover per step.
pub fn project(step_s: f64, gradient_bytes: u64, covered_s: f64, latency: f64) -> Vec<Projection> {
    let mut out = vec![];
    for gbit_s in [10.0, 25.0, 100.0] {
        for machines in [2, 4, 8, 16, 32, 64] {
            let allreduce_s = ring_allreduce_s(machines, gradient_bytes, gbit_s, latency);
            let step = step_s + (allreduce_s - covered_s).max(0.0);
            out.push(Projection {
                machines,
                gbit_s,
                allreduce_s,
                step_s: step,
                speedup: machines as f64 * step_s / step,
            });
        }
    }
    out
}

/// The whole part: comparisons at batch 256 and 32, sums on 2 and 4 ranks, the projection.
pub fn measure(
    data_dir: &Path,
    threads: usize,
    rounds: usize,
    cpu: &str,
    date_utc: &str,
) -> Result<DistributedReport, String> {
    let dir = examples_dir()?;
    // Batch 256 is the target: 3 epochs (their median is a middle one), more rounds; batch 32
    // is reported: 2 epochs (its median the slower), fewer rounds.
    let comparisons = vec![
        compare(&dir, data_dir, 256, 3, threads, rounds)?,
        compare(&dir, data_dir, 32, 2, threads, rounds.min(3))?,
    ];
    let mut sums = vec![];
    for ranks in [2, 4] {
        eprintln!("report: distributed: a sum's time against its size, {ranks} ranks");
        let rows: Vec<SumTime> =
            json_lines(mpirun(ranks, &dir.join("sum_sizes"), &[]), "sum_sizes")?;
        sums.extend(rows);
    }
    let mut report = DistributedReport {
        date_utc: date_utc.into(),
        cpu: cpu.into(),
        comparisons,
        sums,
        step_s: 0.0,
        batch: 0,
        gradient_bytes: 0,
        hidden_fraction: 0.0,
        covered_s: 0.0,
        latency_s: LATENCY_S,
        projections: vec![],
    };
    report.model();
    Ok(report)
}

impl DistributedReport {
    /// Derives the projection's inputs from the batch-256 comparison (one machine's step, the
    /// gradients' bytes, the sums' time the backward pass covered per step) and projects.
    pub fn model(&mut self) {
        let Some(base) = self.comparisons.first() else {
            return;
        };
        let (ranked, one) = &base.rounds[0];
        self.batch = base.batch;
        self.step_s = base.alone_epoch_s / one.steps_per_epoch as f64;
        self.gradient_bytes = one.gradient_bytes;
        self.hidden_fraction = base.hidden_fraction;
        self.covered_s = (base.sum_s_per_epoch - base.waited_s_per_epoch).max(0.0)
            / ranked.steps_per_epoch as f64;
        self.projections = project(
            self.step_s,
            self.gradient_bytes,
            self.covered_s,
            self.latency_s,
        );
    }
}

/// `results/distributed.md`.
pub fn markdown(r: &DistributedReport) -> String {
    let mut out = format!(
        "# Data-parallel training: measured here, projected beyond\n\n{} · {}. Raw data: \
         [`distributed.json`](distributed.json).\n\n\
         ## 2 MPI ranks against one process, the same machine\n\n\
         The reference CNN (program C) on MNIST, 3 epochs at batch 256 and 2 at batch 32 (each \
         run's median epoch): `mpirun -np 2` ranks of 1 thread each \
         (`fit_distributed`) against one process with 2 threads (`fit`), the same global batch, \
         medians of interleaved rounds. *Hidden*: the share of the gradient sums' time the \
         backward pass covered (1 − waited ÷ busy).\n\n\
         | global batch | 2 ranks s/epoch | 1 process s/epoch | ratio | accuracy 2 ranks | 1 process | sums s/epoch | waited s/epoch | hidden |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        r.date_utc, r.cpu
    );
    for c in &r.comparisons {
        out += &format!(
            "| {} | {:.2} | {:.2} | {:.2}× | {:.4} | {:.4} | {:.3} | {:.3} | {:.0} % |\n",
            c.batch,
            c.ranks_epoch_s,
            c.alone_epoch_s,
            c.ratio,
            c.ranks_accuracy,
            c.alone_accuracy,
            c.sum_s_per_epoch,
            c.waited_s_per_epoch,
            c.hidden_fraction * 100.0
        );
    }
    out += "\n## A gradient sum's time against its size\n\n\
            `start_sum` + `finish_sum` alone (no training), median; 4 ranks share 2 cores.\n\n\
            | ranks | bytes | µs | GB/s (bytes ÷ time) |\n|---:|---:|---:|---:|\n";
    for s in &r.sums {
        out += &format!(
            "| {} | {} | {:.0} | {:.2} |\n",
            s.ranks,
            s.bytes,
            s.seconds * 1e6,
            s.bytes as f64 / s.seconds / 1e9
        );
    }
    out += &format!(
        "\n## Projected speed-up over machines\n\n\
         Model: each machine trains {} samples per step in t_c = {:.2} ms (this run's one-process \
         step, validation included); the step's gradients, G = {} bytes, are summed by a ring \
         allreduce over N machines at B Gb/s: t_a = 2(N − 1)/N · G / B + 2(N − 1) · α, with \
         α = {:.0} µs per message (assumed for MPI over TCP on switched Ethernet); the backward \
         pass covers at most w = {:.2} ms of it per step, what it covered in the 2-rank run \
         ({:.0} % of the sums' time there). Step t_c + max(0, t_a − w); speed-up N · t_c / step \
         (each machine keeps its batch: the global batch grows with N, and what limits the \
         speed-up is the communication). Not in the model: what the sums cost the training \
         cores besides time on the wire — on this 2-core machine the 2-rank run took {:.2}× one \
         process's epoch with {:.0} % of its sums hidden (copies and additions beside the \
         backward pass on the same core, every rank's whole optimizer step on one thread); read \
         the projection as a bound that this factor may lower.\n\n\
         | machines | 10 Gb/s | 25 Gb/s | 100 Gb/s |\n|---:|---:|---:|---:|\n",
        r.batch,
        r.step_s * 1e3,
        r.gradient_bytes,
        r.latency_s * 1e6,
        r.covered_s * 1e3,
        r.hidden_fraction * 100.0,
        r.comparisons.first().map_or(0.0, |c| c.ratio),
        r.hidden_fraction * 100.0
    );
    for n in [2, 4, 8, 16, 32, 64] {
        let cell = |g: f64| {
            r.projections
                .iter()
                .find(|p| p.machines == n && p.gbit_s == g)
                .map_or("—".into(), |p| {
                    format!("{:.1}× ({:.0} %)", p.speedup, p.speedup / n as f64 * 100.0)
                })
        };
        out += &format!(
            "| {n} | {} | {} | {} |\n",
            cell(10.0),
            cell(25.0),
            cell(100.0)
        );
    }
    out += "\n(In parentheses: the efficiency, speed-up ÷ machines.)\n\n\
            ![projected efficiency](plots/distributed-efficiency.png)\n";
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_moves_twice_the_data_less_a_share_and_waits_per_message() {
        // 2 machines, 1.25 GB at 10 Gb/s (1.25 GB/s): 2·(1/2)·1 s, plus 2 latencies.
        let t = ring_allreduce_s(2, 1_250_000_000, 10.0, 1e-3);
        assert!((t - (1.0 + 2e-3)).abs() < 1e-9, "{t}");
        assert_eq!(ring_allreduce_s(1, 1 << 30, 10.0, 1e-3), 0.0);
    }

    #[test]
    fn the_projection_is_ideal_when_communication_is_free_or_hidden() {
        for p in project(0.01, 4 << 20, 1.0, 20e-6) {
            assert!((p.speedup - p.machines as f64).abs() < 1e-9);
        }
        let slow = project(0.01, 4 << 20, 0.0, 20e-6);
        let at = |n: usize, g: f64| {
            slow.iter()
                .find(|p| p.machines == n && p.gbit_s == g)
                .unwrap()
                .speedup
        };
        assert!(at(64, 10.0) < at(64, 100.0) && at(64, 100.0) < 64.0);
        assert!(at(2, 10.0) < 2.0);
    }
}
