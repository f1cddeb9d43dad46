//! Any bytes as a model file: `Sequential::load` returns a model or an error (never a panic, an
//! abort or a hang), a model it returns predicts, and `load_weights` into a small model returns
//! (the workspace tests' `exercise_model_file`, which the proptest harness runs too).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = std::env::temp_dir().join(format!("fuzz-model-{}.safetensors", std::process::id()));
    std::fs::write(&path, data).unwrap();
    workspace_tests::exercise_model_file(&path);
});
