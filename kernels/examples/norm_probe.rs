//! Runs one batch-normalisation pass in a loop, for profiling:
//! `norm_probe forward|backward|backward-relu ROWS CHANNELS [iters]` (one thread unless
//! `RAYON_NUM_THREADS` > 1): the training forward with a ReLU after it, or the backward pass
//! with the input gradient (`backward-relu`: through the ReLU after it); prints the time per
//! pass and the bytes it reads and writes per nanosecond, the first pass left untimed.
mod common;

use kernels::norm::{batch_norm_backward, batch_norm_forward_training};
use kernels::norm::{BatchNorm, BatchNormGrads, BatchStats};
use kernels::Activation;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let num = |i: usize| args.get(i).and_then(|s| s.parse::<usize>().ok());
    let (Some(pass), Some(rows), Some(c)) = (args.first(), num(1), num(2)) else {
        eprintln!("usage: norm_probe forward|backward|backward-relu ROWS CHANNELS [iters]");
        std::process::exit(2);
    };
    let iters = num(3).unwrap_or(1000).max(1);
    let opts = common::options_from_env();
    let s = BatchNorm {
        rows,
        channels: c,
        epsilon: 1e-3,
    };
    let len = rows * c;
    let x: Vec<f32> = (0..len)
        .map(|i| ((i * 7919) % 1000) as f32 * 1e-3)
        .collect();
    let dy: Vec<f32> = (0..len).map(|i| ((i % 13) as f32 - 6.0) * 1e-3).collect();
    let (gamma, beta) = (vec![1.1f32; c], vec![0.1f32; c]);
    let (mut mean, mut variance, mut inv_std) = (vec![0f32; c], vec![0f32; c], vec![0f32; c]);
    let (mut dgamma, mut dbeta) = (vec![0f32; c], vec![0f32; c]);
    let mut y = vec![0f32; len];
    let mut dx = vec![0f32; len];
    let forward = |y: &mut [f32], mean: &mut [f32], variance: &mut [f32], inv_std: &mut [f32]| {
        let stats = BatchStats {
            mean,
            variance,
            inv_std,
        };
        batch_norm_forward_training(&opts, &s, &x, (&gamma, &beta), Activation::Relu, y, stats)
            .expect("forward");
    };
    forward(&mut y, &mut mean, &mut variance, &mut inv_std);
    // Arrays read and written per pass: x twice and y once forward; x and dy (and y through the
    // ReLU) twice and dx once backward.
    let arrays = match pass.as_str() {
        "forward" => 3,
        "backward" => 5,
        "backward-relu" => 7,
        other => {
            eprintln!("unknown pass {other}: forward, backward or backward-relu");
            std::process::exit(2);
        }
    };
    let mut t = std::time::Instant::now();
    for call in 0..=iters {
        if call == 1 {
            t = std::time::Instant::now();
        }
        if pass == "forward" {
            forward(&mut y, &mut mean, &mut variance, &mut inv_std);
            continue;
        }
        let after = (pass == "backward-relu").then_some((Activation::Relu, &y[..]));
        batch_norm_backward(
            &opts,
            &s,
            &x,
            &dy,
            after,
            &gamma,
            (&mean, &inv_std),
            Some(&mut dx),
            BatchNormGrads {
                dgamma: &mut dgamma,
                dbeta: &mut dbeta,
            },
        )
        .expect("backward");
    }
    let secs = t.elapsed().as_secs_f64() / iters as f64;
    println!(
        "{pass} {rows}x{c}: {:.2} us per pass, {:.1} GB/s, checksum {}",
        secs * 1e6,
        (arrays * len * 4) as f64 / secs / 1e9,
        y.iter().chain(&dx).map(|&v| v as f64).sum::<f64>() + dgamma[0] as f64
    );
}
