//! Dense: `y = act(x·W + b)`, one fused GEMM forward (bias and activation in the epilogue);
//! backward `dW = xᵀ·g`, `db = 1ᵀ·g`, `dx = g·Wᵀ` — three GEMMs. In a model, large kernels at
//! small batches take the optimizer's step inside the backward pass
//! (`kernels::optim::update_from_product`): `dx`, `dW` and the step run block by block of the
//! kernel's rows, and the kernel and its optimizer state are streamed once instead of three
//! times.

use kernels::{gemm_fused, gemm_with, Bias, ExecOptions, MatMut, MatRef};
use rand::rngs::StdRng;

use super::{
    elements, glorot_uniform, grow, next_version, samples, samples_mut, zeros, Inferred, Kind,
    Layer, LayerConfig, Param, ParamSteps, Weights,
};
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
    /// The weights' version (see `next_version`).
    version: u64,
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
            version: 0,
        }
    }

    /// The kernel, the bias and their version, when the layer is linear (no activation): what a
    /// BatchNormalization after it folds into at inference.
    pub(crate) fn linear_weights(&self) -> Option<(&[f32], &[f32], u64)> {
        (self.act == Act::Linear).then_some((&self.kernel, &self.bias, self.version))
    }

    /// The inference forward pass with `w` (weights a normalisation was folded into) in place of
    /// the layer's own.
    pub(crate) fn forward_with(&mut self, w: Weights<'_>, x: &[f32], n: usize) -> Result<()> {
        let y = samples_mut(&mut self.out, n, self.units);
        product(self.inputs, x, w, y, false, &self.name)
    }
}

impl Dense {
    /// The backward pass with the kernel's optimizer step fused in: the kernel is updated as its
    /// gradient is formed, with the rule and state `steps` hands out (the optimizer then skips
    /// it; its gradient buffer is not written); the bias gets its gradient as in `backward`.
    /// `dx` is formed from the kernel as it was before the step; the same bits as `backward`
    /// then the step on the library's own GEMM paths (OpenBLAS, forced, agrees up to rounding).
    /// `None` where the fused form does not pay (the model then calls `backward`).
    pub(crate) fn backward_stepping(
        &mut self,
        x: &[f32],
        grad: &mut [f32],
        dx: Option<&mut [f32]>,
        n: usize,
        steps: &mut dyn ParamSteps,
    ) -> Option<Result<()>> {
        if !steps_in_backward(self.inputs, self.units, n) {
            return None;
        }
        Some(self.backward_with_steps(x, grad, dx, n, steps))
    }

