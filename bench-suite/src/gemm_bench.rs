//! The GEMM comparison: shapes, libraries, and one interleaved measurement of all of them.

use bench_peers as peers;
use kernels::{
    gemm_with, Backend, ExecOptions, GemmPlan, Isa, MatLayout, MatMut, MatRef, Threading,
};
use serde::{Deserialize, Serialize};

use crate::timing::{calls_per_sample, estimate_secs, median, sample_secs, settle};

/// A product C (m×n) = A (m×k) · B (k×n), C row-major; A and B row-major too unless stored
/// transposed (`a_t`: A held as its k×m transpose, read by columns; `b_t`: B held as n×k).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Shape {
    pub m: usize,
    pub k: usize,
    pub n: usize,
    /// A stored k×m (row-major) and read transposed. Absent in older reports: false.
    #[serde(default)]
    pub a_t: bool,
    /// B stored n×k (row-major) and read transposed. Absent in older reports: false.
    #[serde(default)]
    pub b_t: bool,
}

impl Shape {
    /// `m × k × n`, both operands row-major.
    pub const fn new(m: usize, k: usize, n: usize) -> Shape {
        Shape {
            m,
            k,
            n,
            a_t: false,
            b_t: false,
        }
    }
    pub fn flops(&self) -> f64 {
        2.0 * self.m as f64 * self.k as f64 * self.n as f64
    }
    /// `MxKxN`, with `:at`, `:bt` or `:atbt` for operands stored transposed.
    pub fn label(&self) -> String {
        let layout = match (self.a_t, self.b_t) {
            (false, false) => "",
            (true, false) => ":at",
            (false, true) => ":bt",
            (true, true) => ":atbt",
        };
        format!("{}x{}x{}{layout}", self.m, self.k, self.n)
    }
    /// The shape a [`Shape::label`] names: `MxKxN` of sizes above 0, with `:at`, `:bt` or
    /// `:atbt` for operands stored transposed; `None` for anything else.
    pub fn parse_label(label: &str) -> Option<Shape> {
        let (dims, layout) = match label.split_once(':') {
            Some((dims, layout)) => (dims, Some(layout)),
            None => (label, None),
        };
        let (a_t, b_t) = match layout {
            None => (false, false),
            Some("at") => (true, false),
            Some("bt") => (false, true),
            Some("atbt") => (true, true),
            Some(_) => return None,
        };
        let dims: Vec<usize> = dims
            .split('x')
            .map(str::parse)
            .collect::<Result<_, _>>()
            .ok()?;
        match dims[..] {
            [m, k, n] if m > 0 && k > 0 && n > 0 => Some(Shape {
                a_t,
                b_t,
                ..Shape::new(m, k, n)
            }),
            _ => None,
        }
    }
    /// Both operands row-major.
    pub fn is_plain(&self) -> bool {
        !self.a_t && !self.b_t
    }
    /// A one-row or one-column product, bound by memory bandwidth.
    pub fn is_vector(&self) -> bool {
        (self.m == 1 || self.n == 1) && self.m.max(self.n) > 1
    }
    /// Bytes of A and B, each read once.
    pub fn bytes(&self) -> f64 {
        4.0 * (self.m * self.k + self.k * self.n) as f64
    }
    /// A (m×k) over `data` (m·k floats) as this shape stores it.
    pub fn a_view<'a>(&self, data: &'a [f32]) -> MatRef<'a> {
        stored(data, self.m, self.k, self.a_t)
    }
    /// B (k×n) over `data` (k·n floats) as this shape stores it.
    pub fn b_view<'a>(&self, data: &'a [f32]) -> MatRef<'a> {
        stored(data, self.k, self.n, self.b_t)
    }
}

/// A `rows × cols` operand over `data`: row-major, or held as its `cols × rows` transpose.
fn stored(data: &[f32], rows: usize, cols: usize, transposed: bool) -> MatRef<'_> {
    if transposed {
        MatRef::row_major(data, cols, rows, rows).t()
    } else {
        MatRef::row_major(data, rows, cols, cols)
    }
}

/// The square sizes of the GEMM issue.
pub const SQUARE_SIZES: [usize; 6] = [64, 128, 256, 512, 1024, 2048];

