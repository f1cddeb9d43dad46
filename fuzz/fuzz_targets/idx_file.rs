//! Any bytes as an IDX data file (raw or gzip): `idx::read` returns its contents or an error,
//! reading no more than the header announces.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = std::env::temp_dir().join(format!("fuzz-idx-{}", std::process::id()));
    std::fs::write(&path, data).unwrap();
    for dims in [1, 3] {
        if let Ok(idx) = nn::datasets::idx::read(&path, dims) {
            let want: usize = idx.dims.iter().product();
            assert_eq!(idx.data.len(), want);
        }
    }
});
