//! Mistakes a user makes through the public API: each is refused with an error that names the
//! argument and the numbers, and a refused call changes nothing.

use kernels::optim::{update_from_product, Rule};
use kernels::{ExecOptions, MatRef, Pool2d};
use nn::prelude::*;
use workspace_tests::*;

fn named<L: Layer>(mut layer: L, name: &str) -> L {
    layer.set_name(name.into());
    layer
}

fn weights(m: &mut Sequential) -> Vec<(String, Vec<u32>)> {
    m.get_weights()
        .into_iter()
        .map(|(n, t)| (n, t.data().iter().map(|v| v.to_bits()).collect()))
        .collect()
}

#[test]
fn layer_names_are_unique() {
    let mut m = Sequential::new()
        .input_shape(&[4])
        .add(named(Dense::new(3, Act::Relu), "hidden"))
        .add(named(Dense::new(2, Act::Softmax), "hidden"));
    let err = m.build().unwrap_err().to_string();
    assert_eq!(
        err,
        "layer 1 (Dense) is named \"hidden\", as an earlier layer is: layer names must be unique"
    );
    // A name the user gave is skipped by the automatic names, so the model saves and loads.
    let dir = Scratch::new("names");
    let mut m = Sequential::new()
        .input_shape(&[4])
        .add(Dense::new(3, Act::Relu))
        .add(named(Dense::new(2, Act::Softmax), "dense"));
    m.build().unwrap();
    let names: Vec<&str> = m.layers().iter().map(|l| l.name()).collect();
    assert_eq!(names, ["dense_1", "dense"]);
    m.save(dir.join("m.safetensors")).unwrap();
    let mut back = Sequential::load(dir.join("m.safetensors")).unwrap();
    assert_eq!(weights(&mut back), weights(&mut m));
}

#[test]
fn set_weights_that_fails_changes_nothing() {
    let mut m = small_cnn(1);
    let before = weights(&mut m);
    let mut w = m.get_weights();
    for (_, t) in w.iter_mut() {
        t.data_mut().fill(0.5);
    }
    // The last tensor of the wrong shape: nothing written, not even the first three.
    let (name, _) = w.pop().unwrap();
    w.push((name, Tensor::from_vec(vec![0.5; 4], &[4]).unwrap()));
    let err = m.set_weights(&w).unwrap_err().to_string();
    assert_eq!(
        err,
        "dense/bias has shape [3] in the model but [4] was given"
    );
    assert_eq!(weights(&mut m), before);
    // A non-finite value: refused too.
    let mut w = m.get_weights();
    w[0].1.data_mut()[5] = f32::NAN;
    let err = m.set_weights(&w).unwrap_err().to_string();
    assert_eq!(
        err,
        "conv2d/kernel holds a non-finite value (NaN) at element 5"
    );
    assert_eq!(weights(&mut m), before);
}

#[test]
fn a_model_changed_after_compile_must_be_compiled_again() {
    let (x, y) = images(6);
    let m = small_cnn(2);
    let mut m = m.input_shape(&[6, 6, 1]);
    let cfg = FitConfig::new().epochs(1).batch_size(3).verbose(0);
    let err = m.fit(&x, &y, &cfg, &mut []).unwrap_err().to_string();
    assert_eq!(
        err,
        "fit: the model's input shape, seed or layers changed after compile: call compile again"
    );
    let err = m
        .train_on_batch(x.data(), y.data(), 6)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("train_on_batch: the model's input shape"),
        "{err}"
    );
    // Compiled again for the new shape, it trains on data of that shape.
    m.compile(
        Optimizer::adam(),
        Loss::sparse_categorical_crossentropy(),
        &[],
    )
    .unwrap();
    let err = m.fit(&x, &y, &cfg, &mut []).unwrap_err().to_string();
    assert!(
        err.contains("the model takes samples of shape [6, 6, 1]"),
        "{err}"
    );
    let x6 = Tensor::from_vec(vec![0.5; 6 * 36], &[6, 6, 6, 1]).unwrap();
    m.fit(&x6, &y, &cfg, &mut []).unwrap();
}

