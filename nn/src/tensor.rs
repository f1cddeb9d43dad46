//! An owned, 64-byte aligned, row-major f32 tensor with its shape; the first dimension is the
//! sample (batch) dimension everywhere in `nn`.

use aligned_vec::{AVec, ConstAlign};

use crate::error::{Error, Result};

/// Aligned f32 storage.
pub type Storage = AVec<f32, ConstAlign<64>>;

/// An n-dimensional f32 tensor: row-major data and its shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    shape: Vec<usize>,
    data: Storage,
}

/// The number of elements of `shape`, or an error when the product overflows.
pub(crate) fn element_count(shape: &[usize]) -> Result<usize> {
    checked_product(shape).ok_or_else(|| Error::TooLarge {
        what: "a tensor".into(),
        shape: shape.to_vec(),
    })
}

/// The product of `dims`, or `None` when it overflows: every size `nn` takes from a shape or a
/// file goes through here.
pub(crate) fn checked_product(dims: &[usize]) -> Option<usize> {
    dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d))
}

/// `len` copies of `value` in aligned storage; memory the system refuses is an error.
fn filled(len: usize, value: f32) -> Result<Storage> {
    let mut data = AVec::new(64);
    data.try_reserve_exact(len).map_err(|_| Error::Memory {
        what: format!("a tensor of {len} values"),
        bytes: (len as u64).saturating_mul(4),
    })?;
    data.resize(len, value);
    Ok(data)
}

impl Tensor {
    /// A tensor of `shape` holding `data` (row-major); the lengths must agree.
    pub fn from_vec(data: Vec<f32>, shape: &[usize]) -> Result<Tensor> {
        Self::from_slice(&data, shape)
    }

    /// A tensor of `shape` copied from `data`.
    pub fn from_slice(data: &[f32], shape: &[usize]) -> Result<Tensor> {
        let want = element_count(shape)?;
        if want != data.len() {
            return Err(Error::TensorLength {
                shape: shape.to_vec(),
                needed: want,
                given: data.len(),
                unit: "elements",
            });
        }
        Ok(Tensor {
            shape: shape.to_vec(),
            data: AVec::from_slice(64, data),
        })
    }

    /// Zeros of `shape`; a shape whose size overflows, or memory the system refuses, is an
    /// error.
    pub fn zeros(shape: &[usize]) -> Result<Tensor> {
        Ok(Tensor {
            shape: shape.to_vec(),
            data: filled(element_count(shape)?, 0.0)?,
        })
    }

    /// Bytes (images) scaled by `scale` (Keras programs use `x / 255.0`: pass `1.0 / 255.0`).
    pub fn from_u8(bytes: &[u8], shape: &[usize], scale: f32) -> Result<Tensor> {
        let want = element_count(shape)?;
        if want != bytes.len() {
            return Err(Error::TensorLength {
                shape: shape.to_vec(),
                needed: want,
                given: bytes.len(),
                unit: "bytes",
            });
        }
        Ok(Tensor {
            shape: shape.to_vec(),
            data: AVec::from_iter(64, bytes.iter().map(|&b| b as f32 * scale)),
        })
    }

