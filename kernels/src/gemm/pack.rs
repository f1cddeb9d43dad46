//! Packing: copy a block of A (or B) into the order the microkernel reads it, so the kernel walks
//! contiguous, aligned memory whatever the caller's strides and transposes were. Rows (columns)
//! past the matrix edge are filled with zeros, so edge tiles run the same kernel.

use super::problem::Operand;
use crate::arch::prefetch_run;

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
    if a.rs == 1 && a.cs != 1 {
        return pack_a_by_columns(dst, a, i0, p0, mb, kb, mr);
    }
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

/// [`pack_a`] for A whose columns are contiguous (a transposed row-major matrix, or the shifted
/// input views of [`crate::conv`]'s weight gradient). Panel by panel, each pass would read a few
/// floats of every column, strided reads from L2 that measured as a fifth of a 3×3 convolution's
/// weight gradient; column by column, the writes go to all panels at once, `mr·kb` floats apart
/// (a multiple of 4 KiB, so they fight over one L1 set). So the block is transposed in slabs of
/// [`SLAB`] columns, which stay in L1 while every panel takes its rows of them.
fn pack_a_by_columns(
    dst: &mut [f32],
    a: Operand<'_>,
    i0: usize,
    p0: usize,
    mb: usize,
    kb: usize,
    mr: usize,
) {
    fn full_panels<const MR: usize>(
        dst: &mut [f32],
        a: Operand<'_>,
        i0: usize,
        p0: usize,
        panels: usize,
        kb: usize,
        slab: std::ops::Range<usize>,
    ) {
        for panel in 0..panels {
            let out = &mut dst[(panel * kb + slab.start) * MR..][..slab.len() * MR];
            for (p, dst) in slab.clone().zip(out.chunks_exact_mut(MR)) {
                let at = i0 + panel * MR + (p0 + p) * a.cs;
                let src: &[f32; MR] = a.data[at..][..MR].try_into().expect("MR floats");
                dst.copy_from_slice(src);
            }
        }
    }
    let panels = mb / mr;
    for p_start in (0..kb).step_by(SLAB) {
        let slab = p_start..(p_start + SLAB).min(kb);
        match mr {
            4 => full_panels::<4>(dst, a, i0, p0, panels, kb, slab.clone()),
            6 => full_panels::<6>(dst, a, i0, p0, panels, kb, slab.clone()),
            8 => full_panels::<8>(dst, a, i0, p0, panels, kb, slab.clone()),
            9 => full_panels::<9>(dst, a, i0, p0, panels, kb, slab.clone()),
            12 => full_panels::<12>(dst, a, i0, p0, panels, kb, slab.clone()),
            24 => full_panels::<24>(dst, a, i0, p0, panels, kb, slab.clone()),
            _ => {
                for panel in 0..panels {
                    for p in slab.clone() {
                        let at = i0 + panel * mr + (p0 + p) * a.cs;
                        dst[(panel * kb + p) * mr..][..mr].copy_from_slice(&a.data[at..][..mr]);
                    }
                }
            }
        }
    }
    let rows = mb - panels * mr;
    if rows > 0 {
        // The last, partial panel: its rows, then zeros.
        for p in 0..kb {
            let out = &mut dst[(panels * kb + p) * mr..][..mr];
            out[..rows].copy_from_slice(&a.data[i0 + panels * mr + (p0 + p) * a.cs..][..rows]);
            out[rows..].fill(0.0);
        }
    }
}

