//! Saving and loading: weights in safetensors (tensors named "layer/kernel", "layer/bias", f32,
//! little-endian), and the whole model — the same file with the architecture (input shape, seed,
//! layer configurations as JSON) in the safetensors metadata, and a SHA-256 of the architecture
//! and every tensor. Writes are atomic (`files::write_atomically`).
//!
//! Reading trusts nothing in the file: only a regular file is read, and never past its length;
//! the checksum, when present (files of other tools have none), must match; every size the
//! architecture implies is computed with overflow checks and each parameter must be a tensor of
//! the file, of that exact shape and type, before the model's memory is allocated — so a small
//! file cannot make the loader allocate more than the tensors it holds; values must be finite.
//! Any mismatch is an error that names the file and what does not fit.

use std::collections::HashMap;
use std::path::Path;

use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::files::{read_regular, write_atomically};
use crate::layers::{self, Layer, LayerConfig};
use crate::tensor::Tensor;

const FORMAT_KEY: &str = "format";
const FORMAT: &str = "nn.Sequential";
const ARCHITECTURE_KEY: &str = "architecture";
/// The metadata entry holding "sha256:" and the hex digest of [`checksum`].
const CHECKSUM_KEY: &str = "checksum";

#[derive(Serialize, Deserialize)]
struct Architecture {
    input_shape: Vec<usize>,
    seed: u64,
    layers: Vec<LayerConfig>,
}

