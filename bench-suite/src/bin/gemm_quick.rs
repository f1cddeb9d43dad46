//! Quick GEMM comparison for development: `cargo run --release -p bench-suite --bin gemm_quick -- M K N [threads]`.
use bench_suite::gemm_bench::{measure_shape, Library, Shape};

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("numbers"))
        .collect();
    let shapes: Vec<Shape> = if args.len() >= 3 && args[0] > 0 {
        vec![Shape {
            m: args[0],
            k: args[1],
            n: args[2],
        }]
    } else {
        bench_suite::gemm_bench::all_shapes()
    };
    let threads = args.get(3).copied().unwrap_or(1);
    for isa in [kernels::Isa::Avx512, kernels::Isa::Avx2] {
        if let Ok(p) = kernels::peak::fma_peak_gflops(isa, threads, 5) {
            println!("FMA peak {isa} on {threads} threads: {p:.1} GFLOP/s");
        }
    }
    for shape in shapes {
        let ms = measure_shape(&Library::available(), shape, threads, 5);
        let line: Vec<String> = ms
            .iter()
            .map(|m| {
                format!(
                    "{} {:.1} ({:.0e})",
                    m.library, m.gflops_median, m.max_rel_diff_vs_openblas
                )
            })
            .collect();
        println!("{:>16} t{}: {}", shape.label(), threads, line.join(" | "));
    }
    for isa in [kernels::Isa::Avx512, kernels::Isa::Avx2] {
        if let Ok(p) = kernels::peak::fma_peak_gflops(isa, threads, 5) {
            println!("FMA peak {isa} on {threads} threads: {p:.1} GFLOP/s");
        }
    }
}
