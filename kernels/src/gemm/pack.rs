//! Packing: copy a block of A (or B) into the order the microkernel reads it, so the kernel walks
//! contiguous, aligned memory whatever the caller's strides and transposes were. Rows (columns)
//! past the matrix edge are filled with zeros, so edge tiles run the same kernel.

use super::driver::Operand;

/// Packs the `mb × kb` block of `a` whose top-left element is (`i0`, `p0`) into `dst` as
/// `ceil(mb / mr)` micro-panels of `mr × kb`, each stored column by column (`mr` values per `p`).
pub(crate) fn pack_a(
    dst: &mut [f32],
    a: Operand<'_>,
    i0: usize,
    p0: usize,
    mb: usize,
    kb: usize,
    mr: usize,
) {
    for (panel, out) in dst
        .chunks_exact_mut(mr * kb)
        .take(mb.div_ceil(mr))
        .enumerate()
    {
        let row0 = i0 + panel * mr;
        let rows = mr.min(i0 + mb - row0);
        let base = row0 * a.rs + p0 * a.cs;
        if a.cs == 1 {
            // Rows of A are contiguous: a transpose.
            pack_lines_across(out, a.data, base, a.rs, rows, mr, kb);
        } else if a.rs == 1 {
            // Columns of A are contiguous (A is transposed): one short copy per p.
            for p in 0..kb {
                out[p * mr..p * mr + rows].copy_from_slice(&a.data[base + p * a.cs..][..rows]);
            }
        } else {
            for p in 0..kb {
                for i in 0..rows {
                    out[p * mr + i] = a.data[base + i * a.rs + p * a.cs];
                }
            }
        }
        if rows < mr {
            for p in 0..kb {
                out[p * mr + rows..(p + 1) * mr].fill(0.0);
            }
        }
    }
}

/// Packs the `kb × nb` block of `b` whose top-left element is (`p0`, `j0`) into `dst` as
/// `ceil(nb / nr)` micro-panels of `kb × nr`, each stored row by row (`nr` values per `p`).
/// `first_panel` numbers the panels when `dst` holds only a slice of them (parallel packing).
#[allow(clippy::too_many_arguments)]
pub(crate) fn pack_b(
    dst: &mut [f32],
    b: Operand<'_>,
    p0: usize,
    j0: usize,
    kb: usize,
    nb: usize,
    nr: usize,
    first_panel: usize,
) {
    let panels = nb.div_ceil(nr);
    for (idx, out) in dst.chunks_exact_mut(nr * kb).enumerate() {
        let panel = first_panel + idx;
        if panel >= panels {
            break;
        }
        let col0 = j0 + panel * nr;
        let cols = nr.min(j0 + nb - col0);
        let base = p0 * b.rs + col0 * b.cs;
        if b.cs == 1 {
            // Rows of B are contiguous: one copy per p.
            for p in 0..kb {
                out[p * nr..p * nr + cols].copy_from_slice(&b.data[base + p * b.rs..][..cols]);
            }
        } else if b.rs == 1 {
            // Columns of B are contiguous (B is transposed): a transpose, as for row-major A.
            pack_lines_across(out, b.data, base, b.cs, cols, nr, kb);
        } else {
            for p in 0..kb {
                for j in 0..cols {
                    out[p * nr + j] = b.data[base + p * b.rs + j * b.cs];
                }
            }
        }
        if cols < nr {
            for p in 0..kb {
                out[p * nr + cols..(p + 1) * nr].fill(0.0);
            }
        }
    }
}

/// `out[p·width + l] = data[base + l·stride + p]` for l < count, p < kb: `count` contiguous lines
/// of `kb` values (rows of A, or columns of a transposed B) laid across a packed micro-panel of
/// `width`. Whole 4 × 4 blocks go through registers; the rest element by element.
fn pack_lines_across(
    out: &mut [f32],
    data: &[f32],
    base: usize,
    stride: usize,
    count: usize,
    width: usize,
    kb: usize,
) {
    let count4 = count / 4 * 4;
    let kb4 = kb / 4 * 4;
    for l in (0..count4).step_by(4) {
        let src: [&[f32]; 4] = std::array::from_fn(|r| &data[base + (l + r) * stride..][..kb]);
        transpose_rows4(src, out, l, width, kb4);
        for p in kb4..kb {
            for (r, line) in src.iter().enumerate() {
                out[p * width + l + r] = line[p];
            }
        }
    }
    for l in count4..count {
        let src = &data[base + l * stride..][..kb];
        for (p, &v) in src.iter().enumerate() {
            out[p * width + l] = v;
        }
    }
}

/// `out[p·mr + i + r] = rows[r][p]` for r < 4 and p < kb4 (a multiple of 4): four rows of A (or
/// columns of a transposed B) transposed into a packed micro-panel, 4 × 4 blocks at a time through
/// SSE registers.
#[cfg(target_arch = "x86_64")]
fn transpose_rows4(rows: [&[f32]; 4], out: &mut [f32], i: usize, mr: usize, kb4: usize) {
    use std::arch::x86_64::*;
    assert!(kb4.is_multiple_of(4) && rows.iter().all(|r| r.len() >= kb4));
    assert!(kb4 == 0 || out.len() >= (kb4 - 1) * mr + i + 4);
    for p in (0..kb4).step_by(4) {
        // SAFETY: p + 4 ≤ kb4 ≤ every row's length, and the four stores end at
        // (p + 3)·mr + i + 4 ≤ out.len() (both asserted above); SSE is part of x86-64.
        unsafe {
            let r0 = _mm_loadu_ps(rows[0].as_ptr().add(p));
            let r1 = _mm_loadu_ps(rows[1].as_ptr().add(p));
            let r2 = _mm_loadu_ps(rows[2].as_ptr().add(p));
            let r3 = _mm_loadu_ps(rows[3].as_ptr().add(p));
            let t0 = _mm_unpacklo_ps(r0, r1); // a0 b0 a1 b1
            let t1 = _mm_unpackhi_ps(r0, r1); // a2 b2 a3 b3
            let t2 = _mm_unpacklo_ps(r2, r3); // c0 d0 c1 d1
            let t3 = _mm_unpackhi_ps(r2, r3); // c2 d2 c3 d3
            let dst = out.as_mut_ptr().add(p * mr + i);
            _mm_storeu_ps(dst, _mm_movelh_ps(t0, t2)); // a0 b0 c0 d0
            _mm_storeu_ps(dst.add(mr), _mm_movehl_ps(t2, t0)); // a1 b1 c1 d1
            _mm_storeu_ps(dst.add(2 * mr), _mm_movelh_ps(t1, t3)); // a2 b2 c2 d2
            _mm_storeu_ps(dst.add(3 * mr), _mm_movehl_ps(t3, t1)); // a3 b3 c3 d3
        }
    }
}

/// `out[p·mr + i + r] = rows[r][p]` for r < 4 and p < kb4 (portable version).
#[cfg(not(target_arch = "x86_64"))]
fn transpose_rows4(rows: [&[f32]; 4], out: &mut [f32], i: usize, mr: usize, kb4: usize) {
    for p in 0..kb4 {
        for (r, row) in rows.iter().enumerate() {
            out[p * mr + i + r] = row[p];
        }
    }
}
