//! Stride-1 convolutions without im2col — the weight gradient, the forward pass (of layers with
//! few output channels, or of any on AVX2 and AVX-512), and the input gradient: `kernel_h` GEMMs
//! per band of rows, or the taps tiles of module `taps`, over shifted views of a padded copy of
//! the input (of the output gradient for the input gradient, see [`backward_input`]).
//!
//! Copy the input into rows padded to `wp = out_w + kernel_w − 1` pixels (the zero padding
//! included). With stride 1, the input pixel under tap (ky, kx) of output pixel (oy, ox) then
//! sits at padded flat index `(oy + ky)·wp + ox + kx`: a constant offset per tap from `oy·wp + ox`.
//! Number the output pixels the same way — `dy` copied into rows of `wp` pixels whose last
//! `kernel_w − 1` are zero — and `dw[tap] = Σ_p xp[p + offset(tap)]ᵀ · dyp[p]` is a product with
//! one contiguous K for every tap. For a fixed kernel row ky, the A rows (kx, c) of all its taps are
//! consecutive floats of `xp`: one `kw·in_c × K` view with row stride 1 and pixel stride `in_c`
//! (rows overlap from pixel to pixel, which a read-only view allows). The zero pixels of `dyp` make
//! the taps that wrap around a row end contribute nothing; they cost `(kernel_w − 1)/wp` extra
//! multiply-adds (3.4 % at 56 wide) against im2col's `kernel_h·kernel_w`-fold copy of the input.
//!
//! With at most 32 output channels the product is taken transposed, `dw[ky]ᵀ = dypᵀ·xp[ky]`,
//! into the task's partial, turned once per call after the partials are summed (see
//! `PartialLayout::Transposed`): the GEMM then reads both operands in place (C of so
//! few rows), where `xp[ky]ᵀ·dyp` packed every band's view for only `out_c` multiply-adds per
//! element — the same products in the same order, the same bits; 2 threads, 128 images of
//! 14×14×32 → 32 'valid' 4.5 → 2.0 ms, 14×14×16 → 32 'same' 3.6 → 1.4 ms. 'Valid' layers read
//! the input itself, no copy.
//!
//! The forward pass reads the same views: the band's output on the padded grid (`wp` pixels a
//! row, the last `kernel_w − 1` of each wrapping around into the next row's window) is
//! `Σ_ky xp[· + ky·wp]·w[ky]`, one GEMM per kernel row with K = `kw·in_c` and A read in place
//! (rows `in_c` apart, overlapping), the bias and activation applied with the last; the real
//! pixels are then copied out. Against the implicit im2col, which packs every A element the
//! tiles then use for only `out_c` multiply-adds (41 % of the implicit path's time at 32
//! channels), nothing is packed (figures at [`MAX_FORWARD_OUT_C`]). C is read and written once
//! per kernel row, and the wrapped pixels cost `(kw − 1)/wp` more multiply-adds. On AVX2 and
//! AVX-512 the forward pass takes the kernel rows as taps of one tile instead (module `taps`):
//! C stored once, the wrapped pixels not computed, nothing copied out. So does the input
//! gradient (a forward pass over `dy`'s grid), each row with only the kernel rows that reach
//! `dy`'s own; and the weight gradient (transposed or not) takes its K in segments of one
//! output row, `dy` read in place, no wrapped pixel visited.

use super::Conv2d;
use crate::activation::Activation;
use crate::error::Result;
use crate::gemm::{gemm_fused, gemm_with, Bias, ExecOptions, IN_PLACE_DEPTH, IN_PLACE_ROWS};
use crate::mat::{MatMut, MatRef};
use crate::scratch::COL;

/// Padded copies of input and output gradient are kept to about this many floats per band
/// (1 MiB, so the GEMM's packing reads them from L2).
const BAND_FLOATS: usize = 1 << 18;

