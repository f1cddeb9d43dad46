//! Accuracy of the vectorised exp, sigmoid and tanh on every path this machine has (each forced),
//! against f64, over dense sweeps of their input ranges, plus special values and argument errors.
//! The bounds are the ones `kernels::math` documents.

use kernels::ExecOptions;
use kernels::{math, Isa};
use proptest::prelude::*;

const ULP1: f64 = 1.0 / (1u64 << 23) as f64; // 2⁻²³: the spacing just above 1

type F32Fn = fn(&ExecOptions, &[f32], &mut [f32]) -> kernels::Result<()>;

/// Checks `f` on `isa` over `xs` against `reference`: relative error ≤ `rel` where the reference is
/// a normal f32, absolute ≤ 2⁻¹⁴⁸ below that, and exact agreement on ±∞.
fn check(
    name: &str,
    isa: Isa,
    f: F32Fn,
    reference: fn(f64) -> f64,
    xs: &[f32],
    rel: f64,
) -> Result<(), String> {
    let mut ys = vec![0.0f32; xs.len()];
    f(&ExecOptions::with_isa(isa), xs, &mut ys).map_err(|e| e.to_string())?;
    let mut worst = 0.0f64;
    for (&x, &y) in xs.iter().zip(&ys) {
        let want = reference(x as f64);
        let want32 = want as f32;
        if want32.is_infinite() || want.is_nan() {
            if !(y == want32 || (want.is_nan() && y.is_nan())) {
                return Err(format!(
                    "{name} on {isa}: f({x:e}) = {y:e}, expected {want32:e}"
                ));
            }
            continue;
        }
        let err = (y as f64 - want).abs();
        if want.abs() >= f32::MIN_POSITIVE as f64 {
            let r = err / want.abs();
            worst = worst.max(r);
            if r.is_nan() || r > rel {
                return Err(format!("{name} on {isa}: f({x:e}) = {y:e}, reference {want:e}, relative error {r:e} > {rel:e}"));
            }
        } else if err.is_nan() || err > 2f64.powi(-148) {
            return Err(format!(
                "{name} on {isa}: f({x:e}) = {y:e}, reference {want:e} (subnormal), error {err:e}"
            ));
        }
    }
    if xs.len() > 1000 {
        eprintln!(
            "{name} on {isa}: worst relative error {worst:e} over {} inputs",
            xs.len()
        );
    }
    Ok(())
}

fn sweep(lo: f32, hi: f32, step: f32) -> Vec<f32> {
    let n = ((hi - lo) / step) as usize;
    (0..=n).map(|i| lo + i as f32 * step).collect()
}

/// Tiny magnitudes of both signs, logarithmically spaced.
fn tiny() -> Vec<f32> {
    (-140..0)
        .flat_map(|e| [1.0f32, 1.37, 1.9].map(|m| m * 2f32.powi(e)))
        .flat_map(|v| [v, -v])
        .collect()
}

fn sigmoid64(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

#[test]
fn exp_within_its_bound_everywhere() {
    let mut xs = sweep(-105.0, 90.0, 0.0007);
    xs.extend(tiny());
    for isa in Isa::available() {
        check("exp", isa, math::exp_with, f64::exp, &xs, 2.0 * ULP1).unwrap();
    }
}

#[test]
fn sigmoid_within_its_bound_everywhere() {
    let mut xs = sweep(-110.0, 110.0, 0.0009);
    xs.extend(tiny());
    for isa in Isa::available() {
        check(
            "sigmoid",
            isa,
            math::sigmoid_with,
            sigmoid64,
            &xs,
            3.0 * ULP1,
        )
        .unwrap();
    }
}

#[test]
fn tanh_within_its_bound_everywhere() {
    let mut xs = sweep(-12.0, 12.0, 0.0001);
    xs.extend(tiny());
    for isa in Isa::available() {
        check("tanh", isa, math::tanh_with, f64::tanh, &xs, 3.0 * ULP1).unwrap();
    }
}

#[test]
fn special_values() {
    let xs = [
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        0.0,
        -0.0,
        f32::MAX,
        f32::MIN,
    ];
    for isa in Isa::available() {
        let mut y = [0.0f32; 7];
        math::exp_with(&kernels::ExecOptions::with_isa(isa), &xs, &mut y).unwrap();
        assert_eq!(&y[..2], &[f32::INFINITY, 0.0], "{isa}");
        assert!(y[2].is_nan(), "{isa}");
        assert_eq!(&y[3..], &[1.0, 1.0, f32::INFINITY, 0.0], "{isa}");
        math::sigmoid_with(&kernels::ExecOptions::with_isa(isa), &xs, &mut y).unwrap();
        assert_eq!(&y[..2], &[1.0, 0.0], "{isa}");
        assert!(y[2].is_nan(), "{isa}");
        assert_eq!(&y[3..], &[0.5, 0.5, 1.0, 0.0], "{isa}");
        math::tanh_with(&kernels::ExecOptions::with_isa(isa), &xs, &mut y).unwrap();
        assert_eq!(&y[..2], &[1.0, -1.0], "{isa}");
        assert!(y[2].is_nan(), "{isa}");
        assert_eq!(y[3].to_bits(), 0.0f32.to_bits(), "{isa}: tanh(+0)");
        assert_eq!(y[4].to_bits(), (-0.0f32).to_bits(), "{isa}: tanh(-0)");
        assert_eq!(&y[5..], &[1.0, -1.0], "{isa}");
    }
}

#[test]
fn length_mismatch_and_unavailable_paths_are_errors() {
    let x = [1.0f32; 5];
    let mut y = [0.0f32; 4];
    assert_eq!(
        math::exp(&x, &mut y).unwrap_err().to_string(),
        "exp: the input has 5 elements but the output has 4"
    );
    assert_eq!(
        math::tanh(&x, &mut y).unwrap_err().to_string(),
        "tanh: the input has 5 elements but the output has 4"
    );
    for isa in Isa::ALL.into_iter().filter(|i| !i.is_available()) {
        let err =
            math::sigmoid_in_place_with(&kernels::ExecOptions::with_isa(isa), &mut y).unwrap_err();
        assert_eq!(err, isa.check_available().unwrap_err());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Any length (vector bodies and remainders) and any finite inputs: in-place equals
    /// out-of-place, bit for bit, and every path is within the bounds.
    #[test]
    fn any_length_any_values(xs in prop::collection::vec(-120.0f32..120.0, 0..70)) {
        for isa in Isa::available() {
            for (name, f, g, reference, rel) in [
                ("exp", math::exp_with as F32Fn, math::exp_in_place_with as fn(&ExecOptions, &mut [f32]) -> kernels::Result<()>, f64::exp as fn(f64) -> f64, 2.0 * ULP1),
                ("sigmoid", math::sigmoid_with, math::sigmoid_in_place_with, sigmoid64, 3.0 * ULP1),
                ("tanh", math::tanh_with, math::tanh_in_place_with, f64::tanh, 3.0 * ULP1),
            ] {
                prop_assert_eq!(check(name, isa, f, reference, &xs, rel), Ok(()));
                let mut out = vec![0.0f32; xs.len()];
                f(&ExecOptions::with_isa(isa), &xs, &mut out).unwrap();
                let mut v = xs.clone();
                g(&ExecOptions::with_isa(isa), &mut v).unwrap();
                prop_assert_eq!(
                    out.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                    v.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
                );
            }
        }
    }
}
