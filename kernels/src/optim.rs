//! Optimizer update rules as vectorised in-place loops over a parameter tensor and its gradient,
//! with Keras 3's arithmetic (the step sizes are computed by the caller, once per step):
//!
//! * SGD: `v ← μ·v − lr·g`; `w ← w + v` (Nesterov: `w ← w + μ·v − lr·g`); without momentum
//!   `w ← w − lr·g`.
//! * Adam: `m ← m + (g − m)·(1 − β₁)`, `v ← v + (g² − v)·(1 − β₂)`, `w ← w − α·m / (√v + ε)`,
//!   with the bias correction folded into `α = lr·√(1 − β₂ᵗ) / (1 − β₁ᵗ)` as Keras does.
//! * RMSprop: `v ← ρ·v + (1 − ρ)·g²`, `w ← w − lr·g / √(v + ε)` (ε inside the root, as Keras).
//!
//! Each loop is compiled per instruction set like [`crate::math`]'s. Large tensors are updated
//! in chunks on the rayon pool (the update is elementwise and memory-bound: a CNN's 700 000
//! parameters move 20 MB per Adam step); the result does not depend on the split.

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::math::resolve;
use crate::Isa;

#[inline(always)]
fn sgd_body(w: &mut [f32], g: &[f32], lr: f32) {
    for (w, &g) in w.iter_mut().zip(g) {
        *w -= lr * g;
    }
}

#[inline(always)]
fn sgd_momentum_body(w: &mut [f32], g: &[f32], vel: &mut [f32], lr: f32, mu: f32, nesterov: bool) {
    if nesterov {
        for ((w, &g), v) in w.iter_mut().zip(g).zip(vel.iter_mut()) {
            *v = mu * *v - lr * g;
            *w += mu * *v - lr * g;
        }
    } else {
        for ((w, &g), v) in w.iter_mut().zip(g).zip(vel.iter_mut()) {
            *v = mu * *v - lr * g;
            *w += *v;
        }
    }
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn adam_body(
    w: &mut [f32],
    g: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    alpha: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
) {
    let (one_b1, one_b2) = (1.0 - beta1, 1.0 - beta2);
    for (((w, &g), m), v) in w.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
        *m += (g - *m) * one_b1;
        *v += (g * g - *v) * one_b2;
        *w -= alpha * *m / (v.sqrt() + eps);
    }
}

#[inline(always)]
fn rmsprop_body(w: &mut [f32], g: &[f32], v: &mut [f32], lr: f32, rho: f32, eps: f32) {
    let one_rho = 1.0 - rho;
    for ((w, &g), v) in w.iter_mut().zip(g).zip(v.iter_mut()) {
        *v = rho * *v + one_rho * g * g;
        *w -= lr * g / (*v + eps).sqrt();
    }
}

use crate::dispatch::per_isa;

per_isa!(sgd_run, sgd_body, sgd_body, (w: &mut [f32], g: &[f32], lr: f32));
per_isa!(sgd_momentum_run, sgd_momentum_body, sgd_momentum_body,
    (w: &mut [f32], g: &[f32], vel: &mut [f32], lr: f32, mu: f32, nesterov: bool));
per_isa!(adam_run, adam_body, adam_body,
    (w: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], alpha: f32, beta1: f32, beta2: f32, eps: f32));
per_isa!(rmsprop_run, rmsprop_body, rmsprop_body,
    (w: &mut [f32], g: &[f32], v: &mut [f32], lr: f32, rho: f32, eps: f32));

/// Elements per parallel chunk: below this a tensor is updated on the calling thread.
const CHUNK: usize = 1 << 15;

fn check(what: &'static str, w: usize, others: &[(&str, usize)]) -> Result<()> {
    for &(name, len) in others {
        if len != w {
            return Err(Error::ShapeMismatch {
                what,
                detail: format!("the parameters have {w} elements but {name} has {len}"),
            });
        }
    }
    Ok(())
}

/// Plain SGD, or with momentum `mu` (velocity `vel`, Nesterov optional): see the module docs.
/// `vel` is required when `mu ≠ 0`.
#[allow(clippy::too_many_arguments)]
pub fn sgd_update(
    isa: Option<Isa>,
    w: &mut [f32],
    g: &[f32],
    vel: Option<&mut [f32]>,
    lr: f32,
    mu: f32,
    nesterov: bool,
) -> Result<()> {
    let isa = resolve(isa)?;
    match vel {
        Some(vel) => {
            check(
                "sgd_update",
                w.len(),
                &[("the gradient", g.len()), ("the velocity", vel.len())],
            )?;
            w.par_chunks_mut(CHUNK)
                .zip(g.par_chunks(CHUNK))
                .zip(vel.par_chunks_mut(CHUNK))
                .for_each(|((w, g), vel)| {
                    // SAFETY: `resolve` checked that this CPU has `isa`'s features.
                    unsafe { sgd_momentum_run::run(isa, w, g, vel, lr, mu, nesterov) }
                });
        }
        None if mu == 0.0 => {
            check("sgd_update", w.len(), &[("the gradient", g.len())])?;
            w.par_chunks_mut(CHUNK)
                .zip(g.par_chunks(CHUNK))
                .for_each(|(w, g)| {
                    // SAFETY: `resolve` checked that this CPU has `isa`'s features.
                    unsafe { sgd_run::run(isa, w, g, lr) }
                });
        }
        None => {
            return Err(Error::InvalidArgument {
                name: "vel",
                value: "None".into(),
                reason: format!("momentum {mu} needs a velocity buffer"),
            })
        }
    }
    Ok(())
}

/// One Adam step with the bias-corrected step size `alpha` (see the module docs).
#[allow(clippy::too_many_arguments)]
pub fn adam_update(
    isa: Option<Isa>,
    w: &mut [f32],
    g: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    alpha: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
) -> Result<()> {
    check(
        "adam_update",
        w.len(),
        &[("the gradient", g.len()), ("m", m.len()), ("v", v.len())],
    )?;
    let isa = resolve(isa)?;
    w.par_chunks_mut(CHUNK)
        .zip(g.par_chunks(CHUNK))
        .zip(m.par_chunks_mut(CHUNK))
        .zip(v.par_chunks_mut(CHUNK))
        .for_each(|(((w, g), m), v)| {
            // SAFETY: `resolve` checked that this CPU has `isa`'s features.
            unsafe { adam_run::run(isa, w, g, m, v, alpha, beta1, beta2, eps) }
        });
    Ok(())
}

/// One RMSprop step (see the module docs).
pub fn rmsprop_update(
    isa: Option<Isa>,
    w: &mut [f32],
    g: &[f32],
    v: &mut [f32],
    lr: f32,
    rho: f32,
    eps: f32,
) -> Result<()> {
    check(
        "rmsprop_update",
        w.len(),
        &[("the gradient", g.len()), ("v", v.len())],
    )?;
    let isa = resolve(isa)?;
    w.par_chunks_mut(CHUNK)
        .zip(g.par_chunks(CHUNK))
        .zip(v.par_chunks_mut(CHUNK))
        .for_each(|((w, g), v)| {
            // SAFETY: `resolve` checked that this CPU has `isa`'s features.
            unsafe { rmsprop_run::run(isa, w, g, v, lr, rho, eps) }
        });
    Ok(())
}
