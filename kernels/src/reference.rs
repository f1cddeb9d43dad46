//! Plain references with f64 accumulation, for tests and benchmark cross-checks. Slow on purpose:
//! simple enough to be obviously right.

use crate::error::Result;
use crate::mat::{MatMut, MatRef};

/// `C ← alpha·A·B + beta·C`, summing in f64 and rounding once, with BLAS's alpha/beta rules
/// (beta = 0 does not read C; alpha = 0 does not read A or B). Checks its arguments as
/// [`crate::gemm`] does.
pub fn gemm(alpha: f32, a: MatRef<'_>, b: MatRef<'_>, beta: f32, mut c: MatMut<'_>) -> Result<()> {
    crate::mat::check_product(&a, &b, &c)?;
    let (rs, cs) = (c.row_stride(), c.col_stride());
    let (m, n, k) = (a.rows(), b.cols(), a.cols());
    let data = c.data_mut();
    for i in 0..m {
        for j in 0..n {
            let ab = if alpha == 0.0 {
                0.0
            } else {
                (0..k)
                    .map(|p| a.at(i, p) as f64 * b.at(p, j) as f64)
                    .sum::<f64>()
            };
            let old = &mut data[i * rs + j * cs];
            let bc = if beta == 0.0 {
                0.0
            } else {
                beta as f64 * *old as f64
            };
            *old = (alpha as f64 * ab + bc) as f32;
        }
    }
    Ok(())
}

/// The forward error bound our GEMM is held to, element by element:
/// `|Ĉ − C| ≤ 2·(k + 2)·ε·(|alpha|·Σₚ|aᵢₚ|·|bₚⱼ| + |beta|·|cᵢⱼ|)` plus the smallest normal f32,
/// with ε the f32 unit roundoff (2⁻²⁴). This is the classical dot-product bound γₖ with a factor
/// of two of slack for the final scaling and the rounding of the reference.
pub fn gemm_error_bound(
    alpha: f32,
    a: MatRef<'_>,
    b: MatRef<'_>,
    beta: f32,
    c_old: MatRef<'_>,
) -> Vec<f64> {
    let (m, n, k) = (a.rows(), b.cols(), a.cols());
    let eps = f32::EPSILON as f64 / 2.0;
    let mut bound = Vec::with_capacity(m * n);
    for i in 0..m {
        for j in 0..n {
            let abs_ab: f64 = (0..k)
                .map(|p| (a.at(i, p) as f64 * b.at(p, j) as f64).abs())
                .sum();
            let bc = if beta == 0.0 {
                0.0
            } else {
                (beta as f64 * c_old.at(i, j) as f64).abs()
            };
            bound.push(
                2.0 * (k as f64 + 2.0) * eps * (alpha.abs() as f64 * abs_ab + bc)
                    + f32::MIN_POSITIVE as f64,
            );
        }
    }
    bound
}

/// The input position under kernel tap (ky, kx) of output position (oy, ox), if inside the input.
fn tap(
    s: &crate::conv::Conv2d,
    oy: usize,
    ox: usize,
    ky: usize,
    kx: usize,
) -> Option<(usize, usize)> {
    use crate::conv::padding_before;
    let pt = padding_before(s.in_h, s.kernel_h, s.stride_h, s.padding) as isize;
    let pl = padding_before(s.in_w, s.kernel_w, s.stride_w, s.padding) as isize;
    let iy = (oy * s.stride_h + ky) as isize - pt;
    let ix = (ox * s.stride_w + kx) as isize - pl;
    (iy >= 0 && ix >= 0 && iy < s.in_h as isize && ix < s.in_w as isize)
        .then_some((iy as usize, ix as usize))
}

