//! The benchmark report: measures the machine and our kernels against their peers in one run and
//! writes `results/`.
//!
//! ```text
//! cargo run --release -p bench-suite --bin report -- [--part all|gemm,layers,train,distributed]
//!     [--threads 1,2] [--distributed-from results/distributed.json]
//!     [--rounds 5] [--quick] [--shapes MxKxN[:at|:bt|:atbt],..] [--epochs N] [--programs A,C]
//!     [--seeds N] [--data-dir DIR]
//!     [--reference DIR] [--python PATH] [--peers keras,torch,burn] [--out results]
//!     [--render-from results/<report>.json]
//! ```
//!
//! Writes `results/<date>-<host>.json` (everything measured), `results/README.md` (the headline
//! ratios), `results/gemm.md` and `results/gemm.json` (every GEMM figure), `results/anatomy.md`
//! (where each program's training time goes), `results/distributed.md` and
//! `results/distributed.json` (data-parallel training over MPI, when `mpirun` runs here) and
//! `results/plots/`.
//!
//! Each thread count runs in a child process of its own, because OpenBLAS, matrixmultiply and
//! rayon size their thread pools once per process (from `OPENBLAS_NUM_THREADS`,
//! `MATMUL_NUM_THREADS` and `RAYON_NUM_THREADS`). Within a child every library is measured on
//! each shape in interleaved rounds, so ratios come from side-by-side samples.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use bench_suite::gemm_bench::{all_shapes, measure_shape, Library, Measurement, Shape, FMA_PEAK};
use bench_suite::peers::{PeerFigure, DEFAULT_FRAMEWORKS, FRAMEWORKS};
use bench_suite::programs::{Program, PROGRAMS};
use bench_suite::readme::results_markdown;
use bench_suite::report::{
    gemm_markdown, utc_date_now, GemmChildReport, GemmReport, MachineInfo, MachinePerf, Results,
    SCHEMA_VERSION,
};
use bench_suite::training::{self, TrainingReport};
use kernels::Isa;

