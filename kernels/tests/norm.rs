//! Batch normalisation against an f64 reference on every instruction-set path: the training
//! forward pass (statistics and output), the inference map, the backward pass, the fold into
//! the layer before, and argument errors.

use kernels::activation::{activation_backward, bias_activation};
use kernels::norm::{
    batch_norm_backward, batch_norm_fold, batch_norm_forward_inference,
    batch_norm_forward_training, batch_norm_scale, BatchNorm, BatchNormGrads, BatchStats,
    FixedNorm,
};
use kernels::reference::Rng;
use kernels::{Activation, ExecOptions, Isa};
use proptest::prelude::*;

struct Reference {
    mean: Vec<f64>,
    var: Vec<f64>,
    y: Vec<f64>,
    dx: Vec<f64>,
    dgamma: Vec<f64>,
    dbeta: Vec<f64>,
}

fn reference(s: &BatchNorm, x: &[f32], gamma: &[f32], beta: &[f32], dy: &[f32]) -> Reference {
    let (r, c) = (s.rows, s.channels);
    let n = r as f64;
    let mut mean = vec![0.0; c];
    let mut var = vec![0.0; c];
    for i in 0..r {
        for j in 0..c {
            mean[j] += x[i * c + j] as f64 / n;
        }
    }
    for i in 0..r {
        for j in 0..c {
            var[j] += (x[i * c + j] as f64 - mean[j]).powi(2) / n;
        }
    }
    let inv: Vec<f64> = var
        .iter()
        .map(|v| 1.0 / (v + s.epsilon as f64).sqrt())
        .collect();
    let xhat = |i: usize, j: usize| (x[i * c + j] as f64 - mean[j]) * inv[j];
    let mut y = vec![0.0; r * c];
    let (mut dgamma, mut dbeta) = (vec![0.0; c], vec![0.0; c]);
    for i in 0..r {
        for j in 0..c {
            y[i * c + j] = gamma[j] as f64 * xhat(i, j) + beta[j] as f64;
            dbeta[j] += dy[i * c + j] as f64;
            dgamma[j] += dy[i * c + j] as f64 * xhat(i, j);
        }
    }
    let mut dx = vec![0.0; r * c];
    for i in 0..r {
        for j in 0..c {
            dx[i * c + j] = gamma[j] as f64
                * inv[j]
                * (dy[i * c + j] as f64 - dbeta[j] / n - xhat(i, j) * dgamma[j] / n);
        }
    }
    Reference {
        mean,
        var,
        y,
        dx,
        dgamma,
        dbeta,
    }
}

fn close(what: &str, got: &[f32], want: &[f64], tol: f64) -> Result<(), String> {
    close_within(what, got, want, |_| 0.0, tol)
}

/// As [`close`], with `extra(i)` added to element i's bound: the rounding every f32
/// implementation makes in `x − mean` (an ulp or two of the larger of the two), amplified by
/// 1/√(variance + ε) — large where the variance is small beside the mean.
fn close_within(
    what: &str,
    got: &[f32],
    want: &[f64],
    extra: impl Fn(usize) -> f64,
    tol: f64,
) -> Result<(), String> {
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        if (g as f64 - w).abs() > tol * (1.0 + w.abs()) + extra(i) {
            return Err(format!("{what}[{i}]: {g} vs {w}"));
        }
    }
    Ok(())
}

/// The statistics a training pass writes: mean, variance, 1/σ.
struct Stats {
    mean: Vec<f32>,
    var: Vec<f32>,
    inv: Vec<f32>,
}

/// `batch_norm_forward_training` (no activation) into `y` with fresh statistics buffers of
/// `channels`.
fn forward_training(
    opts: &ExecOptions,
    s: &BatchNorm,
    x: &[f32],
    gamma_beta: (&[f32], &[f32]),
    y: &mut [f32],
    channels: usize,
) -> (kernels::Result<()>, Stats) {
    forward_training_act(opts, s, x, gamma_beta, Activation::Identity, y, channels)
}