/// Convolution forward in f64 by the definition (NHWC input, HWIO weights, see [`crate::conv`]),
/// before any activation: `y[n][oy][ox][o] = bias[o] + Σ x[n][iy][ix][c]·w[ky][kx][c][o]`.
/// Also returns, per output element, Σ|x·w| + |bias| (for error bounds).
pub fn conv2d_forward(
    s: &crate::conv::Conv2d,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
) -> (Vec<f64>, Vec<f64>) {
    let (oh, ow) = (s.out_h(), s.out_w());
    let mut y = vec![0.0; s.output_len()];
    let mut mag = vec![0.0; s.output_len()];
    for n in 0..s.batch {
        for oy in 0..oh {
            for ox in 0..ow {
                for o in 0..s.out_c {
                    let b = bias.map_or(0.0, |b| b[o] as f64);
                    let (mut sum, mut abs) = (b, b.abs());
                    for ky in 0..s.kernel_h {
                        for kx in 0..s.kernel_w {
                            let Some((iy, ix)) = tap(s, oy, ox, ky, kx) else {
                                continue;
                            };
                            for c in 0..s.in_c {
                                let xv = x[((n * s.in_h + iy) * s.in_w + ix) * s.in_c + c] as f64;
                                let wv =
                                    w[((ky * s.kernel_w + kx) * s.in_c + c) * s.out_c + o] as f64;
                                sum += xv * wv;
                                abs += (xv * wv).abs();
                            }
                        }
                    }
                    let idx = ((n * oh + oy) * ow + ox) * s.out_c + o;
                    y[idx] = sum;
                    mag[idx] = abs;
                }
            }
        }
    }
    (y, mag)
}

/// Convolution backward in f64 by the definition, from the gradient `dy` of the output before the
/// activation: returns (dx, dw, db), and the magnitudes Σ|terms| of dx and dw for error bounds.
#[allow(clippy::type_complexity)]
pub fn conv2d_backward(
    s: &crate::conv::Conv2d,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
) -> ((Vec<f64>, Vec<f64>), (Vec<f64>, Vec<f64>), Vec<f64>) {
    let (oh, ow) = (s.out_h(), s.out_w());
    let mut dx = vec![0.0; s.input_len()];
    let mut dx_mag = vec![0.0; s.input_len()];
    let mut dw = vec![0.0; s.weight_len()];
    let mut dw_mag = vec![0.0; s.weight_len()];
    let mut db = vec![0.0; s.out_c];
    for n in 0..s.batch {
        for oy in 0..oh {
            for ox in 0..ow {
                for o in 0..s.out_c {
                    let g = dy[((n * oh + oy) * ow + ox) * s.out_c + o] as f64;
                    db[o] += g;
                    for ky in 0..s.kernel_h {
                        for kx in 0..s.kernel_w {
                            let Some((iy, ix)) = tap(s, oy, ox, ky, kx) else {
                                continue;
                            };
                            for c in 0..s.in_c {
                                let xi = ((n * s.in_h + iy) * s.in_w + ix) * s.in_c + c;
                                let wi = ((ky * s.kernel_w + kx) * s.in_c + c) * s.out_c + o;
                                dx[xi] += g * w[wi] as f64;
                                dx_mag[xi] += (g * w[wi] as f64).abs();
                                dw[wi] += g * x[xi] as f64;
                                dw_mag[wi] += (g * x[xi] as f64).abs();
                            }
                        }
                    }
                }
            }
        }
    }
    ((dx, dx_mag), (dw, dw_mag), db)
}

/// Max pooling forward by the definition: each window's maximum (NaN if the window holds one).
pub fn max_pool2d(s: &crate::pool::Pool2d, x: &[f32]) -> Vec<f32> {
    pool_by_definition(s, x, |vals| {
        if vals.iter().any(|v| v.is_nan()) {
            f32::NAN
        } else {
            vals.iter().copied().fold(f32::NEG_INFINITY, f32::max)
        }
    })
}

/// Average pooling forward by the definition, in f64: the mean over window positions inside
/// the input.
pub fn avg_pool2d(s: &crate::pool::Pool2d, x: &[f32]) -> Vec<f32> {
    pool_by_definition(s, x, |vals| {
        (vals.iter().map(|&v| v as f64).sum::<f64>() / vals.len() as f64) as f32
    })
}

