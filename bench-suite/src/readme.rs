//! `results/README.md`: a run's headline tables (the machine, training, the convolution layers,
//! the GEMM work's targets and the GEMM summary), rendered from its `Results`.

use crate::layers_bench::layers_markdown;
use crate::report::{Results, TRANSPOSED_NOTE};
use crate::targets::gemm_targets_markdown;
use crate::training::training_markdown;

/// `results/README.md`: the headline tables of a run, as ratios against the peers.
pub fn results_markdown(r: &Results, json_name: &str) -> String {
    let mut out = format!(
        "# Results: ours against the peers, one run\n\n{} · {} ({} cores) · our path {} · \
         kernels {}. Raw data: [`{json_name}`]({json_name}).\n\n\
         These VMs vary up to 2× between runs: read the same-run ratios, not absolute figures.\n\n",
        r.date_utc, r.machine.cpu, r.machine.cores, r.machine.best_isa, r.machine.kernels_version
    );
    out += &r.machine.setup_markdown();
    out += "\n";
    out += "## The machine\n\n| threads | FMA peak GFLOP/s | memory bandwidth GB/s |\n|---:|---:|---:|\n";
    for (t, p) in &r.machine_perf.fma_peak_gflops {
        let bw = r
            .machine_perf
            .memory_bandwidth_gbs
            .iter()
            .find(|(bt, _)| bt == t)
            .map_or("—".into(), |(_, b)| format!("{b:.1}"));
        out += &format!("| {t} | {p:.0} | {bw} |\n");
    }
    if let Some(t) = &r.training {
        out += "\n";
        out += &training_markdown(t);
        out += "\n![seconds per epoch, Fashion-MNIST](plots/train-fashion.png)\n\n\
                ![seconds per epoch, MNIST](plots/train-mnist.png)\n";
    }
    if let Some(l) = &r.layers {
        out += "\n";
        out += &layers_markdown(l);
    }
    if let Some(g) = &r.gemm {
        out += "\n";
        out += &gemm_targets_markdown(g, r.layers.as_ref());
        out += "\n## GEMM (f32), ours ÷ OpenBLAS and ÷ the best peer, same run\n\n\
                | M×K×N | threads | ours GFLOP/s | ÷ OpenBLAS | ÷ best peer (which) | of FMA peak |\n\
                |---|---:|---:|---:|---:|---:|\n";
        for row in &g.summary {
            out += &format!(
                "| {} | {} | {:.1} | {:.2} | {:.2} ({}) | {} |\n",
                row.shape,
                row.threads,
                row.ours_gflops,
                row.ours_over_openblas,
                row.ours_over_best_peer,
                row.best_peer,
                row.fraction_of_limit()
            );
        }
        if g.summary.iter().any(|r| r.shape.contains(':')) {
            out += &format!("\n{TRANSPOSED_NOTE}");
        }
        out += "\nEvery library per shape: [gemm.md](gemm.md).\n\n\
                ![GEMM, 1 thread](plots/gemm-1-thread.png)\n\n![GEMM, 2 threads](plots/gemm-2-threads.png)\n";
    }
    out
}
