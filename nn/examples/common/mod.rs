//! Shared by the examples: command-line options and data loading.
#![allow(dead_code)]

use nn::datasets::{fashion_mnist, mnist, Split};

/// `--dataset mnist|fashion` (default mnist), `--data-dir DIR`, `--epochs N`, `--seed S`,
/// `--verbose 0|1|2`, `--save PATH`, `--plot FILE` (the loss and accuracy curves as a PNG),
/// `--csv FILE` (the same as CSV), `--json` (one line of measurements on stdout, for the
/// benchmark report).
pub struct Options {
    pub json: bool,
    pub dataset: String,
    pub data_dir: Option<String>,
    pub epochs: Option<usize>,
    pub seed: u64,
    pub verbose: u8,
    pub save: Option<String>,
    pub plot: Option<String>,
    pub csv: Option<String>,
}

/// `text` as the value of option `name`, or a message and exit status 2.
fn parse<T: std::str::FromStr>(name: &str, text: &str, what: &str) -> T {
    text.parse().unwrap_or_else(|_| {
        eprintln!("{name} {text:?}: expected {what}");
        std::process::exit(2)
    })
}

pub fn options() -> Options {
    let mut o = Options {
        json: false,
        dataset: "mnist".into(),
        data_dir: None,
        epochs: None,
        seed: 42,
        verbose: 1,
        save: None,
        plot: None,
        csv: None,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let value = || {
            args.get(i + 1).cloned().unwrap_or_else(|| {
                eprintln!("{} needs a value", args[i]);
                std::process::exit(2)
            })
        };
        match args[i].as_str() {
            "--dataset" => o.dataset = value(),
            "--data-dir" => o.data_dir = Some(value()),
            "--epochs" => o.epochs = Some(parse("--epochs", &value(), "a whole number")),
            "--seed" => o.seed = parse("--seed", &value(), "a whole number"),
            "--verbose" => o.verbose = parse("--verbose", &value(), "0, 1 or 2"),
            "--save" => o.save = Some(value()),
            "--plot" => o.plot = Some(value()),
            "--csv" => o.csv = Some(value()),
            "--json" => {
                o.json = true;
                i += 1;
                continue;
            }
            "-h" | "--help" => {
                println!(
                    "options: --dataset mnist|fashion  --data-dir DIR  --epochs N  --seed S  \
                     --verbose 0|1|2  --save PATH  --plot FILE.png  --csv FILE.csv  --json"
                );
                std::process::exit(0)
            }
            other => {
                eprintln!("unknown option {other} (try --help)");
                std::process::exit(2)
            }
        }
        i += 2;
    }
    o
}

/// The data set the options name, or exit with the loader's message.
pub fn load(o: &Options) -> Split {
    let r = match (o.dataset.as_str(), &o.data_dir) {
        ("mnist", Some(d)) => mnist::load_data_from(d),
        ("mnist", None) => mnist::load_data(),
        ("fashion" | "fashion_mnist" | "fashion-mnist", Some(d)) => {
            fashion_mnist::load_data_from(d)
        }
        ("fashion" | "fashion_mnist" | "fashion-mnist", None) => fashion_mnist::load_data(),
        (other, _) => {
            eprintln!("unknown dataset {other}: mnist or fashion");
            std::process::exit(2)
        }
    };
    r.unwrap_or_else(|e| {
        eprintln!("error: {e}");
        std::process::exit(1)
    })
}

/// The reference CNN: Conv2D(32, 3×3, relu) → MaxPooling2D(2×2) → Flatten → Dense(128, relu) →
/// Dense(10, softmax), on 28×28×1 images.
pub fn cnn(seed: u64) -> nn::model::Sequential {
    use nn::prelude::*;
    Sequential::new()
        .input_shape(&[28, 28, 1])
        .seed(seed)
        .add(Conv2D::new(32, (3, 3), Act::Relu))
        .add(MaxPooling2D::new((2, 2)))
        .add(Flatten::new())
        .add(Dense::new(128, Act::Relu))
        .add(Dense::new(10, Act::Softmax))
}

