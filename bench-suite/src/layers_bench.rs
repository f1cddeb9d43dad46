//! The layers part of the report: convolution passes of the reference CNN's first layer (batch
//! 32 and 256) and of a VGG-style layer (3×3, 64 → 64 channels, 56×56, 'same', batch 4), ours
//! against the same operation through im2col + OpenBLAS (`Backend::OpenBlas`: the same tasks, each
//! product an OpenBLAS sgemm), timed in interleaved rounds; and our large-GEMM rate on the same
//! threads, the yardstick of the VGG layer's target.

use crate::gemm_bench::filled;
use serde::{Deserialize, Serialize};

use kernels::conv::{conv2d_backward_input, conv2d_backward_weights, conv2d_forward, Conv2d};
use kernels::{Activation, Backend, ExecOptions, MatMut, MatRef, Padding};

use crate::timing::{calls_per_sample, estimate_secs, median, sample_secs};

/// One pass of one layer: ours and im2col + OpenBLAS, median seconds over rounds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ConvMeasurement {
    pub layer: String,
    pub pass: String,
    pub flops: f64,
    pub ours_s: f64,
    pub openblas_s: Option<f64>,
    pub ours_gflops: f64,
    pub openblas_gflops: Option<f64>,
    /// OpenBLAS time ÷ ours (> 1: we are faster).
    pub speedup_vs_openblas: Option<f64>,
    /// Our 1024³ GEMM's rate in the same interleaved rounds (the VGG-style layer's yardstick;
    /// taken in the same rounds because this machine's speed drifts by tens of percent between
    /// one minute and the next).
    #[serde(default)]
    pub gemm_1024_gflops: Option<f64>,
}

/// The layers part of a report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LayersReport {
    pub threads: usize,
    pub rounds: usize,
    pub measurements: Vec<ConvMeasurement>,
    /// Our GEMM at 1024³ on the same threads, same run.
    pub ours_gemm_1024_gflops: f64,
}

/// Median seconds per call of each closure, sampled in interleaved rounds.
fn interleaved(fs: &mut [&mut dyn FnMut()], rounds: usize) -> Vec<f64> {
    let calls: Vec<usize> = fs
        .iter_mut()
        .map(|f| calls_per_sample(estimate_secs(*f), 0.03))
        .collect();
    let mut samples = vec![Vec::new(); fs.len()];
    for _ in 0..rounds {
        for (i, f) in fs.iter_mut().enumerate() {
            samples[i].push(sample_secs(*f, calls[i]));
        }
    }
    samples.iter_mut().map(|s| median(s)).collect()
}