fn to_bytes(t: &Tensor) -> Vec<u8> {
    t.data().iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// SHA-256 over the architecture entry (empty for a weights file) and every tensor, in name
/// order: its name, dtype, shape and bytes, each length-prefixed so that no two files hash
/// alike by shifting bytes from one field to the next.
fn checksum(architecture: &str, tensors: &[(String, TensorView<'_>)]) -> String {
    use sha2::{Digest, Sha256};
    let mut sorted: Vec<&(String, TensorView<'_>)> = tensors.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut h = Sha256::new();
    let mut field = |bytes: &[u8]| {
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    field(architecture.as_bytes());
    for (name, view) in sorted {
        field(name.as_bytes());
        field(format!("{:?}", view.dtype()).as_bytes());
        let shape: Vec<u8> = view
            .shape()
            .iter()
            .flat_map(|&d| (d as u64).to_le_bytes())
            .collect();
        field(&shape);
        field(view.data());
    }
    let digest = h.finalize();
    format!(
        "sha256:{}",
        digest
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    )
}

fn serialize(
    weights: &[(String, Tensor)],
    mut metadata: HashMap<String, String>,
) -> Result<Vec<u8>> {
    let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = weights
        .iter()
        .map(|(n, t)| (n.clone(), to_bytes(t), t.shape().to_vec()))
        .collect();
    let views = bytes
        .iter()
        .map(|(n, b, s)| {
            TensorView::new(Dtype::F32, s.clone(), b)
                .map(|v| (n.clone(), v))
                .map_err(|e| Error::Serialize {
                    what: format!("tensor {n}"),
                    reason: e.to_string(),
                })
        })
        .collect::<Result<Vec<_>>>()?;
    let architecture = metadata.get(ARCHITECTURE_KEY).map_or("", String::as_str);
    metadata.insert(CHECKSUM_KEY.to_string(), checksum(architecture, &views));
    safetensors::serialize(views, Some(metadata)).map_err(|e| Error::Serialize {
        what: "the weights".into(),
        reason: e.to_string(),
    })
}

/// The safetensors file in `bytes` and its metadata, its checksum verified when it has one.
fn parse<'a>(path: &Path, bytes: &'a [u8]) -> Result<(SafeTensors<'a>, HashMap<String, String>)> {
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| Error::file(path, format!("not a valid safetensors file: {e}")))?;
    let (_, meta) = SafeTensors::read_metadata(bytes)
        .map_err(|e| Error::file(path, format!("not a valid safetensors file: {e}")))?;
    let meta = meta.metadata().clone().unwrap_or_default();
    if let Some(stored) = meta.get(CHECKSUM_KEY) {
        let architecture = meta.get(ARCHITECTURE_KEY).map_or("", String::as_str);
        let actual = checksum(architecture, &st.tensors());
        if *stored != actual {
            return Err(Error::file(
                path,
                format!(
                    "the checksum does not match: the file is corrupt (stored {stored}, \
                     contents {actual})"
                ),
            ));
        }
    }
    Ok((st, meta))
}

/// The tensor `name` of shape `shape` from `st`, checked (present, F32, that shape, finite).
fn tensor(path: &Path, st: &SafeTensors<'_>, name: &str, shape: &[usize]) -> Result<Tensor> {
    let view = st.tensor(name).map_err(|_| {
        Error::file(
            path,
            format!("the file has no tensor {name} (the model needs one of shape {shape:?})"),
        )
    })?;
    if view.dtype() != Dtype::F32 {
        return Err(Error::file(
            path,
            format!("tensor {name} is {:?}, expected F32", view.dtype()),
        ));
    }
    if view.shape() != shape {
        return Err(Error::file(
            path,
            format!(
                "tensor {name} has shape {:?} but the model's is {shape:?}",
                view.shape()
            ),
        ));
    }
    decode(path, name, &view)
}

/// The f32 values of the (checked) tensor `name`; a non-finite one is an error naming it.
fn decode(path: &Path, name: &str, view: &TensorView<'_>) -> Result<Tensor> {
    let data: Vec<f32> = view
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    if let Some(at) = crate::tensor::first_non_finite(&data) {
        return Err(Error::file(
            path,
            format!(
                "tensor {name} holds a non-finite value ({}) at element {at}",
                data[at]
            ),
        ));
    }
    Tensor::from_vec(data, view.shape())
}

/// The tensors `wanted` (name and shape, in order) from `st`, each checked; the file must hold
/// no others.
fn tensors(
    path: &Path,
    st: &SafeTensors<'_>,
    wanted: &[(String, Vec<usize>)],
) -> Result<Vec<(String, Tensor)>> {
    let mut out = vec![];
    for (name, shape) in wanted {
        out.push((name.clone(), tensor(path, st, name, shape)?));
    }
    if st.len() != wanted.len() {
        let known: std::collections::HashSet<&str> =
            wanted.iter().map(|(n, _)| n.as_str()).collect();
        let extra: Vec<String> = st
            .names()
            .into_iter()
            .filter(|n| !known.contains(*n))
            .map(|n| n.to_string())
            .collect();
        return Err(Error::file(
            path,
            format!(
                "the file has {} tensors, the model {}; not in the model: {extra:?}",
                st.len(),
                wanted.len()
            ),
        ));
    }
    Ok(out)
}

/// Writes the weights of `layers` (Keras's `save_weights`) to `path`, as safetensors.
pub(crate) fn write_weights(path: &Path, layers: &mut [Box<dyn Layer>]) -> Result<()> {
    let bytes = serialize(&layers::get_weights(layers), HashMap::new())?;
    write_atomically(path, &bytes)
}

/// Writes the model of `layers` (built) on samples of `input_shape`, with `seed`: the
/// architecture and the weights in one safetensors file.
pub(crate) fn write_model(
    path: &Path,
    input_shape: &[usize],
    seed: u64,
    layers: &mut [Box<dyn Layer>],
) -> Result<()> {
    let arch = Architecture {
        input_shape: input_shape.to_vec(),
        seed,
        layers: layers.iter().map(|l| l.config()).collect(),
    };
    let mut meta = HashMap::new();
    meta.insert(FORMAT_KEY.to_string(), FORMAT.to_string());
    let arch = serde_json::to_string(&arch).map_err(|e| Error::Serialize {
        what: "the architecture".into(),
        reason: e.to_string(),
    })?;
    meta.insert(ARCHITECTURE_KEY.to_string(), arch);
    let bytes = serialize(&layers::get_weights(layers), meta)?;
    write_atomically(path, &bytes)
}

/// The weights in `path` for `layers` (built): every tensor's name and shape must match.
pub(crate) fn read_weights(
    path: &Path,
    layers: &mut [Box<dyn Layer>],
) -> Result<Vec<(String, Tensor)>> {
    let bytes = read_regular(path)?;
    let (st, _) = parse(path, &bytes)?;
    let wanted: Vec<(String, Vec<usize>)> = layers::get_weights(layers)
        .into_iter()
        .map(|(n, t)| (n, t.shape().to_vec()))
        .collect();
    tensors(path, &st, &wanted)
}

/// A model file's contents, checked: the architecture (layers named, not built) and the
/// weights, in the order the built model takes them.
pub(crate) struct ModelFile {
    pub input_shape: Vec<usize>,
    pub seed: u64,
    pub layers: Vec<Box<dyn Layer>>,
    pub weights: Vec<(String, Tensor)>,
}

/// Reads a model written by [`write_model`]. Every size the architecture implies is inferred
/// (overflow-checked) and matched against the file's tensors before anything is built: the
/// model the caller builds from this allocates what the file holds, no more.
pub(crate) fn read_model(path: &Path) -> Result<ModelFile> {
    let bytes = read_regular(path)?;
    let (st, meta) = parse(path, &bytes)?;
    match meta.get(FORMAT_KEY) {
        Some(f) if f == FORMAT => {}
        Some(f) => return Err(Error::file(path, format!("format {f:?} is not {FORMAT:?}"))),
        None => {
            return Err(Error::file(
                path,
                "no model architecture (a weights-only file? use load_weights on a built model)",
            ))
        }
    }
    let arch: Architecture = meta
        .get(ARCHITECTURE_KEY)
        .ok_or_else(|| Error::file(path, "the architecture entry is missing"))
        .and_then(|a| {
            serde_json::from_str(a)
                .map_err(|e| Error::file(path, format!("the architecture is not valid: {e}")))
        })?;
    let mut layers = arch
        .layers
        .iter()
        .map(|cfg| cfg.to_layer().map_err(|e| Error::file(path, e.to_string())))
        .collect::<Result<Vec<_>>>()?;
    let inferred = layers::name_layers(&mut layers)
        .and_then(|()| layers::infer_all(&layers, &arch.input_shape))
        .map_err(|e| Error::file(path, format!("the architecture is not valid: {e}")))?;
    let mut wanted = vec![];
    for (layer, shapes) in layers.iter().zip(&inferred) {
        for (param, shape) in &shapes.params {
            wanted.push((format!("{}/{param}", layer.name()), shape.clone()));
        }
    }
    // Shapes and types against the file's tensors first, from the header alone.
    let mut views = Vec::with_capacity(wanted.len());
    for (name, shape) in &wanted {
        let view = st.tensor(name).map_err(|_| {
            Error::file(
                path,
                format!(
                    "the architecture needs a tensor {name} of shape {shape:?}, the file has none"
                ),
            )
        })?;
        if view.shape() != &shape[..] || view.dtype() != Dtype::F32 {
            return Err(Error::file(
                path,
                format!(
                    "the architecture needs {name} of shape {shape:?} (F32), the file holds \
                     {:?} ({:?})",
                    view.shape(),
                    view.dtype()
                ),
            ));
        }
        views.push((name, view));
    }
    if wanted.len() != st.len() {
        return Err(Error::file(
            path,
            format!(
                "the file has {} tensors, the architecture {}",
                st.len(),
                wanted.len()
            ),
        ));
    }
    let weights = views
        .into_iter()
        .map(|(name, view)| Ok((name.clone(), decode(path, name, &view)?)))
        .collect::<Result<Vec<_>>>()?;
    Ok(ModelFile {
        input_shape: arch.input_shape,
        seed: arch.seed,
        layers,
        weights,
    })
}
