//! The pooled gradient as the one-channel weight pass reads it: a leaf that the dispatcher
//! (`direct`) and the explicit 3×3 kernel (`direct3x3`) both name, so neither imports the other's
//! items both ways.

/// The output gradient of a convolution followed by a max pooling of windows apart, as the
/// pooling's backward pass would form it for the weight gradient, read from the pooling's own
/// arrays: for output pixel (oy, ox) and channel c, `g[q]` where the pixel is the argmax of its
/// window's entry q, and 0 elsewhere (outside every window too).
#[derive(Debug, Clone, Copy)]
// Read by the explicit 3×3 kernel only (x86-64).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) struct PooledGrads<'a> {
    /// The pooled entries' gradients, as the pooling's backward pass routes them (`0 + act'·dy`),
    /// of the images from `first_image` on.
    pub g: &'a [f32],
    /// Their argmax (an offset into the convolution's output image), of the same images.
    pub argmax: &'a [u32],
    pub first_image: usize,
    /// The pooling's window, stride and output size.
    pub window: (usize, usize),
    pub stride: (usize, usize),
    pub out: (usize, usize),
}
