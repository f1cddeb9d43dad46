//! The report's reference programs A–G trained with burn (its Flex CPU backend with SIMD and
//! rayon, autodiff, burn's own optimizers), as the report runs them when asked
//! (`report --peers burn`): `burn-programs --program C --threads 2 --data-dir DIR`.
//!
//! The same training problems as our examples and the Keras and PyTorch scripts beside this
//! project: Glorot-uniform weights and zero biases (Keras's initialisation), Keras's optimizer
//! defaults set explicitly (Adam ε = 1e-7, RMSprop ρ = 0.9 without momentum, SGD with Nesterov
//! momentum 0.9 and no dampening), BatchNormalization's ε = 1e-3 and momentum 0.99, softmax and
//! cross-entropy fused on logits, a plain training loop (shuffle, batch, forward, backward, step)
//! and a validation pass after every epoch where the Keras program has one (A, C, F, G). Prints
//! one JSON line with the same fields as our examples' `--json`.
use std::io::Read;
use std::time::Instant;

use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::pool::{AvgPool2d, AvgPool2dConfig, MaxPool2d, MaxPool2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Initializer, Linear, LinearConfig, PaddingConfig2d};
use burn::optim::momentum::MomentumConfig;
use burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer, RmsPropConfig, SgdConfig};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Int, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};

const GLOROT: Initializer = Initializer::XavierUniform { gain: 1.0 };

struct Options {
    program: char,
    threads: usize,
    data_dir: Option<String>,
    epochs: Option<usize>,
    seed: u64,
}

fn options() -> Result<Options, String> {
    let mut o = Options {
        program: ' ',
        threads: 2,
        data_dir: None,
        epochs: None,
        seed: 42,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--program" => {
                let v = value()?;
                o.program = match v.as_str() {
                    "A" | "B" | "C" | "D" | "E" | "F" | "G" => v.chars().next().unwrap_or(' '),
                    _ => return Err(format!("--program {v}: one of A to G")),
                }
            }
            "--threads" => o.threads = value()?.parse().map_err(|e| format!("--threads: {e}"))?,
            "--data-dir" => o.data_dir = Some(value()?),
            "--epochs" => o.epochs = Some(value()?.parse().map_err(|e| format!("--epochs: {e}"))?),
            "--seed" => o.seed = value()?.parse().map_err(|e| format!("--seed: {e}"))?,
            _ => return Err(format!("unknown argument {flag}")),
        }
    }
    if o.program == ' ' {
        return Err("--program is required".into());
    }
    if o.threads == 0 {
        return Err("--threads must be at least 1".into());
    }
    Ok(o)
}

