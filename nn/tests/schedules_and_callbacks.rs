//! Learning-rate schedules through `fit`, and Keras's learning-rate, logging and NaN callbacks:
//! what each does to the rate, the file, or the run, step by step.

use nn::callbacks::{EpochLogs, TrainingModel};
use nn::prelude::*;
use nn::Result;

fn data() -> (Tensor, Tensor) {
    let x: Vec<f32> = (0..60).map(|i| ((i * 7) % 11) as f32 / 11.0).collect();
    let y: Vec<f32> = (0..20).map(|i| (i % 2) as f32).collect();
    (
        Tensor::from_vec(x, &[20, 3]).unwrap(),
        Tensor::from_vec(y, &[20]).unwrap(),
    )
}

fn model(opt: Optimizer, metrics: &[Metric]) -> Sequential {
    let mut m = Sequential::new()
        .input_shape(&[3])
        .seed(5)
        .add(Dense::new(4, Act::Relu))
        .add(Dense::new(2, Act::Softmax));
    m.compile(opt, Loss::sparse_categorical_crossentropy(), metrics)
        .unwrap();
    m
}

fn tmp(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("nn-kit-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn an_optimizer_with_a_schedule_takes_each_steps_rate_from_it() {
    let (x, y) = data();
    // 20 samples, batches of 4: 5 steps an epoch; the logged rate is the next step's.
    let schedule = LearningRateSchedule::exponential_decay(0.1, 5, 0.5).staircase(true);
    let mut m = model(Optimizer::sgd().with_schedule(schedule.clone()), &[]);
    let h = m
        .fit(
            &x,
            &y,
            &FitConfig::new().epochs(3).batch_size(4).verbose(0),
            &mut [],
        )
        .unwrap();
    assert_eq!(h.learning_rate(), [0.05, 0.025, 0.0125]);
    assert_eq!(m.optimizer_mut().unwrap().iterations(), 15);
    // One step per fit, the rate set by hand before each: the same weights as the schedule's.
    let mut by_hand = model(Optimizer::sgd(), &[]);
    let mut scheduled = model(Optimizer::sgd().with_schedule(schedule.clone()), &[]);
    let cfg = FitConfig::new()
        .epochs(1)
        .batch_size(20)
        .shuffle(false)
        .verbose(0);
    for step in 0..4u64 {
        by_hand
            .optimizer_mut()
            .unwrap()
            .set_learning_rate(schedule.at(step));
        by_hand.fit(&x, &y, &cfg, &mut []).unwrap();
        scheduled.fit(&x, &y, &cfg, &mut []).unwrap();
    }
    assert_eq!(by_hand.get_weights(), scheduled.get_weights());
}

#[test]
fn setting_the_rate_of_a_scheduled_optimizer_is_refused() {
    let (x, y) = data();
    let mut m = model(
        Optimizer::adam().with_schedule(LearningRateSchedule::cosine_decay(0.01, 100)),
        &[],
    );
    let before = m.get_weights();
    m.optimizer_mut().unwrap().set_learning_rate(0.5);
    let err = m
        .fit(
            &x,
            &y,
            &FitConfig::new().epochs(1).batch_size(4).verbose(0),
            &mut [],
        )
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "set_learning_rate(0.5) on an optimizer whose learning rate follows a CosineDecay schedule"
    );
    assert_eq!(m.get_weights(), before, "no step was taken");
    // A schedule Keras would refuse is refused at compile.
    let mut m = Sequential::new()
        .input_shape(&[3])
        .add(Dense::new(2, Act::Softmax));
    let err = m
        .compile(
            Optimizer::sgd().with_schedule(LearningRateSchedule::piecewise_constant(
                vec![10, 20],
                vec![0.1, 0.01],
            )),
            Loss::sparse_categorical_crossentropy(),
            &[],
        )
        .unwrap_err();
    assert!(matches!(
        err,
        nn::Error::Setting {
            owner: "PiecewiseConstantDecay",
            name: "values",
            ..
        }
    ));
}