    /// Turns `grad` into dL/d(pre-activation) (unless it is that already) and writes the bias
    /// gradient `1ᵀ·g`; returns the `n` samples of `g`.
    fn bias_backward<'g>(&mut self, grad: &'g mut [f32], n: usize) -> Result<&'g mut [f32]> {
        let u = self.units;
        let g = samples_mut(grad, n, u);
        if !self.grad_is_preactivation {
            backward_in_place(self.act, samples(&self.out, n, u), g, u, &self.name)?;
        }
        gemm_with(
            &ExecOptions::default(),
            1.0,
            MatRef::row_major(&self.ones[..n], 1, n, n),
            MatRef::row_major(g, n, u, u),
            0.0,
            MatMut::row_major(&mut self.dbias, 1, u, u),
        )
        .map_err(Error::kernel(&self.name))?;
        Ok(g)
    }

    /// The first half of `backward`: the kernel's and the bias's gradients (turning `grad`
    /// into dL/d(pre-activation) in place). Data-parallel training sends them off before the
    /// second half, [`Dense::backward_input`], which reads that same `grad`.
    pub(crate) fn backward_weights(&mut self, x: &[f32], grad: &mut [f32], n: usize) -> Result<()> {
        let (k, u) = (self.inputs, self.units);
        let g = self.bias_backward(grad, n)?;
        gemm_with(
            &in_training(),
            1.0,
            MatRef::row_major(&x[..n * k], n, k, k).t(),
            MatRef::row_major(g, n, u, u),
            0.0,
            MatMut::row_major(&mut self.dkernel, k, u, u),
        )
        .map_err(Error::kernel(&self.name))
    }

    /// The second half of `backward`: dL/d(input) from the `grad` that
    /// [`Dense::backward_weights`] left.
    pub(crate) fn backward_input(&mut self, grad: &[f32], dx: &mut [f32], n: usize) -> Result<()> {
        let (k, u) = (self.inputs, self.units);
        gemm_with(
            &ExecOptions::default(),
            1.0,
            MatRef::row_major(&grad[..n * u], n, u, u),
            MatRef::row_major(&self.kernel, k, u, u).t(),
            0.0,
            MatMut::row_major(&mut dx[..n * k], n, k, k),
        )
        .map_err(Error::kernel(&self.name))
    }

    /// `backward` with the kernel's optimizer step fused in ([`Dense::backward_stepping`]).
    fn backward_with_steps(
        &mut self,
        x: &[f32],
        grad: &mut [f32],
        dx: Option<&mut [f32]>,
        n: usize,
        steps: &mut dyn ParamSteps,
    ) -> Result<()> {
        let (k, u) = (self.inputs, self.units);
        let g = self.bias_backward(grad, n)?;
        let name = &self.name;
        let gv = MatRef::row_major(g, n, u, u);
        let (rule, mut state) = steps.take(0);
        self.version = next_version();
        kernels::optim::update_from_product(
            &ExecOptions::default(),
            rule,
            MatRef::row_major(&x[..n * k], n, k, k),
            gv,
            &mut self.kernel,
            &mut state[..rule.state_buffers()],
            dx.map(|dx| &mut dx[..n * k]),
        )
        .map_err(Error::kernel(name))
    }
}

impl Layer for Dense {
    layer_identity!("Dense");

    fn infer(&self, input: &[usize]) -> Result<Inferred> {
        if self.units == 0 {
            return Err(Error::LayerSetting {
                layer: self.name.clone(),
                class: "Dense",
                setting: "units",
                value: "0".into(),
                reason: "a Dense layer needs at least one unit".into(),
            });
        }
        let [inputs] = input else {
            return Err(Error::LayerInput {
                layer: self.name.clone(),
                class: "Dense",
                expected: "flat samples",
                input: input.to_vec(),
                hint: ": add a Flatten layer before it",
            });
        };
        let kernel = vec![*inputs, self.units];
        elements(&kernel, &self.name)?;
        Ok(Inferred {
            output: vec![self.units],
            params: vec![("kernel", kernel), ("bias", vec![self.units])],
        })
    }

    fn build(&mut self, input: &[usize], rng: &mut StdRng) -> Result<Vec<usize>> {
        let inferred = self.infer(input)?;
        let inputs = input[0];
        if self.kernel.is_empty() || self.inputs != inputs {
            let len = inputs * self.units;
            let mut kernel = zeros(len, &self.name)?;
            let dkernel = zeros(len, &self.name)?;
            glorot_uniform(&mut kernel, inputs, self.units, rng);
            self.bias = zeros(self.units, &self.name)?;
            self.dbias = zeros(self.units, &self.name)?;
            self.inputs = inputs;
            self.kernel_shape = vec![inputs, self.units];
            (self.kernel, self.dkernel) = (kernel, dkernel);
            self.version = next_version();
        }
        Ok(inferred.output)
    }

    fn allocate(&mut self, batch: usize) -> Result<()> {
        grow(&mut self.out, batch, self.units, 0.0, &self.name)?;
        grow(&mut self.ones, batch, 1, 1.0, &self.name)
    }

    fn output_shape(&self) -> &[usize] {
        &self.out_shape
    }