#[test]
fn train_on_batch_checks_labels_and_inputs_as_fit_does() {
    let mut m = small_cnn(3);
    let before = weights(&mut m);
    let (x, _) = images(2);
    for bad in [3.0, 10.0, 255.0, -1.0, f32::NAN, 2.5, f32::INFINITY] {
        let err = m.train_on_batch(x.data(), &[0.0, bad], 2).unwrap_err();
        assert!(
            matches!(err, nn::Error::Target { index: 1, value, .. }
                if value == bad || value.is_nan() && bad.is_nan()),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            format!(
                "target value 1 is {bad}: sparse_categorical_crossentropy takes class indices \
                 in 0..3"
            )
        );
    }
    let mut xs = x.data().to_vec();
    xs[70] = f32::NAN;
    let err = m
        .train_on_batch(&xs, &[0.0, 1.0], 2)
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "train_on_batch's input holds a non-finite value (NaN) at element 70"
    );
    assert_eq!(weights(&mut m), before);
    m.train_on_batch(x.data(), &[0.0, 1.0], 2).unwrap();
    assert_ne!(weights(&mut m), before);
}

#[test]
fn targets_out_of_their_loss_range_are_refused() {
    let mut m = Sequential::new()
        .input_shape(&[4])
        .add(Dense::new(1, Act::Sigmoid));
    m.compile(Optimizer::sgd(), Loss::binary_crossentropy(), &[])
        .unwrap();
    let x = Tensor::from_vec(vec![1.0; 8], &[2, 4]).unwrap();
    let before = weights(&mut m);
    for bad in [2.0, -1.0, f32::NAN] {
        let y = Tensor::from_vec(vec![0.0, bad], &[2, 1]).unwrap();
        let err = m
            .fit(
                &x,
                &y,
                &FitConfig::new().epochs(1).batch_size(2).verbose(0),
                &mut [],
            )
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            format!("target value 1 is {bad}: binary_crossentropy takes targets in [0, 1]")
        );
        assert!(m.evaluate(&x, &y, 2).is_err());
        assert!(m.train_on_batch(x.data(), y.data(), 2).is_err());
    }
    assert_eq!(weights(&mut m), before);
    // One-hot targets must be finite.
    let mut m = small_cnn(6);
    m.compile(Optimizer::sgd(), Loss::categorical_crossentropy(), &[])
        .unwrap();
    let (x, _) = images(2);
    let err = m
        .train_on_batch(x.data(), &[1.0, 0.0, 0.0, f32::INFINITY, 0.0, 0.0], 2)
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "the target tensor holds a non-finite value (inf) at element 3"
    );
}

#[test]
fn fit_and_callback_settings_out_of_range_are_refused() {
    let mut m = small_cnn(7);
    let before = weights(&mut m);
    let (x, y) = images(4);
    let err = m
        .fit(
            &x,
            &y,
            &FitConfig::new().epochs(1).batch_size(2).verbose(3),
            &mut [],
        )
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "fit: verbose = 3 is not 0 (silent), 1 (a progress bar) or 2 (a line per epoch)"
    );
    let mut stop = EarlyStopping::new(Monitor::Loss, 1).min_delta(f32::NAN);
    let err = m
        .fit(
            &x,
            &y,
            &FitConfig::new().epochs(2).batch_size(2).verbose(0),
            &mut [&mut stop],
        )
        .unwrap_err()
        .to_string();
    assert_eq!(err, "EarlyStopping: min_delta = NaN is not a finite number");
    let err = m.predict(&x, 0).unwrap_err().to_string();
    assert_eq!(err, "predict: batch_size = 0 is not at least 1");
    let err = m.evaluate(&x, &y, 0).unwrap_err().to_string();
    assert_eq!(err, "evaluate: batch_size = 0 is not at least 1");
    assert_eq!(weights(&mut m), before);
}

