//! 2-D convolution on NHWC tensors (Keras's `channels_last`), forward and backward, built on the
//! GEMM.
//!
//! Layouts: input `x` is `batch × in_h × in_w × in_c`, output `y` is `batch × out_h × out_w ×
//! out_c`, weights `w` are `kernel_h × kernel_w × in_c × out_c` (Keras's HWIO), i.e. a row-major
//! `patch × out_c` matrix with `patch = kernel_h·kernel_w·in_c`. Padding follows TensorFlow:
//! 'valid' uses no padding; 'same' gives `ceil(in / stride)` outputs and puts the odd padding
//! element at the bottom/right.
//!
//! # How
//! Output pixels are numbered across the batch (`(n·out_h + oy)·out_w + ox`); seen so, `y` is a
//! `pixels × out_c` matrix, `y = col·w` where row p of `col` is the patch of input under output
//! pixel p (im2col). With stride 1 on AVX2 and AVX-512 (see below for when) the forward pass
//! never forms `col`:
//! one tile over all the kernel rows' shifted views of the input (or of a padded copy), each
//! output pixel's sum in registers (modules `shifted` and `taps`). Elsewhere, with 8 or more
//! input channels it never stores `col` either: with stride 1 and at most 32 output channels
//! one GEMM per kernel row over the shifted views (module `shifted`), otherwise the GEMM packs
//! its blocks straight from the input (`Im2colPacker`). With fewer channels `col` is never
//! built whole: the work is cut into tasks of whole images (the
//! cut depends on the batch only, never on the thread count) and each task walks its pixels in
//! chunks whose `col` block fits in L2, right before the GEMM consumes it.
//! * forward: `y_chunk = act(col_chunk·w + bias)`, one fused GEMM per chunk; tasks in parallel.
//! * weights: `dw = Σ colᵀ·dy` — each task sums its chunks into its own partial, and the partials
//!   are added in task order, so the result is bit-identical for every thread count. With stride
//!   1 and 8 or more input channels, a task skips im2col: `kernel_h` GEMMs per band of rows over
//!   shifted views of a padded copy of its input (module `shifted`), or on AVX2 and AVX-512 the
//!   taps tiles over the same views, K in segments of one output row (module `taps`).
//! * input: `dcol = dy·wᵀ` per chunk, then col2im adds each patch row back into `dx`; a task owns
//!   its images' `dx`, so tasks run in parallel without sharing. With stride 1, 16 or more input
//!   and 8 or more output channels, on our own kernels (`shifted::applies_backward_input`: at
//!   most 64 input channels and rows wide enough for the padding without the taps tiles), the
//!   full convolution of `dy` with the flipped kernel instead: over shifted views of a padded
//!   copy of `dy`, no `dcol` and no scatter (modules `shifted` and `taps`).
//!
//! The taps tiles serve kernels of at most 16 rows, on our own kernels. A call of one image
//! shares each band's tiles among its threads (forward, input gradient: the same tiles, the
//! same bits); its weight gradient keeps the GEMM paths, whose products use the threads.
//!
//! For a single input channel (the first layer of an MNIST CNN, patch = 9), im2col writes 9 floats
//! per pixel for a GEMM with K = 9, whose tiles are mostly loads and stores of C; the forward pass
//! there computes the convolution directly instead (module `direct`).

use crate::activation::Activation;
use crate::error::{check_len, Result};
use crate::gemm::{gemm_fused, gemm_fused_packed_a, Bias, ExecOptions};
use crate::mat::{MatMut, MatRef};
use crate::scratch::{COL, CONV_GRAD, GROUP_OUT, PACKED_W, PARTIALS};
use crate::shared::SharedOut;

pub(crate) mod direct;
#[cfg(target_arch = "x86_64")]
mod direct3x3;
mod im2col;
pub(crate) mod pooled_grads;
mod shape;
mod shifted;
mod taps;

