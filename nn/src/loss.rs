//! Losses with Keras's definitions (mean over the batch; binary cross-entropy and MSE also mean
//! over each sample's outputs), and the accuracy metric that goes with each.
//!
//! When the model ends in softmax (sigmoid) and the loss is categorical (binary) cross-entropy on
//! probabilities, the gradient is taken with respect to the pre-activation directly — `(p − y)/n`
//! — and the last layer skips its activation's derivative: exact, cheaper, and stable where the
//! probabilities saturate. The loss value is still computed from the clipped probabilities, as
//! Keras does (clip to [1e-7, 1 − 1e-7]).

use serde::{Deserialize, Serialize};

use crate::activations::Act;
use crate::error::{Error, Result};
use crate::tensor::{argmax, Tensor};

/// Keras's `epsilon()`: the clip applied to probabilities before the logarithm.
const EPSILON: f32 = 1e-7;

/// A loss function, as Keras names them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Loss {
    /// One-hot (or probability) targets, one row per sample.
    CategoricalCrossentropy {
        from_logits: bool,
    },
    /// Integer class labels, one per sample.
    SparseCategoricalCrossentropy {
        from_logits: bool,
    },
    /// Targets in [0, 1] per output.
    BinaryCrossentropy {
        from_logits: bool,
    },
    MeanSquaredError,
}

impl Loss {
    /// `"categorical_crossentropy"`.
    pub fn categorical_crossentropy() -> Loss {
        Loss::CategoricalCrossentropy { from_logits: false }
    }
    /// `"sparse_categorical_crossentropy"`.
    pub fn sparse_categorical_crossentropy() -> Loss {
        Loss::SparseCategoricalCrossentropy { from_logits: false }
    }
    /// `"binary_crossentropy"`.
    pub fn binary_crossentropy() -> Loss {
        Loss::BinaryCrossentropy { from_logits: false }
    }
    /// `"mse"`.
    pub fn mse() -> Loss {
        Loss::MeanSquaredError
    }

    /// The loss Keras calls `name`.
    pub fn from_name(name: &str) -> Result<Loss> {
        Ok(match name {
            "categorical_crossentropy" => Loss::categorical_crossentropy(),
            "sparse_categorical_crossentropy" => Loss::sparse_categorical_crossentropy(),
            "binary_crossentropy" => Loss::binary_crossentropy(),
            "mse" | "mean_squared_error" => Loss::MeanSquaredError,
            other => {
                return Err(Error::UnknownName {
                    kind: "loss",
                    name: other.to_string(),
                    expected: "categorical_crossentropy, sparse_categorical_crossentropy, \
                               binary_crossentropy or mse",
                })
            }
        })
    }