/// One IDX file (gzip-compressed or not): its dimensions and bytes, the sizes checked.
fn idx(dir: &str, name: &str) -> Result<(Vec<usize>, Vec<u8>), String> {
    let path = std::path::Path::new(dir).join(name);
    let gz = std::path::Path::new(dir).join(format!("{name}.gz"));
    let mut raw = vec![];
    if let Ok(f) = std::fs::File::open(&gz) {
        flate2::read::GzDecoder::new(f)
            .read_to_end(&mut raw)
            .map_err(|e| format!("{}: {e}", gz.display()))?;
    } else {
        raw = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    let ndim = *raw.get(3).ok_or(format!("{name}: too short"))? as usize;
    let head = 4 + 4 * ndim;
    if raw.len() < head || raw[2] != 8 {
        return Err(format!("{name}: not an IDX file of bytes"));
    }
    let dims: Vec<usize> = (0..ndim)
        .map(|i| u32::from_be_bytes(raw[4 + 4 * i..8 + 4 * i].try_into().unwrap()) as usize)
        .collect();
    if dims.iter().product::<usize>() != raw.len() - head {
        return Err(format!("{name}: its size does not match its dimensions"));
    }
    Ok((dims, raw[head..].to_vec()))
}

/// Samples as rows of floats and labels 0–9.
struct Split {
    x: Vec<f32>,
    y: Vec<i64>,
    features: usize,
}

impl Split {
    fn len(&self) -> usize {
        self.y.len()
    }

    /// Rows `idx` as a batch tensor (flat: the convolutional models reshape it).
    fn batch(&self, idx: &[usize], device: &Device) -> (Tensor<2>, Tensor<1, Int>) {
        let f = self.features;
        let mut x = Vec::with_capacity(idx.len() * f);
        for &i in idx {
            x.extend_from_slice(&self.x[i * f..(i + 1) * f]);
        }
        let y: Vec<i64> = idx.iter().map(|&i| self.y[i]).collect();
        (
            Tensor::from_data(TensorData::new(x, [idx.len(), f]), device),
            Tensor::from_data(TensorData::new(y, [idx.len()]), device),
        )
    }
}

fn mnist_like(dir: &str, prefix: &str) -> Result<Split, String> {
    let (dims, pixels) = idx(dir, &format!("{prefix}-images-idx3-ubyte"))?;
    let (ldims, labels) = idx(dir, &format!("{prefix}-labels-idx1-ubyte"))?;
    if dims.len() != 3 || ldims != [dims[0]] || labels.iter().any(|&l| l > 9) {
        return Err(format!("{prefix}: images and labels do not match"));
    }
    Ok(Split {
        x: pixels.iter().map(|&p| p as f32 / 255.0).collect(),
        y: labels.iter().map(|&l| l as i64).collect(),
        features: dims[1] * dims[2],
    })
}

/// Program E's data, drawn exactly as our `synthetic` example draws it (same generator, same
/// seed): 100 standard-normal features, label = argmax(x·W) for a standard-normal 100×10 W.
fn synthetic() -> (Split, Split) {
    let mut rng = StdRng::seed_from_u64(1234);
    let w: Vec<f32> = (0..1000).map(|_| StandardNormal.sample(&mut rng)).collect();
    let mut make = |n: usize| {
        let x: Vec<f32> = (0..n * 100)
            .map(|_| StandardNormal.sample(&mut rng))
            .collect();
        let y = x
            .chunks_exact(100)
            .map(|row| {
                let s: Vec<f32> = (0..10)
                    .map(|j| row.iter().enumerate().map(|(i, v)| v * w[i * 10 + j]).sum())
                    .collect();
                s.iter()
                    .enumerate()
                    .fold(0, |b, (j, &v)| if v > s[b] { j } else { b }) as i64
            })
            .collect();
        Split {
            x,
            y,
            features: 100,
        }
    };
    let train = make(60_000);
    let test = make(10_000);
    (train, test)
}

/// Keras's initialisation: Glorot-uniform weights, zero biases.
fn dense(inputs: usize, outputs: usize, device: &Device) -> Linear {
    let mut l = LinearConfig::new(inputs, outputs)
        .with_initializer(GLOROT)
        .init(device);
    l.bias = Some(Param::from_tensor(Tensor::zeros([outputs], device)));
    l
}

fn conv(inputs: usize, outputs: usize, same: bool, device: &Device) -> Conv2d {
    let padding = if same {
        PaddingConfig2d::Explicit(1, 1, 1, 1)
    } else {
        PaddingConfig2d::Valid
    };
    let mut c = Conv2dConfig::new([inputs, outputs], [3, 3])
        .with_padding(padding)
        .with_initializer(GLOROT)
        .init(device);
    c.bias = Some(Param::from_tensor(Tensor::zeros([outputs], device)));
    c
}

/// Keras's BatchNormalization: ε = 1e-3, moving averages with momentum 0.99 (burn's momentum
/// is the new value's weight, as PyTorch's).
fn batch_norm(features: usize, device: &Device) -> BatchNorm {
    BatchNormConfig::new(features)
        .with_epsilon(1e-3)
        .with_momentum(0.01)
        .init(device)
}

fn images(x: Tensor<2>) -> Tensor<4> {
    let [n, _] = x.dims();
    x.reshape([n, 1, 28, 28])
}

/// A, B, E: Dense(hidden, relu) → Dense(10).
#[derive(Module, Debug)]
struct Mlp {
    hidden: Linear,
    output: Linear,
}

/// C, D: Conv2D(32, 3×3, relu) → MaxPool(2×2) → Dense(128, relu) → Dense(10).
#[derive(Module, Debug)]
struct Cnn {
    conv: Conv2d,
    pool: MaxPool2d,
    hidden: Linear,
    output: Linear,
}

/// F: Conv2D(16) → BN → ReLU → MaxPool → Conv2D(32) → BN → ReLU → MaxPool → Dense(10).
#[derive(Module, Debug)]
struct CnnBn {
    conv1: Conv2d,
    bn1: BatchNorm,
    pool: MaxPool2d,
    conv2: Conv2d,
    bn2: BatchNorm,
    output: Linear,
}

/// G: Conv2D(16, same, relu) → AvgPool → Conv2D(32, same, tanh) → Conv2D(32, tanh) →
/// GlobalMaxPool → Dense(10).
#[derive(Module, Debug)]
struct CnnStacked {
    conv1: Conv2d,
    pool: AvgPool2d,
    conv2: Conv2d,
    conv3: Conv2d,
    output: Linear,
}

/// A model: logits from a flat batch.
trait Net: Module {
    fn forward(&self, x: Tensor<2>) -> Tensor<2>;
}

impl Net for Mlp {
    fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        self.output.forward(relu(self.hidden.forward(x)))
    }
}