pub(crate) use im2col::Plan;
use im2col::{col2im_add, im2col_chunks, Im2colPacker, PixelWalk};
pub use shape::Conv2d;

pub use crate::window::{output_len, padding_before, Padding};

/// Forward pass: `y = act(conv(x, w) + bias)`, written over `y` (never read).
///
/// `bias` has `out_c` entries. The output pixels are computed in parallel over tasks of whole
/// images (see the module documentation); the result does not depend on the thread count.
pub fn conv2d_forward(
    opts: &ExecOptions,
    s: &Conv2d,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    act: Activation,
    y: &mut [f32],
) -> Result<()> {
    forward(opts, s, x, w, bias, act, y, true)
}

/// [`conv2d_forward`] always through an explicit im2col buffer + GEMM, never the direct kernel or
/// the implicit im2col packing: for the benchmarks and profiles that measure what those gain
/// (cargo feature `bench-hooks`).
#[cfg(feature = "bench-hooks")]
pub fn conv2d_forward_im2col(
    opts: &ExecOptions,
    s: &Conv2d,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    act: Activation,
    y: &mut [f32],
) -> Result<()> {
    forward(opts, s, x, w, bias, act, y, false)
}

/// What runs on each group of images right after it was convolved, while its output is in L2:
/// `(first image, its output)`.
type Then<'a> = &'a (dyn Fn(usize, &[f32]) + Sync);

/// Output floats per group of images a task convolves before handing them to a `Then` (a group
/// of whole images whose output stays in L2).
const GROUP_FLOATS: usize = 1 << 16;

#[allow(clippy::too_many_arguments)]
fn forward(
    opts: &ExecOptions,
    s: &Conv2d,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    act: Activation,
    y: &mut [f32],
    beyond_im2col: bool,
) -> Result<()> {
    check_forward_args(s, x, w, bias, Some(y.len()))?;
    forward_groups(opts, s, x, w, bias, act, Some(y), beyond_im2col, None)
}

/// Checks the forward arguments (the output's length when there is one).
pub(crate) fn check_forward_args(
    s: &Conv2d,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y_len: Option<usize>,
) -> Result<()> {
    s.validate()?;
    check_len("conv2d_forward", "input x", x.len(), s.input_len(), || {
        s.input_desc()
    })?;
    check_len(
        "conv2d_forward",
        "weights w",
        w.len(),
        s.weight_len(),
        || s.weight_desc(),
    )?;
    if let Some(len) = y_len {
        check_len("conv2d_forward", "output y", len, s.output_len(), || {
            s.output_desc()
        })?;
    }
    if let Some(b) = bias {
        check_len("conv2d_forward", "bias", b.len(), s.out_c, || {
            s.out_c.to_string()
        })?;
    }
    Ok(())
}

/// `f(packed)` with the direct kernels' weights and bias packed ([`direct::pack`]) into the
/// thread's scratch buffer.
fn with_direct_packed(s: &Conv2d, w: &[f32], bias: Option<&[f32]>, f: impl FnOnce(&[f32])) {
    PACKED_W.with(direct::packed_len(s), direct::packed_len(s), |packed| {
        direct::pack(s, w, bias, packed);
        f(packed)
    });
}