    /// Integer labels as a 1-D tensor (for the sparse losses).
    pub fn from_labels(labels: &[u8]) -> Tensor {
        Tensor {
            shape: vec![labels.len()],
            data: AVec::from_iter(64, labels.iter().map(|&l| l as f32)),
        }
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    pub fn data(&self) -> &[f32] {
        &self.data
    }
    pub fn data_mut(&mut self) -> &mut [f32] {
        &mut self.data
    }
    pub fn len(&self) -> usize {
        self.data.len()
    }
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
    /// The number of samples (the first dimension; 1 for a scalar).
    pub fn samples(&self) -> usize {
        self.shape.first().copied().unwrap_or(1)
    }
    /// Elements per sample.
    pub fn sample_len(&self) -> usize {
        self.shape.iter().skip(1).product()
    }
    /// Sample `i`'s elements (`None` past the last sample).
    pub fn sample(&self, i: usize) -> Option<&[f32]> {
        self.rows(i..i.checked_add(1)?)
    }
    /// Samples `range` as a slice (a batch view, no copy; `None` past the last sample).
    pub fn rows(&self, range: std::ops::Range<usize>) -> Option<&[f32]> {
        if range.start > range.end || range.end > self.samples() {
            return None;
        }
        let n = self.sample_len();
        self.data.get(range.start * n..range.end * n)
    }

    /// The same data with another shape of the same size.
    pub fn reshape(mut self, shape: &[usize]) -> Result<Tensor> {
        let want = element_count(shape)?;
        if want != self.data.len() {
            return Err(Error::Reshape {
                from: self.shape.clone(),
                elements: self.data.len(),
                to: shape.to_vec(),
                needed: want,
            });
        }
        self.shape = shape.to_vec();
        Ok(self)
    }

    /// Copies samples `range` into a new tensor; a range past the samples is an error.
    pub fn slice_samples(&self, range: std::ops::Range<usize>) -> Result<Tensor> {
        if range.start > range.end || range.end > self.samples() || self.shape.is_empty() {
            return Err(Error::SampleRange {
                start: range.start,
                end: range.end,
                shape: self.shape.clone(),
            });
        }
        let mut shape = self.shape.clone();
        shape[0] = range.len();
        Ok(Tensor {
            shape,
            data: AVec::from_slice(64, self.rows(range).expect("checked above")),
        })
    }

    /// The index of the largest element of each sample (first on ties).
    pub fn argmax_rows(&self) -> Vec<usize> {
        let n = self.sample_len().max(1);
        self.data.chunks_exact(n).map(argmax).collect()
    }
}

/// The index of the first NaN or infinity in `v`, if any. Scanned 64 values at a time with
/// their exponent bits OR-ed together (a reduction the compiler vectorizes), then element by
/// element only in the chunk that holds one: `position(|v| !v.is_finite())` stops early and so
/// runs one value per cycle, 2.5 % of a batch-1000 CNN prediction's time in a profile.
pub(crate) fn first_non_finite(v: &[f32]) -> Option<usize> {
    const EXPONENT: u32 = 0x7f80_0000;
    let chunks = v.chunks(64);
    for (c, chunk) in chunks.enumerate() {
        // A value is NaN or infinite exactly when all its exponent bits are set.
        let any = chunk.iter().fold(0u32, |acc, x| {
            acc | u32::from(x.to_bits() & EXPONENT == EXPONENT)
        });
        if any != 0 {
            return chunk
                .iter()
                .position(|x| !x.is_finite())
                .map(|i| c * 64 + i);
        }
    }
    None
}

/// Index of the largest value (first on ties; NaN never wins).
pub(crate) fn argmax(v: &[f32]) -> usize {
    let Some(&first) = v.first() else {
        return 0;
    };
    // The best value kept beside its index and both chosen without a branch: on a softmax's
    // outputs the comparison goes either way at random, and the mispredicted branch made the
    // accuracy count of each training step cost more than its loss (program E, one Zen 5).
    let (mut best, mut best_value) = (0, first);
    for (i, &x) in v.iter().enumerate().skip(1) {
        let take = x > best_value;
        best = if take { i } else { best };
        best_value = if take { x } else { best_value };
    }
    best
}

/// Keras's `to_categorical`: one-hot rows of `classes` columns from integer labels; a label
/// outside `0..classes` is an error naming it.
pub fn to_categorical(labels: &[u8], classes: usize) -> Result<Tensor> {
    for (i, &l) in labels.iter().enumerate() {
        if l as usize >= classes {
            return Err(Error::Label {
                label: l,
                index: i,
                classes,
            });
        }
    }
    let mut t = Tensor::zeros(&[labels.len(), classes])?;
    for (i, &l) in labels.iter().enumerate() {
        if l as usize >= classes {
            return Err(Error::Label {
                label: l,
                index: i,
                classes,
            });
        }
        t.data[i * classes + l as usize] = 1.0;
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_non_finite_finds_the_first_nan_or_infinity() {
        let mut v = vec![1.5f32; 300];
        assert_eq!(first_non_finite(&v), None);
        assert_eq!(first_non_finite(&[]), None);
        v[0] = f32::MAX;
        v[1] = -0.0;
        v[2] = f32::MIN_POSITIVE / 4.0;
        assert_eq!(first_non_finite(&v), None);
        for (at, bad) in [
            (299, f32::NAN),
            (64, f32::INFINITY),
            (63, f32::NEG_INFINITY),
        ] {
            v[at] = bad;
            assert_eq!(first_non_finite(&v), Some(at), "{bad} at {at}");
        }
        v[130] = -f32::NAN;
        assert_eq!(first_non_finite(&v), Some(63));
    }

    /// The first index of the largest value, NaN never winning past the first element: the
    /// rule as a plain search, against the branch-free one.
    fn searched(v: &[f32]) -> usize {
        let mut best = 0;
        for (i, &x) in v.iter().enumerate() {
            if x > v[best] {
                best = i;
            }
        }
        best
    }

    /// A small deterministic generator (xorshift).
    fn rng(seed: u64) -> impl FnMut() -> usize {
        let mut s = seed.max(1);
        move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 33) as usize
        }
    }

    #[test]
    fn argmax_takes_the_first_largest_and_never_a_nan_after_the_first() {
        let nan = f32::NAN;
        let cases: &[(&[f32], usize)] = &[
            (&[], 0),
            (&[3.0], 0),
            (&[1.0, 2.0, 2.0, 0.5], 1),
            (&[nan, 5.0, 1.0], 0),
            (&[1.0, nan, 0.5, 4.0], 3),
            (&[-1.0, f32::NEG_INFINITY, -0.5], 2),
            (&[0.0, -0.0, 0.0], 0),
            (&[1.0, f32::INFINITY, nan, f32::INFINITY], 1),
        ];
        for &(v, want) in cases {
            assert_eq!(argmax(v), want, "{v:?}");
        }
        // Random rows with ties (values from a small set) and NaNs, against the plain search.
        let mut rng = rng(7);
        let values = [0.0, 0.25, 0.5, 1.0, -1.0, nan];
        for len in 1..40 {
            for _ in 0..50 {
                let v: Vec<f32> = (0..len).map(|_| values[rng() % values.len()]).collect();
                assert_eq!(argmax(&v), searched(&v), "{v:?}");
            }
        }
    }
}
