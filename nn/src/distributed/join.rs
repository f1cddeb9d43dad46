//! What the ranks agree on before the first step: the same model, optimizer, settings and data
//! (compared by fingerprints: a mismatch is an error on every rank, naming the ranks), then
//! rank 0's weights and optimizer state everywhere (broadcast, then compared by a hash).

use super::Collective;
use crate::error::{Error, Result};
use crate::layers::Layer;
use crate::optimizers::Optimizer;
use crate::tensor::Tensor;

/// FNV-1a over 64-bit words: a fingerprint, not a defence against tampering (the ranks are one
/// job). Fast enough to hash a data set each `fit` (MNIST's 47 M values in tens of ms).
#[derive(Clone, Copy)]
pub(crate) struct Fingerprint(u64);

impl Fingerprint {
    pub fn new() -> Self {
        Fingerprint(0xcbf2_9ce4_8422_2325)
    }
    pub fn word(&mut self, w: u64) {
        self.0 = (self.0 ^ w).wrapping_mul(0x0000_0100_0000_01b3);
    }
    pub fn text(&mut self, s: &str) {
        self.word(s.len() as u64);
        for chunk in s.as_bytes().chunks(8) {
            let mut w = [0u8; 8];
            w[..chunk.len()].copy_from_slice(chunk);
            self.word(u64::from_le_bytes(w));
        }
    }
    pub fn floats(&mut self, v: &[f32]) {
        self.word(v.len() as u64);
        let mut pairs = v.chunks_exact(2);
        for p in &mut pairs {
            self.word(p[0].to_bits() as u64 | (p[1].to_bits() as u64) << 32);
        }
        for &x in pairs.remainder() {
            self.word(x.to_bits() as u64);
        }
    }
    pub fn tensor(&mut self, t: &Tensor) {
        for &d in t.shape() {
            self.word(d as u64);
        }
        self.floats(t.data());
    }
    pub fn value(self) -> u64 {
        self.0
    }
}

/// Checks that every rank passed the same `value` for `what`; the error names the ranks that
/// differ from rank 0.
pub(crate) fn agree(comm: &mut dyn Collective, what: &str, value: u64) -> Result<()> {
    let all = comm.all_gather(value)?;
    let differ: Vec<String> = (1..all.len())
        .filter(|&r| all[r] != all[0])
        .map(|r| r.to_string())
        .collect();
    if differ.is_empty() {
        Ok(())
    } else {
        Err(Error::Distributed(format!(
            "{what} differ between rank 0 and rank{} {} (every rank must be given the same)",
            if differ.len() > 1 { "s" } else { "" },
            differ.join(", ")
        )))
    }
}

/// Hash of every weight (trainable or not) and optimizer state value.
fn weights_hash(layers: &mut [Box<dyn Layer>], optimizer: &mut Optimizer) -> u64 {
    let mut h = Fingerprint::new();
    for l in layers.iter_mut() {
        l.for_each_param(&mut |p| h.floats(p.value));
    }
    for s in optimizer.state_mut() {
        h.floats(s);
    }
    h.value()
}

/// Makes every rank start from rank 0's weights and optimizer state, then checks by a hash
/// that they do (the shapes were compared before, as part of the model's fingerprint).
pub(crate) fn start_from_rank_zero(
    comm: &mut dyn Collective,
    layers: &mut [Box<dyn Layer>],
    optimizer: &mut Optimizer,
) -> Result<()> {
    let mut all = Vec::new();
    for l in layers.iter_mut() {
        l.for_each_param(&mut |p| all.extend_from_slice(p.value));
    }
    for s in optimizer.state_mut() {
        all.extend_from_slice(s);
    }
    comm.broadcast(&mut all, 0)?;
    let mut at = 0;
    for l in layers.iter_mut() {
        l.for_each_param(&mut |p| {
            let len = p.value.len();
            p.value.copy_from_slice(&all[at..at + len]);
            at += len;
        });
    }
    for s in optimizer.state_mut() {
        let len = s.len();
        s.copy_from_slice(&all[at..at + len]);
        at += len;
    }
    let hash = weights_hash(layers, optimizer);
    agree(comm, "the weights after rank 0's broadcast", hash)
}
