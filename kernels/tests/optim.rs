//! The optimizer update loops on every path against the rules computed by hand in f64
//! (tolerance 1e-6 relative: one f32 rounding per operation).

use kernels::optim::{adam_update, rmsprop_update, sgd_update};
use kernels::Isa;

fn data(n: usize, seed: u32) -> Vec<f32> {
    kernels::reference::Rng::new(seed as u64).fill(n)
}

fn close(got: &[f32], want: &[f64], what: &str) {
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g as f64 - w).abs() <= 1e-6 * (1.0 + w.abs()),
            "{what}[{i}]: {g} vs {w}"
        );
    }
}

#[test]
fn adam_matches_keras_rule() {
    // 100 003 elements: several parallel chunks and a ragged last one.
    for n in [37, 100_003] {
        adam_case(n);
    }
    let err = adam_update(
        &kernels::ExecOptions::default(),
        &mut [0.0; 3],
        &[0.0; 3],
        &mut [0.0; 2],
        &mut [0.0; 3],
        0.1,
        0.9,
        0.99,
        1e-7,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "adam_update: the parameters have 3 elements but m has 2"
    );
}

fn adam_case(n: usize) {
    let (g, w0, m0) = (data(n, 1), data(n, 2), data(n, 3));
    let v0: Vec<f32> = data(n, 4).iter().map(|x| x.abs()).collect();
    let (lr, b1, b2, eps, t) = (0.001f64, 0.9f64, 0.999f64, 1e-7f64, 3);
    let alpha = lr * (1.0 - b2.powi(t)).sqrt() / (1.0 - b1.powi(t));
    let mut want_w = vec![0.0; n];
    let mut want_m = vec![0.0; n];
    let mut want_v = vec![0.0; n];
    for i in 0..n {
        let gi = g[i] as f64;
        want_m[i] = m0[i] as f64 + (gi - m0[i] as f64) * (1.0 - b1);
        want_v[i] = v0[i] as f64 + (gi * gi - v0[i] as f64) * (1.0 - b2);
        want_w[i] = w0[i] as f64 - alpha * want_m[i] / (want_v[i].sqrt() + eps);
    }
    for isa in Isa::available() {
        let (mut w, mut m, mut v) = (w0.clone(), m0.clone(), v0.clone());
        adam_update(
            &kernels::ExecOptions::with_isa(isa),
            &mut w,
            &g,
            &mut m,
            &mut v,
            alpha as f32,
            0.9,
            0.999,
            1e-7,
        )
        .unwrap();
        close(&w, &want_w, "adam w");
        close(&m, &want_m, "adam m");
        close(&v, &want_v, "adam v");
    }
}

#[test]
fn rmsprop_matches_keras_rule() {
    let n = 29;
    let (g, w0) = (data(n, 5), data(n, 6));
    let v0: Vec<f32> = data(n, 7).iter().map(|x| x.abs()).collect();
    let (lr, rho, eps) = (0.001f64, 0.9f64, 1e-7f64);
    for isa in Isa::available() {
        let (mut w, mut v) = (w0.clone(), v0.clone());
        rmsprop_update(
            &kernels::ExecOptions::with_isa(isa),
            &mut w,
            &g,
            &mut v,
            0.001,
            0.9,
            1e-7,
        )
        .unwrap();
        let want_v: Vec<f64> = (0..n)
            .map(|i| rho * v0[i] as f64 + (1.0 - rho) * (g[i] as f64).powi(2))
            .collect();
        let want_w: Vec<f64> = (0..n)
            .map(|i| w0[i] as f64 - lr * g[i] as f64 / (want_v[i] + eps).sqrt())
            .collect();
        close(&v, &want_v, "rmsprop v");
        close(&w, &want_w, "rmsprop w");
    }
}

