//! Shared by the examples: command-line options and data loading.
#![allow(dead_code)]

use nn::datasets::{fashion_mnist, mnist, Split};

/// `--dataset mnist|fashion` (default mnist), `--data-dir DIR`, `--epochs N`, `--seed S`,
/// `--verbose 0|1|2`, `--save PATH`.
pub struct Options {
    pub dataset: String,
    pub data_dir: Option<String>,
    pub epochs: Option<usize>,
    pub seed: u64,
    pub verbose: u8,
    pub save: Option<String>,
}

pub fn options() -> Options {
    let mut o = Options {
        dataset: "mnist".into(),
        data_dir: None,
        epochs: None,
        seed: 42,
        verbose: 1,
        save: None,
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
            "--epochs" => o.epochs = Some(value().parse().expect("--epochs N")),
            "--seed" => o.seed = value().parse().expect("--seed N"),
            "--verbose" => o.verbose = value().parse().expect("--verbose 0|1|2"),
            "--save" => o.save = Some(value()),
            "-h" | "--help" => {
                println!(
                    "options: --dataset mnist|fashion  --data-dir DIR  --epochs N  --seed S  \
                     --verbose 0|1|2  --save PATH"
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

/// The median epoch time.
pub fn median_seconds(h: &nn::callbacks::History) -> f64 {
    let mut v: Vec<f64> = h.epochs.iter().map(|e| e.seconds).collect();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The last epoch's validation figures and the median epoch time.
pub fn report(h: &nn::callbacks::History) {
    let last = h.epochs.last().expect("one epoch at least");
    println!(
        "test accuracy: {:.4} (val_loss {:.4}); median {:.2} s/epoch",
        last.val_accuracy.unwrap_or(f32::NAN),
        last.val_loss.unwrap_or(f32::NAN),
        median_seconds(h)
    );
}