struct Args {
    threads: Vec<usize>,
    rounds: usize,
    quick: bool,
    /// Only these shapes (M×K×N labels), when given.
    only: Option<Vec<String>>,
    out: PathBuf,
    child: bool,
    gemm: bool,
    layers: bool,
    train: bool,
    distributed: bool,
    /// The data-parallel part read from this earlier `distributed.json` instead of measured
    /// (its page and chart rendered again).
    distributed_from: Option<PathBuf>,
    /// Override of every program's epoch count (a quick look; the reference counts otherwise).
    epochs: Option<usize>,
    /// Only these training programs (their letters), when given.
    programs: Option<Vec<String>>,
    /// Seeds each framework trains every program with (42, 43, …): accuracies are compared as
    /// means over them.
    seeds: usize,
    data_dir: Option<PathBuf>,
    reference: PathBuf,
    /// The Python that runs the Keras and PyTorch programs.
    python: PathBuf,
    /// The peer frameworks to run in this run (of `peers::FRAMEWORKS`).
    peers: Vec<String>,
    /// Measure nothing: write the pages and charts of this earlier report's JSON again (after
    /// a change to how they are written).
    render_from: Option<PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        threads: vec![
            1,
            std::thread::available_parallelism().map_or(1, |n| n.get()),
        ],
        rounds: 5,
        quick: false,
        only: None,
        out: PathBuf::from("results"),
        child: false,
        gemm: true,
        layers: true,
        train: true,
        distributed: true,
        distributed_from: None,
        epochs: None,
        programs: None,
        seeds: 1,
        data_dir: None,
        python: PathBuf::from("python3"),
        peers: DEFAULT_FRAMEWORKS.iter().map(|f| f.to_string()).collect(),
        render_from: None,
        reference: PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shared/reference"
        )),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--part" => {
                let parts = value("--part")?;
                (args.gemm, args.layers, args.train, args.distributed) =
                    (false, false, false, false);
                for part in parts.split(',') {
                    match part.trim() {
                        "all" => {
                            (args.gemm, args.layers, args.train, args.distributed) =
                                (true, true, true, true)
                        }
                        "gemm" => args.gemm = true,
                        "layers" => args.layers = true,
                        "train" => args.train = true,
                        "distributed" => args.distributed = true,
                        other => {
                            return Err(format!(
                                "unknown part {other:?}: the parts are all, gemm, layers, train, \
                                 distributed"
                            ))
                        }
                    }
                }
            }
            "--epochs" => {
                args.epochs = Some(
                    value("--epochs")?
                        .parse()
                        .map_err(|e| format!("--epochs: {e}"))?,
                )
            }
            "--programs" => {
                let ids: Vec<String> = value("--programs")?
                    .split(',')
                    .map(|p| p.trim().to_uppercase())
                    .filter(|p| !p.is_empty())
                    .collect();
                if let Some(id) = ids.iter().find(|id| PROGRAMS.iter().all(|p| p.id != *id)) {
                    let known: Vec<&str> = PROGRAMS.iter().map(|p| p.id).collect();
                    return Err(format!(
                        "--programs: no program {id:?} (programs: {})",
                        known.join(", ")
                    ));
                }
                if ids.is_empty() {
                    return Err("--programs needs at least one program".into());
                }
                args.programs = Some(ids);
            }
            "--seeds" => {
                args.seeds = value("--seeds")?
                    .parse()
                    .map_err(|e| format!("--seeds: {e}"))?;
                if args.seeds == 0 {
                    return Err("--seeds needs at least one seed".into());
                }
            }
            "--data-dir" => args.data_dir = Some(PathBuf::from(value("--data-dir")?)),
            "--distributed-from" => {
                args.distributed_from = Some(PathBuf::from(value("--distributed-from")?))
            }
            "--reference" => args.reference = PathBuf::from(value("--reference")?),
            "--python" => args.python = PathBuf::from(value("--python")?),
            "--render-from" => args.render_from = Some(PathBuf::from(value("--render-from")?)),
            "--peers" => {
                args.peers = value("--peers")?
                    .split(',')
                    .map(|f| f.trim().to_string())
                    .filter(|f| !f.is_empty())
                    .collect();
                if let Some(f) = args
                    .peers
                    .iter()
                    .find(|f| !FRAMEWORKS.contains(&f.as_str()))
                {
                    return Err(format!(
                        "--peers: no peer {f:?} (peers: {})",
                        FRAMEWORKS.join(", ")
                    ));
                }
            }
            "--threads" => {
                args.threads = value("--threads")?
                    .split(',')
                    .map(|t| {
                        t.trim()
                            .parse::<usize>()
                            .map_err(|e| format!("--threads {t:?}: {e}"))
                    })
                    .collect::<Result<_, _>>()?;
                args.threads.dedup();
            }
            "--rounds" => {
                args.rounds = value("--rounds")?
                    .parse()
                    .map_err(|e| format!("--rounds: {e}"))?
            }
            "--out" => args.out = PathBuf::from(value("--out")?),
            "--quick" => args.quick = true,
            "--shapes" => {
                args.only = Some(
                    value("--shapes")?
                        .split(',')
                        .map(|s| s.trim().to_string())
                        .collect(),
                )
            }
            "--gemm-child" => args.child = true,
            "-h" | "--help" => {
                println!(
                    "usage: report [--part all|gemm,layers,train] [--threads 1,2] [--rounds N] [--quick] \
                     [--shapes MxKxN[:at|:bt|:atbt],..] [--epochs N] [--programs A,C,..] [--seeds N] \
                     [--data-dir MNIST_DIR] [--reference DIR] \
                     [--python PATH] [--peers keras,torch,burn] [--out DIR] \
                     [--render-from REPORT.json]\n\
                     gemm: every library on every shape per thread count; layers: convolution \
                     passes against im2col + OpenBLAS; train: the seven \
                     reference programs (or the --programs named) on MNIST and Fashion-MNIST on \
                     the largest thread count, against the --peers (default keras,torch; burn's \
                     first build takes minutes); --seeds N: every framework trains each program \
                     on seeds 42, 43, … (N of them), its accuracy the mean"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    if args.threads.is_empty() || args.threads.contains(&0) || args.rounds == 0 {
        return Err("--threads needs positive counts and --rounds a positive number".into());
    }
    Ok(args)
}

fn shapes(quick: bool, only: &Option<Vec<String>>) -> Vec<Shape> {
    let all = all_shapes();
    if let Some(only) = only {
        return only
            .iter()
            .map(|label| {
                Shape::parse_label(label).unwrap_or_else(|| {
                    eprintln!(
                        "report: --shapes takes MxKxN labels of sizes above 0 (with :at, :bt \
                         or :atbt for operands stored transposed), got {label:?}"
                    );
                    std::process::exit(2);
                })
            })
            .collect();
    }
    if quick {
        all.into_iter()
            .filter(|s| s.m.max(s.n).max(s.k) <= 1024 && s.flops() < 1e9)
            .collect()
    } else {
        all
    }
}

/// The child: one thread count, every shape, every library; JSON on stdout.
fn run_child(args: &Args) {
    let threads = args.threads[0];
    let libs = Library::available();
    let peak = |isa, reps| bench_peers::peak::fma_peak_gflops(isa, threads, reps).ok();
    let both = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    let peak_before = (peak(Isa::Avx512, 5), peak(Isa::Avx2, 5));
    let shapes = shapes(args.quick, &args.only);
    let mut measurements: Vec<Measurement> = Vec::new();
    for (i, shape) in shapes.iter().enumerate() {
        eprint!(
            "\r  {threads} thread(s): shape {}/{} {:<16}",
            i + 1,
            shapes.len(),
            shape.label()
        );
        let _ = std::io::stderr().flush();
        measurements.extend(measure_shape(&libs, *shape, threads, args.rounds));
    }
    eprintln!();
    // A runtime that pins the thread that starts it (an OpenMP runtime told OMP_PROC_BIND) would
    // leave every library that spawns threads afterwards on fewer CPUs than it was asked to use:
    // such figures are not the library's, so the run stops (the standard library reads the
    // affinity mask).
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cpus < threads {
        eprintln!(
            "report: the {threads}-thread measuring process ended up allowed on {cpus} CPU(s) \
             (something pinned it: is OMP_PROC_BIND set?); its figures would not be {threads}-thread \
             figures"
        );
        std::process::exit(1);
    }
    // The best of the measurements spread over the whole child (a VM's slow moments lower
    // some): before and after the shapes, and, for our best path's instructions, the peak loop
    // every shape timed in its own rounds.
    let in_rounds = measurements
        .iter()
        .filter(|m| m.library == FMA_PEAK)
        .map(|m| m.gflops_median)
        .max_by(f64::total_cmp);
    let mut best = (
        both(peak_before.0, peak(Isa::Avx512, 5)),
        both(peak_before.1, peak(Isa::Avx2, 5)),
    );
    match Isa::best() {
        Isa::Avx512 => best.0 = both(best.0, in_rounds),
        _ => best.1 = both(best.1, in_rounds),
    }
    let report = GemmChildReport {
        threads,
        fma_peak_avx512_gflops: best.0,
        fma_peak_avx2_gflops: best.1,
        measurements,
    };
    println!("{}", serde_json::to_string(&report).expect("serialisable"));
}

/// Re-runs the report with OpenBLAS's kernels for this CPU's instructions when OpenBLAS fell
/// back to its kernels for an unknown CPU ([`bench_suite::machine::openblas_core_to_force`]):
/// a peer measured on kernels two instruction sets below the machine's is no peer. OpenBLAS
/// chooses once, as it loads, so only a new process (and its children, which inherit the
/// variable) can run the other set; the report says what was forced and why. Nothing happens
/// when `OPENBLAS_CORETYPE` is already set: the caller's choice stands.
fn force_known_openblas_kernels() {
    #[cfg(feature = "openblas")]
    {
        use std::os::unix::process::CommandExt;
        if std::env::var_os("OPENBLAS_CORETYPE").is_some() {
            return;
        }
        let picked = bench_peers::openblas_core();
        let Some(core) = bench_suite::machine::openblas_core_to_force(&picked) else {
            return;
        };
        eprintln!(
            "report: OpenBLAS picked its '{picked}' kernels (its fallback for a CPU it does not \
             know); running again with OPENBLAS_CORETYPE={core}"
        );
        let exe = std::env::current_exe().expect("own path");
        let err = Command::new(exe)
            .args(std::env::args_os().skip(1))
            .env("OPENBLAS_CORETYPE", core)
            .env(bench_suite::machine::OPENBLAS_PICKED_VAR, &picked)
            .exec();
        eprintln!("report: could not run again with OPENBLAS_CORETYPE={core}: {err}");
        std::process::exit(1);
    }
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("report: {e}");
            std::process::exit(2);
        }
    };
    if !args.child && args.render_from.is_none() {
        force_known_openblas_kernels();
    }
    if args.child {
        run_child(&args);
        return;
    }
    if let Some(path) = &args.render_from {
        let results: Results = std::fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))
            .unwrap_or_else(|e| {
                eprintln!("report: {}: {e}", path.display());
                std::process::exit(1)
            });
        let json_name = path
            .file_name()
            .map_or(String::new(), |n| n.to_string_lossy().into());
        std::fs::create_dir_all(args.out.join("plots")).expect("create the output directory");
        let distributed = args
            .distributed_from
            .is_some()
            .then(|| run_distributed(&args, &results.machine))
            .flatten();
        write_pages(&args, &results, &json_name, distributed.as_ref());
        return;
    }
    let machine = MachineInfo::detect();
    eprintln!(
        "report: {} · {} cores · best path {} · threads {:?}",
        machine.cpu, machine.cores, machine.best_isa, args.threads
    );
    std::fs::create_dir_all(args.out.join("plots")).expect("create the output directory");
    let machine_perf = measure_machine(&args.threads);
    let mut results = Results {
        schema_version: SCHEMA_VERSION,
        date_utc: utc_date_now(),
        machine,
        machine_perf,
        gemm: None,
        layers: None,
        training: None,
    };
    let json_name = format!("{}-{}.json", results.date_utc, results.machine.host);
    // The JSON is rewritten after every part: a run cut short (a whole report takes hours
    // with every peer) keeps what it measured, and `--render-from` draws the pages from it.
    let save = |results: &Results| {
        write(
            &args.out,
            &json_name,
            serde_json::to_string_pretty(results)
                .expect("serialisable")
                .as_bytes(),
        )
    };
    if args.gemm {
        let gemm = run_gemm(&args, &results.machine, &results.machine_perf);
        // The children's peaks on our best path count for the whole run (the training's limits).
        for run in &gemm.runs {
            if let Some(p) = run.peak_of(&results.machine.best_isa) {
                results.machine_perf.raise_peak(run.threads, p);
            }
        }
        results.gemm = Some(gemm);
        save(&results);
    }
    if args.layers {
        let threads = *args.threads.iter().max().expect("a thread count");
        results.layers = Some(
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .expect("a thread pool")
                .install(|| bench_suite::layers_bench::measure(args.rounds)),
        );
        save(&results);
    }
    if args.train {
        results.training = Some(run_training(&args, &mut results.machine_perf));
        save(&results);
    }
    let distributed = args
        .distributed
        .then(|| run_distributed(&args, &results.machine))
        .flatten();
    write_pages(&args, &results, &json_name, distributed.as_ref());
}

