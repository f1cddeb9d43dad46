//! Flatten: each sample becomes one row (the data is already row-major: no reordering). Inside a
//! model it is skipped and the layers around it share the buffer; run alone, it copies.

use rand::rngs::StdRng;

use super::{elements, grow, Inferred, Kind, Layer, LayerConfig, Param};
use crate::error::Result;

/// Keras's `Flatten()`.
#[derive(Default)]
pub struct Flatten {
    name: String,
    per: usize,
    out_shape: Vec<usize>,
    out: Vec<f32>,
}

impl Flatten {
    pub fn new() -> Flatten {
        Flatten::default()
    }
}

impl Layer for Flatten {
    layer_identity!("Flatten");
    fn infer(&self, input: &[usize]) -> Result<Inferred> {
        Ok(Inferred::output(vec![elements(input, &self.name)?]))
    }
    fn build(&mut self, input: &[usize], _rng: &mut StdRng) -> Result<Vec<usize>> {
        self.out_shape = self.infer(input)?.output;
        self.per = self.out_shape[0];
        Ok(self.out_shape.clone())
    }
    fn allocate(&mut self, batch: usize) -> Result<()> {
        grow(&mut self.out, batch, self.per, 0.0, &self.name)
    }
    fn output_shape(&self) -> &[usize] {
        &self.out_shape
    }
    fn forward(&mut self, x: &[f32], n: usize, _training: bool) -> Result<()> {
        let len = n * self.per;
        self.out[..len].copy_from_slice(&x[..len]);
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
            dx[..len].copy_from_slice(&grad[..len]);
        }
        Ok(())
    }
    fn kind(&mut self) -> Kind<'_> {
        Kind::Flatten(self)
    }
    fn for_each_param(&mut self, _f: &mut dyn FnMut(Param<'_>)) {}
    fn param_count(&self) -> usize {
        0
    }
    fn config(&self) -> LayerConfig {
        LayerConfig::Flatten {
            name: self.name.clone(),
        }
    }
}
