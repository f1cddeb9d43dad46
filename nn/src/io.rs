//! Saving and loading: weights in safetensors (tensors named "layer/kernel", "layer/bias", f32,
//! little-endian), and the whole model — the same file with the architecture (input shape, seed,
//! layer configurations as JSON) in the safetensors metadata. Writes go to a temporary file in
//! the same directory, then a rename: a crash never leaves half a file under the real name.
//! Reading checks everything: a corrupt file, a tensor missing, of the wrong shape or type, or a
//! file of another format is an error that says what does not match.

use std::collections::HashMap;
use std::path::Path;

use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::layers::LayerConfig;
use crate::model::Sequential;
use crate::tensor::Tensor;

const FORMAT_KEY: &str = "format";
const FORMAT: &str = "nn.Sequential";
const ARCHITECTURE_KEY: &str = "architecture";

#[derive(Serialize, Deserialize)]
struct Architecture {
    input_shape: Vec<usize>,
    seed: u64,
    layers: Vec<LayerConfig>,
}

/// Writes `bytes` to `path` atomically (temporary file + rename).
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let file_name = path
        .file_name()
        .ok_or_else(|| Error::file(path, "not a file path"))?
        .to_string_lossy();
    let tmp = dir.join(format!(".{file_name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(Error::io(path))
}

fn to_bytes(t: &Tensor) -> Vec<u8> {
    t.data().iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn serialize(model: &mut Sequential, metadata: HashMap<String, String>) -> Result<Vec<u8>> {
    let weights = model.get_weights();
    let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = weights
        .iter()
        .map(|(n, t)| (n.clone(), to_bytes(t), t.shape().to_vec()))
        .collect();
    let views = bytes
        .iter()
        .map(|(n, b, s)| {
            TensorView::new(Dtype::F32, s.clone(), b)
                .map(|v| (n.clone(), v))
                .map_err(|e| Error::InvalidArgument(format!("tensor {n}: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    safetensors::serialize(views, Some(metadata))
        .map_err(|e| Error::InvalidArgument(format!("serialising the weights: {e}")))
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(Error::io(path))
}

fn parse<'a>(path: &Path, bytes: &'a [u8]) -> Result<(SafeTensors<'a>, HashMap<String, String>)> {
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| Error::file(path, format!("not a valid safetensors file: {e}")))?;
    let (_, meta) = SafeTensors::read_metadata(bytes)
        .map_err(|e| Error::file(path, format!("not a valid safetensors file: {e}")))?;
    Ok((st, meta.metadata().clone().unwrap_or_default()))
}

/// The model's tensors from `st`, checked name by name against the model's.
fn weights_from(
    path: &Path,
    st: &SafeTensors<'_>,
    model: &mut Sequential,
) -> Result<Vec<(String, Tensor)>> {
    let mut out = vec![];
    for (name, current) in model.get_weights() {
        let view = st.tensor(&name).map_err(|_| {
            Error::file(
                path,
                format!(
                    "the file has no tensor {name} (the model needs one of shape {:?})",
                    current.shape()
                ),
            )
        })?;
        if view.dtype() != Dtype::F32 {
            return Err(Error::file(
                path,
                format!("tensor {name} is {:?}, expected F32", view.dtype()),
            ));
        }
        if view.shape() != current.shape() {
            return Err(Error::file(
                path,
                format!(
                    "tensor {name} has shape {:?} but the model's is {:?}",
                    view.shape(),
                    current.shape()
                ),
            ));
        }
        let data: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        out.push((name, Tensor::from_vec(data, view.shape())?));
    }
    let expected = out.len();
    if st.len() != expected {
        let known: std::collections::HashSet<&str> = out.iter().map(|(n, _)| n.as_str()).collect();
        let extra: Vec<String> = st
            .names()
            .into_iter()
            .filter(|n| !known.contains(*n))
            .map(|n| n.to_string())
            .collect();
        return Err(Error::file(
            path,
            format!(
                "the file has {} tensors, the model {expected}; not in the model: {extra:?}",
                st.len()
            ),
        ));
    }
    Ok(out)
}

impl Sequential {
    /// Saves the weights only (Keras's `save_weights`), as safetensors.
    pub fn save_weights(&mut self, path: impl AsRef<Path>) -> Result<()> {
        if !self.is_built() {
            self.build()?;
        }
        let bytes = serialize(self, HashMap::new())?;
        write_atomically(path.as_ref(), &bytes)
    }

    /// Loads weights saved by `save_weights` or `save` into this (built) model; every tensor's
    /// name and shape must match.
    pub fn load_weights(&mut self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        if !self.is_built() {
            self.build()?;
        }
        let bytes = read(path)?;
        let (st, _) = parse(path, &bytes)?;
        let w = weights_from(path, &st, self)?;
        self.set_weights(&w)
    }

    /// Saves the model: architecture and weights in one safetensors file.
    pub fn save(&mut self, path: impl AsRef<Path>) -> Result<()> {
        if !self.is_built() {
            self.build()?;
        }
        let arch = Architecture {
            input_shape: self.get_input_shape().unwrap_or(&[]).to_vec(),
            seed: self.get_seed(),
            layers: self.layers().iter().map(|l| l.config()).collect(),
        };
        let mut meta = HashMap::new();
        meta.insert(FORMAT_KEY.to_string(), FORMAT.to_string());
        meta.insert(
            ARCHITECTURE_KEY.to_string(),
            serde_json::to_string(&arch).expect("serialisable"),
        );
        let bytes = serialize(self, meta)?;
        write_atomically(path.as_ref(), &bytes)
    }

    /// Loads a model saved by [`Sequential::save`]: the same layers and weights, so it predicts
    /// identically. Compile it again to train it.
    pub fn load(path: impl AsRef<Path>) -> Result<Sequential> {
        let path = path.as_ref();
        let bytes = read(path)?;
        let (st, meta) = parse(path, &bytes)?;
        match meta.get(FORMAT_KEY) {
            Some(f) if f == FORMAT => {}
            Some(f) => return Err(Error::file(path, format!("format {f:?} is not {FORMAT:?}"))),
            None => return Err(Error::file(
                path,
                "no model architecture (a weights-only file? use load_weights on a built model)",
            )),
        }
        let arch: Architecture = meta
            .get(ARCHITECTURE_KEY)
            .ok_or_else(|| Error::file(path, "the architecture entry is missing"))
            .and_then(|a| {
                serde_json::from_str(a)
                    .map_err(|e| Error::file(path, format!("the architecture is not valid: {e}")))
            })?;
        let mut model = Sequential::new()
            .input_shape(&arch.input_shape)
            .seed(arch.seed);
        for cfg in &arch.layers {
            model.push(cfg.to_layer()?);
        }
        model.build()?;
        let w = weights_from(path, &st, &mut model)?;
        model.set_weights(&w)?;
        Ok(model)
    }
}