/// Whether this path is the one for `s`: stride 1, enough input channels that the GEMM's
/// `kw·in_c` rows fill its tiles (with few channels im2col's copy is cheap anyway), and rows wide
/// enough that the zero pixels stay a small part of K.
pub(super) fn applies(s: &Conv2d) -> bool {
    s.stride_h == 1
        && s.stride_w == 1
        && s.in_c >= 8
        && s.out_w() >= 2 * (s.kernel_w - 1)
        && s.out_h() > 0
}

/// The most output channels for which the forward pass takes this path without the taps tiles.
/// The implicit im2col packs each A element once for all `out_c` columns, so its packing weighs
/// less the more there are, while this path's costs (C read and written per kernel row, the
/// wrapped pixels) do not shrink. Measured on a 2-core AVX-512 Xeon, both threads, interleaved, implicit → shifted:
/// 32 channels 1.14–1.4× faster (14×14×16 'same' 4.2 → 3.0 ms, 14×14×32 'valid' 4.3 → 3.8,
/// 13×13×16 'valid' 1.24 → 0.90), 64 no faster (28×28×32 'same', 56×56×64 'same'), 128 slower
/// (14×14×64 'valid' 5.1 → 5.7 ms, 28×28×128 'same' 20 → 24).
const MAX_FORWARD_OUT_C: usize = 32;

/// Whether the forward pass takes this path. Where the taps tiles of module `taps` serve (AVX2,
/// AVX-512, a kernel of at most 16 rows, our own kernels: [`taps_tile`]), every
/// stride-1 layer that the direct one-channel kernel does not take, whatever its channels: with
/// C stored once per tile and no wrapped pixel computed, it outran im2col (implicit, or in
/// chunks below 8 input channels) wherever measured — on two Zen 4 threads, medians of 5–9
/// interleaved runs, im2col → taps: 3 input channels 32×32 → 32 'same' (batch 32) 812 → 429 µs,
/// → 64 1569 → 1061; 4 channels 28×28 → 16 5×5 'valid' (64) 1662 → 832; 6 channels 16×16 → 32
/// 'valid' 448 → 295; 56×56×64 → 64 'same' (4) 5952 → 4730; 28×28×32 → 64 'same' (32) 5813 →
/// 4763; 14×14×64 → 128 'valid' (32) 3912 → 3249; 14×14×128 → 128 'same' 10633 → 9165.
/// Elsewhere: where [`applies`] holds, on the native GEMM, for up to [`MAX_FORWARD_OUT_C`]
/// output channels and a kernel row short enough (`kw·in_c`) that the GEMM reads its A in
/// place. Deeper, the GEMM packs the shifted views as the implicit im2col packs its blocks, and
/// C's extra passes are lost: 14×14×64 → 32 'same' 3.5 → 4.1 ms.
pub(super) fn applies_forward(s: &Conv2d, inner: &ExecOptions, isa: crate::Isa) -> bool {
    if taps_tile(s, inner, isa, s.out_c).is_some() {
        return s.stride_h == 1 && s.stride_w == 1 && s.out_h() > 0 && s.out_w() > 0;
    }
    applies(s)
        && s.out_c <= MAX_FORWARD_OUT_C
        && s.kernel_w * s.in_c <= IN_PLACE_DEPTH
        && crate::Backend::runs_native(inner.backend)
}

/// The taps tile `tile_for` gives `s`'s kernel for `cols` output columns (the forward pass's
/// output channels, the input gradient's input channels), where the call may take it: on our
/// own kernels (not under the OpenBLAS backend). A call of one image runs a band's tiles on
/// the call's threads (`taps::band`); each element's sum is the same whichever thread
/// computes it.
fn taps_tile(
    s: &Conv2d,
    inner: &ExecOptions,
    isa: crate::Isa,
    cols: usize,
) -> Option<super::taps::TapsTile> {
    crate::Backend::runs_native(inner.backend)
        .then(|| super::taps::tile_for(isa, s.kernel_h, cols))
        .flatten()
}

/// Padded row length in pixels.
fn padded_width(s: &Conv2d) -> usize {
    s.out_w() + s.kernel_w - 1
}

