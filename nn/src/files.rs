//! Reading files that may be anything, and writing files that must never be half there.
//!
//! * [`open_regular`] / [`read_regular`]: only regular files (a FIFO would block forever, a
//!   device read without end, a directory fail obscurely), and never more bytes than the file
//!   had when it was opened.
//! * [`write_atomically`]: a temporary of a name no other save uses (process id and a counter),
//!   written and synced, renamed over the target, and the directory synced: a reader sees the
//!   old file or the new one, concurrent saves each land whole (the last rename wins), and a
//!   process killed mid-save leaves a temporary that the next save to that path removes.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

/// `path` opened for reading, with its length, if it is a regular file. It is opened without
/// blocking (opening a FIFO for reading would wait for a writer), and the type checked is that
/// of what was opened, not of what the name pointed to a moment before.
pub(crate) fn open_regular(path: &Path) -> Result<(File, u64)> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // Regular files ignore the flag; a FIFO opens at once and is refused below.
        options.custom_flags(libc::O_NONBLOCK);
    }
    let file = options.open(path).map_err(Error::io(path))?;
    let meta = file.metadata().map_err(Error::io(path))?;
    if !meta.is_file() {
        let kind = if meta.is_dir() {
            "a directory"
        } else {
            "not a regular file (a pipe, socket or device)"
        };
        return Err(Error::file(path, format!("{kind}: refused")));
    }
    Ok((file, meta.len()))
}

/// The whole of the regular file `path`: at most the length it had when opened (a file that
/// grows while being read is an error, not an endless read).
pub(crate) fn read_regular(path: &Path) -> Result<Vec<u8>> {
    let (file, len) = open_regular(path)?;
    let len = usize::try_from(len)
        .map_err(|_| Error::file(path, format!("{len} bytes: too large to read")))?;
    let mut bytes = vec![];
    bytes.try_reserve_exact(len).map_err(|_| Error::Memory {
        what: format!("reading {}", path.display()),
        bytes: len as u64,
    })?;
    file.take(len as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(Error::io(path))?;
    if bytes.len() != len {
        return Err(Error::file(
            path,
            format!(
                "changed while being read ({len} bytes when opened, {} read)",
                bytes.len()
            ),
        ));
    }
    Ok(bytes)
}

/// Saves in this process so far: with the process id, a name no other save uses.
static SAVES: AtomicU64 = AtomicU64::new(0);

/// The directory and file name of `path`.
fn split(path: &Path) -> Result<(PathBuf, String)> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| Error::file(path, "not a file path"))?
        .to_string_lossy()
        .into_owned();
    Ok((dir.to_path_buf(), name))
}

/// `.{name}.{pid}-{n}.tmp`: the temporaries of saves to `name`.
fn temporary_name(name: &str, pid: u32, n: u64) -> String {
    format!(".{name}.{pid}-{n}.tmp")
}

/// The process id in a temporary's name, if `file` is one of `name`'s.
fn temporary_pid(file: &str, name: &str) -> Option<u32> {
    let rest = file
        .strip_prefix(&format!(".{name}."))?
        .strip_suffix(".tmp")?;
    let (pid, n) = rest.split_once('-')?;
    n.parse::<u64>().ok()?;
    pid.parse().ok()
}

/// Whether process `pid` is running (on Linux; elsewhere every process counts as running, so
/// nothing is ever removed that might be in use).
fn running(pid: u32) -> bool {
    if cfg!(target_os = "linux") {
        Path::new(&format!("/proc/{pid}")).exists()
    } else {
        true
    }
}

/// Removes the temporaries of saves to `name` in `dir` left by processes that no longer run
/// (killed mid-save). Best effort: a temporary that cannot be removed stays.
fn remove_orphans(dir: &Path, name: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let file = entry.file_name();
        let Some(pid) = temporary_pid(&file.to_string_lossy(), name) else {
            continue;
        };
        if pid != std::process::id() && !running(pid) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Writes `bytes` to `path` atomically (see the module's documentation).
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let (dir, name) = split(path)?;
    remove_orphans(&dir, &name);
    let n = SAVES.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(temporary_name(&name, std::process::id(), n));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // The rename itself made durable.
        if cfg!(unix) {
            File::open(&dir)?.sync_all()?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(Error::io(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_names_are_recognised_only_for_their_file() {
        let t = temporary_name("model.safetensors", 4242, 7);
        assert_eq!(temporary_pid(&t, "model.safetensors"), Some(4242));
        assert_eq!(temporary_pid(&t, "model"), None);
        assert_eq!(
            temporary_pid(".model.safetensors.x-1.tmp", "model.safetensors"),
            None
        );
        assert_eq!(
            temporary_pid("model.safetensors", "model.safetensors"),
            None
        );
    }
}
