//! Optimizers with Keras 3's update rules and defaults; the per-element loops run in
//! `kernels::optim` (vectorised, with subnormals flushed to zero as TensorFlow's CPU kernels).
//! State (momenta, moving averages) is created on the first step and reused: later steps
//! allocate nothing.

use serde::{Deserialize, Serialize};

use kernels::optim::Rule;

use crate::error::{Error, Result};
use crate::layers::{Layer, ParamSteps};
use crate::schedules::LearningRateSchedule;

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
    /// This step's rule (set by `begin_step`).
    rule: Rule,
    /// Per parameter tensor: whether a fused backward pass took this step's update.
    stepped: Vec<bool>,
    /// A builder call that does not apply to this optimizer, and why (refused at `compile`).
    misuse: Option<(String, String)>,
    /// Where each step's learning rate comes from, if not from `kind`'s.
    schedule: Option<LearningRateSchedule>,
}

impl From<OptimizerKind> for Optimizer {
    fn from(kind: OptimizerKind) -> Self {
        Optimizer {
            kind,
            iterations: 0,
            state: vec![],
            rule: Rule::Sgd {
                lr: 0.0,
                momentum: 0.0,
                nesterov: false,
            },
            stepped: vec![],
            misuse: None,
            schedule: None,
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
            other => Err(Error::UnknownName {
                kind: "optimizer",
                name: other.to_string(),
                expected: "sgd, adam or rmsprop",
            }),
        }
    }

    pub fn kind(&self) -> OptimizerKind {
        self.kind
    }
    /// Steps taken so far.
    pub fn iterations(&self) -> u64 {
        self.iterations
    }
    /// Kind, hyperparameters, steps taken and schedule, as text: what data-parallel ranks
    /// compare before training together.
    pub(crate) fn describe(&self) -> String {
        format!(
            "{:?} {} {:?} {:?}",
            self.kind, self.iterations, self.schedule, self.misuse
        )
    }

    /// Every state buffer (per parameter tensor, in the model's visiting order).
    pub(crate) fn state_mut(&mut self) -> impl Iterator<Item = &mut Vec<f32>> {
        self.state.iter_mut().flatten()
    }
    /// The rate the next step uses (from the schedule, if there is one).
    pub fn learning_rate(&self) -> f32 {
        if let Some(s) = &self.schedule {
            return s.at(self.iterations);
        }
        match self.kind {
            OptimizerKind::Sgd { learning_rate, .. }
            | OptimizerKind::Adam { learning_rate, .. }
            | OptimizerKind::RmsProp { learning_rate, .. } => learning_rate,
        }
    }
    /// Sets the learning rate (also between epochs of training). On an optimizer whose rate
    /// follows a schedule the call is refused at the next step (Keras refuses it too), never
    /// silently ignored.
    pub fn set_learning_rate(&mut self, lr: f32) {
        if let Some(s) = &self.schedule {
            self.misuse = Some((
                format!("set_learning_rate({lr})"),
                format!(
                    "on an optimizer whose learning rate follows a {} schedule",
                    s.name()
                ),
            ));
            return;
        }
        self.set_rate(lr);
    }
    /// Each step's learning rate from `schedule` (Keras's `learning_rate=` a
    /// `LearningRateSchedule`), evaluated at the step count before the step.
    pub fn with_schedule(mut self, schedule: LearningRateSchedule) -> Optimizer {
        self.schedule = Some(schedule);
        self
    }
    /// The schedule, if the rate follows one.
    pub fn schedule(&self) -> Option<&LearningRateSchedule> {
        self.schedule.as_ref()
    }
    fn set_rate(&mut self, lr: f32) {
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
    /// SGD with `momentum` (and Nesterov's variant). Only SGD has these: on another optimizer the
    /// call is refused when the model is compiled (never silently ignored).
    pub fn with_momentum(mut self, m: f32, nest: bool) -> Optimizer {
        match &mut self.kind {
            OptimizerKind::Sgd {
                momentum, nesterov, ..
            } => {
                *momentum = m;
                *nesterov = nest;
            }
            other => {
                let not_to = match other {
                    OptimizerKind::Adam { .. } => "Adam (its beta_1 plays that part)",
                    _ => "RMSprop",
                };
                self.misuse = Some((
                    format!("with_momentum({m}, {nest})"),
                    format!("applies to SGD only, not to {not_to}"),
                ))
            }
        }
        self
    }

    /// Checks the hyperparameters against the ranges where the rule is defined (Keras's, and
    /// where Keras would silently produce NaN weights, a refusal): learning rate finite and
    /// ≥ 0; SGD momentum in [0, 1]; Adam's β₁, β₂ and RMSprop's ρ in [0, 1); ε finite and > 0.
    pub fn validate(&self) -> Result<()> {
        if let Some((call, reason)) = &self.misuse {
            return Err(Error::Misuse {
                call: call.clone(),
                reason: reason.clone(),
            });
        }
        if let Some(s) = &self.schedule {
            s.validate()?;
        }
        let bad = |name: &'static str, v: f32, range: &str| {
            Err(Error::Setting {
                owner: self.name(),
                name,
                value: v.to_string(),
                allowed: format!("in {range}"),
            })
        };
        let lr = self.learning_rate();
        if !(lr.is_finite() && lr >= 0.0) {
            return bad("learning_rate", lr, "[0, ∞)");
        }
        let unit = |v: f32| (0.0..1.0).contains(&v);
        let eps_ok = |e: f32| e.is_finite() && e > 0.0;
        match self.kind {
            OptimizerKind::Sgd { momentum, .. } if !(0.0..=1.0).contains(&momentum) => {
                bad("momentum", momentum, "[0, 1]")
            }
            OptimizerKind::Adam { beta_1, .. } if !unit(beta_1) => bad("beta_1", beta_1, "[0, 1)"),
            OptimizerKind::Adam { beta_2, .. } if !unit(beta_2) => bad("beta_2", beta_2, "[0, 1)"),
            OptimizerKind::RmsProp { rho, .. } if !unit(rho) => bad("rho", rho, "[0, 1)"),
            OptimizerKind::Adam { epsilon, .. } | OptimizerKind::RmsProp { epsilon, .. }
                if !eps_ok(epsilon) =>
            {
                bad("epsilon", epsilon, "(0, ∞)")
            }
            _ => Ok(()),
        }
    }

