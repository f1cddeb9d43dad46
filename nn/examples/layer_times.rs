//! Times each layer's forward and backward pass and the optimizer step of the reference CNN at
//! batch 32 (for profiling): `cargo run --release -p nn --example layer_times`.

use std::time::Instant;

use nn::layers::Layer;
use nn::prelude::*;
use rand::SeedableRng;

fn main() {
    let n = 32;
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let mut layers: Vec<Box<dyn Layer>> = vec![
        Box::new(Conv2D::new(32, (3, 3), Act::Relu)),
        Box::new(MaxPooling2D::new((2, 2))),
        Box::new(Flatten::new()),
        Box::new(Dense::new(128, Act::Relu)),
        Box::new(Dense::new(10, Act::Linear)),
    ];
    let mut shape = vec![28, 28, 1];
    let mut grads = vec![];
    for (i, l) in layers.iter_mut().enumerate() {
        l.set_name(format!("layer{i}"));
        shape = l.build(&shape, &mut rng).unwrap();
        l.allocate(n).unwrap();
        grads.push(vec![0.01f32; n * shape.iter().product::<usize>()]);
    }
    let x: Vec<f32> = (0..n * 784).map(|i| (i % 255) as f32 / 255.0).collect();
    let mut opt = Optimizer::adam();
    let steps = 500;
    let mut fwd = vec![0.0f64; layers.len()];
    let mut bwd = vec![0.0f64; layers.len()];
    let mut upd = 0.0;
    rayon::scope(|_| {
        for s in 0..steps + 20 {
            let timing = s >= 20;
            for i in 0..layers.len() {
                let t = Instant::now();
                let (a, b) = layers.split_at_mut(i);
                let input: &[f32] = if i == 0 { &x } else { a[i - 1].output() };
                b[0].forward(input, n, true).unwrap();
                if timing {
                    fwd[i] += t.elapsed().as_secs_f64();
                }
            }
            for i in (0..layers.len()).rev() {
                let t = Instant::now();
                let (ga, gb) = grads.split_at_mut(i);
                let (a, b) = layers.split_at_mut(i);
                let input: &[f32] = if i == 0 { &x } else { a[i - 1].output() };
                let dx = ga.last_mut().map(|g| &mut g[..]);
                gb[0].fill(0.01);
                b[0].backward(input, &mut gb[0], dx, n).unwrap();
                if timing {
                    bwd[i] += t.elapsed().as_secs_f64();
                }
            }
            let t = Instant::now();
            opt.step_layers(&mut layers).unwrap();
            if timing {
                upd += t.elapsed().as_secs_f64();
            }
        }
    });
    let us = |v: f64| v / steps as f64 * 1e6;
    for (i, l) in layers.iter().enumerate() {
        println!(
            "{:>14}: forward {:7.1} µs, backward {:7.1} µs",
            l.class_name(),
            us(fwd[i]),
            us(bwd[i])
        );
    }
    println!("{:>14}: {:7.1} µs", "adam", us(upd));
    let total: f64 = fwd.iter().sum::<f64>() + bwd.iter().sum::<f64>() + upd;
    println!(
        "step {:.1} µs → {:.2} s per 1875-step epoch",
        us(total),
        us(total) * 1875.0 / 1e6
    );
}