    fn forward(&mut self, x: &[f32], n: usize, training: bool) -> Result<()> {
        let (k, u) = (self.inputs, self.units);
        let y = samples_mut(&mut self.out, n, u);
        if training && steps_in_backward(k, u, n) {
            // The kernel's rows are multiplied on the threads that will step them in the
            // backward pass (`kernels::owned`).
            kernels::owned::dense_forward(
                &ExecOptions::default(),
                MatRef::row_major(&x[..n * k], n, k, k),
                &self.kernel,
                u,
                Some(&self.bias),
                self.act.elementwise(),
                y,
            )
            .map_err(Error::kernel(&self.name))?;
            return finish_forward(self.act, y, u, &self.name);
        }
        let w = Weights {
            kernel: &self.kernel,
            bias: &self.bias,
            act: self.act,
        };
        product(self.inputs, x, w, y, training, &self.name)
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
        self.backward_weights(x, grad, n)?;
        match dx {
            Some(dx) => self.backward_input(grad, dx, n),
            None => Ok(()),
        }
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
            shape: &self.out_shape,
            value: &mut self.bias,
            grad: &mut self.dbias,
            trainable: true,
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

    fn kind(&mut self) -> Kind<'_> {
        Kind::Dense(self)
    }

    fn flops(&self) -> super::LayerFlops {
        super::LayerFlops::linear((self.inputs * self.units) as u64)
    }

    fn output_activation(&self) -> Act {
        self.act
    }

    fn set_grad_is_preactivation(&mut self, on: bool) {
        self.grad_is_preactivation = on;
    }
}

/// The options of a training step's forward and weight-gradient products: the step has just
/// written their operands, and the optimizer next writes the kernel they read and reads the
/// gradient they write, on the calling thread — so a product is shared between threads only
/// where its work repays moving its operands between the cores
/// (`ExecOptions::fresh_operands`). Program E (Dense 100→64 at batch 32, 32×100×64 products)
/// ran 2.3× slower per epoch whenever they were split, its optimizer's step 3.7 → 25 µs. Not
/// for the input gradient: its result goes to the layer below, whose passes may run on every
/// thread (program B, Dense 512→10 under an owned 784→512, ran 3 % slower with it).
fn in_training() -> ExecOptions {
    ExecOptions {
        fresh_operands: true,
        ..ExecOptions::default()
    }
}

/// Whether a Dense layer of `k` inputs and `u` units, at a batch of `n`, takes its optimizer
/// step inside the backward pass ([`Dense::backward_stepping`]), and so multiplies its kernel
/// in the training forward pass on the threads that own its rows (`kernels::owned`).
///
/// Fused where the kernel's traffic dominates its products: a kernel and its state that do not
/// stay in L2 between the passes (≥ 64 Ki parameters: with Adam's two state buffers and the
/// gradient, ≥ 1 MiB), at batches whose products do little arithmetic per weight (≤ 128
/// samples). Measured on a 2-core Zen 3, dX + dW + Adam of Dense 5408→128 at batch 32 took
/// 0.72–0.87 of the time of the three calls in turn. Dense 784→128 at batch 32 (program A)
/// gained nothing there but, on a 2-core Zen 4 (AVX-512, 1 MiB L2), made the whole epoch 0.90×
/// as long (medians of 7 interleaved runs, the same bits). Dense 784→512 at batch 128 (program
/// B, RMSprop) had lost up to 8 % fused on the Zen 3, before the forward product ran on the
/// rows' owners; on the Zen 4 with them, its epoch went from 0.86 to 0.73 s (medians of 6
/// interleaved runs): unfused, both threads read all of the kernel in the forward product,
/// and the optimizer's writes then waited on the other core's copies (its own pass took 0.086 s
/// an epoch; fused into the gradient's product, the step costs that product 0.013 s more).
fn steps_in_backward(k: usize, u: usize, n: usize) -> bool {
    k * u >= 1 << 16 && n <= 128
}

