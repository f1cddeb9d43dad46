//! Gradient buckets: which gradients travel together, and when they can leave. The backward
//! pass runs last layer first; a bucket's sum starts as soon as the pass has filled it, while
//! the layers below are still being differentiated (PyTorch's DDP and Horovod bucket alike).
//!
//! A large gradient tensor (at least [`WHOLE_VALUES`] values) is a bucket of its own and
//! travels without a copy: its storage is lent to the sum and the sum's storage takes its place
//! (DDP's "gradient as bucket view", by moving vectors). Smaller tensors are copied together
//! into packed buckets of at least [`BUCKET_BYTES`] (or what is left at the pass's end).
//!
//! The first bucket is packed and also carries the values of the non-trainable tensors
//! (BatchNormalization's moving statistics, which each share's forward pass moved on its own:
//! the ranks keep their mean).

use crate::layers::Layer;
use crate::plan::Plan;

/// A packed bucket closes once its gradients reach this many bytes. Small enough that its sum
/// starts early, large enough that a bucket's fixed cost (a few message latencies, some
/// 20–40 µs between two processes here) stays small beside its transfer.
pub const BUCKET_BYTES: usize = 256 << 10;

/// A gradient tensor of at least this many values is a bucket of its own, lent without a copy.
pub const WHOLE_VALUES: usize = 64 << 10;

/// A trainable tensor: its layer and its index among the layer's `for_each_param` tensors.
type Tensor = (usize, usize);

struct Bucket {
    /// The tensors it carries, in packing order.
    tensors: Vec<Tensor>,
    /// Its length in values (with the non-trainable values, for the first).
    len: usize,
    /// One tensor lent whole (no copy).
    whole: bool,
}

/// The buckets of one model and plan.
pub(crate) struct Buckets {
    list: Vec<Bucket>,
    /// Per backward unit of the plan: the buckets that close after it, in start order (after
    /// the last unit, every bucket not closed before).
    closes_after: Vec<Vec<usize>>,
    /// Values of non-trainable tensors, in the model's visiting order.
    non_trainable: usize,
}

/// Calls `f(index, trainable, len)` for each tensor of `layer`.
fn tensors(layer: &mut dyn Layer, mut f: impl FnMut(usize, bool, usize)) {
    let mut i = 0;
    layer.for_each_param(&mut |p| {
        f(i, p.trainable, p.value.len());
        i += 1;
    });
}

impl Buckets {
    pub fn new(layers: &mut [Box<dyn Layer>], plan: &Plan) -> Buckets {
        let mut non_trainable = 0;
        for l in layers.iter_mut() {
            tensors(l.as_mut(), |_, trainable, len| {
                if !trainable {
                    non_trainable += len;
                }
            });
        }
        let mut b = Buckets {
            list: vec![Bucket {
                tensors: vec![],
                len: non_trainable,
                whole: false,
            }],
            closes_after: vec![vec![]; plan.backward.len().max(1)],
            non_trainable,
        };
        // The packed bucket being filled, and whether it holds gradients yet.
        let mut open = 0;
        let mut open_bytes = 0;
        let mut covered = vec![false; layers.len()];
        let units = plan.backward.len();
        let mut add =
            |b: &mut Buckets, layer: usize, u: usize, open: &mut usize, open_bytes: &mut usize| {
                tensors(layers[layer].as_mut(), |i, trainable, len| {
                    if !trainable || len == 0 {
                        return;
                    }
                    if len >= WHOLE_VALUES {
                        b.list.push(Bucket {
                            tensors: vec![(layer, i)],
                            len,
                            whole: true,
                        });
                        b.closes_after[u].push(b.list.len() - 1);
                    } else {
                        b.list[*open].tensors.push((layer, i));
                        b.list[*open].len += len;
                        *open_bytes += len * 4;
                    }
                });
            };
        for (u, back) in plan.backward.iter().enumerate() {
            for i in std::iter::once(back.layer).chain(back.fused_below()) {
                covered[i] = true;
                add(&mut b, i, u, &mut open, &mut open_bytes);
            }
            if open_bytes >= BUCKET_BYTES && u + 1 < units {
                b.closes_after[u].push(open);
                b.list.push(Bucket {
                    tensors: vec![],
                    len: 0,
                    whole: false,
                });
                open = b.list.len() - 1;
                open_bytes = 0;
            }
        }
        // Trainable layers no backward unit visits (none today) still get their sums.
        let last = units.saturating_sub(1);
        let uncovered: Vec<usize> = (0..covered.len()).filter(|&i| !covered[i]).collect();
        for i in uncovered {
            add(&mut b, i, last, &mut open, &mut open_bytes);
        }
        b.closes_after[last].push(open);
        b
    }

