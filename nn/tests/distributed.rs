//! Data-parallel training over the in-process group: every rank ends with the same weights,
//! bit for bit; those are the bits of one process running the ranks' slices as micro-batches;
//! and within rounding of one process at the whole batch. Mismatched ranks are errors.

use nn::callbacks::{Callback, EpochLogs, TrainingModel};
use nn::distributed::{Collective, LocalComm, LocalGroup};
use nn::prelude::*;
use rand::{Rng, SeedableRng};

/// `n` 6×6 one-channel images; the class is which third of the image is brightest.
fn data(n: usize, seed: u64) -> (Tensor, Tensor) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut x = vec![0.0f32; n * 36];
    let mut y = vec![0.0f32; n * 3];
    for i in 0..n {
        let class = rng.gen_range(0..3);
        for p in 0..36 {
            let bright = (p % 6) / 2 == class;
            x[i * 36 + p] = rng.gen::<f32>() * 0.5 + if bright { 0.5 } else { 0.0 };
        }
        y[i * 3 + class] = 1.0;
    }
    (
        Tensor::from_vec(x, &[n, 6, 6, 1]).unwrap(),
        Tensor::from_vec(y, &[n, 3]).unwrap(),
    )
}

/// A small CNN (Conv2D + MaxPooling2D fused passes, Dense) with SGD and momentum.
fn cnn() -> Sequential {
    let mut m = Sequential::new()
        .input_shape(&[6, 6, 1])
        .seed(11)
        .add(Conv2D::new(4, (3, 3), Act::Relu))
        .add(MaxPooling2D::new((2, 2)))
        .add(Flatten::new())
        .add(Dense::new(8, Act::Relu))
        .add(Dense::new(3, Act::Softmax));
    m.compile(
        Optimizer::sgd()
            .with_learning_rate(0.1)
            .with_momentum(0.9, false),
        Loss::categorical_crossentropy(),
        &[Metric::Accuracy],
    )
    .unwrap();
    m
}

/// BatchNormalization's moving statistics and Dropout's masks, with Adam.
fn bn_dropout() -> Sequential {
    let mut m = Sequential::new()
        .input_shape(&[6, 6, 1])
        .seed(12)
        .add(Flatten::new())
        .add(Dense::new(16, Act::Linear))
        .add(BatchNormalization::new())
        .add(Activation::new(Act::Relu))
        .add(Dropout::new(0.3))
        .add(Dense::new(3, Act::Softmax));
    m.compile(
        Optimizer::adam(),
        Loss::categorical_crossentropy(),
        &[Metric::Accuracy],
    )
    .unwrap();
    m
}

/// Every weight tensor's name and bits.
type Bits = Vec<(String, Vec<u32>)>;

/// A kernel large enough (36 × 1900 ≥ 64 Ki values) to be lent to the sums whole.
fn wide() -> Sequential {
    let mut m = Sequential::new()
        .input_shape(&[6, 6, 1])
        .seed(13)
        .add(Flatten::new())
        .add(Dense::new(1900, Act::Relu))
        .add(Dense::new(3, Act::Softmax));
    m.compile(
        Optimizer::rmsprop(),
        Loss::categorical_crossentropy(),
        &[Metric::Accuracy],
    )
    .unwrap();
    m
}

fn bits(m: &mut Sequential) -> Bits {
    m.get_weights()
        .into_iter()
        .map(|(name, t)| (name, t.data().iter().map(|v| v.to_bits()).collect()))
        .collect()
}