/// `y_pool` ← the 2×2, stride-2 'valid' max pooling of `act(conv(x, w) + bias)` (and, with
/// `argmax`, as long as `y_pool`, each maximum's offset as the pooling writes it), the
/// convolution's output never formed: where the one-channel 3×3 kernel applies on this path,
/// with a ReLU or no activation; `Ok(false)` (nothing done) otherwise. Each task's images are
/// convolved and pooled in registers, window by window; the bits of the convolution then the
/// pooling. The reference CNN's inference at batch 1000 on two Xeon VM threads (AVX-512),
/// convolved into a buffer in cache then pooled → pooled in registers: 108 k → 119 k images/s
/// (medians of 5 interleaved runs; the pooling pass had taken a tenth of the time). In training
/// (argmax kept; the convolution's output not, where the pooling took over the activation),
/// the reference CNN's first layer at batch 32, same VM, medians of 9 interleaved runs: 159 →
/// 83 µs a step on two threads, 292 → 141 on one; its epoch 0.96× (2.63 s, 5 runs).
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward_pooled_in_registers(
    opts: &ExecOptions,
    s: &Conv2d,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    act: Activation,
    y_pool: &mut [f32],
    argmax: Option<&mut [u32]>,
) -> Result<bool> {
    #[cfg(target_arch = "x86_64")]
    {
        let isa = crate::Isa::resolve(opts.isa)?;
        let backend = crate::Backend::resolve(opts.backend)?;
        let relu = match act {
            Activation::Relu => true,
            Activation::Identity => false,
            _ => return Ok(false),
        };
        if s.batch == 0 || !direct::applies(s, backend) || !direct3x3::applies(s, isa) {
            return Ok(false);
        }
        let pooled = (s.out_h() / 2) * (s.out_w() / 2) * s.out_c;
        let plan = Plan::new(s);
        let out = SharedOut::new(y_pool);
        let argmax = argmax.map(SharedOut::new);
        let ocp = direct::padded_channels(s);
        with_direct_packed(s, w, bias, |packed| {
            plan.run(opts, |t| {
                let images = plan.images(s, t);
                let own = images.start * pooled..images.end * pooled;
                // SAFETY: task t writes only its own images' pooled pixels and their argmax.
                let (y, a) = unsafe {
                    (
                        out.slice(own.clone()),
                        argmax.as_ref().map(|a| a.slice(own)),
                    )
                };
                // SAFETY: `resolve` checked that this CPU has `isa`, which `applies` accepts.
                unsafe { direct3x3::forward_pooled(isa, s, x, packed, ocp, images, y, a, relu) };
            });
        });
        Ok(true)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (opts, s, x, w, bias, act, y_pool, argmax);
        Ok(false)
    }
}

