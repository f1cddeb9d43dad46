//! Convolution (forward, weight and input gradients) and pooling against the definitions in
//! `kernels::reference`, over random shapes, strides and paddings, on every instruction-set path.
//!
//! Tolerance per element: 2·(terms + 2)·2⁻²⁴·Σ|terms| + 1e-30, the dot-product bound of the GEMM
//! tests with `terms` the number of products summed (patch length forward, pixels for the weight
//! gradient, out_c·taps for the input gradient), plus the activation's accuracy.

use kernels::activation::{activation_backward, Activation};
use kernels::conv::{
    conv2d_backward_input, conv2d_backward_weights, conv2d_forward, Conv2d, Padding,
};
use kernels::conv_pool::{
    conv2d_maxpool_backward_weights, conv2d_maxpool_forward, Filter, PooledGradient, PooledOutput,
};
use kernels::pool::{
    avg_pool2d_backward, avg_pool2d_forward, max_pool2d_activation_backward, max_pool2d_backward,
    max_pool2d_forward, Pool2d,
};
use kernels::reference::{Path, Rng};
use kernels::{reference, ExecOptions, Isa, Threading};
use proptest::prelude::*;

const EPS: f64 = 1.0 / (1u64 << 24) as f64;

fn assert_close(
    what: &str,
    got: &[f32],
    want: &[f64],
    mag: &[f64],
    terms: usize,
) -> Result<(), String> {
    for i in 0..want.len() {
        let tol = 2.0 * (terms as f64 + 2.0) * EPS * mag[i] + 1e-30;
        if (got[i] as f64 - want[i]).abs() > tol {
            return Err(format!(
                "{what}: element {i} = {}, want {} (±{tol})",
                got[i], want[i]
            ));
        }
    }
    Ok(())
}

fn act64(act: Activation, x: f64) -> f64 {
    kernels::reference::activation(act, x)
}

fn check_conv(
    s: Conv2d,
    path: Path,
    act: Activation,
    with_bias: bool,
    seed: u64,
) -> Result<(), String> {
    let mut rng = Rng::new(seed);
    let x = rng.fill(s.input_len());
    let w = rng.fill(s.weight_len());
    let bias = rng.fill(s.out_c);
    let bias = with_bias.then_some(&bias[..]);
    let dy = rng.fill(s.output_len());
    let opts = path.opts();
    let ctx = format!("{path} {act:?} {s:?}");

    let mut y = vec![f32::NAN; s.output_len()];
    conv2d_forward(&opts, &s, &x, &w, bias, act, &mut y).map_err(|e| e.to_string())?;
    let (pre, mag) = reference::conv2d_forward(&s, &x, &w, bias);
    for i in 0..pre.len() {
        let want = act64(act, pre[i]);
        let tol = 2.0 * (s.patch_len() as f64 + 3.0) * EPS * mag[i] + want.abs() * 4e-7 + 1e-30;
        if (y[i] as f64 - want).abs() > tol {
            return Err(format!(
                "{ctx}: forward y[{i}] = {}, want {want} (±{tol})",
                y[i]
            ));
        }
    }

    let ((dx_ref, dx_mag), (dw_ref, dw_mag), db_ref) = reference::conv2d_backward(&s, &x, &w, &dy);
    let mut dw = vec![f32::NAN; s.weight_len()];
    let mut db = vec![f32::NAN; s.out_c];
    conv2d_backward_weights(&opts, &s, &x, &dy, &mut dw, Some(&mut db))
        .map_err(|e| e.to_string())?;
    let pixels = s.batch * s.out_pixels();
    assert_close(&format!("{ctx}: dw"), &dw, &dw_ref, &dw_mag, pixels)?;
    let db_mag: Vec<f64> = (0..s.out_c)
        .map(|o| {
            dy.iter()
                .skip(o)
                .step_by(s.out_c)
                .map(|v| v.abs() as f64)
                .sum()
        })
        .collect();
    assert_close(&format!("{ctx}: db"), &db, &db_ref, &db_mag, pixels)?;

    let mut dx = vec![f32::NAN; s.input_len()];
    conv2d_backward_input(&opts, &s, &dy, &w, &mut dx).map_err(|e| e.to_string())?;
    let taps = s.kernel_h * s.kernel_w * s.out_c;
    assert_close(&format!("{ctx}: dx"), &dx, &dx_ref, &dx_mag, taps)?;
    Ok(())
}

fn conv_shape() -> impl Strategy<Value = Conv2d> {
    (
        0usize..4,
        (
            1usize..10,
            1usize..10,
            prop_oneof![
                1usize..4,
                Just(7usize),
                Just(8usize),
                Just(13usize),
                Just(16usize)
            ],
        ),
        prop_oneof![1usize..5, Just(17usize), Just(32usize)],
        (1usize..5, 1usize..4),
        (1usize..4, 1usize..4),
        any::<bool>(),
    )
        .prop_map(
            |(batch, (in_h, in_w, in_c), out_c, (kh, kw), (sh, sw), same)| {
                layer(batch, (in_h, in_w, in_c), out_c, (kh, kw), (sh, sw), same)
            },
        )
}

