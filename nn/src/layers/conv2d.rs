//! Conv2D on NHWC samples (Keras's channels_last) through `kernels::conv`: forward with bias and
//! activation fused; backward weights, bias and (except for the first layer) input.

use kernels::conv::{conv2d_backward_input, conv2d_backward_weights, conv2d_forward, Conv2d};
use kernels::conv_pool::{Filter, PooledGradient, PooledOutput};
use kernels::{ExecOptions, Padding};
use rand::rngs::StdRng;

use super::{
    elements, glorot_uniform, grow, next_version, samples, samples_mut, zeros, Inferred, Kind,
    Layer, LayerConfig, Param, Weights,
};
use crate::activations::{backward_in_place, finish_forward, Act};
use crate::error::{Error, Result};

/// Keras's `Conv2D(filters, kernel_size, strides, padding, activation)`: glorot_uniform kernel
/// (`kernel_h × kernel_w × in_channels × filters`), zero bias, input `height × width × channels`.
pub struct Conv2D {
    name: String,
    filters: usize,
    kernel_size: (usize, usize),
    strides: (usize, usize),
    padding: Padding,
    act: Act,
    shape: Option<Conv2d>,
    out_shape: Vec<usize>,
    kernel_shape: Vec<usize>,
    kernel: Vec<f32>,
    bias: Vec<f32>,
    dkernel: Vec<f32>,
    dbias: Vec<f32>,
    out: Vec<f32>,
    grad_is_preactivation: bool,
    /// The weights' version (see `next_version`).
    version: u64,
}

impl Conv2D {
    /// `Conv2D(filters, kernel_size, activation=act)` with stride 1 and 'valid' padding.
    pub fn new(filters: usize, kernel_size: (usize, usize), act: Act) -> Conv2D {
        Conv2D {
            name: String::new(),
            filters,
            kernel_size,
            strides: (1, 1),
            padding: Padding::Valid,
            act,
            shape: None,
            out_shape: vec![],
            kernel_shape: vec![kernel_size.0, kernel_size.1, 0, filters],
            kernel: vec![],
            bias: vec![],
            dkernel: vec![],
            dbias: vec![],
            out: vec![],
            grad_is_preactivation: false,
            version: 0,
        }
    }
    /// `strides=(sh, sw)`.
    pub fn strides(mut self, strides: (usize, usize)) -> Conv2D {
        self.strides = strides;
        self
    }
    /// `padding="valid"` or `"same"`.
    pub fn padding(mut self, padding: Padding) -> Conv2D {
        self.padding = padding;
        self
    }

    /// Whether a MaxPooling2D after this layer can run in one pass with it (not after a
    /// softmax, which needs the whole output before the pooling).
    pub(crate) fn pools_in_one_pass(&self) -> bool {
        self.act != Act::Softmax
    }

    /// The kernel, the bias and their version, when the layer is linear (no activation): what a
    /// BatchNormalization after it folds into at inference.
    pub(crate) fn linear_weights(&self) -> Option<(&[f32], &[f32], u64)> {
        (self.act == Act::Linear).then_some((&self.kernel, &self.bias, self.version))
    }

    /// The inference forward pass with `w` (weights a normalisation was folded into) in place of
    /// the layer's own.
    pub(crate) fn forward_with(&mut self, w: Weights<'_>, x: &[f32], n: usize) -> Result<()> {
        let s = self.conv(n);
        let y = samples_mut(&mut self.out, n, s.out_pixels() * s.out_c);
        convolve(&s, x, w, y, &self.name)
    }

    /// Whether the backward pass receives dL/d(pre-activation) (set at compile).
    pub(crate) fn gets_preactivation_gradient(&self) -> bool {
        self.grad_is_preactivation
    }

    /// The convolution of one `h × w × c` sample.
    fn shape_for(&self, h: usize, w: usize, c: usize) -> Conv2d {
        Conv2d {
            batch: 1,
            in_h: h,
            in_w: w,
            in_c: c,
            out_c: self.filters,
            kernel_h: self.kernel_size.0,
            kernel_w: self.kernel_size.1,
            stride_h: self.strides.0,
            stride_w: self.strides.1,
            padding: self.padding,
        }
    }

