//! MNIST-format data sets: `mnist::load_data()` and `fashion_mnist::load_data()`, as Keras's,
//! reading the four IDX files (gzip or raw) from an explicit directory (`load_data_from`), an
//! environment variable, or the default locations. A missing file is an error listing where it
//! looked and how to get the data; a truncated or corrupt file an error naming the file and the
//! sizes; MNIST's files are checked against their canonical SHA-256. A directory chosen
//! explicitly (the argument, or the data set's environment variable) that lacks the files is an
//! error naming it — never silently replaced by another location's files.

mod download;
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

    /// [`Images::to_tensor`], consuming the images: their bytes are freed as soon as the tensor
    /// exists. `let x = x.to_tensor()?` shadows the images but keeps them alive to the end of the
    /// scope — MNIST's 55 MB beside its 220 MB of floats through the whole of training, where
    /// Keras's `x = x / 255.0` lets the bytes go.
    pub fn into_tensor(self) -> Result<Tensor> {
        self.to_tensor()
    }

    /// [`Images::to_flat_tensor`], consuming the images (see [`Images::into_tensor`]).
    pub fn into_flat_tensor(self) -> Result<Tensor> {
        self.to_flat_tensor()
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

/// A data set's name, where to look for it, where to download it from, and the SHA-256 of each
/// decompressed file.
pub(crate) struct Source {
    pub name: &'static str,
    /// Names the data set's directory explicitly (nothing else is searched).
    pub env_var: &'static str,
    /// System directories searched after the caches (Debian's packages).
    pub defaults: &'static [&'static str],
    pub sha256: Option<[&'static str; 4]>,
    /// The files are `{mirror}/{file}.gz`.
    pub mirror: &'static str,
    /// Replaces `mirror` (a local mirror, a proxy; the tests' local server).
    pub mirror_env_var: &'static str,
}

impl Source {
    fn mirror(&self) -> String {
        std::env::var(self.mirror_env_var).unwrap_or_else(|_| self.mirror.to_string())
    }
}

/// Where downloads go: `$NN_DATA_DIR/<name>` when `NN_DATA_DIR` is set, else
/// `$XDG_CACHE_HOME/nn/datasets/<name>` (`~/.cache/nn/datasets/<name>`).
fn download_dir(src: &Source) -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("NN_DATA_DIR") {
        return Some(PathBuf::from(d).join(src.name));
    }
    xdg_cache().map(|c| c.join("nn/datasets").join(src.name))
}

fn xdg_cache() -> Option<PathBuf> {
    match std::env::var_os("XDG_CACHE_HOME") {
        Some(d) if !d.is_empty() => Some(PathBuf::from(d)),
        _ => std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")),
    }
}

/// The file `name` in `dir`, compressed or not.
fn find_file(dir: &Path, name: &str) -> Option<PathBuf> {
    [format!("{name}.gz"), name.to_string()]
        .into_iter()
        .map(|f| dir.join(f))
        .find(|p| p.is_file())
}

/// The directories searched, in order, when none was chosen explicitly: `$NN_DATA_DIR/<name>`,
/// Keras's cache, our XDG cache, then the system's.
fn candidates(src: &Source) -> Vec<PathBuf> {
    let mut dirs = vec![];
    if let Some(d) = std::env::var_os("NN_DATA_DIR") {
        dirs.push(PathBuf::from(d).join(src.name));
    }
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".keras/datasets").join(src.name));
    }
    if let Some(cache) = xdg_cache() {
        dirs.push(cache.join("nn/datasets").join(src.name));
    }
    dirs.extend(src.defaults.iter().map(PathBuf::from));
    dirs.dedup();
    dirs
}

