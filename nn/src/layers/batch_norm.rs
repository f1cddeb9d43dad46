//! Keras's `BatchNormalization` over the last axis, through `kernels::norm`.

use kernels::conv_norm_pool::{conv2d_batch_norm_max_pool_backward, ConvGrads, Normalisation};
use kernels::conv_pool::PooledGradient;
use kernels::norm::{
    batch_norm_backward, batch_norm_forward_inference, batch_norm_forward_training,
    batch_norm_scale, BatchNorm, BatchNormGrads, BatchStats, FixedNorm,
};
use kernels::norm_pool::{batch_norm_max_pool_backward, batch_norm_max_pool_forward_training};
use kernels::ExecOptions;
use rand::rngs::StdRng;

use super::{
    elements, grow, next_version, zeros, Inferred, Kind, Layer, LayerConfig, MaxPooling2D, Param,
};
use crate::activations::Act;
use crate::error::{Error, Result};

/// Keras's `BatchNormalization(axis=-1, momentum=0.99, epsilon=1e-3)`: in training, each
/// channel (the last axis) normalised with the batch's mean and biased variance, then scaled by
/// `gamma` and shifted by `beta` (trainable; ones and zeros at first), and the moving mean and
/// variance (zeros and ones at first, not trainable, saved with the weights) moved towards the
/// batch's by `1 − momentum`; at inference, normalised with the moving statistics.
///
/// In a compiled model, an elementwise `Activation` layer right after it (not the model's last)
/// runs inside its passes: its output is then the activation's, and the Activation layer has no
/// pass of its own (two passes over memory fewer each way).
pub struct BatchNormalization {
    name: String,
    momentum: f32,
    epsilon: f32,
    channels: usize,
    out_shape: Vec<usize>,
    /// `[channels]`, the shape of all four tensors.
    param_shape: Vec<usize>,
    gamma: Vec<f32>,
    beta: Vec<f32>,
    moving_mean: Vec<f32>,
    moving_variance: Vec<f32>,
    dgamma: Vec<f32>,
    dbeta: Vec<f32>,
    /// The gradient of the non-trainable tensors: zeros.
    no_grad: Vec<f32>,
    /// The (empty) gradient of the non-trainable moving statistics.
    none: Vec<f32>,
    /// The last training pass's batch statistics (what backward differentiates through).
    mean: Vec<f32>,
    variance: Vec<f32>,
    inv_std: Vec<f32>,
    /// The inference scale of the moving statistics.
    scale: Vec<f32>,
    out: Vec<f32>,
    /// The version of the parameters and moving statistics (see `next_version`).
    version: u64,
    /// The activation of the Activation layer after this one, run inside this layer's passes
    /// (linear: none; decided at compile).
    act: Act,
    /// Whether `backward` receives the gradient before `act` (the layer after took its
    /// derivative over: a MaxPooling2D).
    grad_is_preactivation: bool,
}

impl Default for BatchNormalization {
    fn default() -> Self {
        BatchNormalization::new()
    }
}

impl BatchNormalization {
    /// Keras's defaults: momentum 0.99, epsilon 1e-3.
    pub fn new() -> BatchNormalization {
        BatchNormalization {
            name: String::new(),
            momentum: 0.99,
            epsilon: 1e-3,
            channels: 0,
            out_shape: vec![],
            param_shape: vec![],
            gamma: vec![],
            beta: vec![],
            moving_mean: vec![],
            moving_variance: vec![],
            dgamma: vec![],
            dbeta: vec![],
            no_grad: vec![],
            none: vec![],
            mean: vec![],
            variance: vec![],
            inv_std: vec![],
            scale: vec![],
            out: vec![],
            version: 0,
            act: Act::Linear,
            grad_is_preactivation: false,
        }
    }
    /// The weight of the old moving statistics in each update (in [0, 1]).
    pub fn momentum(mut self, momentum: f32) -> BatchNormalization {
        self.momentum = momentum;
        self
    }
    /// Added to the variance before its square root (finite, > 0).
    pub fn epsilon(mut self, epsilon: f32) -> BatchNormalization {
        self.epsilon = epsilon;
        self
    }

    /// The channels normalised (the last axis; after `build`).
    pub(crate) fn channels(&self) -> usize {
        self.channels
    }