    fn conv(&self, n: usize) -> Conv2d {
        Conv2d {
            batch: n,
            ..self.shape.expect("built")
        }
    }
}

impl Conv2D {
    /// Forward pass fused with the max pooling `pool` that follows (see
    /// `kernels::conv_pool::conv2d_maxpool_forward`), with the layer's own weights or, at
    /// inference, `folded` ones; the convolution's own output is kept only in training, for its
    /// activation's backward pass, when the pooling has not taken that over. `None` when the
    /// activation is softmax, which cannot run before the pooling in one pass.
    pub(crate) fn forward_pooled(
        &mut self,
        pool: &mut super::MaxPooling2D,
        x: &[f32],
        n: usize,
        training: bool,
        folded: Option<Weights<'_>>,
    ) -> Option<Result<()>> {
        let w = folded.unwrap_or(Weights {
            kernel: &self.kernel,
            bias: &self.bias,
            act: self.act,
        });
        if w.act == Act::Softmax || (training && folded.is_some()) {
            return None;
        }
        let s = self.conv(n);
        let (p, y_pool, argmax) = pool.parts(n, training);
        // Training keeps the convolution's output for its activation's backward pass, unless the
        // pooling took that over (then nothing reads it).
        let keep = training && !self.grad_is_preactivation;
        let y_conv = keep.then(|| samples_mut(&mut self.out, n, s.out_pixels() * s.out_c));
        Some(
            kernels::conv_pool::conv2d_maxpool_forward(
                &ExecOptions::default(),
                &s,
                &p,
                &x[..s.input_len()],
                Filter {
                    weights: w.kernel,
                    bias: Some(w.bias),
                    act: w.act.elementwise(),
                },
                PooledOutput {
                    y_conv,
                    y_pool,
                    argmax,
                },
            )
            .map_err(Error::kernel(&self.name)),
        )
    }

    /// Backward pass fused with that of the max pooling `pool` after it, for a layer whose input
    /// gradient is not needed: kernel and bias gradients from the pooling's gradient `grad`
    /// (`kernels::conv_pool::conv2d_maxpool_backward_weights`). `None` unless the pooling took over
    /// this layer's activation.
    pub(crate) fn backward_pooled(
        &mut self,
        pool: &super::MaxPooling2D,
        x: &[f32],
        grad: &[f32],
        n: usize,
    ) -> Option<Result<()>> {
        if !self.grad_is_preactivation {
            return None;
        }
        let (p, act, y_pool, argmax) = pool.backward_parts(n)?;
        let s = self.conv(n);
        Some(
            kernels::conv_pool::conv2d_maxpool_backward_weights(
                &ExecOptions::default(),
                &s,
                &p,
                &x[..s.input_len()],
                PooledGradient {
                    act,
                    y_pool,
                    dy_pool: &grad[..p.output_len()],
                    argmax,
                },
                &mut self.dkernel,
                Some(&mut self.dbias),
            )
            .map_err(Error::kernel(&self.name)),
        )
    }

    /// Forward pass fused with the average pooling `pool` that follows (see
    /// `kernels::conv_avg_pool::conv2d_avgpool_forward`), with the layer's own weights; its own
    /// output is kept in training (its activation's backward pass reads it). `None` when the
    /// activation is softmax, or at inference with `folded` weights.
    pub(crate) fn forward_avg_pooled(
        &mut self,
        pool: &mut super::AveragePooling2D,
        x: &[f32],
        n: usize,
        training: bool,
        folded: Option<Weights<'_>>,
    ) -> Option<Result<()>> {
        if self.act == Act::Softmax || folded.is_some() {
            return None;
        }
        let s = self.conv(n);
        let (p, y_pool) = pool.parts(n);
        let y_conv = training.then(|| samples_mut(&mut self.out, n, s.out_pixels() * s.out_c));
        Some(
            kernels::conv_avg_pool::conv2d_avgpool_forward(
                &ExecOptions::default(),
                &s,
                &p,
                &x[..s.input_len()],
                Filter {
                    weights: &self.kernel,
                    bias: Some(&self.bias),
                    act: self.act.elementwise(),
                },
                y_conv,
                y_pool,
            )
            .map_err(Error::kernel(&self.name)),
        )
    }

