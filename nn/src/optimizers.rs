//! Optimizers with Keras 3's update rules and defaults; the per-element loops run in
//! `kernels::optim` (vectorised). State (momenta, moving averages) is created on the first step
//! and reused: later steps allocate nothing.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::layers::Layer;

/// Which rule and its hyperparameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum OptimizerKind {
    /// `SGD(learning_rate=0.01, momentum=0.0, nesterov=False)`.
    Sgd {
        learning_rate: f32,
        momentum: f32,
        nesterov: bool,
    },
    /// `Adam(learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7)`.
    Adam {
        learning_rate: f32,
        beta_1: f32,
        beta_2: f32,
        epsilon: f32,
    },
    /// `RMSprop(learning_rate=0.001, rho=0.9, epsilon=1e-7)`.
    RmsProp {
        learning_rate: f32,
        rho: f32,
        epsilon: f32,
    },
}

/// An optimizer: its rule, hyperparameters and per-parameter state.
#[derive(Debug, Clone)]
pub struct Optimizer {
    kind: OptimizerKind,
    iterations: u64,
    /// Per parameter tensor (in the model's visiting order): up to two state buffers.
    state: Vec<[Vec<f32>; 2]>,
}

impl From<OptimizerKind> for Optimizer {
    fn from(kind: OptimizerKind) -> Self {
        Optimizer {
            kind,
            iterations: 0,
            state: vec![],
        }
    }
}

impl Optimizer {
    /// Keras's `SGD()` defaults.
    pub fn sgd() -> Optimizer {
        OptimizerKind::Sgd {
            learning_rate: 0.01,
            momentum: 0.0,
            nesterov: false,
        }
        .into()
    }
    /// Keras's `Adam()` defaults.
    pub fn adam() -> Optimizer {
        OptimizerKind::Adam {
            learning_rate: 0.001,
            beta_1: 0.9,
            beta_2: 0.999,
            epsilon: 1e-7,
        }
        .into()
    }
    /// Keras's `RMSprop()` defaults.
    pub fn rmsprop() -> Optimizer {
        OptimizerKind::RmsProp {
            learning_rate: 0.001,
            rho: 0.9,
            epsilon: 1e-7,
        }
        .into()
    }
    /// The optimizer Keras calls `name` ("sgd", "adam", "rmsprop"), with its defaults.
    pub fn from_name(name: &str) -> Result<Optimizer> {
        match name.to_ascii_lowercase().as_str() {
            "sgd" => Ok(Self::sgd()),
            "adam" => Ok(Self::adam()),
            "rmsprop" => Ok(Self::rmsprop()),
            other => Err(Error::InvalidArgument(format!(
                "unknown optimizer {other:?}: expected sgd, adam or rmsprop"
            ))),
        }
    }

    pub fn kind(&self) -> OptimizerKind {
        self.kind
    }
    /// Steps taken so far.
    pub fn iterations(&self) -> u64 {
        self.iterations
    }
    pub fn learning_rate(&self) -> f32 {
        match self.kind {
            OptimizerKind::Sgd { learning_rate, .. }
            | OptimizerKind::Adam { learning_rate, .. }
            | OptimizerKind::RmsProp { learning_rate, .. } => learning_rate,
        }
    }
    /// Sets the learning rate (also between epochs of training).
    pub fn set_learning_rate(&mut self, lr: f32) {
        match &mut self.kind {
            OptimizerKind::Sgd { learning_rate, .. }
            | OptimizerKind::Adam { learning_rate, .. }
            | OptimizerKind::RmsProp { learning_rate, .. } => *learning_rate = lr,
        }
    }
    /// The same optimizer with learning rate `lr`.
    pub fn with_learning_rate(mut self, lr: f32) -> Optimizer {
        self.set_learning_rate(lr);
        self
    }
    /// SGD with `momentum` (and Nesterov's variant).
    pub fn with_momentum(mut self, m: f32, nest: bool) -> Optimizer {
        if let OptimizerKind::Sgd {
            momentum, nesterov, ..
        } = &mut self.kind
        {
            *momentum = m;
            *nesterov = nest;
        }
        self
    }

    /// Forgets the state (a fresh start, as after `compile`).
    pub(crate) fn reset(&mut self) {
        self.iterations = 0;
        self.state.clear();
    }

    /// One update of every parameter of `layers` from its gradient (what `fit` does after each
    /// backward pass; public for programs that drive layers themselves).
    pub fn step_layers(&mut self, layers: &mut [Box<dyn Layer>]) -> Result<()> {
        self.step(layers)
    }

    /// One update of every parameter of `layers` from its gradient.
    pub(crate) fn step(&mut self, layers: &mut [Box<dyn Layer>]) -> Result<()> {
        self.iterations += 1;
        let t = self.iterations as f64;
        let kind = self.kind;
        // Adam's bias correction, folded into the step size (computed in f64, as Keras in f32
        // up to rounding).
        let alpha = match kind {
            OptimizerKind::Adam {
                learning_rate,
                beta_1,
                beta_2,
                ..
            } => {
                (learning_rate as f64 * (1.0 - (beta_2 as f64).powf(t)).sqrt()
                    / (1.0 - (beta_1 as f64).powf(t))) as f32
            }
            _ => 0.0,
        };
        let mut index = 0;
        let mut failure = None;
        let state = &mut self.state;
        for (li, layer) in layers.iter_mut().enumerate() {
            layer.for_each_param(&mut |p| {
                if failure.is_some() {
                    return;
                }
                if state.len() <= index {
                    let n = p.value.len();
                    let second = if matches!(kind, OptimizerKind::Adam { .. }) {
                        n
                    } else {
                        0
                    };
                    state.push([vec![0.0; n], vec![0.0; second]]);
                }
                let [s0, s1] = &mut state[index];
                let r = match kind {
                    OptimizerKind::Sgd {
                        learning_rate,
                        momentum,
                        nesterov,
                    } => kernels::optim::sgd_update(
                        None,
                        p.value,
                        p.grad,
                        (momentum != 0.0).then_some(&mut s0[..]),
                        learning_rate,
                        momentum,
                        nesterov,
                    ),
                    OptimizerKind::Adam {
                        beta_1,
                        beta_2,
                        epsilon,
                        ..
                    } => kernels::optim::adam_update(
                        None, p.value, p.grad, s0, s1, alpha, beta_1, beta_2, epsilon,
                    ),
                    OptimizerKind::RmsProp {
                        learning_rate,
                        rho,
                        epsilon,
                    } => kernels::optim::rmsprop_update(
                        None,
                        p.value,
                        p.grad,
                        s0,
                        learning_rate,
                        rho,
                        epsilon,
                    ),
                };
                if let Err(e) = r {
                    failure = Some((li, e));
                }
                index += 1;
            });
        }
        match failure {
            Some((li, source)) => Err(Error::Kernel {
                layer: layers[li].name().to_string(),
                source,
            }),
            None => Ok(()),
        }
    }
}