    /// `n` samples as rows of channels (an image's positions are rows too).
    fn shape(&self, n: usize) -> BatchNorm {
        BatchNorm {
            rows: n * (self.per_sample() / self.channels.max(1)),
            channels: self.channels,
            epsilon: self.epsilon,
        }
    }
    fn per_sample(&self) -> usize {
        self.out_shape.iter().product()
    }

    /// The inference normalisation (moving statistics, γ, β) and its version: what is folded
    /// into a linear layer before this one at inference.
    pub(crate) fn fixed_norm(&self) -> (FixedNorm<'_>, u64) {
        let norm = FixedNorm {
            gamma: &self.gamma,
            beta: &self.beta,
            mean: &self.moving_mean,
            variance: &self.moving_variance,
            epsilon: self.epsilon,
        };
        (norm, self.version)
    }

    /// Runs `act` (the activation of the Activation layer right after this one) inside this
    /// layer's passes from now on, when it is elementwise; returns whether it does (a softmax,
    /// or `None`, leaves the activation to its own layer). Called at every compile.
    pub(crate) fn absorb_activation(&mut self, act: Option<Act>) -> bool {
        self.act = act.filter(|&a| a != Act::Softmax).unwrap_or(Act::Linear);
        self.act != Act::Linear
    }

    /// Whether this layer runs the activation of the Activation layer after it.
    pub(crate) fn runs_next_activation(&self) -> bool {
        self.act != Act::Linear
    }

    /// Whether `backward` receives the gradient before this layer's activation (the layer after
    /// took its derivative over).
    pub(crate) fn gets_preactivation_gradient(&self) -> bool {
        self.grad_is_preactivation
    }

    /// After a training pass: Keras's moving = moving·momentum + batch·(1 − momentum).
    fn update_moving_statistics(&mut self) {
        self.version = next_version();
        let m = self.momentum;
        for (mv, &b) in self.moving_mean.iter_mut().zip(&self.mean) {
            *mv = *mv * m + b * (1.0 - m);
        }
        for (mv, &b) in self.moving_variance.iter_mut().zip(&self.variance) {
            *mv = *mv * m + b * (1.0 - m);
        }
    }

    /// This layer and the MaxPooling2D `pool` reading its output, forward over `n` samples of
    /// `x` as one pass (the plan's `NormPool`): in training, the pooling's output and argmax
    /// straight from `x` (this layer's own output is not written: the plan fuses only where no
    /// backward pass reads it); at inference, the two passes in turn.
    pub(crate) fn forward_pooled(
        &mut self,
        pool: &mut MaxPooling2D,
        x: &[f32],
        n: usize,
        training: bool,
    ) -> Result<()> {
        if !training {
            self.forward(x, n, false)?;
            return pool.forward(&self.out, n, false);
        }
        let (p, y, argmax) = pool.parts(n, true);
        let argmax = argmax.expect("a training pass keeps the argmax");
        batch_norm_max_pool_forward_training(
            &ExecOptions::default(),
            &p,
            self.epsilon,
            &x[..p.input_len()],
            (&self.gamma, &self.beta),
            self.act.elementwise(),
            (y, argmax),
            BatchStats {
                mean: &mut self.mean,
                variance: &mut self.variance,
                inv_std: &mut self.inv_std,
            },
        )
        .map_err(Error::kernel(&self.name))?;
        self.update_moving_statistics();
        Ok(())
    }

    /// The backward passes of the MaxPooling2D `pool` reading this layer's output and of this
    /// layer as one (the plan's fused pair, after [`Self::forward_pooled`]): the gradient of the
    /// normalised output is formed from the pooling's gradient `grad` a few rows at a time,
    /// never written whole; `dx` gets the gradient with respect to this layer's input `x`.
    /// `None` unless the pooling took over this layer's activation (or its absence).
    pub(crate) fn backward_pooled(
        &mut self,
        pool: &MaxPooling2D,
        x: &[f32],
        grad: &[f32],
        dx: Option<&mut [f32]>,
        n: usize,
    ) -> Option<Result<()>> {
        if !self.grad_is_preactivation {
            return None;
        }
        let (p, act, y_pool, argmax) = pool.backward_parts(n)?;
        let len = p.input_len();
        let run = batch_norm_max_pool_backward(
            &ExecOptions::default(),
            &p,
            self.epsilon,
            &x[..len],
            PooledGradient {
                act,
                y_pool,
                dy_pool: &grad[..p.output_len()],
                argmax,
            },
            &self.gamma,
            (&self.mean, &self.inv_std),
            dx.map(|d| &mut d[..len]),
            BatchNormGrads {
                dgamma: &mut self.dgamma,
                dbeta: &mut self.dbeta,
            },
        );
        Some(run.map_err(Error::kernel(&self.name)))
    }

