//! Row-wise softmax, log-softmax and the fused softmax + cross-entropy on every path (forced),
//! against f64 references, with a finite-difference check of the cross-entropy gradient.
//! Bounds: softmax (|x − max| + 4)·2⁻²³ relative per element (the f32 shift by the row maximum
//! rounds); log-softmax 4·2⁻²³·max(1, |value|) absolute; gradient 8·2⁻²³·scale absolute; mean
//! loss 1e-5 relative.

use kernels::{math, Isa};
use proptest::prelude::*;

const ULP1: f64 = 1.0 / (1u64 << 23) as f64;

fn softmax64(row: &[f32]) -> Vec<f64> {
    let max = row.iter().fold(f64::NEG_INFINITY, |m, &x| m.max(x as f64));
    let e: Vec<f64> = row.iter().map(|&x| (x as f64 - max).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|v| v / s).collect()
}

fn matrix() -> impl Strategy<Value = (Vec<f32>, usize)> {
    (
        1usize..40,
        0usize..5,
        prop_oneof![Just(1.0f32), Just(30.0), Just(1e4)],
    )
        .prop_flat_map(|(cols, rows, scale)| {
            (
                prop::collection::vec(-1.0f32..1.0, cols * rows)
                    .prop_map(move |v| v.into_iter().map(|x| x * scale).collect()),
                Just(cols),
            )
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn softmax_and_log_softmax_match_f64((x, cols) in matrix()) {
        for isa in Isa::available() {
            let mut p = vec![0.0f32; x.len()];
            let mut lp = vec![0.0f32; x.len()];
            math::softmax_rows_with(&kernels::ExecOptions::with_isa(isa), &x, &mut p, cols).unwrap();
            math::log_softmax_rows_with(&kernels::ExecOptions::with_isa(isa), &x, &mut lp, cols).unwrap();
            for (r, row) in x.chunks(cols).enumerate() {
                let want = softmax64(row);
                let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
                let mut sum = 0.0f64;
                for j in 0..cols {
                    let (got, w) = (p[r * cols + j] as f64, want[j]);
                    sum += got;
                    if w >= f32::MIN_POSITIVE as f64 {
                        // The f32 shift x − max rounds by up to |x − max|·2⁻²⁴, which exp turns
                        // into that much relative error: inherent to f32 softmax.
                        let bound = ((row[j] - max).abs() as f64 + 4.0) * ULP1 * w;
                        prop_assert!((got - w).abs() <= bound, "{isa} softmax row {r} col {j}: {got} vs {w}");
                    } else {
                        prop_assert!((got - w).abs() <= 1e-44, "{isa}: {got} vs {w}");
                    }
                    // log-softmax in f64 directly (ln of a subnormal f64 softmax would lose digits).
                    let s64: f64 = row.iter().map(|&v| (v as f64 - max as f64).exp()).sum();
                    let lw = row[j] as f64 - max as f64 - s64.ln();
                    let lgot = lp[r * cols + j] as f64;
                    if lw.is_finite() {
                        prop_assert!((lgot - lw).abs() <= 4.0 * ULP1 * lw.abs().max(1.0), "{isa} log_softmax: {lgot} vs {lw}");
                    }
                }
                prop_assert!((sum - 1.0).abs() <= 1e-6, "{isa}: row {r} sums to {sum}");
            }
        }
    }

    #[test]
    fn cross_entropy_loss_and_gradient_match_f64((x, cols) in matrix(), seed in any::<u64>()) {
        let rows = x.len() / cols;
        // Targets: one-hot for even seeds, a smooth distribution otherwise.
        let t: Vec<f32> = (0..x.len()).map(|i| {
            let (r, j) = (i / cols, i % cols);
            if seed % 2 == 0 { (j == (seed as usize + r) % cols) as u8 as f32 } else { 1.0 / cols as f32 }
        }).collect();
        let scale = if rows > 0 { 1.0 / rows as f32 } else { 1.0 };
        for isa in Isa::available() {
            let mut g = vec![0.0f32; x.len()];
            let loss = math::softmax_cross_entropy_with(&kernels::ExecOptions::with_isa(isa), &x, &t, &mut g, cols, scale).unwrap();
            let mut want_loss = 0.0f64;
            for (r, row) in x.chunks(cols).enumerate() {
                let p = softmax64(row);
                for j in 0..cols {
                    let tj = t[r * cols + j] as f64;
                    if tj != 0.0 {
                        want_loss -= tj * p[j].ln();
                    }
                    let want_g = scale as f64 * (p[j] - tj);
                    prop_assert!((g[r * cols + j] as f64 - want_g).abs() <= 8.0 * ULP1 * scale as f64, "{isa} grad");
                }
            }
            let want_loss = if rows > 0 { want_loss / rows as f64 } else { 0.0 };
            prop_assert!((loss as f64 - want_loss).abs() <= 1e-5 * want_loss.abs().max(1.0), "{isa}: loss {loss} vs {want_loss}");
        }
    }
}

/// The gradient is the derivative of the loss: central differences of the mean loss, per logit.
/// Tolerance 2e-3 absolute: f32 loss values (~1) differenced at h = 1e-2 resolve about 1e-5, and
/// the truncation error of a central difference on softmax is O(h²) ≈ 1e-4.
#[test]
fn cross_entropy_gradient_is_the_finite_difference_of_the_loss() {
    let cols = 7;
    let x: Vec<f32> = (0..3 * cols)
        .map(|i| ((i * 37 % 11) as f32 - 5.0) * 0.4)
        .collect();
    let t: Vec<f32> = (0..3 * cols)
        .map(|i| if i % cols == (i / cols) * 2 { 1.0 } else { 0.0 })
        .collect();
    let rows = 3.0f32;
    let mut g = vec![0.0f32; x.len()];
    let mut scratch = vec![0.0f32; x.len()];
    math::softmax_cross_entropy(&x, &t, &mut g, cols, 1.0 / rows).unwrap();
    let h = 1e-2f32;
    for i in 0..x.len() {
        let mut xp = x.clone();
        xp[i] += h;
        let lp = math::softmax_cross_entropy(&xp, &t, &mut scratch, cols, 1.0).unwrap();
        xp[i] -= 2.0 * h;
        let lm = math::softmax_cross_entropy(&xp, &t, &mut scratch, cols, 1.0).unwrap();
        let fd = (lp - lm) / (2.0 * h);
        assert!(
            (fd - g[i]).abs() <= 2e-3,
            "logit {i}: finite difference {fd}, gradient {}",
            g[i]
        );
    }
}

#[test]
fn huge_logits_nan_rows_and_bad_shapes() {
    for isa in Isa::available() {
        let x = [1e30f32, -1e30, 0.0, f32::NAN, 1.0, 2.0];
        let mut y = [0.0f32; 6];
        math::softmax_rows_with(&kernels::ExecOptions::with_isa(isa), &x, &mut y, 3).unwrap();
        assert_eq!(&y[..3], &[1.0, 0.0, 0.0], "{isa}");
        assert!(
            y[3..].iter().all(|v| v.is_nan()),
            "{isa}: a NaN logit makes its row NaN"
        );
        math::log_softmax_rows_with(
            &kernels::ExecOptions::with_isa(isa),
            &x[..3],
            &mut y[..3],
            3,
        )
        .unwrap();
        assert_eq!(&y[..3], &[0.0, -2e30, -1e30], "{isa}");
    }
    let x = [0.0f32; 6];
    let mut y = [0.0f32; 6];
    assert_eq!(
        math::softmax_rows(&x, &mut y, 4).unwrap_err().to_string(),
        "argument cols = 4 is invalid: softmax_rows: 6 elements do not form whole rows of 4 columns"
    );
    assert_eq!(
        math::log_softmax_rows(&x, &mut y, 0).unwrap_err().to_string(),
        "argument cols = 0 is invalid: log_softmax_rows: 6 elements do not form whole rows of 0 columns"
    );
    assert_eq!(
        math::softmax_cross_entropy(&x, &x[..5], &mut y, 3, 1.0)
            .unwrap_err()
            .to_string(),
        "softmax_cross_entropy: the logits have 6 elements but the targets have 5"
    );
    assert_eq!(
        math::softmax_cross_entropy(&x, &x, &mut y[..5], 3, 1.0)
            .unwrap_err()
            .to_string(),
        "softmax_cross_entropy: the input has 6 elements but the output has 5"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// In place, the exponentials of up to 64 rows at a time: the same bits as row by row,
    /// over row counts across those blocks, NaN rows among them.
    #[test]
    fn softmax_in_place_matches_row_by_row_bit_for_bit(
        cols in 1usize..20,
        rows in prop_oneof![Just(0usize), Just(64), Just(65), 1usize..150],
        nan_row in proptest::option::of(0usize..150),
        seed in any::<u64>(),
    ) {
        let mut state = seed | 1;
        let mut x: Vec<f32> = (0..rows * cols)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 40.0
            })
            .collect();
        if let Some(r) = nan_row.filter(|&r| r < rows) {
            x[r * cols] = f32::NAN;
        }
        let mut want = vec![0.0f32; x.len()];
        math::softmax_rows(&x, &mut want, cols).unwrap();
        let mut got = x.clone();
        math::softmax_rows_in_place(&mut got, cols).unwrap();
        let bits = |v: &[f32]| v.iter().map(|e| e.to_bits()).collect::<Vec<_>>();
        prop_assert_eq!(bits(&got), bits(&want));
    }
}
