//! What a model does to its stack of layers as a whole: naming them, inferring their shapes,
//! reading and writing all their weights.

use super::{elements, Inferred, Layer, Param};
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// Names the unnamed layers as Keras does ("dense", "dense_1", …), skipping names the user
/// gave other layers; two layers of one name are an error (Keras refuses them too: the weights
/// are saved by name).
pub(crate) fn name_layers(layers: &mut [Box<dyn Layer>]) -> Result<()> {
    let mut taken: std::collections::HashSet<String> = std::collections::HashSet::new();
    for (i, layer) in layers.iter().enumerate() {
        let name = layer.name();
        if !name.is_empty() && !taken.insert(name.to_string()) {
            return Err(Error::DuplicateLayerName {
                index: i,
                class: layer.class_name(),
                name: name.to_string(),
            });
        }
    }
    let mut counts = std::collections::HashMap::new();
    for layer in layers.iter_mut() {
        if layer.name().is_empty() {
            let base = snake_case(layer.class_name());
            let c = counts.entry(base.clone()).or_insert(0usize);
            let name = loop {
                let name = if *c == 0 {
                    base.clone()
                } else {
                    format!("{base}_{c}")
                };
                *c += 1;
                if taken.insert(name.clone()) {
                    break name;
                }
            };
            layer.set_name(name);
        }
    }
    Ok(())
}

/// "MaxPooling2D" → "max_pooling2d", as Keras names layers.
fn snake_case(class: &str) -> String {
    let mut out = String::new();
    let chars: Vec<char> = class.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        if c.is_ascii_uppercase() {
            let prev_lower = i > 0 && chars[i - 1].is_ascii_lowercase();
            if prev_lower {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// What building `layers` on samples of `input` would make (see [`Layer::infer`]): each
/// layer's output and parameter shapes, every size checked, nothing allocated.
pub(crate) fn infer_all(layers: &[Box<dyn Layer>], input: &[usize]) -> Result<Vec<Inferred>> {
    elements(input, "input")?;
    let mut shape = input.to_vec();
    let mut all = vec![];
    for layer in layers {
        let inferred = layer.infer(&shape)?;
        shape = inferred.output.clone();
        all.push(inferred);
    }
    Ok(all)
}

/// Every trainable tensor of `layers`, in order (layer by layer, kernel then bias), named
/// "layer/param" ("dense/kernel").
pub(crate) fn get_weights(layers: &mut [Box<dyn Layer>]) -> Vec<(String, Tensor)> {
    let mut all = vec![];
    for layer in layers {
        let lname = layer.name().to_string();
        layer.for_each_param(&mut |p: Param<'_>| {
            let t = Tensor::from_slice(p.value, p.shape).expect("consistent shapes");
            all.push((format!("{lname}/{}", p.name), t));
        });
    }
    all
}

/// Replaces every trainable tensor of `layers`; names, count and shapes must match
/// [`get_weights`], and every value must be finite. All are checked before any is written: a
/// call that fails changes nothing.
pub(crate) fn set_weights(
    layers: &mut [Box<dyn Layer>],
    weights: &[(String, Tensor)],
) -> Result<()> {
    let mut expected = vec![];
    for layer in layers.iter_mut() {
        let lname = layer.name().to_string();
        layer.for_each_param(&mut |p: Param<'_>| {
            expected.push((format!("{lname}/{}", p.name), p.shape.to_vec()));
        });
    }
    if expected.len() != weights.len() {
        return Err(Error::WeightCount {
            expected: expected.len(),
            given: weights.len(),
        });
    }
    for (i, ((want, shape), (name, t))) in expected.iter().zip(weights).enumerate() {
        if name != want {
            return Err(Error::WeightName {
                index: i,
                given: name.clone(),
                expected: want.clone(),
            });
        }
        if t.shape() != &shape[..] {
            return Err(Error::WeightShape {
                tensor: want.clone(),
                expected: shape.clone(),
                given: t.shape().to_vec(),
            });
        }
        if let Some(at) = crate::tensor::first_non_finite(t.data()) {
            return Err(Error::NonFinite {
                what: want.clone(),
                index: at,
                value: t.data()[at],
            });
        }
    }
    let mut given = weights.iter();
    for layer in layers.iter_mut() {
        layer.for_each_param(&mut |p: Param<'_>| {
            let (_, t) = given.next().expect("counted above");
            p.value.copy_from_slice(t.data());
        });
    }
    Ok(())
}
