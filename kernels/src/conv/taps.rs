//! Stride-1 convolutions as products over segments of K ([`crate::arch::TapsKernelFn`]). The
//! forward pass (and the input gradient, a forward pass over `dy`'s padded grid) takes its
//! kernel rows as the segments: each tile of output pixels sums all `kernel_h` shifted views of
//! the padded input into its registers and stores its C once, and its rows are the real output
//! pixels only. The weight gradient takes the band's output rows as the segments of its K
//! (the pixels), so it never visits the wrapped pixels between them either.
//!
//! Against one GEMM per kernel row over the padded grid (module `shifted`'s general forward):
//! that reads and writes C once per kernel row, computes the `kernel_w − 1` wrapped pixels of
//! every row (2 of 13 for a 3×3 'valid' convolution of 13-wide images, 15 % of its
//! multiply-adds), copies the real pixels out of the grid after, and makes `kernel_h` calls
//! of the GEMM per band, each choosing its path anew. Here a tile's rows may lie anywhere in the
//! padded input (a row offset each), so a tile crosses from one output row to the next without
//! computing the wrapped pixels between them, and writes straight into `y`.
//!
//! The sum of each output element runs over its taps in order and, within a tap, over
//! `kernel_w·in_c` in order, from zero, in one accumulator, whichever tile and whichever row of
//! it computes the element: the same bits for every batch and thread count.

use super::Conv2d;
use crate::activation::{bias_act_rows, Activation};
use crate::arch::TapsKernelFn;
use crate::{Isa, Threading};

/// A tile of the taps kernel: `mr` output pixels × `nr` output channels.
#[derive(Clone, Copy)]
pub(super) struct TapsTile {
    mr: usize,
    nr: usize,
    kernel: TapsKernelFn,
    isa: Isa,
}

/// The most rows of a taps tile (the kernel's contract: one address register per row).
const MAX_MR: usize = 8;

/// The most kernel rows (taps) this path takes: their offsets sit in an array on the stack.
const MAX_TAPS: usize = 16;

/// Whether a call may take the taps tiles for its weight gradient: on our own kernels, for a
/// batch of two or more images — tasks of whole images, each on one thread. (A call of one image
/// leaves the call's threads to the GEMM paths' products, whose bits the taps tiles would not
/// give: the choice must not depend on the thread count.)
pub(super) fn usable_for_weights(s: &Conv2d, inner: &crate::ExecOptions) -> bool {
    crate::Backend::runs_native(inner.backend) && s.batch >= 2
}

/// The taps tile of `isa` for `out_c` output channels, where it has one: AVX-512 8 × 16, 8 × 32
/// or 8 × 48 for up to 16, 32 or 48 channels (the narrowest that holds them: no masked half
/// tile), 6 × 64 beyond; AVX2 6 × 8 for up to 8, 6 × 16 beyond; none on the other paths, nor
/// for kernels of more than [`MAX_TAPS`] rows, which take the general path.
pub(super) fn tile_for(isa: Isa, kernel_h: usize, out_c: usize) -> Option<TapsTile> {
    if kernel_h > MAX_TAPS {
        return None;
    }
    available(isa, forward_kernel(isa, out_c)?)
}

/// The tile `(mr, nr, kernel)` of `isa` where this CPU has `isa`.
fn available(isa: Isa, (mr, nr, kernel): (usize, usize, TapsKernelFn)) -> Option<TapsTile> {
    debug_assert!(mr <= MAX_MR);
    isa.is_available().then_some(TapsTile {
        mr,
        nr,
        kernel,
        isa,
    })
}

/// [`tile_for`]'s tile shape and kernel.
#[cfg(target_arch = "x86_64")]
fn forward_kernel(isa: Isa, out_c: usize) -> Option<(usize, usize, TapsKernelFn)> {
    use crate::arch::{avx2, avx512};
    Some(match isa {
        Isa::Avx512 if out_c <= 16 => (8, 16, avx512::kernel_taps::<8, 1>),
        Isa::Avx512 if out_c <= 32 => (8, 32, avx512::kernel_taps::<8, 2>),
        Isa::Avx512 if out_c <= 48 => (8, 48, avx512::kernel_taps::<8, 3>),
        Isa::Avx512 => (6, 64, avx512::kernel_taps::<6, 4>),
        Isa::Avx2 if out_c <= 8 => (6, 8, avx2::kernel_taps::<6, 1>),
        Isa::Avx2 => (6, 16, avx2::kernel_taps::<6, 2>),
        _ => return None,
    })
}

