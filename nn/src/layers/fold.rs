//! A BatchNormalization folded into the Conv2D or Dense before it at inference: with fixed
//! statistics the normalisation is a per-channel affine map, so a linear layer followed by it is
//! one linear layer with scaled weights (`kernels::norm::batch_norm_fold`), and an Activation
//! after them becomes that layer's fused activation. The normalisation's pass and the
//! activation's pass over memory disappear, and a MaxPooling2D after a folded Conv2D runs in one
//! pass with it as after any Conv2D.
//!
//! The folded weights are derived again only when the weights they come from have changed (each
//! layer versions its weights, see `next_version`), so repeated small predictions pay nothing.

use kernels::norm::batch_norm_fold;

use super::{grow, Kind, Layer, Weights};
use crate::activations::Act;
use crate::error::{Error, Result};

/// Which layers a fold takes in (indices into the model's layers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fold {
    /// The linear Conv2D or Dense that runs with the folded weights.
    pub layer: usize,
    /// The BatchNormalization right after it.
    pub norm: usize,
    /// The Activation right after that, whose activation the layer applies, if any.
    pub activation: Option<usize>,
    /// That activation (linear when there is none).
    pub act: Act,
}

impl Fold {
    /// The last layer the fold takes in: the next layer reads `layer`'s output in its place.
    pub fn last(&self) -> usize {
        self.activation.unwrap_or(self.norm)
    }
}

/// The weights a fold runs with, and the versions of the weights they were derived from.
#[derive(Default)]
pub(crate) struct Folded {
    kernel: Vec<f32>,
    bias: Vec<f32>,
    act: Act,
    /// (the layer's version, the normalisation's version); `None` before the first derivation.
    from: Option<(u64, u64)>,
}

impl Folded {
    /// The folded kernel, bias and activation.
    pub(crate) fn weights(&self) -> Weights<'_> {
        Weights {
            kernel: &self.kernel,
            bias: &self.bias,
            act: self.act,
        }
    }
}

/// The linear layer's kernel, bias and version, if `layer` is a Conv2D or Dense without an
/// activation.
fn linear_weights(layer: &mut dyn Layer) -> Option<(&[f32], &[f32], u64)> {
    match layer.kind() {
        Kind::Conv2D(c) => c.linear_weights(),
        Kind::Dense(d) => d.linear_weights(),
        _ => None,
    }
}

/// The fold that starts at layer `i`, if any: a linear Conv2D or Dense, then a
/// BatchNormalization, then (taken in when present) an Activation. The model's last layer is
/// never taken in: its output buffer is the model's output.
pub(crate) fn find_fold(layers: &mut [Box<dyn Layer>], i: usize) -> Option<Fold> {
    let last = layers.len().checked_sub(1)?;
    let norm = i + 1;
    if norm >= last
        || linear_weights(layers[i].as_mut()).is_none()
        || !matches!(layers[norm].kind(), Kind::BatchNormalization(_))
    {
        return None;
    }
    let activation = (norm + 1 < last && matches!(layers[norm + 1].kind(), Kind::Activation(_)))
        .then_some(norm + 1);
    Some(Fold {
        layer: i,
        norm,
        activation,
        act: activation.map_or(Act::Linear, |a| layers[a].output_activation()),
    })
}

/// Whether the MaxPooling2D at `pool`, right after what `fold` takes in, runs in one pass with
/// the folded layer (a Conv2D whose folded activation is not a softmax).
pub(crate) fn fold_pools(layers: &mut [Box<dyn Layer>], fold: &Fold, pool: usize) -> bool {
    pool == fold.last() + 1
        && pool < layers.len()
        && fold.act != Act::Softmax
        && matches!(layers[fold.layer].kind(), Kind::Conv2D(_))
        && matches!(layers[pool].kind(), Kind::MaxPooling2D(_))
}

/// Derives `folded` from the current weights of the layers `fold` takes in, unless it already
/// holds what they give.
pub(crate) fn refresh_fold(
    layers: &mut [Box<dyn Layer>],
    fold: &Fold,
    folded: &mut Folded,
) -> Result<()> {
    let internal = || Error::Internal(format!("layers {fold:?} are not a fold"));
    let (lower, upper) = layers.split_at_mut(fold.norm);
    let Kind::BatchNormalization(bn) = upper[0].kind() else {
        return Err(internal());
    };
    let (norm, norm_version) = bn.fixed_norm();
    let version = linear_weights(lower[fold.layer].as_mut())
        .ok_or_else(internal)?
        .2;
    let from = Some((version, norm_version));
    if folded.from == from && folded.act == fold.act {
        // Nothing allocated on this path: every prediction after the first takes it.
        return Ok(());
    }
    let name = lower[fold.layer].name().to_string();
    let (kernel, bias, _) = linear_weights(lower[fold.layer].as_mut()).ok_or_else(internal)?;
    // Marked stale first: a derivation that fails leaves nothing to be taken for fresh.
    folded.from = None;
    if folded.kernel.len() != kernel.len() {
        folded.kernel.clear();
        grow(&mut folded.kernel, 1, kernel.len(), 0.0, &name)?;
    }
    if folded.bias.len() != bias.len() {
        folded.bias.clear();
        grow(&mut folded.bias, 1, bias.len(), 0.0, &name)?;
    }
    batch_norm_fold(
        &norm,
        (kernel, bias),
        (&mut folded.kernel, &mut folded.bias),
    )
    .map_err(Error::kernel(&name))?;
    folded.act = fold.act;
    folded.from = from;
    Ok(())
}

/// The inference forward pass of the folded `layer` (a Conv2D or Dense) over `n` samples of `x`,
/// with the `folded` weights (see [`refresh_fold`]); `None` when the layer is of neither kind.
pub(crate) fn forward_folded(
    layer: &mut dyn Layer,
    folded: &Folded,
    x: &[f32],
    n: usize,
) -> Option<Result<()>> {
    match layer.kind() {
        Kind::Conv2D(c) => Some(c.forward_with(folded.weights(), x, n)),
        Kind::Dense(d) => Some(d.forward_with(folded.weights(), x, n)),
        _ => None,
    }
}