#[test]
fn sgd_matches_keras_rule_with_and_without_momentum() {
    let n = 19;
    let (g, w0, vel0) = (data(n, 8), data(n, 9), data(n, 10));
    for isa in Isa::available() {
        let mut w = w0.clone();
        sgd_update(
            &kernels::ExecOptions::with_isa(isa),
            &mut w,
            &g,
            None,
            0.01,
            0.0,
            false,
        )
        .unwrap();
        let want: Vec<f64> = (0..n).map(|i| w0[i] as f64 - 0.01 * g[i] as f64).collect();
        close(&w, &want, "sgd");
        for nesterov in [false, true] {
            let (mut w, mut vel) = (w0.clone(), vel0.clone());
            sgd_update(
                &kernels::ExecOptions::with_isa(isa),
                &mut w,
                &g,
                Some(&mut vel),
                0.01,
                0.9,
                nesterov,
            )
            .unwrap();
            let want_vel: Vec<f64> = (0..n)
                .map(|i| 0.9 * vel0[i] as f64 - 0.01 * g[i] as f64)
                .collect();
            let want_w: Vec<f64> = (0..n)
                .map(|i| {
                    let step = if nesterov {
                        0.9 * want_vel[i] - 0.01 * g[i] as f64
                    } else {
                        want_vel[i]
                    };
                    w0[i] as f64 + step
                })
                .collect();
            close(&vel, &want_vel, "sgd velocity");
            close(&w, &want_w, "sgd momentum w");
        }
    }
    let err = sgd_update(
        &kernels::ExecOptions::default(),
        &mut [0.0; 2],
        &[0.0; 2],
        None,
        0.1,
        0.9,
        false,
    )
    .unwrap_err();
    assert!(err
        .to_string()
        .contains("momentum 0.9 needs a velocity buffer"));
}

/// `update` (the rule as a value) checks its state buffers against the rule.
#[test]
fn update_checks_the_state_against_the_rule() {
    use kernels::optim::{update, Rule};
    let rms = Rule::RmsProp {
        lr: 0.001,
        rho: 0.9,
        eps: 1e-7,
    };
    let (mut w, g) = (vec![1.0f32; 4], vec![0.5f32; 4]);
    let err = update(&kernels::ExecOptions::default(), rms, &mut w, &g, &mut []).unwrap_err();
    assert_eq!(
        err.to_string(),
        "argument state = 0 buffers is invalid: RmsProp { lr: 0.001, rho: 0.9, eps: 1e-7 } keeps \
         1 state buffers"
    );
    let mut short = [0.0f32; 3];
    let err = update(
        &kernels::ExecOptions::default(),
        rms,
        &mut w,
        &g,
        &mut [&mut short[..]],
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "update: the parameters have 4 elements but a state buffer has 3"
    );
    let err = update(
        &kernels::ExecOptions::default(),
        rms,
        &mut w,
        &g[..2],
        &mut [&mut short[..]],
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "update: the parameters have 4 elements but the gradient has 2"
    );
    // And a correct call steps: w − lr·g/√(0.1·g² + ε).
    let mut v = [0.0f32; 4];
    update(
        &kernels::ExecOptions::default(),
        rms,
        &mut w,
        &g,
        &mut [&mut v[..]],
    )
    .unwrap();
    let want = 1.0 - 0.001 * 0.5 / (0.1f64 * 0.25 + 1e-7).sqrt();
    assert!(w.iter().all(|&x| (x as f64 - want).abs() < 1e-6), "{w:?}");
}

/// The rules flush subnormals to zero (as TensorFlow's CPU kernels do), on every path and
/// whether the step runs on the calling thread or on the pool: a state that would decay below
/// the smallest normal f32 stays normal or becomes 0 (Adam's `m + (g − m)·(1 − β₁)` keeps m
/// when the increment is subnormal, as TensorFlow's does), and the caller's own arithmetic keeps
/// IEEE subnormals after the step.
#[test]
fn decaying_state_flushes_to_zero_instead_of_turning_subnormal() {
    let tiny = f32::MIN_POSITIVE;
    for isa in Isa::available() {
        for n in [5, 100_003] {
            let opts = kernels::ExecOptions::with_isa(isa);
            let (mut w, g) = (vec![1.0f32; n], vec![0.0f32; n]);
            let (mut m, mut v) = (vec![tiny; n], vec![1.0f32; n]);
            adam_update(&opts, &mut w, &g, &mut m, &mut v, 0.001, 0.9, 0.999, 1e-7).unwrap();
            assert!(
                m.iter().all(|&x| normal_or_zero(x)),
                "{isa:?} n {n}: m {:e}",
                m[0]
            );
            let mut vel = vec![-tiny; n];
            sgd_update(&opts, &mut w, &g, Some(&mut vel), 0.1, 0.5, false).unwrap();
            assert!(
                vel.iter().all(|&x| x == 0.0),
                "{isa:?} n {n}: velocity {:e}",
                vel[0]
            );
            assert!(
                w.iter().all(|&x| x == 1.0),
                "{isa:?} n {n}: weights {}",
                w[0]
            );
            let mut ms = vec![tiny; n];
            rmsprop_update(&opts, &mut w, &g, &mut ms, 0.001, 0.9, 1e-7).unwrap();
            assert!(
                ms.iter().all(|&x| x == 0.0),
                "{isa:?} n {n}: mean square {:e}",
                ms[0]
            );
        }
    }
    fn normal_or_zero(x: f32) -> bool {
        x == 0.0 || x.is_normal()
    }
    let half = std::hint::black_box(tiny) * std::hint::black_box(0.5f32);
    assert!(half > 0.0, "the caller's thread is back to IEEE subnormals");
}