/// Output rows per band.
fn band_rows(s: &Conv2d) -> usize {
    (BAND_FLOATS / (padded_width(s) * (s.in_c + s.out_c))).clamp(1, s.out_h())
}

/// Floats of the padded input for a band of `rows` output rows: its `rows + kernel_h − 1` padded
/// rows and `kernel_w − 1` zero pixels after them, which the last tap's view reaches.
fn xp_len(s: &Conv2d, rows: usize) -> usize {
    ((rows + s.kernel_h - 1) * padded_width(s) + s.kernel_w - 1) * s.in_c
}

/// `y_part` ← act(conv(x) + bias) for the whole images of output pixels `pixels` (`y_part`
/// holds exactly their output).
#[allow(clippy::too_many_arguments)]
pub(super) fn forward(
    inner: &ExecOptions,
    s: &Conv2d,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    act: Activation,
    pixels: std::ops::Range<usize>,
    y_part: &mut [f32],
) -> Result<()> {
    let (c, oc, wp, ow) = (s.in_c, s.out_c, padded_width(s), s.out_w());
    let band = band_rows(s);
    let image_out = s.out_pixels() * oc;
    // Where output rows r0 .. r0 + rows of the part's i-th image lie in `y_part`.
    let y_band = |i: usize, (r0, rows): (usize, usize)| {
        let at = i * image_out + r0 * ow * oc;
        at..at + rows * ow * oc
    };
    if let Some(tile) = taps_tile(s, inner, crate::Isa::resolve(inner.isa)?, s.out_c) {
        let xp_max = input_scratch_len(s, band);
        return COL.with(xp_max, xp_max, |xp| {
            for_each_band(s, x, &pixels, xp, |i, _, (r0, rows), xp| {
                let (epilogue, threading) = ((bias, act), inner.threading);
                let y_band = &mut y_part[y_band(i, (r0, rows))];
                super::taps::forward_band(&tile, s, wp, xp, rows, w, epilogue, y_band, threading);
                Ok(())
            })
        });
    }
    let row_len = s.kernel_w * c;
    let (xp_max, yp_max) = (input_scratch_len(s, band), band * wp * oc);
    COL.with(xp_max + yp_max, xp_max + yp_max, |buf| {
        let (xp, yp) = buf.split_at_mut(xp_max);
        for_each_band(s, x, &pixels, xp, |i, _, (r0, rows), xp| {
            let m = grid_pixels(s, rows);
            let yp = &mut yp[..m * oc];
            for (ky, w_row) in w.chunks_exact(row_len * oc).enumerate() {
                let last = ky + 1 == s.kernel_h;
                gemm_fused(
                    inner,
                    1.0,
                    MatRef::strided(&xp[ky * wp * c..], m, row_len, c, 1),
                    MatRef::row_major(w_row, row_len, oc, oc),
                    if ky == 0 { 0.0 } else { 1.0 },
                    match bias {
                        Some(b) if last => Bias::PerColumn(b),
                        _ => Bias::None,
                    },
                    if last { act } else { Activation::Identity },
                    MatMut::row_major(yp, m, oc, oc),
                )?;
            }
            let out = &mut y_part[y_band(i, (r0, rows))];
            for (dst, src) in out.chunks_exact_mut(ow * oc).zip(yp.chunks(wp * oc)) {
                dst.copy_from_slice(&src[..ow * oc]);
            }
            Ok(())
        })
    })
}

/// Calls `f(i, n, (r0, rows), xp)` for each band of [`band_rows`] output rows `r0 .. r0 + rows`
/// of each whole image `n` (the part's `i`-th) of output pixels `pixels`, in order, `xp` the
/// band's padded input rows ([`band_input`], copied into `scratch` where they must be).
fn for_each_band(
    s: &Conv2d,
    x: &[f32],
    pixels: &std::ops::Range<usize>,
    scratch: &mut [f32],
    mut f: impl FnMut(usize, usize, (usize, usize), &[f32]) -> Result<()>,
) -> Result<()> {
    let band = band_rows(s);
    let image_in = s.in_h * s.in_w * s.in_c;
    for (i, n) in images_of(s, pixels).enumerate() {
        let x_image = &x[n * image_in..][..image_in];
        for r0 in (0..s.out_h()).step_by(band) {
            let rows = band.min(s.out_h() - r0);
            f(
                i,
                n,
                (r0, rows),
                band_input(s, x_image, (r0, rows), scratch),
            )?;
        }
    }
    Ok(())
}

