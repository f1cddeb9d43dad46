//! Byte-mutation fuzzing of the two file readers, driven by proptest: model files
//! (`Sequential::load`, `load_weights`) and IDX data files (`idx::read`), each mutated from the
//! committed corpus (`tests/corpus/`) by bit flips, byte writes, insertions, deletions,
//! truncations and numbers in the header's JSON made huge. Whatever the bytes, the reader returns
//! — a model or an error — without a panic, an abort or a hang, and a model it returns predicts.
//! Proptest shrinks any failure to a small input; add it to the corpus, where
//! `the_corpus_loads_without_a_panic` keeps it as a regression test.
//!
//! CI runs `FUZZ_CASES` (default 300) cases per reader; a longer run:
//! `FUZZ_CASES=100000 cargo test --release -p workspace-tests --test fuzz`. The corpus is
//! written by `write_corpus` (ignored; run it to renew the seeds).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nn::datasets::idx;
use nn::prelude::*;
use proptest::prelude::*;
use workspace_tests::*;

fn corpus(kind: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(kind);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no corpus in {}", dir.display());
    files
}

fn cases() -> u32 {
    std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300)
}

/// One change to a file's bytes.
#[derive(Debug, Clone)]
enum Mutation {
    FlipBit(usize, u8),
    SetByte(usize, u8),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    Truncate(usize),
    /// The `n`-th number in the file's text made a large one (sizes, offsets, dimensions).
    HugeNumber(usize, u64),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let huge = prop_oneof![
        Just(0u64),
        Just(1 << 31),
        Just(u32::MAX as u64),
        Just(1 << 40),
        Just(u64::MAX),
        any::<u64>(),
    ];
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(a, b)| Mutation::FlipBit(a, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(a, b)| Mutation::SetByte(a, b)),
        (
            any::<usize>(),
            proptest::collection::vec(any::<u8>(), 1..16)
        )
            .prop_map(|(a, b)| Mutation::Insert(a, b)),
        (any::<usize>(), 1usize..64).prop_map(|(a, n)| Mutation::Delete(a, n)),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), huge).prop_map(|(n, v)| Mutation::HugeNumber(n, v)),
    ]
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    if bytes.is_empty() {
        return;
    }
    let len = bytes.len();
    match m {
        Mutation::FlipBit(at, bit) => bytes[at % len] ^= 1 << bit,
        Mutation::SetByte(at, v) => bytes[at % len] = *v,
        Mutation::Insert(at, v) => {
            let at = at % (len + 1);
            bytes.splice(at..at, v.iter().copied());
        }
        Mutation::Delete(at, n) => {
            let at = at % len;
            bytes.drain(at..(at + n).min(len));
        }
        Mutation::Truncate(at) => bytes.truncate(at % len),
        Mutation::HugeNumber(n, v) => {
            // Runs of ASCII digits (the header's JSON), and the 8-byte little-endian length
            // that starts a safetensors file.
            let mut runs = vec![(0, 0)];
            let mut i = 0;
            while i < len {
                if bytes[i].is_ascii_digit() {
                    let start = i;
                    while i < len && bytes[i].is_ascii_digit() {
                        i += 1;
                    }
                    runs.push((start, i));
                }
                i += 1;
            }
            match runs[n % runs.len()] {
                (0, 0) if len >= 8 => bytes[..8].copy_from_slice(&v.to_le_bytes()),
                (0, 0) => {}
                (s, e) => {
                    bytes.splice(s..e, v.to_string().into_bytes());
                }
            }
        }
    }
}

/// Loads `path` as a model (and its weights into a small model); a model that loads must
/// predict on zeros of its input shape.
fn load_model(path: &Path) -> bool {
    let start = Instant::now();
    let ok = exercise_model_file(path);
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{} took {:?}",
        path.display(),
        start.elapsed()
    );
    ok
}

fn read_idx(path: &Path) -> bool {
    let start = Instant::now();
    let ok = [1, 3].iter().any(|&dims| idx::read(path, dims).is_ok());
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{} took {:?}",
        path.display(),
        start.elapsed()
    );
    ok
}

