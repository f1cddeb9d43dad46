//! A training step in steady state allocates nothing: a counting global allocator around twenty
//! `train_on_batch` steps after warm-up, for the reference MLP and CNN, on 1 and 2 threads.
//!
//! Warm-up lasts until ten steps in a row have allocated nothing (the first steps size every
//! buffer and the optimizer state, and `kernels::prepare_threads` grows every worker's scratch
//! buffers to the largest size any worker needed, so it no longer matters which worker rayon
//! hands a task to). A step that allocates every time never gets through warm-up and fails.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use nn::prelude::*;

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: defers to the system allocator; only counts calls while `COUNTING` is set.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn steps_allocate(mut model: Sequential, input: usize, threads: usize) -> usize {
    let n = 32;
    let x: Vec<f32> = (0..n * input)
        .map(|i| ((i * 37) % 101) as f32 / 101.0)
        .collect();
    let y: Vec<f32> = (0..n).map(|i| (i % 10) as f32).collect();
    model
        .compile(
            Optimizer::adam(),
            Loss::sparse_categorical_crossentropy(),
            &[Metric::Accuracy],
        )
        .unwrap();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    let counted_step = |model: &mut Sequential| {
        ALLOCATIONS.store(0, Ordering::SeqCst);
        COUNTING.store(true, Ordering::SeqCst);
        model.train_on_batch(&x, &y, n).unwrap();
        COUNTING.store(false, Ordering::SeqCst);
        ALLOCATIONS.load(Ordering::SeqCst)
    };
    pool.install(|| {
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
        (0..20).map(|_| counted_step(&mut model)).sum::<usize>()
    })
}

#[test]
fn training_steps_do_not_allocate() {
    for threads in [1, 2] {
        let mlp = Sequential::new()
            .input_shape(&[784])
            .add(Dense::new(128, Act::Relu))
            .add(Dropout::new(0.2))
            .add(Dense::new(10, Act::Softmax));
        assert_eq!(
            steps_allocate(mlp, 784, threads),
            0,
            "MLP on {threads} thread(s)"
        );
        let cnn = Sequential::new()
            .input_shape(&[28, 28, 1])
            .add(Conv2D::new(32, (3, 3), Act::Relu))
            .add(MaxPooling2D::new((2, 2)))
            .add(Flatten::new())
            .add(Dense::new(128, Act::Relu))
            .add(Dense::new(10, Act::Softmax));
        assert_eq!(
            steps_allocate(cnn, 784, threads),
            0,
            "CNN on {threads} thread(s)"
        );
    }
}