/// Whether [`backward_weights`] forms the transposed gradient `dwᵀ` (`out_c × patch`): with at
/// most `IN_PLACE_ROWS` output channels the GEMM then reads both operands in place at any depth,
/// where `dw = xpᵀ·dyp` packed each band's `xp` (its elements then serve only `out_c`
/// multiply-adds). The same products in the same order: the same bits.
pub(super) fn weights_transposed(s: &Conv2d) -> bool {
    s.out_c <= IN_PLACE_ROWS
}

/// `dw` ← Σ over the whole images of `pixels` of patchᵀ·dy — transposed (`out_c × patch`) where
/// [`weights_transposed`] — and `db` ← Σ dy (in pixel order).
pub(super) fn backward_weights(
    inner: &ExecOptions,
    s: &Conv2d,
    x: &[f32],
    dy: &[f32],
    pixels: std::ops::Range<usize>,
    dw: &mut [f32],
    db: &mut [f32],
) -> Result<()> {
    let (c, oc, wp) = (s.in_c, s.out_c, padded_width(s));
    let band = band_rows(s);
    let image_out = s.out_pixels() * oc;
    let (patch, row_len) = (s.patch_len(), s.kernel_w * c);
    let (xp_max, dyp_max) = (input_scratch_len(s, band), band * wp * oc);
    let transposed = weights_transposed(s);
    db.fill(0.0);
    let isa = crate::Isa::resolve(inner.isa)?;
    let weights_tile = if !super::taps::usable_for_weights(s, inner) {
        None
    } else if transposed {
        super::taps::weights_tile_for(isa)
    } else {
        super::taps::tile_for(isa, s.kernel_h, oc)
    };
    if let Some(tile) = weights_tile {
        // K in segments of one output row (module `taps`): `dy` read in place, no wrapped
        // pixel visited; transposed or not as the general path's partials.
        let ow = s.out_w();
        let dw = &mut dw[..oc * patch];
        return COL.with(xp_max, xp_max, |xp| {
            let mut first = true;
            for_each_band(s, x, &pixels, xp, |_, n, (r0, rows), xp| {
                let dy_band = &dy[n * image_out..][..image_out][r0 * ow * oc..][..rows * ow * oc];
                for pixel in dy_band.chunks_exact(oc) {
                    for (d, &g) in db.iter_mut().zip(pixel) {
                        *d += g;
                    }
                }
                let views = super::taps::Views {
                    xp,
                    wp,
                    c,
                    kh: s.kernel_h,
                    kw: s.kernel_w,
                };
                let beta = if first { 0.0 } else { 1.0 };
                let (dy_band, how) = ((dy_band, oc), (beta, transposed));
                super::taps::weights_band(&tile, &views, rows, dy_band, how, dw);
                first = false;
                Ok(())
            })
        });
    }
    COL.with(xp_max + dyp_max, xp_max + dyp_max, |buf| {
        let (xp, dyp) = buf.split_at_mut(xp_max);
        let mut first = true;
        for_each_band(s, x, &pixels, xp, |_, n, (r0, rows), xp| {
            let dy_image = &dy[n * image_out..][..image_out];
            let dyp = &mut dyp[..rows * wp * oc];
            pad_output_gradient(s, dy_image, r0, rows, dyp, db);
            // (The wrapped pixels left out are zero in `dyp`.)
            let k = grid_pixels(s, rows);
            let dyp = MatRef::row_major(&dyp[..k * oc], k, oc, oc);
            let beta = if first { 0.0 } else { 1.0 };
            for ky in 0..s.kernel_h {
                let xv = MatRef::strided(&xp[ky * wp * c..], k, row_len, c, 1);
                if transposed {
                    let dwt = &mut dw[ky * row_len..];
                    let dwt = MatMut::row_major(dwt, oc, row_len, patch);
                    gemm_with(inner, 1.0, dyp.t(), xv, beta, dwt)?;
                } else {
                    let dw_row = &mut dw[ky * row_len * oc..][..row_len * oc];
                    let dw_row = MatMut::row_major(dw_row, row_len, oc, oc);
                    gemm_with(inner, 1.0, xv.t(), dyp, beta, dw_row)?;
                }
            }
            first = false;
            Ok(())
        })
    })
}

