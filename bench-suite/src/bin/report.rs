//! The benchmark report: measures the machine and our kernels against their peers in one run and
//! writes `results/`.
//!
//! ```text
//! cargo run --release -p bench-suite --bin report -- [--part gemm] [--threads 1,2] [--rounds 5]
//!                                                    [--quick] [--out results]
//! ```
//!
//! Each thread count runs in a child process of its own, because OpenBLAS, matrixmultiply and
//! rayon size their thread pools once per process (from `OPENBLAS_NUM_THREADS`,
//! `MATMUL_NUM_THREADS` and `RAYON_NUM_THREADS`). Within a child every library is measured on
//! each shape in interleaved rounds, so ratios come from side-by-side samples.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use bench_suite::gemm_bench::{all_shapes, measure_shape, Library, Measurement, Shape};
use bench_suite::report::{gemm_markdown, GemmChildReport, GemmReport, MachineInfo};
use kernels::Isa;

struct Args {
    threads: Vec<usize>,
    rounds: usize,
    quick: bool,
    /// Only these shapes (M×K×N labels), when given.
    only: Option<Vec<String>>,
    out: PathBuf,
    child: bool,
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
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--part" => {
                let part = value("--part")?;
                if part != "gemm" && part != "all" {
                    return Err(format!("unknown part {part:?}: the parts are gemm, all"));
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
                println!("usage: report [--part gemm|all] [--threads 1,2] [--rounds N] [--quick] [--shapes MxKxN,..] [--out DIR]");
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
                let dims: Vec<usize> = label.split('x').filter_map(|d| d.parse().ok()).collect();
                match dims[..] {
                    [m, k, n] => Shape { m, k, n },
                    _ => {
                        eprintln!("report: --shapes takes MxKxN labels, got {label:?}");
                        std::process::exit(2);
                    }
                }
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
    let peak = |isa| kernels::peak::fma_peak_gflops(isa, threads, 5).ok();
    let peak_before = (peak(Isa::Avx512), peak(Isa::Avx2));
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
    let peak_after = (peak(Isa::Avx512), peak(Isa::Avx2));
    let both = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    let report = GemmChildReport {
        threads,
        fma_peak_avx512_gflops: both(peak_before.0, peak_after.0),
        fma_peak_avx2_gflops: both(peak_before.1, peak_after.1),
        measurements,
    };
    println!("{}", serde_json::to_string(&report).expect("serialisable"));
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("report: {e}");
            std::process::exit(2);
        }
    };
    if args.child {
        run_child(&args);
        return;
    }
    let machine = MachineInfo::detect();
    eprintln!(
        "report: {} · {} cores · best path {} · threads {:?}",
        machine.cpu, machine.cores, machine.best_isa, args.threads
    );
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
    let report = GemmReport::new(machine, args.rounds, children);
    std::fs::create_dir_all(&args.out).expect("create the output directory");
    let json_path = args.out.join("gemm.json");
    let md_path = args.out.join("gemm.md");
    bench_suite::report::write_atomically(
        &json_path,
        serde_json::to_string_pretty(&report).unwrap().as_bytes(),
    )
    .expect("write gemm.json");
    bench_suite::report::write_atomically(&md_path, gemm_markdown(&report).as_bytes())
        .expect("write gemm.md");
    eprintln!(
        "report: wrote {} and {}",
        json_path.display(),
        md_path.display()
    );
}
