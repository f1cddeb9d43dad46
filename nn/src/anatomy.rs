//! Where a `fit`'s time went: wall time per pass of each unit of the plan (a layer, or the
//! layers that run as one), the loss, the optimizer's step, gathering the batches and the
//! validation passes, with each part's useful FLOPs — asked for with `FitConfig::anatomy`,
//! returned in `History::anatomy`. The slots are laid out once from the plan before the first
//! step; a step adds to them and allocates nothing.

use std::time::Instant;

/// Which pass a part of the anatomy is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// Copying the shuffled samples into the batch buffers.
    Gather,
    Forward,
    /// The loss's value and gradient.
    Loss,
    /// The layer's backward pass (with the optimizer's step, for a Dense that takes it there).
    Backward,
    /// The optimizer's step over the parameters the backward passes left to it.
    Optimizer,
    /// Data-parallel training (or micro-batches): packing the gradients, waiting for their
    /// sums across the ranks (what the backward pass did not hide), taking them back.
    Exchange,
    /// The validation after each epoch (every forward pass of it).
    Validation,
}

impl Pass {
    pub fn name(self) -> &'static str {
        match self {
            Pass::Gather => "gather",
            Pass::Forward => "forward",
            Pass::Loss => "loss",
            Pass::Backward => "backward",
            Pass::Optimizer => "optimizer",
            Pass::Exchange => "exchange",
            Pass::Validation => "validation",
        }
    }
}

/// One part of the anatomy.
#[derive(Debug, Clone, PartialEq)]
pub struct Part {
    /// The layers it covers ("conv2d + max_pooling2d"), or the pass's name for the parts that
    /// are no layer's (gather, loss, optimizer, validation).
    pub name: String,
    pub pass: Pass,
    /// Wall time over the whole `fit`.
    pub seconds: f64,
    /// The useful floating-point operations of its products over the whole `fit` (two per
    /// multiply-add; zero for parts without products).
    pub flops: u64,
}

/// Where a `fit`'s time went, part by part, in running order within a step.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Anatomy {
    pub parts: Vec<Part>,
    /// The training steps and samples the parts' times cover.
    pub steps: u64,
    pub samples: u64,
}

impl Anatomy {
    /// The time of all parts.
    pub fn seconds(&self) -> f64 {
        self.parts.iter().map(|p| p.seconds).sum()
    }
}

/// A part's slot while `fit` runs: its time so far and its FLOPs per sample.
pub(crate) struct Slot {
    pub part: Part,
    pub flops_per_sample: u64,
}

/// The running anatomy of one `fit`: the slots, and the clock between two marks.
pub(crate) struct Recorder {
    pub slots: Vec<Slot>,
    last: Instant,
    pub steps: u64,
    pub samples: u64,
}

impl Recorder {
    pub fn new(slots: Vec<Slot>) -> Recorder {
        Recorder {
            slots,
            last: Instant::now(),
            steps: 0,
            samples: 0,
        }
    }

    /// Starts the clock (the time since the last mark belongs to no part).
    pub fn start(&mut self) {
        self.last = Instant::now();
    }

    /// Charges the time since the last mark to slot `i`, which worked on `samples` samples.
    pub fn mark(&mut self, i: usize, samples: usize) {
        let now = Instant::now();
        let slot = &mut self.slots[i];
        slot.part.seconds += now.duration_since(self.last).as_secs_f64();
        slot.part.flops += slot.flops_per_sample * samples as u64;
        self.last = now;
    }

    pub fn finish(self) -> Anatomy {
        Anatomy {
            parts: self.slots.into_iter().map(|s| s.part).collect(),
            steps: self.steps,
            samples: self.samples,
        }
    }
}