/// Writes `name` under `out` atomically, or ends the report.
fn write(out: &std::path::Path, name: &str, bytes: &[u8]) {
    let path = out.join(name);
    nn::write_atomically(&path, bytes).unwrap_or_else(|e| {
        eprintln!("report: writing {}: {e}", path.display());
        std::process::exit(1)
    });
    eprintln!("report: wrote {}", path.display());
}

/// The pages and charts of `results` (whose JSON is `json_name`), and the data-parallel part's
/// when measured or read.
fn write_pages(
    args: &Args,
    results: &Results,
    json_name: &str,
    distributed: Option<&bench_suite::distributed::DistributedReport>,
) {
    let write = |name: &str, bytes: &[u8]| write(&args.out, name, bytes);
    write("README.md", results_markdown(results, json_name).as_bytes());
    if let Some(g) = &results.gemm {
        write(
            "gemm.json",
            serde_json::to_string_pretty(g)
                .expect("serialisable")
                .as_bytes(),
        );
        write("gemm.md", gemm_markdown(g).as_bytes());
    }
    if let Some(t) = &results.training {
        write("anatomy.md", training::anatomy_markdown(t).as_bytes());
    }
    if let Some(d) = distributed {
        write(
            "distributed.json",
            serde_json::to_string_pretty(d)
                .expect("serialisable")
                .as_bytes(),
        );
        write(
            "distributed.md",
            bench_suite::distributed::markdown(d).as_bytes(),
        );
    }
    if bench_suite::plots::load_font() {
        let plot = |name: &str, r: Result<(), Box<dyn std::error::Error>>| match r {
            Ok(()) => eprintln!(
                "report: wrote {}",
                args.out.join("plots").join(name).display()
            ),
            Err(e) => eprintln!("report: chart {name}: {e}"),
        };
        if let Some(g) = &results.gemm {
            for t in &args.threads {
                let name = if *t == 1 {
                    "gemm-1-thread.png".to_string()
                } else {
                    format!("gemm-{t}-threads.png")
                };
                plot(
                    &name,
                    bench_suite::plots::gemm_chart(g, *t, &args.out.join("plots").join(&name)),
                );
            }
        }
        if let Some(d) = distributed {
            let name = "distributed-efficiency.png";
            plot(
                name,
                bench_suite::plots::distributed_chart(d, &args.out.join("plots").join(name)),
            );
        }
        if let Some(t) = &results.training {
            for ds in ["mnist", "fashion"] {
                let name = format!("train-{ds}.png");
                plot(
                    &name,
                    bench_suite::plots::training_chart(t, ds, &args.out.join("plots").join(&name)),
                );
            }
        }
    } else {
        eprintln!("report: no TrueType font found (Debian: fonts-dejavu-core); charts skipped");
    }
}

