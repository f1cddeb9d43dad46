//! im2col, its implicit form and col2im: output pixels as rows of a patch matrix. `col` is
//! never built whole: the batch is cut into tasks of whole images (by the batch alone, never the
//! thread count) and each task walks its pixels in chunks whose block fits in L2, right before
//! the GEMM reads it; with 8 or more input channels the GEMM packs its A blocks straight from the
//! input (`Im2colPacker`) and no block is stored at all.

use super::Conv2d;
use crate::error::Result;
use crate::gemm::pack::pack_lines;
use crate::gemm::problem::PackA;
use crate::gemm::{ExecOptions, Threading};
use crate::scratch::COL;

/// im2col blocks are kept to about this many floats (1 MiB: they stay in L2 until the GEMM reads
/// them).
pub(crate) const CHUNK_FLOATS: usize = 1 << 18;
/// The batch is cut into at most this many tasks of whole images (a constant, not the thread
/// count, so that the weight gradient's partial sums are the same on any machine).
pub(crate) const MAX_TASKS: usize = 32;

/// How a call's work is cut: tasks of `images_per_task` whole images, each walked in chunks of
/// at most `chunk_rows` output pixels.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Plan {
    pub(crate) tasks: usize,
    pub(crate) images_per_task: usize,
    pub(crate) chunk_rows: usize,
}

impl Plan {
    pub(crate) fn new(s: &Conv2d) -> Self {
        let tasks = s.batch.clamp(1, MAX_TASKS);
        let images_per_task = s.batch.div_ceil(tasks);
        Plan {
            tasks: s.batch.div_ceil(images_per_task.max(1)),
            images_per_task,
            chunk_rows: (CHUNK_FLOATS / s.patch_len()).max(1),
        }
    }

    /// The images of task `t`.
    pub(crate) fn images(&self, s: &Conv2d, t: usize) -> std::ops::Range<usize> {
        let first = t * self.images_per_task;
        first..(first + self.images_per_task).min(s.batch)
    }

    /// Output-pixel range (global indices) of task `t`.
    pub(crate) fn pixels(&self, s: &Conv2d, t: usize) -> std::ops::Range<usize> {
        let images = self.images(s, t);
        images.start * s.out_pixels()..images.end * s.out_pixels()
    }

    /// The GEMM threading inside a task: the pool's threads only when there is a single task.
    pub(crate) fn inner_threading(&self, opts: &ExecOptions) -> ExecOptions {
        ExecOptions {
            threading: if self.tasks == 1 {
                opts.threading
            } else {
                Threading::Single
            },
            ..*opts
        }
    }

    /// Runs `f(task)` for every task: in parallel unless the caller asked for one thread.
    pub(crate) fn run(&self, opts: &ExecOptions, f: impl Fn(usize) + Sync + Send) {
        crate::team::for_each(opts.threading, self.tasks, &f);
    }
}

/// Output pixels `(n, oy, ox)` in order from a global index, without a division per pixel.
pub(crate) struct PixelWalk {
    pub(crate) n: usize,
    pub(crate) oy: usize,
    pub(crate) ox: usize,
    pub(crate) oh: usize,
    pub(crate) ow: usize,
}

impl PixelWalk {
    pub(crate) fn new(s: &Conv2d, p: usize) -> Self {
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

    pub(crate) fn advance(&mut self) {
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
pub(crate) fn copy_short(dst: &mut [f32], src: &[f32]) {
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
pub(crate) fn im2col(s: &Conv2d, x: &[f32], pixels: std::ops::Range<usize>, col: &mut [f32]) {
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
pub(crate) struct Im2colPacker<'a> {
    pub(crate) s: &'a Conv2d,
    pub(crate) x: &'a [f32],
    pub(crate) first: usize,
}

/// The tallest micro-panel any registered tile has, with room to spare.
pub(crate) const MAX_MR: usize = 32;

impl Im2colPacker<'_> {
    /// Whether the forward pass of `s` packs its A this way (our own driver only: OpenBLAS
    /// needs A stored).
    pub(crate) fn applies(s: &Conv2d, backend: crate::Backend) -> bool {
        s.in_c >= 8 && backend == crate::Backend::Native
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
pub(crate) fn col2im_add(
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

/// Runs `f(first pixel, rows, col)` over `pixels` in im2col chunks of at most `plan.chunk_rows`
/// rows (this thread's scratch, kept in L2 for the GEMM that reads it), stopping at an error.
pub(crate) fn im2col_chunks(
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
