//! The IDX file format of MNIST-style data sets: a 4-byte magic (0, 0, type, dimensions), the
//! dimensions as big-endian u32, then the data. Only unsigned bytes (type 0x08) are used here.
//! Files may be gzip-compressed (detected by their magic bytes, not by name).

use std::io::Read;
use std::path::Path;

use crate::error::{Error, Result};

/// The contents of an IDX file: dimensions and bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Idx {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

/// Reads `path`, gunzipping it if it is gzip data.
pub fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(Error::io(path))?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| Error::file(path, format!("corrupt gzip data: {e}")))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// Parses IDX `bytes` (named `path` in errors) holding `want_dims` dimensions of u8.
pub fn parse(path: &Path, bytes: &[u8], want_dims: usize) -> Result<Idx> {
    if bytes.len() < 4 {
        return Err(Error::file(
            path,
            format!(
                "truncated: {} bytes, too short for an IDX header",
                bytes.len()
            ),
        ));
    }
    if bytes[0] != 0 || bytes[1] != 0 {
        return Err(Error::file(path, "not an IDX file (bad magic number)"));
    }
    if bytes[2] != 0x08 {
        return Err(Error::file(
            path,
            format!(
                "IDX data type 0x{:02x} is not unsigned bytes (0x08)",
                bytes[2]
            ),
        ));
    }
    let ndims = bytes[3] as usize;
    if ndims != want_dims {
        return Err(Error::file(
            path,
            format!("{ndims} dimensions, expected {want_dims}"),
        ));
    }
    let header = 4 + 4 * ndims;
    if bytes.len() < header {
        return Err(Error::file(
            path,
            format!(
                "truncated: the header needs {header} bytes, the file has {}",
                bytes.len()
            ),
        ));
    }
    let dims: Vec<usize> = (0..ndims)
        .map(|i| {
            let b = &bytes[4 + 4 * i..8 + 4 * i];
            u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize
        })
        .collect();
    let want = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| Error::file(path, format!("dimensions {dims:?} overflow")))?;
    let found = bytes.len() - header;
    if found != want {
        let what = if found < want {
            "truncated"
        } else {
            "too long"
        };
        return Err(Error::file(
            path,
            format!("{what}: dimensions {dims:?} need {want} data bytes, found {found}"),
        ));
    }
    Ok(Idx {
        dims,
        data: bytes[header..].to_vec(),
    })
}
