//! MNIST-format data sets: `mnist::load_data()` and `fashion_mnist::load_data()`, as Keras's,
//! reading the four IDX files (gzip or raw) from an explicit directory (`load_data_from`), an
//! environment variable, or the default locations. A missing file is an error listing where it
//! looked and how to get the data; a truncated or corrupt file an error naming the file and the
//! sizes; MNIST's files are checked against their canonical SHA-256. A directory chosen
//! explicitly (the argument, or the data set's environment variable) that lacks the files is an
//! error naming it — never silently replaced by another location's files.

pub mod idx;

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// Images as stored: `count × rows × cols` bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Images {
    pub count: usize,
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<u8>,
}

impl Images {
    /// `[count, rows, cols, 1]` scaled to [0, 1] (Keras programs' `x / 255.0`, channels last);
    /// an error if the fields do not describe `data` (they are public).
    pub fn to_tensor(&self) -> Result<Tensor> {
        Tensor::from_u8(
            &self.data,
            &[self.count, self.rows, self.cols, 1],
            1.0 / 255.0,
        )
    }
    /// `[count, rows·cols]` scaled to [0, 1] (`reshape(-1, 784) / 255.0`).
    pub fn to_flat_tensor(&self) -> Result<Tensor> {
        let per = self
            .rows
            .checked_mul(self.cols)
            .ok_or_else(|| Error::TooLarge {
                what: "an image".into(),
                shape: vec![self.rows, self.cols],
            })?;
        Tensor::from_u8(&self.data, &[self.count, per], 1.0 / 255.0)
    }
}

/// `((x_train, y_train), (x_test, y_test))`, as Keras's `load_data()`.
pub type Split = ((Images, Vec<u8>), (Images, Vec<u8>));

/// The four files of a data set.
pub(crate) const FILES: [&str; 4] = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
];

/// A data set's name, where to look for it, and (for MNIST) the SHA-256 of each decompressed file.
pub(crate) struct Source {
    pub name: &'static str,
    pub env_var: &'static str,
    pub defaults: &'static [&'static str],
    pub sha256: Option<[&'static str; 4]>,
    pub how_to_get: &'static str,
}

/// The file `name` in `dir`, compressed or not.
fn find_file(dir: &Path, name: &str) -> Option<PathBuf> {
    [format!("{name}.gz"), name.to_string()]
        .into_iter()
        .map(|f| dir.join(f))
        .find(|p| p.is_file())
}

/// The directories searched, in order, when none was chosen explicitly.
fn candidates(src: &Source) -> Vec<PathBuf> {
    let mut dirs = vec![];
    if let Some(d) = std::env::var_os("NN_DATA_DIR") {
        dirs.push(PathBuf::from(d).join(src.name));
    }
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".keras/datasets").join(src.name));
    }
    dirs.extend(src.defaults.iter().map(PathBuf::from));
    dirs
}