/// The layer of these sizes, its kernel cut to the image for 'valid' padding (which needs the
/// kernel to fit).
fn layer(
    batch: usize,
    (in_h, in_w, in_c): (usize, usize, usize),
    out_c: usize,
    (kh, kw): (usize, usize),
    (sh, sw): (usize, usize),
    same: bool,
) -> Conv2d {
    let padding = if same { Padding::Same } else { Padding::Valid };
    let (kh, kw) = if same {
        (kh, kw)
    } else {
        (kh.min(in_h), kw.min(in_w))
    };
    Conv2d {
        batch,
        in_h,
        in_w,
        in_c,
        out_c,
        kernel_h: kh,
        kernel_w: kw,
        stride_h: sh,
        stride_w: sw,
        padding,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn conv_matches_the_definition_on_every_path(
        s in conv_shape(),
        act in 0usize..4,
        with_bias: bool,
        seed: u64,
    ) {
        let act = [Activation::Identity, Activation::Relu, Activation::Sigmoid, Activation::Tanh][act];
        for path in Path::all() {
            check_conv(s, path, act, with_bias, seed).map_err(TestCaseError::fail)?;
        }
    }
}

/// Stride-1 layers over 2 to 40 input channels: the shifted paths, and the taps tiles
/// (output pixels crossing image rows, partial tiles of rows and of channels, each tile of
/// the forward pass — 16, 32, 48 and 64 wide — one to five kernel rows as taps, 'same' through
/// a padded copy and 'valid' in place).
fn stride_one_shape() -> impl Strategy<Value = Conv2d> {
    (
        1usize..4,
        (1usize..6, 1usize..6),
        (4usize..15, 4usize..15),
        prop_oneof![
            2usize..9,
            Just(13usize),
            Just(16usize),
            Just(24usize),
            Just(40usize)
        ],
        prop_oneof![
            1usize..10,
            15usize..18,
            30usize..34,
            47usize..50,
            63usize..71
        ],
        any::<bool>(),
    )
        .prop_map(|(batch, (kh, kw), (in_h, in_w), in_c, out_c, same)| {
            layer(batch, (in_h, in_w, in_c), out_c, (kh, kw), (1, 1), same)
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]
    #[test]
    fn stride_one_convolutions_match_the_definition_on_every_path(
        s in stride_one_shape(),
        act in 0usize..4,
        with_bias: bool,
        seed: u64,
    ) {
        let act = [Activation::Identity, Activation::Relu, Activation::Sigmoid, Activation::Tanh][act];
        for path in Path::all() {
            check_conv(s, path, act, with_bias, seed).map_err(TestCaseError::fail)?;
        }
    }
}

/// The shapes the benchmarks and the reference CNN use, including a batch larger than the task
/// count and a patch larger than one im2col chunk's row budget.
#[test]
fn training_shapes_match_the_definition() {
    let shapes = [
        Conv2d::square(40, (28, 28, 1), 32, 3, Padding::Valid),
        // The 3×3 one-channel kernels (AVX-512, AVX2): a partial lane group, three groups (a pair and a
        // single pass), stride 2, and 'same' padding (through a zero-padded copy of the images:
        // odd and even sizes, stride 2 with padding after the image only).
        Conv2d::square(3, (9, 7, 1), 17, 3, Padding::Valid),
        Conv2d::square(2, (6, 11, 1), 48, 3, Padding::Valid),
        Conv2d {
            stride_h: 2,
            stride_w: 2,
            ..Conv2d::square(2, (10, 9, 1), 20, 3, Padding::Valid)
        },
        Conv2d::square(2, (8, 8, 1), 16, 3, Padding::Same),
        Conv2d::square(5, (28, 28, 1), 16, 3, Padding::Same),
        Conv2d::square(3, (7, 9, 1), 40, 3, Padding::Same),
        Conv2d {
            stride_h: 2,
            stride_w: 2,
            ..Conv2d::square(2, (10, 9, 1), 20, 3, Padding::Same)
        },
        Conv2d::square(2, (12, 12, 64), 24, 3, Padding::Same),
        // The shifted weight gradient in two bands of rows per image.
        Conv2d::square(2, (70, 30, 64), 64, 3, Padding::Same),
        // The shifted passes in two bands: 'valid' (reading the input in place), and 'same'
        // (the transposed weight gradient of few output channels over padded copies).
        Conv2d::square(1, (90, 20, 128), 32, 3, Padding::Valid),
        Conv2d::square(1, (80, 22, 128), 24, 3, Padding::Same),
        // 'Same' with an even kernel side pads after the image only (the shifted paths must
        // copy it, not read the input in place).
        Conv2d {
            kernel_h: 2,
            kernel_w: 1,
            ..Conv2d::square(1, (3, 3, 8), 1, 1, Padding::Same)
        },
        Conv2d {
            kernel_h: 1,
            kernel_w: 2,
            ..Conv2d::square(2, (5, 6, 8), 3, 1, Padding::Same)
        },
        Conv2d::square(1, (9, 20, 16), 8, 5, Padding::Valid),
        // The shifted input gradient: 'valid' (zero rows above and below its copy of dy) and
        // 'same', one band; 'valid' in two bands.
        Conv2d::square(5, (13, 13, 16), 32, 3, Padding::Valid),
        Conv2d::square(3, (14, 14, 32), 32, 3, Padding::Same),
        Conv2d::square(1, (300, 20, 32), 16, 3, Padding::Valid),
        // Bands of more output rows than a weight-gradient taps tile sums in its registers
        // (68 and 78 of 64; transposed and not), and a tall taps kernel (more rows than the taps path takes: the general
        // one).
        Conv2d::square(2, (70, 6, 8), 4, 3, Padding::Valid),
        Conv2d::square(1, (80, 8, 8), 40, 3, Padding::Valid),
        Conv2d {
            kernel_h: 17,
            ..Conv2d::square(1, (20, 12, 16), 8, 3, Padding::Same)
        },
        // Bands wholly in kernel row 0's padding rows (fewer input rows than it reaches).
        Conv2d::square(2, (1, 16, 16), 16, 3, Padding::Same),
        Conv2d::square(1, (3, 40, 16), 16, 7, Padding::Same),
        Conv2d {
            stride_h: 2,
            stride_w: 2,
            ..Conv2d::square(3, (15, 15, 3), 8, 5, Padding::Same)
        },
    ];
    for s in shapes {
        for path in Path::for_large_cases() {
            check_conv(s, path, Activation::Relu, true, 9).unwrap();
        }
    }
}

#[test]
fn results_do_not_depend_on_the_thread_count() {
    // Im2col paths, then the shifted weight gradient with one task (its GEMMs use the threads)
    // and with many.
    for s in [
        Conv2d::square(37, (14, 14, 3), 16, 3, Padding::Same),
        Conv2d::square(1, (20, 20, 16), 32, 3, Padding::Same),
        Conv2d::square(5, (9, 9, 16), 8, 3, Padding::Valid),
        Conv2d::square(6, (12, 10, 24), 32, 3, Padding::Valid),
        Conv2d::square(4, (13, 13, 16), 32, 3, Padding::Valid),
    ] {
        same_bits_on_any_thread_count(s);
    }
}

fn same_bits_on_any_thread_count(s: Conv2d) {
    let mut rng = Rng::new(1);
    let x = rng.fill(s.input_len());
    let w = rng.fill(s.weight_len());
    let dy = rng.fill(s.output_len());
    let run = |threads: usize, threading: Threading| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let opts = ExecOptions {
                threading,
                ..ExecOptions::default()
            };
            let mut y = vec![0.0; s.output_len()];
            let mut dw = vec![0.0; s.weight_len()];
            let mut db = vec![0.0; s.out_c];
            let mut dx = vec![0.0; s.input_len()];
            conv2d_forward(&opts, &s, &x, &w, None, Activation::Tanh, &mut y).unwrap();
            conv2d_backward_weights(&opts, &s, &x, &dy, &mut dw, Some(&mut db)).unwrap();
            conv2d_backward_input(&opts, &s, &dy, &w, &mut dx).unwrap();
            (y, dw, db, dx)
        })
    };
    let one = run(1, Threading::Single);
    assert_eq!(one, run(2, Threading::Rayon));
    assert_eq!(one, run(3, Threading::Rayon));
}

