//! Learning-rate schedules with Keras 3's formulas and defaults
//! (`keras.optimizers.schedules`): the rate of each step as a function of the optimizer's step
//! count (`iterations`: 0 for the first step). An optimizer given one
//! (`Optimizer::with_schedule`) takes each step's rate from it. A leaf: the optimizer reads it.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A learning rate as a function of the step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum LearningRateSchedule {
    /// `ExponentialDecay(initial_learning_rate, decay_steps, decay_rate, staircase=False)`:
    /// `initial · decay_rate^(step / decay_steps)`, the exponent floored when `staircase`.
    ExponentialDecay {
        initial_learning_rate: f32,
        decay_steps: u64,
        decay_rate: f32,
        staircase: bool,
    },
    /// `CosineDecay(initial_learning_rate, decay_steps, alpha=0.0, warmup_target=None,
    /// warmup_steps=0)`: with a warm-up, a linear ramp from `initial` to `warmup_target` over
    /// `warmup_steps`, then from there `rate · ((1 − alpha)·½(1 + cos(π·t/decay_steps)) +
    /// alpha)`, t capped at `decay_steps`.
    CosineDecay {
        initial_learning_rate: f32,
        decay_steps: u64,
        alpha: f32,
        warmup_target: Option<f32>,
        warmup_steps: u64,
    },
    /// `PiecewiseConstantDecay(boundaries, values)`: `values[0]` up to and including step
    /// `boundaries[0]`, `values[1]` up to `boundaries[1]`, …, the last value after the last
    /// boundary.
    PiecewiseConstantDecay {
        boundaries: Vec<u64>,
        values: Vec<f32>,
    },
}

impl LearningRateSchedule {
    /// `ExponentialDecay(initial, decay_steps, decay_rate)` (not staircase).
    pub fn exponential_decay(
        initial_learning_rate: f32,
        decay_steps: u64,
        decay_rate: f32,
    ) -> Self {
        LearningRateSchedule::ExponentialDecay {
            initial_learning_rate,
            decay_steps,
            decay_rate,
            staircase: false,
        }
    }

    /// `CosineDecay(initial, decay_steps)` with Keras's defaults (alpha 0, no warm-up).
    pub fn cosine_decay(initial_learning_rate: f32, decay_steps: u64) -> Self {
        LearningRateSchedule::CosineDecay {
            initial_learning_rate,
            decay_steps,
            alpha: 0.0,
            warmup_target: None,
            warmup_steps: 0,
        }
    }

    /// `PiecewiseConstantDecay(boundaries, values)`; `values` has one more entry than
    /// `boundaries` (checked when the optimizer is compiled).
    pub fn piecewise_constant(boundaries: Vec<u64>, values: Vec<f32>) -> Self {
        LearningRateSchedule::PiecewiseConstantDecay { boundaries, values }
    }

    /// An exponential decay in whole intervals (`staircase=True`); other schedules unchanged.
    pub fn staircase(mut self, on: bool) -> Self {
        if let LearningRateSchedule::ExponentialDecay { staircase, .. } = &mut self {
            *staircase = on;
        }
        self
    }

    /// A cosine decay's floor, as a fraction of its starting rate (`alpha`); other schedules
    /// unchanged.
    pub fn alpha(mut self, value: f32) -> Self {
        if let LearningRateSchedule::CosineDecay { alpha, .. } = &mut self {
            *alpha = value;
        }
        self
    }

    /// A cosine decay's linear warm-up to `target` over `steps` steps; other schedules
    /// unchanged.
    pub fn warmup(mut self, target: f32, steps: u64) -> Self {
        if let LearningRateSchedule::CosineDecay {
            warmup_target,
            warmup_steps,
            ..
        } = &mut self
        {
            *warmup_target = Some(target);
            *warmup_steps = steps;
        }
        self
    }

