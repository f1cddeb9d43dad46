//! Average and global pooling through `kernels::pool`: Keras's `AveragePooling2D`,
//! `GlobalAveragePooling2D` and `GlobalMaxPooling2D`. A global pooling is a pooling whose window
//! is the whole image (output `[channels]` per sample, the layout of a 1 × 1 × channels image).

use kernels::pool::{
    avg_pool2d_backward, avg_pool2d_forward, max_pool2d_backward, max_pool2d_forward, Pool2d,
};
use kernels::{ExecOptions, Padding};
use rand::rngs::StdRng;

use super::{grow, Inferred, Kind, Layer, LayerConfig, Param};
use crate::error::{Error, Result};

/// What a pooling layer reduces with, and over which window.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Reduce {
    /// Mean over a `pool` window, `strides` apart (AveragePooling2D).
    Average {
        pool: (usize, usize),
        strides: Option<(usize, usize)>,
        padding: Padding,
    },
    /// Mean over the whole image.
    GlobalAverage,
    /// Maximum over the whole image (a NaN wins, as in max pooling).
    GlobalMax,
}

/// A pooling layer without parameters: the reduction, its shape once built, its buffers.
struct Pooling {
    name: String,
    reduce: Reduce,
    shape: Option<Pool2d>,
    out_shape: Vec<usize>,
    out: Vec<f32>,
    /// Where each maximum came from (GlobalMax, training only).
    argmax: Vec<u32>,
}

impl Pooling {
    fn new(reduce: Reduce) -> Pooling {
        Pooling {
            name: String::new(),
            reduce,
            shape: None,
            out_shape: vec![],
            out: vec![],
            argmax: vec![],
        }
    }

    fn class(&self) -> &'static str {
        match self.reduce {
            Reduce::Average { .. } => "AveragePooling2D",
            Reduce::GlobalAverage => "GlobalAveragePooling2D",
            Reduce::GlobalMax => "GlobalMaxPooling2D",
        }
    }

    /// The pooling of one sample of shape `input`, checked, and the output shape.
    fn pooling(&self, input: &[usize]) -> Result<(Pool2d, Vec<usize>)> {
        let [h, w, c] = *input else {
            return Err(Error::LayerInput {
                layer: self.name.clone(),
                class: self.class(),
                expected: "samples of shape (height, width, channels)",
                input: input.to_vec(),
                hint: "",
            });
        };
        let (pool, strides, padding) = match self.reduce {
            Reduce::Average {
                pool,
                strides,
                padding,
            } => (pool, strides.unwrap_or(pool), padding),
            Reduce::GlobalAverage | Reduce::GlobalMax => {
                ((h, w), (h.max(1), w.max(1)), Padding::Valid)
            }
        };
        let shape = Pool2d {
            batch: 1,
            in_h: h,
            in_w: w,
            channels: c,
            pool_h: pool.0,
            pool_w: pool.1,
            stride_h: strides.0,
            stride_w: strides.1,
            padding,
        };
        shape.validate().map_err(Error::kernel(&self.name))?;
        let out = match self.reduce {
            Reduce::Average { .. } => vec![shape.out_h(), shape.out_w(), c],
            Reduce::GlobalAverage | Reduce::GlobalMax => vec![c],
        };
        Ok((shape, out))
    }

    fn shape(&self, n: usize) -> Pool2d {
        Pool2d {
            batch: n,
            ..self.shape.expect("built")
        }
    }

    fn infer(&self, input: &[usize]) -> Result<Inferred> {
        Ok(Inferred::output(self.pooling(input)?.1))
    }

    fn build(&mut self, input: &[usize]) -> Result<Vec<usize>> {
        let (shape, out) = self.pooling(input)?;
        self.shape = Some(shape);
        self.out_shape = out.clone();
        Ok(out)
    }

    fn allocate(&mut self, batch: usize) -> Result<()> {
        let per: usize = self.out_shape.iter().product();
        grow(&mut self.out, batch, per, 0.0, &self.name)?;
        if self.reduce == Reduce::GlobalMax {
            grow(&mut self.argmax, batch, per, 0, &self.name)?;
        }
        Ok(())
    }

    fn forward(&mut self, x: &[f32], n: usize, training: bool) -> Result<()> {
        let s = self.shape(n);
        let (x, y) = (&x[..s.input_len()], &mut self.out[..s.output_len()]);
        let opts = ExecOptions::default();
        match self.reduce {
            Reduce::GlobalMax => max_pool2d_forward(
                &opts,
                &s,
                x,
                y,
                training.then_some(&mut self.argmax[..s.output_len()]),
            ),
            _ => avg_pool2d_forward(&opts, &s, x, y),
        }
        .map_err(Error::kernel(&self.name))
    }

    fn backward(&mut self, grad: &[f32], dx: Option<&mut [f32]>, n: usize) -> Result<()> {
        let s = self.shape(n);
        let Some(dx) = dx else {
            return Ok(());
        };
        let (dy, dx, opts) = (
            &grad[..s.output_len()],
            &mut dx[..s.input_len()],
            ExecOptions::default(),
        );
        match self.reduce {
            Reduce::GlobalMax => {
                max_pool2d_backward(&opts, &s, dy, &self.argmax[..s.output_len()], dx)
            }
            _ => avg_pool2d_backward(&opts, &s, dy, dx),
        }
        .map_err(Error::kernel(&self.name))
    }
}