/// The whole images of output pixels `pixels` (which hold whole images).
fn images_of(s: &Conv2d, pixels: &std::ops::Range<usize>) -> std::ops::Range<usize> {
    pixels.start / s.out_pixels()..pixels.end / s.out_pixels()
}

/// The pixels of a band's grid of `rows` rows that the GEMMs cover: all but the last row's
/// `kernel_w − 1` wrapped ones, whose windows would reach past the band's input rows.
fn grid_pixels(s: &Conv2d, rows: usize) -> usize {
    rows * padded_width(s) - (s.kernel_w - 1)
}

/// Scratch floats [`band_input`] needs for bands of up to `band` rows (none when it reads the
/// input in place).
fn input_scratch_len(s: &Conv2d, band: usize) -> usize {
    if reads_input_in_place(s) {
        0
    } else {
        xp_len(s, band)
    }
}

/// The padded input rows under output rows `r0 .. r0 + rows`: the image itself where nothing is
/// padded ([`reads_input_in_place`]), else a copy made in `scratch`.
fn band_input<'a>(
    s: &Conv2d,
    x_image: &'a [f32],
    (r0, rows): (usize, usize),
    scratch: &'a mut [f32],
) -> &'a [f32] {
    if reads_input_in_place(s) {
        &x_image[r0 * padded_width(s) * s.in_c..]
    } else {
        let xp = &mut scratch[..xp_len(s, rows)];
        pad_input(s, x_image, r0, rows, xp);
        xp
    }
}

/// Whether the padded rows are the input's own (no padding on any side: 'valid', or 'same' with
/// a 1×1 kernel), read in place. ('Same' with an even kernel side pads after the image only.)
fn reads_input_in_place(s: &Conv2d) -> bool {
    s.pad_top() == 0
        && s.pad_left() == 0
        && padded_width(s) == s.in_w
        && s.out_h() + s.kernel_h - 1 == s.in_h
}

/// `xp` ← the padded input rows under output rows `r0 .. r0 + rows` (zeros where the window hangs
/// over the padding), then the zero tail.
fn pad_input(s: &Conv2d, x_image: &[f32], r0: usize, rows: usize, xp: &mut [f32]) {
    let (c, wp) = (s.in_c, padded_width(s));
    let (body, tail) = xp.split_at_mut((rows + s.kernel_h - 1) * wp * c);
    let place = (s.pad_top(), s.pad_left() * c);
    copy_rows_padded(x_image, s.in_w * c, place, r0, wp * c, body);
    tail.fill(0.0);
}

/// `dst` ← rows of `dst_row` floats from padded row `r0` on: padded row `r` holds `src`'s row
/// `r − top` (rows of `row` floats) after `left` zero floats, then zeros; rows above or below
/// `src`'s are zeros.
fn copy_rows_padded(
    src: &[f32],
    row: usize,
    (top, left): (usize, usize),
    r0: usize,
    dst_row: usize,
    dst: &mut [f32],
) {
    let src_rows = src.len() / row;
    for (i, out) in dst.chunks_exact_mut(dst_row).enumerate() {
        match (r0 + i).checked_sub(top).filter(|&r| r < src_rows) {
            None => out.fill(0.0),
            Some(r) => {
                let (before, rest) = out.split_at_mut(left);
                before.fill(0.0);
                let (inside, after) = rest.split_at_mut(row);
                inside.copy_from_slice(&src[r * row..][..row]);
                after.fill(0.0);
            }
        }
    }
}

