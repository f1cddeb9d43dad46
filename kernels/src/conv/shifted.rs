//! The weight gradient of a stride-1 convolution without im2col: `kernel_h` GEMMs per band of
//! output rows, over shifted views of a padded copy of the input.
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

use super::Conv2d;
use crate::error::Result;
use crate::gemm::{gemm_with, ExecOptions};
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

/// `dw` ← Σ over the whole images of `pixels` of patchᵀ·dy, and `db` ← Σ dy (in pixel order).
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
    let image_in = s.in_h * s.in_w * c;
    let image_out = s.out_pixels() * oc;
    let first_image = pixels.start / s.out_pixels();
    let images = pixels.len() / s.out_pixels();
    let (xp_max, dyp_max) = (xp_len(s, band), band * wp * oc);
    db.fill(0.0);
    COL.with(xp_max + dyp_max, xp_max + dyp_max, |buf| {
        let (xp, dyp) = buf.split_at_mut(xp_max);
        let mut first = true;
        for n in first_image..first_image + images {
            let x_image = &x[n * image_in..][..image_in];
            let dy_image = &dy[n * image_out..][..image_out];
            for r0 in (0..s.out_h()).step_by(band) {
                let rows = band.min(s.out_h() - r0);
                let xp = &mut xp[..xp_len(s, rows)];
                let dyp = &mut dyp[..rows * wp * oc];
                pad_input(s, x_image, r0, rows, xp);
                pad_output_gradient(s, dy_image, r0, rows, dyp, db);
                let k = rows * wp;
                let row_len = s.kernel_w * c;
                for (ky, dw_row) in dw.chunks_exact_mut(row_len * oc).enumerate() {
                    gemm_with(
                        inner,
                        1.0,
                        MatRef::strided(&xp[ky * wp * c..], row_len, k, 1, c),
                        MatRef::row_major(dyp, k, oc, oc),
                        if first { 0.0 } else { 1.0 },
                        MatMut::row_major(dw_row, row_len, oc, oc),
                    )?;
                }
                first = false;
            }
        }
        Ok(())
    })
}

/// `xp` ← the padded input rows under output rows `r0 .. r0 + rows` (zeros where the window hangs
/// over the padding), then the zero tail.
fn pad_input(s: &Conv2d, x_image: &[f32], r0: usize, rows: usize, xp: &mut [f32]) {
    let (c, wp) = (s.in_c, padded_width(s));
    let (pt, pl) = (s.pad_top(), s.pad_left());
    let in_row = s.in_w * c;
    let (body, tail) = xp.split_at_mut((rows + s.kernel_h - 1) * wp * c);
    for (i, row) in body.chunks_exact_mut(wp * c).enumerate() {
        // Padded row r0 + i holds input row r0 + i − pt.
        match (r0 + i).checked_sub(pt).filter(|&iy| iy < s.in_h) {
            None => row.fill(0.0),
            Some(iy) => {
                let (left, rest) = row.split_at_mut(pl * c);
                left.fill(0.0);
                let (inside, right) = rest.split_at_mut(in_row);
                inside.copy_from_slice(&x_image[iy * in_row..][..in_row]);
                right.fill(0.0);
            }
        }
    }
    tail.fill(0.0);
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