/// [`tile_for`]'s tile shape and kernel: none off x86-64.
#[cfg(not(target_arch = "x86_64"))]
fn forward_kernel(_isa: Isa, _out_c: usize) -> Option<(usize, usize, TapsKernelFn)> {
    None
}

/// The padded rows a band's views read: `wp` pixels a row of `c` channels, from the padded row
/// under the band's first output row (the image itself where nothing is padded), and the
/// kernel's `kh × kw` taps over them; an output row is `wp − kw + 1` pixels.
pub(super) struct Views<'a> {
    pub xp: &'a [f32],
    pub wp: usize,
    pub c: usize,
    pub kh: usize,
    pub kw: usize,
}

/// `y_band` ← act(conv + bias) for `rows` output rows of one image of the forward pass of `s`.
#[allow(clippy::too_many_arguments)]
pub(super) fn forward_band(
    tile: &TapsTile,
    s: &Conv2d,
    wp: usize,
    xp: &[f32],
    rows: usize,
    w: &[f32],
    (bias, act): (Option<&[f32]>, Activation),
    y_band: &mut [f32],
    threading: Threading,
) {
    let views = Views {
        xp,
        wp,
        c: s.in_c,
        kh: s.kernel_h,
        kw: s.kernel_w,
    };
    let finish = |piece: &mut [f32]| {
        if bias.is_some() || act != Activation::Identity {
            // SAFETY: `tile_for` returned the tile only for an available instruction set.
            unsafe { bias_act_rows(tile.isa, act, piece, s.out_c, bias) };
        }
    };
    let taps_of_row = |_| 0..s.kernel_h;
    band(
        tile,
        &views,
        rows,
        (w, s.out_c),
        taps_of_row,
        (y_band, finish),
        threading,
    );
}

/// `y_band` ← Σ over the taps of the views' products with `w` (`kh` blocks of `kw·c` rows of
/// `oc` floats) for `rows` output rows of `oc` channels, then `finish` on each piece of it.
/// Output row `r` (of the band) takes the kernel rows `taps_of_row(r)` only, where the others
/// would read rows of zeros (the padding of an input gradient's grid); a tile of pixels over
/// several rows takes their union (more zeros, the same sums). The tiles are cut from the
/// band's first pixel, `mr` at a time, and shared among `threading`'s threads in pieces of
/// whole tiles: the same tiles, and the same bits, on any thread count.
///
/// # Panics
/// Where `xp` is shorter than the views reach, or `y_band` or `w` do not fit: the caller's
/// arithmetic, checked once per band because the kernel reads by pointer.
pub(super) fn band(
    tile: &TapsTile,
    v: &Views<'_>,
    rows: usize,
    (w, oc): (&[f32], usize),
    taps_of_row: impl Fn(usize) -> std::ops::Range<usize> + Sync,
    (y_band, finish): (&mut [f32], impl Fn(&mut [f32]) + Sync),
    threading: Threading,
) {
    let (c, wp) = (v.c, v.wp);
    assert!(v.kh <= MAX_TAPS && tile.mr <= MAX_MR && v.kw >= 1 && wp >= v.kw);
    let ow = wp - v.kw + 1;
    let tap_k = v.kw * c;
    // The last view's last row reaches the end of padded row `rows + kh − 2`.
    assert!(v.xp.len() >= (rows + v.kh - 1) * wp * c, "the band's input");
    assert_eq!(y_band.len(), rows * ow * oc, "the band's output");
    assert_eq!(w.len(), v.kh * tap_k * oc, "the kernel");
    let mut taps = [(0usize, 0usize); MAX_TAPS];
    for (ky, t) in taps.iter_mut().enumerate().take(v.kh) {
        *t = (ky * wp * c, ky * tap_k * oc);
    }
    let taps = &taps[..v.kh];
    let tiles = (rows * ow).div_ceil(tile.mr);
    let pieces = crate::process::threads(threading).min(tiles).max(1);
    let piece_pixels = tiles.div_ceil(pieces) * tile.mr;
    let run = |p: usize, y_piece: &mut [f32]| {
        let first = p * piece_pixels;
        let tiles_of = (v, (ow, first, y_piece.len() / oc), (w, oc), taps);
        piece_tiles(tile, tiles_of, &taps_of_row, y_piece);
        finish(y_piece);
    };
    if pieces == 1 {
        run(0, y_band);
    } else {
        crate::team::for_each_piece(threading, y_band, piece_pixels * oc, run);
    }
}