/// Adam's and RMSprop's steps from zero weights (so the weight is minus the step, unrounded by
/// a weight's own magnitude) on every path: within 6 f32 ulp of the step computed in f64 from
/// the moments the call left, and those moments the same bits on every path; Adam's weights
/// on AVX2 (the exact loop there) the scalar path's bits. v has zeros and tiny values; ε below
/// 1e-10 takes the exact loops on the vector paths, above it the refined estimates (Adam's on
/// AVX-512 only); 1 003 weights: whole registers and a ragged tail.
#[test]
fn adam_and_rmsprop_steps_are_within_a_few_ulp_on_every_path() {
    let n = 1003;
    let mut g = data(n, 11);
    let m0 = data(n, 12);
    let mut v0: Vec<f32> = data(n, 13).iter().map(|x| x * x).collect();
    for i in (0..n).step_by(7) {
        (g[i], v0[i]) = (0.0, 0.0);
    }
    for i in (3..n).step_by(11) {
        v0[i] = 1e-30;
    }
    let within = |w: &[f32], step: &dyn Fn(usize) -> f64, what: &str| {
        for (i, &wi) in w.iter().enumerate() {
            let s = step(i);
            let ulp = f64::from(f32::EPSILON) * s.abs();
            assert!(
                (wi as f64 + s).abs() <= 6.0 * ulp,
                "{what}[{i}]: {wi} vs {}",
                -s
            );
        }
    };
    let bits = |x: &[f32]| x.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    for eps in [1e-7f32, 1e-3, 1e-12] {
        let mut moments = None;
        let mut adam_w = std::collections::HashMap::new();
        for isa in Isa::available() {
            let opts = kernels::ExecOptions::with_isa(isa);
            let (mut w, mut m, mut v) = (vec![0.0; n], m0.clone(), v0.clone());
            adam_update(&opts, &mut w, &g, &mut m, &mut v, 1e-3, 0.9, 0.999, eps).unwrap();
            let step = |i: usize| 1e-3 * m[i] as f64 / ((v[i] as f64).sqrt() + eps as f64);
            within(&w, &step, &format!("adam w, {isa}, eps {eps}"));
            adam_w.insert(isa, bits(&w));
            let (mut w, mut r) = (vec![0.0; n], v0.clone());
            rmsprop_update(&opts, &mut w, &g, &mut r, 1e-3, 0.9, eps).unwrap();
            let step = |i: usize| 1e-3 * g[i] as f64 / (r[i] as f64 + eps as f64).sqrt();
            within(&w, &step, &format!("rmsprop w, {isa}, eps {eps}"));
            let state = [bits(&m), bits(&v), bits(&r)];
            match &moments {
                None => moments = Some(state),
                Some(first) => assert!(*first == state, "{isa}: the moments' bits differ"),
            }
        }
        if let (Some(avx2), Some(scalar)) = (adam_w.get(&Isa::Avx2), adam_w.get(&Isa::Scalar)) {
            assert!(
                avx2 == scalar,
                "adam w on AVX2 is not the exact loop's, eps {eps}"
            );
        }
    }
}

