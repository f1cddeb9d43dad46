//! What training a model must do at the least, counted from the model (not from a profile): the
//! products' floating-point operations per sample, the optimizer's per step, and the bytes the
//! optimizer's step touches — the numerator of a roofline, whose denominators (the machine's FMA
//! peak and memory bandwidth) the caller measures.

use crate::layers::Layer;
use crate::optimizers::Optimizer;

/// The work of training a model ([`crate::model::Sequential::training_cost`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrainingCost {
    /// The forward pass's products, per sample (two operations per multiply-add).
    pub forward_flops_per_sample: u64,
    /// The backward pass's products, per sample: every weight gradient, and the input gradient
    /// of each layer that has a layer with trainable weights below it (no other is needed).
    pub backward_flops_per_sample: u64,
    /// The trainable weights the optimizer updates.
    pub trainable_weights: u64,
    /// The optimizer's operations per step (its rule's per weight, see
    /// `kernels::optim::Rule::flops_per_weight`).
    pub optimizer_flops_per_step: u64,
    /// The bytes one optimizer step reads and writes (f32): weights, gradients and state read,
    /// weights and state written.
    pub optimizer_bytes_per_step: u64,
    /// The bytes of one input sample (f32).
    pub input_bytes_per_sample: u64,
}

impl TrainingCost {
    /// Floating-point operations of one epoch of `train` samples in batches of `batch` (steps
    /// rounded up), with a validation pass over `validation` samples.
    pub fn epoch_flops(&self, train: u64, batch: u64, validation: u64) -> u64 {
        let steps = train.div_ceil(batch.max(1));
        train * (self.forward_flops_per_sample + self.backward_flops_per_sample)
            + steps * self.optimizer_flops_per_step
            + validation * self.forward_flops_per_sample
    }
}

/// The cost of training `layers` (built) on samples of `input_shape` with `optimizer`.
pub(crate) fn training_cost(
    layers: &mut [Box<dyn Layer>],
    input_shape: &[usize],
    optimizer: &Optimizer,
) -> TrainingCost {
    let (mut forward, mut backward, mut weights) = (0u64, 0u64, 0u64);
    for layer in layers.iter_mut() {
        let f = layer.flops();
        let below = weights > 0;
        let mut own = 0u64;
        layer.for_each_param(&mut |p| {
            if p.trainable {
                own += p.value.len() as u64;
            }
        });
        forward += f.forward;
        if own > 0 {
            backward += f.weight_gradient;
        }
        if below {
            backward += f.input_gradient;
        }
        weights += own;
    }
    let (per_weight, state) = optimizer.cost_per_weight();
    let f32_bytes = std::mem::size_of::<f32>() as u64;
    TrainingCost {
        forward_flops_per_sample: forward,
        backward_flops_per_sample: backward,
        trainable_weights: weights,
        optimizer_flops_per_step: weights * per_weight,
        optimizer_bytes_per_step: weights * f32_bytes * (3 + 2 * state as u64),
        input_bytes_per_sample: input_shape.iter().product::<usize>() as u64 * f32_bytes,
    }
}

#[cfg(test)]
mod tests {
    use crate::prelude::*;

    #[test]
    fn the_reference_cnn_costs_what_its_products_do() {
        let mut m = Sequential::new()
            .input_shape(&[28, 28, 1])
            .add(Conv2D::new(32, (3, 3), Act::Relu))
            .add(MaxPooling2D::new((2, 2)))
            .add(Flatten::new())
            .add(Dense::new(128, Act::Relu))
            .add(Dense::new(10, Act::Softmax));
        m.compile(
            Optimizer::adam(),
            Loss::sparse_categorical_crossentropy(),
            &[],
        )
        .unwrap();
        let c = m.training_cost().unwrap();
        let conv = 26 * 26 * 32 * 9;
        let (d1, d2) = (5408 * 128, 128 * 10);
        assert_eq!(c.forward_flops_per_sample, 2 * (conv + d1 + d2));
        // The convolution's input gradient is not needed: nothing below it learns.
        assert_eq!(c.backward_flops_per_sample, 2 * (conv + 2 * d1 + 2 * d2));
        let w = 32 * 9 + 32 + d1 + 128 + d2 + 10;
        assert_eq!(c.trainable_weights, w);
        assert_eq!(c.optimizer_flops_per_step, 12 * w);
        assert_eq!(c.optimizer_bytes_per_step, 4 * w * 7);
        assert_eq!(c.input_bytes_per_sample, 784 * 4);
        // 60 000 samples in batches of 32 (1875 steps), validation on 10 000.
        assert_eq!(
            c.epoch_flops(60_000, 32, 10_000),
            60_000 * (c.forward_flops_per_sample + c.backward_flops_per_sample)
                + 1875 * 12 * w
                + 10_000 * c.forward_flops_per_sample
        );
    }

    #[test]
    fn batch_normalization_counts_only_its_trainable_weights() {
        let mut m = Sequential::new()
            .input_shape(&[4])
            .add(BatchNormalization::new())
            .add(Dense::new(3, Act::Softmax));
        m.compile(
            Optimizer::sgd().with_momentum(0.9, true),
            Loss::sparse_categorical_crossentropy(),
            &[],
        )
        .unwrap();
        let c = m.training_cost().unwrap();
        // γ and β learn; the moving statistics do not. The Dense needs its input gradient (the
        // normalisation below it learns).
        assert_eq!(c.trainable_weights, 8 + 15);
        assert_eq!(c.backward_flops_per_sample, 2 * 12 * 2);
        assert_eq!(c.optimizer_flops_per_step, 7 * 23);
        assert_eq!(c.optimizer_bytes_per_step, 4 * 23 * 5);
    }
}