/// The tiles of pixels `first .. first + pixels` of a band ([`band`], which checked the views,
/// `w` and the band's output), written to `y_piece` (exactly those pixels' output).
#[allow(clippy::type_complexity)]
fn piece_tiles(
    tile: &TapsTile,
    (v, (ow, first, pixels), (w, oc), taps): (
        &Views<'_>,
        (usize, usize, usize),
        (&[f32], usize),
        &[(usize, usize)],
    ),
    taps_of_row: &impl Fn(usize) -> std::ops::Range<usize>,
    y_piece: &mut [f32],
) {
    let (c, wp, tap_k) = (v.c, v.wp, v.kw * v.c);
    debug_assert_eq!(y_piece.len(), pixels * oc);
    let mut offsets = [0usize; MAX_MR];
    let (mut oy, mut ox) = (first / ow, first % ow);
    for q0 in (0..pixels).step_by(tile.mr) {
        let n = tile.mr.min(pixels - q0);
        // Each pixel's offset in `xp`, relative to the tile's first: a row of the grid is `wp`
        // pixels, of which the output keeps the first `ow`.
        let (first_row, at) = (oy, (oy * wp + ox) * c);
        for off in &mut offsets[..n] {
            *off = (oy * wp + ox) * c - at;
            ox += 1;
            if ox == ow {
                (oy, ox) = (oy + 1, 0);
            }
        }
        let last_row = if ox == 0 { oy - 1 } else { oy };
        let (a, b) = (taps_of_row(first_row), taps_of_row(last_row));
        let (lo, hi) = (a.start.min(b.start), a.end.max(b.end).min(v.kh));
        let tile_taps = &taps[lo.min(hi)..hi];
        for j0 in (0..oc).step_by(tile.nr) {
            let cols = tile.nr.min(oc - j0);
            // SAFETY: every pixel of the tile is an output pixel of the band, whose views lie
            // inside `xp` (checked by `band`: the farthest reach is the last view's last row's
            // end); B's rows for tap `ky` are `w`'s from row `ky · tap_k`, `oc` floats each,
            // read from column j0 for `cols`; C's rows are the tile's pixels in `y_piece`,
            // `oc` apart, written from column j0 for `cols ≤ nr`; `tile_for` checked the
            // instruction set.
            unsafe {
                (tile.kernel)(
                    (v.xp.as_ptr().add(at), &offsets[..n], 1),
                    tile_taps,
                    tap_k,
                    w.as_ptr().add(j0),
                    oc,
                    0.0,
                    y_piece.as_mut_ptr().add(q0 * oc + j0),
                    oc,
                    cols,
                )
            };
        }
    }
}

/// The most output rows of a band one weight-gradient tile sums in its registers before it adds
/// them to C: their segment offsets sit in an array on the stack.
const MAX_SEGMENTS: usize = 64;

/// The weight-gradient tile of `isa`, where it has one: the rows are output channels, the
/// columns a kernel row's `kw·in_c` weights (AVX-512 8 × 48, AVX2 6 × 16).
pub(super) fn weights_tile_for(isa: Isa) -> Option<TapsTile> {
    available(isa, weights_kernel(isa)?)
}

/// [`weights_tile_for`]'s tile shape and kernel.
#[cfg(target_arch = "x86_64")]
fn weights_kernel(isa: Isa) -> Option<(usize, usize, TapsKernelFn)> {
    use crate::arch::{avx2, avx512};
    Some(match isa {
        Isa::Avx512 => (8, 48, avx512::kernel_taps::<8, 3>),
        Isa::Avx2 => (6, 16, avx2::kernel_taps::<6, 2>),
        _ => return None,
    })
}

/// [`weights_tile_for`]'s tile shape and kernel: none off x86-64.
#[cfg(not(target_arch = "x86_64"))]
fn weights_kernel(_isa: Isa) -> Option<(usize, usize, TapsKernelFn)> {
    None
}