#[test]
fn learning_rate_scheduler_sets_each_epochs_rate() {
    let (x, y) = data();
    let mut m = model(Optimizer::sgd(), &[]);
    let mut seen = vec![];
    let mut sched = LearningRateScheduler::new(|epoch, lr| if epoch < 2 { lr } else { lr * 0.5 });
    let h = m
        .fit(
            &x,
            &y,
            &FitConfig::new().epochs(4).batch_size(4).verbose(0),
            &mut [&mut sched],
        )
        .unwrap();
    seen.extend(h.learning_rate());
    assert_eq!(seen, [0.01, 0.01, 0.005, 0.0025]);
    let mut bad = LearningRateScheduler::new(|_, _| f32::NAN);
    let err = m
        .fit(
            &x,
            &y,
            &FitConfig::new().epochs(1).batch_size(4).verbose(0),
            &mut [&mut bad],
        )
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "LearningRateScheduler at epoch 1 returned NaN, not a learning rate (a finite number ≥ 0)"
    );
}

/// A model handle that only keeps a learning rate, to drive a callback epoch by epoch.
struct Rate(f32);

impl TrainingModel for Rate {
    fn get_weights(&mut self) -> Vec<(String, Tensor)> {
        vec![]
    }
    fn set_weights(&mut self, _: &[(String, Tensor)]) -> Result<()> {
        Ok(())
    }
    fn save(&mut self, _: &std::path::Path) -> Result<()> {
        Ok(())
    }
    fn learning_rate(&self) -> f32 {
        self.0
    }
    fn set_learning_rate(&mut self, lr: f32) {
        self.0 = lr;
    }
    fn stop_training(&mut self) {}
}

fn epoch(epoch: usize, val_loss: f32) -> EpochLogs {
    EpochLogs {
        epoch,
        loss: 1.0,
        accuracy: None,
        val_loss: Some(val_loss),
        val_accuracy: None,
        learning_rate: 0.0,
        seconds: 0.0,
    }
}

#[test]
fn reduce_lr_on_plateau_follows_keras_patience_cooldown_and_floor() {
    let mut cb = ReduceLrOnPlateau::new()
        .factor(0.5)
        .patience(2)
        .cooldown(1)
        .min_lr(0.02);
    let mut model = Rate(0.1);
    cb.on_train_begin(&mut model).unwrap();
    // Improves, then stalls: reduced after 2 epochs without improvement; the cooldown epoch
    // that follows counts down and, as in Keras, already counts as one epoch of waiting;
    // never below min_lr, and no reduction once there.
    let losses = [1.0, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9];
    let mut rates = vec![];
    for (e, &l) in losses.iter().enumerate() {
        cb.on_epoch_end(&epoch(e, l), &mut model).unwrap();
        rates.push(model.0);
    }
    assert_eq!(cb.reduced_at, [3, 5, 7]);
    assert_eq!(
        rates,
        [0.1, 0.1, 0.1, 0.05, 0.05, 0.025, 0.025, 0.02, 0.02, 0.02]
    );
    // An improvement smaller than min_delta is not one.
    let mut cb = ReduceLrOnPlateau::new().patience(1).min_delta(0.1);
    let mut model = Rate(1.0);
    cb.on_train_begin(&mut model).unwrap();
    cb.on_epoch_end(&epoch(0, 1.0), &mut model).unwrap();
    cb.on_epoch_end(&epoch(1, 0.95), &mut model).unwrap();
    assert_eq!(model.0, 0.1);
    // Keras refuses a factor ≥ 1.
    let err = ReduceLrOnPlateau::new()
        .factor(1.0)
        .on_train_begin(&mut model)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "ReduceLROnPlateau: factor = 1 is not in [0, 1)"
    );
}

