//! The forward pass of a stride-1 convolution as one product per band with its kernel rows as
//! taps ([`crate::arch::TapsKernelFn`]): each tile of output pixels sums all `kernel_h` shifted
//! views of the padded input into its registers and stores its C once, and its rows are the
//! real output pixels only.
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
use crate::Isa;

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

/// The taps tile of `isa` for `s`, where it has one: AVX-512 8 × 32 (8 × 16 for at most 16
/// output channels: 8 accumulators, where 32 columns would be half masked), AVX2 6 × 16 (6 × 8
/// for at most 8); none on the other paths, nor for kernels of more than [`MAX_TAPS`] rows,
/// which take the general forward.
pub(super) fn tile_for(isa: Isa, s: &Conv2d) -> Option<TapsTile> {
    if s.kernel_h > MAX_TAPS {
        return None;
    }
    let out_c = s.out_c;
    let (mr, nr, kernel): (usize, usize, TapsKernelFn) = match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 if out_c <= 16 => (8, 16, crate::arch::avx512::kernel_taps::<8, 1>),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => (8, 32, crate::arch::avx512::kernel_taps::<8, 2>),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 if out_c <= 8 => (6, 8, crate::arch::avx2::kernel_taps::<6, 1>),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => (6, 16, crate::arch::avx2::kernel_taps::<6, 2>),
        _ => return None,
    };
    debug_assert!(mr <= MAX_MR);
    isa.is_available().then_some(TapsTile {
        mr,
        nr,
        kernel,
        isa,
    })
}

/// `y_band` ← act(conv + bias) for `rows` output rows of one image, from `xp`: the padded input
/// rows under them, `wp` pixels a row, starting at the band's first (the image itself where
/// nothing is padded). `y_band` holds exactly the band's `rows · out_w` output pixels.
///
/// # Panics
/// Where `xp` is shorter than the views reach or `y_band` or `w` do not fit the layer: the
/// caller's arithmetic, checked here once per band because the kernel reads by pointer.
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
) {
    let (c, oc, ow) = (s.in_c, s.out_c, s.out_w());
    let tap_k = s.kernel_w * c;
    // The last view's last row reaches the end of padded row `rows + kernel_h − 2` (see the
    // module `shifted`: `ow + kernel_w − 1 = wp`).
    assert!(
        xp.len() >= (rows + s.kernel_h - 1) * wp * c,
        "the band's input"
    );
    assert_eq!(y_band.len(), rows * ow * oc, "the band's output");
    assert_eq!(w.len(), s.kernel_h * tap_k * oc, "the kernel");
    assert!(ow + s.kernel_w - 1 == wp && tile.mr <= MAX_MR);
    let mut taps = [0usize; MAX_TAPS];
    let taps = &mut taps[..s.kernel_h];
    for (ky, t) in taps.iter_mut().enumerate() {
        *t = ky * wp * c;
    }
    run_tiles(tile, s, wp, xp, rows, w, taps, y_band);
    // SAFETY: `tile_for` returned the tile only for an available instruction set.
    unsafe { bias_act_rows(tile.isa, act, y_band, oc, bias) };
}

/// The tiles of a band (checked by the caller): pixels in tiles of `mr`, crossing output rows,
/// each over every panel of `nr` channels.
#[allow(clippy::too_many_arguments)]
fn run_tiles(
    tile: &TapsTile,
    s: &Conv2d,
    wp: usize,
    xp: &[f32],
    rows: usize,
    w: &[f32],
    taps: &[usize],
    y_band: &mut [f32],
) {
    let (c, oc, ow) = (s.in_c, s.out_c, s.out_w());
    let tap_k = s.kernel_w * c;
    let pixels = rows * ow;
    let mut offsets = [0usize; MAX_MR];
    let (mut oy, mut ox) = (0, 0);
    for q0 in (0..pixels).step_by(tile.mr) {
        let n = tile.mr.min(pixels - q0);
        // Each pixel's offset in `xp`, relative to the tile's first: a row of the grid is `wp`
        // pixels, of which the output keeps the first `ow`.
        let first = (oy * wp + ox) * c;
        for off in &mut offsets[..n] {
            *off = (oy * wp + ox) * c - first;
            ox += 1;
            if ox == ow {
                (oy, ox) = (oy + 1, 0);
            }
        }
        for j0 in (0..oc).step_by(tile.nr) {
            let cols = tile.nr.min(oc - j0);
            // SAFETY: every pixel of the tile is an output pixel of the band, whose views lie
            // inside `xp` (checked by the caller: the farthest reach is the last view's last
            // row's end); B's `taps.len() · tap_k` rows of `oc` floats are `w`, read from
            // column j0 for `cols`; C's rows are the tile's pixels in `y_band`, `oc` apart,
            // written from column j0 for `cols ≤ nr`; `tile_for` checked the instruction set.
            unsafe {
                (tile.kernel)(
                    xp.as_ptr().add(first),
                    &offsets[..n],
                    taps,
                    tap_k,
                    w.as_ptr().add(j0),
                    oc,
                    y_band.as_mut_ptr().add(q0 * oc + j0),
                    oc,
                    cols,
                )
            };
        }
    }
}
