//! A standalone activation layer (Keras's `Activation("relu")`).

use rand::rngs::StdRng;

use super::{elements, grow, samples, Inferred, Kind, Layer, LayerConfig, Param};
use crate::activations::{backward_in_place, finish_forward, Act};
use crate::error::{Error, Result};

/// Keras's `Activation(act)`; softmax acts over each sample's last dimension.
pub struct Activation {
    name: String,
    act: Act,
    per: usize,
    last: usize,
    out_shape: Vec<usize>,
    out: Vec<f32>,
    grad_is_preactivation: bool,
}

impl Activation {
    pub fn new(act: Act) -> Activation {
        Activation {
            name: String::new(),
            act,
            per: 0,
            last: 1,
            out_shape: vec![],
            out: vec![],
            grad_is_preactivation: false,
        }
    }
}

impl Activation {
    /// The activation this layer applies.
    pub(crate) fn act(&self) -> Act {
        self.act
    }
}

impl Layer for Activation {
    layer_identity!("Activation");
    fn infer(&self, input: &[usize]) -> Result<Inferred> {
        elements(input, &self.name)?;
        Ok(Inferred::output(input.to_vec()))
    }
    fn build(&mut self, input: &[usize], _rng: &mut StdRng) -> Result<Vec<usize>> {
        self.per = elements(input, &self.name)?;
        self.last = input.last().copied().unwrap_or(1).max(1);
        self.out_shape = input.to_vec();
        Ok(self.out_shape.clone())
    }
    fn allocate(&mut self, batch: usize) -> Result<()> {
        grow(&mut self.out, batch, self.per, 0.0, &self.name)
    }
    fn output_shape(&self) -> &[usize] {
        &self.out_shape
    }
    fn forward(&mut self, x: &[f32], n: usize, _training: bool) -> Result<()> {
        let len = n * self.per;
        let y = &mut self.out[..len];
        // One pass from x into y (a softmax's elementwise part is a copy; it follows).
        kernels::activation::activation_forward(
            &kernels::ExecOptions::default(),
            self.act.elementwise(),
            &x[..len],
            y,
        )
        .map_err(Error::kernel(&self.name))?;
        finish_forward(self.act, y, self.last, &self.name)
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
        let len = n * self.per;
        let y = samples(&self.out, n, self.per);
        match dx {
            // An elementwise derivative (or none: the layer after took it over) straight into
            // dx, in one pass.
            Some(dx) if self.act != Act::Softmax => {
                let act = if self.grad_is_preactivation {
                    kernels::Activation::Identity
                } else {
                    self.act.elementwise()
                };
                let opts = kernels::ExecOptions::default();
                kernels::activation::activation_backward_into(
                    &opts,
                    act,
                    y,
                    &grad[..len],
                    &mut dx[..len],
                )
                .map_err(Error::kernel(&self.name))
            }
            dx => {
                if !self.grad_is_preactivation {
                    backward_in_place(self.act, y, &mut grad[..len], self.last, &self.name)?;
                }
                if let Some(dx) = dx {
                    dx[..len].copy_from_slice(&grad[..len]);
                }
                Ok(())
            }
        }
    }
    fn for_each_param(&mut self, _f: &mut dyn FnMut(Param<'_>)) {}
    fn param_count(&self) -> usize {
        0
    }
    fn config(&self) -> LayerConfig {
        LayerConfig::Activation {
            name: self.name.clone(),
            activation: self.act,
        }
    }
    fn output_activation(&self) -> Act {
        self.act
    }
    fn set_grad_is_preactivation(&mut self, on: bool) {
        self.grad_is_preactivation = on;
    }
    fn kind(&mut self) -> Kind<'_> {
        Kind::Activation(self)
    }
}