/// The forward pass over tasks of whole images, each task walking its images in groups: a
/// group is convolved into `y` (or, without `y`, into per-thread scratch) and then handed to
/// `then` while it is still in cache. Without `beyond_im2col`, only explicit im2col + GEMM.
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward_groups(
    opts: &ExecOptions,
    s: &Conv2d,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    act: Activation,
    y: Option<&mut [f32]>,
    beyond_im2col: bool,
    then: Option<Then<'_>>,
) -> Result<()> {
    if s.batch == 0 {
        return Ok(());
    }
    let isa = crate::Isa::resolve(opts.isa)?;
    let backend = crate::Backend::resolve(opts.backend)?;
    let plan = Plan::new(s);
    let inner = plan.inner_threading(opts);
    let (patch, oc) = (s.patch_len(), s.out_c);
    let image_out = s.out_pixels() * oc;
    let group = (GROUP_FLOATS / image_out.max(1)).max(1);
    let out = y.map(SharedOut::new);
    let direct = beyond_im2col && direct::applies(s, backend);
    let shifted = beyond_im2col && !direct && shifted::applies_forward(s, &inner, isa);
    let implicit = beyond_im2col && !direct && !shifted && Im2colPacker::applies(s, backend);
    let failed = std::sync::Mutex::new(None);
    // Convolves output pixels `pixels` into `y_part`.
    let conv = |packed: &[f32], pixels: std::ops::Range<usize>, y_part: &mut [f32]| {
        if direct {
            direct::forward(isa, s, x, packed, act, pixels, y_part);
            return;
        }
        if shifted {
            if let Err(e) = shifted::forward(&inner, s, x, w, bias, act, pixels, y_part) {
                *failed.lock().unwrap() = Some(e);
            }
            return;
        }
        if implicit {
            let rows = pixels.len();
            let packer = Im2colPacker {
                s,
                x,
                first: pixels.start,
            };
            let r = gemm_fused_packed_a(
                &inner,
                &packer,
                rows,
                patch,
                MatRef::row_major(w, patch, oc, oc),
                bias.map_or(Bias::None, Bias::PerColumn),
                act,
                MatMut::row_major(y_part, rows, oc, oc),
            );
            if let Err(e) = r {
                *failed.lock().unwrap() = Some(e);
            }
            return;
        }
        let r = im2col_chunks(&plan, s, x, pixels.clone(), |p0, rows, col| {
            let y_chunk = &mut y_part[(p0 - pixels.start) * oc..][..rows * oc];
            gemm_fused(
                &inner,
                1.0,
                MatRef::row_major(col, rows, patch, patch),
                MatRef::row_major(w, patch, oc, oc),
                0.0,
                bias.map_or(Bias::None, Bias::PerColumn),
                act,
                MatMut::row_major(y_chunk, rows, oc, oc),
            )
        });
        if let Err(e) = r {
            *failed.lock().unwrap() = Some(e);
        }
    };
    let task = |packed: &[f32], t: usize| {
        let images = plan.images(s, t);
        let (first, last) = (images.start, images.end);
        for g0 in (first..last).step_by(group) {
            let g1 = (g0 + group).min(last);
            let pixels = g0 * s.out_pixels()..g1 * s.out_pixels();
            let len = (g1 - g0) * image_out;
            match &out {
                Some(out) => {
                    // SAFETY: task t writes only its own images' output pixels.
                    let y_part = unsafe { out.slice(g0 * image_out..g0 * image_out + len) };
                    conv(packed, pixels, y_part);
                    if let Some(then) = then {
                        then(g0, y_part);
                    }
                }
                None => GROUP_OUT.with(len, len, |y_part| {
                    conv(packed, pixels, y_part);
                    if let Some(then) = then {
                        then(g0, y_part);
                    }
                }),
            }
        }
    };
    if direct {
        with_direct_packed(s, w, bias, |packed| plan.run(opts, |t| task(packed, t)));
    } else {
        plan.run(opts, |t| task(&[], t));
    }
    match failed.into_inner().unwrap() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Weight (and bias) gradients: `dw = Σ_pixels patchᵀ·dy` and `db = Σ_pixels dy`, written over
/// `dw` and `db`. `dy` is the gradient with respect to the convolution's output *before* its
/// activation (apply [`crate::activation::activation_backward`] first).
///
/// Partial sums are formed per task of whole images and added in task order: bit-identical
/// results for every thread count.
pub fn conv2d_backward_weights(
    opts: &ExecOptions,
    s: &Conv2d,
    x: &[f32],
    dy: &[f32],
    dw: &mut [f32],
    db: Option<&mut [f32]>,
) -> Result<()> {
    let what = "conv2d_backward_weights";
    check_weights_args(what, s, x, dw, db.as_deref())?;
    check_len(what, "output gradient dy", dy.len(), s.output_len(), || {
        s.output_desc()
    })?;
    let isa = crate::Isa::resolve(opts.isa)?;
    let backend = crate::Backend::resolve(opts.backend)?;
    let (patch, oc) = (s.patch_len(), s.out_c);
    let plan = Plan::new(s);
    let inner = plan.inner_threading(opts);
    let use_direct = direct::applies(s, backend);
    let use_shifted = !use_direct && shifted::applies(s);
    let layout = if use_shifted && shifted::weights_transposed(s) {
        PartialLayout::Transposed
    } else {
        PartialLayout::AsWeights
    };
    sum_task_partials(opts, s, &plan, layout, dw, db, |t, part_w, part_b| {
        let pixels = plan.pixels(s, t);
        if use_direct {
            let dy = &dy[pixels.start * oc..pixels.end * oc];
            direct::backward_weights(isa, s, x, dy, pixels, part_w, part_b);
            return Ok(());
        }
        if use_shifted {
            return shifted::backward_weights(&inner, s, x, dy, pixels, part_w, part_b);
        }
        // Bias: column sums of the task's rows of dy, in pixel order.
        part_b.fill(0.0);
        for row in dy[pixels.start * oc..pixels.end * oc].chunks_exact(oc) {
            for (d, &g) in part_b.iter_mut().zip(row) {
                *d += g;
            }
        }
        im2col_chunks(&plan, s, x, pixels.clone(), |p0, rows, col| {
            let beta = if p0 == pixels.start { 0.0 } else { 1.0 };
            crate::gemm::gemm_with(
                &inner,
                1.0,
                MatRef::row_major(col, rows, patch, patch).t(),
                MatRef::row_major(&dy[p0 * oc..(p0 + rows) * oc], rows, oc, oc),
                beta,
                MatMut::row_major(part_w, patch, oc, oc),
            )
        })
    })
}

/// The shape checks every weight-gradient entry point makes.
pub(crate) fn check_weights_args(
    what: &'static str,
    s: &Conv2d,
    x: &[f32],
    dw: &[f32],
    db: Option<&[f32]>,
) -> Result<()> {
    s.validate()?;
    check_len(what, "input x", x.len(), s.input_len(), || s.input_desc())?;
    check_len(what, "weight gradient dw", dw.len(), s.weight_len(), || {
        s.weight_desc()
    })?;
    if let Some(db) = db {
        check_len(what, "bias gradient db", db.len(), s.out_c, || {
            s.out_c.to_string()
        })?;
    }
    Ok(())
}

/// How the tasks of [`sum_task_partials`] lay out their partial weight gradients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PartialLayout {
    /// As `dw` (HWIO: `patch × out_c`).
    AsWeights,
    /// Transposed, `out_c × patch`: summed so, and turned once into `dw` (where each task had
    /// turned its own, the turns took an eighth of program F's weight pass: a strided read per
    /// element, 32 tasks of 4 608).
    Transposed,
}