/// The training-step shapes (M, K, N) of the GEMM issue: Dense 784→128 at batch 32 (forward and
/// both backward products), Dense 784→512 at batch 128, im2col Conv2D 3×3×1→32 on 26×26 at batch
/// 32, Dense 5408→128 at batch 32.
pub const TRAINING_SHAPES: [(usize, usize, usize); 12] = [
    (32, 784, 128),
    (784, 32, 128),
    (32, 128, 784),
    (128, 784, 512),
    (784, 128, 512),
    (128, 512, 784),
    (21632, 9, 32),
    (9, 21632, 32),
    (21632, 32, 9),
    (32, 5408, 128),
    (5408, 32, 128),
    (32, 128, 5408),
];

/// Small products (every side at most 64, beside 64³ among the squares), where code generated
/// per shape (LIBXSMM) is the peer to beat; odd sizes on purpose.
pub const SMALL_SHAPES: [(usize, usize, usize); 4] =
    [(16, 16, 16), (32, 32, 32), (48, 48, 48), (13, 27, 40)];

/// One-column and one-row products (matrix–vector, (M, K, N) = (m, k, 1) and (1, k, n)): the
/// matrix (64 MiB) far larger than the caches, so the memory's speed is the limit.
pub const VECTOR_SHAPES: [(usize, usize, usize); 2] = [(4096, 4096, 1), (1, 4096, 4096)];

/// Products with an operand stored transposed, as frameworks call them (M, K, N, A transposed,
/// B transposed): a linear layer's weights kept output × input (PyTorch's layout; the forward
/// product of Dense 784→128 at batch 32 reads them transposed), the weight gradients xᵀ·g of
/// Dense 784→128 and 5408→128 (the batch of inputs read by columns), the input gradients g·Wᵀ of
/// the same layers with W kept input × output, and 1024³ with either operand transposed.
pub const TRANSPOSED_SHAPES: [(usize, usize, usize, bool, bool); 7] = [
    (32, 784, 128, false, true),
    (784, 32, 128, true, false),
    (32, 128, 784, false, true),
    (5408, 32, 128, true, false),
    (32, 128, 5408, false, true),
    (1024, 1024, 1024, true, false),
    (1024, 1024, 1024, false, true),
];

/// Every benchmarked shape: the squares, the training shapes, the small and the vector ones,
/// then the transposed layouts.
pub fn all_shapes() -> Vec<Shape> {
    SQUARE_SIZES
        .iter()
        .map(|&s| Shape::new(s, s, s))
        .chain(
            TRAINING_SHAPES
                .iter()
                .chain(&SMALL_SHAPES)
                .chain(&VECTOR_SHAPES)
                .map(|&(m, k, n)| Shape::new(m, k, n)),
        )
        .chain(TRANSPOSED_SHAPES.iter().map(|&(m, k, n, a_t, b_t)| Shape {
            a_t,
            b_t,
            ..Shape::new(m, k, n)
        }))
        .collect()
}

/// A GEMM implementation under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Library {
    /// Our GEMM with a forced instruction-set path.
    Ours(Isa),
    /// Our GEMM on the best path through a [`kernels::GemmPlan`] made once per shape, as
    /// LIBXSMM's kernels are dispatched once: on LIBXSMM's shapes, beside it. Not a peer.
    OursPlanned,
    /// The system OpenBLAS, through our OpenBLAS backend.
    OpenBlas,
    MatrixMultiply,
    GemmCrate,
    /// BLIS, loaded at run time when the system has it.
    Blis,
    /// LIBXSMM, linked when the build found it; small products only.
    Libxsmm,
}

impl Library {
    pub fn name(&self) -> String {
        match self {
            Library::OpenBlas => "openblas".into(),
            Library::Ours(isa) => format!("ours-{isa}"),
            Library::OursPlanned => OURS_PLANNED.into(),
            Library::MatrixMultiply => "matrixmultiply".into(),
            Library::GemmCrate => "gemm-crate".into(),
            Library::Blis => "blis".into(),
            Library::Libxsmm => "libxsmm".into(),
        }
    }

