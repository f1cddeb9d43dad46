//! A training step in steady state allocates nothing: a counting global allocator around twenty
//! `train_on_batch` steps after warm-up, for the reference MLP and CNN, on 1 and 2 threads, on
//! every instruction-set path (each path in a child process, since `KERNELS_ISA` is read once).
//!
//! Warm-up lasts until ten steps in a row have allocated nothing (the first steps size every
//! buffer and the optimizer state, and `kernels::prepare_threads` grows every worker's scratch
//! buffers to the largest size any worker needed, so it no longer matters which thread a task
//! goes to). A step that allocates every time never gets through warm-up and fails.
//!
//! The steps run on rayon pools of 1 and 2 threads (the kernels then use the pool's workers)
//! and on the test's own thread, whose parallel calls go to the kernels' helper threads. Only
//! the threads that run the step are counted — the pool's workers, or the calling thread and
//! the helpers — so a thread of some other library starting up at that moment cannot fail the
//! test. The first
//! allocations counted are recorded (size and alignment) for the failure message.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use nn::prelude::*;

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);
/// Size and alignment of the first few allocations counted since the last reset.
static SEEN: [(AtomicUsize, AtomicUsize); 8] =
    [const { (AtomicUsize::new(0), AtomicUsize::new(0)) }; 8];

thread_local! {
    /// Set on the workers of the pool under test (a const initialiser: reading it never
    /// allocates, so the allocator may).
    static STEP_THREAD: Cell<bool> = const { Cell::new(false) };
}

fn count(layout: Layout) {
    if COUNTING.load(Ordering::Relaxed) && STEP_THREAD.with(|t| t.get()) {
        let i = ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        if let Some((size, align)) = SEEN.get(i) {
            size.store(layout.size(), Ordering::Relaxed);
            align.store(layout.align(), Ordering::Relaxed);
        }
    }
}

// SAFETY: defers to the system allocator; only counts calls while `COUNTING` is set.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(layout);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The allocations counted in the measured steps: their number, each step's count, and the
/// (size, align) of the first ones.
struct Counted {
    total: usize,
    per_step: Vec<usize>,
    first: Vec<(usize, usize)>,
}

/// Where the steps run: on a rayon pool of this many threads (the kernels then use its
/// workers), or on the calling thread with the kernels' own helper threads (`None`).
fn steps_allocate(
    mut model: Sequential,
    optimizer: Optimizer,
    input: usize,
    threads: Option<usize>,
) -> Counted {
    let n = 32;
    let x: Vec<f32> = (0..n * input)
        .map(|i| ((i * 37) % 101) as f32 / 101.0)
        .collect();
    let y: Vec<f32> = (0..n).map(|i| (i % 10) as f32).collect();
    model
        .compile(
            optimizer,
            Loss::sparse_categorical_crossentropy(),
            &[Metric::Accuracy],
        )
        .unwrap();
    let flag = || STEP_THREAD.with(|t| t.set(true));
    let pool = threads.map(|t| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(t)
            .build()
            .unwrap()
    });
    match &pool {
        Some(pool) => drop(pool.broadcast(|_| flag())),
        None => kernels::on_every_thread(&flag),
    }
    let counted_step = |model: &mut Sequential| {
        ALLOCATIONS.store(0, Ordering::SeqCst);
        COUNTING.store(true, Ordering::SeqCst);
        model.train_on_batch(&x, &y, n).unwrap();
        COUNTING.store(false, Ordering::SeqCst);
        ALLOCATIONS.load(Ordering::SeqCst)
    };
    let mut measure = || {
        let (mut quiet, mut steps) = (0, 0);
        while quiet < 10 {
            quiet = if counted_step(&mut model) == 0 {
                quiet + 1
            } else {
                0
            };
            steps += 1;
            assert!(steps < 300, "still allocating after {steps} steps");
        }
        let mut per_step = Vec::with_capacity(20);
        let mut first = Vec::with_capacity(SEEN.len());
        for _ in 0..20 {
            let c = counted_step(&mut model);
            if c > 0 && first.is_empty() {
                first.extend(
                    SEEN.iter()
                        .take(c)
                        .map(|(s, a)| (s.load(Ordering::SeqCst), a.load(Ordering::SeqCst))),
                );
            }
            per_step.push(c);
        }
        (per_step, first)
    };
    let (per_step, first) = match &pool {
        Some(pool) => pool.install(measure),
        None => measure(),
    };
    // A dropped pool's workers exit later, on their own, and free their thread-locals then (one
    // of rayon's allocates as it goes): with the flag still set, a worker of this pool exiting
    // while a later call counts was counted as that call's step allocating.
    if let Some(pool) = &pool {
        drop(pool.broadcast(|_| STEP_THREAD.with(|t| t.set(false))));
    }
    Counted {
        total: per_step.iter().sum(),
        per_step,
        first,
    }
}