fn pool_by_definition(s: &crate::pool::Pool2d, x: &[f32], f: impl Fn(&[f32]) -> f32) -> Vec<f32> {
    use crate::conv::padding_before;
    let (oh, ow) = (s.out_h(), s.out_w());
    let pt = padding_before(s.in_h, s.pool_h, s.stride_h, s.padding) as isize;
    let pl = padding_before(s.in_w, s.pool_w, s.stride_w, s.padding) as isize;
    let mut y = Vec::with_capacity(s.output_len());
    for n in 0..s.batch {
        for oy in 0..oh {
            for ox in 0..ow {
                for c in 0..s.channels {
                    let mut vals = vec![];
                    for py in 0..s.pool_h {
                        for px in 0..s.pool_w {
                            let iy = (oy * s.stride_h + py) as isize - pt;
                            let ix = (ox * s.stride_w + px) as isize - pl;
                            if iy >= 0 && ix >= 0 && iy < s.in_h as isize && ix < s.in_w as isize {
                                let (iy, ix) = (iy as usize, ix as usize);
                                vals.push(x[((n * s.in_h + iy) * s.in_w + ix) * s.channels + c]);
                            }
                        }
                    }
                    y.push(f(&vals));
                }
            }
        }
    }
    y
}

/// The tests' and benchmarks' value generator: splitmix64, so that one seed fixes every value
/// (a proptest case, a benchmark's data) on every machine.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [-1, 1), on a grid of 2⁻²³.
    pub fn value(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    /// `n` values of [`Rng::value`].
    pub fn fill(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.value()).collect()
    }
}

/// `act(x)` in f64, by the definition.
pub fn activation(act: crate::Activation, x: f64) -> f64 {
    match act {
        crate::Activation::Identity => x,
        crate::Activation::Relu => x.max(0.0),
        crate::Activation::Sigmoid => 1.0 / (1.0 + (-x).exp()),
        crate::Activation::Tanh => x.tanh(),
    }
}

/// One way a product can run here, for tests that force each in turn: an instruction set with our
/// own driver, or the OpenBLAS backend (with the best instruction set for what is not a product).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Path {
    pub isa: crate::Isa,
    pub backend: crate::Backend,
}

impl Path {
    /// Every path this machine and build can run: each available instruction set on our driver,
    /// then OpenBLAS where the `openblas` feature is on.
    pub fn all() -> Vec<Path> {
        let native = crate::Isa::available().into_iter().map(|isa| Path {
            isa,
            backend: crate::Backend::Native,
        });
        let openblas = crate::Backend::OpenBlas.is_available().then(|| Path {
            isa: crate::Isa::best(),
            backend: crate::Backend::OpenBlas,
        });
        native.chain(openblas).collect()
    }

    /// The paths for tests of large shapes (several cache blocks, whole training layers):
    /// [`Path::all`], except under emulation (`KERNELS_EMULATED` set: the AArch64 tests under
    /// user-mode QEMU, where these tests took most of the run's 7 minutes), where the portable
    /// scalar path is left out: it is the same source as on x86-64, whose native runs test it
    /// on these shapes. The instruction-set paths of the emulated target stay.
    pub fn for_large_cases() -> Vec<Path> {
        let emulated = std::env::var_os("KERNELS_EMULATED").is_some();
        Self::all()
            .into_iter()
            .filter(|p| {
                !(emulated && p.isa == crate::Isa::Scalar && p.backend == crate::Backend::Native)
            })
            .collect()
    }

    /// Options that force this path (threads: the default).
    pub fn opts(self) -> crate::ExecOptions {
        crate::ExecOptions {
            isa: Some(self.isa),
            backend: Some(self.backend),
            ..Default::default()
        }
    }
}

impl std::fmt::Display for Path {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.backend {
            crate::Backend::Native => write!(f, "{}", self.isa),
            backend => write!(f, "{backend} ({})", self.isa),
        }
    }
}