    pub fn count(&self) -> usize {
        self.list.len()
    }

    /// Bucket `b`'s length in values.
    pub fn len(&self, b: usize) -> usize {
        self.list[b].len
    }

    /// The buckets that close after backward unit `unit` (a plan without backward units
    /// closes its one bucket "after unit 0").
    pub fn closing_after(&self, unit: usize) -> &[usize] {
        self.closes_after.get(unit).map_or(&[], |v| &v[..])
    }

    /// The buckets that close after the last unit, for a plan with no units.
    pub fn closing_without_units(&self, units: usize) -> &[usize] {
        if units == 0 {
            &self.closes_after[0]
        } else {
            &[]
        }
    }

    /// Whether bucket `b` is one tensor lent whole ([`Buckets::lend`] / [`Buckets::take_back`]).
    pub fn is_whole(&self, b: usize) -> bool {
        self.list[b].whole
    }

    /// Calls `f` with each gradient of bucket `b`, in packing order.
    fn each_grad(&self, b: usize, layers: &mut [Box<dyn Layer>], mut f: impl FnMut(&mut Vec<f32>)) {
        for &(layer, index) in &self.list[b].tensors {
            let mut i = 0;
            layers[layer].for_each_param(&mut |p| {
                if i == index {
                    f(p.grad);
                }
                i += 1;
            });
        }
    }

    /// Writes bucket `b` into `out` (cleared first): for the first bucket the non-trainable
    /// values, then every gradient it carries — zeros when `empty` (a share with no samples
    /// contributes nothing). Any bucket can be packed (the micro-batches pack every one).
    pub fn pack(&self, b: usize, layers: &mut [Box<dyn Layer>], empty: bool, out: &mut Vec<f32>) {
        out.clear();
        if b == 0 {
            self.save_non_trainable(layers, out);
        }
        self.each_grad(b, layers, |g| {
            if empty {
                out.resize(out.len() + g.len(), 0.0);
            } else {
                out.extend_from_slice(g);
            }
        });
        debug_assert_eq!(out.len(), self.list[b].len);
    }

    /// Lends the whole bucket `b`'s gradient: returns its storage (zeros when `empty`) and
    /// puts `spare` in its place (resized to the same length; its values are never read).
    pub fn lend(
        &self,
        b: usize,
        layers: &mut [Box<dyn Layer>],
        empty: bool,
        mut spare: Vec<f32>,
    ) -> Vec<f32> {
        debug_assert!(self.list[b].whole);
        self.each_grad(b, layers, |g| {
            spare.resize(g.len(), 0.0);
            std::mem::swap(g, &mut spare);
        });
        if empty {
            spare.fill(0.0);
        }
        spare
    }

    /// Puts the sum of a lent bucket `b` in the gradient's place; returns the storage it held.
    pub fn take_back(
        &self,
        b: usize,
        layers: &mut [Box<dyn Layer>],
        mut sum: Vec<f32>,
    ) -> Vec<f32> {
        debug_assert!(self.list[b].whole);
        self.each_grad(b, layers, |g| {
            debug_assert_eq!(g.len(), sum.len());
            std::mem::swap(g, &mut sum);
        });
        sum
    }

    /// Takes packed bucket `b`'s sum over `shares` shares back: the gradients into the layers,
    /// the non-trainable tensors as the shares' mean.
    pub fn unpack(&self, b: usize, layers: &mut [Box<dyn Layer>], sum: &[f32], shares: usize) {
        let mut at = 0;
        if b == 0 {
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
            debug_assert_eq!(at, self.non_trainable);
        }
        self.each_grad(b, layers, |g| {
            let len = g.len();
            g.copy_from_slice(&sum[at..at + len]);
            at += len;
        });
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
