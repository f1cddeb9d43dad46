//! What the workspace's end-to-end tests share: scratch directories, small models, crafted
//! model and IDX files, and the process's peak memory.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use nn::prelude::*;

/// A fresh directory for one test (removed by [`Scratch`]'s drop).
pub struct Scratch(PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        let d = std::env::temp_dir().join(format!("workspace-tests-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Scratch(d)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
    /// The names of the directory's entries, sorted.
    pub fn entries(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A small CNN (Conv2D, MaxPooling2D, Flatten, Dense) on 8 × 8 × 1 images, 3 classes, compiled.
pub fn small_cnn(seed: u64) -> Sequential {
    let mut m = Sequential::new()
        .input_shape(&[8, 8, 1])
        .seed(seed)
        .add(Conv2D::new(4, (3, 3), Act::Relu))
        .add(MaxPooling2D::new((2, 2)))
        .add(Flatten::new())
        .add(Dense::new(3, Act::Softmax));
    m.compile(
        Optimizer::adam(),
        Loss::sparse_categorical_crossentropy(),
        &[Metric::Accuracy],
    )
    .unwrap();
    m
}

/// Loads `path` as a model — and, whatever it holds, its weights into [`small_cnn`]'s — as the
/// fuzzers do: a model that loads must predict on zeros of its input shape (when that is at most
/// 65 536 values a sample). Returns whether the model loaded. Never panics on any file.
pub fn exercise_model_file(path: &Path) -> bool {
    let loaded = Sequential::load(path);
    let ok = loaded.is_ok();
    if let Ok(mut m) = loaded {
        let shape = m.get_input_shape().unwrap().to_vec();
        let per: usize = shape.iter().product();
        if per <= 1 << 16 {
            let mut full = vec![2];
            full.extend(&shape);
            let x = Tensor::from_vec(vec![0.0; 2 * per], &full).unwrap();
            let _ = m.predict(&x, 2);
        }
    }
    let _ = small_cnn(0).load_weights(path);
    ok
}

/// `n` deterministic 8 × 8 × 1 images and their labels (0..3).
pub fn images(n: usize) -> (Tensor, Tensor) {
    let x: Vec<f32> = (0..n * 64)
        .map(|i| ((i * 7919) % 257) as f32 / 256.0)
        .collect();
    let y: Vec<f32> = (0..n).map(|i| (i % 3) as f32).collect();
    (
        Tensor::from_vec(x, &[n, 8, 8, 1]).unwrap(),
        Tensor::from_vec(y, &[n]).unwrap(),
    )
}

/// The model's predictions on [`images`] (the bits, to compare exactly).
pub fn predictions(m: &mut Sequential) -> Vec<u32> {
    let (x, _) = images(5);
    m.predict(&x, 5)
        .unwrap()
        .data()
        .iter()
        .map(|v| v.to_bits())
        .collect()
}

/// A tensor as a file holds it: name, shape, little-endian f32 bytes.
pub type RawTensor = (String, Vec<usize>, Vec<u8>);

/// The tensors and metadata of the safetensors file `bytes`.
pub fn tensors_and_metadata(bytes: &[u8]) -> (Vec<RawTensor>, HashMap<String, String>) {
    let st = safetensors::SafeTensors::deserialize(bytes).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(bytes).unwrap();
    let tensors = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, v.shape().to_vec(), v.data().to_vec()))
        .collect();
    (tensors, meta.metadata().clone().unwrap_or_default())
}

/// A safetensors file of `tensors` (f32) with `metadata`, as another tool would write it.
pub fn safetensors_file(tensors: &[RawTensor], metadata: HashMap<String, String>) -> Vec<u8> {
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(n, s, d)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), d)
                    .unwrap(),
            )
        })
        .collect();
    safetensors::serialize(views, Some(metadata)).unwrap()
}

/// An uncompressed IDX file of unsigned bytes.
pub fn idx_file(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut b = vec![0, 0, 8, dims.len() as u8];
    for d in dims {
        b.extend_from_slice(&d.to_be_bytes());
    }
    b.extend_from_slice(data);
    b
}

/// `bytes` gzip-compressed as one member.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(vec![], flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// The process's peak resident memory so far, in bytes (Linux's VmHWM).
pub fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("VmHWM in /proc/self/status");
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

/// Resets the peak that [`peak_rss`] reports to the present resident size (Linux's
/// `clear_refs`), so that a later peak measures what came after.
pub fn reset_peak_rss() {
    std::fs::write("/proc/self/clear_refs", "5").expect("writing /proc/self/clear_refs");
}

/// Runs this test binary again with only the test `name` (an ignored one) and the environment
/// `env`; returns its exit status and what it printed.
pub fn run_child_test(name: &str, env: &[(&str, &str)]) -> (std::process::ExitStatus, String) {
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        name,
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status, text)
}