/// The data-parallel part (when `mpirun` runs here): 2 MPI ranks against one process, the
/// sums' times, the projection. A failure is reported and leaves the rest of the report.
fn run_distributed(
    args: &Args,
    machine: &MachineInfo,
) -> Option<bench_suite::distributed::DistributedReport> {
    if let Some(path) = &args.distributed_from {
        let read = std::fs::read_to_string(path).map_err(|e| e.to_string());
        let parsed = read.and_then(|t| {
            serde_json::from_str::<bench_suite::distributed::DistributedReport>(&t)
                .map_err(|e| e.to_string())
        });
        return match parsed {
            Ok(mut d) => {
                // The projection as the current model makes it from the measurements.
                d.model();
                Some(d)
            }
            Err(e) => {
                eprintln!("report: {}: {e}", path.display());
                None
            }
        };
    }
    if !bench_suite::distributed::mpirun_available() {
        eprintln!("report: no mpirun here (Open MPI: libopenmpi-dev openmpi-bin): the data-parallel part is skipped");
        return None;
    }
    let data_dir = match args.data_dir.clone() {
        Some(d) => d,
        None => nn::datasets::mnist::locate().ok()?,
    };
    let threads = *args.threads.iter().max().expect("a thread count");
    // The machine's speed drifts within minutes: more rounds than the GEMM's default.
    let rounds = if args.quick { 1 } else { 5 };
    match bench_suite::distributed::measure(
        &data_dir,
        threads,
        rounds,
        &machine.cpu,
        &utc_date_now(),
    ) {
        Ok(d) => Some(d),
        Err(e) => {
            eprintln!("report: the data-parallel part failed: {e}");
            None
        }
    }
}