/// `dyp` ← output-gradient rows `r0 .. r0 + rows`, each followed by `kernel_w − 1` zero pixels;
/// adds each pixel's gradient to `db` on the way.
fn pad_output_gradient(
    s: &Conv2d,
    dy_image: &[f32],
    r0: usize,
    rows: usize,
    dyp: &mut [f32],
    db: &mut [f32],
) {
    let (oc, wp, ow) = (s.out_c, padded_width(s), s.out_w());
    for (r, row) in dyp.chunks_exact_mut(wp * oc).take(rows).enumerate() {
        let src = &dy_image[(r0 + r) * ow * oc..][..ow * oc];
        let (inside, junk) = row.split_at_mut(ow * oc);
        inside.copy_from_slice(src);
        junk.fill(0.0);
        for pixel in src.chunks_exact(oc) {
            for (d, &g) in db.iter_mut().zip(pixel) {
                *d += g;
            }
        }
    }
}

/// The input channels for which the input gradient takes this path: its GEMMs' N is `in_c`.
/// Measured on a 2-core AVX-512 Xeon, both threads, interleaved, im2col + col2im → this path:
/// 16 channels 1.1–1.35× faster (28×28×16 → 64 'same' 1.52 → 1.38 ms, 14×14×16 → 32 'same'
/// 1.03 → 0.77), 64 1.15–1.6× (28×28×64 → 32 'same' 3.3 → 2.3 ms, 28×28×64 → 16 5×5 'same'
/// 5.4 → 3.4), but 8 and fewer slower (28×28×8 → 32 'same' 0.70 → 0.89 ms: tiles of so few
/// columns are mostly broadcasts), and 128 no faster (14×14×128 → 128 'same' 2.6 → 2.6–2.9).
/// Through the taps tiles (AVX2, AVX-512: no wrapped pixel, C stored once) from 16 channels
/// up: on two Zen 4 threads, medians of 7 interleaved runs, im2col + col2im → taps, 14×14×128 →
/// 128 'same' (batch 32) 13.5 → 11.3 ms, 7×7×256 → 256 'same' (16) 9.2 → 7.8, 28×28×96 → 64
/// 'same' (16) 11.9 → 10.7; still not below 16 (28×28×8 → 32 'same' 1.20 → 1.24 ms, 4 channels
/// 0.85 → 1.33).
const INPUT_GRADIENT_IN_C: std::ops::RangeInclusive<usize> = 16..=64;

/// Whether the input gradient takes this path: stride 1, enough output channels that the
/// GEMMs' `kw·out_c` rows fill its tiles, input channels in [`INPUT_GRADIENT_IN_C`], and the
/// grid's extra columns (`(kw − 1)` a row, zeros of the padding in K) a small enough part of the
/// work — under half again as much as im2col's where the GEMM reads A in place (`kw·out_c` ≤
/// [`IN_PLACE_DEPTH`]: 14×14×32 → 32 'valid', 1.33 as much, still 1.1× faster, 10×10 'valid',
/// 1.5, no faster), under a fifth where it packs A (14×14×32 → 64 'valid', 1.33, 1.1× slower).
/// On the native GEMM only. With the taps tiles (AVX2, AVX-512), stride 1, 8 or more output
/// channels and 16 or more input channels, whatever the grid's extra columns (never computed).
pub(super) fn applies_backward_input(s: &Conv2d, inner: &ExecOptions, isa: crate::Isa) -> bool {
    let stride_one = s.stride_h == 1 && s.stride_w == 1;
    if taps_tile(s, inner, isa, s.in_c).is_some() {
        // The taps tiles compute no wrapped pixel, and pay for more input channels.
        return stride_one && s.out_c >= 8 && s.in_c >= *INPUT_GRADIENT_IN_C.start();
    }
    let (wq, ow) = (input_grid_width(s), s.out_w());
    let little_waste = if s.kernel_w * s.out_c <= IN_PLACE_DEPTH {
        2 * wq < 3 * ow
    } else {
        5 * wq < 6 * ow
    };
    stride_one
        && s.out_c >= 8
        && INPUT_GRADIENT_IN_C.contains(&s.in_c)
        && little_waste
        && crate::Backend::runs_native(inner.backend)
}

