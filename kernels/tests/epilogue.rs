//! The fused GEMM epilogue (`C ← act(alpha·A·B + beta·C + bias)`) and the activation backward
//! pass, on every instruction-set path, against the f64 reference followed by the activation in
//! f64.
//!
//! Tolerance per element: the reference GEMM bound (every activation here has |f'| ≤ 1, so it
//! carries through), plus one rounding of the bias add, plus the activations' stated accuracy
//! (3·2⁻²³ relative, `kernels::math`) and 1e-30 absolute.

use kernels::activation::{
    activation_backward, activation_backward_into, activation_forward, bias_activation,
};
use kernels::reference::{Path, Rng};
use kernels::{gemm_fused, reference, Activation, Bias, ExecOptions, Isa, MatMut, MatRef};
use proptest::prelude::*;

const ACTIVATIONS: [Activation; 4] = [
    Activation::Identity,
    Activation::Relu,
    Activation::Sigmoid,
    Activation::Tanh,
];

fn act64(act: Activation, x: f64) -> f64 {
    kernels::reference::activation(act, x)
}

#[derive(Debug, Clone, Copy)]
enum BiasKind {
    None,
    PerColumn,
    PerRow,
}

#[allow(clippy::too_many_arguments)]
fn check(
    path: Path,
    (m, n, k): (usize, usize, usize),
    act: Activation,
    bias_kind: BiasKind,
    c_col_major: bool,
    alpha: f32,
    beta: f32,
    seed: u64,
) -> Result<(), String> {
    let mut rng = Rng::new(seed);
    let a = rng.fill(m * k);
    let b = rng.fill(k * n);
    let c0 = if beta == 0.0 {
        vec![f32::NAN; m * n]
    } else {
        rng.fill(m * n)
    };
    let bias_data = match bias_kind {
        BiasKind::None => vec![],
        BiasKind::PerColumn => rng.fill(n),
        BiasKind::PerRow => rng.fill(m),
    };
    let bias = match bias_kind {
        BiasKind::None => Bias::None,
        BiasKind::PerColumn => Bias::PerColumn(&bias_data),
        BiasKind::PerRow => Bias::PerRow(&bias_data),
    };
    let av = MatRef::row_major(&a, m, k, k);
    let bv = MatRef::row_major(&b, k, n, n);
    let mut ours = c0.clone();
    {
        let cv = if c_col_major {
            MatMut::col_major(&mut ours, m, n, m.max(1))
        } else {
            MatMut::row_major(&mut ours, m, n, n.max(1))
        };
        gemm_fused(&path.opts(), alpha, av, bv, beta, bias, act, cv).map_err(|e| e.to_string())?;
    }
    let mut lin = c0.clone();
    {
        let cv = if c_col_major {
            MatMut::col_major(&mut lin, m, n, m.max(1))
        } else {
            MatMut::row_major(&mut lin, m, n, n.max(1))
        };
        reference::gemm(alpha, av, bv, beta, cv).map_err(|e| e.to_string())?;
    }
    let c0v = if c_col_major {
        MatRef::col_major(&c0, m, n, m.max(1))
    } else {
        MatRef::row_major(&c0, m, n, n.max(1))
    };
    let bound = reference::gemm_error_bound(alpha, av, bv, beta, c0v);
    for i in 0..m {
        for j in 0..n {
            let idx = if c_col_major { j * m + i } else { i * n + j };
            let bias_v = match bias_kind {
                BiasKind::None => 0.0,
                BiasKind::PerColumn => bias_data[j] as f64,
                BiasKind::PerRow => bias_data[i] as f64,
            };
            let pre = lin[idx] as f64 + bias_v;
            let want = act64(act, pre);
            // `gemm_error_bound` lists elements row by row whatever C's layout.
            let tol = bound[i * n + j] + pre.abs() * 2f64.powi(-24) + want.abs() * 4e-7 + 1e-30;
            let got = ours[idx] as f64;
            if (got - want).abs() > tol {
                return Err(format!(
                    "{path} {act:?} {bias_kind:?} col_major={c_col_major} {m}×{n}×{k} \
                     α={alpha} β={beta}: C[{i}][{j}] = {got}, want {want} (±{tol})"
                ));
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]
    #[test]
    fn fused_epilogue_matches_reference_on_every_path(
        m in prop_oneof![0usize..4, 1usize..70, Just(97usize)],
        n in prop_oneof![0usize..4, 1usize..70, Just(131usize)],
        k in prop_oneof![0usize..3, 1usize..40, Just(600usize)],
        act in 0usize..4,
        bias in 0usize..3,
        c_col_major: bool,
        alpha in prop_oneof![Just(1.0f32), Just(0.0), Just(-0.5)],
        beta in prop_oneof![Just(0.0f32), Just(1.0), Just(0.25)],
        seed: u64,
    ) {
        let bias = [BiasKind::None, BiasKind::PerColumn, BiasKind::PerRow][bias];
        for path in Path::all() {
            check(path, (m, n, k), ACTIVATIONS[act], bias, c_col_major, alpha, beta, seed)
                .map_err(TestCaseError::fail)?;
        }
    }
}

#[test]
fn large_products_apply_the_epilogue_once_after_the_last_k_slice() {
    // K spans several KC slices and C several MC/NC blocks; a tile given the epilogue after an
    // early slice would come out visibly wrong (relu of a partial sum, bias added twice). The
    // identity and ReLU show both; every activation's epilogue is checked on the small shapes.
    for path in Path::for_large_cases() {
        for act in [Activation::Identity, Activation::Relu] {
            check(
                path,
                (300, 200, 1100),
                act,
                BiasKind::PerColumn,
                false,
                1.0,
                0.0,
                3,
            )
            .unwrap();
            check(
                path,
                (64, 517, 1030),
                act,
                BiasKind::PerRow,
                true,
                1.0,
                1.0,
                4,
            )
            .unwrap();
            // Few rows over several K slices, A read in place by the small tiles.
            check(
                path,
                (20, 300, 1100),
                act,
                BiasKind::PerColumn,
                false,
                1.0,
                0.5,
                5,
            )
            .unwrap();
            // The same with B's slices beyond any L2 (packed a block of panels at a time; only
            // x86's paths read A in place, and under emulation this case is slow).
            if cfg!(target_arch = "x86_64") {
                check(
                    path,
                    (20, 1100, 600),
                    act,
                    BiasKind::PerRow,
                    false,
                    1.0,
                    0.5,
                    6,
                )
                .unwrap();
            }
        }
    }
}

#[test]
fn bias_length_is_checked() {
    let a = [1.0; 6];
    let b = [1.0; 6];
    let mut c = [0.0; 4];
    let err = gemm_fused(
        &ExecOptions::default(),
        1.0,
        MatRef::row_major(&a, 2, 3, 3),
        MatRef::row_major(&b, 3, 2, 2),
        0.0,
        Bias::PerColumn(&[1.0, 2.0, 3.0]),
        Activation::Relu,
        MatMut::row_major(&mut c, 2, 2, 2),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "gemm_fused bias: the bias has 3 elements but C (2×2) has 2 columns"
    );
}

#[test]
fn bias_activation_pass_matches_per_element_activation() {
    let mut rng = Rng::new(11);
    let x = rng.fill(7 * 13);
    let bias = rng.fill(13);
    for isa in Isa::available() {
        for act in ACTIVATIONS {
            let mut y = x.clone();
            bias_activation(
                &kernels::ExecOptions::with_isa(isa),
                act,
                Some(&bias),
                &mut y,
                13,
            )
            .unwrap();
            for (i, (&got, &x)) in y.iter().zip(&x).enumerate() {
                let want = act64(act, x as f64 + bias[i % 13] as f64);
                assert!(
                    (got as f64 - want).abs() <= 1e-6 * (1.0 + want.abs()),
                    "{isa} {act:?}"
                );
            }
        }
    }
    let mut y = vec![0.0; 10];
    let err = bias_activation(
        &kernels::ExecOptions::default(),
        Activation::Relu,
        Some(&[1.0; 3]),
        &mut y,
        5,
    )
    .unwrap_err();
    assert!(err
        .to_string()
        .contains("the bias has 3 elements but the rows have 5"));
    let err = bias_activation(
        &kernels::ExecOptions::default(),
        Activation::Relu,
        None,
        &mut y,
        3,
    )
    .unwrap_err();
    assert!(err
        .to_string()
        .contains("10 elements do not form whole rows of 3 columns"));
}

/// Passes large enough to split across threads (rows of an odd width, so that pieces of whole
/// rows do not line up with the vectors) give the bits of one thread, on every path.
#[test]
fn large_activation_passes_do_not_depend_on_the_thread_count() {
    // Just over the 64 Ki elements from which the passes split.
    let (rows, cols) = (199, 333);
    let mut rng = Rng::new(12);
    let x = rng.fill(rows * cols);
    let bias = rng.fill(cols);
    let upstream = rng.fill(rows * cols);
    let on = |threads: usize, f: &(dyn Fn() -> (Vec<f32>, Vec<f32>) + Sync)| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(f)
    };
    for isa in Isa::available() {
        let opts = kernels::ExecOptions::with_isa(isa);
        for act in ACTIVATIONS {
            let run = || {
                let mut y = x.clone();
                bias_activation(&opts, act, Some(&bias), &mut y, cols).unwrap();
                let mut dy = upstream.clone();
                activation_backward(&opts, act, &y, &mut dy).unwrap();
                (y, dy)
            };
            let (one, two) = (on(1, &run), on(2, &run));
            assert_eq!(one, two, "{isa} {act:?}");
            // Every 7th element against the f64 activation (each one is computed alike).
            for (i, (&got, &x)) in one.0.iter().zip(&x).enumerate().step_by(7) {
                let want = act64(act, x as f64 + bias[i % cols] as f64);
                assert!(
                    (got as f64 - want).abs() <= 1e-6 * (1.0 + want.abs()),
                    "{isa} {act:?} element {i}"
                );
            }
            for ((&got, &y), &g) in one.1.iter().zip(&one.0).zip(&upstream) {
                assert_eq!(got, act.backward(y, g), "{isa} {act:?}");
            }
        }
    }
}

/// The out-of-place passes an Activation layer runs give the bits of a copy and the in-place
/// passes, below and above the split threshold, on every path; lengths that differ are errors.
#[test]
fn out_of_place_activation_passes_match_the_in_place_ones() {
    let mut rng = Rng::new(13);
    for len in [37, 70_001] {
        let x = rng.fill(len);
        let upstream = rng.fill(len);
        for isa in Isa::available() {
            let opts = kernels::ExecOptions::with_isa(isa);
            for act in ACTIVATIONS {
                let mut in_place = x.clone();
                bias_activation(&opts, act, None, &mut in_place, 1).unwrap();
                let mut y = vec![f32::NAN; len];
                activation_forward(&opts, act, &x, &mut y).unwrap();
                assert_eq!(y, in_place, "{isa} {act:?} forward, {len}");
                let mut through = upstream.clone();
                activation_backward(&opts, act, &y, &mut through).unwrap();
                let mut dx = vec![f32::NAN; len];
                activation_backward_into(&opts, act, &y, &upstream, &mut dx).unwrap();
                assert_eq!(dx, through, "{isa} {act:?} backward, {len}");
            }
        }
    }
    let opts = kernels::ExecOptions::default();
    let err = activation_forward(&opts, Activation::Relu, &[0.0; 3], &mut [0.0; 4]).unwrap_err();
    assert!(
        err.to_string()
            .contains("the input has 3 elements but the output has 4"),
        "{err}"
    );
    let err =
        activation_backward_into(&opts, Activation::Tanh, &[0.0; 3], &[0.0; 3], &mut [0.0; 2])
            .unwrap_err();
    assert!(
        err.to_string().contains("the input gradient has 2"),
        "{err}"
    );
}

/// The backward pass of each activation against a central finite difference of its forward
/// pass (in f64 around the f32 input), on every path: |analytic − numeric| ≤ 1e-3·(1 + |numeric|).
#[test]
fn activation_backward_matches_finite_differences() {
    let mut rng = Rng::new(5);
    // Inputs away from relu's kink, so the difference quotient is the derivative.
    let x: Vec<f32> = rng
        .fill(2000)
        .into_iter()
        .map(|v| if v.abs() < 1e-2 { v + 0.05 } else { v } * 3.0)
        .collect();
    let upstream = rng.fill(2000);
    for isa in Isa::available() {
        for act in ACTIVATIONS {
            let mut y = x.clone();
            bias_activation(&kernels::ExecOptions::with_isa(isa), act, None, &mut y, 1).unwrap();
            let mut g = upstream.clone();
            activation_backward(&kernels::ExecOptions::with_isa(isa), act, &y, &mut g).unwrap();
            for i in 0..x.len() {
                let h = 1e-3;
                let numeric = (act64(act, x[i] as f64 + h) - act64(act, x[i] as f64 - h))
                    / (2.0 * h)
                    * upstream[i] as f64;
                let got = g[i] as f64;
                assert!(
                    (got - numeric).abs() <= 1e-3 * (1.0 + numeric.abs()),
                    "{isa} {act:?} at x = {}: {got} vs {numeric}",
                    x[i]
                );
            }
        }
    }
    let err = activation_backward(
        &kernels::ExecOptions::default(),
        Activation::Tanh,
        &[0.0; 3],
        &mut [0.0; 4],
    )
    .unwrap_err();
    assert!(err
        .to_string()
        .contains("the forward output has 3 elements but the gradient has 4"));
}

#[test]
fn relu_backward_is_zero_at_and_below_zero_output() {
    let y = [0.0, 2.0, 0.0, 1e-30];
    let mut g = [1.0, 1.0, -3.0, 5.0];
    activation_backward(
        &kernels::ExecOptions::default(),
        Activation::Relu,
        &y,
        &mut g,
    )
    .unwrap();
    assert_eq!(g, [0.0, 1.0, 0.0, 5.0]);
}
