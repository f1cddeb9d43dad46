//! Fetching a data set's four files over HTTP(S) in Rust (`ureq`, TLS by rustls), as Keras's
//! `get_file` does: each file is read into memory within a bound, decompressed and parsed as
//! IDX, its SHA-256 compared with the canonical one, and only then written — atomically — into
//! the cache directory. A truncated, corrupt or substituted download leaves nothing behind.

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use flate2::read::MultiGzDecoder;

use super::{hex, idx, Source, FILES};
use crate::error::{Error, Result};

/// The largest compressed file accepted (MNIST's largest is 9.9 MB, Fashion-MNIST's 26 MB).
const MAX_DOWNLOAD: u64 = 64 << 20;
/// The largest decompressed file accepted (the training images: 47 MB).
const MAX_INFLATED: u64 = 128 << 20;
/// A stalled connection gives up after this long (per file).
const TIMEOUT: Duration = Duration::from_secs(600);

/// Downloads the four files of `src` from `base_url` (`{base_url}/{file}.gz`) into `dir`,
/// each verified before it is kept, with a progress bar on a terminal when `progress`.
pub(crate) fn download(src: &Source, base_url: &str, dir: &Path, progress: bool) -> Result<()> {
    let hashes = src.sha256.ok_or_else(|| Error::Misuse {
        call: format!("downloading {}", src.name),
        reason: "is refused: there are no checksums to verify the files against".into(),
    })?;
    std::fs::create_dir_all(dir).map_err(Error::io(dir))?;
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(TIMEOUT))
        .build()
        .into();
    for (i, (f, want)) in FILES.iter().zip(hashes).enumerate() {
        let target = dir.join(format!("{f}.gz"));
        let url = format!("{}/{f}.gz", base_url.trim_end_matches('/'));
        let bytes = fetch(&agent, &url, &target, progress)?;
        let idx = inflate_and_parse(&target, &url, &bytes, if i % 2 == 0 { 3 } else { 1 })?;
        let got = hex(&idx.sha256());
        if got != want {
            return Err(Error::file(
                &target,
                format!(
                    "the file downloaded from {url} has SHA-256 {got}, not the canonical {want}: \
                     corrupt or substituted, not kept"
                ),
            ));
        }
        crate::files::write_atomically(&target, &bytes)?;
    }
    Ok(())
}

/// The body of `url`, read whole within [`MAX_DOWNLOAD`]; errors name `target` and the URL.
fn fetch(agent: &ureq::Agent, url: &str, target: &Path, progress: bool) -> Result<Vec<u8>> {
    let fail = |what: String| Error::file(target, format!("downloading {url}: {what}"));
    let mut response = agent.get(url).call().map_err(|e| fail(e.to_string()))?;
    let announced = response.body().content_length();
    if let Some(n) = announced.filter(|&n| n > MAX_DOWNLOAD) {
        return Err(fail(format!(
            "the server announces {n} bytes, more than the {MAX_DOWNLOAD} a data file may have"
        )));
    }
    let bar = (progress && std::io::IsTerminal::is_terminal(&std::io::stderr())).then(|| {
        let bar = indicatif::ProgressBar::new(announced.unwrap_or(0));
        bar.set_style(
            indicatif::ProgressStyle::with_template("{msg} {bar:30} {bytes}/{total_bytes}")
                .expect("a valid template"),
        );
        bar.set_message(url.rsplit('/').next().unwrap_or(url).to_string());
        bar
    });
    let mut reader = response
        .body_mut()
        .with_config()
        .limit(MAX_DOWNLOAD)
        .reader();
    let mut bytes = Vec::with_capacity(announced.unwrap_or(0) as usize);
    let mut chunk = vec![0u8; 1 << 16];
    loop {
        // A body cut short of its Content-Length is an error here (ureq checks it).
        let n = reader.read(&mut chunk).map_err(|e| fail(e.to_string()))?;
        if n == 0 {
            break;
        }
        bytes.extend_from_slice(&chunk[..n]);
        if let Some(b) = &bar {
            b.set_position(bytes.len() as u64);
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    Ok(bytes)
}

/// The IDX file in the gzip `bytes`, decompressed within [`MAX_INFLATED`] and parsed.
fn inflate_and_parse(target: &Path, url: &str, bytes: &[u8], dims: usize) -> Result<idx::Idx> {
    let mut raw = vec![];
    MultiGzDecoder::new(bytes)
        .take(MAX_INFLATED + 1)
        .read_to_end(&mut raw)
        .map_err(|e| {
            Error::file(
                target,
                format!("the file downloaded from {url} is not valid gzip data (truncated or corrupt: {e}); not kept"),
            )
        })?;
    if raw.len() as u64 > MAX_INFLATED {
        return Err(Error::file(
            target,
            format!("the file downloaded from {url} inflates past {MAX_INFLATED} bytes; not kept"),
        ));
    }
    idx::parse(target, &raw, dims)
}