/// FMA peak and memory bandwidth on each thread count.
fn measure_machine(threads: &[usize]) -> MachinePerf {
    let isa = Isa::best();
    let mut perf = MachinePerf {
        fma_peak_gflops: vec![],
        memory_bandwidth_gbs: vec![],
    };
    for &t in threads {
        eprintln!("report: machine: FMA peak and memory bandwidth on {t} thread(s)");
        if let Ok(p) = bench_peers::peak::fma_peak_gflops(isa, t, 5) {
            perf.fma_peak_gflops.push((t, p));
        }
        perf.memory_bandwidth_gbs
            .push((t, bench_suite::machine::triad_bandwidth_gbs(t, 5)));
    }
    perf
}

/// The GEMM part: one measuring child per thread count.
/// `perf`: the FMA peaks (for the best path) and memory bandwidths the parent measured, per
/// thread count.
fn run_gemm(args: &Args, machine: &MachineInfo, perf: &MachinePerf) -> GemmReport {
    let exe = std::env::current_exe().expect("own path");
    let mut children = Vec::new();
    for &t in &args.threads {
        let mut cmd = Command::new(&exe);
        cmd.args([
            "--gemm-child",
            "--threads",
            &t.to_string(),
            "--rounds",
            &args.rounds.to_string(),
        ]);
        if args.quick {
            cmd.arg("--quick");
        }
        if let Some(only) = &args.only {
            cmd.args(["--shapes", &only.join(",")]);
        }
        for var in [
            "OPENBLAS_NUM_THREADS",
            "MATMUL_NUM_THREADS",
            "RAYON_NUM_THREADS",
        ] {
            cmd.env(var, t.to_string());
        }
        let out = cmd
            .stderr(Stdio::inherit())
            .output()
            .expect("run the measuring child");
        if !out.status.success() {
            eprintln!("report: the {t}-thread measurement failed ({})", out.status);
            std::process::exit(1);
        }
        let child: GemmChildReport =
            serde_json::from_slice(&out.stdout).expect("the child's JSON report");
        children.push(child);
    }
    GemmReport::new(
        machine.clone(),
        args.rounds,
        children,
        &perf.fma_peak_gflops,
        &perf.memory_bandwidth_gbs,
    )
}

