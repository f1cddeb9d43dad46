//! The shape of a 2-D convolution (NHWC input, HWIO weights) and its checks.

use crate::error::{Error, Result};
use crate::window::{output_len, padding_before, Padding};

/// The shape of one 2-D convolution: everything the kernels need besides the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Conv2d {
    pub batch: usize,
    pub in_h: usize,
    pub in_w: usize,
    pub in_c: usize,
    pub out_c: usize,
    pub kernel_h: usize,
    pub kernel_w: usize,
    pub stride_h: usize,
    pub stride_w: usize,
    pub padding: Padding,
}

impl Conv2d {
    /// A convolution with a `k × k` kernel, stride 1.
    pub fn square(
        batch: usize,
        (in_h, in_w, in_c): (usize, usize, usize),
        out_c: usize,
        k: usize,
        padding: Padding,
    ) -> Self {
        Conv2d {
            batch,
            in_h,
            in_w,
            in_c,
            out_c,
            kernel_h: k,
            kernel_w: k,
            stride_h: 1,
            stride_w: 1,
            padding,
        }
    }

    pub fn out_h(&self) -> usize {
        output_len(self.in_h, self.kernel_h, self.stride_h, self.padding)
    }
    pub fn out_w(&self) -> usize {
        output_len(self.in_w, self.kernel_w, self.stride_w, self.padding)
    }
    pub(crate) fn pad_top(&self) -> usize {
        padding_before(self.in_h, self.kernel_h, self.stride_h, self.padding)
    }
    pub(crate) fn pad_left(&self) -> usize {
        padding_before(self.in_w, self.kernel_w, self.stride_w, self.padding)
    }
    /// `kernel_h · kernel_w · in_c`: one row of im2col, one column of the weight matrix.
    pub fn patch_len(&self) -> usize {
        self.kernel_h * self.kernel_w * self.in_c
    }
    /// Output positions per image.
    pub fn out_pixels(&self) -> usize {
        self.out_h() * self.out_w()
    }
    pub fn input_len(&self) -> usize {
        self.batch * self.in_h * self.in_w * self.in_c
    }
    pub fn output_len(&self) -> usize {
        self.batch * self.out_pixels() * self.out_c
    }
    pub fn weight_len(&self) -> usize {
        self.patch_len() * self.out_c
    }
    /// Floating-point operations of the forward pass (each backward pass costs the same).
    pub fn flops(&self) -> f64 {
        2.0 * (self.batch * self.out_pixels()) as f64 * self.patch_len() as f64 * self.out_c as f64
    }

    /// Checks that the shape is meaningful and that its sizes fit in memory arithmetic.
    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("in_h", self.in_h),
            ("in_w", self.in_w),
            ("in_c", self.in_c),
            ("out_c", self.out_c),
            ("kernel_h", self.kernel_h),
            ("kernel_w", self.kernel_w),
            ("stride_h", self.stride_h),
            ("stride_w", self.stride_w),
        ];
        for (name, v) in positive {
            if v == 0 {
                return Err(Error::InvalidArgument {
                    name,
                    value: "0".into(),
                    reason: "convolution dimensions and strides must be at least 1".into(),
                });
            }
        }
        if self.padding == Padding::Valid
            && (self.kernel_h > self.in_h || self.kernel_w > self.in_w)
        {
            return Err(Error::ShapeMismatch {
                what: "conv2d",
                detail: format!(
                    "a {}×{} kernel does not fit a {}×{} input with 'valid' padding",
                    self.kernel_h, self.kernel_w, self.in_h, self.in_w
                ),
            });
        }
        let sizes = [
            [self.batch, self.in_h, self.in_w, self.in_c],
            [self.batch, self.out_h(), self.out_w(), self.out_c],
            [self.kernel_h, self.kernel_w, self.in_c, self.out_c],
        ];
        for dims in sizes {
            if dims
                .iter()
                .try_fold(1usize, |acc, &d| acc.checked_mul(d))
                .is_none_or(|n| n > isize::MAX as usize / 4)
            {
                return Err(Error::InvalidArgument {
                    name: "conv2d shape",
                    value: format!("{dims:?}"),
                    reason: "the tensor size overflows".into(),
                });
            }
        }
        Ok(())
    }

    /// "batch×in_h×in_w×in_c" for messages.
    pub(crate) fn input_desc(&self) -> String {
        format!("{}×{}×{}×{}", self.batch, self.in_h, self.in_w, self.in_c)
    }
    pub(crate) fn output_desc(&self) -> String {
        format!(
            "{}×{}×{}×{}",
            self.batch,
            self.out_h(),
            self.out_w(),
            self.out_c
        )
    }
    pub(crate) fn weight_desc(&self) -> String {
        format!(
            "{}×{}×{}×{}",
            self.kernel_h, self.kernel_w, self.in_c, self.out_c
        )
    }
}