/// Measures every layer and pass on the current rayon pool.
pub fn measure(rounds: usize) -> LayersReport {
    let cases = [
        (
            "28×28×1→32 3×3 valid, batch 32",
            Conv2d::square(32, (28, 28, 1), 32, 3, Padding::Valid),
        ),
        (
            "28×28×1→32 3×3 valid, batch 256",
            Conv2d::square(256, (28, 28, 1), 32, 3, Padding::Valid),
        ),
        (
            "56×56×64→64 3×3 same, batch 4",
            Conv2d::square(4, (56, 56, 64), 64, 3, Padding::Same),
        ),
    ];
    let n = 1024;
    let (ga, gb) = (filled(n * n, 5), filled(n * n, 6));
    let mut gc = vec![0.0; n * n];
    let mut gemm_1024 = || {
        kernels::gemm(
            1.0,
            MatRef::row_major(&ga, n, n, n),
            MatRef::row_major(&gb, n, n, n),
            0.0,
            MatMut::row_major(&mut gc, n, n, n),
        )
        .unwrap()
    };
    let gemm_flops = 2.0 * (n * n * n) as f64;
    let ours = ExecOptions::default();
    let blas = Backend::OpenBlas
        .is_available()
        .then(|| ExecOptions::with_backend(Backend::OpenBlas));
    let mut out = vec![];
    for (name, s) in cases {
        eprintln!("report: layers: {name}");
        let x = filled(s.input_len(), 1);
        let w = filled(s.weight_len(), 2);
        let bias = filled(s.out_c, 3);
        let dy = filled(s.output_len(), 4);
        let (mut y, mut dw, mut db, mut dx) = (
            vec![0.0; s.output_len()],
            vec![0.0; s.weight_len()],
            vec![0.0; s.out_c],
            vec![0.0; s.input_len()],
        );
        let first_layer = s.in_c == 1;
        let passes: &[&str] = if first_layer {
            // The first layer of a network needs no input gradient.
            &["forward", "backward-weights", "forward+backward"]
        } else {
            &["forward", "backward-weights", "backward-input"]
        };
        for &pass in passes {
            let mut run = |opts: &ExecOptions| match pass {
                "forward" => {
                    conv2d_forward(opts, &s, &x, &w, Some(&bias), Activation::Relu, &mut y).unwrap()
                }
                "backward-weights" => {
                    conv2d_backward_weights(opts, &s, &x, &dy, &mut dw, Some(&mut db)).unwrap()
                }
                "backward-input" => conv2d_backward_input(opts, &s, &dy, &w, &mut dx).unwrap(),
                _ => {
                    conv2d_forward(opts, &s, &x, &w, Some(&bias), Activation::Relu, &mut y)
                        .unwrap();
                    conv2d_backward_weights(opts, &s, &x, &dy, &mut dw, Some(&mut db)).unwrap()
                }
            };
            let flops = s.flops() * if pass == "forward+backward" { 2.0 } else { 1.0 };
            // Two closures over one buffer set: run them one after the other. The VGG-style
            // layer's passes are timed in the same rounds as the 1024³ GEMM, their yardstick.
            let run = std::cell::RefCell::new(&mut run);
            let mut a = || (run.borrow_mut())(&ours);
            let mut c = || (run.borrow_mut())(&blas.unwrap_or_default());
            let times = match (blas.is_some(), first_layer) {
                (true, true) => interleaved(&mut [&mut a, &mut c], rounds),
                (true, false) => interleaved(&mut [&mut a, &mut c, &mut gemm_1024], rounds),
                (false, true) => interleaved(&mut [&mut a], rounds),
                (false, false) => {
                    let t = interleaved(&mut [&mut a, &mut gemm_1024], rounds);
                    vec![t[0], f64::NAN, t[1]]
                }
            };
            let blas_s = blas.and(times.get(1).copied());
            let gemm_s = times.get(2).copied();
            out.push(ConvMeasurement {
                layer: name.into(),
                pass: pass.into(),
                flops,
                ours_s: times[0],
                openblas_s: blas_s,
                ours_gflops: flops / times[0] / 1e9,
                openblas_gflops: blas_s.map(|t| flops / t / 1e9),
                speedup_vs_openblas: blas_s.map(|t| t / times[0]),
                gemm_1024_gflops: gemm_s.map(|t| gemm_flops / t / 1e9),
            });
        }
    }
    let t = interleaved(&mut [&mut gemm_1024], rounds)[0];
    LayersReport {
        threads: rayon::current_num_threads(),
        rounds,
        measurements: out,
        ours_gemm_1024_gflops: gemm_flops / t / 1e9,
    }
}

/// The layers table in markdown.
pub fn layers_markdown(l: &LayersReport) -> String {
    let mut out = format!(
        "## Convolution layers ({} threads): ours against im2col + OpenBLAS, same run\n\n\
         | layer | pass | ours | im2col + OpenBLAS | ours faster by |\n|---|---|---:|---:|---:|\n",
        l.threads
    );
    for m in &l.measurements {
        out += &format!(
            "| {} | {} | {:.0} µs ({:.0} GFLOP/s) | {} | {} |\n",
            m.layer,
            m.pass,
            m.ours_s * 1e6,
            m.ours_gflops,
            m.openblas_s.map_or("—".into(), |t| format!(
                "{:.0} µs ({:.0} GFLOP/s)",
                t * 1e6,
                m.openblas_gflops.unwrap_or(f64::NAN)
            )),
            m.speedup_vs_openblas
                .map_or("—".into(), |s| format!("{s:.2}×")),
        );
    }
    let vgg: Vec<&ConvMeasurement> = l
        .measurements
        .iter()
        .filter(|m| m.layer.starts_with("56"))
        .collect();
    if !vgg.is_empty() && vgg.iter().any(|m| m.gemm_1024_gflops.is_none()) {
        // Results from before the yardstick was timed in the same rounds as each pass.
        let worst = vgg
            .iter()
            .map(|m| m.ours_gflops)
            .fold(f64::INFINITY, f64::min);
        out += &format!(
            "\nOur GEMM at 1024³ on the same threads: {:.0} GFLOP/s; the VGG-style layer's slowest \
             pass runs at {:.0} % of it.\n",
            l.ours_gemm_1024_gflops,
            100.0 * worst / l.ours_gemm_1024_gflops
        );
    } else if !vgg.is_empty() {
        out += &format!(
            "\nOur GEMM at 1024³ on the same threads: {:.0} GFLOP/s. The VGG-style layer's passes \
             against it, timed in the same interleaved rounds:",
            l.ours_gemm_1024_gflops
        );
        for m in &vgg {
            let yardstick = m.gemm_1024_gflops.unwrap_or(l.ours_gemm_1024_gflops);
            out += &format!(
                " {} {:.0} % ({:.0} of {:.0} GFLOP/s);",
                m.pass,
                100.0 * m.ours_gflops / yardstick,
                m.ours_gflops,
                yardstick
            );
        }
        out.pop();
        out += ".\n";
    }
    out
}