    /// Whether this library is measured on `shape`: LIBXSMM (and our planned products beside
    /// it) on row-major products of at most 64 on every side (what it generates code for),
    /// every other library on every shape.
    pub fn serves(&self, shape: Shape) -> bool {
        match self {
            Library::Libxsmm | Library::OursPlanned => {
                shape.is_plain() && shape.m.max(shape.k).max(shape.n) <= 64
            }
            _ => true,
        }
    }

    /// Every library this machine can run, ours first.
    pub fn available() -> Vec<Library> {
        let mut libs: Vec<Library> = [Isa::Avx512, Isa::Avx2, Isa::Neon, Isa::Scalar]
            .into_iter()
            .filter(|isa| isa.is_available())
            .map(Library::Ours)
            .collect();
        // After every forced path: the first library is our best path (the FMA peak is timed
        // right after it).
        if peers::Libxsmm::get().is_ok() {
            libs.push(Library::OursPlanned);
        }
        if Backend::OpenBlas.is_available() {
            libs.push(Library::OpenBlas);
        }
        libs.push(Library::MatrixMultiply);
        libs.push(Library::GemmCrate);
        if peers::Blis::get().is_ok() {
            libs.push(Library::Blis);
        }
        if peers::Libxsmm::get().is_ok() {
            libs.push(Library::Libxsmm);
        }
        libs
    }

    /// C ← A·B on `threads` threads. The caller runs this on a thread outside any rayon pool, in
    /// a process whose rayon, OpenBLAS and matrixmultiply pools have `threads` threads.
    pub fn run(&self, a: MatRef<'_>, b: MatRef<'_>, c: MatMut<'_>, threads: usize) {
        let threading = if threads > 1 {
            Threading::Rayon
        } else {
            Threading::Single
        };
        let result = match *self {
            Library::Ours(isa) => gemm_with(
                &ExecOptions {
                    threading,
                    ..ExecOptions::with_isa(isa)
                },
                1.0,
                a,
                b,
                0.0,
                c,
            ),
            Library::OursPlanned => run_planned(a, b, c, threading),
            Library::OpenBlas => gemm_with(
                &ExecOptions {
                    threading,
                    ..ExecOptions::with_backend(Backend::OpenBlas)
                },
                1.0,
                a,
                b,
                0.0,
                c,
            ),
            Library::MatrixMultiply => peers::matrixmultiply_gemm(1.0, a, b, 0.0, c),
            Library::GemmCrate => peers::gemm_crate_gemm(1.0, a, b, 0.0, c, threads),
            Library::Blis => match peers::Blis::get() {
                Ok(blis) => blis.gemm(1.0, a, b, 0.0, c, threads),
                Err(e) => panic!("{e}"),
            },
            Library::Libxsmm => match peers::Libxsmm::get() {
                Ok(xsmm) => xsmm.gemm(1.0, a, b, 0.0, c),
                Err(e) => panic!("{e}"),
            },
        };
        result.unwrap_or_else(|e| panic!("{}: {e}", self.name()));
    }
}

/// The name of [`Library::OursPlanned`]'s figures.
pub const OURS_PLANNED: &str = "ours-planned";

/// C ← A·B through a plan made at the first call for these layouts and kept per thread (the
/// last one), so a loop over one shape plans once: as [`peers::Libxsmm`] keeps its kernel.
fn run_planned(
    a: MatRef<'_>,
    b: MatRef<'_>,
    mut c: MatMut<'_>,
    threading: Threading,
) -> kernels::Result<()> {
    type Key = ([MatLayout; 3], Threading);
    thread_local! {
        static LAST: std::cell::RefCell<Option<(Key, GemmPlan)>> =
            const { std::cell::RefCell::new(None) };
    }
    let key = ([a.layout(), b.layout(), c.layout()], threading);
    LAST.with_borrow_mut(|last| {
        let plan = match last {
            Some((planned, plan)) if *planned == key => plan,
            _ => {
                let opts = ExecOptions {
                    threading,
                    ..ExecOptions::with_isa(Isa::best())
                };
                let plan = GemmPlan::new(&opts, 1.0, key.0[0], key.0[1], 0.0, key.0[2])?;
                &mut last.insert((key, plan)).1
            }
        };
        plan.run(a.data(), b.data(), c.data_mut())
    })
}

