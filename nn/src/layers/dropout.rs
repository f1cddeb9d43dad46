//! Dropout (inverted, as Keras): in training each element is zeroed with probability `rate` and
//! the survivors scaled by 1/(1 − rate); at inference the identity. The mask comes from the
//! layer's own generator, seeded from the model's seed: same seed, same masks.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha12Rng;

use super::{elements, grow, Inferred, Layer, LayerConfig, Param};
use crate::error::{Error, Result};

/// Keras's `Dropout(rate)`.
pub struct Dropout {
    name: String,
    rate: f32,
    per: usize,
    out_shape: Vec<usize>,
    out: Vec<f32>,
    mask: Vec<f32>,
    /// rand's `StdRng` is this generator: the same masks from the same seed, and a position
    /// that can be moved on without drawing.
    rng: ChaCha12Rng,
}

impl Dropout {
    pub fn new(rate: f32) -> Dropout {
        Dropout {
            name: String::new(),
            rate,
            per: 0,
            out_shape: vec![],
            out: vec![],
            mask: vec![],
            rng: ChaCha12Rng::seed_from_u64(0),
        }
    }
}

impl Layer for Dropout {
    layer_identity!("Dropout");
    fn infer(&self, input: &[usize]) -> Result<Inferred> {
        if !(0.0..1.0).contains(&self.rate) {
            return Err(Error::LayerSetting {
                layer: self.name.clone(),
                class: "Dropout",
                setting: "rate",
                value: self.rate.to_string(),
                reason: "not in [0, 1)".into(),
            });
        }
        elements(input, &self.name)?;
        Ok(Inferred::output(input.to_vec()))
    }
    fn build(&mut self, input: &[usize], rng: &mut StdRng) -> Result<Vec<usize>> {
        self.infer(input)?;
        self.rng = ChaCha12Rng::seed_from_u64(rng.gen());
        self.per = input.iter().product();
        self.out_shape = input.to_vec();
        Ok(self.out_shape.clone())
    }
    fn allocate(&mut self, batch: usize) -> Result<()> {
        grow(&mut self.out, batch, self.per, 0.0, &self.name)?;
        grow(&mut self.mask, batch, self.per, 1.0, &self.name)
    }
    fn output_shape(&self) -> &[usize] {
        &self.out_shape
    }
    fn forward(&mut self, x: &[f32], n: usize, training: bool) -> Result<()> {
        let len = n * self.per;
        if !training || self.rate == 0.0 {
            self.mask[..len].fill(1.0);
            self.out[..len].copy_from_slice(&x[..len]);
            return Ok(());
        }
        let keep = 1.0 - self.rate;
        let scale = 1.0 / keep;
        for m in &mut self.mask[..len] {
            *m = if self.rng.gen::<f32>() < keep {
                scale
            } else {
                0.0
            };
        }
        for ((o, &x), &m) in self.out[..len]
            .iter_mut()
            .zip(&x[..len])
            .zip(&self.mask[..len])
        {
            *o = x * m;
        }
        Ok(())
    }
    fn output(&self) -> &[f32] {
        &self.out
    }
    fn backward(
        &mut self,
        _x: &[f32],
        grad: &mut [f32],
        dx: Option<&mut [f32]>,
        n: usize,
    ) -> Result<()> {
        if let Some(dx) = dx {
            let len = n * self.per;
            for ((d, &g), &m) in dx[..len]
                .iter_mut()
                .zip(&grad[..len])
                .zip(&self.mask[..len])
            {
                *d = g * m;
            }
        }
        Ok(())
    }
    fn for_each_param(&mut self, _f: &mut dyn FnMut(Param<'_>)) {}
    fn skip_samples(&mut self, n: usize) {
        // As many draws as `forward` makes in training, each one 32-bit word of the stream.
        if self.rate != 0.0 {
            let words = (n * self.per) as u128;
            self.rng.set_word_pos(self.rng.get_word_pos() + words);
        }
    }
    fn param_count(&self) -> usize {
        0
    }
    fn config(&self) -> LayerConfig {
        LayerConfig::Dropout {
            name: self.name.clone(),
            rate: self.rate,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn built(seed: u64) -> Dropout {
        let mut d = Dropout::new(0.4);
        d.build(&[7], &mut StdRng::seed_from_u64(seed)).unwrap();
        d.allocate(5).unwrap();
        d
    }

    #[test]
    fn its_generator_is_rands_standard_one() {
        let mut a = StdRng::seed_from_u64(9);
        let mut b = ChaCha12Rng::seed_from_u64(9);
        for _ in 0..100 {
            assert_eq!(a.gen::<f32>().to_bits(), b.gen::<f32>().to_bits());
        }
    }

    #[test]
    fn skipping_samples_gives_the_masks_drawing_them_would() {
        let x = vec![1.0f32; 5 * 7];
        let mut whole = built(3);
        whole.forward(&x, 5, true).unwrap();
        let mut part = built(3);
        part.skip_samples(2);
        part.forward(&x, 3, true).unwrap();
        assert_eq!(&part.mask[..3 * 7], &whole.mask[2 * 7..5 * 7]);
        // And after the batch: both streams at the same place.
        whole.forward(&x, 5, true).unwrap();
        part.forward(&x, 5, true).unwrap();
        assert_eq!(part.mask, whole.mask);
    }
}