/// `dw` ← Σ over the band's output pixels `p` of `view_ky[p]ᵀ ⊗ dy[p]` + `beta · dw`, for every
/// kernel row `ky`, of a band of `rows` output rows whose gradient `dy_band` (`rows · ow` pixels
/// of `oc`) is read in place: the weight gradient `kh·kw·c × oc` (row-major), or `transposed`,
/// `oc × kh·kw·c` (the tile's rows then the output channels, read from `dy`; else a kernel
/// row's `kw·c` weights, read from the views). K is the band's pixels, in segments of one output
/// row each (`ow` pixels, whose views start `wp` pixels apart), so the wrapped pixels between
/// rows are never visited; each tile sums up to [`MAX_SEGMENTS`] rows in its registers before
/// adding them to C.
///
/// # Panics
/// Where `xp` is shorter than the views reach, or `dy_band` or `dw` do not fit: the caller's
/// arithmetic, checked once per band because the kernel reads by pointer.
pub(super) fn weights_band(
    tile: &TapsTile,
    v: &Views<'_>,
    rows: usize,
    (dy_band, oc): (&[f32], usize),
    (beta, transposed): (f32, bool),
    dw: &mut [f32],
) {
    let (c, wp) = (v.c, v.wp);
    assert!(tile.mr <= MAX_MR && v.kw >= 1 && wp >= v.kw);
    let ow = wp - v.kw + 1;
    let row_n = v.kw * c;
    let patch = v.kh * row_n;
    assert!(v.xp.len() >= (rows + v.kh - 1) * wp * c, "the band's input");
    assert_eq!(dy_band.len(), rows * ow * oc, "the band's output gradient");
    assert_eq!(dw.len(), oc * patch, "the weight gradient");
    // The tile's rows and columns: output channels × a kernel row's weights, or the reverse.
    let (m, n) = if transposed { (oc, row_n) } else { (row_n, oc) };
    let consecutive: [usize; MAX_MR] = std::array::from_fn(|i| i);
    let mut segments = [(0usize, 0usize); MAX_SEGMENTS];
    for ky in 0..v.kh {
        for r0 in (0..rows).step_by(MAX_SEGMENTS) {
            let n_seg = MAX_SEGMENTS.min(rows - r0);
            for (r, seg) in segments[..n_seg].iter_mut().enumerate() {
                let (dy_at, view_at) = ((r0 + r) * ow * oc, (r0 + r + ky) * wp * c);
                *seg = if transposed {
                    (dy_at, view_at)
                } else {
                    (view_at, dy_at)
                };
            }
            let beta = if r0 == 0 { beta } else { 1.0 };
            for i0 in (0..m).step_by(tile.mr) {
                let rows_i = tile.mr.min(m - i0);
                for j0 in (0..n).step_by(tile.nr) {
                    let cols = tile.nr.min(n - j0);
                    // (A, its step of K), (B, its row stride), (C, its row stride).
                    let ((a, a_step), (b, rsb), (c_at, rsc)) = if transposed {
                        (
                            (dy_band.as_ptr().wrapping_add(i0), oc),
                            (v.xp.as_ptr().wrapping_add(j0), c),
                            (i0 * patch + ky * row_n + j0, patch),
                        )
                    } else {
                        (
                            (v.xp.as_ptr().wrapping_add(i0), c),
                            (dy_band.as_ptr().wrapping_add(j0), oc),
                            ((ky * row_n + i0) * oc + j0, oc),
                        )
                    };
                    // SAFETY: A's rows are `rows_i` consecutive floats (output channels of
                    // `dy_band`, or weights of a pixel's view in `xp`), stepping a pixel (`oc`
                    // or `c` floats) for `ow` pixels from each segment's start — a row's start
                    // in `dy_band`, or its view's `(r + ky)·wp` pixels into `xp` — inside both
                    // (checked above: the farthest reach is the last row's last view); B's
                    // rows likewise, `cols` floats from column j0; C is `dw`'s rows from i0,
                    // `rsc` apart, `cols ≤ nr` floats from `c_at`, inside `dw`, read and
                    // written (it shares nothing with A or B); the tile's constructor checked
                    // the instruction set.
                    unsafe {
                        (tile.kernel)(
                            (a, &consecutive[..rows_i], a_step),
                            &segments[..n_seg],
                            ow,
                            b,
                            rsb,
                            beta,
                            dw.as_mut_ptr().add(c_at),
                            rsc,
                            cols,
                        )
                    };
                }
            }
        }
    }
}