/// Columns per slab of [`pack_a_by_columns`] (16 columns of a 240-row block are 15 KiB), and
/// rows per slab of [`pack_b`]'s row-major case.
const SLAB: usize = 16;

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
    if b.cs == 1 {
        // Rows of B are contiguous. Panel by panel, each pass would read one short run of
        // every row, `rs` apart: strided reads that missed the caches often enough to make
        // packing 15–20 % of a 128×784×512 product on one Zen 3 thread (10–11 % this way). So
        // the rows are taken in slabs of [`SLAB`]: every panel copies its runs of the slab's
        // rows, and each row is read front to back (a few sequential streams the prefetcher
        // follows).
        let ours = first_panel..panels.min(first_panel + dst.len() / (nr * kb).max(1));
        for p_start in (0..kb).step_by(SLAB) {
            let slab = SLAB.min(kb - p_start);
            for panel in ours.clone() {
                let col0 = j0 + panel * nr;
                let cols = nr.min(j0 + nb - col0);
                let out = &mut dst[((panel - first_panel) * kb + p_start) * nr..][..slab * nr];
                let base = (p0 + p_start) * b.rs + col0;
                let ahead = col0 + PREFETCH_PANELS * nr;
                if ahead < j0 + nb {
                    let ahead_cols = nr.min(j0 + nb - ahead);
                    let ahead_run = b.data[base + PREFETCH_PANELS * nr..].as_ptr();
                    for p in 0..slab {
                        prefetch_run(ahead_run.wrapping_add(p * b.rs), ahead_cols);
                    }
                }
                copy_runs(out, b.data, base, b.rs, cols, nr, slab);
                if cols < nr {
                    for line in out.chunks_exact_mut(nr) {
                        line[cols..].fill(0.0);
                    }
                }
            }
        }
        return;
    }
    for (idx, out) in dst.chunks_exact_mut(nr * kb).enumerate() {
        let panel = first_panel + idx;
        if panel >= panels {
            break;
        }
        let col0 = j0 + panel * nr;
        let cols = nr.min(j0 + nb - col0);
        let base = p0 * b.rs + col0 * b.cs;
        if b.rs == 1 {
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

/// How many panels ahead [`pack_b`] asks for the runs of its slab's rows. The rows are a row
/// of B apart, and a hardware prefetcher stops at each page's end, so every run of a wide B
/// starts cold without it: on one Zen 4 thread, 32×512×5408 ran at 65 GFLOP/s without, 72
/// with (32×2048×1000 74 → 79; squares and 32×128×5408 unchanged).
const PREFETCH_PANELS: usize = 4;

/// `out[p·width ..][..len] = data[base + p·stride ..][..len]` for p < kb: a run of `len`
/// contiguous floats (a row of B's panel) per packed line. Full runs of the registered tile widths
/// are fixed-size moves: `copy_from_slice` of a run-time length is a memmove call per 8–48 floats.
fn copy_runs(
    out: &mut [f32],
    data: &[f32],
    base: usize,
    stride: usize,
    len: usize,
    width: usize,
    kb: usize,
) {
    fn fixed<const W: usize>(out: &mut [f32], data: &[f32], base: usize, stride: usize, kb: usize) {
        for (p, dst) in out.chunks_exact_mut(W).take(kb).enumerate() {
            let src: &[f32; W] = data[base + p * stride..][..W].try_into().expect("W floats");
            dst.copy_from_slice(src);
        }
    }
    if len == width {
        match width {
            8 => return fixed::<8>(out, data, base, stride, kb),
            12 => return fixed::<12>(out, data, base, stride, kb),
            16 => return fixed::<16>(out, data, base, stride, kb),
            32 => return fixed::<32>(out, data, base, stride, kb),
            48 => return fixed::<48>(out, data, base, stride, kb),
            _ => {}
        }
    }
    for p in 0..kb {
        out[p * width..p * width + len].copy_from_slice(&data[base + p * stride..][..len]);
    }
}

/// `out[p·width + l] = lines[l][p]` for p < len and l < lines.len() ≤ width (a `None` line is
/// zeros): lines of any origin laid across a packed micro-panel (an implicit im2col matrix's
/// pixels, whose patch rows start anywhere in the input). Each run of present lines goes through
/// [`transpose_lines`].
pub(crate) fn pack_lines(out: &mut [f32], lines: &[Option<&[f32]>], width: usize, len: usize) {
    let mut l = 0;
    while l < lines.len() {
        // The run of present lines from l on, transposed together.
        let run = lines[l..].iter().take_while(|line| line.is_some()).count();
        if run > 0 {
            let line = |r: usize| lines[l + r].expect("present");
            transpose_lines(line, run, out, l, width, len);
            l += run;
            continue;
        }
        for p in 0..len {
            out[p * width + l] = 0.0;
        }
        l += 1;
    }
}

/// `out[p·width + l + r] = line(r)[p]` for r < count and p < len: eight lines at a time through
/// AVX registers where the CPU has them (a third fewer shuffles and half the loads and stores
/// per float of the SSE blocks), then four through SSE, then two (on x86-64), then one by one.
#[inline]
pub(crate) fn transpose_lines<'a>(
    line: impl Fn(usize) -> &'a [f32],
    count: usize,
    out: &mut [f32],
    l: usize,
    width: usize,
    len: usize,
) {
    let mut r = 0;
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx") {
        // SAFETY: the CPU has AVX (detected above).
        let avx8 = |src: [&[f32]; 8], out: &mut [f32], i: usize, w: usize, n: usize| unsafe {
            transpose_rows8(src, out, i, w, n)
        };
        in_blocks(
            &line,
            count,
            &mut r,
            (out, l, width, len),
            len / 8 * 8,
            avx8,
        );
    }
    in_blocks(
        &line,
        count,
        &mut r,
        (out, l, width, len),
        len / 4 * 4,
        transpose_rows4,
    );
    #[cfg(target_arch = "x86_64")]
    in_blocks(
        &line,
        count,
        &mut r,
        (out, l, width, len),
        len / 4 * 4,
        transpose_rows2,
    );
    for q in r..count {
        for (p, &v) in line(q)[..len].iter().enumerate() {
            out[p * width + l + q] = v;
        }
    }
}