fn check(model: Sequential, optimizer: Optimizer, what: &str, threads: Option<usize>) {
    let c = steps_allocate(model, optimizer, 784, threads);
    let on = threads.map_or("the kernels' helper threads".into(), |t| {
        format!("{t} thread(s)")
    });
    assert_eq!(
        c.total,
        0,
        "{what} on {on}, path {}: allocations per step {:?}, the first (size, align) {:?}",
        kernels::Isa::active().map(|i| i.name()).unwrap_or("?"),
        c.per_step,
        c.first
    );
}

fn mlp() -> Sequential {
    Sequential::new()
        .input_shape(&[784])
        .add(Dense::new(128, Act::Relu))
        .add(Dropout::new(0.2))
        .add(Dense::new(10, Act::Softmax))
}

fn cnn() -> Sequential {
    Sequential::new()
        .input_shape(&[28, 28, 1])
        .add(Conv2D::new(32, (3, 3), Act::Relu))
        .add(MaxPooling2D::new((2, 2)))
        .add(Flatten::new())
        .add(Dense::new(128, Act::Relu))
        .add(Dense::new(10, Act::Softmax))
}

/// A CNN with BatchNormalization: with max pooling, program F (each normalisation, its ReLU and
/// the pooling after it run as one pass each way); with average pooling after the first
/// normalisation and global average pooling after the second, the paths F leaves alone.
fn cnn_bn(pool: Pooling) -> Sequential {
    let m = Sequential::new()
        .input_shape(&[28, 28, 1])
        .add(Conv2D::new(16, (3, 3), Act::Linear))
        .add(BatchNormalization::new())
        .add(Activation::new(Act::Relu));
    let m = match pool {
        Pooling::Average => m.add(AveragePooling2D::new((2, 2))),
        Pooling::Max => m.add(MaxPooling2D::new((2, 2))),
    };
    let m = m
        .add(Conv2D::new(32, (3, 3), Act::Linear))
        .add(BatchNormalization::new())
        .add(Activation::new(Act::Relu));
    match pool {
        Pooling::Average => m.add(GlobalAveragePooling2D::new()),
        Pooling::Max => m.add(MaxPooling2D::new((2, 2))).add(Flatten::new()),
    }
    .add(Dense::new(10, Act::Softmax))
}

/// Program F's optimizer: adam, its rate on a cosine decay.
fn adam_cosine() -> Optimizer {
    Optimizer::adam().with_schedule(LearningRateSchedule::cosine_decay(1e-3, 4690))
}

/// The pooling after each normalisation of [`cnn_bn`].
enum Pooling {
    Average,
    Max,
}

/// The reference models on this process's path (`KERNELS_ISA`, or the best one).
#[test]
fn training_steps_do_not_allocate() {
    for threads in [Some(1), Some(2), None] {
        check(mlp(), Optimizer::adam(), "MLP", threads);
        check(cnn(), Optimizer::adam(), "CNN", threads);
        check(
            cnn_bn(Pooling::Average),
            Optimizer::adam(),
            "CNN with BatchNormalization and average pooling",
            threads,
        );
        check(
            cnn_bn(Pooling::Max),
            adam_cosine(),
            "program F (BatchNormalization, max pooling, a cosine decay)",
            threads,
        );
    }
}

/// The same on every other path this machine has, each in a child process of this binary.
#[test]
fn training_steps_do_not_allocate_on_any_path() {
    if std::env::var_os("KERNELS_ISA").is_some() {
        return; // a child: the test above is its work
    }
    let best = kernels::Isa::active().unwrap();
    for isa in kernels::Isa::available().into_iter().filter(|&i| i != best) {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "training_steps_do_not_allocate",
                "--test-threads=1",
            ])
            .env("KERNELS_ISA", isa.name())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "path {isa}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