#[test]
fn errors_read_as_sentences_when_main_returns_them() {
    // `fn main() -> Result<(), nn::Error>` prints the error with `Debug`: the message, not a
    // struct.
    let err = Tensor::from_vec(vec![1.0; 3], &[2, 2]).unwrap_err();
    assert_eq!(format!("{err:?}"), err.to_string());
    assert_eq!(
        format!("{err:?}"),
        "a tensor of shape [2, 2] needs 4 elements, but 3 elements were given"
    );
    let err = kernels::gemm(
        1.0,
        MatRef::row_major(&[1.0; 4], 2, 2, 2),
        MatRef::row_major(&[1.0; 6], 3, 2, 2),
        0.0,
        kernels::MatMut::row_major(&mut [0.0; 4], 2, 2, 2),
    )
    .unwrap_err();
    assert_eq!(format!("{err:?}"), err.to_string());
    let err = Sequential::load("/nonexistent/model.safetensors")
        .err()
        .unwrap();
    assert!(format!("{err:?}").starts_with("/nonexistent/model.safetensors: "));
}

#[test]
fn sample_ranges_past_the_data_are_refused() {
    let t = Tensor::from_vec(vec![1.0; 8], &[2, 4]).unwrap();
    assert_eq!(t.slice_samples(1..2).unwrap().shape(), [1, 4]);
    let err = t.slice_samples(1..5).unwrap_err().to_string();
    assert_eq!(
        err,
        "samples 1..5 of a tensor of shape [2, 4]: out of range"
    );
    assert_eq!(t.sample(1), Some(&[1.0; 4][..]));
    assert_eq!(t.sample(2), None);
    assert_eq!(t.sample(usize::MAX), None);
    assert_eq!(t.rows(1..3), None);
}

#[test]
fn hyperparameters_out_of_range_are_refused() {
    let cases: Vec<(Optimizer, &str)> = vec![
        (
            Optimizer::sgd().with_learning_rate(f32::NAN),
            "SGD: learning_rate = NaN is not in [0, ∞)",
        ),
        (
            Optimizer::adam().with_learning_rate(f32::INFINITY),
            "Adam: learning_rate = inf is not in [0, ∞)",
        ),
        (
            Optimizer::rmsprop().with_learning_rate(-0.1),
            "RMSprop: learning_rate = -0.1 is not in [0, ∞)",
        ),
        (
            Optimizer::sgd().with_momentum(f32::NAN, false),
            "SGD: momentum = NaN is not in [0, 1]",
        ),
        (
            Optimizer::sgd().with_momentum(1.5, true),
            "SGD: momentum = 1.5 is not in [0, 1]",
        ),
        (
            nn::optimizers::OptimizerKind::Adam {
                learning_rate: 0.001,
                beta_1: 1.0,
                beta_2: 0.999,
                epsilon: 1e-7,
            }
            .into(),
            "Adam: beta_1 = 1 is not in [0, 1)",
        ),
        (
            nn::optimizers::OptimizerKind::RmsProp {
                learning_rate: 0.001,
                rho: 2.0,
                epsilon: 1e-7,
            }
            .into(),
            "RMSprop: rho = 2 is not in [0, 1)",
        ),
        (
            nn::optimizers::OptimizerKind::Adam {
                learning_rate: 0.001,
                beta_1: 0.9,
                beta_2: 0.999,
                epsilon: 0.0,
            }
            .into(),
            "Adam: epsilon = 0 is not in (0, ∞)",
        ),
        (
            Optimizer::adam().with_momentum(0.5, true),
            "with_momentum(0.5, true) applies to SGD only, not to Adam (its beta_1 plays that part)",
        ),
    ];
    for (opt, want) in cases {
        let mut m = small_cnn(4);
        let err = m
            .compile(opt, Loss::sparse_categorical_crossentropy(), &[])
            .unwrap_err()
            .to_string();
        assert_eq!(err, want);
    }
    // A learning rate made NaN during training (a callback, or the program) stops the next
    // step before it touches the weights.
    let mut m = small_cnn(5);
    let (x, y) = images(4);
    m.fit(
        &x,
        &y,
        &FitConfig::new().epochs(1).batch_size(2).verbose(0),
        &mut [],
    )
    .unwrap();
    let before = weights(&mut m);
    m.optimizer_mut().unwrap().set_learning_rate(f32::NAN);
    let err = m
        .fit(
            &x,
            &y,
            &FitConfig::new().epochs(1).batch_size(2).verbose(0),
            &mut [],
        )
        .unwrap_err()
        .to_string();
    assert_eq!(err, "Adam: learning_rate = NaN is not in [0, ∞)");
    assert_eq!(weights(&mut m), before);
}