/// Padded row length, in pixels, of the input gradient's grid: `in_w + kernel_w − 1`.
fn input_grid_width(s: &Conv2d) -> usize {
    s.in_w + s.kernel_w - 1
}

/// Input-gradient rows per band.
fn input_band_rows(s: &Conv2d) -> usize {
    (BAND_FLOATS / (input_grid_width(s) * (s.in_c + s.out_c))).clamp(1, s.in_h)
}

/// `wf` (`s.weight_len()` floats) ← the weights turned for the input gradient: kernel rows and columns reversed and each
/// tap's `in_c × out_c` block transposed, so that kernel row `a` is a row-major
/// `kw·out_c × in_c` matrix whose row `(b, o)` holds `w[kh−1−a][kw−1−b][·][o]`.
pub(super) fn flip_weights(s: &Conv2d, w: &[f32], wf: &mut [f32]) {
    let (kh, kw, c, oc) = (s.kernel_h, s.kernel_w, s.in_c, s.out_c);
    for a in 0..kh {
        for b in 0..kw {
            let tap = &w[((kh - 1 - a) * kw + (kw - 1 - b)) * c * oc..][..c * oc];
            let rows = &mut wf[(a * kw + b) * oc * c..][..oc * c];
            for (ci, w_c) in tap.chunks_exact(oc).enumerate() {
                for (o, &v) in w_c.iter().enumerate() {
                    rows[o * c + ci] = v;
                }
            }
        }
    }
}