    /// Keras's name of the schedule.
    pub fn name(&self) -> &'static str {
        match self {
            LearningRateSchedule::ExponentialDecay { .. } => "ExponentialDecay",
            LearningRateSchedule::CosineDecay { .. } => "CosineDecay",
            LearningRateSchedule::PiecewiseConstantDecay { .. } => "PiecewiseConstantDecay",
        }
    }

    /// The rate of step `step` (0-based), computed in f64 and rounded once.
    pub fn at(&self, step: u64) -> f32 {
        let s = step as f64;
        match *self {
            LearningRateSchedule::ExponentialDecay {
                initial_learning_rate,
                decay_steps,
                decay_rate,
                staircase,
            } => {
                let mut p = s / decay_steps as f64;
                if staircase {
                    p = p.floor();
                }
                (initial_learning_rate as f64 * (decay_rate as f64).powf(p)) as f32
            }
            LearningRateSchedule::CosineDecay {
                initial_learning_rate,
                decay_steps,
                alpha,
                warmup_target,
                warmup_steps,
            } => {
                let initial = initial_learning_rate as f64;
                let decay = |t: f64, from: f64| {
                    let cosine =
                        0.5 * (1.0 + (std::f64::consts::PI * t / decay_steps as f64).cos());
                    from * ((1.0 - alpha as f64) * cosine + alpha as f64)
                };
                let rate = match warmup_target {
                    None => decay(s.min(decay_steps as f64), initial),
                    Some(target) => {
                        let s = s.min((decay_steps + warmup_steps) as f64);
                        if s < warmup_steps as f64 {
                            (target as f64 - initial) * (s / warmup_steps as f64) + initial
                        } else {
                            decay(s - warmup_steps as f64, target as f64)
                        }
                    }
                };
                rate as f32
            }
            LearningRateSchedule::PiecewiseConstantDecay {
                ref boundaries,
                ref values,
            } => {
                let interval = boundaries.iter().take_while(|&&b| step > b).count();
                values[interval.min(values.len() - 1)]
            }
        }
    }

    /// Checks the arguments where Keras would fail or produce rates that are not numbers: decay
    /// steps ≥ 1, finite rates ≥ 0 and factors, boundaries increasing with one value more.
    pub fn validate(&self) -> Result<()> {
        let owner = self.name();
        let bad = |name: &'static str, value: String, allowed: &str| {
            Err(Error::Setting {
                owner,
                name,
                value,
                allowed: allowed.into(),
            })
        };
        let rate_ok = |r: f32| r.is_finite() && r >= 0.0;
        // What the two decays share: where they start, and over how many steps.
        let decay = |initial: f32, steps: u64| {
            if !rate_ok(initial) {
                return bad("initial_learning_rate", initial.to_string(), "in [0, ∞)");
            }
            if steps == 0 {
                return bad("decay_steps", "0".into(), "at least 1");
            }
            Ok(())
        };
        match self {
            LearningRateSchedule::ExponentialDecay {
                initial_learning_rate,
                decay_steps,
                decay_rate,
                ..
            } => {
                decay(*initial_learning_rate, *decay_steps)?;
                if !rate_ok(*decay_rate) {
                    return bad("decay_rate", decay_rate.to_string(), "in [0, ∞)");
                }
            }
            LearningRateSchedule::CosineDecay {
                initial_learning_rate,
                decay_steps,
                alpha,
                warmup_target,
                warmup_steps,
            } => {
                decay(*initial_learning_rate, *decay_steps)?;
                if !(0.0..=1.0).contains(alpha) {
                    return bad("alpha", alpha.to_string(), "in [0, 1]");
                }
                if let Some(t) = warmup_target {
                    if !rate_ok(*t) {
                        return bad("warmup_target", t.to_string(), "in [0, ∞)");
                    }
                    if *warmup_steps == 0 {
                        return bad(
                            "warmup_steps",
                            "0".into(),
                            "at least 1 with a warmup_target",
                        );
                    }
                }
            }
            LearningRateSchedule::PiecewiseConstantDecay { boundaries, values } => {
                if values.len() != boundaries.len() + 1 {
                    return bad(
                        "values",
                        format!("{values:?}"),
                        &format!(
                            "one longer than the {} boundaries (as Keras requires)",
                            boundaries.len()
                        ),
                    );
                }
                if boundaries.windows(2).any(|w| w[0] >= w[1]) {
                    return bad(
                        "boundaries",
                        format!("{boundaries:?}"),
                        "strictly increasing",
                    );
                }
                if let Some(v) = values.iter().find(|v| !rate_ok(**v)) {
                    return bad("values", v.to_string(), "in [0, ∞) (each)");
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f32, b: f64) -> bool {
        (a as f64 - b).abs() <= 1e-6 * b.abs().max(1e-12)
    }

    #[test]
    fn exponential_decay_is_keras_formula() {
        let s = LearningRateSchedule::exponential_decay(0.1, 100, 0.5);
        assert_eq!(s.at(0), 0.1);
        assert!(close(s.at(100), 0.05));
        assert!(close(s.at(150), 0.1 * 0.5f64.powf(1.5)));
        let s = s.staircase(true);
        assert!(close(s.at(150), 0.05));
        assert!(close(s.at(199), 0.05));
        assert!(close(s.at(200), 0.025));
    }

    #[test]
    fn cosine_decay_with_and_without_warmup() {
        let s = LearningRateSchedule::cosine_decay(1.0, 100);
        assert_eq!(s.at(0), 1.0);
        assert!(close(s.at(50), 0.5));
        assert_eq!(s.at(100), 0.0);
        assert_eq!(s.at(1000), 0.0, "capped at decay_steps");
        let s = LearningRateSchedule::cosine_decay(1.0, 100).alpha(0.1);
        assert!(close(s.at(100), 0.1));
        let s = LearningRateSchedule::cosine_decay(0.0, 100).warmup(1.0, 10);
        assert_eq!(s.at(0), 0.0);
        assert!(close(s.at(5), 0.5));
        assert_eq!(s.at(10), 1.0);
        assert!(close(s.at(60), 0.5));
        assert_eq!(s.at(110), 0.0);
    }

    #[test]
    fn piecewise_constant_includes_each_boundary_in_the_interval_before_it() {
        let s = LearningRateSchedule::piecewise_constant(vec![100, 200], vec![1.0, 0.5, 0.1]);
        assert_eq!(
            [s.at(0), s.at(100), s.at(101), s.at(200), s.at(201)],
            [1.0, 1.0, 0.5, 0.5, 0.1]
        );
    }

    #[test]
    fn bad_arguments_are_refused() {
        let cases = [
            (
                LearningRateSchedule::exponential_decay(0.1, 0, 0.5),
                "ExponentialDecay: decay_steps = 0 is not at least 1",
            ),
            (
                LearningRateSchedule::exponential_decay(f32::NAN, 10, 0.5),
                "ExponentialDecay: initial_learning_rate = NaN is not in [0, ∞)",
            ),
            (
                LearningRateSchedule::cosine_decay(0.1, 10).alpha(2.0),
                "CosineDecay: alpha = 2 is not in [0, 1]",
            ),
            (
                LearningRateSchedule::piecewise_constant(vec![10], vec![0.1]),
                "PiecewiseConstantDecay: values = [0.1] is not one longer than the 1 boundaries \
                 (as Keras requires)",
            ),
            (
                LearningRateSchedule::piecewise_constant(vec![10, 10], vec![0.1, 0.2, 0.3]),
                "PiecewiseConstantDecay: boundaries = [10, 10] is not strictly increasing",
            ),
        ];
        for (s, want) in cases {
            assert_eq!(s.validate().unwrap_err().to_string(), want);
        }
    }
}