    /// The backward passes of the max pooling `pool` after this layer (through the activation it
    /// took over), of this layer, and of the Conv2D `conv` below it (linear, the model's first
    /// layer: no input gradient) as one, from the pooling's gradient `grad`; `x` is the
    /// convolution's input (see `kernels::conv_norm_pool::conv2d_batch_norm_max_pool_backward`).
    /// `None` unless the pooling took over this layer's activation.
    pub(crate) fn backward_pooled_into_conv(
        &mut self,
        conv: &mut super::Conv2D,
        pool: &MaxPooling2D,
        x: &[f32],
        grad: &[f32],
        n: usize,
    ) -> Option<Result<()>> {
        if !self.grad_is_preactivation || !conv.is_linear() {
            return None;
        }
        let (p, act, y_pool, argmax) = pool.backward_parts(n)?;
        let (s, z, dkernel, dbias) = conv.weight_gradient_parts(n);
        let run = conv2d_batch_norm_max_pool_backward(
            &ExecOptions::default(),
            &s,
            &x[..s.input_len()],
            &p,
            Normalisation {
                x: z,
                epsilon: self.epsilon,
                gamma: &self.gamma,
                mean: &self.mean,
                inv_std: &self.inv_std,
            },
            PooledGradient {
                act,
                y_pool,
                dy_pool: &grad[..p.output_len()],
                argmax,
            },
            BatchNormGrads {
                dgamma: &mut self.dgamma,
                dbeta: &mut self.dbeta,
            },
            ConvGrads {
                dw: dkernel,
                db: Some(dbias),
            },
        );
        Some(run.map_err(Error::kernel(&self.name)))
    }

    fn setting(&self, setting: &'static str, value: f32, reason: &str) -> Error {
        Error::LayerSetting {
            layer: self.name.clone(),
            class: "BatchNormalization",
            setting,
            value: value.to_string(),
            reason: reason.into(),
        }
    }
}

impl Layer for BatchNormalization {
    layer_identity!("BatchNormalization");

    fn infer(&self, input: &[usize]) -> Result<Inferred> {
        if !(0.0..=1.0).contains(&self.momentum) {
            return Err(self.setting("momentum", self.momentum, "not in [0, 1]"));
        }
        if !(self.epsilon.is_finite() && self.epsilon > 0.0) {
            return Err(self.setting("epsilon", self.epsilon, "not a finite number > 0"));
        }
        let Some(&c) = input.last().filter(|&&c| c > 0) else {
            return Err(Error::LayerInput {
                layer: self.name.clone(),
                class: "BatchNormalization",
                expected: "samples with a last (channel) axis of at least 1",
                input: input.to_vec(),
                hint: "",
            });
        };
        elements(input, &self.name)?;
        let p = vec![c];
        Ok(Inferred {
            output: input.to_vec(),
            params: vec![
                ("gamma", p.clone()),
                ("beta", p.clone()),
                ("moving_mean", p.clone()),
                ("moving_variance", p),
            ],
        })
    }

    fn build(&mut self, input: &[usize], _rng: &mut StdRng) -> Result<Vec<usize>> {
        let inferred = self.infer(input)?;
        let c = *input.last().expect("checked by infer");
        if self.channels != c || self.gamma.len() != c {
            let ones = |layer: &str| -> Result<Vec<f32>> {
                let mut v = zeros(c, layer)?;
                v.fill(1.0);
                Ok(v)
            };
            self.gamma = ones(&self.name)?;
            self.beta = zeros(c, &self.name)?;
            self.moving_mean = zeros(c, &self.name)?;
            self.moving_variance = ones(&self.name)?;
            for v in [
                &mut self.dgamma,
                &mut self.dbeta,
                &mut self.no_grad,
                &mut self.mean,
                &mut self.variance,
                &mut self.inv_std,
                &mut self.scale,
            ] {
                *v = zeros(c, &self.name)?;
            }
            self.version = next_version();
        }
        self.channels = c;
        self.param_shape = vec![c];
        self.out_shape = inferred.output.clone();
        Ok(inferred.output)
    }

