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
//! pixel p (im2col). With 8 or more input channels the forward pass never stores `col` at all:
//! the GEMM packs its blocks straight from the input (`Im2colPacker`). Otherwise `col` is
//! never built whole: the work is cut into tasks of whole images (the
//! cut depends on the batch only, never on the thread count) and each task walks its pixels in
//! chunks whose `col` block fits in L2, right before the GEMM consumes it.
//! * forward: `y_chunk = act(col_chunk·w + bias)`, one fused GEMM per chunk; tasks in parallel.
//! * weights: `dw = Σ colᵀ·dy` — each task sums its chunks into its own partial, and the partials
//!   are added in task order, so the result is bit-identical for every thread count. With stride
//!   1 and 8 or more input channels, a task skips im2col: `kernel_h` GEMMs per band of rows over
//!   shifted views of a padded copy of its input (module `shifted`).
//! * input: `dcol = dy·wᵀ` per chunk, then col2im adds each patch row back into `dx`; a task owns
//!   its images' `dx`, so tasks run in parallel without sharing.
//!
//! For a single input channel (the first layer of an MNIST CNN, patch = 9), im2col writes 9 floats
//! per pixel for a GEMM with K = 9, whose tiles are mostly loads and stores of C; the forward pass
//! there computes the convolution directly instead (module `direct`).

use rayon::prelude::*;

use crate::activation::Activation;
use crate::error::{check_len, Error, Result};
use crate::gemm::pack::pack_lines;
use crate::gemm::problem::PackA;
use crate::gemm::{gemm_fused, gemm_fused_packed_a, Bias, GemmOptions, Threading};
use crate::mat::{MatMut, MatRef};
use crate::pool::Pool2d;
use crate::scratch::{COL, CONV_GRAD, GROUP_OUT, PACKED_W, PARTIALS};
use crate::shared::SharedOut;

#[cfg(target_arch = "x86_64")]
mod direct3x3;
mod shifted;

pub use crate::window::{output_len, padding_before, Padding};

/// The shape of one 2-D convolution: everything the kernels need besides the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Conv2d {
    pub batch: usize,
    pub in_h: usize,
    pub in_w: usize,
    pub in_c: usize,
    pub out_c: usize,
    pub kernel_h: usize,
    pub kernel_w: usize,
    pub stride_h: usize,
    pub stride_w: usize,
    pub padding: Padding,
}

impl Conv2d {
    /// A convolution with a `k × k` kernel, stride 1.
    pub fn square(
        batch: usize,
        (in_h, in_w, in_c): (usize, usize, usize),
        out_c: usize,
        k: usize,
        padding: Padding,
    ) -> Self {
        Conv2d {
            batch,
            in_h,
            in_w,
            in_c,
            out_c,
            kernel_h: k,
            kernel_w: k,
            stride_h: 1,
            stride_w: 1,
            padding,
        }
    }

    pub fn out_h(&self) -> usize {
        output_len(self.in_h, self.kernel_h, self.stride_h, self.padding)
    }
    pub fn out_w(&self) -> usize {
        output_len(self.in_w, self.kernel_w, self.stride_w, self.padding)
    }
    fn pad_top(&self) -> usize {
        padding_before(self.in_h, self.kernel_h, self.stride_h, self.padding)
    }
    fn pad_left(&self) -> usize {
        padding_before(self.in_w, self.kernel_w, self.stride_w, self.padding)
    }
    /// `kernel_h · kernel_w · in_c`: one row of im2col, one column of the weight matrix.
    pub fn patch_len(&self) -> usize {
        self.kernel_h * self.kernel_w * self.in_c
    }
    /// Output positions per image.
    pub fn out_pixels(&self) -> usize {
        self.out_h() * self.out_w()
    }
    pub fn input_len(&self) -> usize {
        self.batch * self.in_h * self.in_w * self.in_c
    }
    pub fn output_len(&self) -> usize {
        self.batch * self.out_pixels() * self.out_c
    }
    pub fn weight_len(&self) -> usize {
        self.patch_len() * self.out_c
    }
    /// Floating-point operations of the forward pass (each backward pass costs the same).
    pub fn flops(&self) -> f64 {
        2.0 * (self.batch * self.out_pixels()) as f64 * self.patch_len() as f64 * self.out_c as f64
    }

    /// Checks that the shape is meaningful and that its sizes fit in memory arithmetic.
    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("in_h", self.in_h),
            ("in_w", self.in_w),
            ("in_c", self.in_c),
            ("out_c", self.out_c),
            ("kernel_h", self.kernel_h),
            ("kernel_w", self.kernel_w),
            ("stride_h", self.stride_h),
            ("stride_w", self.stride_w),
        ];
        for (name, v) in positive {
            if v == 0 {
                return Err(Error::InvalidArgument {
                    name,
                    value: "0".into(),
                    reason: "convolution dimensions and strides must be at least 1".into(),
                });
            }
        }
        if self.padding == Padding::Valid
            && (self.kernel_h > self.in_h || self.kernel_w > self.in_w)
        {
            return Err(Error::ShapeMismatch {
                what: "conv2d",
                detail: format!(
                    "a {}×{} kernel does not fit a {}×{} input with 'valid' padding",
                    self.kernel_h, self.kernel_w, self.in_h, self.in_w
                ),
            });
        }
        let sizes = [
            [self.batch, self.in_h, self.in_w, self.in_c],
            [self.batch, self.out_h(), self.out_w(), self.out_c],
            [self.kernel_h, self.kernel_w, self.in_c, self.out_c],
        ];
        for dims in sizes {
            if dims
                .iter()
                .try_fold(1usize, |acc, &d| acc.checked_mul(d))
                .is_none_or(|n| n > isize::MAX as usize / 4)
            {
                return Err(Error::InvalidArgument {
                    name: "conv2d shape",
                    value: format!("{dims:?}"),
                    reason: "the tensor size overflows".into(),
                });
            }
        }
        Ok(())
    }

    /// "batch×in_h×in_w×in_c" for messages.
    fn input_desc(&self) -> String {
        format!("{}×{}×{}×{}", self.batch, self.in_h, self.in_w, self.in_c)
    }
    fn output_desc(&self) -> String {
        format!(
            "{}×{}×{}×{}",
            self.batch,
            self.out_h(),
            self.out_w(),
            self.out_c
        )
    }
    fn weight_desc(&self) -> String {
        format!(
            "{}×{}×{}×{}",
            self.kernel_h, self.kernel_w, self.in_c, self.out_c
        )
    }
}