#[test]
fn bad_shapes_are_errors_naming_the_buffer() {
    let s = Conv2d::square(2, (5, 5, 3), 4, 3, Padding::Valid);
    let opts = ExecOptions::default();
    let x = vec![0.0; s.input_len()];
    let w = vec![0.0; s.weight_len()];
    let mut y = vec![0.0; s.output_len()];
    let err = conv2d_forward(&opts, &s, &x[1..], &w, None, Activation::Relu, &mut y).unwrap_err();
    assert_eq!(
        err.to_string(),
        "conv2d_forward: input x has 149 elements but a 2×5×5×3 tensor needs 150"
    );
    let err =
        conv2d_forward(&opts, &s, &x, &w, Some(&[0.0; 3]), Activation::Relu, &mut y).unwrap_err();
    assert!(err.to_string().contains("bias has 3 elements"), "{err}");
    let mut dw = vec![0.0; s.weight_len() + 1];
    let err = conv2d_backward_weights(&opts, &s, &x, &y, &mut dw, None).unwrap_err();
    assert!(
        err.to_string()
            .contains("weight gradient dw has 109 elements but a 3×3×3×4"),
        "{err}"
    );
    let big = Conv2d::square(1, (2, 2, 1), 1, 3, Padding::Valid);
    let err = big.validate().unwrap_err();
    assert!(
        err.to_string()
            .contains("a 3×3 kernel does not fit a 2×2 input"),
        "{err}"
    );
    let zero = Conv2d { stride_h: 0, ..s };
    assert!(zero
        .validate()
        .unwrap_err()
        .to_string()
        .contains("stride_h = 0"));
}

/// Max pooling on `isa` against the definition (ties: the first maximum in scan order), and its
/// backward pass against routing each gradient to the recorded argmax.
fn check_max_pool(s: Pool2d, seed: u64, nan: bool, isa: Isa) -> Result<(), String> {
    let opts = ExecOptions::with_isa(isa);
    let mut rng = Rng::new(seed);
    // Coarse values so windows have ties.
    let mut x: Vec<f32> = rng
        .fill(s.input_len())
        .iter()
        .map(|v| (v * 4.0).round())
        .collect();
    if nan && !x.is_empty() {
        let i = (seed as usize) % x.len();
        x[i] = f32::NAN;
    }
    let mut y = vec![0.0; s.output_len()];
    let mut arg = vec![0u32; s.output_len()];
    max_pool2d_forward(&opts, &s, &x, &mut y, Some(&mut arg)).map_err(|e| e.to_string())?;
    let want = reference::max_pool2d(&s, &x);
    let image = s.in_h * s.in_w * s.channels;
    let out_image = s.out_h() * s.out_w() * s.channels;
    let same = |a: f32, b: f32| a == b || (a.is_nan() && b.is_nan());
    // Without the argmax (inference), the same maxima.
    let mut y_only = vec![0.0; s.output_len()];
    max_pool2d_forward(&opts, &s, &x, &mut y_only, None).map_err(|e| e.to_string())?;
    if let Some(i) = (0..want.len()).find(|&i| !same(y_only[i], want[i])) {
        return Err(format!(
            "{isa} {s:?} without argmax: y[{i}] = {}, want {}",
            y_only[i], want[i]
        ));
    }
    // Ties go to the window's first position on every path: the same argmax as the portable
    // sequential scan.
    let mut scalar_arg = vec![0u32; s.output_len()];
    let scalar = ExecOptions::with_isa(Isa::Scalar);
    max_pool2d_forward(&scalar, &s, &x, &mut y_only, Some(&mut scalar_arg))
        .map_err(|e| e.to_string())?;
    if let Some(i) = (0..arg.len()).find(|&i| arg[i] != scalar_arg[i]) {
        return Err(format!(
            "{isa} {s:?}: argmax[{i}] = {}, the sequential scan's {}",
            arg[i], scalar_arg[i]
        ));
    }
    for i in 0..want.len() {
        if !same(y[i], want[i]) {
            return Err(format!("{isa} {s:?}: y[{i}] = {}, want {}", y[i], want[i]));
        }
        let src = x[(i / out_image) * image + arg[i] as usize];
        if !same(src, y[i]) || (arg[i] as usize) % s.channels != i % s.channels {
            return Err(format!("{isa} {s:?}: argmax[{i}] = {} holds {src}", arg[i]));
        }
    }
    // Backward: each gradient lands on its argmax, nothing else.
    let dy = rng.fill(s.output_len());
    let mut dx = vec![f32::NAN; s.input_len()];
    max_pool2d_backward(&opts, &s, &dy, &arg, &mut dx).map_err(|e| e.to_string())?;
    let mut want_dx = vec![0.0f64; s.input_len()];
    for i in 0..dy.len() {
        want_dx[(i / out_image) * image + arg[i] as usize] += dy[i] as f64;
    }
    for i in 0..dx.len() {
        if (dx[i] as f64 - want_dx[i]).abs() > 1e-6 * (1.0 + want_dx[i].abs()) {
            return Err(format!(
                "{isa} {s:?}: dx[{i}] = {}, want {}",
                dx[i], want_dx[i]
            ));
        }
    }
    Ok(())
}