/// Runs `task(t, dw_t, db_t)` for every task of `plan`, each into its own partial weight and bias
/// gradient (laid out as `layout` says), then sums the partials in task order into `dw` and
/// `db`: the same bits for every thread count. If tasks fail, one of their errors is
/// returned.
pub(crate) fn sum_task_partials(
    opts: &ExecOptions,
    s: &Conv2d,
    plan: &Plan,
    layout: PartialLayout,
    dw: &mut [f32],
    db: Option<&mut [f32]>,
    task: impl Fn(usize, &mut [f32], &mut [f32]) -> Result<()> + Sync + Send,
) -> Result<()> {
    if s.batch == 0 {
        dw.fill(0.0);
        if let Some(db) = db {
            db.fill(0.0);
        }
        return Ok(());
    }
    let wlen = s.weight_len();
    // Each task's partial: its weight gradient, then its bias gradient.
    let part_len = wlen + s.out_c;
    let failed = std::sync::Mutex::new(None);
    PARTIALS.with(plan.tasks * part_len, plan.tasks * part_len, |parts| {
        let out = SharedOut::new(parts);
        plan.run(opts, |t| {
            // SAFETY: task t writes only partial t.
            let part = unsafe { out.slice(t * part_len..(t + 1) * part_len) };
            let (part_w, part_b) = part.split_at_mut(wlen);
            if let Err(e) = task(t, part_w, part_b) {
                *failed.lock().unwrap() = Some(e);
            }
        });
        // Sums into the first partial, in task order.
        let (first, rest) = parts.split_at_mut(part_len);
        for part in rest.chunks_exact(part_len) {
            for (d, &p) in first.iter_mut().zip(part) {
                *d += p;
            }
        }
        match layout {
            PartialLayout::AsWeights => dw.copy_from_slice(&first[..wlen]),
            PartialLayout::Transposed => {
                let (patch, oc) = (s.patch_len(), s.out_c);
                for (j, dw_j) in dw.chunks_exact_mut(oc).enumerate() {
                    for (o, d) in dw_j.iter_mut().enumerate() {
                        *d = first[o * patch + j];
                    }
                }
            }
        }
        if let Some(db) = db {
            db.copy_from_slice(&first[wlen..]);
        }
    });
    match failed.into_inner().unwrap() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// The weight and bias gradients of a one-channel convolution (the direct kernels, `isa`
/// resolved) whose output gradient each task forms itself, in cache, where the weight pass reads
/// it: `form(images, dy)` writes the gradient of the task's `images` into `dy`. The tasks and
/// the sum of their partials of [`conv2d_backward_weights`]' direct path: the same bits. The
/// first error of `form` stops its task (`dw` and `db` are then unspecified).
pub(crate) fn direct_weights_of_formed(
    opts: &ExecOptions,
    s: &Conv2d,
    isa: crate::Isa,
    x: &[f32],
    (dw, db): (&mut [f32], Option<&mut [f32]>),
    form: impl Fn(std::ops::Range<usize>, &mut [f32]) -> Result<()> + Sync,
) -> Result<()> {
    let plan = Plan::new(s);
    sum_task_partials(
        opts,
        s,
        &plan,
        PartialLayout::AsWeights,
        dw,
        db,
        |t, dw_t, db_t| {
            let (images, pixels) = (plan.images(s, t), plan.pixels(s, t));
            let len = pixels.len() * s.out_c;
            CONV_GRAD.with(len, len, |dy| {
                form(images, dy)?;
                direct::backward_weights(isa, s, x, dy, pixels, dw_t, db_t);
                Ok(())
            })
        },
    )
}

/// Input gradient: `dx = col2im(dy·wᵀ)` (with stride 1, the same as the full convolution of
/// `dy` with the flipped kernel, which is how the stride-1 layers the module documentation
/// names compute it), written over `dx`. `dy` is the gradient with respect to the output before
/// the activation. Tasks own whole images of `dx` and run in parallel.
pub fn conv2d_backward_input(
    opts: &ExecOptions,
    s: &Conv2d,
    dy: &[f32],
    w: &[f32],
    dx: &mut [f32],
) -> Result<()> {
    s.validate()?;
    let what = "conv2d_backward_input";
    check_len(what, "output gradient dy", dy.len(), s.output_len(), || {
        s.output_desc()
    })?;
    check_len(what, "weights w", w.len(), s.weight_len(), || {
        s.weight_desc()
    })?;
    check_len(what, "input gradient dx", dx.len(), s.input_len(), || {
        s.input_desc()
    })?;
    if let Some(isa) = opts.isa {
        isa.check_available()?;
    }
    if s.batch == 0 {
        return Ok(());
    }
    let plan = Plan::new(s);
    let inner = plan.inner_threading(opts);
    let (patch, oc) = (s.patch_len(), s.out_c);
    let image_len = s.in_h * s.in_w * s.in_c;
    let out = SharedOut::new(dx);
    let failed = std::sync::Mutex::new(None);
    if shifted::applies_backward_input(s, &inner, crate::Isa::resolve(opts.isa)?) {
        let len = s.weight_len();
        PACKED_W.with(len, len, |wf| {
            shifted::flip_weights(s, w, wf);
            let wf = &*wf;
            plan.run(opts, |t| {
                let images = plan.images(s, t);
                // SAFETY: task t writes only its own images of dx.
                let dx_task =
                    unsafe { out.slice(images.start * image_len..images.end * image_len) };
                if let Err(e) = shifted::backward_input(&inner, s, dy, wf, images, dx_task) {
                    *failed.lock().unwrap() = Some(e);
                }
            });
        });
        return match failed.into_inner().unwrap() {
            Some(e) => Err(e),
            None => Ok(()),
        };
    }
    plan.run(opts, |t| {
        let pixels = plan.pixels(s, t);
        let first_image = plan.images(s, t).start;
        let images = pixels.len() / s.out_pixels().max(1);
        // SAFETY: task t writes only its own images of dx.
        let dx_task =
            unsafe { out.slice(first_image * image_len..(first_image + images) * image_len) };
        dx_task.fill(0.0);
        let rows_max = plan.chunk_rows.min(pixels.len());
        COL.with(rows_max * patch, rows_max * patch, |col| {
            for p0 in pixels.clone().step_by(plan.chunk_rows) {
                let p1 = (p0 + plan.chunk_rows).min(pixels.end);
                let rows = p1 - p0;
                let col = &mut col[..rows * patch];
                let r = crate::gemm::gemm_with(
                    &inner,
                    1.0,
                    MatRef::row_major(&dy[p0 * oc..p1 * oc], rows, oc, oc),
                    MatRef::row_major(w, patch, oc, oc).t(),
                    0.0,
                    MatMut::row_major(col, rows, patch, patch),
                );
                if let Err(e) = r {
                    *failed.lock().unwrap() = Some(e);
                    return;
                }
                col2im_add(s, col, p0..p1, dx_task, first_image);
            }
        });
    });
    match failed.into_inner().unwrap() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The in-register pooling takes the layers it is for on the paths that have its kernel
    /// (the integration tests check its bits, which the two-pass fallback would also pass).
    #[test]
    fn one_channel_3x3_layers_pool_in_registers_where_the_kernel_is() {
        let s = Conv2d::square(2, (28, 28, 1), 32, 3, Padding::Valid);
        let x = vec![0.5; s.input_len()];
        let w = vec![0.25; s.weight_len()];
        let mut y = vec![0.0; 2 * 13 * 13 * 32];
        for isa in crate::Isa::available() {
            let opts = ExecOptions::with_isa(isa);
            let pooled = forward_pooled_in_registers(
                &opts,
                &s,
                &x,
                &w,
                None,
                Activation::Relu,
                &mut y,
                None,
            );
            let has_kernel = cfg!(target_arch = "x86_64")
                && matches!(isa, crate::Isa::Avx512 | crate::Isa::Avx2);
            assert_eq!(pooled.unwrap(), has_kernel, "{isa}");
            // Training: the argmax too — on the integration tests' shapes, whose bits the
            // two-pass fallback would also give (partial lane groups, odd sizes, strides).
            for (batch, (h, w_), out_c, (sh, sw)) in [
                (2, (28, 28), 32, (1, 1)),
                (2, (29, 27), 17, (1, 1)),
                (1, (14, 17), 16, (3, 3)),
                (2, (12, 15), 33, (1, 2)),
            ] {
                let s = Conv2d {
                    stride_h: sh,
                    stride_w: sw,
                    ..Conv2d::square(batch, (h, w_, 1), out_c, 3, Padding::Valid)
                };
                let pooled = batch * (s.out_h() / 2) * (s.out_w() / 2) * out_c;
                let (x, w) = (vec![0.5; s.input_len()], vec![0.25; s.weight_len()]);
                let (mut y, mut argmax) = (vec![0.0; pooled], vec![0; pooled]);
                let relu = Activation::Relu;
                let taken = forward_pooled_in_registers(
                    &opts,
                    &s,
                    &x,
                    &w,
                    None,
                    relu,
                    &mut y,
                    Some(&mut argmax),
                );
                assert_eq!(taken.unwrap(), has_kernel, "{isa} {s:?}: with the argmax");
            }
            let tanh = forward_pooled_in_registers(
                &opts,
                &s,
                &x,
                &w,
                None,
                Activation::Tanh,
                &mut y,
                None,
            );
            assert!(!tanh.unwrap(), "{isa}: tanh is not pooled in registers");
        }
        let same = Conv2d::square(2, (28, 28, 1), 32, 3, Padding::Same);
        let mut y = vec![0.0; 2 * 14 * 14 * 32];
        let x = vec![0.5; same.input_len()];
        let opts = ExecOptions::default();
        assert!(!forward_pooled_in_registers(
            &opts,
            &same,
            &x,
            &w,
            None,
            Activation::Relu,
            &mut y,
            None
        )
        .unwrap());
    }
}