    /// Backward pass fused with that of the average pooling `pool` after it, for a layer whose
    /// input gradient is not needed: kernel and bias gradients from the pooling's gradient
    /// `grad` through this layer's activation
    /// (`kernels::conv_avg_pool::conv2d_avgpool_backward_weights`). `None` for a softmax.
    pub(crate) fn backward_avg_pooled(
        &mut self,
        pool: &super::AveragePooling2D,
        x: &[f32],
        grad: &[f32],
        n: usize,
    ) -> Option<Result<()>> {
        if self.act == Act::Softmax || self.grad_is_preactivation {
            return None;
        }
        let s = self.conv(n);
        let p = pool.pooling_of(n);
        Some(
            kernels::conv_avg_pool::conv2d_avgpool_backward_weights(
                &ExecOptions::default(),
                &s,
                &p,
                &x[..s.input_len()],
                (self.act.elementwise(), &self.out[..s.output_len()]),
                &grad[..p.output_len()],
                &mut self.dkernel,
                Some(&mut self.dbias),
            )
            .map_err(Error::kernel(&self.name)),
        )
    }

    /// Whether the layer is linear (no activation of its own): its output gradient is its
    /// pre-activation gradient.
    pub(crate) fn is_linear(&self) -> bool {
        self.act == Act::Linear
    }

    /// For a backward pass that forms this layer's output gradient itself (see
    /// `BatchNormalization::backward_pooled_into_conv`): the convolution of `n` samples, the
    /// layer's output, and its kernel and bias gradients.
    pub(crate) fn weight_gradient_parts(
        &mut self,
        n: usize,
    ) -> (Conv2d, &[f32], &mut [f32], &mut [f32]) {
        let s = self.conv(n);
        let len = s.output_len();
        (s, &self.out[..len], &mut self.dkernel, &mut self.dbias)
    }
}

impl Layer for Conv2D {
    layer_identity!("Conv2D");

    fn infer(&self, input: &[usize]) -> Result<Inferred> {
        let [h, w, c] = *input else {
            return Err(Error::LayerInput {
                layer: self.name.clone(),
                class: "Conv2D",
                expected: "samples of shape (height, width, channels)",
                input: input.to_vec(),
                hint: "",
            });
        };
        let shape = self.shape_for(h, w, c);
        shape.validate().map_err(Error::kernel(&self.name))?;
        if shape.out_h() == 0 || shape.out_w() == 0 {
            return Err(Error::LayerSetting {
                layer: self.name.clone(),
                class: "Conv2D",
                setting: "kernel_size",
                value: format!("{:?}", self.kernel_size),
                reason: format!("leaves no output positions on a {h}×{w} input"),
            });
        }
        let (kh, kw) = self.kernel_size;
        let output = vec![shape.out_h(), shape.out_w(), self.filters];
        elements(&output, &self.name)?;
        Ok(Inferred {
            output,
            params: vec![
                ("kernel", vec![kh, kw, c, self.filters]),
                ("bias", vec![self.filters]),
            ],
        })
    }

    fn build(&mut self, input: &[usize], rng: &mut StdRng) -> Result<Vec<usize>> {
        let inferred = self.infer(input)?;
        let (h, w, c) = (input[0], input[1], input[2]);
        let shape = self.shape_for(h, w, c);
        if self.shape.map(|s| (s.in_h, s.in_w, s.in_c)) != Some((h, w, c)) {
            let (kh, kw) = self.kernel_size;
            let mut kernel = zeros(shape.weight_len(), &self.name)?;
            let dkernel = zeros(shape.weight_len(), &self.name)?;
            glorot_uniform(&mut kernel, kh * kw * c, kh * kw * self.filters, rng);
            self.bias = zeros(self.filters, &self.name)?;
            self.dbias = zeros(self.filters, &self.name)?;
            (self.kernel, self.dkernel) = (kernel, dkernel);
            self.kernel_shape = vec![kh, kw, c, self.filters];
            self.version = next_version();
        }
        self.shape = Some(shape);
        self.out_shape = inferred.output.clone();
        Ok(inferred.output)
    }