fn pool_shape() -> impl Strategy<Value = Pool2d> {
    (
        0usize..4,
        1usize..9,
        1usize..9,
        // Whole 8- and 16-lane vectors take the explicit SIMD paths.
        prop_oneof![
            1usize..6,
            Just(8usize),
            Just(16usize),
            Just(24usize),
            Just(32usize)
        ],
        1usize..4,
        1usize..4,
        1usize..4,
        any::<bool>(),
    )
        .prop_map(|(batch, in_h, in_w, channels, p, sh, sw, same)| {
            let padding = if same { Padding::Same } else { Padding::Valid };
            let (ph, pw) = if same {
                (p, p)
            } else {
                (p.min(in_h), p.min(in_w))
            };
            Pool2d {
                batch,
                in_h,
                in_w,
                channels,
                pool_h: ph,
                pool_w: pw,
                stride_h: sh,
                stride_w: sw,
                padding,
            }
        })
}

/// Keras's default 2×2 pooling over whole vectors of channels (the explicit SIMD kernels' tree
/// path), with and without a NaN, odd sizes included.
#[test]
fn default_max_pooling_matches_the_definition() {
    for (seed, channels) in [8, 16, 24, 32, 48].into_iter().enumerate() {
        for (h, w) in [(2, 2), (7, 6), (26, 26)] {
            let s = Pool2d::new(2, (h, w, channels), 2);
            for isa in Isa::available() {
                for nan in [false, true] {
                    check_max_pool(s, seed as u64, nan, isa).unwrap();
                }
            }
        }
    }
}

