//! Gradient buckets: which layers' gradients travel together, and when they can leave. The
//! backward pass runs last layer first; a bucket closes once it holds at least
//! [`BUCKET_BYTES`] of gradients (or the pass ends) and its sum starts at once, while the
//! layers below are still being differentiated (PyTorch's DDP and Horovod bucket alike).
//!
//! The first bucket also carries the step's *extras*: the share's loss sum, correct predictions
//! and prediction count (so every rank logs the same numbers without another message), and the
//! values of the non-trainable tensors (BatchNormalization's moving statistics, which each
//! share's forward pass moved on its own: the ranks keep their mean).

use crate::layers::Layer;
use crate::plan::Plan;

/// A bucket closes once its gradients reach this many bytes. Small enough that a model's large
/// layer leaves as soon as it is differentiated, large enough that a bucket's fixed cost (a few
/// message latencies) stays small beside its transfer.
pub const BUCKET_BYTES: usize = 256 << 10;

/// The loss sum, hits and count of one share (or their sums across shares).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Extras {
    pub loss: f32,
    pub hits: f32,
    pub count: f32,
}

const METRICS: usize = 3;

/// The buckets of one model and plan.
pub(crate) struct Buckets {
    /// Per bucket, in the order they start: the layers whose trainable gradients it carries
    /// (in packing order) and its length (with the extras for the first).
    layers: Vec<Vec<usize>>,
    lens: Vec<usize>,
    /// Per backward unit of the plan: the bucket that closes after it, if any.
    closes_after: Vec<Option<usize>>,
    /// Values of non-trainable tensors, in the model's visiting order.
    non_trainable: usize,
}

fn trainable_len(layer: &mut dyn Layer) -> usize {
    let mut len = 0;
    layer.for_each_param(&mut |p| {
        if p.trainable {
            len += p.grad.len();
        }
    });
    len
}

impl Buckets {
    pub fn new(layers: &mut [Box<dyn Layer>], plan: &Plan) -> Buckets {
        let mut non_trainable = 0;
        for l in layers.iter_mut() {
            l.for_each_param(&mut |p| {
                if !p.trainable {
                    non_trainable += p.value.len();
                }
            });
        }
        let mut b = Buckets {
            layers: vec![vec![]],
            lens: vec![METRICS + non_trainable],
            closes_after: vec![None; plan.backward.len()],
            non_trainable,
        };
        let mut covered = vec![false; layers.len()];
        let mut open_bytes = 0;
        for (u, back) in plan.backward.iter().enumerate() {
            let below = back.with_conv_below.then(|| back.layer - 1);
            for i in std::iter::once(back.layer).chain(below) {
                let len = trainable_len(layers[i].as_mut());
                covered[i] = true;
                if len > 0 {
                    b.layers.last_mut().expect("one open").push(i);
                    *b.lens.last_mut().expect("one open") += len;
                    open_bytes += len * 4;
                }
            }
            let last_unit = u + 1 == plan.backward.len();
            if open_bytes >= BUCKET_BYTES || last_unit {
                b.closes_after[u] = Some(b.layers.len() - 1);
                if !last_unit {
                    b.layers.push(vec![]);
                    b.lens.push(0);
                    open_bytes = 0;
                }
            }
        }
        // Trainable layers no backward unit visits (none today) still get their sums, zero.
        for (i, l) in layers.iter_mut().enumerate() {
            if !covered[i] {
                let len = trainable_len(l.as_mut());
                if len > 0 {
                    b.layers.last_mut().expect("one").push(i);
                    *b.lens.last_mut().expect("one") += len;
                }
            }
        }
        b
    }

    pub fn count(&self) -> usize {
        self.layers.len()
    }

    /// The bucket that closes after backward unit `unit` (always the last bucket after the
    /// last unit; a plan without backward units closes its one bucket at the end).
    pub fn closing_after(&self, unit: usize) -> Option<usize> {
        self.closes_after.get(unit).copied().flatten()
    }

    /// Whether the last bucket closes only after the backward pass (no unit closes it).
    pub fn last_closes_at_end(&self) -> bool {
        !self.closes_after.contains(&Some(self.count() - 1))
    }

    /// Writes bucket `b` into `out` (cleared first): for the first bucket the extras, then
    /// every gradient of its layers' trainable tensors — zeros when `empty` (a share with no
    /// samples contributes nothing).
    pub fn pack(
        &self,
        b: usize,
        layers: &mut [Box<dyn Layer>],
        empty: bool,
        extras: Extras,
        out: &mut Vec<f32>,
    ) {
        out.clear();
        if b == 0 {
            out.extend_from_slice(&[extras.loss, extras.hits, extras.count]);
            for l in layers.iter_mut() {
                l.for_each_param(&mut |p| {
                    if !p.trainable {
                        out.extend_from_slice(p.value);
                    }
                });
            }
        }
        for &i in &self.layers[b] {
            layers[i].for_each_param(&mut |p| {
                if p.trainable {
                    if empty {
                        out.resize(out.len() + p.grad.len(), 0.0);
                    } else {
                        out.extend_from_slice(p.grad);
                    }
                }
            });
        }
        debug_assert_eq!(out.len(), self.lens[b]);
    }

    /// Takes bucket `b`'s sum over `shares` shares back: the gradients into the layers, the
    /// non-trainable tensors as the shares' mean; returns the summed extras (first bucket).
    pub fn unpack(
        &self,
        b: usize,
        layers: &mut [Box<dyn Layer>],
        sum: &[f32],
        shares: usize,
    ) -> Extras {
        let mut at = 0;
        let mut extras = Extras::default();
        if b == 0 {
            extras = Extras {
                loss: sum[0],
                hits: sum[1],
                count: sum[2],
            };
            at = METRICS;
            let shares = shares as f32;
            for l in layers.iter_mut() {
                l.for_each_param(&mut |p| {
                    if !p.trainable {
                        for (v, &s) in p.value.iter_mut().zip(&sum[at..]) {
                            *v = s / shares;
                        }
                        at += p.value.len();
                    }
                });
            }
            debug_assert_eq!(at, METRICS + self.non_trainable);
        }
        for &i in &self.layers[b] {
            layers[i].for_each_param(&mut |p| {
                if p.trainable {
                    let len = p.grad.len();
                    p.grad.copy_from_slice(&sum[at..at + len]);
                    at += len;
                }
            });
        }
        extras
    }

    /// The non-trainable values, in the model's visiting order, into `out` (cleared first).
    pub fn save_non_trainable(&self, layers: &mut [Box<dyn Layer>], out: &mut Vec<f32>) {
        out.clear();
        for l in layers.iter_mut() {
            l.for_each_param(&mut |p| {
                if !p.trainable {
                    out.extend_from_slice(p.value);
                }
            });
        }
    }

    /// Puts back values saved by [`Buckets::save_non_trainable`].
    pub fn restore_non_trainable(&self, layers: &mut [Box<dyn Layer>], saved: &[f32]) {
        let mut at = 0;
        for l in layers.iter_mut() {
            l.for_each_param(&mut |p| {
                if !p.trainable {
                    let len = p.value.len();
                    p.value.copy_from_slice(&saved[at..at + len]);
                    at += len;
                }
            });
        }
    }

    pub fn has_non_trainable(&self) -> bool {
        self.non_trainable > 0
    }
}