/// im2col blocks are kept to about this many floats (1 MiB: they stay in L2 until the GEMM reads
/// them).
const CHUNK_FLOATS: usize = 1 << 18;
/// The batch is cut into at most this many tasks of whole images (a constant, not the thread
/// count, so that the weight gradient's partial sums are the same on any machine).
const MAX_TASKS: usize = 32;

/// How a call's work is cut: tasks of `images_per_task` whole images, each walked in chunks of
/// at most `chunk_rows` output pixels.
#[derive(Debug, Clone, Copy)]
struct Plan {
    tasks: usize,
    images_per_task: usize,
    chunk_rows: usize,
}

impl Plan {
    fn new(s: &Conv2d) -> Self {
        let tasks = s.batch.clamp(1, MAX_TASKS);
        let images_per_task = s.batch.div_ceil(tasks);
        Plan {
            tasks: s.batch.div_ceil(images_per_task.max(1)),
            images_per_task,
            chunk_rows: (CHUNK_FLOATS / s.patch_len()).max(1),
        }
    }

    /// Output-pixel range (global indices) of task `t`.
    fn pixels(&self, s: &Conv2d, t: usize) -> std::ops::Range<usize> {
        let first = t * self.images_per_task;
        let last = (first + self.images_per_task).min(s.batch);
        first * s.out_pixels()..last * s.out_pixels()
    }

    /// The GEMM threading inside a task: the pool's threads only when there is a single task.
    fn inner_threading(&self, opts: &GemmOptions) -> GemmOptions {
        GemmOptions {
            threading: if self.tasks == 1 {
                opts.threading
            } else {
                Threading::Single
            },
            ..*opts
        }
    }

    /// Runs `f(task)` for every task: in parallel unless the caller asked for one thread.
    fn run(&self, opts: &GemmOptions, f: impl Fn(usize) + Sync + Send) {
        if self.tasks > 1 && crate::process::parallel(opts.threading) {
            (0..self.tasks).into_par_iter().for_each(f);
        } else {
            (0..self.tasks).for_each(f);
        }
    }
}

/// Output pixels `(n, oy, ox)` in order from a global index, without a division per pixel.
struct PixelWalk {
    n: usize,
    oy: usize,
    ox: usize,
    oh: usize,
    ow: usize,
}

impl PixelWalk {
    fn new(s: &Conv2d, p: usize) -> Self {
        let (oh, ow) = (s.out_h(), s.out_w());
        let rest = p % (oh * ow);
        PixelWalk {
            n: p / (oh * ow),
            oy: rest / ow,
            ox: rest % ow,
            oh,
            ow,
        }
    }

    fn advance(&mut self) {
        self.ox += 1;
        if self.ox == self.ow {
            self.ox = 0;
            self.oy += 1;
            if self.oy == self.oh {
                self.oy = 0;
                self.n += 1;
            }
        }
    }
}

/// `dst ← src` for the short runs of im2col (a kernel row of a few channels): lengths up to 8
/// are constant-size moves; `copy_from_slice` of a variable few floats is a memcpy call, which
/// measured as a fifth of the reference CNN layer's im2col time.
#[inline(always)]
fn copy_short(dst: &mut [f32], src: &[f32]) {
    macro_rules! fixed {
        ($($n:literal)*) => {
            match src.len() {
                $($n => dst[..$n].copy_from_slice(&src[..$n]),)*
                _ => dst.copy_from_slice(src),
            }
        };
    }
    fixed!(1 2 3 4 5 6 7 8)
}

/// Writes the im2col rows of output pixels `pixels` (global indices) into `col`
/// (`pixels.len() × patch`), zeros where the window hangs over the padding.
fn im2col(s: &Conv2d, x: &[f32], pixels: std::ops::Range<usize>, col: &mut [f32]) {
    let (pt, pl) = (s.pad_top() as isize, s.pad_left() as isize);
    let (kw, c) = (s.kernel_w, s.in_c);
    let row_len = kw * c;
    let image_len = s.in_h * s.in_w * c;
    let mut at = PixelWalk::new(s, pixels.start);
    for row in col.chunks_exact_mut(s.patch_len()).take(pixels.len()) {
        let image = &x[at.n * image_len..][..image_len];
        // Columns of the window inside the input: kx in kx0..kx1.
        let x_first = (at.ox * s.stride_w) as isize - pl;
        let kx0 = (-x_first).clamp(0, kw as isize) as usize;
        let kx1 = (s.in_w as isize - x_first).clamp(0, kw as isize) as usize;
        for (ky, dst) in row.chunks_exact_mut(row_len).enumerate() {
            let iy = (at.oy * s.stride_h + ky) as isize - pt;
            if iy < 0 || iy >= s.in_h as isize || kx0 >= kx1 {
                dst.fill(0.0);
                continue;
            }
            let ix0 = (x_first + kx0 as isize) as usize;
            let src = &image[(iy as usize * s.in_w + ix0) * c..][..(kx1 - kx0) * c];
            if kx0 == 0 && kx1 == kw {
                copy_short(dst, src);
            } else {
                dst[..kx0 * c].fill(0.0);
                copy_short(&mut dst[kx0 * c..kx1 * c], src);
                dst[kx1 * c..].fill(0.0);
            }
        }
        at.advance();
    }
}