/// Program A's network: Flatten → Dense(128, relu) → Dense(10, softmax), on 28×28×1 images.
pub fn mlp_adam(seed: u64) -> nn::model::Sequential {
    use nn::prelude::*;
    Sequential::new()
        .input_shape(&[28, 28, 1])
        .seed(seed)
        .add(Flatten::new())
        .add(Dense::new(128, Act::Relu))
        .add(Dense::new(10, Act::Softmax))
}

/// Program B's network: Dense(512, relu) → Dense(10, softmax), on 784 inputs (flattened images).
pub fn mlp_rmsprop(seed: u64) -> nn::model::Sequential {
    use nn::prelude::*;
    Sequential::new()
        .input_shape(&[784])
        .seed(seed)
        .add(Dense::new(512, Act::Relu))
        .add(Dense::new(10, Act::Softmax))
}

/// Program F's network: Conv2D(16, 3×3) → BatchNormalization → ReLU → MaxPooling2D(2×2) →
/// Conv2D(32, 3×3) → BatchNormalization → ReLU → MaxPooling2D(2×2) → Flatten → Dense(10,
/// softmax), on 28×28×1 images.
pub fn cnn_bn(seed: u64) -> nn::model::Sequential {
    use nn::prelude::*;
    Sequential::new()
        .input_shape(&[28, 28, 1])
        .seed(seed)
        .add(Conv2D::new(16, (3, 3), Act::Linear))
        .add(BatchNormalization::new())
        .add(Activation::new(Act::Relu))
        .add(MaxPooling2D::new((2, 2)))
        .add(Conv2D::new(32, (3, 3), Act::Linear))
        .add(BatchNormalization::new())
        .add(Activation::new(Act::Relu))
        .add(MaxPooling2D::new((2, 2)))
        .add(Flatten::new())
        .add(Dense::new(10, Act::Softmax))
}

/// Program G's network: Conv2D(16, 3×3, same, relu) → AveragePooling2D(2×2) → Conv2D(32, 3×3,
/// same, tanh) → Conv2D(32, 3×3, tanh) → GlobalMaxPooling2D → Dense(10, softmax), on 28×28×1
/// images.
pub fn cnn_stacked(seed: u64) -> nn::model::Sequential {
    use nn::prelude::*;
    Sequential::new()
        .input_shape(&[28, 28, 1])
        .seed(seed)
        .add(Conv2D::new(16, (3, 3), Act::Relu).padding(Padding::Same))
        .add(AveragePooling2D::new((2, 2)))
        .add(Conv2D::new(32, (3, 3), Act::Tanh).padding(Padding::Same))
        .add(Conv2D::new(32, (3, 3), Act::Tanh))
        .add(GlobalMaxPooling2D::new())
        .add(Dense::new(10, Act::Softmax))
}

