//! Runs one optimizer step in a loop, for profiling (one thread unless `RAYON_NUM_THREADS` > 1;
//! the first step left untimed):
//!
//! * `update_probe adam|rmsprop|sgd N [iters]`: the step over N weights (`optim::update`);
//!   prints the time per step and nanoseconds per weight;
//! * `update_probe adam|rmsprop|sgd BATCHxINPUTSxUNITS [iters] [dx]`: a Dense layer's backward
//!   pass with the step fused in (`optim::update_from_product`: the kernel's gradient formed a
//!   block of rows at a time, and with `dx` the input gradient too); prints the time per step
//!   and the products' GFLOP/s.
mod common;

use kernels::optim::{update, update_from_product, Rule};
use kernels::MatRef;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = || -> ! {
        eprintln!("usage: update_probe adam|rmsprop|sgd N|BATCHxINPUTSxUNITS [iters] [dx]");
        std::process::exit(2);
    };
    let (Some(rule), Some(size)) = (args.first(), args.get(1)) else {
        usage()
    };
    let dims: Vec<usize> = size.split('x').map_while(|s| s.parse().ok()).collect();
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
    let (batch, n, units) = match dims[..] {
        [n] if !size.contains('x') => (0, n, 0),
        [batch, inputs, units] => (batch, inputs * units, units),
        _ => usage(),
    };
    let with_dx = args.get(3).is_some_and(|a| a == "dx");
    let g: Vec<f32> = (0..n).map(|i| ((i % 13) as f32 - 6.0) * 1e-3).collect();
    let mut w: Vec<f32> = (0..n).map(|i| (i % 7) as f32 * 0.1).collect();
    let mut state: Vec<Vec<f32>> = vec![vec![1e-4; n]; rule.state_buffers()];
    let mut views: Vec<&mut [f32]> = state.iter_mut().map(|s| &mut s[..]).collect();
    let inputs = n.checked_div(units).unwrap_or(0);
    let a: Vec<f32> = (0..batch * inputs).map(|i| (i % 11) as f32 * 0.1).collect();
    let b: Vec<f32> = (0..batch * units)
        .map(|i| ((i % 5) as f32 - 2.0) * 0.01)
        .collect();
    let mut dx = vec![0.0f32; if with_dx { batch * inputs } else { 0 }];
    let mut t = std::time::Instant::now();
    for step in 0..=iters {
        if step == 1 {
            t = std::time::Instant::now();
        }
        if units == 0 {
            update(&opts, rule, &mut w, &g, &mut views).expect("update");
        } else {
            update_from_product(
                &opts,
                rule,
                MatRef::row_major(&a, batch, inputs, inputs),
                MatRef::row_major(&b, batch, units, units),
                &mut w,
                &mut views,
                with_dx.then_some(&mut dx[..]),
            )
            .expect("update_from_product");
        }
    }
    let secs = t.elapsed().as_secs_f64() / iters as f64;
    let checksum = w.iter().chain(&dx).map(|&x| x as f64).sum::<f64>();
    if units == 0 {
        println!(
            "{:.2} us per step, {:.3} ns per weight ({n} weights) checksum {checksum}",
            secs * 1e6,
            secs * 1e9 / n as f64,
        );
    } else {
        let products = if with_dx { 2 } else { 1 };
        let flops = 2.0 * (batch * n * products) as f64;
        println!(
            "{batch}x{inputs}x{units}{}: {:.2} us per step, {:.1} GFLOP/s of products \
             ({:.3} ns per weight) checksum {checksum}",
            if with_dx { " dx" } else { "" },
            secs * 1e6,
            flops / secs / 1e9,
            secs * 1e9 / n as f64,
        );
    }
}