/// Runs the cases; prints how many of them the reader accepted (the rest were errors).
fn fuzz(kind: &str, read: fn(&Path) -> bool) {
    let seeds: Vec<Vec<u8>> = corpus(kind)
        .iter()
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    let dir = Scratch::new(&format!("fuzz-{kind}"));
    let path = dir.join("case");
    let config = ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let accepted = std::sync::atomic::AtomicUsize::new(0);
    proptest!(config, |(seed in 0..seeds.len(), mutations in proptest::collection::vec(mutation(), 1..6))| {
        let mut bytes = seeds[seed].clone();
        for m in &mutations {
            apply(&mut bytes, m);
        }
        std::fs::write(&path, &bytes).unwrap();
        if read(&path) {
            accepted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    });
    println!(
        "{kind}: {} of {} mutated files accepted, the others refused",
        accepted.into_inner(),
        cases()
    );
}

#[test]
fn fuzz_model_files() {
    fuzz("model", load_model);
}

#[test]
fn fuzz_idx_files() {
    fuzz("idx", read_idx);
}

#[test]
fn the_corpus_loads_without_a_panic() {
    for path in corpus("model") {
        let loaded = load_model(&path);
        assert_eq!(
            loaded,
            !path.to_string_lossy().contains("weights"),
            "{}",
            path.display()
        );
    }
    for path in corpus("idx") {
        let read = read_idx(&path);
        let bad = ["truncated", "long"]
            .iter()
            .any(|b| path.to_string_lossy().contains(b));
        assert_eq!(read, !bad, "{}", path.display());
    }
}

/// Writes the seed corpus: models of every layer kind (whole and weights only, with and without
/// their checksum), and IDX files raw, gzip, of several gzip members, truncated and too long.
#[test]
#[ignore = "run by hand to renew tests/corpus"]
fn write_corpus() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let model_dir = root.join("model");
    std::fs::create_dir_all(&model_dir).unwrap();
    let mut cnn = small_cnn(1);
    cnn.save(model_dir.join("cnn.safetensors")).unwrap();
    cnn.save_weights(model_dir.join("cnn-weights.safetensors"))
        .unwrap();
    let mut mlp = Sequential::new()
        .input_shape(&[6])
        .add(Dense::new(4, Act::Tanh))
        .add(Dropout::new(0.25))
        .add(Activation::new(Act::Sigmoid))
        .add(Dense::new(2, Act::Softmax));
    mlp.build().unwrap();
    mlp.save(model_dir.join("mlp.safetensors")).unwrap();
    // Without their checksums (as other tools write them), mutations reach the architecture's
    // and the tensors' own checks.
    for name in ["mlp", "cnn"] {
        let bytes = std::fs::read(model_dir.join(format!("{name}.safetensors"))).unwrap();
        let (tensors, mut meta) = tensors_and_metadata(&bytes);
        meta.remove("checksum");
        std::fs::write(
            model_dir.join(format!("{name}-no-checksum.safetensors")),
            safetensors_file(&tensors, meta),
        )
        .unwrap();
    }

    let idx_dir = root.join("idx");
    std::fs::create_dir_all(&idx_dir).unwrap();
    let images = idx_file(&[3, 4, 5], &(0..60).collect::<Vec<u8>>());
    let labels = idx_file(&[7], &[0, 1, 2, 3, 4, 5, 6]);
    std::fs::write(idx_dir.join("images-idx3"), &images).unwrap();
    std::fs::write(idx_dir.join("labels-idx1"), &labels).unwrap();
    std::fs::write(idx_dir.join("images-idx3.gz"), gzip(&images)).unwrap();
    let members: Vec<u8> = [&labels[..5], &labels[5..]]
        .iter()
        .flat_map(|p| gzip(p))
        .collect();
    std::fs::write(idx_dir.join("labels-idx1-members.gz"), members).unwrap();
    std::fs::write(idx_dir.join("images-idx3-truncated"), &images[..40]).unwrap();
    let mut long = labels.clone();
    long.extend([9, 9, 9]);
    std::fs::write(idx_dir.join("labels-idx1-long.gz"), gzip(&long)).unwrap();
}
