//! Per-thread scratch buffers (packed GEMM panels, im2col blocks, partial sums), reused from call
//! to call so that a training step in steady state allocates nothing.
//!
//! Each buffer only grows. Which worker thread runs which task is rayon's choice, so a worker may
//! meet a product of a given size for the first time long after another worker did; each buffer
//! kind therefore records the largest size any thread has needed (its high-water mark), and
//! [`prepare_threads`] grows every thread of the pool to those marks in one go. `nn` calls it
//! whenever a mark has risen since its last call, after which steps of the same shapes allocate
//! nothing on any thread.

use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::LocalKey;

use aligned_vec::{AVec, ConstAlign};

pub(crate) type Buffer = AVec<f32, ConstAlign<64>>;

/// One kind of per-thread buffer and the largest length any thread has grown it to.
pub(crate) struct Scratch {
    key: &'static LocalKey<RefCell<Buffer>>,
    high_water: AtomicUsize,
}

/// Bumped whenever a high-water mark rises.
static GENERATION: AtomicUsize = AtomicUsize::new(0);

impl Scratch {
    const fn new(key: &'static LocalKey<RefCell<Buffer>>) -> Self {
        Scratch {
            key,
            high_water: AtomicUsize::new(0),
        }
    }

    /// Runs `f` on `len` floats of this thread's buffer, growing it (when it must grow) to at
    /// least `grow_to` ≥ `len` and to the mark other threads have reached. If the buffer is already
    /// in use on this thread (a worker that stole a second task while inside the first), or the
    /// thread's buffers are gone (a call from a thread-local destructor, or from an `atexit`
    /// handler after the main thread's were destroyed), a fresh one is used instead.
    pub(crate) fn with<R>(
        &'static self,
        len: usize,
        grow_to: usize,
        f: impl FnOnce(&mut [f32]) -> R,
    ) -> R {
        let mut f = Some(f);
        let kept = self.key.try_with(|cell| {
            let mut buf = cell.try_borrow_mut().ok()?;
            if buf.len() < len {
                let size = grow_to
                    .max(len)
                    .max(self.high_water.load(Ordering::Relaxed));
                buf.resize(size, 0.0);
                if self.high_water.fetch_max(size, Ordering::Relaxed) < size {
                    GENERATION.fetch_add(1, Ordering::Relaxed);
                }
            }
            let f = f.take().expect("called once");
            Some(f(&mut buf[..len]))
        });
        match kept {
            Ok(Some(r)) => r,
            _ => {
                let mut fresh = Buffer::from_iter(64, std::iter::repeat_n(0.0, len));
                (f.take().expect("not called yet"))(&mut fresh)
            }
        }
    }

    /// Grows this thread's buffer to the high-water mark.
    fn prepare(&self) {
        let mark = self.high_water.load(Ordering::Relaxed);
        let _ = self.key.try_with(|cell| {
            if let Ok(mut buf) = cell.try_borrow_mut() {
                if buf.len() < mark {
                    buf.resize(mark, 0.0);
                }
            }
        });
    }
}

thread_local! {
    static PACK_A_TLS: RefCell<Buffer> = RefCell::new(Buffer::new(64));
    static PACK_B_TLS: RefCell<Buffer> = RefCell::new(Buffer::new(64));
    static COL_TLS: RefCell<Buffer> = RefCell::new(Buffer::new(64));
    static PARTIALS_TLS: RefCell<Buffer> = RefCell::new(Buffer::new(64));
    static PACKED_W_TLS: RefCell<Buffer> = RefCell::new(Buffer::new(64));
    static GROUP_OUT_TLS: RefCell<Buffer> = RefCell::new(Buffer::new(64));
    static STAGE_TLS: RefCell<Buffer> = RefCell::new(Buffer::new(64));
    static CONV_GRAD_TLS: RefCell<Buffer> = RefCell::new(Buffer::new(64));
    static PRODUCT_TLS: RefCell<Buffer> = RefCell::new(Buffer::new(64));
    static PADDED_TLS: RefCell<Buffer> = RefCell::new(Buffer::new(64));
    static PRODUCT_OPERAND_TLS: RefCell<Buffer> = RefCell::new(Buffer::new(64));
    static STRIP_PARTIALS_TLS: RefCell<Buffer> = RefCell::new(Buffer::new(64));
    static TRANSPOSED_C_TLS: RefCell<Buffer> = RefCell::new(Buffer::new(64));
    static TRANSPOSED_A_TLS: RefCell<Buffer> = RefCell::new(Buffer::new(64));
    static ALIGNED_A_TLS: RefCell<Buffer> = RefCell::new(Buffer::new(64));
}