/// The im2col matrix of the output pixels from `first` on (global indices), never stored: the
/// GEMM's A blocks are packed straight from the input. Row r is the patch under pixel
/// `first + r`; column p is (ky, kx, c), c fastest, so one kernel position's `in_c` columns are
/// one run of the input, a line [`pack_lines`] lays across a micro-panel. This saves im2col's
/// copy of every patch (a tenth of a 3×3, 64-channel layer's forward pass); explicit im2col
/// remains for few input channels, whose runs are too short to transpose well.
struct Im2colPacker<'a> {
    s: &'a Conv2d,
    x: &'a [f32],
    first: usize,
}

/// The tallest micro-panel any registered tile has, with room to spare.
const MAX_MR: usize = 32;

impl Im2colPacker<'_> {
    /// Whether the forward pass of `s` packs its A this way.
    fn applies(s: &Conv2d, isa: crate::Isa) -> bool {
        s.in_c >= 8 && isa != crate::Isa::OpenBlas
    }
}

impl PackA for Im2colPacker<'_> {
    fn pack(&self, dst: &mut [f32], i0: usize, p0: usize, mb: usize, kb: usize, mr: usize) {
        let s = self.s;
        assert!(mr <= MAX_MR, "micro-panels of {mr} rows");
        let c = s.in_c;
        let (pt, pl) = (s.pad_top() as isize, s.pad_left() as isize);
        let (in_h, in_w) = (s.in_h as isize, s.in_w as isize);
        let image_len = s.in_h * s.in_w * c;
        let mut walk = PixelWalk::new(s, self.first + i0);
        let mut corner = [(0usize, 0isize, 0isize); MAX_MR];
        let mut lines: [Option<&[f32]>; MAX_MR] = [None; MAX_MR];
        for (panel, out) in dst
            .chunks_exact_mut(mr * kb)
            .take(mb.div_ceil(mr))
            .enumerate()
        {
            let rows = mr.min(mb - panel * mr);
            // Each pixel's image and the input position of its window's top-left tap.
            for cr in corner.iter_mut().take(rows) {
                let (y0, x0) = (walk.oy * s.stride_h, walk.ox * s.stride_w);
                *cr = (walk.n, y0 as isize - pt, x0 as isize - pl);
                walk.advance();
            }
            // Columns p0..p0 + kb, one kernel position (a run of channels) at a time.
            let mut p = p0;
            while p < p0 + kb {
                let (tap, ci) = (p / c, p % c);
                let end = ((tap + 1) * c).min(p0 + kb);
                let (ky, kx) = ((tap / s.kernel_w) as isize, (tap % s.kernel_w) as isize);
                for (line, &(n, y0, x0)) in lines.iter_mut().zip(&corner[..rows]) {
                    let (iy, ix) = (y0 + ky, x0 + kx);
                    *line = (iy >= 0 && ix >= 0 && iy < in_h && ix < in_w).then(|| {
                        let at = n * image_len + (iy * in_w + ix) as usize * c + ci;
                        &self.x[at..at + (end - p)]
                    });
                }
                pack_lines(&mut out[(p - p0) * mr..], &lines[..rows], mr, end - p);
                p = end;
            }
            if rows < mr {
                for q in 0..kb {
                    out[q * mr + rows..(q + 1) * mr].fill(0.0);
                }
            }
        }
    }
}

/// Adds each im2col row of `col` (output pixels `pixels`) back into the input-shaped `dx`, whose
/// first element is that of image `first_image`.
fn col2im_add(
    s: &Conv2d,
    col: &[f32],
    pixels: std::ops::Range<usize>,
    dx: &mut [f32],
    first_image: usize,
) {
    let (pt, pl) = (s.pad_top() as isize, s.pad_left() as isize);
    let (kw, c) = (s.kernel_w, s.in_c);
    let row_len = kw * c;
    let image_len = s.in_h * s.in_w * c;
    let mut at = PixelWalk::new(s, pixels.start);
    for row in col.chunks_exact(s.patch_len()).take(pixels.len()) {
        let image = &mut dx[(at.n - first_image) * image_len..][..image_len];
        let x_first = (at.ox * s.stride_w) as isize - pl;
        let kx0 = (-x_first).clamp(0, kw as isize) as usize;
        let kx1 = (s.in_w as isize - x_first).clamp(0, kw as isize) as usize;
        if kx0 < kx1 {
            for (ky, src) in row.chunks_exact(row_len).enumerate() {
                let iy = (at.oy * s.stride_h + ky) as isize - pt;
                if iy < 0 || iy >= s.in_h as isize {
                    continue;
                }
                let ix0 = (x_first + kx0 as isize) as usize;
                let dst = &mut image[(iy as usize * s.in_w + ix0) * c..][..(kx1 - kx0) * c];
                for (d, &v) in dst.iter_mut().zip(&src[kx0 * c..kx1 * c]) {
                    *d += v;
                }
            }
        }
        at.advance();
    }
}

