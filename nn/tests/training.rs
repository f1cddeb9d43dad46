//! End to end on real data (release mode: `[profile.test] opt-level = 3`), determinism, save →
//! load → predict, the optimizers' first steps against hand computation, callbacks, and the NaN
//! guard.
//!
//! Accuracy floors after ONE epoch (the full reference runs are the benchmark report's job):
//! MNIST MLP (program 1) ≥ 95 %, Fashion-MNIST MLP ≥ 80 %, MNIST CNN (program 3) ≥ 97 % — each a
//! few points under what Keras reaches after its first epoch (≈ 96 %, 84 %, 98 %).

use nn::callbacks::{EarlyStopping, ModelCheckpoint, Monitor};
use nn::datasets::{fashion_mnist, mnist};
use nn::prelude::*;

fn mnist_dir() -> std::path::PathBuf {
    // Where a user's program finds it (CI points NN_DATA_DIR at its copy).
    mnist::locate().unwrap_or_else(|e| panic!("{e}"))
}

fn mlp(seed: u64) -> Sequential {
    Sequential::new()
        .input_shape(&[28, 28, 1])
        .seed(seed)
        .add(Flatten::new())
        .add(Dense::new(128, Act::Relu))
        .add(Dense::new(10, Act::Softmax))
}

fn cnn(seed: u64) -> Sequential {
    Sequential::new()
        .input_shape(&[28, 28, 1])
        .seed(seed)
        .add(Conv2D::new(32, (3, 3), Act::Relu))
        .add(MaxPooling2D::new((2, 2)))
        .add(Flatten::new())
        .add(Dense::new(128, Act::Relu))
        .add(Dense::new(10, Act::Softmax))
}

fn one_epoch(
    mut model: Sequential,
    split: nn::datasets::Split,
    sparse: bool,
) -> (f32, Sequential, Tensor) {
    let ((xtr, ytr), (xte, yte)) = split;
    let (xtr, xte) = (xtr.to_tensor().unwrap(), xte.to_tensor().unwrap());
    let (ytr, yte, loss) = if sparse {
        (
            Tensor::from_labels(&ytr),
            Tensor::from_labels(&yte),
            Loss::sparse_categorical_crossentropy(),
        )
    } else {
        (
            to_categorical(&ytr, 10).unwrap(),
            to_categorical(&yte, 10).unwrap(),
            Loss::categorical_crossentropy(),
        )
    };
    model
        .compile(Optimizer::adam(), loss, &[Metric::Accuracy])
        .unwrap();
    let cfg = FitConfig::new()
        .epochs(1)
        .batch_size(32)
        .validation_data(&xte, &yte)
        .verbose(0);
    let h = model.fit(&xtr, &ytr, &cfg, &mut []).unwrap();
    (h.epochs[0].val_accuracy.unwrap(), model, xte)
}

#[test]
fn mnist_mlp_one_epoch_reaches_the_floor() {
    let (acc, _, _) = one_epoch(mlp(1), mnist::load_data_from(mnist_dir()).unwrap(), false);
    assert!(acc >= 0.95, "MNIST MLP after one epoch: {acc}");
}

#[test]
fn fashion_mnist_mlp_one_epoch_reaches_the_floor() {
    // CI installs Debian's dataset-fashion-mnist; without it this fails with the loader's
    // message saying so.
    let split = fashion_mnist::load_data().unwrap_or_else(|e| panic!("{e}"));
    let (acc, _, _) = one_epoch(mlp(2), split, false);
    assert!(acc >= 0.80, "Fashion-MNIST MLP after one epoch: {acc}");
}

