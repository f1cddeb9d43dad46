//! The execution plan of a model: which layers run, which pairs run as one pass, which layers
//! are folded into the one before them at inference, where each layer's input comes from and
//! which parameters it owns — worked out once when the model is built (and again at compile,
//! which decides the fused backward passes), then followed by every forward and backward pass:
//! nothing is re-derived and nothing allocated per step.

use crate::layers::{self, Fold, Kind, Layer};

/// One unit of the forward pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unit {
    /// Layer `i` alone.
    Layer(usize),
    /// The Conv2D `conv` and the MaxPooling2D or AveragePooling2D `pool` (the next layer that
    /// runs) as one pass (`layers::forward_conv_pool`), with the weights of `fold` (an index
    /// into [`Plan::folds`]; max pooling only) at inference.
    ConvPool {
        conv: usize,
        pool: usize,
        fold: Option<usize>,
    },
    /// At inference, the Conv2D or Dense `layer` with the weights of `fold` (an index into
    /// [`Plan::folds`]): the layers the fold took in do not run.
    Folded { layer: usize, fold: usize },
    /// The BatchNormalization `norm` (with the Activation it runs) and the MaxPooling2D `pool`
    /// reading its output, as one pass (`layers::forward_norm_pool`): in training the
    /// normalised tensor between them is never written (neither backward pass reads it: the
    /// pooling takes the activation's derivative from its own output, the normalisation reads
    /// its input).
    NormPool { norm: usize, pool: usize },
}

impl Unit {
    /// The layers this unit runs: from the one that reads its input to the one whose output
    /// holds the data after it (the layers a fold took in do not run).
    pub fn layers(&self) -> std::ops::RangeInclusive<usize> {
        match *self {
            Unit::Layer(i) | Unit::Folded { layer: i, .. } => i..=i,
            Unit::ConvPool { conv, pool, .. } => conv..=pool,
            Unit::NormPool { norm, pool } => norm..=pool,
        }
    }
}

/// One unit of the backward pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Back {
    /// The layer whose backward pass this is.
    pub layer: usize,
    /// The layer whose output is its input (`None`: the model's input, whose gradient nobody
    /// needs).
    pub source: Option<usize>,
    /// The index of the layer's first parameter among the model's (the optimizer's order).
    pub first_param: usize,
    /// The layer is a MaxPooling2D or AveragePooling2D that, with the Conv2D below it (the
    /// model's first layers), runs as one backward pass (`layers::backward_conv_pool`): the
    /// convolution has no unit of its own.
    pub with_conv_below: bool,
    /// The layer is a MaxPooling2D that runs as one backward pass with the BatchNormalization
    /// it reads (`source`; the plan's `NormPool` pair, see `layers::backward_norm_pool`): the
    /// normalisation has no unit of its own, and this unit writes the gradient of the
    /// normalisation's input.
    pub norm_below: Option<NormBelow>,
}

/// Where the fused backward unit of a BatchNormalization and the MaxPooling2D after it reads the
/// normalisation's input and writes its gradient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NormBelow {
    /// The layer whose output the normalisation reads (`None`: the model's input, whose
    /// gradient nobody needs).
    pub source: Option<usize>,
    /// `source` is a linear Conv2D, the model's first layer, whose backward pass the unit runs
    /// too (`layers::backward_conv_norm_pool`): the normalisation's input gradient is then never
    /// written, and the convolution has no unit of its own.
    pub with_conv: bool,
}

impl Back {
    /// The layers below this one whose backward passes this unit runs too (their own units
    /// gone), nearest first.
    pub fn fused_below(&self) -> impl Iterator<Item = usize> {
        let conv_pair = self.with_conv_below.then(|| self.layer - 1);
        let norm = self.norm_below.and(self.source);
        let conv = self
            .norm_below
            .filter(|nb| nb.with_conv)
            .and_then(|nb| nb.source);
        conv_pair.into_iter().chain(norm).chain(conv)
    }
}

