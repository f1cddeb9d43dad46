//! Dense: `y = act(x·W + b)`, one fused GEMM forward (bias and activation in the epilogue);
//! backward `dW = xᵀ·g`, `db = 1ᵀ·g`, `dx = g·Wᵀ` — three GEMMs.

use kernels::{gemm, gemm_fused, Bias, GemmOptions, MatMut, MatRef};
use rand::rngs::StdRng;

use super::{glorot_uniform, samples, samples_mut, Layer, LayerConfig, Param};
use crate::activations::{backward_in_place, finish_forward, Act};
use crate::error::{Error, Result};

/// A densely connected layer (Keras's `Dense(units, activation)`), glorot_uniform kernel, zero
/// bias. Takes flat samples (put a `Flatten` before it for images).
pub struct Dense {
    name: String,
    units: usize,
    act: Act,
    inputs: usize,
    out_shape: Vec<usize>,
    kernel_shape: Vec<usize>,
    kernel: Vec<f32>,
    bias: Vec<f32>,
    dkernel: Vec<f32>,
    dbias: Vec<f32>,
    out: Vec<f32>,
    ones: Vec<f32>,
    grad_is_preactivation: bool,
}

impl Dense {
    /// `Dense(units, activation=act)`.
    pub fn new(units: usize, act: Act) -> Dense {
        Dense {
            name: String::new(),
            units,
            act,
            inputs: 0,
            out_shape: vec![units],
            kernel_shape: vec![0, units],
            kernel: vec![],
            bias: vec![],
            dkernel: vec![],
            dbias: vec![],
            out: vec![],
            ones: vec![],
            grad_is_preactivation: false,
        }
    }
}

impl Layer for Dense {
    fn class_name(&self) -> &'static str {
        "Dense"
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }
    fn set_name(&mut self, name: String) {
        self.name = name;
    }

    fn build(&mut self, input: &[usize], rng: &mut StdRng) -> Result<Vec<usize>> {
        if self.units == 0 {
            return Err(Error::InvalidArgument(format!(
                "layer {}: Dense needs at least one unit",
                self.name
            )));
        }
        let [inputs] = input else {
            return Err(Error::Shape(format!(
                "layer {} (Dense) expects flat samples, but its input has shape {input:?}: \
                 add a Flatten layer before it",
                self.name
            )));
        };
        if self.kernel.is_empty() || self.inputs != *inputs {
            self.inputs = *inputs;
            self.kernel_shape = vec![*inputs, self.units];
            self.kernel = vec![0.0; inputs * self.units];
            glorot_uniform(&mut self.kernel, *inputs, self.units, rng);
            self.bias = vec![0.0; self.units];
            self.dkernel = vec![0.0; inputs * self.units];
            self.dbias = vec![0.0; self.units];
        }
        Ok(self.out_shape.clone())
    }

    fn allocate(&mut self, batch: usize) {
        self.out.resize(batch * self.units, 0.0);
        self.ones.resize(batch, 1.0);
    }

    fn output_shape(&self) -> &[usize] {
        &self.out_shape
    }

    fn forward(&mut self, x: &[f32], n: usize, _training: bool) -> Result<()> {
        let (k, u) = (self.inputs, self.units);
        let y = samples_mut(&mut self.out, n, u);
        gemm_fused(
            &GemmOptions::default(),
            1.0,
            MatRef::row_major(&x[..n * k], n, k, k),
            MatRef::row_major(&self.kernel, k, u, u),
            0.0,
            Bias::PerColumn(&self.bias),
            self.act.elementwise(),
            MatMut::row_major(y, n, u, u),
        )
        .map_err(Error::kernel(&self.name))?;
        finish_forward(self.act, y, u, &self.name)
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
        let (k, u) = (self.inputs, self.units);
        let g = samples_mut(grad, n, u);
        if !self.grad_is_preactivation {
            backward_in_place(self.act, samples(&self.out, n, u), g, u, &self.name)?;
        }
        let name = &self.name;
        let x = MatRef::row_major(&x[..n * k], n, k, k);
        let gv = MatRef::row_major(g, n, u, u);
        gemm(
            1.0,
            x.t(),
            gv,
            0.0,
            MatMut::row_major(&mut self.dkernel, k, u, u),
        )
        .map_err(Error::kernel(name))?;
        gemm(
            1.0,
            MatRef::row_major(&self.ones[..n], 1, n, n),
            gv,
            0.0,
            MatMut::row_major(&mut self.dbias, 1, u, u),
        )
        .map_err(Error::kernel(name))?;
        if let Some(dx) = dx {
            gemm(
                1.0,
                gv,
                MatRef::row_major(&self.kernel, k, u, u).t(),
                0.0,
                MatMut::row_major(&mut dx[..n * k], n, k, k),
            )
            .map_err(Error::kernel(name))?;
        }
        Ok(())
    }

    fn for_each_param(&mut self, f: &mut dyn FnMut(Param<'_>)) {
        f(Param {
            name: "kernel",
            shape: &self.kernel_shape,
            value: &mut self.kernel,
            grad: &self.dkernel,
        });
        f(Param {
            name: "bias",
            shape: &self.out_shape,
            value: &mut self.bias,
            grad: &self.dbias,
        });
    }

    fn param_count(&self) -> usize {
        self.kernel.len() + self.bias.len()
    }

    fn config(&self) -> LayerConfig {
        LayerConfig::Dense {
            name: self.name.clone(),
            units: self.units,
            activation: self.act,
        }
    }

    fn output_activation(&self) -> Act {
        self.act
    }

    fn set_grad_is_preactivation(&mut self, on: bool) {
        self.grad_is_preactivation = on;
    }
}
