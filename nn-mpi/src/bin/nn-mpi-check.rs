//! The MPI backend's own check, run under `mpirun` by this crate's tests (and by hand:
//! `mpirun -np 3 nn-mpi-check train`). Modes:
//! - `train`: trains two small models (a CNN with SGD and momentum; Dense, BatchNormalization,
//!   Dropout with Adam; a wide Dense with RMSprop, whose kernel travels whole) with
//!   `fit_distributed` on synthetic data, for several global batch
//!   sizes; checks that every rank holds the same weights, bit for bit, and that they are the
//!   bits of this process's own micro-batch reference (`FitConfig::micro_batches(size)`).
//!   Rank 0 prints `ok <size> ranks`.
//! - `panic <rank>` / `error <rank>` / `kill <rank>`: that rank panics, returns an error, or
//!   is killed (SIGKILL) during training; the job must end, non-zero.

use std::process::ExitCode;

use nn::callbacks::{Callback, EpochLogs, TrainingModel};
use nn::distributed::Collective;
use nn::prelude::*;
use nn::{Error, Result};

/// `n` 6×6 one-channel images, the class the brightest third: deterministic from `seed`.
fn data(n: usize, seed: u64) -> Result<(Tensor, Tensor)> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32
    };
    let mut x = vec![0.0f32; n * 36];
    let mut y = vec![0.0f32; n * 3];
    for i in 0..n {
        let class = ((next() * 3.0) as usize).min(2);
        for p in 0..36 {
            let bright = (p % 6) / 2 == class;
            x[i * 36 + p] = next() * 0.5 + if bright { 0.5 } else { 0.0 };
        }
        y[i * 3 + class] = 1.0;
    }
    Ok((
        Tensor::from_vec(x, &[n, 6, 6, 1])?,
        Tensor::from_vec(y, &[n, 3])?,
    ))
}

fn cnn() -> Result<Sequential> {
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
    )?;
    Ok(m)
}

fn bn_dropout() -> Result<Sequential> {
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
    )?;
    Ok(m)
}

/// A kernel of 36 × 1900 ≥ 64 Ki values: lent to the sums whole.
fn wide() -> Result<Sequential> {
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
    )?;
    Ok(m)
}

fn weight_bits(m: &mut Sequential) -> Vec<u32> {
    m.get_weights()
        .iter()
        .flat_map(|(_, t)| t.data().iter().map(|v| v.to_bits()))
        .collect()
}

fn hash(bits: &[u32]) -> u64 {
    bits.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// What a rank does at the end of epoch 1 in the fault modes.
struct Fault {
    what: String,
    on_rank: usize,
    me: usize,
}

impl Callback for Fault {
    fn on_epoch_end(&mut self, logs: &EpochLogs, _m: &mut dyn TrainingModel) -> Result<()> {
        if logs.epoch != 1 || self.me != self.on_rank {
            return Ok(());
        }
        match self.what.as_str() {
            "panic" => panic!("rank {} panics on purpose", self.me),
            "error" => Err(Error::Distributed(format!(
                "rank {} fails on purpose",
                self.me
            ))),
            "kill" => {
                let pid = std::process::id().to_string();
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", &pid])
                    .status();
                std::thread::sleep(std::time::Duration::from_secs(60));
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

fn train(comm: &mut nn_mpi::Mpi) -> Result<()> {
    let (x, y) = data(70, 3)?;
    let size = comm.size();
    for make in [cnn as fn() -> Result<Sequential>, bn_dropout, wide] {
        for batch in [16, 2, 70] {
            let cfg = FitConfig::new().epochs(2).batch_size(batch).verbose(0);
            let mut m = make()?;
            m.fit_distributed(&x, &y, &cfg, comm, &mut [])?;
            let bits = weight_bits(&mut m);
            let all = comm.all_gather(hash(&bits))?;
            if all.iter().any(|&h| h != all[0]) {
                return Err(Error::Distributed(format!(
                    "weights differ between ranks after training (batch {batch}): {all:x?}"
                )));
            }
            let mut reference = make()?;
            reference.fit(&x, &y, &cfg.clone().micro_batches(size), &mut [])?;
            if weight_bits(&mut reference) != bits {
                return Err(Error::Distributed(format!(
                    "rank {}: weights differ from the micro-batch reference (batch {batch})",
                    comm.rank()
                )));
            }
        }
    }
    if comm.rank() == 0 {
        println!("ok {size} ranks");
    }
    Ok(())
}

fn fault(comm: &mut nn_mpi::Mpi, what: &str, on_rank: usize) -> Result<()> {
    let (x, y) = data(4000, 5)?;
    let mut m = cnn()?;
    let mut fault = Fault {
        what: what.into(),
        on_rank,
        me: comm.rank(),
    };
    let cfg = FitConfig::new().epochs(1000).batch_size(32).verbose(0);
    m.fit_distributed(&x, &y, &cfg, comm, &mut [&mut fault])?;
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    nn_mpi::run(|comm| match args.first().map(String::as_str) {
        Some("train") => train(comm),
        Some(what @ ("panic" | "error" | "kill")) => {
            let on = args.get(1).and_then(|r| r.parse().ok()).unwrap_or(1);
            fault(comm, what, on)
        }
        _ => Err(Error::Distributed(
            "usage: nn-mpi-check train | panic RANK | error RANK | kill RANK".into(),
        )),
    })
}