#[test]
fn mnist_cnn_one_epoch_then_save_load_predicts_identically() {
    let (acc, mut model, xte) =
        one_epoch(cnn(3), mnist::load_data_from(mnist_dir()).unwrap(), true);
    assert!(acc >= 0.97, "MNIST CNN after one epoch: {acc}");
    let dir = std::env::temp_dir().join(format!("nn-save-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("cnn.safetensors");
    model.save(&path).unwrap();
    let mut loaded = Sequential::load(&path).unwrap();
    let sample = xte.slice_samples(0..500).unwrap();
    let a = model.predict(&sample, 100).unwrap();
    let b = loaded.predict(&sample, 100).unwrap();
    assert_eq!(a, b, "a loaded model predicts bit-identically");
    // Weights alone into a fresh model of the same architecture.
    let wpath = dir.join("cnn.weights.safetensors");
    model.save_weights(&wpath).unwrap();
    let mut fresh = cnn(99);
    fresh.load_weights(&wpath).unwrap();
    assert_eq!(fresh.predict(&sample, 250).unwrap(), a);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A small synthetic problem (program 5's recipe, scaled down).
fn synthetic(n: usize, seed: u64) -> (Tensor, Tensor) {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let w: Vec<f32> = (0..20 * 4).map(|_| rng.gen_range(-1.0..1.0)).collect();
    let x: Vec<f32> = (0..n * 20).map(|_| rng.gen_range(-1.0..1.0)).collect();
    let labels: Vec<u8> = x
        .chunks(20)
        .map(|r| {
            let s: Vec<f32> = (0..4)
                .map(|j| (0..20).map(|i| r[i] * w[i * 4 + j]).sum())
                .collect();
            (0..4).fold(0, |b, j| if s[j] > s[b] { j } else { b }) as u8
        })
        .collect();
    (
        Tensor::from_vec(x, &[n, 20]).unwrap(),
        to_categorical(&labels, 4).unwrap(),
    )
}

fn small_model(seed: u64) -> Sequential {
    Sequential::new()
        .input_shape(&[20])
        .seed(seed)
        .add(Dense::new(32, Act::Tanh))
        .add(Dropout::new(0.2))
        .add(Dense::new(4, Act::Softmax))
}

/// Trains `model` with Adam on `samples` synthetic samples (drawn from `data_seed`) for `epochs`
/// epochs of batch 16, a fifth held out for validation, on a pool of `threads` threads.
fn train_synthetic(
    model: Sequential,
    samples: usize,
    data_seed: u64,
    epochs: usize,
    threads: usize,
) -> History {
    let (x, y) = synthetic(samples, data_seed);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(|| {
        let mut m = model;
        m.compile(
            Optimizer::adam(),
            Loss::categorical_crossentropy(),
            &[Metric::Accuracy],
        )
        .unwrap();
        let cfg = FitConfig::new()
            .epochs(epochs)
            .batch_size(16)
            .validation_split(0.2)
            .verbose(0);
        m.fit(&x, &y, &cfg, &mut []).unwrap()
    })
}

fn train_small(seed: u64, threads: usize) -> History {
    train_synthetic(small_model(seed), 1500, 7, 3, threads)
}

/// A history's logs without their wall times.
fn without_times(h: History) -> Vec<EpochLogs> {
    h.epochs
        .into_iter()
        .map(|e| EpochLogs { seconds: 0.0, ..e })
        .collect()
}

#[test]
fn same_seed_same_history_on_any_thread_count() {
    let strip = without_times;
    let a = strip(train_small(5, 1));
    assert_eq!(a, strip(train_small(5, 1)), "same seed, same history");
    assert_eq!(
        a,
        strip(train_small(5, 2)),
        "thread count does not change the bits"
    );
    assert_ne!(
        a,
        strip(train_small(6, 1)),
        "another seed trains differently"
    );
    assert!(
        a[2].val_accuracy.unwrap() > 0.7,
        "the small model learns: {a:?}"
    );
}

/// A Dense layer large enough to take its optimizer step in the backward pass (256×256 weights
/// at batch 16) multiplies its kernel in row strips on the threads that own them
/// (`kernels::owned`), its input gradient formed in the same pass: the same history on one,
/// two and three threads.
#[test]
fn a_layer_with_owned_weight_strips_trains_the_same_on_any_thread_count() {
    let train = |threads: usize| {
        let model = Sequential::new()
            .input_shape(&[20])
            .seed(3)
            .add(Dense::new(256, Act::Relu))
            .add(Dense::new(256, Act::Tanh))
            .add(Dense::new(4, Act::Softmax));
        without_times(train_synthetic(model, 600, 11, 2, threads))
    };
    let one = train(1);
    assert_eq!(one, train(2), "two threads");
    assert_eq!(one, train(3), "three threads");
    assert!(one[1].val_accuracy.unwrap() > 0.7, "it learns: {one:?}");
}

/// Dense(1, linear) on two inputs with MSE: one step from known weights, checked by hand.
fn one_step(opt: Optimizer) -> Vec<f32> {
    let mut m = Sequential::new()
        .input_shape(&[2])
        .add(Dense::new(1, Act::Linear));
    m.compile(opt, Loss::mse(), &[]).unwrap();
    m.set_weights(&[
        (
            "dense/kernel".into(),
            Tensor::from_vec(vec![0.5, -0.25], &[2, 1]).unwrap(),
        ),
        (
            "dense/bias".into(),
            Tensor::from_vec(vec![0.1], &[1]).unwrap(),
        ),
    ])
    .unwrap();
    // x = (1, 2), y = 1: prediction 0.5 − 0.5 + 0.1 = 0.1, dL/dŷ = 2(0.1 − 1) = −1.8,
    // gradients: kernel (−1.8, −3.6), bias −1.8.
    m.train_on_batch(&[1.0, 2.0], &[1.0], 1).unwrap();
    m.get_weights()
        .iter()
        .flat_map(|(_, t)| t.data().to_vec())
        .collect()
}

#[test]
fn optimizers_first_step_by_hand() {
    let g = [-1.8f64, -3.6, -1.8];
    let w0 = [0.5f64, -0.25, 0.1];
    let close = |got: Vec<f32>, want: [f64; 3], what: &str| {
        for i in 0..3 {
            assert!(
                (got[i] as f64 - want[i]).abs() < 1e-6,
                "{what}[{i}]: {} vs {}",
                got[i],
                want[i]
            );
        }
    };
    // SGD: w − 0.01·g.
    close(
        one_step(Optimizer::sgd()),
        std::array::from_fn(|i| w0[i] - 0.01 * g[i]),
        "sgd",
    );
    // SGD momentum 0.9 from zero velocity: v = −lr·g; Nesterov: w + 0.9·v − lr·g.
    close(
        one_step(Optimizer::sgd().with_momentum(0.9, true)),
        std::array::from_fn(|i| w0[i] + 0.9 * (-0.01 * g[i]) - 0.01 * g[i]),
        "nesterov",
    );
    // Adam, t = 1: m = 0.1 g, v = 0.001 g², α = lr·√(1−0.999)/(1−0.9); w − α·m/(√v + ε).
    let alpha = 0.001 * (1.0f64 - 0.999).sqrt() / (1.0 - 0.9);
    close(
        one_step(Optimizer::adam()),
        std::array::from_fn(|i| w0[i] - alpha * 0.1 * g[i] / ((0.001 * g[i] * g[i]).sqrt() + 1e-7)),
        "adam",
    );
    // RMSprop: v = 0.1 g²; w − lr·g/√(v + ε).
    close(
        one_step(Optimizer::rmsprop()),
        std::array::from_fn(|i| w0[i] - 0.001 * g[i] / (0.1 * g[i] * g[i] + 1e-7).sqrt()),
        "rmsprop",
    );
}

#[test]
fn early_stopping_restores_the_best_weights_and_checkpoint_saves() {
    let (x, y) = synthetic(600, 9);
    let (xv, yv) = synthetic(200, 10);
    let mut m = small_model(1);
    // A learning rate high enough that validation loss soon stops improving.
    m.compile(
        Optimizer::sgd().with_learning_rate(2.0),
        Loss::categorical_crossentropy(),
        &[Metric::Accuracy],
    )
    .unwrap();
    let dir = std::env::temp_dir().join(format!("nn-ckpt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut es = EarlyStopping::new(Monitor::ValLoss, 2).restore_best_weights(true);
    let mut ck = ModelCheckpoint::new(dir.join("best.safetensors"), Monitor::ValLoss, true);
    let cfg = FitConfig::new()
        .epochs(40)
        .batch_size(8)
        .validation_data(&xv, &yv)
        .verbose(0);
    let h = m.fit(&x, &y, &cfg, &mut [&mut es, &mut ck]).unwrap();
    let stopped = es.stopped_epoch.expect("stopped early");
    assert_eq!(h.epochs.len(), stopped + 1);
    let best = es.best_epoch.unwrap();
    let best_loss = h.epochs[best].val_loss.unwrap();
    assert!(h.epochs.iter().all(|e| e.val_loss.unwrap() >= best_loss));
    // Restored: evaluating now gives the best epoch's validation loss.
    let now = m.evaluate(&xv, &yv, 8).unwrap().loss;
    assert!((now - best_loss).abs() < 1e-5, "{now} vs best {best_loss}");
    // The checkpoint holds the best epoch's model too.
    assert_eq!(*ck.saved_epochs.last().unwrap(), best);
    let mut loaded = Sequential::load(dir.join("best.safetensors")).unwrap();
    loaded
        .compile(Optimizer::sgd(), Loss::categorical_crossentropy(), &[])
        .unwrap();
    assert!((loaded.evaluate(&xv, &yv, 8).unwrap().loss - best_loss).abs() < 1e-5);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_diverging_loss_stops_training_with_an_error() {
    let (x, _) = synthetic(64, 3);
    let y = Tensor::from_vec(vec![1e30; 64], &[64, 1]).unwrap();
    let mut m = Sequential::new()
        .input_shape(&[20])
        .add(Dense::new(1, Act::Linear));
    m.compile(Optimizer::sgd().with_learning_rate(10.0), Loss::mse(), &[])
        .unwrap();
    let err = m
        .fit(
            &x,
            &y,
            &FitConfig::new().epochs(5).batch_size(8).verbose(0),
            &mut [],
        )
        .unwrap_err();
    assert!(matches!(err, nn::Error::NonFiniteLoss { .. }), "{err}");
    assert!(err.to_string().contains("training stopped"));
}

/// The model runs Conv2D + MaxPooling2D as one fused pass; its predictions must be exactly
/// those of the layers run one by one (same seed, so the same weights).
#[test]
fn fused_conv_pool_forward_matches_the_layers_one_by_one() {
    use nn::layers::Layer;
    use rand::SeedableRng;
    let seed = 11;
    let mut model = cnn(seed);
    let x = Tensor::from_vec(
        (0..40 * 784)
            .map(|i| ((i * 7919) % 256) as f32 / 255.0)
            .collect(),
        &[40, 28, 28, 1],
    )
    .unwrap();
    let fused = model.predict(&x, 40).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut layers: Vec<Box<dyn Layer>> = vec![
        Box::new(Conv2D::new(32, (3, 3), Act::Relu)),
        Box::new(MaxPooling2D::new((2, 2))),
        Box::new(Flatten::new()),
        Box::new(Dense::new(128, Act::Relu)),
        Box::new(Dense::new(10, Act::Softmax)),
    ];
    let mut shape = vec![28, 28, 1];
    for l in layers.iter_mut() {
        shape = l.build(&shape, &mut rng).unwrap();
        l.allocate(40).unwrap();
    }
    for i in 0..layers.len() {
        let (a, b) = layers.split_at_mut(i);
        let input: &[f32] = if i == 0 { x.data() } else { a[i - 1].output() };
        b[0].forward(input, 40, false).unwrap();
    }
    assert_eq!(fused.data(), &layers[4].output()[..400]);
}

/// Compiles `m` (sparse categorical cross-entropy), takes `steps` training steps on the batch
/// (`x`, integer labels `y`), with the fused optimizer steps on or off; returns every weight
/// tensor's values.
fn weights_after_steps(
    mut m: Sequential,
    opt: Optimizer,
    fused_steps: bool,
    x: &[f32],
    y: &[f32],
    steps: usize,
) -> Vec<Vec<f32>> {
    m.compile(
        opt,
        Loss::sparse_categorical_crossentropy(),
        &[Metric::Accuracy],
    )
    .unwrap();
    m.set_fused_steps(fused_steps);
    for _ in 0..steps {
        m.train_on_batch(x, y, y.len()).unwrap();
    }
    m.get_weights()
        .into_iter()
        .map(|(_, t)| t.data().to_vec())
        .collect()
}

/// `m` (10×10×1 inputs), then — with `between`, after a linear Activation layer, which stops
/// the pooling from fusing with what is below it — MaxPooling2D(2×2), Flatten and
/// Dense(3, softmax), after `steps` SGD steps (rate 0.5, fused steps on) on a fixed batch of 16:
/// every weight tensor's values.
fn pooled_head_weights(mut m: Sequential, between: bool, steps: usize) -> Vec<Vec<f32>> {
    let x: Vec<f32> = (0..16 * 100)
        .map(|i| ((i * 7919) % 256) as f32 / 255.0)
        .collect();
    let y: Vec<f32> = (0..16).map(|i| (i % 3) as f32).collect();
    if between {
        m = m.add(nn::layers::Activation::new(Act::Linear));
    }
    m = m
        .add(MaxPooling2D::new((2, 2)))
        .add(Flatten::new())
        .add(Dense::new(3, Act::Softmax));
    let opt = Optimizer::sgd().with_learning_rate(0.5);
    weights_after_steps(m, opt, true, &x, &y, steps)
}

/// A first Conv2D and the AveragePooling2D after it run as one pass each way (the convolution's
/// output gradient formed per task in cache); a linear Activation layer between them stops both
/// fusions. The same weights either way, bit for bit, for one input channel (the direct kernels)
/// and for three (the gradient whole in scratch).
#[test]
fn convolution_and_average_pooling_as_one_pass_match_the_layers() {
    for (act, channels) in [
        (Act::Relu, 1),
        (Act::Tanh, 1),
        (Act::Sigmoid, 3),
        (Act::Linear, 1),
    ] {
        let x: Vec<f32> = (0..16 * 100 * channels)
            .map(|i| ((i * 7919) % 256) as f32 / 255.0)
            .collect();
        let y: Vec<f32> = (0..16).map(|i| (i % 3) as f32).collect();
        let model = |between: bool, steps: usize| {
            let mut m = Sequential::new()
                .input_shape(&[10, 10, channels])
                .seed(7)
                .add(Conv2D::new(4, (3, 3), act));
            if between {
                m = m.add(nn::layers::Activation::new(Act::Linear));
            }
            let m = m
                .add(AveragePooling2D::new((2, 2)))
                .add(Flatten::new())
                .add(Dense::new(3, Act::Softmax));
            let opt = Optimizer::sgd().with_learning_rate(0.5);
            weights_after_steps(m, opt, true, &x, &y, steps)
        };
        let (fused, unfused) = (model(false, 3), model(true, 3));
        assert_ne!(fused[0], model(false, 0)[0], "{act:?}");
        assert_eq!(fused, unfused, "{act:?} {channels}");
    }
}

/// Max pooling takes over the backward pass of the convolution's activation (and the
/// convolution then keeps no output in training). A linear Activation layer between the two
/// stops both fusions; with the same seed, a few SGD steps must give the same weights either way.
#[test]
fn pooling_through_the_activation_matches_the_unfused_layers() {
    for act in [Act::Relu, Act::Tanh, Act::Sigmoid] {
        let model = |between: bool, steps: usize| {
            let m = Sequential::new()
                .input_shape(&[10, 10, 1])
                .seed(5)
                .add(Conv2D::new(4, (3, 3), act));
            pooled_head_weights(m, between, steps)
        };
        let (fused, unfused) = (model(false, 3), model(true, 3));
        // The convolution's weights did move (its gradient is not lost on the way).
        assert_ne!(fused[0], model(false, 0)[0], "{act:?}");
        assert_eq!(fused, unfused, "{act:?}");
    }
}

/// A BatchNormalization whose activation a MaxPooling2D takes over runs its backward pass with
/// the pooling's as one (the pooling's full-size gradient never written). A linear Activation
/// layer before the pooling stops that fusion (and the forward one); a few SGD steps must give
/// the same weights either way, to the rounding of the normalisation's sums.
#[test]
fn normalisation_and_pooling_as_one_backward_pass_match_the_layers() {
    // With a convolution below the normalisation, and with the normalisation first (its input
    // gradient then not needed).
    for (act, conv) in [(Act::Relu, true), (Act::Tanh, true), (Act::Relu, false)] {
        let model = |between: bool, steps: usize| {
            let mut m = Sequential::new().input_shape(&[10, 10, 1]).seed(6);
            if conv {
                m = m.add(Conv2D::new(8, (3, 3), Act::Linear));
            }
            m = m
                .add(BatchNormalization::new())
                .add(nn::layers::Activation::new(act));
            pooled_head_weights(m, between, steps)
        };
        let (fused, unfused) = (model(false, 3), model(true, 3));
        // The first weights (the convolution's, or gamma) and gamma did move.
        let start = model(false, 0);
        let gamma = if conv { 2 } else { 0 };
        assert_ne!(fused[0], start[0], "{act:?}");
        assert_ne!(fused[gamma], start[gamma], "{act:?}");
        for (t, (f, u)) in fused.iter().zip(&unfused).enumerate() {
            for (i, (a, b)) in f.iter().zip(u).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
                    "{act:?} tensor {t}[{i}]: {a} vs {b}"
                );
            }
        }
    }
}

/// A first linear Conv2D over three input channels, its BatchNormalization and the MaxPooling2D
/// that took the activation over run backward as one unit, the normalisation's input gradient
/// then formed whole (the convolution is off the one-channel kernels); a linear Activation before
/// the pooling stops the fusion. The same weights either way, to the rounding of the
/// normalisation's sums.
#[test]
fn a_first_block_over_three_channels_trains_as_its_layers() {
    let x: Vec<f32> = (0..16 * 300)
        .map(|i| ((i * 7919) % 256) as f32 / 255.0)
        .collect();
    let y: Vec<f32> = (0..16).map(|i| (i % 3) as f32).collect();
    let model = |between: bool, steps: usize| {
        let mut m = Sequential::new()
            .input_shape(&[10, 10, 3])
            .seed(8)
            .add(Conv2D::new(8, (3, 3), Act::Linear))
            .add(BatchNormalization::new())
            .add(nn::layers::Activation::new(Act::Relu));
        if between {
            m = m.add(nn::layers::Activation::new(Act::Linear));
        }
        let m = m
            .add(MaxPooling2D::new((2, 2)))
            .add(Flatten::new())
            .add(Dense::new(3, Act::Softmax));
        let opt = Optimizer::sgd().with_learning_rate(0.5);
        weights_after_steps(m, opt, true, &x, &y, steps)
    };
    let (fused, unfused) = (model(false, 3), model(true, 3));
    assert_ne!(fused[0], model(false, 0)[0]);
    for (t, (f, u)) in fused.iter().zip(&unfused).enumerate() {
        for (i, (a, b)) in f.iter().zip(u).enumerate() {
            assert!(
                (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
                "tensor {t}[{i}]: {a} vs {b}"
            );
        }
    }
}

/// Inside a model Flatten is skipped (its neighbours share the buffer); as the last layer it still
/// produces the model's output.
#[test]
fn flatten_as_the_last_layer_still_writes_the_output() {
    let mut m = Sequential::new()
        .input_shape(&[4, 4, 1])
        .add(MaxPooling2D::new((2, 2)))
        .add(Flatten::new());
    let x = Tensor::from_vec((0..32).map(|v| v as f32).collect(), &[2, 4, 4, 1]).unwrap();
    let y = m.predict(&x, 2).unwrap();
    assert_eq!(y.shape(), &[2, 4]);
    assert_eq!(y.data(), &[5.0, 7.0, 13.0, 15.0, 21.0, 23.0, 29.0, 31.0]);
}

/// `predict` splits a large batch into passes of at most `PREDICT_PASS` samples (half of it for
/// this network on CPUs whose last-level cache is under about 130 MiB); the outputs are the same
/// bits whatever the batch size, 129 and 200 included (passes that are not a multiple of 128).
#[test]
fn predictions_do_not_depend_on_the_batch_size() {
    let mut model = cnn(4);
    let n = nn::model::PREDICT_PASS + 133;
    let x = Tensor::from_vec(
        (0..n * 784)
            .map(|i| ((i * 7919) % 256) as f32 / 255.0)
            .collect(),
        &[n, 28, 28, 1],
    )
    .unwrap();
    let whole = model.predict(&x, n).unwrap();
    for batch in [1, 7, 100, 129, 200, nn::model::PREDICT_PASS] {
        assert_eq!(
            whole.data(),
            model.predict(&x, batch).unwrap().data(),
            "batch {batch}"
        );
    }
}

/// Dense layers with large kernels at small batches take the optimizer's step inside their
/// backward pass (`Dense::backward_stepping`); a model trained that way must end with exactly
/// the weights of the same model trained with the steps applied after the backward pass, for
/// every optimizer, for a first layer (no input gradient) and a middle one (input gradient from
/// the kernel before its step), at a batch of 16 and at one of 3 (whose input gradient over
/// 512 units the GEMM forms as dot products).
#[test]
fn fused_optimizer_steps_match_the_steps_after_backward() {
    let x: Vec<f32> = (0..16 * 512)
        .map(|i| ((i * 7919) % 256) as f32 / 255.0 - 0.5)
        .collect();
    let y: Vec<f32> = (0..16).map(|i| (i % 3) as f32).collect();
    let optimizers = [
        Optimizer::sgd().with_momentum(0.9, true),
        Optimizer::adam(),
        Optimizer::rmsprop(),
    ];
    for batch in [16, 3] {
        let (x, y) = (&x[..batch * 512], &y[..batch]);
        for opt in &optimizers {
            let train = |fused: bool, steps: usize| {
                let m = Sequential::new()
                    .input_shape(&[512])
                    .seed(3)
                    .add(Dense::new(512, Act::Relu))
                    .add(Dense::new(512, Act::Tanh))
                    .add(Dense::new(3, Act::Softmax));
                weights_after_steps(m, opt.clone(), fused, x, y, steps)
            };
            let (fused, after) = (train(true, 3), train(false, 3));
            let start = train(true, 0);
            for i in 0..4 {
                assert_ne!(
                    fused[i],
                    start[i],
                    "{:?}, batch {batch}: tensor {i} did not move",
                    opt.kind()
                );
            }
            assert_eq!(fused, after, "{:?}, batch {batch}", opt.kind());
        }
    }
}

#[test]
fn metrics_not_asked_for_are_not_reported() {
    let (x, y) = synthetic(64, 7);
    for (metrics, with) in [(&[][..], false), (&[Metric::Accuracy][..], true)] {
        let mut m = small_model(3);
        m.compile(Optimizer::adam(), Loss::categorical_crossentropy(), metrics)
            .unwrap();
        let cfg = FitConfig::new()
            .epochs(2)
            .batch_size(16)
            .validation_split(0.25)
            .verbose(0);
        let h = m.fit(&x, &y, &cfg, &mut []).unwrap();
        assert_eq!(h.loss().len(), 2);
        assert_eq!(h.val_loss().map(|v| v.len()), Some(2));
        assert_eq!(h.accuracy().is_some(), with, "{metrics:?}");
        assert_eq!(h.val_accuracy().is_some(), with, "{metrics:?}");
        assert_eq!(m.evaluate(&x, &y, 32).unwrap().accuracy.is_some(), with);
    }
}

/// 64 images of 8×8 whose class is which half holds the bright pixels, plus `offset`.
fn bright_halves(offset: f32) -> (Tensor, Tensor) {
    let n = 64;
    let mut x = vec![0.0f32; n * 64];
    let mut labels = vec![0u8; n];
    for i in 0..n {
        let class = (i % 2) as u8;
        labels[i] = class;
        for p in 0..64 {
            let bright = (p % 8 < 4) == (class == 0);
            x[i * 64 + p] =
                offset + if bright { 0.8 } else { 0.1 } + ((i * 31 + p * 7) % 10) as f32 * 0.01;
        }
    }
    (
        Tensor::from_vec(x, &[n, 8, 8, 1]).unwrap(),
        Tensor::from_labels(&labels),
    )
}

/// Compiles `m` (adam 0.01, sparse CE, accuracy) and fits it for `epochs` in batches of 16.
fn train_on(m: &mut Sequential, x: &Tensor, y: &Tensor, epochs: usize) -> History {
    m.compile(
        Optimizer::adam().with_learning_rate(0.01),
        Loss::sparse_categorical_crossentropy(),
        &[Metric::Accuracy],
    )
    .unwrap();
    m.fit(
        x,
        y,
        &FitConfig::new().epochs(epochs).batch_size(16).verbose(0),
        &mut [],
    )
    .unwrap()
}

#[test]
fn average_and_global_pooling_layers_train_save_and_load() {
    let (x, y) = bright_halves(0.0);
    for (name, global_max) in [("gap", false), ("gmp", true)] {
        let mut m = Sequential::new()
            .input_shape(&[8, 8, 1])
            .seed(11)
            .add(Conv2D::new(8, (3, 3), Act::Relu).padding(Padding::Same))
            .add(AveragePooling2D::new((2, 2)));
        m = if global_max {
            m.add(GlobalMaxPooling2D::new())
        } else {
            m.add(GlobalAveragePooling2D::new())
        };
        let mut m = m.add(Dense::new(2, Act::Softmax));
        let h = train_on(&mut m, &x, &y, 30);
        let acc = h.accuracy().unwrap();
        assert!(*acc.last().unwrap() > 0.9, "{name}: {acc:?}");
        let dir = std::env::temp_dir().join(format!("nn-pooling-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("m.safetensors");
        m.save(&path).unwrap();
        let mut loaded = Sequential::load(&path).unwrap();
        assert_eq!(
            loaded.predict(&x, 32).unwrap(),
            m.predict(&x, 32).unwrap(),
            "{name}"
        );
        assert!(loaded.summary().unwrap().contains(if global_max {
            "GlobalMaxPooling2D"
        } else {
            "GlobalAveragePooling2D"
        }));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn batch_normalization_moves_its_statistics_as_keras_and_saves_them() {
    // One training step: moving = 0.99·moving + 0.01·batch (mean from 0, variance from 1).
    let x = Tensor::from_vec(
        vec![1.0, 2.0, 3.0, 5.0, 0.0, -2.0, 4.0, 8.0, -1.0, 3.0, 1.0, 1.0],
        &[3, 4],
    )
    .unwrap();
    let y = Tensor::from_labels(&[0, 1, 0]);
    let mut m = Sequential::new()
        .input_shape(&[4])
        .add(BatchNormalization::new())
        .add(Dense::new(2, Act::Softmax));
    m.compile(
        Optimizer::sgd(),
        Loss::sparse_categorical_crossentropy(),
        &[],
    )
    .unwrap();
    m.train_on_batch(x.data(), y.data(), 3).unwrap();
    let w = m.get_weights();
    let get = |name: &str| {
        w.iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("{name}"))
            .1
            .data()
            .to_vec()
    };
    let col = |j: usize| [x.data()[j], x.data()[4 + j], x.data()[8 + j]];
    for j in 0..4 {
        let c = col(j);
        let mean = c.iter().sum::<f32>() / 3.0;
        let var = c.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / 3.0;
        assert!((get("batch_normalization/moving_mean")[j] - 0.01 * mean).abs() < 1e-6);
        assert!((get("batch_normalization/moving_variance")[j] - (0.99 + 0.01 * var)).abs() < 1e-5);
    }
    let summary = m.summary().unwrap();
    assert!(summary.contains("Non-trainable params: 8"), "{summary}");
    assert!(summary.contains("Trainable params: 18"), "{summary}");
}

#[test]
fn a_cnn_with_batch_normalization_and_global_pooling_trains_and_reloads() {
    // An offset that batch normalisation takes out.
    let (x, y) = bright_halves(5.0);
    let mut m = Sequential::new()
        .input_shape(&[8, 8, 1])
        .seed(4)
        .add(Conv2D::new(8, (3, 3), Act::Linear).padding(Padding::Same))
        .add(BatchNormalization::new())
        .add(Activation::new(Act::Relu))
        .add(GlobalAveragePooling2D::new())
        .add(Dense::new(2, Act::Softmax));
    let h = train_on(&mut m, &x, &y, 20);
    assert!(*h.accuracy().unwrap().last().unwrap() > 0.9, "{h:?}");
    let dir = std::env::temp_dir().join(format!("nn-bn-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bn.safetensors");
    m.save(&path).unwrap();
    let mut loaded = Sequential::load(&path).unwrap();
    assert_eq!(loaded.predict(&x, 32).unwrap(), m.predict(&x, 32).unwrap());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Every fold the inference plan makes (Conv2D + BN + ReLU pooled in one pass, Conv2D + BN,
/// Dense + BN + tanh), beside the model run layer by layer.
fn folding_model() -> Sequential {
    Sequential::new()
        .input_shape(&[8, 8, 1])
        .seed(9)
        .add(Conv2D::new(6, (3, 3), Act::Linear).padding(Padding::Same))
        .add(BatchNormalization::new().momentum(0.5))
        .add(Activation::new(Act::Relu))
        .add(MaxPooling2D::new((2, 2)))
        .add(Conv2D::new(8, (3, 3), Act::Linear))
        .add(BatchNormalization::new().momentum(0.5))
        .add(GlobalAveragePooling2D::new())
        .add(Dense::new(5, Act::Linear))
        .add(BatchNormalization::new().momentum(0.5))
        .add(Activation::new(Act::Tanh))
        .add(Dense::new(2, Act::Softmax))
}

/// The largest difference between two predictions.
fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.shape(), b.shape());
    a.data()
        .iter()
        .zip(b.data())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn batch_normalization_folded_at_inference_matches_the_layers_one_by_one() {
    // An offset the normalisation takes out, and momentum 0.5 so that the moving statistics
    // move far from their start within a few steps.
    let (x, y) = bright_halves(5.0);
    let fit = |fold: bool| {
        let mut m = folding_model();
        m.set_batch_norm_folding(fold);
        m.compile(
            Optimizer::adam().with_learning_rate(0.01),
            Loss::sparse_categorical_crossentropy(),
            &[Metric::Accuracy],
        )
        .unwrap();
        let cfg = FitConfig::new()
            .epochs(4)
            .batch_size(16)
            .validation_data(&x, &y)
            .verbose(0);
        let h = m.fit(&x, &y, &cfg, &mut []).unwrap();
        (m, h)
    };
    let (mut folded, hf) = fit(true);
    let (mut plain, hp) = fit(false);
    // Training never folds: the same steps, the same bits.
    assert_eq!(hf.loss(), hp.loss());
    assert_eq!(folded.get_weights(), plain.get_weights());
    // Validation after each epoch folded the weights of that epoch.
    for (a, b) in hf.val_loss().unwrap().iter().zip(hp.val_loss().unwrap()) {
        assert!((a - b).abs() <= 1e-5 * b.abs().max(1.0), "{a} vs {b}");
    }
    let check = |folded: &mut Sequential, plain: &mut Sequential, when: &str| {
        let (pf, pp) = (
            folded.predict(&x, 32).unwrap(),
            plain.predict(&x, 32).unwrap(),
        );
        assert_ne!(
            pf, pp,
            "{when}: folding changes rounding, so the plans differ"
        );
        assert!(max_diff(&pf, &pp) < 1e-5, "{when}: {}", max_diff(&pf, &pp));
        // Folded predictions do not depend on the thread count.
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap()
            .install(|| folded.predict(&x, 32).unwrap());
        assert_eq!(one, pf, "{when}");
    };
    check(&mut folded, &mut plain, "after fit");
    // More training: the folds follow the new weights and statistics.
    for m in [&mut folded, &mut plain] {
        m.train_on_batch(x.rows(0..16).unwrap(), y.rows(0..16).unwrap(), 16)
            .unwrap();
    }
    check(&mut folded, &mut plain, "after another step");
    // Weights set from outside: the folds follow them too.
    let mut w = plain.get_weights();
    for (name, t) in &mut w {
        if name.ends_with("moving_mean") || name.ends_with("gamma") {
            let shifted: Vec<f32> = t.data().iter().map(|v| v * 1.5 + 0.25).collect();
            *t = Tensor::from_vec(shifted, t.shape()).unwrap();
        }
    }
    let before = folded.predict(&x, 32).unwrap();
    folded.set_weights(&w).unwrap();
    plain.set_weights(&w).unwrap();
    assert!(max_diff(&before, &folded.predict(&x, 32).unwrap()) > 1e-3);
    check(&mut folded, &mut plain, "after set_weights");
}

#[test]
fn a_normalisation_running_the_activation_after_it_trains_as_the_two_layers_do() {
    // The ReLU's derivative taken over by the pooling after it, the sigmoid's by the
    // normalisation itself, the tanh folded at inference; softmax, the last, runs on its own.
    let model = || {
        Sequential::new()
            .input_shape(&[8, 8, 1])
            .seed(5)
            .add(Conv2D::new(6, (3, 3), Act::Linear).padding(Padding::Same))
            .add(BatchNormalization::new().momentum(0.5))
            .add(Activation::new(Act::Relu))
            .add(MaxPooling2D::new((2, 2)))
            .add(Conv2D::new(8, (3, 3), Act::Linear))
            .add(BatchNormalization::new())
            .add(Activation::new(Act::Sigmoid))
            .add(GlobalAveragePooling2D::new())
            .add(Dense::new(5, Act::Linear))
            .add(BatchNormalization::new())
            .add(Activation::new(Act::Tanh))
            .add(Dense::new(2, Act::Linear))
            .add(Activation::new(Act::Softmax))
    };
    let (x, y) = bright_halves(2.0);
    let fit = |fused: bool, fold: bool| {
        let mut m = model();
        m.set_norm_runs_activation(fused);
        m.set_batch_norm_folding(fold);
        m.compile(
            Optimizer::adam().with_learning_rate(0.01),
            Loss::sparse_categorical_crossentropy(),
            &[Metric::Accuracy],
        )
        .unwrap();
        let cfg = FitConfig::new()
            .epochs(3)
            .batch_size(16)
            .validation_data(&x, &y)
            .anatomy(true)
            .verbose(0);
        let mut h = m.fit(&x, &y, &cfg, &mut []).unwrap();
        // Which passes ran: the normalisations with their activations, or each on its own.
        let a = h.anatomy.take().expect("asked for");
        let forward: Vec<&str> = a
            .parts
            .iter()
            .filter(|p| p.pass.name() == "forward")
            .map(|p| p.name.as_str())
            .collect();
        // Running its ReLU, the first normalisation also pools its output as it forms it.
        let (first, second) = if fused {
            (
                &[
                    "batch_normalization + activation + max_pooling2d",
                    "conv2d_1",
                ][..],
                "batch_normalization_1 + activation_1",
            )
        } else {
            (
                &["batch_normalization", "activation"][..],
                "batch_normalization_1",
            )
        };
        assert_eq!(forward[1..3], *first);
        assert!(forward.contains(&second), "{forward:?}");
        assert_eq!(forward.contains(&"activation_1"), !fused, "{forward:?}");
        let p = m.predict(&x, 32).unwrap();
        (m.get_weights(), h, p)
    };
    for fold in [false, true] {
        let (w_fused, h_fused, p_fused) = fit(true, fold);
        let (w_plain, h_plain, p_plain) = fit(false, fold);
        // The same arithmetic element by element: the same bits.
        assert_eq!(h_fused.loss(), h_plain.loss(), "fold {fold}");
        assert_eq!(h_fused.val_loss(), h_plain.val_loss(), "fold {fold}");
        assert_eq!(w_fused, w_plain, "fold {fold}");
        assert_eq!(p_fused, p_plain, "fold {fold}");
        assert!(
            *h_fused.accuracy().unwrap().last().unwrap() > 0.9,
            "{h_fused:?}"
        );
    }
}

#[test]
fn the_anatomy_names_every_pass_and_counts_its_flops() {
    let (x, y) = bright_halves(0.0);
    let mut m = Sequential::new()
        .input_shape(&[8, 8, 1])
        .seed(2)
        .add(Conv2D::new(4, (3, 3), Act::Relu))
        .add(MaxPooling2D::new((2, 2)))
        .add(Flatten::new())
        .add(Dense::new(6, Act::Relu))
        .add(Dense::new(2, Act::Softmax));
    m.compile(
        Optimizer::adam(),
        Loss::sparse_categorical_crossentropy(),
        &[],
    )
    .unwrap();
    let cfg = FitConfig::new().epochs(2).batch_size(16).verbose(0);
    assert!(m.fit(&x, &y, &cfg, &mut []).unwrap().anatomy.is_none());
    let h = m
        .fit(&x, &y, &cfg.validation_data(&x, &y).anatomy(true), &mut [])
        .unwrap();
    let a = h.anatomy.expect("asked for");
    // 64 samples in batches of 16, twice.
    assert_eq!((a.steps, a.samples), (8, 128));
    let parts: Vec<(&str, &str)> = a
        .parts
        .iter()
        .map(|p| (p.name.as_str(), p.pass.name()))
        .collect();
    assert_eq!(
        parts,
        [
            ("gather", "gather"),
            ("conv2d + max_pooling2d", "forward"),
            ("dense", "forward"),
            ("dense_1", "forward"),
            ("loss", "loss"),
            ("dense_1", "backward"),
            ("dense", "backward"),
            ("max_pooling2d + conv2d", "backward"),
            ("optimizer", "optimizer"),
            ("validation", "validation"),
        ]
    );
    let flops = |name: &str, pass: &str| {
        a.parts
            .iter()
            .find(|p| p.name == name && p.pass.name() == pass)
            .unwrap()
            .flops
    };
    let (conv, d1, d2) = (6 * 6 * 4 * 9, 36 * 6, 6 * 2);
    assert_eq!(flops("conv2d + max_pooling2d", "forward"), 128 * 2 * conv);
    // The first Dense needs its input gradient (the convolution below it learns); the
    // convolution's own is never formed.
    assert_eq!(flops("dense", "backward"), 128 * 2 * 2 * d1);
    assert_eq!(flops("max_pooling2d + conv2d", "backward"), 128 * 2 * conv);
    assert_eq!(
        flops("validation", "validation"),
        128 * 2 * (conv + d1 + d2)
    );
    assert_eq!(flops("loss", "loss"), 0);
    assert!(a.parts.iter().all(|p| p.seconds >= 0.0));
    let epochs: f64 = h.epochs.iter().map(|e| e.seconds).sum();
    assert!(a.seconds() > 0.0 && a.seconds() <= epochs, "{a:?}");
}