/// The name under which one-row and one-column products also time only reading their A and B
/// ([`crate::machine::read_secs`]), interleaved with the libraries: their limit, as GFLOP/s
/// of the product, from whichever cache or memory holds the matrix. Not a peer.
pub const READ_OPERANDS: &str = "reading A and B";

/// The name under which every shape also times the FMA peak loop (`bench_peers::peak`, our best
/// path's instruction set, the same threads) once per round, right after our best path: the
/// peak that shape's fraction of peak divides by, measured in the same rounds (a VM whose speed
/// swings by half within minutes put a run-wide best peak against figures taken in its slow
/// moments). Not a peer.
pub const FMA_PEAK: &str = "FMA peak";

/// One library's figure for one shape.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Measurement {
    pub library: String,
    pub shape: Shape,
    pub threads: usize,
    pub gflops_median: f64,
    pub samples: usize,
    /// max |C − C_openblas| / max |C_openblas| for this library's result.
    pub max_rel_diff_vs_openblas: f64,
}

/// Deterministic values in [-1, 1): the benchmarks' data, from the tests' generator.
pub fn filled(len: usize, seed: u64) -> Vec<f32> {
    kernels::reference::Rng::new(seed).fill(len)
}

/// The pause before each multi-threaded sample, for the previous library's idle threads to stop
/// spinning and give their cores back: at least `SETTLE_MIN`, then until the process's other
/// threads are idle ([`crate::timing::settle`]), at most `SETTLE_MAX`.
const SETTLE_MIN: std::time::Duration = std::time::Duration::from_millis(50);
const SETTLE_MAX: std::time::Duration = std::time::Duration::from_millis(500);