/// Packed micro-panels of A (GEMM driver).
pub(crate) static PACK_A: Scratch = Scratch::new(&PACK_A_TLS);
/// Packed micro-panels of B (GEMM driver).
pub(crate) static PACK_B: Scratch = Scratch::new(&PACK_B_TLS);
/// im2col / dcol blocks (convolution).
pub(crate) static COL: Scratch = Scratch::new(&COL_TLS);
/// Per-task partial weight gradients of a convolution call.
pub(crate) static PARTIALS: Scratch = Scratch::new(&PARTIALS_TLS);
/// The direct convolution path's padded copy of weights and bias.
pub(crate) static PACKED_W: Scratch = Scratch::new(&PACKED_W_TLS);
/// A group's convolution output when the caller does not keep it (fused inference).
pub(crate) static GROUP_OUT: Scratch = Scratch::new(&GROUP_OUT_TLS);
/// Dense copies of the operands the OpenBLAS path cannot hand to CBLAS in place.
#[cfg_attr(not(feature = "openblas"), allow(dead_code))]
pub(crate) static STAGE: Scratch = Scratch::new(&STAGE_TLS);
/// A convolution's output gradient between the pooling's backward pass and the weight gradient,
/// where the two cannot run as one.
pub(crate) static CONV_GRAD: Scratch = Scratch::new(&CONV_GRAD_TLS);

/// One block of rows of a gradient product (and of the input gradient) between the GEMM that
/// forms it and the optimizer step that consumes it (`optim::update_from_product`).
pub(crate) static PRODUCT: Scratch = Scratch::new(&PRODUCT_TLS);

/// An operand of `optim::update_from_product` rearranged once per call and read by every block
/// (the transposed output gradient).
pub(crate) static PRODUCT_OPERAND: Scratch = Scratch::new(&PRODUCT_OPERAND_TLS);

/// The partial products of `owned::dense_forward`'s strips, on the calling thread, before they
/// are summed.
pub(crate) static STRIP_PARTIALS: Scratch = Scratch::new(&STRIP_PARTIALS_TLS);

/// Zero-padded copies of a one-channel convolution's input images (the direct 3×3 kernel wants
/// every window inside its input).
pub(crate) static PADDED: Scratch = Scratch::new(&PADDED_TLS);

/// Columns of C formed as rows of Cᵀ, and laid out by C's rows again, by the products whose B
/// is stored by columns (`gemm::transposed_b`).
pub(crate) static TRANSPOSED_C: Scratch = Scratch::new(&TRANSPOSED_C_TLS);
/// The same products' A, transposed by each band for itself.
pub(crate) static TRANSPOSED_A: Scratch = Scratch::new(&TRANSPOSED_A_TLS);
/// A few rows of A copied to rows that start on cache lines, for the dot form
/// (`gemm::dot_form`).
pub(crate) static ALIGNED_A: Scratch = Scratch::new(&ALIGNED_A_TLS);

static ALL: [&Scratch; 15] = [
    &PACK_A,
    &PACK_B,
    &COL,
    &PARTIALS,
    &PACKED_W,
    &GROUP_OUT,
    &STAGE,
    &CONV_GRAD,
    &PRODUCT,
    &PRODUCT_OPERAND,
    &STRIP_PARTIALS,
    &PADDED,
    &TRANSPOSED_C,
    &TRANSPOSED_A,
    &ALIGNED_A,
];

/// A counter that changes whenever some thread's scratch buffer grew past every earlier size:
/// when it differs from the value at the last [`prepare_threads`], calling it again is useful.
pub fn scratch_generation() -> usize {
    GENERATION.load(Ordering::Relaxed)
}

/// Grows the scratch buffers of every thread a parallel call from here may use — the calling
/// thread and the library's helper threads, or, called from a rayon pool thread, every thread
/// of that pool — to the largest sizes any thread has needed so far, so that later calls with
/// the same shapes allocate nothing, whichever thread each task goes to. It allocates itself
/// (the growth); call it after warm-up, when [`scratch_generation`] has changed.
pub fn prepare_threads() {
    crate::team::on_every_thread(&|| ALL.iter().for_each(|s| s.prepare()));
}
