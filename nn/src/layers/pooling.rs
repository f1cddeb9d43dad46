//! MaxPooling2D through `kernels::pool` (the argmax kept for the backward pass).

use kernels::pool::{
    max_pool2d_activation_backward, max_pool2d_backward, max_pool2d_forward, Pool2d,
};
use kernels::{ExecOptions, Padding};
use rand::rngs::StdRng;

use super::{grow, samples_mut, Inferred, Kind, Layer, LayerConfig, Param};
use crate::activations::Act;
use crate::error::{Error, Result};

/// Keras's `MaxPooling2D(pool_size, strides=pool_size, padding="valid")`.
pub struct MaxPooling2D {
    name: String,
    pool: (usize, usize),
    strides: Option<(usize, usize)>,
    padding: Padding,
    shape: Option<Pool2d>,
    out_shape: Vec<usize>,
    out: Vec<f32>,
    argmax: Vec<u32>,
    /// The previous layer's activation, when this layer's backward pass takes it over.
    input_act: Option<kernels::Activation>,
}

impl MaxPooling2D {
    pub fn new(pool: (usize, usize)) -> MaxPooling2D {
        MaxPooling2D {
            name: String::new(),
            pool,
            strides: None,
            padding: Padding::Valid,
            shape: None,
            out_shape: vec![],
            out: vec![],
            argmax: vec![],
            input_act: None,
        }
    }
    /// `strides=(sh, sw)` (default: the pool size).
    pub fn strides(mut self, strides: (usize, usize)) -> MaxPooling2D {
        self.strides = Some(strides);
        self
    }
    pub fn padding(mut self, padding: Padding) -> MaxPooling2D {
        self.padding = padding;
        self
    }
    fn shape(&self, n: usize) -> Pool2d {
        Pool2d {
            batch: n,
            ..self.shape.expect("built")
        }
    }
}

impl MaxPooling2D {
    /// The pooling of `n` samples, its output buffer and (when training) its argmax buffer, for
    /// the fused forward pass.
    pub(crate) fn parts(
        &mut self,
        n: usize,
        training: bool,
    ) -> (Pool2d, &mut [f32], Option<&mut [u32]>) {
        let s = self.shape(n);
        let len = s.output_len();
        (
            s,
            &mut self.out[..len],
            training.then_some(&mut self.argmax[..len]),
        )
    }

    /// For the fused backward pass: the pooling of `n` samples, the activation whose backward
    /// pass it took over, and its output and argmax from the last training forward pass.
    pub(crate) fn backward_parts(
        &self,
        n: usize,
    ) -> Option<(Pool2d, kernels::Activation, &[f32], &[u32])> {
        let s = self.shape(n);
        let len = s.output_len();
        let act = self.input_act?;
        Some((s, act, &self.out[..len], &self.argmax[..len]))
    }
}

impl MaxPooling2D {
    /// Max pooling takes over an elementwise activation's backward pass: the activation's output
    /// at each window's argmax is the pooled value, so its derivative there needs no other data.
    /// Returns whether it took it (not a softmax); the model then has the layer before pass back
    /// dL/d(pre-activation). Called at every compile.
    pub(crate) fn absorb_input_activation(&mut self, act: Act) -> bool {
        self.input_act = (act != Act::Softmax).then(|| act.elementwise());
        self.input_act.is_some()
    }

    /// Whether this layer's backward pass took over the activation of the layer before it.
    pub(crate) fn takes_activation(&self) -> bool {
        self.input_act.is_some()
    }

    /// Whether every input position lies in at most one window ('valid' padding, strides at
    /// least the window; after `build`): what the normalisation fused below needs.
    pub(crate) fn windows_apart(&self) -> bool {
        self.shape.is_some_and(|s| s.windows_apart())
    }

    /// The pooling of one sample of shape `input`, checked.
    fn pooling(&self, input: &[usize]) -> Result<Pool2d> {
        let [h, w, c] = *input else {
            return Err(Error::LayerInput {
                layer: self.name.clone(),
                class: "MaxPooling2D",
                expected: "samples of shape (height, width, channels)",
                input: input.to_vec(),
                hint: "",
            });
        };
        let (sh, sw) = self.strides.unwrap_or(self.pool);
        let shape = Pool2d {
            batch: 1,
            in_h: h,
            in_w: w,
            channels: c,
            pool_h: self.pool.0,
            pool_w: self.pool.1,
            stride_h: sh,
            stride_w: sw,
            padding: self.padding,
        };
        shape.validate().map_err(Error::kernel(&self.name))?;
        Ok(shape)
    }
}

impl Layer for MaxPooling2D {
    layer_identity!("MaxPooling2D");

    fn infer(&self, input: &[usize]) -> Result<Inferred> {
        let s = self.pooling(input)?;
        Ok(Inferred::output(vec![s.out_h(), s.out_w(), s.channels]))
    }

    fn build(&mut self, input: &[usize], _rng: &mut StdRng) -> Result<Vec<usize>> {
        let shape = self.pooling(input)?;
        self.shape = Some(shape);
        self.out_shape = vec![shape.out_h(), shape.out_w(), shape.channels];
        Ok(self.out_shape.clone())
    }

    fn allocate(&mut self, batch: usize) -> Result<()> {
        let per: usize = self.out_shape.iter().product();
        grow(&mut self.out, batch, per, 0.0, &self.name)?;
        grow(&mut self.argmax, batch, per, 0, &self.name)
    }
    fn output_shape(&self) -> &[usize] {
        &self.out_shape
    }

    fn forward(&mut self, x: &[f32], n: usize, training: bool) -> Result<()> {
        let s = self.shape(n);
        let per = s.output_len() / n.max(1);
        max_pool2d_forward(
            &ExecOptions::default(),
            &s,
            &x[..s.input_len()],
            samples_mut(&mut self.out, n, per),
            training.then_some(&mut self.argmax[..s.output_len()]),
        )
        .map_err(Error::kernel(&self.name))
    }

    fn output(&self) -> &[f32] {
        &self.out
    }

    fn backward(
        &mut self,
        _x: &[f32],
        grad: &mut [f32],
        dx: Option<&mut [f32]>,
        n: usize,
    ) -> Result<()> {
        let s = self.shape(n);
        let Some(dx) = dx else {
            return Ok(());
        };
        let (len, opts) = (s.output_len(), ExecOptions::default());
        let (dy, argmax, dx) = (&grad[..len], &self.argmax[..len], &mut dx[..s.input_len()]);
        match self.input_act {
            Some(act) => {
                max_pool2d_activation_backward(&opts, &s, act, &self.out[..len], dy, argmax, dx)
            }
            None => max_pool2d_backward(&opts, &s, dy, argmax, dx),
        }
        .map_err(Error::kernel(&self.name))
    }

    fn kind(&mut self) -> Kind<'_> {
        Kind::MaxPooling2D(self)
    }

    fn for_each_param(&mut self, _f: &mut dyn FnMut(Param<'_>)) {}
    fn param_count(&self) -> usize {
        0
    }
    fn config(&self) -> LayerConfig {
        let (sh, sw) = self.strides.unwrap_or(self.pool);
        LayerConfig::MaxPooling2D {
            name: self.name.clone(),
            pool_size: [self.pool.0, self.pool.1],
            strides: [sh, sw],
            padding: self.padding.name().to_string(),
        }
    }
}