#[test]
fn reduce_lr_on_plateau_in_fit_needs_what_it_monitors() {
    let (x, y) = data();
    let mut m = model(Optimizer::sgd(), &[]);
    let mut cb = ReduceLrOnPlateau::new().monitor(Monitor::Loss).patience(0);
    let h = m
        .fit(
            &x,
            &y,
            &FitConfig::new().epochs(3).batch_size(4).verbose(0),
            &mut [&mut cb],
        )
        .unwrap();
    // patience 0: every epoch that does not improve on the best cuts the rate.
    assert_eq!(h.epochs.len(), 3);
    let mut cb = ReduceLrOnPlateau::new();
    let err = m
        .fit(
            &x,
            &y,
            &FitConfig::new().epochs(1).batch_size(4).verbose(0),
            &mut [&mut cb],
        )
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "ReduceLROnPlateau monitors val_loss but fit does not measure it (give validation data)"
    );
}

#[test]
fn csv_logger_writes_keras_columns_and_appends() {
    let (x, y) = data();
    let dir = tmp("csv");
    let path = dir.join("log.csv");
    let mut m = model(Optimizer::sgd(), &[Metric::Accuracy]);
    let mut log = CsvLogger::new(&path);
    let cfg = FitConfig::new()
        .epochs(2)
        .batch_size(4)
        .validation_split(0.2)
        .verbose(0);
    let h = m.fit(&x, &y, &cfg, &mut [&mut log]).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "epoch,accuracy,learning_rate,loss,val_accuracy,val_loss"
    );
    assert_eq!(lines.len(), 3);
    let e = &h.epochs[1];
    assert_eq!(
        lines[2],
        format!(
            "1,{},{},{},{},{}",
            e.accuracy.unwrap(),
            e.learning_rate,
            e.loss,
            e.val_accuracy.unwrap(),
            e.val_loss.unwrap()
        )
    );
    // Appending: the old rows stay, no second header; another separator.
    let mut log = CsvLogger::new(&path).append(true);
    m.fit(&x, &y, &cfg.clone().epochs(1), &mut [&mut log])
        .unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.lines().count(), 4);
    assert_eq!(text.matches("epoch,").count(), 1);
    // Without accuracy or validation, only the loss and the rate.
    let mut m = model(Optimizer::sgd(), &[]);
    let mut log = CsvLogger::new(&path).separator(';');
    m.fit(
        &x,
        &y,
        &FitConfig::new().epochs(1).batch_size(4).verbose(0),
        &mut [&mut log],
    )
    .unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        text.starts_with("epoch;learning_rate;loss\n0;0.01;"),
        "{text}"
    );
    // No temporary left beside it.
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["log.csv"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A model whose loss overflows within a few steps.
fn diverging() -> (Sequential, Tensor, Tensor) {
    let x = Tensor::from_vec((0..64 * 4).map(|i| (i % 5) as f32).collect(), &[64, 4]).unwrap();
    let y = Tensor::from_vec(vec![1e30; 64], &[64, 1]).unwrap();
    let mut m = Sequential::new()
        .input_shape(&[4])
        .add(Dense::new(1, Act::Linear));
    m.compile(Optimizer::sgd().with_learning_rate(10.0), Loss::mse(), &[])
        .unwrap();
    (m, x, y)
}

#[test]
fn terminate_on_nan_ends_training_without_an_error() {
    let cfg = FitConfig::new().epochs(5).batch_size(8).verbose(0);
    let (mut m, x, y) = diverging();
    let mut stop = TerminateOnNan::new();
    let h = m.fit(&x, &y, &cfg, &mut [&mut stop]).unwrap();
    let (epoch, _batch) = stop.stopped_at.expect("the loss diverged");
    assert_eq!(h.epochs.len(), epoch + 1);
    assert!(!h.epochs.last().unwrap().loss.is_finite());
    // The weights are those before the failing step: finite.
    assert!(m
        .get_weights()
        .iter()
        .all(|(_, t)| t.data().iter().all(|v| v.is_finite())));
    // Without it, the same run is an error.
    let (mut m, x, y) = diverging();
    let err = m.fit(&x, &y, &cfg, &mut []).unwrap_err();
    assert!(matches!(err, nn::Error::NonFiniteLoss { .. }), "{err}");
}