impl Net for Cnn {
    fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let x = self.pool.forward(relu(self.conv.forward(images(x))));
        let [n, c, h, w] = x.dims();
        let x = relu(self.hidden.forward(x.reshape([n, c * h * w])));
        self.output.forward(x)
    }
}

impl Net for CnnBn {
    fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let x = self
            .pool
            .forward(relu(self.bn1.forward(self.conv1.forward(images(x)))));
        let x = self
            .pool
            .forward(relu(self.bn2.forward(self.conv2.forward(x))));
        let [n, c, h, w] = x.dims();
        self.output.forward(x.reshape([n, c * h * w]))
    }
}

impl Net for CnnStacked {
    fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let x = self.pool.forward(relu(self.conv1.forward(images(x))));
        let x = self.conv2.forward(x).tanh();
        let x = self.conv3.forward(x).tanh();
        let [n, c, _, _] = x.dims();
        self.output.forward(x.max_dims(&[2, 3]).reshape([n, c]))
    }
}

/// Test loss and accuracy in batches of 1000 on the inference device.
fn evaluate<M: Net>(model: &M, test: &Split, device: &Device) -> (f64, f64) {
    let loss_fn = CrossEntropyLossConfig::new().init(device);
    let (mut loss, mut hits) = (0.0, 0i64);
    let order: Vec<usize> = (0..test.len()).collect();
    for chunk in order.chunks(1000) {
        let (x, y) = test.batch(chunk, device);
        let logits = model.forward(x);
        let l: f32 = loss_fn.forward(logits.clone(), y.clone()).into_scalar();
        loss += l as f64 * chunk.len() as f64;
        hits += logits
            .argmax(1)
            .reshape([chunk.len()])
            .equal(y)
            .int()
            .sum()
            .into_scalar::<i64>();
    }
    (loss / test.len() as f64, hits as f64 / test.len() as f64)
}

struct Run {
    epoch_s: Vec<f64>,
    test_loss: f64,
    test_accuracy: f64,
    images_per_s: f64,
}

/// What every program's loop shares: its data, batch size, epochs, validation and seed.
#[derive(Clone, Copy)]
struct Schedule<'a> {
    train: &'a Split,
    test: &'a Split,
    batch: usize,
    epochs: usize,
    validate: bool,
    seed: u64,
}

/// The learning rate of every step: constant, or (F) falling along a cosine from its start to
/// zero over the run's steps, one per batch (Keras's `CosineDecay` with alpha 0).
#[derive(Clone, Copy)]
enum Rate {
    Constant(f64),
    Cosine(f64),
}

impl Rate {
    fn at(self, step: usize, steps: usize) -> f64 {
        match self {
            Rate::Constant(lr) => lr,
            Rate::Cosine(lr) => {
                let t = step.min(steps) as f64 / steps.max(1) as f64;
                lr * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
            }
        }
    }
}