#[test]
fn sizes_that_overflow_are_errors() {
    let huge = [1usize << 40, 1 << 40];
    let err = Tensor::from_slice(&[], &huge).unwrap_err().to_string();
    assert_eq!(
        err,
        "a tensor of shape [1099511627776, 1099511627776] has more elements than memory can hold"
    );
    assert!(Tensor::zeros(&huge).is_err());
    assert!(Tensor::from_vec(vec![1.0], &[1])
        .unwrap()
        .reshape(&huge)
        .is_err());
    // Refused memory is an error too, not an abort.
    let err = to_categorical(&[1, 2], usize::MAX / 4)
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("not enough memory: a tensor of"), "{err}");
    let err = nn::tensor::to_categorical(&[1, 2], usize::MAX)
        .unwrap_err()
        .to_string();
    assert!(err.contains("more elements than memory can hold"), "{err}");
    for units in [usize::MAX, 1 << 62] {
        let mut m = Sequential::new()
            .input_shape(&[784])
            .add(Dense::new(units, Act::Relu));
        let err = m.build().unwrap_err().to_string();
        assert!(err.starts_with("layer dense: "), "{err}");
    }
    let mut m = Sequential::new()
        .input_shape(&[1 << 40, 1 << 40])
        .add(Flatten::new());
    assert!(m
        .build()
        .unwrap_err()
        .to_string()
        .contains("more elements than memory can hold"));
    // update_from_product with sizes whose products overflow: refused at once.
    let (a, b) = (
        MatRef::row_major(&[], 0, 1 << 33, 1 << 33),
        MatRef::row_major(&[], 0, 1 << 33, 1 << 33),
    );
    let rule = Rule::Sgd {
        lr: 0.1,
        momentum: 0.0,
        nesterov: false,
    };
    let err = update_from_product(&ExecOptions::default(), rule, a, b, &mut [], &mut [], None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("more elements than memory can hold"), "{err}");
}

#[test]
fn a_pooling_argmax_outside_its_window_is_an_error() {
    let s = Pool2d::new(1, (4, 4, 2), 2);
    let dy = vec![1.0; s.output_len()];
    let mut dx = vec![0.0; s.input_len()];
    // Output (0, 0) channel 0 pointing at (2, 2): inside the image, in another window.
    let mut argmax: Vec<u32> = (0..s.output_len() as u32)
        .map(|i| {
            let (q, ch) = (i / 2, i % 2);
            ((q / 2) * 2 * 4 + (q % 2) * 2) * 2 + ch
        })
        .collect();
    kernels::max_pool2d_backward(&ExecOptions::default(), &s, &dy, &argmax, &mut dx).unwrap();
    argmax[0] = (2 * 4 + 2) * 2;
    let err = kernels::max_pool2d_backward(&ExecOptions::default(), &s, &dy, &argmax, &mut dx)
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "argument argmax = 20 is invalid: image 0, output (0, 0), channel 0: not a position of \
         its window (rows 0..2, columns 0..2) in channel 0"
    );
}