/// The directory `load(src, None)` reads: the explicit one, the first searched directory that
/// has all four files, or — none having them — the download directory after a download.
pub(crate) fn locate(src: &Source) -> Result<PathBuf> {
    if let Some(d) = std::env::var_os(src.env_var).map(PathBuf::from) {
        if let Some(f) = FILES.iter().find(|f| find_file(&d, f).is_none()) {
            return Err(Error::file(
                &d,
                format!(
                    "{} names this directory for {}, but it has no {f} (nor {f}.gz); unset it \
                     to search the default locations (and download there)",
                    src.env_var, src.name
                ),
            ));
        }
        return Ok(d);
    }
    let dirs = candidates(src);
    if let Some(d) = dirs
        .iter()
        .find(|d| FILES.iter().all(|f| find_file(d, f).is_some()))
    {
        return Ok(d.clone());
    }
    let looked: Vec<String> = dirs.iter().map(|d| format!("  {}", d.display())).collect();
    let not_found = |why: String| Error::File {
        path: PathBuf::from(src.name),
        reason: format!(
            "the {} files ({}, gzip or raw) were not found in any of:\n{}\n{why}\nSet {} to \
             their directory, or NN_DATA_DIR to a directory holding {}/",
            src.name,
            FILES.join(", "),
            looked.join("\n"),
            src.env_var,
            src.name
        ),
    };
    let Some(target) = download_dir(src) else {
        return Err(not_found(
            "and there is no cache directory to download them to (HOME is not set)".into(),
        ));
    };
    let mirror = src.mirror();
    download::download(src, &mirror, &target, true)
        .map_err(|e| not_found(format!("Downloading them from {mirror} failed: {e}")))?;
    Ok(target)
}