/// `batch_norm_forward_training` with `act` after it.
fn forward_training_act(
    opts: &ExecOptions,
    s: &BatchNorm,
    x: &[f32],
    gamma_beta: (&[f32], &[f32]),
    act: Activation,
    y: &mut [f32],
    channels: usize,
) -> (kernels::Result<()>, Stats) {
    let mut st = Stats {
        mean: vec![0.0; channels],
        var: vec![0.0; channels],
        inv: vec![0.0; channels],
    };
    let stats = BatchStats {
        mean: &mut st.mean,
        variance: &mut st.var,
        inv_std: &mut st.inv,
    };
    (
        batch_norm_forward_training(opts, s, x, gamma_beta, act, y, stats),
        st,
    )
}

/// A random case of `rows × channels`: the shape (ε 1e-3), x, gamma, beta and an output
/// gradient.
struct Case {
    s: BatchNorm,
    x: Vec<f32>,
    gamma: Vec<f32>,
    beta: Vec<f32>,
    dy: Vec<f32>,
}

fn case(rows: usize, channels: usize, seed: u64) -> Case {
    let mut rng = Rng::new(seed);
    // An offset and scale per channel, so the statistics are not trivially 0 and 1.
    let x: Vec<f32> = rng
        .fill(rows * channels)
        .iter()
        .enumerate()
        .map(|(i, &v)| 3.0 * v + (i % channels) as f32 * 0.5)
        .collect();
    Case {
        s: BatchNorm {
            rows,
            channels,
            epsilon: 1e-3,
        },
        x,
        gamma: rng.fill(channels),
        beta: rng.fill(channels),
        dy: rng.fill(rows * channels),
    }
}