/// The median epoch time.
pub fn median_seconds(h: &nn::callbacks::History) -> f64 {
    let mut v: Vec<f64> = h.epochs.iter().map(|e| e.seconds).collect();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The process's peak resident memory in MiB (Linux: VmHWM), if known.
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Images per second of a batch-1000 forward pass (median of 15, after one warm-up: this VM's
/// speed drifts within seconds, and a pass takes milliseconds).
pub fn inference_rate(model: &mut nn::model::Sequential, x: &nn::tensor::Tensor) -> f64 {
    let n = x.samples().min(1000);
    let batch = x.slice_samples(0..n).expect("n ≤ samples");
    model.predict(&batch, n).expect("predict");
    let mut times: Vec<f64> = (0..15)
        .map(|_| {
            let t = std::time::Instant::now();
            model.predict(&batch, n).expect("predict");
            t.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    n as f64 / times[times.len() / 2]
}

/// Evaluates on the test set and prints the results: a line for people, and with `--json` one
/// JSON object for the benchmark report.
#[allow(clippy::too_many_arguments)]
pub fn finish(
    o: &Options,
    program: &str,
    model: &mut nn::model::Sequential,
    history: &nn::callbacks::History,
    cfg: &nn::model::FitConfig<'_>,
    x_train: &nn::tensor::Tensor,
    x_test: &nn::tensor::Tensor,
    y_test: &nn::tensor::Tensor,
) -> nn::Result<()> {
    let (batch_size, train_samples) = (cfg.batch_size, x_train.samples());
    let test = model.evaluate(x_test, y_test, batch_size.max(128))?;
    let cost = model.training_cost()?;
    // Every example compiles Metric::Accuracy.
    let accuracy = test.accuracy.unwrap_or(0.0);
    let rss = peak_rss_mib();
    let rate = inference_rate(model, x_test);
    println!(
        "test accuracy: {:.4} (test loss {:.4}); median {:.2} s/epoch; peak RSS {:.0} MiB; \
         inference {:.0} images/s",
        accuracy,
        test.loss,
        median_seconds(history),
        rss.unwrap_or(f64::NAN),
        rate
    );
    if o.json {
        let epoch_s: Vec<String> = history
            .epochs
            .iter()
            .map(|e| format!("{:.6}", e.seconds))
            .collect();
        let dataset = if program == "E" {
            "synthetic"
        } else {
            o.dataset.as_str()
        };
        // What one epoch must do: every training sample, and the test set where the program
        // validates after each epoch (the roofline's numerator in the report).
        let validated = history.epochs.first().is_some_and(|e| e.val_loss.is_some());
        let cost_json = format!(
            "{{\"trainable_weights\": {}, \"forward_flops_per_sample\": {}, \
             \"backward_flops_per_sample\": {}, \
             \"optimizer_flops_per_step\": {}, \"optimizer_bytes_per_step\": {}, \
             \"input_bytes_per_sample\": {}, \"train_samples\": {}, \"validation_samples\": {}}}",
            cost.trainable_weights,
            cost.forward_flops_per_sample,
            cost.backward_flops_per_sample,
            cost.optimizer_flops_per_step,
            cost.optimizer_bytes_per_step,
            cost.input_bytes_per_sample,
            train_samples,
            if validated { x_test.samples() } else { 0 },
        );
        // Where the time went (the examples ask for it with --json).
        let anatomy_json = history.anatomy.as_ref().map_or("null".into(), |a| {
            let parts: Vec<String> = a
                .parts
                .iter()
                .map(|p| {
                    format!(
                        "{{\"name\": \"{}\", \"pass\": \"{}\", \"seconds\": {:.6}, \"flops\": {}}}",
                        p.name,
                        p.pass.name(),
                        p.seconds,
                        p.flops
                    )
                })
                .collect();
            format!(
                "{{\"steps\": {}, \"samples\": {}, \"parts\": [{}]}}",
                a.steps,
                a.samples,
                parts.join(", ")
            )
        });
        println!(
            "{{\"program\": \"{program}\", \"dataset\": \"{dataset}\", \"seed\": {}, \
             \"epochs\": {}, \"batch_size\": {batch_size}, \"threads\": {}, \"epoch_s\": [{}], \
             \"epoch_s_median\": {:.6}, \"test_loss\": {:.6}, \"test_accuracy\": {:.6}, \
             \"peak_rss_mib\": {:.1}, \"inference_images_per_s\": {:.1}, \"cost\": {cost_json}, \
             \"anatomy\": {anatomy_json}}}",
            o.seed,
            history.epochs.len(),
            rayon::current_num_threads(),
            epoch_s.join(", "),
            median_seconds(history),
            test.loss,
            accuracy,
            rss.unwrap_or(-1.0),
            rate
        );
    }
    if let Some(p) = &o.save {
        model.save(p)?;
    }
    if let Some(p) = &o.plot {
        history.plot(p)?;
    }
    if let Some(p) = &o.csv {
        history.write_csv(p)?;
    }
    Ok(())
}