    fn allocate(&mut self, batch: usize) -> Result<()> {
        let per = self.per_sample();
        grow(&mut self.out, batch, per, 0.0, &self.name)
    }

    fn output_shape(&self) -> &[usize] {
        &self.out_shape
    }

    fn forward(&mut self, x: &[f32], n: usize, training: bool) -> Result<()> {
        let s = self.shape(n);
        let len = n * self.per_sample();
        let (x, y) = (&x[..len], &mut self.out[..len]);
        let opts = ExecOptions::default();
        let act = self.act.elementwise();
        if !training {
            batch_norm_scale(
                &self.gamma,
                &self.moving_variance,
                self.epsilon,
                &mut self.scale,
            )
            .and_then(|()| {
                let affine = (&self.moving_mean[..], &self.scale[..], &self.beta[..]);
                batch_norm_forward_inference(&opts, &s, x, affine, act, y)
            })
            .map_err(Error::kernel(&self.name))?;
            return Ok(());
        }
        batch_norm_forward_training(
            &opts,
            &s,
            x,
            (&self.gamma, &self.beta),
            act,
            y,
            BatchStats {
                mean: &mut self.mean,
                variance: &mut self.variance,
                inv_std: &mut self.inv_std,
            },
        )
        .map_err(Error::kernel(&self.name))?;
        self.update_moving_statistics();
        Ok(())
    }

    fn output(&self) -> &[f32] {
        &self.out
    }

    fn backward(
        &mut self,
        x: &[f32],
        grad: &mut [f32],
        dx: Option<&mut [f32]>,
        n: usize,
    ) -> Result<()> {
        let s = self.shape(n);
        let len = n * self.per_sample();
        // The gradient arrives after the activation this layer ran: it is taken back through it
        // on the fly, from this layer's output (the activation's).
        let after = (self.act != Act::Linear && !self.grad_is_preactivation)
            .then(|| (self.act.elementwise(), &self.out[..len]));
        batch_norm_backward(
            &ExecOptions::default(),
            &s,
            &x[..len],
            &grad[..len],
            after,
            &self.gamma,
            (&self.mean, &self.inv_std),
            dx.map(|d| &mut d[..len]),
            BatchNormGrads {
                dgamma: &mut self.dgamma,
                dbeta: &mut self.dbeta,
            },
        )
        .map_err(Error::kernel(&self.name))
    }

    fn for_each_param(&mut self, f: &mut dyn FnMut(Param<'_>)) {
        // Whoever is handed the weights may change them.
        self.version = next_version();
        let shape = &self.param_shape;
        f(Param {
            name: "gamma",
            shape,
            value: &mut self.gamma,
            grad: &mut self.dgamma,
            trainable: true,
        });
        f(Param {
            name: "beta",
            shape,
            value: &mut self.beta,
            grad: &mut self.dbeta,
            trainable: true,
        });
        f(Param {
            name: "moving_mean",
            shape,
            value: &mut self.moving_mean,
            grad: &mut self.none,
            trainable: false,
        });
        f(Param {
            name: "moving_variance",
            shape,
            value: &mut self.moving_variance,
            grad: &mut self.none,
            trainable: false,
        });
    }

    fn param_count(&self) -> usize {
        4 * self.gamma.len()
    }

    fn config(&self) -> LayerConfig {
        LayerConfig::BatchNormalization {
            name: self.name.clone(),
            momentum: self.momentum,
            epsilon: self.epsilon,
        }
    }

    fn output_activation(&self) -> Act {
        self.act
    }

    fn set_grad_is_preactivation(&mut self, on: bool) {
        self.grad_is_preactivation = on;
    }

    fn kind(&mut self) -> Kind<'_> {
        Kind::BatchNormalization(self)
    }
}