/// Runs `body(rank, comm)` on `size` threads, each with its own one-thread rayon pool.
fn on_ranks<R: Send>(size: usize, body: impl Fn(usize, &mut LocalComm) -> R + Sync) -> Vec<R> {
    let comms = LocalGroup::new(size);
    std::thread::scope(|s| {
        let handles: Vec<_> = comms
            .into_iter()
            .enumerate()
            .map(|(rank, mut comm)| {
                let body = &body;
                s.spawn(move || {
                    let pool = rayon::ThreadPoolBuilder::new()
                        .num_threads(1)
                        .build()
                        .unwrap();
                    pool.install(|| body(rank, &mut comm))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

fn config(batch: usize) -> FitConfig<'static> {
    FitConfig::new().epochs(2).batch_size(batch).verbose(0)
}

/// Trains `make()` on `ranks` in-process ranks; returns each rank's weights and history.
fn distributed(make: fn() -> Sequential, ranks: usize, batch: usize) -> Vec<(Bits, History)> {
    let (x, y) = data(70, 3);
    on_ranks(ranks, |_, comm| {
        let mut m = make();
        let h = m
            .fit_distributed(&x, &y, &config(batch), comm, &mut [])
            .unwrap();
        (bits(&mut m), h)
    })
}

fn micro_batched_run(make: fn() -> Sequential, parts: usize, batch: usize) -> (Bits, History) {
    let (x, y) = data(70, 3);
    let mut m = make();
    let h = m
        .fit(&x, &y, &config(batch).micro_batches(parts), &mut [])
        .unwrap();
    (bits(&mut m), h)
}

fn micro_batched(make: fn() -> Sequential, parts: usize, batch: usize) -> Bits {
    micro_batched_run(make, parts, batch).0
}

#[test]
fn ranks_agree_and_match_the_micro_batch_reference_bit_for_bit() {
    // 70 samples in batches of 16: a last batch of 6; with 3 ranks, slices of 5 and 6; in
    // batches of 2 over 3 ranks, one rank has no sample each step.
    for make in [cnn as fn() -> Sequential, bn_dropout, wide] {
        for (ranks, batch) in [(2, 16), (3, 16), (3, 2)] {
            let runs = distributed(make, ranks, batch);
            for (r, (w, h)) in runs.iter().enumerate().skip(1) {
                assert_eq!(w, &runs[0].0, "rank {r} of {ranks}, batch {batch}");
                assert_eq!(h.epochs.len(), runs[0].1.epochs.len());
                for (a, b) in h.epochs.iter().zip(&runs[0].1.epochs) {
                    assert_eq!((a.loss, a.accuracy), (b.loss, b.accuracy));
                }
            }
            let (reference, history) = micro_batched_run(make, ranks, batch);
            assert_eq!(runs[0].0, reference, "{ranks} ranks, batch {batch}");
            // The logs too: the loss sums, hits and counts added in f64 in the same order.
            for (a, b) in runs[0].1.epochs.iter().zip(&history.epochs) {
                assert_eq!((a.loss, a.accuracy), (b.loss, b.accuracy));
            }
            // Not a vacuous match: summing slices' gradients rounds otherwise than one pass.
            assert_ne!(reference, micro_batched(make, 1, batch));
        }
    }
}

#[test]
fn one_rank_and_one_micro_batch_are_plain_fit() {
    let (x, y) = data(70, 3);
    let mut plain = cnn();
    plain.fit(&x, &y, &config(16), &mut []).unwrap();
    let one = distributed(cnn, 1, 16);
    assert_eq!(one[0].0, bits(&mut plain));
}

#[test]
fn ranks_come_within_rounding_of_one_process_at_the_global_batch() {
    let (x, y) = data(70, 3);
    let mut whole = cnn();
    whole.fit(&x, &y, &config(16), &mut []).unwrap();
    let whole = whole.get_weights();
    let ranked = on_ranks(2, |_, comm| {
        let mut m = cnn();
        m.fit_distributed(&x, &y, &config(16), comm, &mut [])
            .unwrap();
        m.get_weights()
    });
    for ((name, a), (_, b)) in whole.iter().zip(&ranked[0]) {
        let scale = a.data().iter().fold(0.0f32, |m, v| m.max(v.abs()));
        for (p, q) in a.data().iter().zip(b.data()) {
            assert!(
                (p - q).abs() <= 1e-5 * scale.max(1.0),
                "{name}: {p} against {q}"
            );
        }
    }
}

#[test]
fn every_rank_starts_from_rank_zeros_weights() {
    let (x, y) = data(40, 3);
    let runs = on_ranks(2, |rank, comm| {
        let mut m = cnn();
        if rank == 1 {
            // Rank 1 was given other weights: the broadcast replaces them with rank 0's.
            let other: Vec<(String, Tensor)> = m
                .get_weights()
                .into_iter()
                .map(|(n, t)| {
                    let v = t.data().iter().map(|v| v * 0.5 + 0.01).collect();
                    (n, Tensor::from_vec(v, t.shape()).unwrap())
                })
                .collect();
            m.set_weights(&other).unwrap();
        }
        m.fit_distributed(&x, &y, &config(8), comm, &mut [])
            .unwrap();
        bits(&mut m)
    });
    assert_eq!(runs[0], runs[1]);
    let mut alone = cnn();
    alone
        .fit(&x, &y, &config(8).micro_batches(2), &mut [])
        .unwrap();
    assert_eq!(runs[0], bits(&mut alone));
}

#[test]
fn ranks_built_from_other_seeds_refuse_to_train() {
    let (x, y) = data(40, 3);
    let out = on_ranks(2, |rank, comm| {
        let mut m = Sequential::new()
            .input_shape(&[6, 6, 1])
            .seed(if rank == 0 { 1 } else { 2 })
            .add(Flatten::new())
            .add(Dense::new(3, Act::Softmax));
        m.compile(Optimizer::sgd(), Loss::categorical_crossentropy(), &[])
            .unwrap();
        m.fit_distributed(&x, &y, &config(8), comm, &mut [])
            .map(|_| ())
            .unwrap_err()
            .to_string()
    });
    // The seed decides the shuffled order: every rank must draw the same batches.
    for e in &out {
        assert!(e.contains("fit settings") && e.contains("rank 1"), "{e}");
    }
}

#[test]
fn ranks_given_different_data_or_models_refuse_to_train() {
    let (x, y) = data(40, 3);
    let (x2, _) = data(40, 4);
    let out = on_ranks(3, |rank, comm| {
        let mut m = cnn();
        let xr = if rank == 2 { &x2 } else { &x };
        m.fit_distributed(xr, &y, &config(8), comm, &mut [])
            .map(|_| ())
            .unwrap_err()
            .to_string()
    });
    for e in &out {
        assert!(e.contains("data differ") && e.contains("rank 2"), "{e}");
    }
    let out = on_ranks(2, |rank, comm| {
        let mut m = if rank == 0 { cnn() } else { bn_dropout() };
        m.fit_distributed(&x, &y, &config(8), comm, &mut [])
            .map(|_| ())
            .unwrap_err()
            .to_string()
    });
    for e in &out {
        assert!(e.contains("models") && e.contains("rank 1"), "{e}");
    }
}

/// Asks to stop at the end of epoch `at` — on one rank only.
struct StopOnRank {
    rank: usize,
    me: usize,
    at: usize,
}

impl Callback for StopOnRank {
    fn on_epoch_end(&mut self, logs: &EpochLogs, m: &mut dyn TrainingModel) -> nn::Result<()> {
        if self.me == self.rank && logs.epoch == self.at {
            m.stop_training();
        }
        Ok(())
    }
}

#[test]
fn a_stop_asked_for_on_one_rank_stops_every_rank() {
    let (x, y) = data(40, 3);
    let epochs = on_ranks(2, |rank, comm| {
        let mut m = cnn();
        let mut stop = StopOnRank {
            rank: 1,
            me: rank,
            at: 1,
        };
        m.fit_distributed(&x, &y, &config(8).epochs(5), comm, &mut [&mut stop])
            .unwrap()
            .epochs
            .len()
    });
    assert_eq!(epochs, vec![2, 2]);
}

#[test]
fn validation_is_summed_over_the_ranks() {
    let (x, y) = data(40, 3);
    let (vx, vy) = data(13, 9);
    let mut one = cnn();
    let cfg = config(8).validation_data(&vx, &vy);
    let h1 = one
        .fit(&x, &y, &cfg.clone().micro_batches(2), &mut [])
        .unwrap();
    let hs = on_ranks(2, |_, comm| {
        let mut m = cnn();
        m.fit_distributed(&x, &y, &cfg, comm, &mut []).unwrap()
    });
    for h in &hs {
        for (a, b) in h.epochs.iter().zip(&h1.epochs) {
            // The same slices summed in the same order: the same bits.
            assert_eq!(a.val_loss, b.val_loss);
            assert_eq!(a.val_accuracy, b.val_accuracy);
        }
    }
}

#[test]
fn bad_micro_batch_settings_are_errors() {
    let (x, y) = data(20, 3);
    let mut m = cnn();
    let e = m
        .fit(&x, &y, &config(8).micro_batches(0), &mut [])
        .unwrap_err();
    assert!(e.to_string().contains("micro_batches"), "{e}");
    let out = on_ranks(1, |_, comm| {
        let mut m = cnn();
        m.fit_distributed(&x, &y, &config(8).micro_batches(2), comm, &mut [])
            .unwrap_err()
            .to_string()
    });
    assert!(out[0].contains("micro_batches"), "{}", out[0]);
}

#[test]
fn a_rank_that_leaves_is_an_error_not_a_hang() {
    let out = on_ranks(2, |rank, comm| {
        if rank == 1 {
            return None;
        }
        let mut v = [1.0f64];
        Some(comm.sum_f64(&mut v).unwrap_err().to_string())
    });
    assert!(out[0].as_ref().unwrap().contains("rank 1"), "{:?}", out[0]);
}

#[test]
fn rank_zero_checkpoints_and_training_resumes_on_another_rank_count_as_one_process_would() {
    let dir = std::env::temp_dir().join(format!("nn-distributed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (x, y) = data(60, 3);
    on_ranks(2, |rank, comm| {
        let mut m = cnn();
        // Every rank is given a checkpoint callback; only rank 0's writes.
        let path = dir.join(format!("rank{rank}.safetensors"));
        let mut checkpoint = ModelCheckpoint::new(&path, Monitor::Loss, false);
        m.fit_distributed(&x, &y, &config(8), comm, &mut [&mut checkpoint])
            .unwrap();
    });
    let saved = dir.join("rank0.safetensors");
    assert!(saved.exists());
    assert!(!dir.join("rank1.safetensors").exists());
    // Resumed from the checkpoint on 3 ranks, and in one process as 3 micro-batches.
    let resume = || {
        let mut m = Sequential::load(&saved).unwrap();
        m.compile(
            Optimizer::sgd()
                .with_learning_rate(0.1)
                .with_momentum(0.9, false),
            Loss::categorical_crossentropy(),
            &[Metric::Accuracy],
        )
        .unwrap();
        m
    };
    let ranked = on_ranks(3, |_, comm| {
        let mut m = resume();
        m.fit_distributed(&x, &y, &config(8), comm, &mut [])
            .unwrap();
        bits(&mut m)
    });
    let mut alone = resume();
    alone
        .fit(&x, &y, &config(8).micro_batches(3), &mut [])
        .unwrap();
    assert_eq!(ranked[0], bits(&mut alone));
    assert_eq!(ranked[1], ranked[0]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_anatomy_of_shared_steps_shows_the_exchange() {
    let (x, y) = data(40, 3);
    let hs = on_ranks(2, |_, comm| {
        let mut m = cnn();
        m.fit_distributed(&x, &y, &config(8).anatomy(true), comm, &mut [])
            .unwrap()
    });
    let a = hs[0].anatomy.as_ref().unwrap();
    let last = a.parts.last().unwrap();
    assert_eq!(
        (last.name.as_str(), last.pass.name()),
        ("exchange", "exchange")
    );
    assert!(last.seconds > 0.0);
    // The steps and samples of the global batches (40 samples in batches of 8, twice).
    assert_eq!((a.steps, a.samples), (10, 80));
}

/// Records a hash of every weight after each step.
struct StepHashes(Vec<u64>);

impl Callback for StepHashes {
    fn on_train_batch_end(
        &mut self,
        _logs: &nn::callbacks::BatchLogs,
        m: &mut dyn TrainingModel,
    ) -> nn::Result<()> {
        let h = m
            .get_weights()
            .iter()
            .flat_map(|(_, t)| t.data().iter().map(|v| v.to_bits()))
            .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
            });
        self.0.push(h);
        Ok(())
    }
}

#[test]
fn every_rank_holds_the_same_weights_after_every_step() {
    let (x, y) = data(50, 3);
    let hashes = on_ranks(3, |_, comm| {
        let mut m = bn_dropout();
        let mut rec = StepHashes(vec![]);
        m.fit_distributed(&x, &y, &config(8), comm, &mut [&mut rec])
            .unwrap();
        rec.0
    });
    // 50 samples in batches of 8: 7 steps an epoch, 2 epochs.
    assert_eq!(hashes[0].len(), 14);
    assert_eq!(hashes[1], hashes[0]);
    assert_eq!(hashes[2], hashes[0]);
    // And the weights change every step (not a comparison of constants).
    assert!(hashes[0].windows(2).all(|w| w[0] != w[1]));
}

/// A collective that answers every sum one value short: a backend's bug, or a user's own
/// backend gone wrong.
struct ShortSums(LocalComm);

impl Collective for ShortSums {
    fn rank(&self) -> usize {
        self.0.rank()
    }
    fn size(&self) -> usize {
        self.0.size()
    }
    fn broadcast(&mut self, data: &mut [f32], root: usize) -> nn::Result<()> {
        self.0.broadcast(data, root)
    }
    fn all_gather(&mut self, value: u64) -> nn::Result<Vec<u64>> {
        self.0.all_gather(value)
    }
    fn sum_f64(&mut self, data: &mut [f64]) -> nn::Result<()> {
        self.0.sum_f64(data)
    }
    fn start_sum(&mut self, data: Vec<f32>) -> nn::Result<()> {
        self.0.start_sum(data)
    }
    fn finish_sum(&mut self) -> nn::Result<Vec<f32>> {
        let mut v = self.0.finish_sum()?;
        v.pop();
        Ok(v)
    }
}

#[test]
fn a_collective_that_answers_wrongly_is_an_error_not_a_panic() {
    let (x, y) = data(20, 3);
    let mut short = ShortSums(LocalGroup::new(1).pop().unwrap());
    let mut m = cnn();
    let e = m
        .fit_distributed(&x, &y, &config(8), &mut short, &mut [])
        .unwrap_err()
        .to_string();
    assert!(e.contains("returned a sum of"), "{e}");
    // A broadcast from a rank that does not exist.
    let mut one = LocalGroup::new(1).pop().unwrap();
    let e = one.broadcast(&mut [0.0], 3).unwrap_err().to_string();
    assert!(e.contains("rank 3"), "{e}");
}

#[test]
fn ranks_in_different_collectives_are_an_error() {
    let out = on_ranks(2, |rank, comm| {
        if rank == 0 {
            comm.sum_f64(&mut [1.0])
                .map(|_| ())
                .unwrap_err()
                .to_string()
        } else {
            comm.all_gather(7).map(|_| ()).unwrap_err().to_string()
        }
    });
    for e in &out {
        assert!(e.contains("rank 1 called an all-gather"), "{e}");
    }
}