/// A step over a whole tensor and over its pieces cut anywhere (as a fused step's blocks of rows
/// cut a weight matrix) give the same bits, Adam's and RMSprop's, on every path.
#[test]
fn steps_do_not_depend_on_where_the_tensor_is_cut() {
    let n = 211;
    let (g, w0, m0) = (data(n, 14), data(n, 15), data(n, 16));
    let v0: Vec<f32> = data(n, 17).iter().map(|x| x * x).collect();
    let bits = |x: &[f32]| x.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    for isa in Isa::available() {
        let opts = kernels::ExecOptions::with_isa(isa);
        let adam = |w: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]| {
            adam_update(&opts, w, g, m, v, 1e-3, 0.9, 0.999, 1e-7).unwrap()
        };
        let rms = |w: &mut [f32], g: &[f32], v: &mut [f32]| {
            rmsprop_update(&opts, w, g, v, 1e-3, 0.9, 1e-7).unwrap()
        };
        let (mut w, mut m, mut v) = (w0.clone(), m0.clone(), v0.clone());
        adam(&mut w, &g, &mut m, &mut v);
        let (mut rw, mut rv) = (w0.clone(), v0.clone());
        rms(&mut rw, &g, &mut rv);
        for piece in [1, 7, 13, 16, 17, 40] {
            let (mut pw, mut pm, mut pv) = (w0.clone(), m0.clone(), v0.clone());
            let (mut qw, mut qv) = (w0.clone(), v0.clone());
            for at in (0..n).step_by(piece) {
                let r = at..(at + piece).min(n);
                adam(
                    &mut pw[r.clone()],
                    &g[r.clone()],
                    &mut pm[r.clone()],
                    &mut pv[r.clone()],
                );
                rms(&mut qw[r.clone()], &g[r.clone()], &mut qv[r]);
            }
            assert_eq!(bits(&pw), bits(&w), "{isa}: adam in pieces of {piece}");
            assert_eq!(bits(&qw), bits(&rw), "{isa}: rmsprop in pieces of {piece}");
            assert_eq!(
                (bits(&pm), bits(&pv)),
                (bits(&m), bits(&v)),
                "{isa}: {piece}"
            );
        }
    }
}

/// At the ends of the range the vector steps give the exact loops' results: a second moment
/// that overflows to +∞ (a gradient of 1e20: the weight does not move), an infinite gradient
/// (NaN, as ∞/∞), a negative state (NaN, √ of it), a NaN gradient; Adam and RMSprop, every path
/// against the portable one.
#[test]
fn steps_at_the_ends_of_the_range_are_the_exact_loops() {
    let n = 37;
    let mut g = data(n, 18);
    let w0 = data(n, 19);
    let mut v0: Vec<f32> = data(n, 20).iter().map(|x| x * x).collect();
    (g[1], g[2], g[3], g[20], g[33]) = (1e20, f32::INFINITY, f32::NAN, -3e19, f32::NEG_INFINITY);
    (v0[5], v0[21], v0[34]) = (-1e-3, f32::INFINITY, -0.0);
    let m0 = data(n, 21);
    let run = |isa: Isa| {
        let opts = kernels::ExecOptions::with_isa(isa);
        let (mut w, mut m, mut v) = (w0.clone(), m0.clone(), v0.clone());
        adam_update(&opts, &mut w, &g, &mut m, &mut v, 1e-3, 0.9, 0.999, 1e-7).unwrap();
        let (mut rw, mut rv) = (w0.clone(), v0.clone());
        rmsprop_update(&opts, &mut rw, &g, &mut rv, 1e-3, 0.9, 1e-7).unwrap();
        [w, m, v, rw, rv]
    };
    let exact = run(Isa::Scalar);
    for isa in Isa::available() {
        let got = run(isa);
        for (what, (a, b)) in ["adam w", "adam m", "adam v", "rmsprop w", "rmsprop v"]
            .iter()
            .zip(got.iter().zip(&exact))
        {
            for i in 0..n {
                let same = a[i] == b[i]
                    || a[i].is_nan() && b[i].is_nan()
                    || (a[i] as f64 - b[i] as f64).abs() <= 1e-6 * (1.0 + (b[i] as f64).abs());
                assert!(same, "{isa} {what}[{i}]: {} vs exact {}", a[i], b[i]);
            }
        }
    }
}
