//! The reference CNN (program C: Conv2D(32, 3×3, relu) → MaxPooling2D(2×2) → Flatten →
//! Dense(128, relu) → Dense(10, softmax); Adam; sparse categorical cross-entropy), trained
//! data-parallel over MPI, validated on the test set after each epoch.
//!
//! ```text
//! cargo build --release -p nn-mpi --example cnn_distributed
//! RAYON_NUM_THREADS=1 mpirun -np 2 target/release/examples/cnn_distributed --batch 256
//! target/release/examples/cnn_distributed --alone --batch 256    # one process, plain fit
//! ```
//!
//! Options: `--dataset mnist|fashion` (default mnist), `--epochs N` (default 3), `--batch B`
//! (the global batch, default 256), `--seed S`, `--save PATH` (rank 0 saves the model),
//! `--alone` (no MPI: `fit` in this one process, with all its threads), `--json` (rank 0
//! prints one line of measurements), `--anatomy` (rank 0 prints where its time went).

use std::process::ExitCode;

use nn::prelude::*;

struct Options {
    dataset: String,
    epochs: usize,
    batch: usize,
    seed: u64,
    save: Option<String>,
    alone: bool,
    json: bool,
    anatomy: bool,
}

fn options() -> Result<Options, String> {
    let mut o = Options {
        dataset: "mnist".into(),
        epochs: 3,
        batch: 256,
        seed: 42,
        save: None,
        alone: false,
        json: false,
        anatomy: false,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().cloned().ok_or(format!("{a} needs a value"));
        let number = |v: String| v.parse::<u64>().map_err(|_| format!("{a} {v:?}: a number"));
        match a.as_str() {
            "--dataset" => o.dataset = value()?,
            "--epochs" => o.epochs = number(value()?)? as usize,
            "--batch" => o.batch = number(value()?)? as usize,
            "--seed" => o.seed = number(value()?)?,
            "--save" => o.save = Some(value()?),
            "--alone" => o.alone = true,
            "--json" => o.json = true,
            "--anatomy" => o.anatomy = true,
            other => return Err(format!("unknown option {other}")),
        }
    }
    Ok(o)
}

type Data = ((Tensor, Tensor), (Tensor, Tensor));

fn load(o: &Options) -> nn::Result<Data> {
    let ((x, y), (xt, yt)) = match o.dataset.as_str() {
        "fashion" => nn::datasets::fashion_mnist::load_data()?,
        _ => nn::datasets::mnist::load_data()?,
    };
    Ok((
        (x.to_tensor()?, Tensor::from_labels(&y)),
        (xt.to_tensor()?, Tensor::from_labels(&yt)),
    ))
}

fn model(seed: u64) -> nn::Result<Sequential> {
    let mut m = Sequential::new()
        .input_shape(&[28, 28, 1])
        .seed(seed)
        .add(Conv2D::new(32, (3, 3), Act::Relu))
        .add(MaxPooling2D::new((2, 2)))
        .add(Flatten::new())
        .add(Dense::new(128, Act::Relu))
        .add(Dense::new(10, Act::Softmax));
    m.compile(
        Optimizer::adam(),
        Loss::sparse_categorical_crossentropy(),
        &[Metric::Accuracy],
    )?;
    Ok(m)
}

fn median(h: &History) -> f64 {
    let mut v: Vec<f64> = h.epochs.iter().map(|e| e.seconds).collect();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Trains with `comm` (None: plain `fit`); returns the history and the test evaluation.
/// What a run measured besides the history.
struct Run {
    history: History,
    test: Evaluation,
    ranks: usize,
    /// Bytes of one step's gradients (the trainable weights in f32).
    gradient_bytes: u64,
    steps_per_epoch: usize,
}

fn train(o: &Options, data: &Data, comm: Option<&mut nn_mpi::Mpi>) -> nn::Result<Run> {
    let ((x, y), (xt, yt)) = data;
    let rank = comm.as_ref().map_or(0, |c| c.rank());
    let mut m = model(o.seed)?;
    let cfg = FitConfig::new()
        .epochs(o.epochs)
        .batch_size(o.batch)
        .validation_data(xt, yt)
        .verbose(if o.json || rank != 0 { 0 } else { 2 })
        .anatomy(o.anatomy);
    let (history, ranks) = match comm {
        Some(c) => (m.fit_distributed(x, y, &cfg, c, &mut [])?, c.size()),
        None => (m.fit(x, y, &cfg, &mut [])?, 1),
    };
    let test = m.evaluate(xt, yt, 256)?;
    if let (Some(path), 0) = (&o.save, rank) {
        m.save(path)?;
    }
    let gradient_bytes = 4 * m.training_cost()?.trainable_weights;
    Ok(Run {
        history,
        test,
        ranks,
        gradient_bytes,
        steps_per_epoch: x.samples().div_ceil(o.batch.max(1)),
    })
}

fn report(o: &Options, run: &Run, sums: Option<nn_mpi::SumStats>) {
    let (h, test, ranks) = (&run.history, &run.test, run.ranks);
    let epochs = h.epochs.len().max(1) as f64;
    if let Some(a) = &h.anatomy {
        for p in &a.parts {
            eprintln!(
                "{:>9} {:<40} {:8.3} s/epoch",
                p.pass.name(),
                p.name,
                p.seconds / epochs
            );
        }
    }
    let (busy, waited, hidden, count) = sums.map_or((0.0, 0.0, 1.0, 0), |s| {
        (
            s.busy.as_secs_f64() / epochs,
            s.waited.as_secs_f64() / epochs,
            s.hidden(),
            s.sums,
        )
    });
    let accuracy = test.accuracy.unwrap_or(0.0);
    if o.json {
        println!(
            "{{\"ranks\": {ranks}, \"threads_per_rank\": {}, \"batch\": {}, \"epochs\": {}, \
             \"epoch_s_median\": {:.6}, \"test_accuracy\": {accuracy:.6}, \"test_loss\": {:.6}, \
             \"sums\": {count}, \"sum_s_per_epoch\": {busy:.6}, \"waited_s_per_epoch\": {waited:.6}, \
             \"hidden_fraction\": {hidden:.4}, \"gradient_bytes\": {}, \"steps_per_epoch\": {}}}",
            rayon::current_num_threads(),
            o.batch,
            h.epochs.len(),
            median(h),
            test.loss,
            run.gradient_bytes,
            run.steps_per_epoch,
        );
    } else {
        println!(
            "{ranks} rank(s), global batch {}: median {:.2} s/epoch, test accuracy {accuracy:.4}; \
             sums {busy:.3} s/epoch, {waited:.3} s of it waited for ({:.0} % hidden)",
            o.batch,
            median(h),
            hidden * 100.0
        );
    }
}

fn main() -> ExitCode {
    let o = match options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if o.alone {
        let run = load(&o).and_then(|data| train(&o, &data, None));
        return match run {
            Ok(run) => {
                report(&o, &run, None);
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        };
    }
    nn_mpi::run(|comm| {
        let data = load(&o)?;
        let run = train(&o, &data, Some(&mut *comm))?;
        if comm.rank() == 0 {
            report(&o, &run, Some(comm.sum_stats()));
        }
        Ok(())
    })
}