    fn allocate(&mut self, batch: usize) -> Result<()> {
        let per: usize = self.out_shape.iter().product();
        grow(&mut self.out, batch, per, 0.0, &self.name)
    }

    fn output_shape(&self) -> &[usize] {
        &self.out_shape
    }

    fn forward(&mut self, x: &[f32], n: usize, _training: bool) -> Result<()> {
        let s = self.conv(n);
        let y = samples_mut(&mut self.out, n, s.out_pixels() * s.out_c);
        let w = Weights {
            kernel: &self.kernel,
            bias: &self.bias,
            act: self.act,
        };
        convolve(&s, x, w, y, &self.name)
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
        let s = self.conv(n);
        let per = s.out_pixels() * s.out_c;
        let g = samples_mut(grad, n, per);
        if !self.grad_is_preactivation {
            backward_in_place(self.act, samples(&self.out, n, per), g, s.out_c, &self.name)?;
        }
        let opts = ExecOptions::default();
        conv2d_backward_weights(
            &opts,
            &s,
            &x[..s.input_len()],
            g,
            &mut self.dkernel,
            Some(&mut self.dbias),
        )
        .map_err(Error::kernel(&self.name))?;
        if let Some(dx) = dx {
            conv2d_backward_input(&opts, &s, g, &self.kernel, &mut dx[..s.input_len()])
                .map_err(Error::kernel(&self.name))?;
        }
        Ok(())
    }

    fn for_each_param(&mut self, f: &mut dyn FnMut(Param<'_>)) {
        // Whoever is handed the weights may change them.
        self.version = next_version();
        f(Param {
            name: "kernel",
            shape: &self.kernel_shape,
            value: &mut self.kernel,
            grad: &mut self.dkernel,
            trainable: true,
        });
        f(Param {
            name: "bias",
            shape: &self.kernel_shape[3..],
            value: &mut self.bias,
            grad: &mut self.dbias,
            trainable: true,
        });
    }

    fn param_count(&self) -> usize {
        self.kernel.len() + self.bias.len()
    }

    fn config(&self) -> LayerConfig {
        LayerConfig::Conv2D {
            name: self.name.clone(),
            filters: self.filters,
            kernel_size: [self.kernel_size.0, self.kernel_size.1],
            strides: [self.strides.0, self.strides.1],
            padding: self.padding.name().to_string(),
            activation: self.act,
        }
    }

    fn kind(&mut self) -> Kind<'_> {
        Kind::Conv2D(self)
    }

    fn flops(&self) -> super::LayerFlops {
        let Some(s) = self.shape else {
            return super::LayerFlops::default();
        };
        let per_output = (s.kernel_h * s.kernel_w * s.in_c) as u64;
        super::LayerFlops::linear(s.out_pixels() as u64 * s.out_c as u64 * per_output)
    }

    fn output_activation(&self) -> Act {
        self.act
    }

    fn set_grad_is_preactivation(&mut self, on: bool) {
        self.grad_is_preactivation = on;
    }
}

/// The convolution `s` of `x` with `w` (bias and activation fused) into `y`.
fn convolve(s: &Conv2d, x: &[f32], w: Weights<'_>, y: &mut [f32], name: &str) -> Result<()> {
    conv2d_forward(
        &ExecOptions::default(),
        s,
        &x[..s.input_len()],
        w.kernel,
        Some(w.bias),
        w.act.elementwise(),
        y,
    )
    .map_err(Error::kernel(name))?;
    finish_forward(w.act, y, s.out_c, name)
}