    pub fn name(&self) -> &'static str {
        match self {
            Loss::CategoricalCrossentropy { .. } => "categorical_crossentropy",
            Loss::SparseCategoricalCrossentropy { .. } => "sparse_categorical_crossentropy",
            Loss::BinaryCrossentropy { .. } => "binary_crossentropy",
            Loss::MeanSquaredError => "mean_squared_error",
        }
    }

    /// Target elements per sample for a model with `outputs` outputs per sample.
    pub(crate) fn target_len(&self, outputs: usize) -> usize {
        match self {
            Loss::SparseCategoricalCrossentropy { .. } => 1,
            _ => outputs,
        }
    }

    /// Whether the gradient is taken through the model's last activation `last`.
    pub(crate) fn fuses_with(&self, last: Act) -> bool {
        matches!(
            (self, last),
            (
                Loss::CategoricalCrossentropy { from_logits: false }
                    | Loss::SparseCategoricalCrossentropy { from_logits: false },
                Act::Softmax
            ) | (
                Loss::BinaryCrossentropy { from_logits: false },
                Act::Sigmoid
            )
        )
    }

    /// Checks targets `y` against a model with `outputs` outputs per sample and `samples` inputs:
    /// the count, the shape, and for sparse labels that they are whole numbers in range.
    pub(crate) fn check_targets(&self, y: &Tensor, samples: usize, outputs: usize) -> Result<()> {
        if y.samples() != samples {
            return Err(Error::DataShape {
                what: "the targets".into(),
                shape: y.shape().to_vec(),
                expected: format!("there are {samples} input samples"),
            });
        }
        let per = y.sample_len();
        let want = self.target_len(outputs);
        if per != want {
            let hint = match self {
                Loss::CategoricalCrossentropy { .. } if per == 1 => {
                    " (integer labels: use sparse_categorical_crossentropy, or to_categorical)"
                }
                Loss::SparseCategoricalCrossentropy { .. } if per == outputs => {
                    " (one-hot targets: use categorical_crossentropy)"
                }
                _ => "",
            };
            return Err(Error::DataShape {
                what: "the targets".into(),
                shape: y.shape().to_vec(),
                expected: format!(
                    "{} needs {want} target value(s) per sample for a model with {outputs} \
                     outputs{hint}",
                    self.name()
                ),
            });
        }
        self.check_target_values(y.data(), outputs)
    }

    /// Checks target values (of any number of samples): finite, and for sparse labels whole
    /// numbers in `0..outputs`. Every entry point that trains or evaluates runs it.
    pub(crate) fn check_target_values(&self, y: &[f32], outputs: usize) -> Result<()> {
        if let Loss::SparseCategoricalCrossentropy { .. } = self {
            // One label per sample: index i is sample i.
            if let Some((i, &l)) = y
                .iter()
                .enumerate()
                .find(|(_, &l)| !(l >= 0.0 && l < outputs as f32 && l.fract() == 0.0))
            {
                return Err(Error::Target {
                    loss: self.name(),
                    index: i,
                    value: l,
                    takes: format!("class indices in 0..{outputs}"),
                });
            }
        } else if let Loss::BinaryCrossentropy { .. } = self {
            if let Some((i, &v)) = y
                .iter()
                .enumerate()
                .find(|(_, v)| !(0.0..=1.0).contains(*v))
            {
                return Err(Error::Target {
                    loss: self.name(),
                    index: i,
                    value: v,
                    takes: "targets in [0, 1]".into(),
                });
            }
        } else if let Some((i, &v)) = y.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(Error::NonFinite {
                what: "the target tensor".into(),
                index: i,
                value: v,
            });
        }
        Ok(())
    }

    /// Sum over the `n` samples of the per-sample loss, and the gradient of the *mean* loss
    /// written into `grad`: with respect to the pre-activation when `fused`, else the output.
    /// `out` holds `n × k` outputs, `y` the targets.
    pub(crate) fn compute(
        &self,
        out: &[f32],
        y: &[f32],
        grad: &mut [f32],
        n: usize,
        k: usize,
        fused: bool,
    ) -> f64 {
        self.compute_part(out, y, grad, (n, n), k, fused)
    }

    /// [`Loss::compute`] for `n` samples that are part of a batch of `batch` (a data-parallel
    /// rank's share, or a micro-batch): the gradient is that of the whole batch's mean loss, so
    /// the parts' gradients sum to the batch's.
    pub(crate) fn compute_part(
        &self,
        out: &[f32],
        y: &[f32],
        grad: &mut [f32],
        (n, batch): (usize, usize),
        k: usize,
        fused: bool,
    ) -> f64 {
        let inv_n = 1.0 / batch as f32;
        let mut total = 0.0f64;
        match *self {
            Loss::CategoricalCrossentropy { from_logits }
            | Loss::SparseCategoricalCrossentropy { from_logits } => {
                let sparse = matches!(self, Loss::SparseCategoricalCrossentropy { .. });
                for r in 0..n {
                    let o = &out[r * k..(r + 1) * k];
                    let g = &mut grad[r * k..(r + 1) * k];
                    let target = |j: usize| -> f32 {
                        if sparse {
                            (y[r] as usize == j) as u8 as f32
                        } else {
                            y[r * k + j]
                        }
                    };
                    if from_logits {
                        // log-softmax of the logits, stable: shift by the max.
                        let max = o.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
                        let sum: f64 = o.iter().map(|&v| ((v - max) as f64).exp()).sum();
                        let log_sum = sum.ln();
                        for j in 0..k {
                            let logp = (o[j] - max) as f64 - log_sum;
                            let t = target(j);
                            if t != 0.0 {
                                total -= t as f64 * logp;
                            }
                            g[j] = (logp.exp() as f32 - t) * inv_n;
                        }
                    } else {
                        // Keras: normalise the rows, clip, −Σ t·ln p. Not fused, the gradient
                        // with respect to the outputs o (p = o/s): (Σt − t_j/p_j)/s.
                        let s: f32 = o.iter().sum();
                        let t_sum: f32 = (0..k).map(target).sum();
                        for j in 0..k {
                            let p = (o[j] / s).clamp(EPSILON, 1.0 - EPSILON);
                            let t = target(j);
                            if t != 0.0 {
                                total -= t as f64 * (p as f64).ln();
                            }
                            g[j] = if fused {
                                (o[j] - t) * inv_n
                            } else {
                                (t_sum - t / p) / s * inv_n
                            };
                        }
                    }
                }
            }
            Loss::BinaryCrossentropy { from_logits } => {
                let scale = inv_n / k as f32;
                for i in 0..n * k {
                    let (o, t) = (out[i], y[i]);
                    if from_logits {
                        // max(z, 0) − z·t + ln(1 + e^−|z|)
                        let z = o as f64;
                        total += (z.max(0.0) - z * t as f64 + (-z.abs()).exp().ln_1p()) / k as f64;
                        let p = 1.0 / (1.0 + (-z).exp());
                        grad[i] = (p as f32 - t) * scale;
                    } else {
                        let p = o.clamp(EPSILON, 1.0 - EPSILON) as f64;
                        total -= (t as f64 * p.ln() + (1.0 - t as f64) * (1.0 - p).ln()) / k as f64;
                        grad[i] = if fused {
                            (o - t) * scale
                        } else {
                            ((p - t as f64) / (p * (1.0 - p))) as f32 * scale
                        };
                    }
                }
            }
            Loss::MeanSquaredError => {
                let scale = 2.0 * inv_n / k as f32;
                for i in 0..n * k {
                    let d = out[i] - y[i];
                    total += (d as f64) * (d as f64) / k as f64;
                    grad[i] = d * scale;
                }
            }
        }
        total
    }

    /// Correct predictions among the `n` samples (binary: among the `n × k` outputs), and the
    /// count they are out of: Keras's "accuracy" for this loss.
    pub(crate) fn correct(&self, out: &[f32], y: &[f32], n: usize, k: usize) -> (usize, usize) {
        match self {
            Loss::SparseCategoricalCrossentropy { .. } => {
                let hits = (0..n)
                    .filter(|&r| argmax(&out[r * k..(r + 1) * k]) == y[r] as usize)
                    .count();
                (hits, n)
            }
            Loss::BinaryCrossentropy { from_logits } => {
                let threshold = if *from_logits { 0.0 } else { 0.5 };
                let hits = (0..n * k)
                    .filter(|&i| (out[i] > threshold) == (y[i] > 0.5))
                    .count();
                (hits, n * k)
            }
            _ => {
                let hits = (0..n)
                    .filter(|&r| argmax(&out[r * k..(r + 1) * k]) == argmax(&y[r * k..(r + 1) * k]))
                    .count();
                (hits, n)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! Finite-difference checks of every loss's gradient: with respect to the outputs, and (fused)
    //! with respect to the logits through the final softmax or sigmoid. Mean loss over the batch
    //! in f64 from f32 outputs; step 1e-3; tolerance 1e-3·(1 + |numeric|).
    use super::*;

    fn softmax(z: &[f32], k: usize) -> Vec<f32> {
        z.chunks(k)
            .flat_map(|r| {
                let m = r.iter().fold(f32::MIN, |a, &b| a.max(b));
                let e: Vec<f64> = r.iter().map(|&v| ((v - m) as f64).exp()).collect();
                let s: f64 = e.iter().sum();
                e.into_iter().map(move |v| (v / s) as f32)
            })
            .collect()
    }
    fn sigmoid(z: &[f32]) -> Vec<f32> {
        z.iter()
            .map(|&v| (1.0 / (1.0 + (-v as f64).exp())) as f32)
            .collect()
    }

    /// Checks `loss`'s gradient at logits `z` (`n × k`), where the model's output is
    /// `link(z)`; `fused` says whether the gradient is taken through the link.
    fn check(
        loss: Loss,
        z: &[f32],
        y: &[f32],
        n: usize,
        k: usize,
        link: fn(&[f32], usize) -> Vec<f32>,
        fused: bool,
    ) {
        let value = |z: &[f32]| {
            let mut g = vec![0.0; n * k];
            loss.compute(&link(z, k), y, &mut g, n, k, fused) / n as f64
        };
        let mut grad = vec![0.0; n * k];
        let out = link(z, k);
        loss.compute(&out, y, &mut grad, n, k, fused);
        let h = 1e-3f32;
        for i in 0..n * k {
            if fused {
                let mut zp = z.to_vec();
                zp[i] += h;
                let mut zm = z.to_vec();
                zm[i] -= h;
                let numeric = (value(&zp) - value(&zm)) / (2.0 * h as f64);
                assert!(
                    (grad[i] as f64 - numeric).abs() <= 1e-3 * (1.0 + numeric.abs()),
                    "{loss:?} fused d/dz[{i}]: {} vs {numeric}",
                    grad[i]
                );
            } else {
                // With respect to the outputs themselves.
                let v = |o: &[f32]| {
                    let mut g = vec![0.0; n * k];
                    loss.compute(o, y, &mut g, n, k, false) / n as f64
                };
                let mut op = out.clone();
                op[i] += h;
                let mut om = out.clone();
                om[i] -= h;
                let numeric = (v(&op) - v(&om)) / (2.0 * h as f64);
                assert!(
                    (grad[i] as f64 - numeric).abs() <= 1e-3 * (1.0 + numeric.abs()),
                    "{loss:?} d/dout[{i}]: {} vs {numeric}",
                    grad[i]
                );
            }
        }
    }

    const Z: [f32; 8] = [0.3, -1.2, 0.8, 0.1, -0.4, 1.5, -0.7, 0.2];

    #[test]
    fn categorical_crossentropy_fused_from_logits_and_on_probabilities() {
        let y = [0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0];
        let sm: fn(&[f32], usize) -> Vec<f32> = softmax;
        let id: fn(&[f32], usize) -> Vec<f32> = |z, _| z.to_vec();
        check(Loss::categorical_crossentropy(), &Z, &y, 2, 4, sm, true);
        check(
            Loss::CategoricalCrossentropy { from_logits: true },
            &Z,
            &y,
            2,
            4,
            id,
            false,
        );
        // Not fused: the gradient with respect to probabilities (kept inside the clip).
        check(Loss::categorical_crossentropy(), &Z, &y, 2, 4, sm, false);
    }

    #[test]
    fn sparse_categorical_crossentropy() {
        let y = [2.0, 1.0];
        let sm: fn(&[f32], usize) -> Vec<f32> = softmax;
        let id: fn(&[f32], usize) -> Vec<f32> = |z, _| z.to_vec();
        check(
            Loss::sparse_categorical_crossentropy(),
            &Z,
            &y,
            2,
            4,
            sm,
            true,
        );
        check(
            Loss::SparseCategoricalCrossentropy { from_logits: true },
            &Z,
            &y,
            2,
            4,
            id,
            false,
        );
    }

    #[test]
    fn binary_crossentropy_and_mse() {
        let y = [1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0];
        let sg: fn(&[f32], usize) -> Vec<f32> = |z, _| sigmoid(z);
        let id: fn(&[f32], usize) -> Vec<f32> = |z, _| z.to_vec();
        check(Loss::binary_crossentropy(), &Z, &y, 2, 4, sg, true);
        check(Loss::binary_crossentropy(), &Z, &y, 2, 4, sg, false);
        check(
            Loss::BinaryCrossentropy { from_logits: true },
            &Z,
            &y,
            2,
            4,
            id,
            false,
        );
        check(Loss::mse(), &Z, &y, 2, 4, id, false);
    }

    #[test]
    fn values_match_keras_definitions() {
        // −ln 0.7 for a one-hot target on p = 0.7; MSE of (1, 3) vs (0, 0) is 5.
        let mut g = [0.0; 2];
        let v =
            Loss::categorical_crossentropy().compute(&[0.7, 0.3], &[1.0, 0.0], &mut g, 1, 2, true);
        assert!((v - -(0.7f64.ln())).abs() < 1e-6);
        let v = Loss::mse().compute(&[1.0, 3.0], &[0.0, 0.0], &mut g, 1, 2, false);
        assert!((v - 5.0).abs() < 1e-9);
        // Keras clips probabilities at 1e-7: a zero probability costs −ln 1e-7, not ∞.
        let v =
            Loss::categorical_crossentropy().compute(&[0.0, 1.0], &[1.0, 0.0], &mut g, 1, 2, true);
        assert!((v - -(1e-7f64.ln())).abs() < 1e-3);
    }
}
