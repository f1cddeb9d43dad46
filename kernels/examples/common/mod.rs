//! What the probe examples share.

use kernels::{ExecOptions, Threading};

/// The options of a probe: one thread unless `RAYON_NUM_THREADS` asks for more (then the rayon
/// pool's).
pub fn options_from_env() -> ExecOptions {
    let threads: usize = std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    ExecOptions {
        threading: if threads > 1 {
            Threading::Rayon
        } else {
            Threading::Single
        },
        ..ExecOptions::default()
    }
}