/// `y = act(x·kernel + bias)` for the `y.len() / units` samples of `x` (`inputs` values each),
/// one GEMM with the bias and activation in its epilogue; `training`: in a training step
/// ([`in_training`]).
fn product(
    inputs: usize,
    x: &[f32],
    w: Weights<'_>,
    y: &mut [f32],
    training: bool,
    name: &str,
) -> Result<()> {
    let (k, u) = (inputs, w.bias.len());
    let n = y.len() / u.max(1);
    let opts = if training {
        in_training()
    } else {
        ExecOptions::default()
    };
    gemm_fused(
        &opts,
        1.0,
        MatRef::row_major(&x[..n * k], n, k, k),
        MatRef::row_major(w.kernel, k, u, u),
        0.0,
        Bias::PerColumn(w.bias),
        w.act.elementwise(),
        MatMut::row_major(y, n, u, u),
    )
    .map_err(Error::kernel(name))?;
    finish_forward(w.act, y, u, name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kernels::optim::Rule;
    use rand::SeedableRng;

    /// Hands out one Adam state and records what was taken.
    struct OneState {
        m: Vec<f32>,
        v: Vec<f32>,
        taken: Vec<usize>,
    }

    impl ParamSteps for OneState {
        fn take(&mut self, param: usize) -> (Rule, [&mut [f32]; 2]) {
            self.taken.push(param);
            (ADAM, [&mut self.m[..], &mut self.v[..]])
        }
    }

    const ADAM: Rule = Rule::Adam {
        alpha: 0.01,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-7,
    };

    fn layer(inputs: usize, units: usize, n: usize) -> Dense {
        let mut d = Dense::new(units, Act::Relu);
        d.set_name("dense".into());
        d.build(&[inputs], &mut StdRng::seed_from_u64(1)).unwrap();
        d.allocate(n).unwrap();
        d
    }

    /// The fused pass equals `backward` then the rule on the kernel (at batch 8, and at 100, in
    /// the range up to 128 that program B's batch brought in); it runs only for large kernels at
    /// small batches, and leaves the bias to the optimizer.
    #[test]
    fn backward_stepping_is_backward_then_the_step() {
        backward_stepping_matches(600, 448, 100);
        backward_stepping_matches(600, 448, 8);
    }

    fn backward_stepping_matches(k: usize, u: usize, n: usize) {
        let x: Vec<f32> = (0..n * k)
            .map(|i| ((i * 31) % 97) as f32 / 97.0 - 0.5)
            .collect();
        let grad0: Vec<f32> = (0..n * u)
            .map(|i| ((i * 17) % 89) as f32 / 89.0 - 0.5)
            .collect();
        let (mut fused, mut apart) = (layer(k, u, n), layer(k, u, n));
        for d in [&mut fused, &mut apart] {
            d.forward(&x, n, true).unwrap();
        }
        let mut steps = OneState {
            m: vec![0.0; k * u],
            v: vec![0.0; k * u],
            taken: vec![],
        };
        let (mut dx_fused, mut dx_apart) = (vec![0.0; n * k], vec![0.0; n * k]);
        let mut grad = grad0.clone();
        fused
            .backward_stepping(&x, &mut grad, Some(&mut dx_fused), n, &mut steps)
            .unwrap_or_else(|| panic!("a {k}×{u} kernel at batch {n} is fused"))
            .unwrap();
        assert_eq!(steps.taken, [0]);
        let mut grad = grad0.clone();
        apart
            .backward(&x, &mut grad, Some(&mut dx_apart), n)
            .unwrap();
        let (mut m, mut v) = (vec![0.0; k * u], vec![0.0; k * u]);
        let mut state = [&mut m[..], &mut v[..]];
        kernels::optim::update(
            &kernels::ExecOptions::default(),
            ADAM,
            &mut apart.kernel,
            &apart.dkernel,
            &mut state,
        )
        .unwrap();
        assert_eq!(dx_fused, dx_apart);
        assert_eq!(fused.kernel, apart.kernel);
        assert!(steps.m == m && steps.v == v);
        assert_eq!(fused.dbias, apart.dbias);
        assert_ne!(fused.kernel, layer(k, u, n).kernel);

        // Up to 128 samples fused (program B's batch); too small a kernel, or too large a
        // batch: declined.
        assert!(steps_in_backward(k, u, 128));
        let mut small = layer(100, 64, n);
        let mut grad = vec![0.1; n * 64];
        assert!(small
            .backward_stepping(&x[..n * 100], &mut grad, None, n, &mut steps)
            .is_none());
        let mut big_batch = layer(k, u, 129);
        let x129 = vec![0.5; 129 * k];
        big_batch.forward(&x129, 129, true).unwrap();
        let mut grad = vec![0.1; 129 * u];
        assert!(big_batch
            .backward_stepping(&x129, &mut grad, None, 129, &mut steps)
            .is_none());
        assert_eq!(steps.taken, [0]);
    }
}
