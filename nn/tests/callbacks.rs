//! Keras's callback hooks: their order, their logs, and what a callback may do to the model
//! through its handle (weights, learning rate, stopping).

use nn::callbacks::{BatchLogs, Callback, EpochLogs, TrainingModel};
use nn::prelude::*;
use nn::Result;

/// Records every hook as a line.
#[derive(Default)]
struct Recorder {
    events: Vec<String>,
    /// Ask to stop at the end of this (epoch, batch).
    stop_at: Option<(usize, usize)>,
    epoch: usize,
    /// The learning rate to set at the start of epoch 1.
    lr_at_epoch_1: Option<f32>,
    lrs: Vec<f32>,
}

impl Callback for Recorder {
    fn on_train_begin(&mut self, _m: &mut dyn TrainingModel) -> Result<()> {
        self.events.push("train_begin".into());
        Ok(())
    }
    fn on_train_end(&mut self, _m: &mut dyn TrainingModel) -> Result<()> {
        self.events.push("train_end".into());
        Ok(())
    }
    fn on_epoch_begin(&mut self, epoch: usize, m: &mut dyn TrainingModel) -> Result<()> {
        self.epoch = epoch;
        if let (1, Some(lr)) = (epoch, self.lr_at_epoch_1) {
            m.set_learning_rate(lr);
        }
        self.lrs.push(m.learning_rate());
        self.events.push(format!("epoch_begin {epoch}"));
        Ok(())
    }
    fn on_epoch_end(&mut self, logs: &EpochLogs, _m: &mut dyn TrainingModel) -> Result<()> {
        self.events.push(format!("epoch_end {}", logs.epoch));
        Ok(())
    }
    fn on_train_batch_begin(&mut self, batch: usize, _m: &mut dyn TrainingModel) -> Result<()> {
        self.events.push(format!("batch_begin {batch}"));
        Ok(())
    }
    fn on_train_batch_end(&mut self, logs: &BatchLogs, m: &mut dyn TrainingModel) -> Result<()> {
        assert!(logs.loss.is_finite() && logs.accuracy.is_some_and(|a| (0.0..=1.0).contains(&a)));
        self.events
            .push(format!("batch_end {} ({} samples)", logs.batch, logs.size));
        if self.stop_at == Some((self.epoch, logs.batch)) {
            m.stop_training();
        }
        Ok(())
    }
}

fn model() -> Sequential {
    let mut m = Sequential::new()
        .input_shape(&[3])
        .seed(5)
        .add(Dense::new(4, Act::Relu))
        .add(Dense::new(2, Act::Softmax));
    m.compile(
        Optimizer::sgd(),
        Loss::sparse_categorical_crossentropy(),
        &[Metric::Accuracy],
    )
    .unwrap();
    m
}

fn data() -> (Tensor, Tensor) {
    let x: Vec<f32> = (0..30).map(|i| (i % 7) as f32 / 7.0).collect();
    let y: Vec<f32> = (0..10).map(|i| (i % 2) as f32).collect();
    (
        Tensor::from_vec(x, &[10, 3]).unwrap(),
        Tensor::from_vec(y, &[10]).unwrap(),
    )
}

#[test]
fn hooks_run_in_keras_order_with_their_logs() {
    let (x, y) = data();
    let mut rec = Recorder::default();
    let mut m = model();
    let h = m
        .fit(
            &x,
            &y,
            &FitConfig::new().epochs(2).batch_size(4).verbose(0),
            &mut [&mut rec],
        )
        .unwrap();
    let mut want = vec!["train_begin".to_string()];
    for epoch in 0..2 {
        want.push(format!("epoch_begin {epoch}"));
        for (batch, size) in [(0, 4), (1, 4), (2, 2)] {
            want.push(format!("batch_begin {batch}"));
            want.push(format!("batch_end {batch} ({size} samples)"));
        }
        want.push(format!("epoch_end {epoch}"));
    }
    want.push("train_end".into());
    assert_eq!(rec.events, want);
    assert_eq!(h.epochs.len(), 2);
}

#[test]
fn a_stop_in_a_batch_hook_ends_the_epoch_there() {
    let (x, y) = data();
    let mut rec = Recorder {
        stop_at: Some((0, 1)),
        ..Recorder::default()
    };
    let mut m = model();
    let h = m
        .fit(
            &x,
            &y,
            &FitConfig::new().epochs(3).batch_size(4).verbose(0),
            &mut [&mut rec],
        )
        .unwrap();
    assert_eq!(
        rec.events,
        [
            "train_begin",
            "epoch_begin 0",
            "batch_begin 0",
            "batch_end 0 (4 samples)",
            "batch_begin 1",
            "batch_end 1 (4 samples)",
            "epoch_end 0",
            "train_end"
        ]
    );
    assert_eq!(h.epochs.len(), 1);
}

#[test]
fn a_callback_changes_the_learning_rate_through_its_handle() {
    let (x, y) = data();
    let mut rec = Recorder {
        lr_at_epoch_1: Some(0.5),
        ..Recorder::default()
    };
    let mut m = model();
    m.fit(
        &x,
        &y,
        &FitConfig::new().epochs(2).batch_size(4).verbose(0),
        &mut [&mut rec],
    )
    .unwrap();
    assert_eq!(rec.lrs, [0.01, 0.5]);
    assert_eq!(m.optimizer_mut().unwrap().learning_rate(), 0.5);
    // A value the optimizer refuses stops the next step with an error.
    let mut bad = Recorder {
        lr_at_epoch_1: Some(f32::NAN),
        ..Recorder::default()
    };
    let err = m
        .fit(
            &x,
            &y,
            &FitConfig::new().epochs(2).batch_size(4).verbose(0),
            &mut [&mut bad],
        )
        .unwrap_err()
        .to_string();
    assert_eq!(err, "SGD: learning_rate = NaN is not in [0, ∞)");
}
