//! Any bytes as a model file: `Sequential::load` returns a model or an error (never a panic, an
//! abort or a hang), a model it returns predicts, and `load_weights` into a small model returns.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nn::prelude::*;

fuzz_target!(|data: &[u8]| {
    let path = std::env::temp_dir().join(format!("fuzz-model-{}.safetensors", std::process::id()));
    std::fs::write(&path, data).unwrap();
    if let Ok(mut m) = Sequential::load(&path) {
        let shape = m.get_input_shape().unwrap().to_vec();
        let per: usize = shape.iter().product();
        if per <= 1 << 16 {
            let mut full = vec![2];
            full.extend(&shape);
            let x = Tensor::from_vec(vec![0.0; 2 * per], &full).unwrap();
            let _ = m.predict(&x, 2);
        }
    }
    let mut small = Sequential::new()
        .input_shape(&[8, 8, 1])
        .add(Conv2D::new(4, (3, 3), Act::Relu))
        .add(MaxPooling2D::new((2, 2)))
        .add(Flatten::new())
        .add(Dense::new(3, Act::Softmax));
    let _ = small.load_weights(&path);
});