pub(crate) fn load(src: &Source, dir: Option<&Path>) -> Result<Split> {
    let explicit = std::env::var_os(src.env_var).map(PathBuf::from);
    let dir = match (dir, explicit) {
        (Some(d), _) => d.to_path_buf(),
        (None, Some(d)) => {
            if let Some(f) = FILES.iter().find(|f| find_file(&d, f).is_none()) {
                return Err(Error::file(
                    &d,
                    format!(
                        "{} names this directory for {}, but it has no {f} (nor {f}.gz); \
                         unset it to search the default locations",
                        src.env_var, src.name
                    ),
                ));
            }
            d
        }
        (None, None) => {
            let dirs = candidates(src);
            dirs.iter()
                .find(|d| FILES.iter().all(|f| find_file(d, f).is_some()))
                .cloned()
                .ok_or_else(|| {
                    let looked: Vec<String> =
                        dirs.iter().map(|d| format!("  {}", d.display())).collect();
                    Error::File {
                        path: PathBuf::from(src.name),
                        reason: format!(
                            "the {} files ({}, gzip or raw) were not found in any of:\n{}\n\
                             Set {} to their directory, or {}",
                            src.name,
                            FILES.join(", "),
                            looked.join("\n"),
                            src.env_var,
                            src.how_to_get
                        ),
                    }
                })?
        }
    };
    let mut parts = vec![];
    for (i, f) in FILES.iter().enumerate() {
        let path = find_file(&dir, f).ok_or_else(|| {
            Error::file(
                &dir.join(f),
                format!("missing (neither {f} nor {f}.gz); {}", src.how_to_get),
            )
        })?;
        let part = idx::read(&path, if i % 2 == 0 { 3 } else { 1 })?;
        if let Some(hashes) = &src.sha256 {
            let got = hex(&part.sha256());
            if got != hashes[i] {
                return Err(Error::file(
                    &path,
                    format!(
                        "SHA-256 {got} is not the canonical {} (corrupt or not {})",
                        hashes[i], src.name
                    ),
                ));
            }
        }
        parts.push(part);
    }
    let mut it = parts.into_iter();
    let mut pair = |images_name: &str| -> Result<(Images, Vec<u8>)> {
        let im = it.next().expect("four parts");
        let lb = it.next().expect("four parts");
        if im.dims[0] != lb.dims[0] {
            return Err(Error::file(
                &dir.join(images_name),
                format!("{} images but {} labels", im.dims[0], lb.dims[0]),
            ));
        }
        Ok((
            Images {
                count: im.dims[0],
                rows: im.dims[1],
                cols: im.dims[2],
                data: im.data,
            },
            lb.data,
        ))
    };
    let train = pair(FILES[0])?;
    let test = pair(FILES[2])?;
    Ok((train, test))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Downloads the four files of `src` from `base_url` with `curl` into `dir` (atomically), and
/// checks each against its SHA-256 before keeping it.
pub(crate) fn download(src: &Source, base_url: &str, dir: &Path) -> Result<()> {
    let hashes = src.sha256.ok_or_else(|| Error::Misuse {
        call: format!("downloading {}", src.name),
        reason: "is refused: there are no checksums to verify the files against".into(),
    })?;
    std::fs::create_dir_all(dir).map_err(Error::io(dir))?;
    for (i, (f, want)) in FILES.iter().zip(hashes).enumerate() {
        let target = dir.join(format!("{f}.gz"));
        let tmp = dir.join(format!(".{f}.gz.{}.download", std::process::id()));
        let url = format!("{base_url}/{f}.gz");
        let status = std::process::Command::new("curl")
            .args(["-fsSL", "-o"])
            .arg(&tmp)
            .arg(&url)
            .status()
            .map_err(|e| Error::file(&target, format!("could not run curl to fetch {url}: {e}")))?;
        if !status.success() {
            let _ = std::fs::remove_file(&tmp);
            return Err(Error::file(
                &target,
                format!("curl failed ({status}) fetching {url}"),
            ));
        }
        let got = idx::read(&tmp, if i % 2 == 0 { 3 } else { 1 })
            .map(|part| hex(&part.sha256()))
            .inspect_err(|_| {
                let _ = std::fs::remove_file(&tmp);
            })?;
        if got != want {
            let _ = std::fs::remove_file(&tmp);
            return Err(Error::file(
                &target,
                format!("downloaded SHA-256 {got} is not {want}"),
            ));
        }
        std::fs::rename(&tmp, &target).map_err(Error::io(&target))?;
    }
    Ok(())
}

/// MNIST handwritten digits (60 000 + 10 000 images of 28 × 28).
pub mod mnist {
    use super::*;

    pub(crate) const SOURCE: Source = Source {
        name: "mnist",
        env_var: "NN_MNIST_DIR",
        defaults: &[
            "data/mnist",
            "../shared/data/mnist",
            "../../shared/data/mnist",
            "/usr/share/datasets/mnist",
        ],
        sha256: Some([
            "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        ]),
        how_to_get:
            "download them with nn::datasets::mnist::download(dir) (needs network and curl)",
    };

    /// The usual mirror of the original files.
    pub const MIRROR: &str = "https://storage.googleapis.com/cvdf-datasets/mnist";

    /// From `NN_MNIST_DIR`, `$NN_DATA_DIR/mnist`, `~/.keras/datasets/mnist`, `data/mnist`,
    /// `../shared/data/mnist`, `/usr/share/datasets/mnist` — the first that has all four files.
    pub fn load_data() -> Result<Split> {
        load(&SOURCE, None)
    }
    /// From the directory `dir`.
    pub fn load_data_from(dir: impl AsRef<Path>) -> Result<Split> {
        load(&SOURCE, Some(dir.as_ref()))
    }
    /// Fetches the four files from [`MIRROR`] into `dir`, each verified by SHA-256.
    pub fn download(dir: impl AsRef<Path>) -> Result<()> {
        super::download(&SOURCE, MIRROR, dir.as_ref())
    }
}

/// Fashion-MNIST (Zalando; 60 000 + 10 000 images of 28 × 28 clothing items, 10 classes).
pub mod fashion_mnist {
    use super::*;

    pub(crate) const SOURCE: Source = Source {
        name: "fashion-mnist",
        env_var: "NN_FASHION_MNIST_DIR",
        defaults: &["data/fashion-mnist", "/usr/share/datasets/fashion-mnist"],
        sha256: None,
        how_to_get: "install Debian's package: apt-get install dataset-fashion-mnist \
                     (files in /usr/share/datasets/fashion-mnist)",
    };

    /// From `NN_FASHION_MNIST_DIR`, `$NN_DATA_DIR/fashion-mnist`,
    /// `~/.keras/datasets/fashion-mnist`, `data/fashion-mnist`,
    /// `/usr/share/datasets/fashion-mnist` (Debian's `dataset-fashion-mnist`).
    pub fn load_data() -> Result<Split> {
        load(&SOURCE, None)
    }
    /// From the directory `dir`.
    pub fn load_data_from(dir: impl AsRef<Path>) -> Result<Split> {
        load(&SOURCE, Some(dir.as_ref()))
    }
}
