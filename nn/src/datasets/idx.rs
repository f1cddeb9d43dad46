//! The IDX file format of MNIST-style data sets: a 4-byte magic (0, 0, type, dimensions), the
//! dimensions as big-endian u32, then the data. Only unsigned bytes (type 0x08) are used here.
//! Files may be gzip-compressed (detected by their magic bytes, not by name), in one member or
//! several (as `gzip` writes concatenated files; `gzip -t` accepts them).
//!
//! Reading trusts nothing: only a regular file is read; the header is read first and checked
//! (type, dimensions, overflow, and — compressed — that the compressed size could hold that
//! much data at deflate's best ratio), then exactly the data it announces is read or inflated,
//! into memory reserved without aborting; data beyond it is an error. A small file can thus
//! never make the reader allocate or inflate more than its header claims and its size allows.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::files::open_regular;

/// The contents of an IDX file: dimensions and bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Idx {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

/// Deflate's largest expansion: a compressed stream inflates to at most about 1032 times its
/// size (RFC 1951's longest match in the shortest code); a header that claims more data than
/// that cannot be telling the truth.
const MAX_INFLATION: u64 = 1032;

impl Idx {
    /// The IDX header these dimensions have (type 0x08, unsigned bytes).
    fn header(&self) -> Vec<u8> {
        let mut h = vec![0, 0, 0x08, self.dims.len() as u8];
        for &d in &self.dims {
            h.extend_from_slice(&(d as u32).to_be_bytes());
        }
        h
    }

    /// The SHA-256 of the (uncompressed) file, header and data.
    pub fn sha256(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.header());
        h.update(&self.data);
        h.finalize().into()
    }
}

/// Checks the 4-byte magic and returns the number of dimensions.
fn check_magic(path: &Path, magic: &[u8], want_dims: usize) -> Result<usize> {
    if magic[0] != 0 || magic[1] != 0 {
        return Err(Error::file(path, "not an IDX file (bad magic number)"));
    }
    if magic[2] != 0x08 {
        return Err(Error::file(
            path,
            format!(
                "IDX data type 0x{:02x} is not unsigned bytes (0x08)",
                magic[2]
            ),
        ));
    }
    let ndims = magic[3] as usize;
    if ndims != want_dims {
        return Err(Error::file(
            path,
            format!("{ndims} dimensions, expected {want_dims}"),
        ));
    }
    Ok(ndims)
}

/// The dimensions in `bytes` (big-endian u32 each) and the data length they imply.
fn dims_and_len(path: &Path, bytes: &[u8]) -> Result<(Vec<usize>, usize)> {
    let dims: Vec<usize> = bytes
        .chunks_exact(4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .collect();
    let want = crate::tensor::checked_product(&dims)
        .ok_or_else(|| Error::file(path, format!("dimensions {dims:?} overflow")))?;
    Ok((dims, want))
}

/// Reads as much of `n` bytes as `r` has; an I/O or gzip error names `path`.
fn read_up_to(path: &Path, r: &mut impl Read, buf: &mut Vec<u8>, n: usize) -> Result<()> {
    r.take(n as u64)
        .read_to_end(buf)
        .map_err(|e| Error::file(path, format!("corrupt gzip data: {e}")))?;
    Ok(())
}

/// Reads the IDX file `path` (gzip or raw) holding `want_dims` dimensions of u8 (see the
/// module's documentation for what is checked, and when).
pub fn read(path: &Path, want_dims: usize) -> Result<Idx> {
    let (file, file_len) = open_regular(path)?;
    let mut buffered = BufReader::new(file);
    let gzip = buffered
        .fill_buf()
        .map_err(Error::io(path))?
        .starts_with(&[0x1f, 0x8b]);
    let mut reader: Box<dyn Read> = if gzip {
        Box::new(flate2::bufread::MultiGzDecoder::new(buffered))
    } else {
        Box::new(buffered)
    };
    let mut header = vec![];
    read_up_to(path, &mut reader, &mut header, 4)?;
    if header.len() < 4 {
        return Err(Error::file(
            path,
            format!(
                "truncated: {} bytes, too short for an IDX header",
                header.len()
            ),
        ));
    }
    let ndims = check_magic(path, &header, want_dims)?;
    read_up_to(path, &mut reader, &mut header, 4 * ndims)?;
    if header.len() < 4 + 4 * ndims {
        return Err(Error::file(
            path,
            format!(
                "truncated: the header needs {} bytes, the file has {}",
                4 + 4 * ndims,
                header.len()
            ),
        ));
    }
    let (dims, want) = dims_and_len(path, &header[4..])?;
    let header_len = header.len() as u64;
    let possible = if gzip {
        file_len.saturating_mul(MAX_INFLATION)
    } else {
        file_len.saturating_sub(header_len)
    };
    if want as u64 > possible {
        let what = if gzip {
            format!("a {file_len}-byte gzip file inflates to at most {possible}")
        } else {
            format!("found {possible}")
        };
        return Err(Error::file(
            path,
            format!("truncated: dimensions {dims:?} need {want} data bytes, {what}"),
        ));
    }
    let mut data = vec![];
    data.try_reserve_exact(want).map_err(|_| Error::Memory {
        what: format!("the data of {}", path.display()),
        bytes: want as u64,
    })?;
    read_up_to(path, &mut reader, &mut data, want)?;
    if data.len() < want {
        return Err(Error::file(
            path,
            format!(
                "truncated: dimensions {dims:?} need {want} data bytes, found {}",
                data.len()
            ),
        ));
    }
    let mut extra = vec![];
    read_up_to(path, &mut reader, &mut extra, 1)?;
    if !extra.is_empty() {
        return Err(Error::file(
            path,
            format!("too long: dimensions {dims:?} need {want} data bytes, the file has more"),
        ));
    }
    Ok(Idx { dims, data })
}

/// Parses IDX `bytes` already in memory (named `path` in errors) holding `want_dims` dimensions
/// of u8.
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
    let ndims = check_magic(path, bytes, want_dims)?;
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
    let (dims, want) = dims_and_len(path, &bytes[4..header])?;
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