/// The plan of a model's layers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Plan {
    /// In running order: training's forward pass (and inference's without folding).
    pub forward: Vec<Unit>,
    /// In running order: inference's forward pass, with the folds.
    pub inference: Vec<Unit>,
    /// The BatchNormalizations (and Activations) folded into the layer before them in
    /// `inference`.
    pub folds: Vec<Fold>,
    /// In running order: the last layer first.
    pub backward: Vec<Back>,
    /// Per layer: whether it runs the (skipped) Activation layer after it — a
    /// BatchNormalization that took it in at compile.
    pub runs_next: Vec<bool>,
}

/// Which layers the model skips: a Flatten (a reshape: its output is its input's data unchanged)
/// lets the layers around it share that buffer instead of copying it both ways, and an
/// Activation whose BatchNormalization before it runs it (decided at compile) has nothing left
/// to do. The last layer always runs (its output is the model's).
pub(crate) fn skipped(layers: &mut [Box<dyn Layer>]) -> Vec<bool> {
    let count = layers.len();
    let mut skip = vec![false; count];
    let mut previous_runs_activation = false;
    for (i, layer) in layers.iter_mut().enumerate() {
        let kind = layer.kind();
        skip[i] = i + 1 < count
            && match kind {
                Kind::Flatten(_) => true,
                Kind::Activation(_) => previous_runs_activation,
                _ => false,
            };
        previous_runs_activation =
            matches!(kind, Kind::BatchNormalization(ref bn) if bn.runs_next_activation());
    }
    skip
}

impl Plan {
    /// The plan of `layers` (built; for the backward pass, compiled: which layers take over the
    /// activation below them is decided then).
    pub fn new(layers: &mut [Box<dyn Layer>]) -> Plan {
        let count = layers.len();
        let skip = skipped(layers);
        let (forward, _) = forward_units(layers, &skip, false);
        let (inference, folds) = forward_units(layers, &skip, true);
        let mut first_params = Vec::with_capacity(count);
        let mut params = 0;
        for layer in layers.iter_mut() {
            first_params.push(params);
            layer.for_each_param(&mut |_| params += 1);
        }
        let mut backward = vec![];
        let mut i = count;
        while i > 0 {
            i -= 1;
            if skip[i] {
                continue;
            }
            let source = (0..i).rev().find(|&j| !skip[j]);
            // This layer and the one below are the model's first pair: the lower one's input
            // gradient is not needed.
            let bottom_pair = i > 0 && source == Some(i - 1) && (0..i - 1).all(|b| skip[b]);
            let with_conv_below = bottom_pair && {
                let (a, b) = layers.split_at_mut(i);
                layers::fuses_backward(a[i - 1].as_mut(), b[0].as_mut())
            };
            let norm_below = match source {
                Some(j) if !with_conv_below => {
                    let (a, b) = layers.split_at_mut(i);
                    layers::fuses_norm_pool_backward(a[j].as_mut(), b[0].as_mut()).then(|| {
                        let below = (0..j).rev().find(|&k| !skip[k]);
                        // The model's first layer, a linear convolution: its pass joins too.
                        let with_conv = below.is_some_and(|k| {
                            (0..k).all(|b| skip[b])
                                && layers::fuses_conv_norm_pool_backward(a[k].as_mut())
                        });
                        NormBelow {
                            source: below,
                            with_conv,
                        }
                    })
                }
                _ => None,
            };
            backward.push(Back {
                layer: i,
                source,
                first_param: first_params[i],
                with_conv_below,
                norm_below,
            });
            if with_conv_below {
                i -= 1;
            }
            if let (Some(nb), Some(j)) = (norm_below, source) {
                i = match nb.source {
                    Some(k) if nb.with_conv => k,
                    _ => j,
                };
            }
        }
        let runs_next = (0..count)
            .map(|i| {
                i + 1 < count && skip[i + 1] && !matches!(layers[i + 1].kind(), Kind::Flatten(_))
            })
            .collect();
        Plan {
            forward,
            inference,
            folds,
            backward,
            runs_next,
        }
    }

