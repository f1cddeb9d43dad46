//! Runs one convolution pass in a loop, for profiling:
//! `conv_profile <MODE> [iters] [vgg|SHAPE]`, MODE one of forward, forward-im2col, pooled,
//! pooled-infer, weights, pooled-weights, input — the reference CNN's first layer at batch 32
//! (`pooled`: with the 2×2 max pooling after it, as in training, argmax kept; `pooled-infer`:
//! without argmax, as at inference; `pooled-weights`: the weight gradient from that pooling's
//! gradient), with `vgg` a 56×56×64 → 64 'same' layer at batch 4, or a square kernel's
//! `batch,height,width,in_c,out_c,k,same|valid`.
use kernels::conv::*;
use kernels::conv_pool::{
    conv2d_maxpool_backward_weights, conv2d_maxpool_forward, Filter, PooledGradient, PooledOutput,
};
use kernels::pool::Pool2d;
use kernels::{Activation, ExecOptions};
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let which = args.get(1).map(String::as_str).unwrap_or("forward");
    let iters: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(2000);
    let s = match args.get(3).map(String::as_str) {
        Some("vgg") => Conv2d::square(4, (56, 56, 64), 64, 3, Padding::Same),
        Some(spec) => parse_shape(spec).unwrap_or_else(|| {
            eprintln!("conv_profile: a shape is batch,height,width,in_c,out_c,k,same|valid");
            std::process::exit(2);
        }),
        None => Conv2d::square(32, (28, 28, 1), 32, 3, Padding::Valid),
    };
    let x = vec![0.5f32; s.input_len()];
    let w = vec![0.25f32; s.weight_len()];
    let b = vec![0.1f32; s.out_c];
    let dy = vec![0.1f32; s.output_len()];
    let mut y = vec![0.0; s.output_len()];
    let mut dw = vec![0.0; s.weight_len()];
    let mut db = vec![0.0; s.out_c];
    let mut dx = vec![0.0; s.input_len()];
    let o = ExecOptions::default();
    let pool = Pool2d::new(s.batch, (s.out_h(), s.out_w(), s.out_c), 2);
    let mut y_pool = vec![0.0; pool.output_len()];
    let mut argmax = vec![0u32; pool.output_len()];
    let filter = Filter {
        weights: &w,
        bias: Some(&b),
        act: Activation::Relu,
    };
    if which == "pooled-weights" {
        // The pooling's output and argmax of real windows (varied inputs: the maxima spread).
        let x: Vec<f32> = (0..s.input_len())
            .map(|i| ((i * 7919) % 101) as f32 * 0.01)
            .collect();
        let out = PooledOutput {
            y_conv: None,
            y_pool: &mut y_pool,
            argmax: Some(&mut argmax),
        };
        conv2d_maxpool_forward(&o, &s, &pool, &x, filter, out).unwrap();
        let dy_pool = vec![0.1f32; pool.output_len()];
        let t = std::time::Instant::now();
        for _ in 0..iters {
            let pooled = PooledGradient {
                act: Activation::Relu,
                y_pool: &y_pool,
                dy_pool: &dy_pool,
                argmax: &argmax,
            };
            conv2d_maxpool_backward_weights(&o, &s, &pool, &x, pooled, &mut dw, Some(&mut db))
                .unwrap();
        }
        println!(
            "{which}: {:.1} µs per call",
            t.elapsed().as_secs_f64() * 1e6 / iters as f64
        );
        return;
    }
    let t = std::time::Instant::now();
    for _ in 0..iters {
        match which {
            "forward" => {
                conv2d_forward(&o, &s, &x, &w, Some(&b), Activation::Relu, &mut y).unwrap()
            }
            "forward-im2col" => {
                conv2d_forward_im2col(&o, &s, &x, &w, Some(&b), Activation::Relu, &mut y).unwrap()
            }
            "pooled" | "pooled-infer" => conv2d_maxpool_forward(
                &o,
                &s,
                &pool,
                &x,
                filter,
                PooledOutput {
                    y_conv: None,
                    y_pool: &mut y_pool,
                    argmax: (which == "pooled").then_some(&mut argmax[..]),
                },
            )
            .unwrap(),
            "input" => conv2d_backward_input(&o, &s, &dy, &w, &mut dx).unwrap(),
            _ => conv2d_backward_weights(&o, &s, &x, &dy, &mut dw, Some(&mut db)).unwrap(),
        }
    }
    println!(
        "{which}: {:.1} µs per call",
        t.elapsed().as_secs_f64() * 1e6 / iters as f64
    );
}

/// `batch,height,width,in_c,out_c,k,same|valid`.
fn parse_shape(spec: &str) -> Option<Conv2d> {
    let parts: Vec<&str> = spec.split(',').collect();
    let [b, h, w, c, oc, k, padding] = parts[..] else {
        return None;
    };
    let n = |v: &str| v.parse::<usize>().ok();
    let padding = match padding {
        "same" => Padding::Same,
        "valid" => Padding::Valid,
        _ => return None,
    };
    Some(Conv2d::square(
        n(b)?,
        (n(h)?, n(w)?, n(c)?),
        n(oc)?,
        n(k)?,
        padding,
    ))
}