/// The training part: every program (or those `--programs` names) on every data set, on the
/// largest thread count.
fn run_training(args: &Args, perf: &mut MachinePerf) -> TrainingReport {
    let threads = *args.threads.iter().max().expect("a thread count");
    fn fail(e: impl std::fmt::Display) -> ! {
        eprintln!("report: {e}");
        std::process::exit(1)
    }
    let dir = training::examples_dir().unwrap_or_else(|e| fail(e));
    let chosen = |p: &&Program| {
        args.programs
            .as_ref()
            .is_none_or(|ids| ids.iter().any(|id| id == p.id))
    };
    let jobs: Vec<(&Program, &str)> = PROGRAMS
        .iter()
        .filter(chosen)
        .flat_map(|p| p.datasets.iter().map(move |d| (p, *d)))
        .collect();
    // The data where a user's program finds it (downloaded there if no directory has it), so
    // that every framework reads the same files.
    let located = |dir: nn::Result<PathBuf>| dir.unwrap_or_else(|e| fail(e));
    let mnist_dir = match args.data_dir.clone() {
        Some(d) => d,
        None => located(nn::datasets::mnist::locate()),
    };
    let fashion_dir = located(nn::datasets::fashion_mnist::locate());
    let peers_dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/peers"));
    // burn builds beside the report: target/burn-peer.
    let target_dir = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("burn-peer")))
        .unwrap_or_else(|| PathBuf::from("target/burn-peer"));
    let runners = bench_suite::peers::prepare_peers(
        &args.peers,
        &args.python,
        &peers_dir,
        &target_dir,
        threads,
    );
    let data_dirs = [("mnist", mnist_dir.clone()), ("fashion", fashion_dir)];
    let mut runs = vec![];
    let mut peers = vec![];
    // The peak before the first program and after each: the limits divide by the best of the
    // run's, and each program's second limit by the better of the two measured beside it.
    let peak_now = || {
        bench_peers::peak::fma_peak_gflops(Isa::best(), threads, 3)
            .ok()
            .filter(|p| p.is_finite())
    };
    let mut peak_before = peak_now();
    if let Some(p) = peak_before {
        perf.raise_peak(threads, p);
    }
    // Program by program, ours and the peers interleaved (ours, each peer, ours again), so a
    // slow phase of a shared machine falls on every framework of the program alike.
    for (i, (p, ds)) in jobs.iter().enumerate() {
        eprintln!(
            "report: training {}/{}: program {} ({}) on {ds}, {threads} threads",
            i + 1,
            jobs.len(),
            p.id,
            p.example
        );
        let ours_once = |seed| {
            training::run_ours_once(&dir, (p, ds), threads, seed, args.epochs, Some(&mnist_dir))
                .unwrap_or_else(|e| fail(e))
        };
        // Seed by seed: ours, every peer, ours again.
        let before = training::RUNS_OF_OURS.div_ceil(2);
        let mut ours = vec![];
        let mut by_peer: Vec<Vec<(u64, PeerFigure)>> = vec![vec![]; runners.len()];
        for seed in training::seeds(args.seeds) {
            ours.extend((0..before).map(|_| ours_once(seed)));
            for (runner, figures) in runners.iter().zip(&mut by_peer) {
                let figure = runner.run((p, ds), threads, seed, args.epochs, &data_dirs);
                figures.extend(figure.map(|f| (seed, f)));
            }
            ours.extend((before..training::RUNS_OF_OURS).map(|_| ours_once(seed)));
        }
        peers.extend(by_peer.into_iter().filter_map(PeerFigure::over_seeds));
        let mut r = training::merge_runs(p, ds, ours).unwrap_or_else(|e| fail(e));
        let peak_after = peak_now();
        if let Some(p) = peak_after {
            perf.raise_peak(threads, p);
        }
        r.fma_peak_beside_gflops = [peak_before, peak_after]
            .into_iter()
            .flatten()
            .reduce(f64::max);
        peak_before = peak_after;
        eprintln!(
            "report:   ours {:.3} s/epoch, test accuracy {:.4}, peak RSS {:.0} MiB",
            r.epoch_s_median, r.test_accuracy, r.peak_rss_mib
        );
        runs.push(r);
    }
    peers.extend(bench_suite::peers::recorded_peers(&args.reference));
    // The rooflines' denominators, measured on the training's thread count in this run.
    let at = |v: &[(usize, f64)]| v.iter().find(|(t, _)| *t == threads).map(|&(_, x)| x);
    let caches = kernels::cpu::cache_info();
    let limits = at(&perf.fma_peak_gflops)
        .zip(at(&perf.memory_bandwidth_gbs))
        .map(|(peak, bw)| training::MachineLimits {
            fma_peak_gflops: peak,
            memory_bandwidth_gbs: bw,
            last_level_cache_bytes: caches.l3.unwrap_or(caches.l2).size as u64,
            peak_best_of_run: true,
        });
    TrainingReport::new(threads, runs, peers, limits)
}