    /// The name of what layer `i`'s passes run: its own, or "batch_normalization + activation"
    /// for a layer that runs the Activation after it.
    pub fn unit_name(&self, layers: &[Box<dyn Layer>], i: usize) -> String {
        if self.runs_next.get(i).copied().unwrap_or(false) {
            format!("{} + {}", layers[i].name(), layers[i + 1].name())
        } else {
            layers[i].name().to_string()
        }
    }
}

/// The forward pass's units in running order, with the folds when `fold` (inference).
fn forward_units(
    layers: &mut [Box<dyn Layer>],
    skip: &[bool],
    fold: bool,
) -> (Vec<Unit>, Vec<Fold>) {
    let count = layers.len();
    let (mut units, mut folds) = (vec![], vec![]);
    let mut i = 0;
    while i < count {
        if skip[i] {
            i += 1;
            continue;
        }
        if let Some(f) = fold.then(|| layers::find_fold(layers, i)).flatten() {
            let next = f.last() + 1;
            let index = Some(folds.len());
            if layers::fold_pools(layers, &f, next) {
                units.push(Unit::ConvPool {
                    conv: i,
                    pool: next,
                    fold: index,
                });
                i = next + 1;
            } else {
                units.push(Unit::Folded {
                    layer: i,
                    fold: folds.len(),
                });
                i = next;
            }
            folds.push(f);
            continue;
        }
        // The layer that reads this one's output.
        let reader = (i + 1..count).find(|&j| !skip[j]);
        if let Some(j) = reader.filter(|_| !fold) {
            let (a, b) = layers.split_at_mut(j);
            if layers::fuses_norm_pool(a[i].as_mut(), b[0].as_mut()) {
                units.push(Unit::NormPool { norm: i, pool: j });
                i = j + 1;
                continue;
            }
        }
        if i + 1 < count {
            let (a, b) = layers.split_at_mut(i + 1);
            if layers::fuses_forward(a[i].as_mut(), b[0].as_mut()) {
                units.push(Unit::ConvPool {
                    conv: i,
                    pool: i + 1,
                    fold: None,
                });
                i += 2;
                continue;
            }
        }
        units.push(Unit::Layer(i));
        i += 1;
    }
    (units, folds)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prelude::*;

    #[test]
    fn a_cnn_runs_its_first_pair_fused_and_elides_flatten() {
        let mut m = Sequential::new()
            .input_shape(&[8, 8, 1])
            .add(Conv2D::new(4, (3, 3), Act::Relu))
            .add(MaxPooling2D::new((2, 2)))
            .add(Flatten::new())
            .add(Dense::new(16, Act::Relu))
            .add(Dense::new(3, Act::Softmax));
        m.compile(
            Optimizer::adam(),
            Loss::sparse_categorical_crossentropy(),
            &[],
        )
        .unwrap();
        let plan = m.plan_for_tests();
        let units = [
            Unit::ConvPool {
                conv: 0,
                pool: 1,
                fold: None,
            },
            Unit::Layer(3),
            Unit::Layer(4),
        ];
        assert_eq!(plan.forward, units);
        assert_eq!(plan.inference, units);
        assert!(plan.folds.is_empty());
        let backward: Vec<(usize, Option<usize>, usize, bool)> = plan
            .backward
            .iter()
            .map(|b| (b.layer, b.source, b.first_param, b.with_conv_below))
            .collect();
        // Dense 4 reads Dense 3; Dense 3 reads the pooling's output through the elided Flatten;
        // the pooling and the convolution run as one, the model's first pair.
        assert_eq!(
            backward,
            [
                (4, Some(3), 4, false),
                (3, Some(1), 2, false),
                (1, Some(0), 2, true)
            ]
        );
    }

    #[test]
    fn a_first_convolution_runs_with_its_average_pooling_each_way() {
        let mut m = Sequential::new()
            .input_shape(&[8, 8, 1])
            .add(Conv2D::new(4, (3, 3), Act::Relu))
            .add(AveragePooling2D::new((2, 2)))
            .add(Conv2D::new(4, (3, 3), Act::Tanh).padding(Padding::Same))
            .add(AveragePooling2D::new((2, 2)))
            .add(Flatten::new())
            .add(Dense::new(3, Act::Softmax));
        m.compile(
            Optimizer::adam(),
            Loss::sparse_categorical_crossentropy(),
            &[],
        )
        .unwrap();
        let plan = m.plan_for_tests();
        let pair = |conv, pool| Unit::ConvPool {
            conv,
            pool,
            fold: None,
        };
        let units = [pair(0, 1), pair(2, 3), Unit::Layer(5)];
        assert_eq!(plan.forward, units);
        assert_eq!(plan.inference, units);
        // Backward, the first pair only is one unit (the second convolution's input gradient is
        // needed: its pooling and it run apart).
        let backward: Vec<(usize, bool)> = plan
            .backward
            .iter()
            .map(|b| (b.layer, b.with_conv_below))
            .collect();
        assert_eq!(backward, [(5, false), (3, false), (2, false), (1, true)]);
    }

    #[test]
    fn batch_normalization_folds_into_the_linear_layer_before_it_at_inference() {
        let mut m = Sequential::new()
            .input_shape(&[10, 10, 1])
            .add(Conv2D::new(4, (3, 3), Act::Linear))
            .add(BatchNormalization::new())
            .add(Activation::new(Act::Relu))
            .add(MaxPooling2D::new((2, 2)))
            .add(Conv2D::new(4, (3, 3), Act::Linear))
            .add(BatchNormalization::new())
            .add(GlobalAveragePooling2D::new())
            .add(Dense::new(8, Act::Relu))
            .add(BatchNormalization::new())
            .add(Dense::new(6, Act::Linear))
            .add(BatchNormalization::new())
            .add(Activation::new(Act::Softmax));
        m.compile(
            Optimizer::adam(),
            Loss::sparse_categorical_crossentropy(),
            &[],
        )
        .unwrap();
        let plan = m.plan_for_tests();
        // Training runs every layer but the ReLU, which the normalisation before it runs (the
        // softmax is the model's output: its layer runs); the first convolution pools in one
        // pass only once folded (its own activation is linear); the first normalisation pools
        // its output as it forms it.
        let mut trained = vec![Unit::Layer(0), Unit::NormPool { norm: 1, pool: 3 }];
        trained.extend((4..12).map(Unit::Layer));
        assert_eq!(plan.forward, trained);
        // The pooling reads the normalisation's output and takes its ReLU's derivative over:
        // the two run as one backward unit (the normalisation has no unit of its own).
        let backward: Vec<(usize, Option<usize>, Option<NormBelow>)> = plan
            .backward
            .iter()
            .map(|b| (b.layer, b.source, b.norm_below))
            .collect();
        // The first convolution is linear and the model's first layer: its backward pass joins
        // theirs (the normalisation's input gradient never written).
        let norm_below = Some(NormBelow {
            source: Some(0),
            with_conv: true,
        });
        assert_eq!(
            &backward[backward.len() - 2..],
            [(4, Some(3), None), (3, Some(1), norm_below)]
        );
        let fused: Vec<usize> = plan.backward[backward.len() - 1].fused_below().collect();
        assert_eq!(fused, [1, 0]);
        assert_eq!(
            plan.inference,
            [
                Unit::ConvPool {
                    conv: 0,
                    pool: 3,
                    fold: Some(0)
                },
                Unit::Folded { layer: 4, fold: 1 },
                Unit::Layer(6),
                // A Dense with an activation of its own does not fold.
                Unit::Layer(7),
                Unit::Layer(8),
                // The model's last layer (its output) is never folded away.
                Unit::Folded { layer: 9, fold: 2 },
                Unit::Layer(11),
            ]
        );
        let act = |f: &Fold| (f.layer, f.norm, f.activation, f.act);
        assert_eq!(
            plan.folds.iter().map(act).collect::<Vec<_>>(),
            [
                (0, 1, Some(2), Act::Relu),
                (4, 5, None, Act::Linear),
                (9, 10, None, Act::Linear)
            ]
        );
    }
}
