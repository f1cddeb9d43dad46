//! Keras-style neural-network training (`Sequential`, layers, losses, optimizers, datasets) on the
//! `kernels` crate. The layers arrive with the `nn` issue; until then this crate only re-exports
//! the kernels it builds on, so the workspace's dependency direction (`nn` → `kernels`) is fixed.

pub use kernels;