/// [`transpose_lines`]'s lines `*r..`, `N` at a time while `N` remain: `block` lays out the
/// group's first `whole` values (a multiple of its width), the rest go one by one; `*r` ends
/// past the last whole group.
#[inline]
fn in_blocks<'a, const N: usize>(
    line: &impl Fn(usize) -> &'a [f32],
    count: usize,
    r: &mut usize,
    (out, l, width, len): (&mut [f32], usize, usize, usize),
    whole: usize,
    block: impl Fn([&[f32]; N], &mut [f32], usize, usize, usize),
) {
    while *r + N <= count {
        let src: [&[f32]; N] = std::array::from_fn(|q| &line(*r + q)[..len]);
        block(src, out, l + *r, width, whole);
        for p in whole..len {
            for (q, s) in src.iter().enumerate() {
                out[p * width + l + *r + q] = s[p];
            }
        }
        *r += N;
    }
}

/// `out[p·width + i + r] = rows[r][p]` for r < 8 and p < len8 (a multiple of 8): an 8 × 8 block
/// transpose in AVX registers (in-lane unpacks and shuffles, then 128-bit lane swaps).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
fn transpose_rows8(rows: [&[f32]; 8], out: &mut [f32], i: usize, width: usize, len8: usize) {
    use std::arch::x86_64::*;
    assert!(len8.is_multiple_of(8) && rows.iter().all(|r| r.len() >= len8));
    assert!(len8 == 0 || out.len() >= (len8 - 1) * width + i + 8);
    for p in (0..len8).step_by(8) {
        // SAFETY: p + 8 ≤ len8 ≤ every row's length, and the stores end at
        // (p + 7)·width + i + 8 ≤ out.len() (both asserted above).
        unsafe {
            let r0 = _mm256_loadu_ps(rows[0].as_ptr().add(p));
            let r1 = _mm256_loadu_ps(rows[1].as_ptr().add(p));
            let r2 = _mm256_loadu_ps(rows[2].as_ptr().add(p));
            let r3 = _mm256_loadu_ps(rows[3].as_ptr().add(p));
            let r4 = _mm256_loadu_ps(rows[4].as_ptr().add(p));
            let r5 = _mm256_loadu_ps(rows[5].as_ptr().add(p));
            let r6 = _mm256_loadu_ps(rows[6].as_ptr().add(p));
            let r7 = _mm256_loadu_ps(rows[7].as_ptr().add(p));
            // Per 128-bit lane: pairs, then quadruples of rows.
            let t0 = _mm256_unpacklo_ps(r0, r1);
            let t1 = _mm256_unpackhi_ps(r0, r1);
            let t2 = _mm256_unpacklo_ps(r2, r3);
            let t3 = _mm256_unpackhi_ps(r2, r3);
            let t4 = _mm256_unpacklo_ps(r4, r5);
            let t5 = _mm256_unpackhi_ps(r4, r5);
            let t6 = _mm256_unpacklo_ps(r6, r7);
            let t7 = _mm256_unpackhi_ps(r6, r7);
            let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
            let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
            let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
            let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
            let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
            let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
            let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
            let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
            // Column q of the block: the low lanes hold q < 4, the high lanes q ≥ 4.
            let dst = out.as_mut_ptr().add(p * width + i);
            _mm256_storeu_ps(dst, _mm256_permute2f128_ps::<0x20>(u0, u4));
            _mm256_storeu_ps(dst.add(width), _mm256_permute2f128_ps::<0x20>(u1, u5));
            _mm256_storeu_ps(dst.add(2 * width), _mm256_permute2f128_ps::<0x20>(u2, u6));
            _mm256_storeu_ps(dst.add(3 * width), _mm256_permute2f128_ps::<0x20>(u3, u7));
            _mm256_storeu_ps(dst.add(4 * width), _mm256_permute2f128_ps::<0x31>(u0, u4));
            _mm256_storeu_ps(dst.add(5 * width), _mm256_permute2f128_ps::<0x31>(u1, u5));
            _mm256_storeu_ps(dst.add(6 * width), _mm256_permute2f128_ps::<0x31>(u2, u6));
            _mm256_storeu_ps(dst.add(7 * width), _mm256_permute2f128_ps::<0x31>(u3, u7));
        }
    }
}

