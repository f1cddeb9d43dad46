//! Windows sliding along one dimension: TensorFlow's padding rules, shared by convolution and
//! pooling (both re-export them through `kernels::conv`; neither module imports the other for
//! them).

/// How the input is padded, as Keras's `padding` argument.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Padding {
    /// No padding: only windows that fit entirely inside the input.
    #[default]
    Valid,
    /// Zero padding so that the output has `ceil(input / stride)` positions per dimension.
    Same,
}

impl Padding {
    /// Keras's name ("valid" or "same").
    pub fn name(self) -> &'static str {
        match self {
            Padding::Valid => "valid",
            Padding::Same => "same",
        }
    }
}

/// Output positions along one dimension of `input` positions.
pub fn output_len(input: usize, kernel: usize, stride: usize, padding: Padding) -> usize {
    match padding {
        Padding::Valid if input >= kernel && stride > 0 => (input - kernel) / stride + 1,
        Padding::Valid => 0,
        Padding::Same => input.div_ceil(stride.max(1)),
    }
}

/// Zero padding before the first input position (top or left); TensorFlow puts the odd one after.
pub fn padding_before(input: usize, kernel: usize, stride: usize, padding: Padding) -> usize {
    match padding {
        Padding::Valid => 0,
        Padding::Same => {
            let out = output_len(input, kernel, stride, padding);
            ((out.saturating_sub(1)) * stride + kernel).saturating_sub(input) / 2
        }
    }
}