/// `dx_part` ← the input gradient of `images` (`dx_part` holds exactly theirs), from the
/// flipped weights `wf` ([`flip_weights`]).
///
/// With stride 1 the input gradient is a full convolution of `dy` with the flipped kernel:
/// copy `dy` into rows of `wq = in_w + kw − 1` pixels, `kh − 1 − pad_top` zero rows above and
/// `kw − 1 − pad_left` zero pixels before each row (zeros after, to `wq`), and
/// `dx[iy][ix] = Σ_a Σ_(b,o) dyq[iy + a][ix + b][o] · wf[a][(b, o)]` — on the grid of `wq`
/// pixels a row, one GEMM per kernel row `a` with K = `kw·out_c`, A read in place (rows `out_c`
/// apart, overlapping) as in the forward pass; the real pixels are then copied out. im2col's way
/// wrote `dy·wᵀ` for every patch (`kh·kw` floats per input float) and scattered it back.
pub(super) fn backward_input(
    inner: &ExecOptions,
    s: &Conv2d,
    dy: &[f32],
    wf: &[f32],
    images: std::ops::Range<usize>,
    dx_part: &mut [f32],
) -> Result<()> {
    let (c, oc, wq, iw) = (s.in_c, s.out_c, input_grid_width(s), s.in_w);
    let band = input_band_rows(s);
    let image_in = s.in_h * iw * c;
    let image_out = s.out_pixels() * oc;
    let row_len = s.kernel_w * oc;
    let input_tile = taps_tile(s, inner, crate::Isa::resolve(inner.isa)?, s.in_c);
    let dyq_max = (band + s.kernel_h - 1) * wq * oc;
    let dxq_max = if input_tile.is_some() {
        0
    } else {
        band * wq * c
    };
    COL.with(dyq_max + dxq_max, dyq_max + dxq_max, |buf| {
        let (dyq, dxq) = buf.split_at_mut(dyq_max);
        for (i, n) in images.enumerate() {
            let dy_image = &dy[n * image_out..][..image_out];
            let dx_image = &mut dx_part[i * image_in..][..image_in];
            for r0 in (0..s.in_h).step_by(band) {
                let rows = band.min(s.in_h - r0);
                let dyq = &mut dyq[..(rows + s.kernel_h - 1) * wq * oc];
                pad_output_gradient_around(s, dy_image, r0, dyq);
                if let Some(tile) = &input_tile {
                    // The kernel rows as taps of one tile (module `taps`), each input row's
                    // on `dy`'s own rows only (those of `rows_reaching_output`).
                    let views = super::taps::Views {
                        xp: dyq,
                        wp: wq,
                        c: oc,
                        kh: s.kernel_h,
                        kw: s.kernel_w,
                    };
                    let top = s.kernel_h - 1 - s.pad_top();
                    let on_dy = |r: usize| {
                        let iy = r0 + r;
                        top.saturating_sub(iy)..(top + s.out_h()).saturating_sub(iy)
                    };
                    let dx_band = &mut dx_image[r0 * iw * c..][..rows * iw * c];
                    let dx_band = (dx_band, |_: &mut [f32]| {});
                    let threading = inner.threading;
                    super::taps::band(tile, &views, rows, (wf, c), on_dy, dx_band, threading);
                    continue;
                }
                // The last row's wrapped pixels would reach past the band's rows.
                let m = rows * wq - (s.kernel_w - 1);
                let dxq = &mut dxq[..m * c];
                for (a, wf_row) in wf.chunks_exact(row_len * c).enumerate() {
                    // Only the rows whose kernel row `a` lies on `dy`'s own rows: the padding
                    // rows above and below are zeros ('valid' layers have `kh − 1` each).
                    let (lo, hi) = rows_reaching_output(s, a, r0, rows);
                    // (A band wholly in the padding rows of kernel row 0 has lo = rows, past
                    // the grid's last pixel m.)
                    let (p0, p1) = ((lo * wq).min(m), (hi * wq).min(m));
                    if a == 0 {
                        dxq[..p0 * c].fill(0.0);
                        dxq[p1 * c..].fill(0.0);
                    }
                    if p0 >= p1 {
                        continue;
                    }
                    gemm_with(
                        inner,
                        1.0,
                        MatRef::strided(&dyq[(p0 + a * wq) * oc..], p1 - p0, row_len, oc, 1),
                        MatRef::row_major(wf_row, row_len, c, c),
                        if a == 0 { 0.0 } else { 1.0 },
                        MatMut::row_major(&mut dxq[p0 * c..p1 * c], p1 - p0, c, c),
                    )?;
                }
                let out = &mut dx_image[r0 * iw * c..][..rows * iw * c];
                for (dst, src) in out.chunks_exact_mut(iw * c).zip(dxq.chunks(wq * c)) {
                    dst.copy_from_slice(&src[..iw * c]);
                }
            }
        }
        Ok(())
    })
}

/// The band rows `lo .. hi` (of `rows` from input-gradient row `r0`) for which kernel row `a`
/// of the flipped kernel lies on a row of `dy` rather than on padding: input row `iy` meets
/// padded row `iy + a`, which is `dy`'s row `iy + a − (kh − 1 − pad_top)`.
fn rows_reaching_output(s: &Conv2d, a: usize, r0: usize, rows: usize) -> (usize, usize) {
    let top = s.kernel_h - 1 - s.pad_top();
    // Input rows top − a ..< top + out_h − a, clipped to the band.
    let end = (top + s.out_h()).saturating_sub(a).clamp(r0, r0 + rows);
    let first = top.saturating_sub(a).clamp(r0, end);
    (first - r0, end - r0)
}

/// `dyq` ← the output gradient's rows under input-gradient rows `r0 ..`, padded all around for
/// the full convolution: padded row `r` holds output row `r − (kh − 1 − pad_top)`, each row
/// `kw − 1 − pad_left` zero pixels, the row, then zeros to the grid's width.
fn pad_output_gradient_around(s: &Conv2d, dy_image: &[f32], r0: usize, dyq: &mut [f32]) {
    let oc = s.out_c;
    let place = (
        s.kernel_h - 1 - s.pad_top(),
        (s.kernel_w - 1 - s.pad_left()) * oc,
    );
    copy_rows_padded(
        dy_image,
        s.out_w() * oc,
        place,
        r0,
        input_grid_width(s) * oc,
        dyq,
    );
}
