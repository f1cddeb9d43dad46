//! Runs one optimizer step over a parameter tensor in a loop, for profiling:
//! `update_probe adam|rmsprop|sgd N [iters]` (one thread unless `RAYON_NUM_THREADS` > 1); prints
//! the time per step and nanoseconds per weight, the first step left untimed.
mod common;

use kernels::optim::{update, Rule};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(rule), Some(n)) = (args.first(), args.get(1).and_then(|s| s.parse().ok())) else {
        eprintln!("usage: update_probe adam|rmsprop|sgd N [iters]");
        std::process::exit(2);
    };
    let n: usize = n;
    let iters: usize = args
        .get(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000)
        .max(1);
    let rule = match rule.as_str() {
        "adam" => Rule::Adam {
            alpha: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-7,
        },
        "rmsprop" => Rule::RmsProp {
            lr: 1e-3,
            rho: 0.9,
            eps: 1e-7,
        },
        "sgd" => Rule::Sgd {
            lr: 1e-2,
            momentum: 0.0,
            nesterov: false,
        },
        other => {
            eprintln!("unknown rule {other}: adam, rmsprop or sgd");
            std::process::exit(2);
        }
    };
    let opts = common::options_from_env();
    let g: Vec<f32> = (0..n).map(|i| ((i % 13) as f32 - 6.0) * 1e-3).collect();
    let mut w: Vec<f32> = (0..n).map(|i| (i % 7) as f32 * 0.1).collect();
    let mut state: Vec<Vec<f32>> = vec![vec![1e-4; n]; rule.state_buffers()];
    let mut views: Vec<&mut [f32]> = state.iter_mut().map(|s| &mut s[..]).collect();
    let mut t = std::time::Instant::now();
    for step in 0..=iters {
        if step == 1 {
            t = std::time::Instant::now();
        }
        update(&opts, rule, &mut w, &g, &mut views).expect("update");
    }
    let secs = t.elapsed().as_secs_f64() / iters as f64;
    println!(
        "{:.2} us per step, {:.3} ns per weight ({} weights) checksum {}",
        secs * 1e6,
        secs * 1e9 / n as f64,
        n,
        w.iter().map(|&x| x as f64).sum::<f64>()
    );
}