pub(crate) fn load(src: &Source, dir: Option<&Path>) -> Result<Split> {
    let dir = match dir {
        Some(d) => d.to_path_buf(),
        None => locate(src)?,
    };
    let mut parts = vec![];
    for (i, f) in FILES.iter().enumerate() {
        let path = find_file(&dir, f).ok_or_else(|| {
            Error::file(&dir.join(f), format!("missing (neither {f} nor {f}.gz)"))
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

/// Any data set in MNIST's format — the four IDX files (gzip or raw) under MNIST's names in
/// `dir` (EMNIST, Kuzushiji-MNIST, a data set of one's own) — read with every check but the
/// canonical checksums, which only MNIST and Fashion-MNIST have.
pub fn load_mnist_format(dir: impl AsRef<Path>) -> Result<Split> {
    const ANY: Source = Source {
        name: "MNIST-format data",
        env_var: "",
        defaults: &[],
        sha256: None,
        mirror: "",
        mirror_env_var: "",
    };
    load(&ANY, Some(dir.as_ref()))
}

/// MNIST handwritten digits (60 000 + 10 000 images of 28 × 28).
pub mod mnist {
    use super::*;

    pub(crate) const SOURCE: Source = Source {
        name: "mnist",
        env_var: "NN_MNIST_DIR",
        defaults: &["/usr/share/datasets/mnist"],
        sha256: Some([
            "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        ]),
        mirror: MIRROR,
        mirror_env_var: "NN_MNIST_URL",
    };

    /// The usual mirror of the original files (replaced by `NN_MNIST_URL` when set).
    pub const MIRROR: &str = "https://storage.googleapis.com/cvdf-datasets/mnist";

    /// As Keras's `mnist.load_data()`: from `NN_MNIST_DIR` if set; else the first of
    /// `$NN_DATA_DIR/mnist`, `~/.keras/datasets/mnist`, `~/.cache/nn/datasets/mnist`
    /// (`$XDG_CACHE_HOME`), `/usr/share/datasets/mnist` that has the four files; else they are
    /// downloaded (SHA-256 verified) into `$NN_DATA_DIR/mnist` or the cache, and read there.
    pub fn load_data() -> Result<Split> {
        load(&SOURCE, None)
    }
    /// From the directory `dir`.
    pub fn load_data_from(dir: impl AsRef<Path>) -> Result<Split> {
        load(&SOURCE, Some(dir.as_ref()))
    }
    /// The directory `load_data` reads (downloading the files first if no directory has them).
    pub fn locate() -> Result<PathBuf> {
        super::locate(&SOURCE)
    }
    /// Fetches the four files from the mirror into `dir`, each verified by SHA-256.
    pub fn download(dir: impl AsRef<Path>) -> Result<()> {
        download_from(SOURCE.mirror(), dir)
    }
    /// Fetches the four files from `base_url` (`{base_url}/{file}.gz`) into `dir`.
    pub fn download_from(base_url: impl AsRef<str>, dir: impl AsRef<Path>) -> Result<()> {
        super::download::download(&SOURCE, base_url.as_ref(), dir.as_ref(), true)
    }
}

/// Fashion-MNIST (Zalando; 60 000 + 10 000 images of 28 × 28 clothing items, 10 classes).
pub mod fashion_mnist {
    use super::*;

    pub(crate) const SOURCE: Source = Source {
        name: "fashion-mnist",
        env_var: "NN_FASHION_MNIST_DIR",
        defaults: &["/usr/share/datasets/fashion-mnist"],
        // The decompressed files, as Debian's dataset-fashion-mnist and Zalando's release hold
        // them (the compressed files differ between the two: Debian recompressed them).
        sha256: Some([
            "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        ]),
        mirror: MIRROR,
        mirror_env_var: "NN_FASHION_MNIST_URL",
    };

    /// Keras's mirror of Zalando's files (replaced by `NN_FASHION_MNIST_URL` when set).
    pub const MIRROR: &str = "https://storage.googleapis.com/tensorflow/tf-keras-datasets";

    /// As Keras's `fashion_mnist.load_data()`: from `NN_FASHION_MNIST_DIR` if set; else the
    /// first of `$NN_DATA_DIR/fashion-mnist`, `~/.keras/datasets/fashion-mnist`,
    /// `~/.cache/nn/datasets/fashion-mnist`, `/usr/share/datasets/fashion-mnist` (Debian's
    /// `dataset-fashion-mnist`) that has the four files; else they are downloaded.
    pub fn load_data() -> Result<Split> {
        load(&SOURCE, None)
    }
    /// From the directory `dir`.
    pub fn load_data_from(dir: impl AsRef<Path>) -> Result<Split> {
        load(&SOURCE, Some(dir.as_ref()))
    }
    /// The directory `load_data` reads (downloading the files first if no directory has them).
    pub fn locate() -> Result<PathBuf> {
        super::locate(&SOURCE)
    }
    /// Fetches the four files from the mirror into `dir`, each verified by SHA-256.
    pub fn download(dir: impl AsRef<Path>) -> Result<()> {
        download_from(SOURCE.mirror(), dir)
    }
    /// Fetches the four files from `base_url` (`{base_url}/{file}.gz`) into `dir`.
    pub fn download_from(base_url: impl AsRef<str>, dir: impl AsRef<Path>) -> Result<()> {
        super::download::download(&SOURCE, base_url.as_ref(), dir.as_ref(), true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consuming_conversions_give_the_borrowing_ones_tensors() {
        let images = || Images {
            count: 2,
            rows: 2,
            cols: 3,
            data: vec![0, 51, 102, 153, 204, 255, 1, 2, 3, 4, 5, 6],
        };
        let (shaped, flat) = (
            images().to_tensor().unwrap(),
            images().to_flat_tensor().unwrap(),
        );
        assert_eq!(shaped.shape(), &[2, 2, 3, 1]);
        assert_eq!(flat.shape(), &[2, 6]);
        assert_eq!(shaped.data()[5], 1.0);
        assert_eq!(images().into_tensor().unwrap(), shaped);
        assert_eq!(images().into_flat_tensor().unwrap(), flat);
        // A count that does not describe the bytes is the same error either way.
        let bad = Images {
            count: 3,
            ..images()
        };
        assert!(bad.into_tensor().is_err());
    }
}