/// Keras's default average pooling (2×2, stride 2, 'valid': its own loops), odd sides
/// included (a row and a column no window covers, whose gradient is zero): the definition, and
/// the backward pass its exact transpose — each input in a window gets a quarter of its
/// gradient, every other input zero.
#[test]
fn default_avg_pooling_matches_the_definition() {
    for (seed, channels) in [1, 3, 16, 24].into_iter().enumerate() {
        for (h, w) in [(2, 2), (7, 6), (13, 13), (14, 15)] {
            let s = Pool2d::new(2, (h, w, channels), 2);
            for isa in Isa::available() {
                let opts = ExecOptions::with_isa(isa);
                let mut rng = Rng::new(seed as u64);
                // Signed zeros, infinities and a NaN among the values: the bits must be the
                // general loop's (each window's four inputs summed in scan order from +0, then
                // scaled by 1/4), not only close to the definition.
                let specials = [0.0, -0.0, f32::INFINITY, f32::NEG_INFINITY, f32::NAN];
                let with_specials = |mut v: Vec<f32>| {
                    for (k, &special) in specials.iter().enumerate() {
                        let at = (k * 7919 + 3) % v.len();
                        v[at] = special;
                    }
                    v
                };
                let x = with_specials(rng.fill(s.input_len()));
                let mut y = vec![f32::NAN; s.output_len()];
                avg_pool2d_forward(&opts, &s, &x, &mut y).unwrap();
                let (oh, ow) = (h / 2, w / 2);
                let at = |n: usize, iy: usize, ix: usize, ch: usize| {
                    x[((n * h + iy) * w + ix) * channels + ch]
                };
                for (i, &got) in y.iter().enumerate() {
                    let (n, oy, ox, ch) = (
                        i / (oh * ow * channels),
                        i / (ow * channels) % oh,
                        i / channels % ow,
                        i % channels,
                    );
                    let (iy, ix) = (2 * oy, 2 * ox);
                    let sum = 0.0 + at(n, iy, ix, ch) + at(n, iy, ix + 1, ch);
                    let want = (sum + at(n, iy + 1, ix, ch) + at(n, iy + 1, ix + 1, ch)) * 0.25;
                    assert!(
                        got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                        "{isa} {h}×{w}×{channels} y[{i}]: {got} against {want}"
                    );
                }
                let finite: Vec<f32> = x
                    .iter()
                    .map(|v| if v.is_finite() { *v } else { 0.0 })
                    .collect();
                let mut y_finite = vec![0.0; s.output_len()];
                avg_pool2d_forward(&opts, &s, &finite, &mut y_finite).unwrap();
                let reference = reference::avg_pool2d(&s, &finite);
                for (i, (&got, &want)) in y_finite.iter().zip(&reference).enumerate() {
                    assert!(
                        (got - want).abs() <= 1e-6,
                        "{isa} {h}×{w}×{channels} y[{i}] against the definition"
                    );
                }
                let dy = with_specials(rng.fill(s.output_len()));
                let mut dx = vec![f32::NAN; s.input_len()];
                avg_pool2d_backward(&opts, &s, &dy, &mut dx).unwrap();
                for (i, &got) in dx.iter().enumerate() {
                    let (n, iy, ix, ch) = (
                        i / (h * w * channels),
                        i / (w * channels) % h,
                        i / channels % w,
                        i % channels,
                    );
                    let want = if iy < 2 * oh && ix < 2 * ow {
                        0.0 + dy[((n * oh + iy / 2) * ow + ix / 2) * channels + ch] * 0.25
                    } else {
                        0.0
                    };
                    assert!(
                        got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                        "{isa} {h}×{w}×{channels} dx[{i}]: {got} against {want}"
                    );
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]
    #[test]
    fn max_pool_matches_the_definition(s in pool_shape(), seed: u64, nan: bool) {
        for isa in Isa::available() {
            check_max_pool(s, seed, nan, isa).map_err(TestCaseError::fail)?;
        }
    }

    #[test]
    fn avg_pool_matches_the_definition_and_its_adjoint(s in pool_shape(), seed: u64) {
        for isa in Isa::available() {
            let opts = ExecOptions::with_isa(isa);
            let mut rng = Rng::new(seed);
            let x = rng.fill(s.input_len());
            let mut y = vec![0.0; s.output_len()];
            avg_pool2d_forward(&opts, &s, &x, &mut y).unwrap();
            let want = reference::avg_pool2d(&s, &x);
            for i in 0..want.len() {
                prop_assert!((y[i] - want[i]).abs() <= 1e-6, "{} y[{}] {} vs {}", isa, i, y[i], want[i]);
            }
            // The backward pass is the transpose of the (linear) forward: <A x, dy> = <x, Aᵀ dy>.
            let dy = rng.fill(s.output_len());
            let mut dx = vec![f32::NAN; s.input_len()];
            avg_pool2d_backward(&opts, &s, &dy, &mut dx).unwrap();
            let lhs: f64 = y.iter().zip(&dy).map(|(&a, &b)| a as f64 * b as f64).sum();
            let rhs: f64 = x.iter().zip(&dx).map(|(&a, &b)| a as f64 * b as f64).sum();
            prop_assert!((lhs - rhs).abs() <= 1e-5 * (1.0 + lhs.abs()), "{} {} vs {}", isa, lhs, rhs);
        }
    }
}

#[test]
fn pooling_rejects_bad_input() {
    let s = Pool2d::new(2, (4, 4, 3), 2);
    let x = vec![0.0; s.input_len()];
    let mut y = vec![0.0; s.output_len()];
    let mut arg = vec![0u32; s.output_len() - 1];
    let err =
        max_pool2d_forward(&ExecOptions::default(), &s, &x, &mut y, Some(&mut arg)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "max_pool2d_forward: argmax has 23 elements but a 2×2×2×3 tensor needs 24"
    );
    let arg = vec![48u32; s.output_len()];
    let mut dx = vec![0.0; s.input_len()];
    let err = max_pool2d_backward(&ExecOptions::default(), &s, &y, &arg, &mut dx).unwrap_err();
    assert!(
        err.to_string().contains(
            "argument argmax = 48 is invalid: image 0, output (0, 0), channel 0: not a position \
             of its window (rows 0..2, columns 0..2) in channel 0"
        ),
        "{err}"
    );
    let err = Pool2d::new(1, (1, 4, 1), 2).validate().unwrap_err();
    assert!(
        err.to_string()
            .contains("a 2×2 pool does not fit a 1×4 input"),
        "{err}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    /// Convolution and max pooling fused give exactly the bits of the two calls in turn, with
    /// and without keeping the convolution's output, on every path.
    #[test]
    fn fused_conv_and_pool_match_the_separate_calls(
        s in conv_shape(),
        pool in 1usize..4,
        act in 0usize..4,
        seed: u64,
    ) {
        let act = [Activation::Identity, Activation::Relu, Activation::Sigmoid, Activation::Tanh][act];
        let p = Pool2d::new(s.batch, (s.out_h(), s.out_w(), s.out_c), pool);
        prop_assume!(s.out_h() >= pool && s.out_w() >= pool);
        let mut rng = Rng::new(seed);
        let x = rng.fill(s.input_len());
        let w = rng.fill(s.weight_len());
        let b = rng.fill(s.out_c);
        for isa in Isa::available() {
            let opts = ExecOptions::with_isa(isa);
            let mut y = vec![0.0; s.output_len()];
            let mut yp = vec![0.0; p.output_len()];
            let mut am = vec![0u32; p.output_len()];
            conv2d_forward(&opts, &s, &x, &w, Some(&b), act, &mut y).unwrap();
            max_pool2d_forward(&opts, &p, &y, &mut yp, Some(&mut am)).unwrap();
            let mut y2 = vec![f32::NAN; s.output_len()];
            let mut yp2 = vec![f32::NAN; p.output_len()];
            let mut am2 = vec![7u32; p.output_len()];
            conv2d_maxpool_forward(&opts, &s, &p, &x, Filter { weights: &w, bias: Some(&b), act }, PooledOutput { y_conv: Some(&mut y2), y_pool: &mut yp2, argmax: Some(&mut am2) }).unwrap();
            prop_assert_eq!(&y, &y2);
            prop_assert_eq!(&yp, &yp2);
            prop_assert_eq!(&am, &am2);
            let mut yp3 = vec![f32::NAN; p.output_len()];
            let mut am3 = vec![7u32; p.output_len()];
            conv2d_maxpool_forward(&opts, &s, &p, &x, Filter { weights: &w, bias: Some(&b), act }, PooledOutput { y_conv: None, y_pool: &mut yp3, argmax: Some(&mut am3) }).unwrap();
            prop_assert_eq!(&yp, &yp3);
            prop_assert_eq!(&am, &am3);
            // Inference: neither the convolution's output nor the argmax.
            let mut yp4 = vec![f32::NAN; p.output_len()];
            conv2d_maxpool_forward(&opts, &s, &p, &x, Filter { weights: &w, bias: Some(&b), act }, PooledOutput { y_conv: None, y_pool: &mut yp4, argmax: None }).unwrap();
            prop_assert_eq!(&yp, &yp4);
            // The backward passes of pooling and activation in one = the two in turn.
            let dy = rng.fill(p.output_len());
            let mut dx = vec![f32::NAN; s.output_len()];
            max_pool2d_backward(&opts, &p, &dy, &am, &mut dx).unwrap();
            activation_backward(&kernels::ExecOptions::with_isa(isa), act, &y, &mut dx).unwrap();
            let mut dx2 = vec![f32::NAN; s.output_len()];
            max_pool2d_activation_backward(&opts, &p, act, &yp, &dy, &am, &mut dx2).unwrap();
            prop_assert_eq!(&dx, &dx2);
        }
    }
}

/// The weight gradient from the pooling's gradient (`conv2d_maxpool_backward_weights`) gives the
/// bits of the pooling's backward pass then the weight gradient, on `path`.
fn check_pooled_weight_gradient(
    s: Conv2d,
    p: Pool2d,
    act: Activation,
    seed: u64,
    path: Path,
) -> Result<(), String> {
    let mut rng = Rng::new(seed);
    let x = rng.fill(s.input_len());
    let w = rng.fill(s.weight_len());
    let b = rng.fill(s.out_c);
    let opts = path.opts();
    let mut yp = vec![0.0; p.output_len()];
    let mut am = vec![0u32; p.output_len()];
    conv2d_maxpool_forward(
        &opts,
        &s,
        &p,
        &x,
        Filter {
            weights: &w,
            bias: Some(&b),
            act,
        },
        PooledOutput {
            y_conv: None,
            y_pool: &mut yp,
            argmax: Some(&mut am),
        },
    )
    .map_err(|e| e.to_string())?;
    let mut dyp = rng.fill(p.output_len());
    // Some exact zeros and negative zeros among the gradients.
    for (i, d) in dyp.iter_mut().enumerate() {
        match i % 7 {
            3 => *d = 0.0,
            5 => *d = -0.0,
            _ => {}
        }
    }
    let mut dy = vec![f32::NAN; s.output_len()];
    max_pool2d_activation_backward(&opts, &p, act, &yp, &dyp, &am, &mut dy)
        .map_err(|e| e.to_string())?;
    let (mut dw, mut db) = (vec![f32::NAN; s.weight_len()], vec![f32::NAN; s.out_c]);
    conv2d_backward_weights(&opts, &s, &x, &dy, &mut dw, Some(&mut db))
        .map_err(|e| e.to_string())?;
    let (mut dw2, mut db2) = (vec![f32::NAN; s.weight_len()], vec![f32::NAN; s.out_c]);
    let pooled = PooledGradient {
        act,
        y_pool: &yp,
        dy_pool: &dyp,
        argmax: &am,
    };
    conv2d_maxpool_backward_weights(&opts, &s, &p, &x, pooled, &mut dw2, Some(&mut db2))
        .map_err(|e| e.to_string())?;
    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
    if bits(&dw) != bits(&dw2) || bits(&db) != bits(&db2) {
        return Err(format!(
            "{path} {act:?} {s:?} {p:?}: fused {dw2:?} {db2:?}, separate {dw:?} {db:?}"
        ));
    }
    let mut dw3 = vec![f32::NAN; s.weight_len()];
    conv2d_maxpool_backward_weights(&opts, &s, &p, &x, pooled, &mut dw3, None)
        .map_err(|e| e.to_string())?;
    if bits(&dw) != bits(&dw3) {
        return Err(format!("{path} {act:?} {s:?}: without db"));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    /// The fused weight gradient on one-channel 3×3 layers (the direct kernels' case): windows
    /// apart or overlapping, rows and columns no window covers, partial lane groups, strides.
    #[test]
    fn pooled_weight_gradient_of_one_channel_layers_matches_the_separate_calls(
        batch in 0usize..4,
        (in_h, in_w) in (3usize..16, 3usize..16),
        out_c in prop_oneof![1usize..20, Just(32usize), Just(40usize)],
        stride in 1usize..3,
        (pool, pool_stride) in (1usize..4, 1usize..4),
        act in 0usize..4,
        seed: u64,
    ) {
        let act = [Activation::Identity, Activation::Relu, Activation::Sigmoid, Activation::Tanh][act];
        let s = Conv2d {
            stride_h: stride,
            stride_w: stride,
            ..Conv2d::square(batch, (in_h, in_w, 1), out_c, 3, Padding::Valid)
        };
        prop_assume!(s.out_h() >= pool && s.out_w() >= pool);
        let p = Pool2d {
            stride_h: pool_stride,
            stride_w: pool_stride,
            ..Pool2d::new(batch, (s.out_h(), s.out_w(), out_c), pool)
        };
        for path in Path::all() {
            check_pooled_weight_gradient(s, p, act, seed, path).map_err(TestCaseError::fail)?;
        }
    }

    /// The same on every other convolution (the unfused passes through a scratch buffer).
    #[test]
    fn pooled_weight_gradient_matches_the_separate_calls(
        s in conv_shape(),
        pool in 1usize..4,
        same in any::<bool>(),
        seed: u64,
    ) {
        prop_assume!(s.out_h() >= pool && s.out_w() >= pool);
        let p = Pool2d {
            padding: if same { Padding::Same } else { Padding::Valid },
            ..Pool2d::new(s.batch, (s.out_h(), s.out_w(), s.out_c), pool)
        };
        for path in Path::all() {
            check_pooled_weight_gradient(s, p, Activation::Relu, seed, path)
                .map_err(TestCaseError::fail)?;
        }
    }
}

/// Several images per task (a batch above the task count), for the direct 3×3 kernel, the
/// portable direct kernel (5×5) and an im2col layer.
#[test]
fn pooled_weight_gradient_with_several_images_per_task() {
    for (s, pool) in [
        (Conv2d::square(70, (28, 28, 1), 32, 3, Padding::Valid), 2),
        (Conv2d::square(40, (12, 11, 1), 12, 5, Padding::Valid), 3),
        (Conv2d::square(35, (8, 8, 3), 16, 3, Padding::Same), 2),
    ] {
        let p = Pool2d::new(s.batch, (s.out_h(), s.out_w(), s.out_c), pool);
        for path in Path::all() {
            check_pooled_weight_gradient(s, p, Activation::Relu, 3, path).unwrap();
        }
    }
}

#[test]
fn pooled_weight_gradient_checks_its_arguments() {
    let s = Conv2d::square(2, (8, 8, 1), 4, 3, Padding::Valid);
    let p = Pool2d::new(2, (6, 6, 4), 2);
    let x = vec![0.0; s.input_len()];
    let (yp, dyp) = (vec![0.0; p.output_len()], vec![0.0; p.output_len()]);
    // Each window's first position, in its channel: a valid argmax.
    let mut am: Vec<u32> = (0..p.output_len())
        .map(|i| {
            let (q, ch) = ((i / 4) % 9, i % 4);
            (((q / 3) * 2 * 6 + (q % 3) * 2) * 4 + ch) as u32
        })
        .collect();
    let (mut dw, mut db) = (vec![0.0; s.weight_len()], vec![0.0; 4]);
    let opts = ExecOptions::default();
    let act = Activation::Relu;
    let run = |p: &Pool2d, am: &[u32], dyp: &[f32], dw: &mut [f32], db: &mut [f32]| {
        conv2d_maxpool_backward_weights(
            &opts,
            &s,
            p,
            &x,
            PooledGradient {
                act,
                y_pool: &yp,
                dy_pool: dyp,
                argmax: am,
            },
            dw,
            Some(db),
        )
        .unwrap_err()
        .to_string()
    };
    let wrong = Pool2d::new(2, (5, 6, 4), 2);
    assert_eq!(
        run(&wrong, &am, &dyp, &mut dw, &mut db),
        "conv2d_maxpool_backward_weights: the pooling takes 2×5×6×4 inputs but the convolution \
         gives 2×6×6×4"
    );
    assert!(run(&p, &am, &dyp[1..], &mut dw, &mut db)
        .contains("pooled gradient dy_pool has 71 elements"));
    assert!(run(&p, &am, &dyp, &mut dw[1..], &mut db).contains("weight gradient dw has 35"));
    am[5] = 6 * 6 * 4;
    assert_eq!(
        run(&p, &am, &dyp, &mut dw, &mut db),
        "argument argmax = 144 is invalid: image 0, output (0, 1), channel 1: not a position of \
         its window (rows 0..2, columns 2..4) in channel 1"
    );
    // Inside the image, but another window's position: refused before anything is computed.
    am[5] = 1;
    assert!(run(&p, &am, &dyp, &mut dw, &mut db).contains("argument argmax = 1 is invalid"));
}

/// The pooled weight gradient of a one-channel 3×3 layer refuses an argmax outside its window on
/// every instruction-set path, in whole and partial lane groups and (AVX2) either half of a
/// pair's taps: the routed entries it counts per lane fall one short.
#[test]
fn pooled_weight_gradient_refuses_a_moved_argmax_on_every_path() {
    for out_c in [20, 40] {
        let s = Conv2d::square(2, (12, 14, 1), out_c, 3, Padding::Valid);
        let p = Pool2d::new(2, (s.out_h(), s.out_w(), out_c), 2);
        let mut rng = Rng::new(5);
        let (x, w, b) = (
            rng.fill(s.input_len()),
            rng.fill(s.weight_len()),
            rng.fill(out_c),
        );
        let dyp = rng.fill(p.output_len());
        for isa in Isa::available() {
            let opts = ExecOptions::with_isa(isa);
            let mut yp = vec![0.0; p.output_len()];
            let mut am = vec![0u32; p.output_len()];
            let filter = Filter {
                weights: &w,
                bias: Some(&b),
                act: Activation::Relu,
            };
            let out = PooledOutput {
                y_conv: None,
                y_pool: &mut yp,
                argmax: Some(&mut am),
            };
            conv2d_maxpool_forward(&opts, &s, &p, &x, filter, out).unwrap();
            let run = |am: &[u32]| {
                let (mut dw, mut db) = (vec![0.0; s.weight_len()], vec![0.0; out_c]);
                let pooled = PooledGradient {
                    act: Activation::Relu,
                    y_pool: &yp,
                    dy_pool: &dyp,
                    argmax: am,
                };
                conv2d_maxpool_backward_weights(&opts, &s, &p, &x, pooled, &mut dw, Some(&mut db))
            };
            run(&am).unwrap();
            // Entries of the first image's first window, a channel of the last (partial) lane
            // group, and the second image's last entry; each moved to the next window's place.
            let image = p.output_len() / 2;
            for at in [0, out_c - 1, 2 * image - 1] {
                let mut wrong = am.clone();
                wrong[at] += 2 * out_c as u32;
                let err = run(&wrong).expect_err(&format!("{isa} out_c {out_c}: entry {at}"));
                assert!(
                    err.to_string().contains("not a position of its window"),
                    "{isa} out_c {out_c}: {err}"
                );
            }
        }
    }
}

/// An argmax entry inside the image but outside its window, or in another channel, is an error
/// naming it on every instruction-set path and pooling geometry (windows apart, overlapping, 'same' padding), never a
/// gradient dropped or added to another position; a forward pass's own argmax always passes.
#[test]
fn pooling_backward_refuses_an_argmax_outside_its_window() {
    let shapes = [
        Pool2d::new(2, (6, 6, 3), 2),
        Pool2d {
            stride_h: 1,
            stride_w: 1,
            ..Pool2d::new(2, (5, 7, 18), 3)
        },
        Pool2d {
            padding: Padding::Same,
            ..Pool2d::new(1, (5, 5, 2), 2)
        },
    ];
    for (isa, s) in Isa::available()
        .into_iter()
        .flat_map(|isa| shapes.iter().map(move |&s| (isa, s)))
    {
        let opts = ExecOptions::with_isa(isa);
        let x: Vec<f32> = (0..s.input_len())
            .map(|i| ((i * 7919) % 101) as f32)
            .collect();
        let mut y = vec![0.0; s.output_len()];
        let mut arg = vec![0u32; s.output_len()];
        max_pool2d_forward(&opts, &s, &x, &mut y, Some(&mut arg)).unwrap();
        let dy = vec![1.0; s.output_len()];
        let mut dx = vec![0.0; s.input_len()];
        max_pool2d_backward(&opts, &s, &dy, &arg, &mut dx).unwrap();
        let image = (s.in_h * s.in_w * s.channels) as u32;
        let out = s.output_len() / s.batch;
        for at in [0, out / 2, s.output_len() - 1] {
            let a = arg[at];
            // Another window (a far row), another channel, and the image's last element.
            for bad in [(a + image / 2) % image, a ^ 1, image - 1] {
                let mut wrong = arg.clone();
                if bad == a || !moves_out_of_window(&s, at, bad) {
                    continue;
                }
                wrong[at] = bad;
                let mut dx2 = vec![7.0; s.input_len()];
                let err = max_pool2d_backward(&opts, &s, &dy, &wrong, &mut dx2)
                    .expect_err(&format!("{isa} {s:?}: argmax {bad} at {at} accepted"))
                    .to_string();
                assert!(err.contains("not a position of its window"), "{err}");
                let err = max_pool2d_activation_backward(
                    &opts,
                    &s,
                    Activation::Relu,
                    &y,
                    &dy,
                    &wrong,
                    &mut dx2,
                )
                .expect_err(&format!(
                    "{isa} {s:?}: argmax {bad} at {at} accepted through relu"
                ))
                .to_string();
                assert!(err.contains("not a position of its window"), "{err}");
            }
        }
    }
}

/// Whether offset `a` lies outside the window of output entry `at` of `s` (or in another channel).
fn moves_out_of_window(s: &Pool2d, at: usize, a: u32) -> bool {
    let c = s.channels;
    let (ow, oh) = (s.out_w(), s.out_h());
    let local = at % (oh * ow * c);
    let (q, ch) = (local / c, local % c);
    let (oy, ox) = (q / ow, q % ow);
    let a = a as usize;
    let (p, ach) = (a / c, a % c);
    let (iy, ix) = ((p / s.in_w) as isize, (p % s.in_w) as isize);
    let (pt, pl) = if s.padding == Padding::Same {
        (
            ((oh - 1) * s.stride_h + s.pool_h).saturating_sub(s.in_h) / 2,
            ((ow - 1) * s.stride_w + s.pool_w).saturating_sub(s.in_w) / 2,
        )
    } else {
        (0, 0)
    };
    let y0 = (oy * s.stride_h) as isize - pt as isize;
    let x0 = (ox * s.stride_w) as isize - pl as isize;
    ach != ch || iy < y0 || iy >= y0 + s.pool_h as isize || ix < x0 || ix >= x0 + s.pool_w as isize
}

#[test]
fn fused_conv_and_pool_check_the_pooling_shape() {
    let s = Conv2d::square(2, (8, 8, 1), 4, 3, Padding::Valid);
    let p = Pool2d::new(2, (5, 6, 4), 2);
    let x = vec![0.0; s.input_len()];
    let w = vec![0.0; s.weight_len()];
    let mut yp = vec![0.0; p.output_len()];
    let mut am = vec![0u32; p.output_len()];
    let err = conv2d_maxpool_forward(
        &ExecOptions::default(),
        &s,
        &p,
        &x,
        Filter {
            weights: &w,
            bias: None,
            act: Activation::Relu,
        },
        PooledOutput {
            y_conv: None,
            y_pool: &mut yp,
            argmax: Some(&mut am),
        },
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "conv2d_maxpool_forward: the pooling takes 2×5×6×4 inputs but the convolution gives 2×6×6×4"
    );
}

/// A one-channel 3×3 convolution and Keras's default pooling (2×2, stride 2, 'valid'), the
/// convolution's output not kept (inference, and training with the argmax): the windows pooled
/// in registers as they are convolved give the bits and argmax of the convolution then the
/// pooling — output channels in whole and partial vectors, strides 1, 2,
/// 3 and unequal ones, odd output sizes (the last row and column no window takes), NaN inputs
/// (the pooling's rule for the first NaN), ReLU and no activation, with and without a bias, on
/// every path and thread count.
#[test]
fn one_channel_conv_pooled_in_registers_keeps_the_bits_of_the_two_passes() {
    let mut rng = Rng::new(17);
    for (batch, (in_h, in_w), out_c, (stride_h, stride_w)) in [
        (3, (28, 28), 32, (1, 1)),
        (2, (29, 27), 17, (1, 1)),
        (1, (13, 16), 8, (2, 2)),
        (2, (9, 11), 40, (2, 2)),
        (1, (5, 5), 3, (1, 1)),
        (1, (14, 17), 16, (3, 3)),
        (2, (12, 15), 33, (1, 2)),
    ] {
        let s = Conv2d {
            stride_h,
            stride_w,
            ..Conv2d::square(batch, (in_h, in_w, 1), out_c, 3, Padding::Valid)
        };
        let p = Pool2d::new(batch, (s.out_h(), s.out_w(), out_c), 2);
        let mut x = rng.fill(s.input_len());
        // NaNs first in their windows and after finite values: with stride 1, window (0, 0)'s
        // only NaN is its last pixel's and window (0, 1)'s first its third's; and one in the
        // second image.
        x[in_w + 2] = f32::NAN;
        x[3 * in_w + 3] = f32::NAN;
        if batch > 1 {
            x[in_h * in_w + 2 * in_w + 5] = f32::NAN;
        }
        let (w, b) = (rng.fill(s.weight_len()), rng.fill(out_c));
        for (act, bias) in [
            (Activation::Relu, Some(&b[..])),
            (Activation::Identity, Some(&b[..])),
            (Activation::Relu, None),
        ] {
            for isa in Isa::available() {
                for threading in [Threading::Single, Threading::Rayon] {
                    let opts = ExecOptions {
                        threading,
                        ..ExecOptions::with_isa(isa)
                    };
                    let mut y = vec![0.0; s.output_len()];
                    let mut want = vec![0.0; p.output_len()];
                    let mut want_argmax = vec![0u32; p.output_len()];
                    conv2d_forward(&opts, &s, &x, &w, bias, act, &mut y).unwrap();
                    max_pool2d_forward(&opts, &p, &y, &mut want, Some(&mut want_argmax)).unwrap();
                    let filter = Filter {
                        weights: &w,
                        bias,
                        act,
                    };
                    for keep_argmax in [false, true] {
                        let mut got = vec![f32::NAN; p.output_len()];
                        let mut argmax = vec![u32::MAX; p.output_len()];
                        let out = PooledOutput {
                            y_conv: None,
                            y_pool: &mut got,
                            argmax: keep_argmax.then_some(&mut argmax[..]),
                        };
                        conv2d_maxpool_forward(&opts, &s, &p, &x, filter, out).unwrap();
                        let same = want
                            .iter()
                            .zip(&got)
                            .all(|(a, b)| a.to_bits() == b.to_bits());
                        let what = format!(
                            "{isa} {act:?} {threading:?} {s:?} bias {} argmax {keep_argmax}",
                            bias.is_some()
                        );
                        assert!(same, "{what}");
                        if keep_argmax {
                            assert_eq!(argmax, want_argmax, "{what}");
                        }
                    }
                }
            }
        }
    }
}
