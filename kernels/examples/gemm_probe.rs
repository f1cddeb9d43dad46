//! Runs one GEMM shape in a loop, for profiling: `gemm_probe M K N [iters] [at|bt|plan]` (C =
//! A·B, row-major; `at`: A stored K × M and read transposed, `bt`: B stored N × K; `plan`: through
//! a `GemmPlan` made once; threads from
//! `RAYON_NUM_THREADS`); prints the time per call and GFLOP/s, the first call left untimed.
use kernels::{gemm, ExecOptions, GemmPlan, MatLayout, MatMut, MatRef};

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map_while(|s| s.parse().ok())
        .collect();
    let [m, k, n, ..] = args[..] else {
        eprintln!("usage: gemm_probe M K N [iters] [at|bt|plan]");
        std::process::exit(2);
    };
    let iters = args.get(3).copied().unwrap_or(1000).max(1);
    let layout = std::env::args().nth(5).unwrap_or_default();
    let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
    let b: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 * 0.1).collect();
    let mut c = vec![0.0f32; m * n];
    let l = |r, c| MatLayout::row_major(r, c, c);
    let plan = (layout == "plan")
        .then(|| GemmPlan::new(&ExecOptions::default(), 1.0, l(m, k), l(k, n), 0.0, l(m, n)))
        .transpose()
        .unwrap_or_else(|e| {
            eprintln!("gemm_probe: {e}");
            std::process::exit(1);
        });
    // One call untimed first: it touches C's pages and grows the packing buffers, whose first
    // faults would otherwise be counted (a tenth of ten 2048³ calls on a VM).
    let mut t = std::time::Instant::now();
    for call in 0..=iters {
        if call == 1 {
            t = std::time::Instant::now();
        }
        let a_view = match layout.as_str() {
            "at" => MatRef::row_major(&a, k, m, m).t(),
            _ => MatRef::row_major(&a, m, k, k),
        };
        let b_view = match layout.as_str() {
            "bt" => MatRef::row_major(&b, n, k, k).t(),
            _ => MatRef::row_major(&b, k, n, n),
        };
        let done = match &plan {
            Some(plan) => plan.run(&a, &b, &mut c),
            None => gemm(1.0, a_view, b_view, 0.0, MatMut::row_major(&mut c, m, n, n)),
        };
        if let Err(e) = done {
            eprintln!("gemm_probe: {e}");
            std::process::exit(1);
        }
    }
    let s = t.elapsed().as_secs_f64() / iters as f64;
    let gflops = 2.0 * (m * n * k) as f64 / s / 1e9;
    println!("{m}x{k}x{n}: {:.1} µs, {gflops:.1} GFLOP/s", s * 1e6);
}