fn check(rows: usize, channels: usize, seed: u64) -> Result<(), String> {
    let Case {
        s,
        x,
        gamma,
        beta,
        dy,
    } = case(rows, channels, seed);
    let want = reference(&s, &x, &gamma, &beta, &dy);
    for isa in Isa::available() {
        let opts = ExecOptions::with_isa(isa);
        let mut y = vec![f32::NAN; rows * channels];
        let (run, Stats { mean, var, inv }) =
            forward_training(&opts, &s, &x, (&gamma, &beta), &mut y, channels);
        run.map_err(|e| e.to_string())?;
        close(&format!("{isa} mean"), &mean, &want.mean, 1e-6)?;
        close(&format!("{isa} variance"), &var, &want.var, 1e-5)?;
        // The conditioning of x − mean, per element (4 ulps of the larger side, times 1/σ).
        let cond = |i: usize| {
            let j = i % channels;
            let inv = 1.0 / (want.var[j] + s.epsilon as f64).sqrt();
            4.0 * f32::EPSILON as f64 * (x[i].abs() as f64 + want.mean[j].abs()) * inv
        };
        let y_bound = |i: usize| cond(i) * gamma[i % channels].abs() as f64;
        close_within(&format!("{isa} y"), &y, &want.y, y_bound, 1e-5)?;
        let mut dx = vec![f32::NAN; rows * channels];
        let (mut dgamma, mut dbeta) = (vec![0.0; channels], vec![0.0; channels]);
        batch_norm_backward(
            &opts,
            &s,
            &x,
            &dy,
            None,
            &gamma,
            (&mean, &inv),
            Some(&mut dx),
            BatchNormGrads {
                dgamma: &mut dgamma,
                dbeta: &mut dbeta,
            },
        )
        .map_err(|e| e.to_string())?;
        close(&format!("{isa} dbeta"), &dbeta, &want.dbeta, 1e-5)?;
        // Σ dy·x̂: x̂'s rounding weighted by |dy|.
        let dgamma_bound = |j: usize| {
            (0..rows)
                .map(|r| dy[r * channels + j].abs() as f64 * cond(r * channels + j))
                .sum::<f64>()
        };
        close_within(
            &format!("{isa} dgamma"),
            &dgamma,
            &want.dgamma,
            dgamma_bound,
            1e-4,
        )?;
        // x̂'s rounding, through γ/σ and the mean of dy·x̂ (at most max|dy|·max|x̂| ≤ √rows).
        let dx_bound = |i: usize| {
            let j = i % channels;
            let inv = 1.0 / (want.var[j] + s.epsilon as f64).sqrt();
            cond(i) * (gamma[j].abs() as f64 * inv) * (rows as f64).sqrt()
        };
        close_within(&format!("{isa} dx"), &dx, &want.dx, dx_bound, 1e-4)?;
        // Inference with the batch's own statistics reproduces the training output.
        let mut scale = vec![0.0; channels];
        batch_norm_scale(&gamma, &var, s.epsilon, &mut scale).unwrap();
        let mut yi = vec![f32::NAN; rows * channels];
        let affine = (&mean[..], &scale[..], &beta[..]);
        batch_norm_forward_inference(&opts, &s, &x, affine, Activation::Identity, &mut yi)
            .map_err(|e| e.to_string())?;
        close_within(&format!("{isa} inference y"), &yi, &want.y, y_bound, 1e-5)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    // rows = 1 among them: a zero variance, where the output is beta alone (a mean folded into a
    // shift would leave rounding noise of the size of the input there).
    #[test]
    fn batch_norm_matches_the_f64_reference_on_every_path(
        rows in prop_oneof![Just(1usize), Just(2), 1usize..200],
        channels in prop_oneof![Just(1usize), Just(3), Just(16), Just(17), Just(64), Just(67), 1usize..150],
        seed: u64,
    ) {
        prop_assert_eq!(check(rows, channels, seed), Ok(()));
    }
}

/// An activation after the normalisation, run inside its passes, against the same activation
/// applied after them (forward) and the gradient taken back through it first (backward): the
/// same arithmetic per element, so the same values.
fn check_activation(
    rows: usize,
    channels: usize,
    act: Activation,
    seed: u64,
) -> Result<(), String> {
    let Case {
        s,
        x,
        gamma,
        beta,
        dy,
    } = case(rows, channels, seed);
    let len = rows * channels;
    let e = |e: kernels::Error| e.to_string();
    for isa in Isa::available() {
        let opts = ExecOptions::with_isa(isa);
        let (mut y, mut fused) = (vec![f32::NAN; len], vec![f32::NAN; len]);
        let (run, st) = forward_training(&opts, &s, &x, (&gamma, &beta), &mut y, channels);
        run.map_err(e)?;
        bias_activation(&opts, act, None, &mut y, channels).map_err(e)?;
        let (run, st_fused) =
            forward_training_act(&opts, &s, &x, (&gamma, &beta), act, &mut fused, channels);
        run.map_err(e)?;
        if fused != y || st_fused.mean != st.mean || st_fused.var != st.var {
            return Err(format!("{isa} {act:?}: the fused forward pass differs"));
        }
        let backward = |dy: &[f32], after: Option<(Activation, &[f32])>| {
            let mut dx = vec![f32::NAN; len];
            let (mut dgamma, mut dbeta) = (vec![0.0; channels], vec![0.0; channels]);
            let grads = BatchNormGrads {
                dgamma: &mut dgamma,
                dbeta: &mut dbeta,
            };
            let stats = (&st.mean[..], &st.inv[..]);
            batch_norm_backward(
                &opts,
                &s,
                &x,
                dy,
                after,
                &gamma,
                stats,
                Some(&mut dx),
                grads,
            )
            .map(|()| (dx, dgamma, dbeta))
        };
        let mut through = dy.clone();
        activation_backward(&opts, act, &y, &mut through).map_err(e)?;
        let want = backward(&through, None).map_err(e)?;
        let got = backward(&dy, Some((act, &fused))).map_err(e)?;
        if got != want {
            return Err(format!("{isa} {act:?}: the fused backward pass differs"));
        }
        // Inference with the batch's statistics, the activation inside and after.
        let mut scale = vec![0.0; channels];
        batch_norm_scale(&gamma, &st.var, s.epsilon, &mut scale).unwrap();
        let affine = (&st.mean[..], &scale[..], &beta[..]);
        let (mut yi, mut fused) = (vec![f32::NAN; len], vec![f32::NAN; len]);
        batch_norm_forward_inference(&opts, &s, &x, affine, Activation::Identity, &mut yi)
            .map_err(e)?;
        bias_activation(&opts, act, None, &mut yi, channels).map_err(e)?;
        batch_norm_forward_inference(&opts, &s, &x, affine, act, &mut fused).map_err(e)?;
        if fused != yi {
            return Err(format!("{isa} {act:?}: the fused inference pass differs"));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]
    #[test]
    fn an_activation_inside_the_normalisation_matches_it_applied_after(
        rows in prop_oneof![Just(1usize), 1usize..120],
        channels in prop_oneof![Just(1usize), Just(8), Just(32), Just(33), 1usize..140],
        act in prop_oneof![
            Just(Activation::Identity),
            Just(Activation::Relu),
            Just(Activation::Sigmoid),
            Just(Activation::Tanh)
        ],
        seed: u64,
    ) {
        prop_assert_eq!(check_activation(rows, channels, act, seed), Ok(()));
    }
}

#[test]
fn a_short_activation_output_is_an_error() {
    let s = BatchNorm {
        rows: 4,
        channels: 3,
        epsilon: 1e-3,
    };
    let (x, dy, y) = (vec![0.0; 12], vec![0.0; 12], vec![0.0; 11]);
    let (g, mean, inv) = (vec![1.0; 3], vec![0.0; 3], vec![1.0; 3]);
    let (mut dgamma, mut dbeta) = (vec![0.0; 3], vec![0.0; 3]);
    let err = batch_norm_backward(
        &ExecOptions::default(),
        &s,
        &x,
        &dy,
        Some((Activation::Relu, &y)),
        &g,
        (&mean, &inv),
        None,
        BatchNormGrads {
            dgamma: &mut dgamma,
            dbeta: &mut dbeta,
        },
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("activation output y"), "{err}");
}

#[test]
fn a_large_mean_beside_a_small_spread_keeps_the_variance_accurate() {
    // Values near 10⁴ spread by about 0.01 (f32 steps of 2⁻¹⁰ there): E[x²] − E[x]² in f64
    // would lose most digits; the shifted sums lose none on any path. Five channels take the
    // portable loops, sixteen the vector ones (f32 sums over blocks of rows) where the CPU has
    // them.
    for channels in [5, 16] {
        let rows = 3000;
        let s = BatchNorm {
            rows,
            channels,
            epsilon: 1e-3,
        };
        let noise = Rng::new(7).fill(rows * channels);
        let x: Vec<f32> = noise
            .iter()
            .enumerate()
            .map(|(i, v)| 1.0e4 + (i % channels) as f32 + 0.01 * v)
            .collect();
        let (gamma, beta) = (vec![1.0; channels], vec![0.0; channels]);
        let want = reference(&s, &x, &gamma, &beta, &vec![0.0; rows * channels]);
        for isa in Isa::available() {
            let mut y = vec![0.0; x.len()];
            let opts = ExecOptions::with_isa(isa);
            let (run, st) = forward_training(&opts, &s, &x, (&gamma, &beta), &mut y, channels);
            run.unwrap();
            for j in 0..channels {
                let (got, w) = (st.var[j] as f64, want.var[j]);
                assert!(
                    (got - w).abs() <= 1e-6 * w,
                    "{isa} {channels} channels, channel {j}: {got} vs {w}"
                );
                assert!(
                    (st.mean[j] as f64 - want.mean[j]).abs() <= 1e-3,
                    "{isa} mean {j}"
                );
            }
        }
    }
}

#[test]
fn the_statistics_and_gradients_do_not_depend_on_the_thread_count() {
    for channels in [32, 40] {
        let s = BatchNorm {
            rows: 5000,
            channels,
            epsilon: 1e-3,
        };
        let x = Rng::new(3).fill(s.rows * s.channels);
        let dy = Rng::new(4).fill(s.rows * s.channels);
        let (g, b) = (vec![1.5; channels], vec![0.25; channels]);
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                let opts = ExecOptions::default();
                let mut y = vec![0.0; x.len()];
                let (run, st) = forward_training(&opts, &s, &x, (&g, &b), &mut y, channels);
                run.unwrap();
                let mut dx = vec![0.0; x.len()];
                let (mut dgamma, mut dbeta) = (vec![0.0; channels], vec![0.0; channels]);
                let grads = BatchNormGrads {
                    dgamma: &mut dgamma,
                    dbeta: &mut dbeta,
                };
                let after = Some((Activation::Relu, &y[..]));
                let stats = (&st.mean[..], &st.inv[..]);
                batch_norm_backward(&opts, &s, &x, &dy, after, &g, stats, Some(&mut dx), grads)
                    .unwrap();
                (y, st.mean, st.var, dx, dgamma, dbeta)
            })
        };
        assert_eq!(run(1), run(2), "{channels} channels");
    }
}