/// Implements `Layer` for a wrapper of [`Pooling`] (no parameters; the config its own).
macro_rules! pooling_layer {
    ($ty:ident, $class:literal) => {
        pooling_layer!($ty, $class, |_l| Kind::Other);
    };
    ($ty:ident, $class:literal, |$l:ident| $kind:expr) => {
        impl Layer for $ty {
            fn kind(&mut self) -> Kind<'_> {
                let $l = self;
                $kind
            }
            fn class_name(&self) -> &'static str {
                $class
            }
            fn name(&self) -> &str {
                &self.0.name
            }
            fn set_name(&mut self, name: String) {
                self.0.name = name;
            }
            fn infer(&self, input: &[usize]) -> Result<Inferred> {
                self.0.infer(input)
            }
            fn build(&mut self, input: &[usize], _rng: &mut StdRng) -> Result<Vec<usize>> {
                self.0.build(input)
            }
            fn allocate(&mut self, batch: usize) -> Result<()> {
                self.0.allocate(batch)
            }
            fn output_shape(&self) -> &[usize] {
                &self.0.out_shape
            }
            fn forward(&mut self, x: &[f32], n: usize, training: bool) -> Result<()> {
                self.0.forward(x, n, training)
            }
            fn output(&self) -> &[f32] {
                &self.0.out
            }
            fn backward(
                &mut self,
                _x: &[f32],
                grad: &mut [f32],
                dx: Option<&mut [f32]>,
                n: usize,
            ) -> Result<()> {
                self.0.backward(grad, dx, n)
            }
            fn for_each_param(&mut self, _f: &mut dyn FnMut(Param<'_>)) {}
            fn param_count(&self) -> usize {
                0
            }
            fn config(&self) -> LayerConfig {
                self.config_of()
            }
        }
    };
}

/// Keras's `AveragePooling2D(pool_size, strides=pool_size, padding="valid")`: the mean of each
/// window (with 'same' padding, over the positions inside the input, as TensorFlow).
pub struct AveragePooling2D(Pooling);

impl AveragePooling2D {
    pub fn new(pool: (usize, usize)) -> AveragePooling2D {
        AveragePooling2D(Pooling::new(Reduce::Average {
            pool,
            strides: None,
            padding: Padding::Valid,
        }))
    }
    /// `strides=(sh, sw)` (default: the pool size).
    pub fn strides(mut self, s: (usize, usize)) -> AveragePooling2D {
        if let Reduce::Average { strides, .. } = &mut self.0.reduce {
            *strides = Some(s);
        }
        self
    }
    pub fn padding(mut self, p: Padding) -> AveragePooling2D {
        if let Reduce::Average { padding, .. } = &mut self.0.reduce {
            *padding = p;
        }
        self
    }
    fn config_of(&self) -> LayerConfig {
        let Reduce::Average {
            pool,
            strides,
            padding,
        } = self.0.reduce
        else {
            unreachable!("an AveragePooling2D averages over windows")
        };
        let (sh, sw) = strides.unwrap_or(pool);
        LayerConfig::AveragePooling2D {
            name: self.0.name.clone(),
            pool_size: [pool.0, pool.1],
            strides: [sh, sw],
            padding: padding.name().to_string(),
        }
    }
}
pooling_layer!(AveragePooling2D, "AveragePooling2D", |l| {
    Kind::AveragePooling2D(l)
});

impl AveragePooling2D {
    /// For a pass fused with the convolution before it: the pooling of `n` samples and its
    /// output.
    pub(crate) fn parts(&mut self, n: usize) -> (Pool2d, &mut [f32]) {
        let s = self.0.shape(n);
        let len = s.output_len();
        (s, &mut self.0.out[..len])
    }

    /// The pooling of `n` samples.
    pub(crate) fn pooling_of(&self, n: usize) -> Pool2d {
        self.0.shape(n)
    }
}

/// Keras's `GlobalAveragePooling2D()`: each channel's mean over the image; output `[channels]`.
pub struct GlobalAveragePooling2D(Pooling);

impl GlobalAveragePooling2D {
    #[allow(clippy::new_without_default)]
    pub fn new() -> GlobalAveragePooling2D {
        GlobalAveragePooling2D(Pooling::new(Reduce::GlobalAverage))
    }
    fn config_of(&self) -> LayerConfig {
        LayerConfig::GlobalAveragePooling2D {
            name: self.0.name.clone(),
        }
    }
}
pooling_layer!(GlobalAveragePooling2D, "GlobalAveragePooling2D");

/// Keras's `GlobalMaxPooling2D()`: each channel's maximum over the image (a NaN wins); output
/// `[channels]`; the gradient goes to the first maximum.
pub struct GlobalMaxPooling2D(Pooling);

impl GlobalMaxPooling2D {
    #[allow(clippy::new_without_default)]
    pub fn new() -> GlobalMaxPooling2D {
        GlobalMaxPooling2D(Pooling::new(Reduce::GlobalMax))
    }
    fn config_of(&self) -> LayerConfig {
        LayerConfig::GlobalMaxPooling2D {
            name: self.0.name.clone(),
        }
    }
}
pooling_layer!(GlobalMaxPooling2D, "GlobalMaxPooling2D");