/// Forward pass: `y = act(conv(x, w) + bias)`, written over `y` (never read).
///
/// `bias` has `out_c` entries. The output pixels are computed in parallel over tasks of whole
/// images (see the module documentation); the result does not depend on the thread count.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_forward(
    opts: &GemmOptions,
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
/// the implicit im2col packing: for the benchmarks and profiles that measure what those gain.
#[doc(hidden)]
#[allow(clippy::too_many_arguments)]
pub fn conv2d_forward_im2col(
    opts: &GemmOptions,
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
    opts: &GemmOptions,
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
fn check_forward_args(
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

/// The forward pass over tasks of whole images, each task walking its images in groups: a
/// group is convolved into `y` (or, without `y`, into per-thread scratch) and then handed to
/// `then` while it is still in cache. Without `beyond_im2col`, only explicit im2col + GEMM.
#[allow(clippy::too_many_arguments)]
fn forward_groups(
    opts: &GemmOptions,
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
    let plan = Plan::new(s);
    let inner = plan.inner_threading(opts);
    let (patch, oc) = (s.patch_len(), s.out_c);
    let image_out = s.out_pixels() * oc;
    let group = (GROUP_FLOATS / image_out.max(1)).max(1);
    let out = y.map(SharedOut::new);
    let direct = beyond_im2col && direct::applies(s, isa);
    let implicit = beyond_im2col && !direct && Im2colPacker::applies(s, isa);
    let failed = std::sync::Mutex::new(None);
    // Convolves output pixels `pixels` into `y_part`.
    let conv = |packed: &[f32], pixels: std::ops::Range<usize>, y_part: &mut [f32]| {
        if direct {
            direct::forward(isa, s, x, packed, act, pixels, y_part);
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
        let first = t * plan.images_per_task;
        let last = (first + plan.images_per_task).min(s.batch);
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
        PACKED_W.with(direct::packed_len(s), direct::packed_len(s), |packed| {
            direct::pack(s, w, bias, packed);
            let packed = &*packed;
            plan.run(opts, |t| task(packed, t));
        });
    } else {
        plan.run(opts, |t| task(&[], t));
    }
    match failed.into_inner().unwrap() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Convolution then max pooling in one pass over the data: each group of images is convolved
/// and pooled while its convolution output is still in cache. `y_conv` keeps the convolution's
/// output (training needs it for the backward pass; pass `None` at inference and it is never
/// written to memory). `pool` describes the pooling of the convolution's output (its batch and
/// input sizes must be the convolution's output's); `y_pool` and `argmax` are as
/// [`crate::pool::max_pool2d_forward`]'s (`argmax` too may be `None` at inference). Results are bit-identical to the two calls in turn.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_maxpool_forward(
    opts: &GemmOptions,
    s: &Conv2d,
    pool: &Pool2d,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    act: Activation,
    y_conv: Option<&mut [f32]>,
    y_pool: &mut [f32],
    argmax: Option<&mut [u32]>,
) -> Result<()> {
    check_forward_args(s, x, w, bias, y_conv.as_ref().map(|y| y.len()))?;
    check_pool_of("conv2d_maxpool_forward", s, pool)?;
    let pooled = pool.out_h() * pool.out_w() * pool.channels;
    check_len(
        "conv2d_maxpool_forward",
        "pooled output y_pool",
        y_pool.len(),
        s.batch * pooled,
        || pool.desc_out(),
    )?;
    if let Some(argmax) = &argmax {
        check_len(
            "conv2d_maxpool_forward",
            "argmax",
            argmax.len(),
            s.batch * pooled,
            || pool.desc_out(),
        )?;
    }
    let pool_isa = crate::math::resolve(opts.isa)?;
    let image_out = s.out_pixels() * s.out_c;
    let (yp, am) = (SharedOut::new(y_pool), argmax.map(SharedOut::new));
    let then = |first: usize, y_group: &[f32]| {
        for (i, img) in y_group.chunks_exact(image_out).enumerate() {
            let n = first + i;
            // SAFETY: image n belongs to the calling task only.
            let (yi, ai) = unsafe {
                (
                    yp.slice(n * pooled..(n + 1) * pooled),
                    am.as_ref().map(|am| am.slice(n * pooled..(n + 1) * pooled)),
                )
            };
            // SAFETY: `resolve` checked that this CPU has the path's features.
            unsafe { crate::pool::max_image(pool_isa, pool, img, yi, ai) };
        }
    };
    forward_groups(opts, s, x, w, bias, act, y_conv, true, Some(&then))
}

/// Weight (and bias) gradients: `dw = Σ_pixels patchᵀ·dy` and `db = Σ_pixels dy`, written over
/// `dw` and `db`. `dy` is the gradient with respect to the convolution's output *before* its
/// activation (apply [`crate::activation::activation_backward`] first).
///
/// Partial sums are formed per task of whole images and added in task order: bit-identical
/// results for every thread count.
pub fn conv2d_backward_weights(
    opts: &GemmOptions,
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
    let (patch, oc) = (s.patch_len(), s.out_c);
    let plan = Plan::new(s);
    let inner = plan.inner_threading(opts);
    let use_direct = direct::applies(s, isa);
    let use_shifted = !use_direct && shifted::applies(s);
    sum_task_partials(opts, s, &plan, dw, db, |t, part_w, part_b| {
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

/// The weight and bias gradients of a convolution whose activation `act` is followed by the max
/// pooling `pool`, from the pooling's output `y_pool`, gradient `dy_pool` and `argmax` (as
/// [`crate::pool::max_pool2d_forward`] wrote them): what
/// [`crate::pool::max_pool2d_activation_backward`] then [`conv2d_backward_weights`] compute,
/// bit for bit, for a convolution whose input gradient is not needed (a model's first layer).
///
/// For one-channel convolutions (the direct kernels) each task forms its images' output
/// gradient in a buffer that stays in cache and runs the weight gradient on it at once, so the
/// whole batch's output gradient is never written to memory; other convolutions write it to a
/// scratch buffer between the two passes.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_maxpool_backward_weights(
    opts: &GemmOptions,
    s: &Conv2d,
    pool: &Pool2d,
    act: Activation,
    x: &[f32],
    y_pool: &[f32],
    dy_pool: &[f32],
    argmax: &[u32],
    dw: &mut [f32],
    db: Option<&mut [f32]>,
) -> Result<()> {
    let what = "conv2d_maxpool_backward_weights";
    check_weights_args(what, s, x, dw, db.as_deref())?;
    check_pool_of(what, s, pool)?;
    for (name, len) in [
        ("pooled output y_pool", y_pool.len()),
        ("pooled gradient dy_pool", dy_pool.len()),
        ("argmax", argmax.len()),
    ] {
        check_len(what, name, len, pool.output_len(), || pool.desc_out())?;
    }
    crate::pool::check_argmax(opts, argmax, pool)?;
    let isa = crate::Isa::resolve(opts.isa)?;
    if !direct::applies(s, isa) {
        return CONV_GRAD.with(s.output_len(), s.output_len(), |dy| {
            crate::pool::max_pool2d_activation_backward(
                opts, pool, act, y_pool, dy_pool, argmax, dy,
            )?;
            conv2d_backward_weights(opts, s, x, dy, dw, db)
        });
    }
    let plan = Plan::new(s);
    let (image_out, pooled) = (
        s.out_pixels() * s.out_c,
        pool.out_h() * pool.out_w() * s.out_c,
    );
    sum_task_partials(opts, s, &plan, dw, db, |t, part_w, part_b| {
        let pixels = plan.pixels(s, t);
        let images = pixels.start / s.out_pixels()..pixels.end / s.out_pixels();
        let len = images.len() * image_out;
        CONV_GRAD.with(len, len, |dy| {
            for (i, dy_image) in dy.chunks_exact_mut(image_out).enumerate() {
                let at = (images.start + i) * pooled..(images.start + i + 1) * pooled;
                // SAFETY: `Isa::resolve` checked that this CPU has `isa` (one of our own paths:
                // `direct::applies`).
                unsafe {
                    crate::pool::max_backward_image(
                        isa,
                        pool,
                        Some((act, &y_pool[at.clone()])),
                        &dy_pool[at.clone()],
                        &argmax[at],
                        dy_image,
                    )
                };
            }
            direct::backward_weights(isa, s, x, dy, pixels, part_w, part_b);
        });
        Ok(())
    })
}

/// Runs `f(first pixel, rows, col)` over `pixels` in im2col chunks of at most `plan.chunk_rows`
/// rows (this thread's scratch, kept in L2 for the GEMM that reads it), stopping at an error.
fn im2col_chunks(
    plan: &Plan,
    s: &Conv2d,
    x: &[f32],
    pixels: std::ops::Range<usize>,
    mut f: impl FnMut(usize, usize, &[f32]) -> Result<()>,
) -> Result<()> {
    let patch = s.patch_len();
    let rows_max = plan.chunk_rows.min(pixels.len());
    COL.with(rows_max * patch, rows_max * patch, |col| {
        for p0 in pixels.clone().step_by(plan.chunk_rows) {
            let p1 = (p0 + plan.chunk_rows).min(pixels.end);
            let col = &mut col[..(p1 - p0) * patch];
            im2col(s, x, p0..p1, col);
            f(p0, p1 - p0, col)?;
        }
        Ok(())
    })
}

/// The shape checks every weight-gradient entry point makes.
fn check_weights_args(
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

/// That `pool` pools exactly the convolution's output.
fn check_pool_of(what: &'static str, s: &Conv2d, pool: &Pool2d) -> Result<()> {
    pool.validate()?;
    if (pool.batch, pool.in_h, pool.in_w, pool.channels) != (s.batch, s.out_h(), s.out_w(), s.out_c)
    {
        return Err(Error::ShapeMismatch {
            what,
            detail: format!(
                "the pooling takes {}×{}×{}×{} inputs but the convolution gives {}",
                pool.batch,
                pool.in_h,
                pool.in_w,
                pool.channels,
                s.output_desc()
            ),
        });
    }
    Ok(())
}

/// Runs `task(t, dw_t, db_t)` for every task of `plan`, each into its own partial weight and bias
/// gradient, then sums the partials in task order into `dw` and `db`: the same bits for every
/// thread count. The first error of any task is returned.
fn sum_task_partials(
    opts: &GemmOptions,
    s: &Conv2d,
    plan: &Plan,
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
        let mut parts = parts.chunks_exact(part_len);
        let first = parts.next().expect("at least one task");
        dw.copy_from_slice(&first[..wlen]);
        let mut db = db;
        if let Some(db) = db.as_deref_mut() {
            db.copy_from_slice(&first[wlen..]);
        }
        for part in parts {
            for (d, &p) in dw.iter_mut().zip(&part[..wlen]) {
                *d += p;
            }
            if let Some(db) = db.as_deref_mut() {
                for (d, &p) in db.iter_mut().zip(&part[wlen..]) {
                    *d += p;
                }
            }
        }
    });
    match failed.into_inner().unwrap() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Input gradient: `dx = col2im(dy·wᵀ)`, written over `dx`. `dy` is the gradient with respect to
/// the output before the activation. Tasks own whole images of `dx` and run in parallel.
pub fn conv2d_backward_input(
    opts: &GemmOptions,
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
    plan.run(opts, |t| {
        let pixels = plan.pixels(s, t);
        let first_image = t * plan.images_per_task;
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

/// The direct forward convolution for one input channel, where im2col would write as many floats
/// per pixel as the GEMM then has multiply-adds per output (K = kernel_h·kernel_w, e.g. 9): the
/// GEMM's tiles would be mostly loads and stores of C.
///
/// A block of [`PX`] output pixels gathers its patches into registers/stack, then each group of
/// [`LANES`] output channels is accumulated in `PX` vector registers over the taps (one weight
/// vector load serves `PX` pixels), starting from the bias; the block's outputs are written once
/// and the activation applied while they are in L1. Weights and bias are first copied into a
/// `taps × out_c` layout padded to whole lane groups. The loop is compiled per instruction set
/// like [`crate::math`]'s; the compiler keeps the fixed-size accumulators in registers.
mod direct {
    use super::Conv2d;
    use crate::activation::{bias_act_row, Activation, RowBias};
    use crate::Isa;

    /// Output channels per accumulator (one AVX-512 register, two AVX2, four NEON).
    pub(super) const LANES: usize = 16;
    /// Output pixels sharing each weight load.
    const PX: usize = 4;
    /// The largest kernel (taps) the direct path takes; larger ones go through im2col.
    const MAX_TAPS: usize = 49;

    /// Whether the direct path is the one for `s` (measured with the bench-suite conv group on
    /// the reference CNN's first layer: several times faster than im2col + GEMM).
    pub(super) fn applies(s: &Conv2d, isa: Isa) -> bool {
        s.in_c == 1 && s.kernel_h * s.kernel_w <= MAX_TAPS && isa != Isa::OpenBlas
    }

    /// Output channels rounded up to whole lane groups.
    pub(super) fn padded_channels(s: &Conv2d) -> usize {
        s.out_c.next_multiple_of(LANES)
    }

    /// Floats [`pack`] writes: the bias row then one row per tap.
    pub(super) fn packed_len(s: &Conv2d) -> usize {
        (1 + s.kernel_h * s.kernel_w) * padded_channels(s)
    }

    /// `dst` ← [bias; w] with rows padded to [`padded_channels`] by zeros.
    pub(super) fn pack(s: &Conv2d, w: &[f32], bias: Option<&[f32]>, dst: &mut [f32]) {
        let (oc, ocp) = (s.out_c, padded_channels(s));
        dst.fill(0.0);
        if let Some(b) = bias {
            dst[..oc].copy_from_slice(b);
        }
        for (t, row) in w.chunks_exact(oc).enumerate() {
            dst[(1 + t) * ocp..][..oc].copy_from_slice(row);
        }
    }

    /// Lane groups accumulated in one pass over the taps: up to 4 × 16 = 64 output channels, so
    /// that each broadcast input value feeds several FMAs.
    const MAX_GROUPS: usize = 4;

    #[inline(always)]
    fn body<const FMA: bool>(
        s: &Conv2d,
        x: &[f32],
        packed: &[f32],
        pixels: std::ops::Range<usize>,
        y: &mut [f32],
    ) {
        let (ow, oh, oc) = (s.out_w(), s.out_h(), s.out_c);
        let ocp = padded_channels(s);
        let groups = ocp / LANES;
        let (pt, pl) = (s.pad_top() as isize, s.pad_left() as isize);
        let (sh, sw) = (s.stride_h as isize, s.stride_w as isize);
        let (kh, kw) = (s.kernel_h, s.kernel_w);
        let (in_h, in_w) = (s.in_h as isize, s.in_w as isize);
        let taps = kh * kw;
        let image_len = s.in_h * s.in_w;
        // Offset of each tap from the window's top-left input element.
        let mut offset = [0usize; MAX_TAPS];
        for ky in 0..kh {
            for kx in 0..kw {
                offset[ky * kw + kx] = ky * s.in_w + kx;
            }
        }
        let mut patch = [[0.0f32; MAX_TAPS]; PX];
        let mut p = pixels.start;
        // Over output rows (one division per row, none per pixel).
        while p < pixels.end {
            let (n, rest) = (p / (oh * ow), p % (oh * ow));
            let (oy, ox0) = ((rest / ow) as isize, rest % ow);
            let row_end = (p - ox0 + ow).min(pixels.end);
            let y0 = oy * sh - pt;
            let rows_inside = y0 >= 0 && y0 + kh as isize <= in_h;
            let mut ox = ox0 as isize;
            // Over blocks of PX pixels of the row.
            while p < row_end {
                let npx = PX.min(row_end - p);
                let x_first = ox * sw - pl;
                let x_last = (ox + npx as isize - 1) * sw - pl;
                let inside = rows_inside && x_first >= 0 && x_last + kw as isize <= in_w;
                let mut base = [0usize; PX];
                if inside {
                    for (q, b) in base.iter_mut().enumerate() {
                        // Pixels past npx repeat the last one (computed, never stored).
                        let xq = x_first + q.min(npx - 1) as isize * sw;
                        *b = n * image_len + y0 as usize * s.in_w + xq as usize;
                    }
                } else {
                    for (q, pq) in patch.iter_mut().enumerate() {
                        pq[..taps].fill(0.0);
                        let xq = x_first + q.min(npx - 1) as isize * sw;
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let (iy, ix) = (y0 + ky as isize, xq + kx as isize);
                                if iy >= 0 && ix >= 0 && iy < in_h && ix < in_w {
                                    pq[ky * kw + kx] = x[n * image_len + (iy * in_w + ix) as usize];
                                }
                            }
                        }
                    }
                }
                let out = &mut y[(p - pixels.start) * oc..][..npx * oc];
                let mut g0 = 0;
                while g0 < groups {
                    let g = (groups - g0).min(MAX_GROUPS);
                    let lanes = Lanes {
                        packed,
                        ocp,
                        f0: g0 * LANES,
                        taps,
                    };
                    macro_rules! run {
                        ($g:literal) => {
                            if inside {
                                // SAFETY: every pixel's window lies inside its image
                                // (`inside`), so base + offset indexes an element of that image
                                // within `x`, whose length the caller checked.
                                lanes.block::<FMA, $g>(out, oc, npx, |q, t| unsafe {
                                    *x.get_unchecked(base[q] + offset[t])
                                })
                            } else {
                                lanes.block::<FMA, $g>(out, oc, npx, |q, t| patch[q][t])
                            }
                        };
                    }
                    match g {
                        1 => run!(1),
                        2 => run!(2),
                        3 => run!(3),
                        _ => run!(4),
                    }
                    g0 += g;
                }
                p += npx;
                ox += npx as isize;
            }
        }
    }

    /// The packed weights seen from one run of lane groups starting at output channel `f0`.
    struct Lanes<'a> {
        packed: &'a [f32],
        ocp: usize,
        f0: usize,
        taps: usize,
    }

    impl Lanes<'_> {
        /// `G` lane groups of output channels for the block's `PX` pixels: bias plus, for each
        /// tap, `value(pixel, tap)` times the tap's weights (each weight vector serves all
        /// pixels, each input value all groups); then the first `npx` pixels' rows are stored.
        #[inline(always)]
        fn block<const FMA: bool, const G: usize>(
            &self,
            out: &mut [f32],
            oc: usize,
            npx: usize,
            value: impl Fn(usize, usize) -> f32,
        ) {
            let lanes = |row: usize, g: usize| -> &[f32; LANES] {
                self.packed[row * self.ocp + self.f0 + g * LANES..][..LANES]
                    .try_into()
                    .unwrap()
            };
            let mut acc = [[[0.0f32; LANES]; G]; PX];
            for aq in acc.iter_mut() {
                for (g, a) in aq.iter_mut().enumerate() {
                    *a = *lanes(0, g);
                }
            }
            for t in 0..self.taps {
                let w: [&[f32; LANES]; G] = std::array::from_fn(|g| lanes(1 + t, g));
                for (q, aq) in acc.iter_mut().enumerate() {
                    let v = value(q, t);
                    for (a, wg) in aq.iter_mut().zip(&w) {
                        for l in 0..LANES {
                            // Rust never fuses a·b + c by itself; `mul_add` is one FMA where
                            // the set has it (and a slow libm call where it does not).
                            a[l] = if FMA {
                                v.mul_add(wg[l], a[l])
                            } else {
                                a[l] + v * wg[l]
                            };
                        }
                    }
                }
            }
            // Stores index by a run-time count; done on a copy, so the accumulators themselves
            // are only ever indexed by constants and stay in registers.
            let done = acc;
            for (q, aq) in done.iter().enumerate().take(npx) {
                for (g, a) in aq.iter().enumerate() {
                    let c0 = self.f0 + g * LANES;
                    if c0 >= oc {
                        break;
                    }
                    let dst = &mut out[q * oc + c0..][..LANES.min(oc - c0)];
                    if let Ok(dst) = <&mut [f32; LANES]>::try_from(&mut *dst) {
                        // A fixed-size store (a copy of a variable count is a memcpy call).
                        *dst = *a;
                    } else {
                        store_partial(dst, a);
                    }
                }
            }
        }
    }

    /// The last, partial lane group of a pixel's outputs; out of line, so that the compiler does
    /// not merge it with the full-group store into one variable-length memcpy.
    #[inline(never)]
    fn store_partial(out: &mut [f32], acc: &[f32; LANES]) {
        out.copy_from_slice(&acc[..out.len()]);
    }

    crate::dispatch::per_isa!(forward_loops, body::<true>, body::<false>,
        (s: &Conv2d, x: &[f32], packed: &[f32], pixels: std::ops::Range<usize>, y: &mut [f32]));

    /// `y` (the rows of output pixels `pixels`) ← act(conv + bias), with weights and bias as
    /// [`pack`] laid them out. Pixels go in slabs small enough that the activation pass finds
    /// them in L1.
    pub(super) fn forward(
        isa: Isa,
        s: &Conv2d,
        x: &[f32],
        packed: &[f32],
        act: Activation,
        pixels: std::ops::Range<usize>,
        y: &mut [f32],
    ) {
        let oc = s.out_c;
        let slab = (2048 / oc).max(PX);
        for p0 in pixels.clone().step_by(slab) {
            let p1 = (p0 + slab).min(pixels.end);
            let ys = &mut y[(p0 - pixels.start) * oc..(p1 - pixels.start) * oc];
            #[cfg(target_arch = "x86_64")]
            if super::direct3x3::applies(s, isa) {
                let relu = act == Activation::Relu;
                let ocp = padded_channels(s);
                // SAFETY: the caller checked that this CPU has `isa`, which `applies` accepts.
                unsafe { super::direct3x3::forward(isa, s, x, packed, ocp, p0..p1, ys, relu) };
                if relu {
                    continue;
                }
            } else {
                // SAFETY: the caller checked that this CPU has `isa`'s features.
                unsafe { forward_loops::run(isa, s, x, packed, p0..p1, ys) };
            }
            #[cfg(not(target_arch = "x86_64"))]
            // SAFETY: the caller checked that this CPU has `isa`'s features.
            unsafe {
                forward_loops::run(isa, s, x, packed, p0..p1, ys)
            };
            if act != Activation::Identity {
                // SAFETY: as above.
                unsafe { bias_act_row(isa, act, ys, RowBias::None) };
            }
        }
    }

    /// Taps accumulated at once by the weight gradient (a 3×3 kernel in one pass).
    const TAP_BLOCK: usize = 9;
    /// Lane groups accumulated at once by the weight gradient: 9 × 2 accumulators, 32 output
    /// channels per pass over dy (AVX-512 keeps all 18 in registers; one group per pass read dy
    /// twice and measured 1.3× slower on the reference layer).
    const WG_GROUPS: usize = 2;

    /// The weight gradient of a one-channel convolution without im2col: `dw[t][o] = Σ_p
    /// x(p, t)·dy[p][o]` over the pixels `pixels`, written over `dw` (`taps × out_c`). For each
    /// block of taps and output-channel lanes, the sums stay in registers for the whole pixel
    /// range: per pixel, one load of dy's lanes and one broadcast per tap.
    #[inline(always)]
    fn weights_body<const FMA: bool>(
        s: &Conv2d,
        x: &[f32],
        dy: &[f32],
        pixels: std::ops::Range<usize>,
        dw: &mut [f32],
        db: &mut [f32],
    ) {
        let oc = s.out_c;
        let (pt, pl) = (s.pad_top() as isize, s.pad_left() as isize);
        let (sh, sw) = (s.stride_h as isize, s.stride_w as isize);
        let (kh, kw) = (s.kernel_h, s.kernel_w);
        let (in_h, in_w) = (s.in_h as isize, s.in_w as isize);
        let taps = kh * kw;
        let image_len = s.in_h * s.in_w;
        for t0 in (0..taps).step_by(TAP_BLOCK) {
            // The block's taps as (ky, kx) and offsets; past the last tap, tap t0 again
            // (computed, never stored).
            let tap = |i: usize| {
                let t = if t0 + i < taps { t0 + i } else { t0 };
                (t / kw, t % kw)
            };
            let offset: [usize; TAP_BLOCK] = std::array::from_fn(|i| {
                let (ky, kx) = tap(i);
                ky * s.in_w + kx
            });
            for f0 in (0..oc).step_by(LANES * WG_GROUPS) {
                let mut acc = [[[0.0f32; LANES]; WG_GROUPS]; TAP_BLOCK];
                // The bias gradient rides along with the first tap block (dy is read once).
                let mut acc_b = [[0.0f32; LANES]; WG_GROUPS];
                let mut at = super::PixelWalk::new(s, pixels.start);
                for p in pixels.clone() {
                    // dy's lanes for this pixel, zero past out_c.
                    let row = &dy[(p - pixels.start) * oc..][..oc];
                    let g: [[f32; LANES]; WG_GROUPS] = std::array::from_fn(|gi| {
                        let c0 = f0 + gi * LANES;
                        match row.get(c0..c0 + LANES) {
                            Some(v) => v.try_into().unwrap(),
                            None => {
                                let mut v = [0.0; LANES];
                                if c0 < oc {
                                    v[..oc - c0].copy_from_slice(&row[c0..]);
                                }
                                v
                            }
                        }
                    });
                    let (y0, x0) = (at.oy as isize * sh - pt, at.ox as isize * sw - pl);
                    let inside =
                        y0 >= 0 && x0 >= 0 && y0 + kh as isize <= in_h && x0 + kw as isize <= in_w;
                    let v: [f32; TAP_BLOCK] = if inside {
                        let base = at.n * image_len + (y0 * in_w + x0) as usize;
                        std::array::from_fn(|i| x[base + offset[i]])
                    } else {
                        std::array::from_fn(|i| {
                            let (ky, kx) = tap(i);
                            let (iy, ix) = (y0 + ky as isize, x0 + kx as isize);
                            if iy >= 0 && ix >= 0 && iy < in_h && ix < in_w {
                                x[at.n * image_len + (iy * in_w + ix) as usize]
                            } else {
                                0.0
                            }
                        })
                    };
                    if t0 == 0 {
                        for (a, gg) in acc_b.iter_mut().zip(&g) {
                            for l in 0..LANES {
                                a[l] += gg[l];
                            }
                        }
                    }
                    for (at_t, &vt) in acc.iter_mut().zip(&v) {
                        for (a, gg) in at_t.iter_mut().zip(&g) {
                            for l in 0..LANES {
                                a[l] = if FMA {
                                    vt.mul_add(gg[l], a[l])
                                } else {
                                    a[l] + vt * gg[l]
                                };
                            }
                        }
                    }
                    at.advance();
                }
                if t0 == 0 {
                    let done_b = acc_b;
                    for (gi, a) in done_b.iter().enumerate() {
                        let c0 = f0 + gi * LANES;
                        if c0 < oc {
                            let n = LANES.min(oc - c0);
                            db[c0..c0 + n].copy_from_slice(&a[..n]);
                        }
                    }
                }
                // Stores index by a run-time count; done on a copy, so the accumulators
                // themselves are only ever indexed by constants and stay in registers.
                let done = acc;
                for (i, at_t) in done.iter().enumerate().take(taps - t0) {
                    let row = &mut dw[(t0 + i) * oc..][..oc];
                    for (gi, a) in at_t.iter().enumerate() {
                        let c0 = f0 + gi * LANES;
                        if c0 < oc {
                            let n = LANES.min(oc - c0);
                            row[c0..c0 + n].copy_from_slice(&a[..n]);
                        }
                    }
                }
            }
        }
    }

    crate::dispatch::per_isa!(weights_loops, weights_body::<true>, weights_body::<false>,
        (s: &Conv2d, x: &[f32], dy: &[f32], pixels: std::ops::Range<usize>, dw: &mut [f32],
         db: &mut [f32]));

    /// `dw` (`taps × out_c`) ← Σ over `pixels` of patchᵀ·dy and `db` ← Σ dy, for a
    /// one-channel input; `dy` holds the gradients of `pixels` only (`out_c` floats each).
    pub(super) fn backward_weights(
        isa: Isa,
        s: &Conv2d,
        x: &[f32],
        dy: &[f32],
        pixels: std::ops::Range<usize>,
        dw: &mut [f32],
        db: &mut [f32],
    ) {
        #[cfg(target_arch = "x86_64")]
        if super::direct3x3::applies(s, isa) {
            // SAFETY: the caller checked that this CPU has `isa`, which `applies` accepts.
            return unsafe { super::direct3x3::backward_weights(isa, s, x, dy, pixels, dw, db) };
        }
        // SAFETY: the caller checked that this CPU has `isa`'s features.
        unsafe { weights_loops::run(isa, s, x, dy, pixels, dw, db) }
    }
}
