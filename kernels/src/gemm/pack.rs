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
            // Rows of A are contiguous: read along each row, scatter with stride mr.
            for i in 0..rows {
                let src = &a.data[base + i * a.rs..][..kb];
                for (p, &v) in src.iter().enumerate() {
                    out[p * mr + i] = v;
                }
            }
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
            // Columns of B are contiguous (B is transposed): read along each, scatter by nr.
            for j in 0..cols {
                let src = &b.data[base + j * b.cs..][..kb];
                for (p, &v) in src.iter().enumerate() {
                    out[p * nr + j] = v;
                }
            }
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