#[test]
fn bad_arguments_are_errors() {
    let s = BatchNorm {
        rows: 4,
        channels: 3,
        epsilon: 1e-3,
    };
    let x = vec![0.0; 12];
    let mut y = vec![0.0; 11];
    let (g, b) = (vec![1.0; 3], vec![0.0; 3]);
    let err = forward_training(&ExecOptions::default(), &s, &x, (&g, &b), &mut y, 3)
        .0
        .unwrap_err()
        .to_string();
    assert!(err.contains("output y"), "{err}");
    let bad = BatchNorm { epsilon: 0.0, ..s };
    let mut y = vec![0.0; 12];
    let id = Activation::Identity;
    let err =
        batch_norm_forward_inference(&ExecOptions::default(), &bad, &x, (&b, &g, &b), id, &mut y)
            .unwrap_err()
            .to_string();
    assert!(err.contains("epsilon"), "{err}");
    let empty = BatchNorm { rows: 0, ..s };
    let err = forward_training(&ExecOptions::default(), &empty, &[], (&g, &b), &mut [], 3)
        .0
        .unwrap_err()
        .to_string();
    assert!(err.contains("at least one row"), "{err}");
    let mut scale = vec![0.0; 3];
    let err = kernels::norm::batch_norm_scale(&g, &b, 0.0, &mut scale)
        .unwrap_err()
        .to_string();
    assert!(err.contains("epsilon"), "{err}");
}