/// Measures every library on `shape`, interleaved: each of `rounds` rounds takes one sample of
/// every library in turn, so drift on a shared machine hits them alike.
pub fn measure_shape(
    libs: &[Library],
    shape: Shape,
    threads: usize,
    rounds: usize,
) -> Vec<Measurement> {
    let libs: Vec<Library> = libs.iter().copied().filter(|l| l.serves(shape)).collect();
    let libs = &libs[..];
    let Shape { m, k, n, .. } = shape;
    let a = filled(m * k, 1);
    let b = filled(k * n, 2);
    let mut outputs: Vec<Vec<f32>> = vec![vec![0.0; m * n]; libs.len()];
    let av = shape.a_view(&a);
    let bv = shape.b_view(&b);
    let calls: Vec<usize> = libs
        .iter()
        .zip(outputs.iter_mut())
        .map(|(lib, out)| {
            let secs =
                estimate_secs(&mut || lib.run(av, bv, MatMut::row_major(out, m, n, n), threads));
            calls_per_sample(secs, 0.03)
        })
        .collect();
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); libs.len()];
    // A vector product reads its matrix once: reading A and B alone, on the same threads and
    // from the same buffers, is its limit (a 64 MiB matrix stays in a 480 MiB L3 between calls,
    // where the triad's 384 MiB reach memory).
    let operands: [&[f32]; 2] = [&a, &b];
    let read = |passes| crate::machine::read_secs(&operands, threads, passes);
    let read_calls = shape.is_vector().then(|| {
        read(1);
        calls_per_sample(read(2), 0.03)
    });
    let mut read_samples = Vec::new();
    let peak_isa = Isa::best();
    let mut peak_samples = Vec::new();
    for _ in 0..rounds {
        for (i, lib) in libs.iter().enumerate() {
            // Libraries whose threads spin between calls (OpenBLAS's, BLIS's, our helper team)
            // would otherwise still hold the second core while the next library is timed: in
            // one run our 2-thread 128×784×512 came out at one thread's speed, behind our own
            // AVX2 path, right after the previous round's peers.
            let out = &mut outputs[i];
            let mut call = || lib.run(av, bv, MatMut::row_major(out, m, n, n), threads);
            if threads > 1 {
                settle(SETTLE_MIN, SETTLE_MAX);
                // The pause leaves both cores idle, and on these VMs an idle core comes back
                // slowly: a 2-thread 256³ right after a 50 ms sleep ran at 78–121 GFLOP/s
                // (medians of 15 samples of 30 ms), back to back at 104–174. A quarter of a
                // sample's calls, untimed, brings the cores up before the timed ones.
                sample_secs(&mut call, calls[i].div_ceil(4));
            }
            let secs = sample_secs(&mut call, calls[i]);
            samples[i].push(shape.flops() / secs / 1e9);
            // Reading A and B, and the FMA peak, right after our best path, the cores as warm
            // as it left them.
            if let (0, Some(calls)) = (i, read_calls) {
                read(calls.div_ceil(4));
                read_samples.push(shape.flops() / read(calls) / 1e9);
            }
            if i == 0 {
                if let Ok(p) = peers::peak::fma_peak_gflops(peak_isa, threads, 1) {
                    peak_samples.push(p);
                }
            }
        }
    }
    let reference = libs
        .iter()
        .position(|l| *l == Library::OpenBlas)
        .map(|i| outputs[i].clone());
    libs.iter()
        .enumerate()
        .map(|(i, lib)| {
            let diff = reference.as_ref().map_or(f64::NAN, |r| {
                let scale = r
                    .iter()
                    .fold(0.0f64, |s, &x| s.max((x as f64).abs()))
                    .max(f64::MIN_POSITIVE);
                let worst = r
                    .iter()
                    .zip(&outputs[i])
                    .fold(0.0f64, |s, (&x, &y)| s.max((x as f64 - y as f64).abs()));
                worst / scale
            });
            Measurement {
                library: lib.name(),
                shape,
                threads,
                gflops_median: median(&mut samples[i].clone()),
                samples: samples[i].len(),
                max_rel_diff_vs_openblas: diff,
            }
        })
        .chain(
            [(READ_OPERANDS, read_samples), (FMA_PEAK, peak_samples)]
                .into_iter()
                .filter(|(_, samples)| !samples.is_empty())
                .map(|(library, mut samples)| Measurement {
                    library: library.into(),
                    shape,
                    threads,
                    gflops_median: median(&mut samples),
                    samples: samples.len(),
                    // They compute no C.
                    max_rel_diff_vs_openblas: 0.0,
                }),
        )
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transposed_layout_reads_the_same_matrix() {
        let a_rows: Vec<f32> = (0..6).map(|x| x as f32).collect(); // A = [[0 1 2] [3 4 5]]
        let a_cols = [0.0, 3.0, 1.0, 4.0, 2.0, 5.0]; // the same A stored 3 × 2
        let plain = Shape::new(2, 3, 4);
        let at = Shape { a_t: true, ..plain };
        let bt = Shape { b_t: true, ..plain };
        assert_eq!(
            (plain.label(), at.label(), bt.label()),
            ("2x3x4".into(), "2x3x4:at".into(), "2x3x4:bt".into())
        );
        let element =
            |v: MatRef<'_>, i: usize, p: usize| v.data()[i * v.row_stride() + p * v.col_stride()];
        let (x, y) = (plain.a_view(&a_rows), at.a_view(&a_cols));
        assert_eq!((y.rows(), y.cols()), (2, 3));
        for i in 0..2 {
            for p in 0..3 {
                assert_eq!(element(x, i, p), element(y, i, p));
            }
        }
        let b: Vec<f32> = (0..12).map(|x| x as f32).collect();
        let v = bt.b_view(&b);
        assert_eq!((v.rows(), v.cols()), (3, 4));
        // B stored 4 × 3: element (p, j) of B is element (j, p) of the stored matrix.
        assert_eq!(element(v, 2, 1), b[3 + 2]);
        assert!(!Library::Libxsmm.serves(at) && Library::Libxsmm.serves(plain));
    }

    #[test]
    fn labels_parse_back_to_their_shapes() {
        let plain = Shape::new(32, 784, 128);
        for (a_t, b_t) in [(false, false), (true, false), (false, true), (true, true)] {
            let shape = Shape { a_t, b_t, ..plain };
            assert_eq!(Shape::parse_label(&shape.label()), Some(shape));
        }
        for bad in [
            "32x784",
            "32x784x128x2",
            "0x784x128",
            "32x-1x128",
            "32x784x128:ct",
            "32x784x128:",
            "axbxc",
            "",
        ] {
            assert_eq!(Shape::parse_label(bad), None, "{bad:?}");
        }
    }
}