fn train<M: Net>(mut model: M, mut optim: ModuleOptimizer, rate: Rate, s: &Schedule<'_>) -> Run {
    let Schedule {
        train,
        test,
        batch,
        epochs,
        validate,
        seed,
    } = *s;
    let device = Device::flex().autodiff();
    let inference = Device::flex();
    let loss_fn = CrossEntropyLossConfig::new().init(&device);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut order: Vec<usize> = (0..train.len()).collect();
    let mut epoch_s = vec![];
    let steps = epochs * train.len().div_ceil(batch);
    let mut step = 0;
    for _ in 0..epochs {
        let t = Instant::now();
        order.shuffle(&mut rng);
        for idx in order.chunks(batch) {
            let (x, y) = train.batch(idx, &device);
            let loss = loss_fn.forward(model.forward(x), y);
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(rate.at(step, steps), model, grads);
            step += 1;
        }
        if validate {
            evaluate(&model.valid(), test, &inference);
        }
        epoch_s.push(t.elapsed().as_secs_f64());
    }
    let trained = model.valid();
    let (test_loss, test_accuracy) = evaluate(&trained, test, &inference);
    // Batch-1000 forward pass: median of 5 after a warm-up, as the Python peers.
    let first: Vec<usize> = (0..1000.min(test.len())).collect();
    let (x, _) = test.batch(&first, &inference);
    let _: Vec<f32> = trained
        .forward(x.clone())
        .into_data()
        .try_to_vec::<f32>()
        .unwrap_or_default();
    let mut times: Vec<f64> = (0..5)
        .map(|_| {
            let t = Instant::now();
            let _: Vec<f32> = trained
                .forward(x.clone())
                .into_data()
                .try_to_vec::<f32>()
                .unwrap_or_default();
            t.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    Run {
        epoch_s,
        test_loss,
        test_accuracy,
        images_per_s: first.len() as f64 / times[2],
    }
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

fn main() {
    if let Err(e) = run() {
        eprintln!("burn-programs: {e}");
        std::process::exit(2);
    }
}

fn run() -> Result<(), String> {
    let o = options()?;
    rayon::ThreadPoolBuilder::new()
        .num_threads(o.threads)
        .build_global()
        .map_err(|e| e.to_string())?;
    let p = o.program;
    let (train_set, test_set, dataset) = if p == 'E' {
        let (tr, te) = synthetic();
        (tr, te, "synthetic")
    } else {
        let dir = o.data_dir.as_deref().ok_or("--data-dir is required")?;
        let name = if dir.contains("fashion") {
            "fashion"
        } else {
            "mnist"
        };
        (mnist_like(dir, "train")?, mnist_like(dir, "t10k")?, name)
    };
    let device = Device::flex().autodiff();
    device.seed(o.seed);
    let adam = || AdamConfig::new().with_epsilon(1e-7).init();
    // Epochs and batch sizes of the reference programs (every framework's).
    let (epochs, batch) = match p {
        'A' => (10, 32),
        'B' => (5, 128),
        'C' | 'D' => (5, 32),
        'E' => (10, 32),
        'F' => (5, 64),
        _ => (3, 128),
    };
    let epochs = o.epochs.unwrap_or(epochs);
    let validate = "ACFG".contains(p);
    let schedule = Schedule {
        train: &train_set,
        test: &test_set,
        batch,
        epochs,
        validate,
        seed: o.seed,
    };
    let mlp = |hidden: usize| Mlp {
        hidden: dense(train_set.features, hidden, &device),
        output: dense(hidden, 10, &device),
    };
    let run = match p {
        'A' | 'E' => train(
            mlp(if p == 'A' { 128 } else { 64 }),
            adam(),
            Rate::Constant(1e-3),
            &schedule,
        ),
        'B' => {
            let rmsprop = RmsPropConfig::new()
                .with_alpha(0.9)
                .with_momentum(0.0)
                .with_epsilon(1e-7)
                .init();
            train(mlp(512), rmsprop, Rate::Constant(1e-3), &schedule)
        }
        'C' | 'D' => {
            let model = Cnn {
                conv: conv(1, 32, false, &device),
                pool: MaxPool2dConfig::new([2, 2]).init(),
                hidden: dense(32 * 13 * 13, 128, &device),
                output: dense(128, 10, &device),
            };
            train(model, adam(), Rate::Constant(1e-3), &schedule)
        }
        'F' => {
            let model = CnnBn {
                conv1: conv(1, 16, false, &device),
                bn1: batch_norm(16, &device),
                pool: MaxPool2dConfig::new([2, 2]).init(),
                conv2: conv(16, 32, false, &device),
                bn2: batch_norm(32, &device),
                output: dense(32 * 5 * 5, 10, &device),
            };
            train(model, adam(), Rate::Cosine(1e-3), &schedule)
        }
        _ => {
            let model = CnnStacked {
                conv1: conv(1, 16, true, &device),
                pool: AvgPool2dConfig::new([2, 2]).init(),
                conv2: conv(16, 32, true, &device),
                conv3: conv(32, 32, false, &device),
                output: dense(32, 10, &device),
            };
            let nesterov = MomentumConfig::new()
                .with_momentum(0.9)
                .with_dampening(0.0)
                .with_nesterov(true);
            let sgd = SgdConfig::new().with_momentum(Some(nesterov)).init();
            train(model, sgd, Rate::Constant(0.05), &schedule)
        }
    };
    let json = serde_json::json!({
        "program": p.to_string(), "dataset": dataset, "seed": o.seed, "epochs": run.epoch_s.len(),
        "batch_size": batch, "threads": o.threads, "epoch_s": run.epoch_s,
        "epoch_s_median": median(&run.epoch_s), "test_loss": run.test_loss,
        "test_accuracy": run.test_accuracy, "peak_rss_mib": peak_rss_mib(),
        "inference_images_per_s": run.images_per_s,
    });
    println!("{json}");
    Ok(())
}