/// `out[p·width + l] = data[base + l·stride + p]` for l < count, p < kb: `count` contiguous lines
/// of `kb` values (rows of A, or columns of a transposed B) laid across a packed micro-panel of
/// `width`, through [`transpose_lines`].
fn pack_lines_across(
    out: &mut [f32],
    data: &[f32],
    base: usize,
    stride: usize,
    count: usize,
    width: usize,
    kb: usize,
) {
    let line = |l: usize| &data[base + l * stride..][..kb];
    transpose_lines(line, count, out, 0, width, kb);
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

/// `out[p·width + i + r] = rows[r][p]` for r < 2 and p < len4 (a multiple of 4): two rows
/// interleaved into pairs, 2 × 4 blocks at a time through SSE registers, each pair one 8-byte
/// store. The two rows left of a six-row tile's micro-panel after its 4 × 4 blocks had gone
/// element by element: packing A took 16 % of 1694×295×88 on AVX2's 6 × 16 tile in a profile,
/// 10.5 % with this, and the product ran 1.07× as fast (1000×300×100 1.04×; one Zen 4 thread,
/// medians of 11 interleaved rounds).
#[cfg(target_arch = "x86_64")]
fn transpose_rows2(rows: [&[f32]; 2], out: &mut [f32], i: usize, width: usize, len4: usize) {
    use std::arch::x86_64::*;
    assert!(len4.is_multiple_of(4) && rows.iter().all(|r| r.len() >= len4));
    assert!(len4 == 0 || out.len() >= (len4 - 1) * width + i + 2);
    for p in (0..len4).step_by(4) {
        // SAFETY: p + 4 ≤ len4 ≤ both rows' lengths, and the four 8-byte stores end at
        // (p + 3)·width + i + 2 ≤ out.len() (both asserted above); `_mm_storel_epi64` writes
        // unaligned; SSE2 is part of x86-64.
        unsafe {
            let r0 = _mm_loadu_ps(rows[0].as_ptr().add(p));
            let r1 = _mm_loadu_ps(rows[1].as_ptr().add(p));
            let lo = _mm_unpacklo_ps(r0, r1); // a0 b0 a1 b1
            let hi = _mm_unpackhi_ps(r0, r1); // a2 b2 a3 b3
            let dst = out.as_mut_ptr().add(p * width + i);
            _mm_storel_epi64(dst.cast(), _mm_castps_si128(lo));
            _mm_storel_epi64(
                dst.add(width).cast(),
                _mm_castps_si128(_mm_movehl_ps(lo, lo)),
            );
            _mm_storel_epi64(dst.add(2 * width).cast(), _mm_castps_si128(hi));
            _mm_storel_epi64(
                dst.add(3 * width).cast(),
                _mm_castps_si128(_mm_movehl_ps(hi, hi)),
            );
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every count of lines (the 8-, 4- and 2-line blocks and the single line after them) and
    /// every length (whole blocks of four or eight and a tail) lands each value where the
    /// element-by-element definition puts it, at an offset inside a wider panel, and leaves the
    /// panel's other slots alone.
    #[test]
    fn lines_land_across_the_panel_as_defined() {
        for count in 0..=19 {
            for len in 0..=13 {
                let (l, width) = (3, count + 5);
                let stride = len + 2;
                let data: Vec<f32> = (0..count * stride).map(|v| v as f32 + 0.5).collect();
                let mut out = vec![-1.0f32; len * width + l];
                transpose_lines(
                    |q| &data[q * stride..][..len],
                    count,
                    &mut out,
                    l,
                    width,
                    len,
                );
                for (at, &got) in out.iter().enumerate() {
                    let (p, c) = (at / width, at % width);
                    let want = if c >= l && c < l + count && p < len {
                        data[(c - l) * stride + p]
                    } else {
                        -1.0
                    };
                    assert_eq!(got, want, "{count} lines of {len}: slot {at}");
                }
            }
        }
    }
}