    /// Keras's name of the rule.
    pub fn name(&self) -> &'static str {
        match self.kind {
            OptimizerKind::Sgd { .. } => "SGD",
            OptimizerKind::Adam { .. } => "Adam",
            OptimizerKind::RmsProp { .. } => "RMSprop",
        }
    }

    /// Forgets the state (a fresh start, as after `compile`).
    pub(crate) fn reset(&mut self) {
        self.iterations = 0;
        self.state.clear();
        self.stepped.clear();
    }

    /// One update of every parameter of `layers` from its gradient (what `fit` does after each
    /// backward pass; public for programs that drive layers themselves).
    pub fn step_layers(&mut self, layers: &mut [Box<dyn Layer>]) -> Result<()> {
        self.begin_step(layers)?;
        self.finish_step(layers)
    }

    /// The rule of step number `iteration` (from 1): Adam's bias correction depends on it.
    fn rule_at(&self, iteration: u64) -> Rule {
        let t = iteration as f64;
        match self.kind {
            OptimizerKind::Sgd {
                learning_rate,
                momentum,
                nesterov,
            } => Rule::Sgd {
                lr: learning_rate,
                momentum,
                nesterov,
            },
            // The bias correction, folded into the step size (computed in f64, as Keras in
            // f32 up to rounding).
            OptimizerKind::Adam {
                learning_rate,
                beta_1,
                beta_2,
                epsilon,
            } => Rule::Adam {
                alpha: (learning_rate as f64 * (1.0 - (beta_2 as f64).powf(t)).sqrt()
                    / (1.0 - (beta_1 as f64).powf(t))) as f32,
                beta1: beta_1,
                beta2: beta_2,
                eps: epsilon,
            },
            OptimizerKind::RmsProp {
                learning_rate,
                rho,
                epsilon,
            } => Rule::RmsProp {
                lr: learning_rate,
                rho,
                eps: epsilon,
            },
        }
    }

    /// The floating-point operations of one weight's update (see
    /// `kernels::optim::Rule::flops_per_weight`) and the state buffers the rule keeps per weight.
    pub fn cost_per_weight(&self) -> (u64, usize) {
        let rule = self.rule_at(1);
        (rule.flops_per_weight(), rule.state_buffers())
    }

    /// Starts a step: checks the hyperparameters (a callback may have changed the learning
    /// rate), counts the step, fixes its rule (Adam's bias correction for this iteration) and
    /// creates the state of parameters met for the first time (the only allocation, on the
    /// first step).
    pub(crate) fn begin_step(&mut self, layers: &mut [Box<dyn Layer>]) -> Result<()> {
        if let Some(s) = &self.schedule {
            let lr = s.at(self.iterations);
            self.set_rate(lr);
        }
        self.validate()?;
        self.iterations += 1;
        self.rule = self.rule_at(self.iterations);
        let buffers = self.rule.state_buffers();
        let mut index = 0;
        for layer in layers.iter_mut() {
            layer.for_each_param(&mut |p| {
                if self.state.len() <= index {
                    // A non-trainable tensor gets no state (it is never stepped).
                    let n = if p.trainable { p.value.len() } else { 0 };
                    self.state
                        .push([vec![0.0; n], vec![0.0; if buffers == 2 { n } else { 0 }]]);
                    self.stepped.push(false);
                }
                self.stepped[index] = false;
                index += 1;
            });
        }
        Ok(())
    }

    /// The handle a layer's fused backward pass takes its parameters' steps from; `first` is
    /// the index of the layer's first parameter among all of the model's (visiting order).
    pub(crate) fn steps_for(&mut self, first: usize) -> LayerSteps<'_> {
        LayerSteps { opt: self, first }
    }

    /// Ends a step: updates every parameter of `layers` from its gradient, except those a
    /// fused backward pass updated already.
    pub(crate) fn finish_step(&mut self, layers: &mut [Box<dyn Layer>]) -> Result<()> {
        let rule = self.rule;
        let mut index = 0;
        let mut failure = None;
        for (li, layer) in layers.iter_mut().enumerate() {
            layer.for_each_param(&mut |p| {
                if failure.is_none() && p.trainable && !self.stepped[index] {
                    let [s0, s1] = &mut self.state[index];
                    let mut state = [&mut s0[..], &mut s1[..]];
                    let state = &mut state[..rule.state_buffers()];
                    if let Err(e) = kernels::optim::update(
                        &kernels::ExecOptions::default(),
                        rule,
                        p.value,
                        p.grad,
                        state,
                    ) {
                        failure = Some((li, e));
                    }
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

/// One layer's view of the optimizer during a step (see [`ParamSteps`]).
pub(crate) struct LayerSteps<'a> {
    opt: &'a mut Optimizer,
    first: usize,
}

impl ParamSteps for LayerSteps<'_> {
    fn take(&mut self, param: usize) -> (Rule, [&mut [f32]; 2]) {
        let index = self.first + param;
        self.opt.stepped[index] = true;
        let [s0, s1] = &mut self.opt.state[index];
        (self.opt.rule, [&mut s0[..], &mut s1[..]])
    }
}