/// `x·folded_kernel + folded_bias` against the f64 normalisation of `x·kernel + bias` with the
/// same statistics: the fold changes only rounding, bounded by the scaled size of the product's
/// terms.
fn check_fold(rows: usize, channels: usize, samples: usize, seed: u64) -> Result<(), String> {
    let mut rng = Rng::new(seed);
    let kernel = rng.fill(rows * channels);
    let bias = rng.fill(channels);
    let x = rng.fill(samples * rows);
    let gamma = rng.fill(channels);
    let beta = rng.fill(channels);
    let mean = rng.fill(channels);
    let variance: Vec<f32> = rng.fill(channels).iter().map(|v| v.abs() * 3.0).collect();
    let norm = FixedNorm {
        gamma: &gamma,
        beta: &beta,
        mean: &mean,
        variance: &variance,
        epsilon: 1e-3,
    };
    let mut fk = vec![f32::NAN; kernel.len()];
    let mut fb = vec![f32::NAN; channels];
    batch_norm_fold(&norm, (&kernel, &bias), (&mut fk, &mut fb)).map_err(|e| e.to_string())?;
    for i in 0..samples {
        for j in 0..channels {
            let s = gamma[j] as f64 / (variance[j] as f64 + 1e-3).sqrt();
            let (mut z, mut folded, mut size) = (bias[j] as f64, fb[j] as f64, 0.0f64);
            for r in 0..rows {
                let xv = x[i * rows + r] as f64;
                z += xv * kernel[r * channels + j] as f64;
                folded += xv * fk[r * channels + j] as f64;
                size += (xv * kernel[r * channels + j] as f64).abs();
            }
            let want = (z - mean[j] as f64) * s + beta[j] as f64;
            // Each folded weight and the bias are rounded once: a relative 2⁻²⁴ of each term.
            let bound = 2.0
                * f32::EPSILON as f64
                * ((size + bias[j].abs() as f64 + mean[j].abs() as f64) * s.abs()
                    + beta[j].abs() as f64)
                + 1e-12;
            if (folded - want).abs() > bound {
                return Err(format!(
                    "sample {i} channel {j}: folded {folded}, normalised {want} (bound {bound})"
                ));
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn a_folded_normalisation_matches_the_normalised_product(
        rows in prop_oneof![Just(0usize), Just(1), Just(9), 1usize..80],
        channels in prop_oneof![Just(1usize), Just(16), Just(17), 1usize..70],
        samples in 1usize..5,
        seed: u64,
    ) {
        prop_assert_eq!(check_fold(rows, channels, samples, seed), Ok(()));
    }
}

#[test]
fn bad_fold_arguments_are_errors() {
    let v = vec![1.0f32; 3];
    let norm = FixedNorm {
        gamma: &v,
        beta: &v,
        mean: &v,
        variance: &v,
        epsilon: 1e-3,
    };
    let fold = |norm: &FixedNorm<'_>, kernel: &[f32], bias: &[f32], fk: usize, fb: usize| {
        let (mut k, mut b) = (vec![0.0; fk], vec![0.0; fb]);
        batch_norm_fold(norm, (kernel, bias), (&mut k, &mut b))
            .unwrap_err()
            .to_string()
    };
    let err = fold(&norm, &[0.0; 7], &v, 7, 3);
    assert!(err.contains("whole number of rows of 3 channels"), "{err}");
    let err = fold(&norm, &[0.0; 6], &v, 5, 3);
    assert!(err.contains("folded kernel"), "{err}");
    let err = fold(&norm, &[0.0; 6], &v[..2], 6, 3);
    assert!(err.contains("bias has 2"), "{err}");
    let short = FixedNorm {
        variance: &v[..1],
        ..norm
    };
    let err = fold(&short, &[0.0; 6], &v, 6, 3);
    assert!(err.contains("variance"), "{err}");
    let bad = FixedNorm {
        epsilon: f32::NAN,
        ..norm
    };
    let err = fold(&bad, &[0.0; 6], &v, 6, 3);
    assert!(err.contains("epsilon"), "{err}");
    let none = FixedNorm {
        gamma: &[],
        beta: &[],
        mean: &[],
        variance: &[],
        epsilon: 1e-3,
    };
    let err = fold(&none, &[], &[], 0, 0);
    assert!(err.contains("0 channels"), "{err}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]
    /// The statistics are f64 sums in row order on every path: the vector loops' bits are the
    /// portable loop's, with the first row far from the others' mean too (the squared
    /// differences then need more than f64's 53 bits, and a fused multiply-add would round them
    /// differently).
    #[test]
    fn the_statistics_have_the_same_bits_on_every_path(
        rows in prop_oneof![Just(1usize), 2usize..300],
        channels in prop_oneof![Just(8usize), Just(16), Just(24), Just(32), Just(40), Just(64)],
        offset in prop_oneof![Just(0.0f32), Just(0.1), Just(1e3)],
        seed: u64,
    ) {
        let s = BatchNorm { rows, channels, epsilon: 1e-3 };
        let mut x = Rng::new(seed).fill(rows * channels);
        for v in &mut x[..channels] {
            *v += offset;
        }
        let (gamma, beta) = (vec![1.0; channels], vec![0.0; channels]);
        let stats = |isa: Isa| {
            let mut y = vec![0.0; x.len()];
            let (run, st) =
                forward_training(&ExecOptions::with_isa(isa), &s, &x, (&gamma, &beta), &mut y, channels);
            run.unwrap();
            let bits = |v: &[f32]| v.iter().map(|e| e.to_bits()).collect::<Vec<_>>();
            (bits(&st.mean), bits(&st.var), bits(&st.inv))
        };
        let want = stats(Isa::Scalar);
        for isa in Isa::available() {
            prop_assert_eq!(stats(isa), want.clone(), "{}", isa);
        }
    }
}
