//! Data sets downloaded in Rust from a local HTTP server on 127.0.0.1 (there is no network
//! here): a good mirror, a truncated download, a corrupted one, a missing file; and
//! `load_data()` downloading into the cache when no directory has the files.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};

use nn::datasets::{fashion_mnist, mnist};

const FILES: [&str; 4] = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
];

/// How the server answers.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Good,
    /// The train images announced whole, the connection closed halfway.
    Truncated,
    /// One byte of the train images' compressed data flipped.
    Corrupted,
    /// Every file a 404.
    Missing,
}

/// Serves `{file}.gz` from `dir` under any path prefix, as `mode` says, for as long as the
/// test runs; returns the base URL.
fn serve(dir: &Path, mode: Mode) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}/data", listener.local_addr().unwrap());
    let dir = dir.to_path_buf();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request = String::new();
            if reader.read_line(&mut request).is_err() {
                continue;
            }
            // Skip the headers.
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let name = request
                .split_whitespace()
                .nth(1)
                .and_then(|p| p.rsplit('/').next())
                .unwrap_or("")
                .to_string();
            let body = std::fs::read(dir.join(&name)).ok();
            let _ = match (body, mode) {
                (None, _) | (_, Mode::Missing) => stream.write_all(
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                ),
                (Some(mut body), mode) => {
                    let images = name.starts_with("train-images");
                    let announced = body.len();
                    if images && mode == Mode::Corrupted {
                        let at = body.len() / 2;
                        body[at] ^= 0x55;
                    }
                    if images && mode == Mode::Truncated {
                        body.truncate(body.len() / 2);
                    }
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/gzip\r\n\
                         Content-Length: {announced}\r\nConnection: close\r\n\r\n"
                    );
                    stream
                        .write_all(head.as_bytes())
                        .and_then(|()| stream.write_all(&body))
                }
            };
        }
    });
    base
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("nn-download-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The names in `dir` (none expected after a failed download: no temporaries either).
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|r| {
            r.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn a_good_mirror_gives_the_same_data_as_the_local_files() {
    let source = mnist::locate().unwrap_or_else(|e| panic!("{e}"));
    let base = serve(&source, Mode::Good);
    let dir = tmp("good");
    mnist::download_from(&base, &dir).unwrap();
    let mut want: Vec<String> = FILES.iter().map(|f| format!("{f}.gz")).collect();
    want.sort();
    assert_eq!(names(&dir), want);
    let (a, b) = (
        mnist::load_data_from(&dir).unwrap(),
        mnist::load_data_from(&source).unwrap(),
    );
    assert_eq!(a.0 .0.data, b.0 .0.data);
    assert_eq!(a.1 .1, b.1 .1);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn truncated_corrupted_and_missing_downloads_leave_nothing() {
    let source = mnist::locate().unwrap_or_else(|e| panic!("{e}"));
    for (mode, expect) in [
        (Mode::Truncated, "downloading http://"),
        (Mode::Corrupted, "not kept"),
        (Mode::Missing, "404"),
    ] {
        let base = serve(&source, mode);
        let dir = tmp("bad");
        let err = mnist::download_from(&base, &dir).unwrap_err().to_string();
        assert!(
            err.contains("train-images-idx3-ubyte.gz") && err.contains(expect),
            "{err}"
        );
        assert_eq!(names(&dir), Vec::<String>::new(), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn fashion_mnist_downloads_are_checked_too() {
    let source = fashion_mnist::locate().unwrap_or_else(|e| panic!("{e}"));
    let dir = tmp("fashion");
    fashion_mnist::download_from(serve(&source, Mode::Good), &dir).unwrap();
    assert_eq!(names(&dir).len(), 4);
    // MNIST's files are not Fashion-MNIST's: the checksums tell them apart.
    let mnist_files = mnist::locate().unwrap();
    let other = tmp("fashion-other");
    let err = fashion_mnist::download_from(serve(&mnist_files, Mode::Good), &other)
        .unwrap_err()
        .to_string();
    assert!(err.contains("not the canonical"), "{err}");
    assert!(names(&other).is_empty());
    for d in [dir, other] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

/// `load_data()` in a child process whose HOME is an empty directory and whose mirror is the
/// local server: the files are downloaded into the XDG cache, then read from it, and found
/// there the next time without a download.
#[test]
fn load_data_downloads_into_the_cache_when_nothing_has_the_files() {
    let source = mnist::locate().unwrap_or_else(|e| panic!("{e}"));
    let home = tmp("home");
    let run = |url: &str| {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "child_load_data", "--ignored", "--nocapture"])
            .env("HOME", &home)
            .env_remove("NN_DATA_DIR")
            .env_remove("NN_MNIST_DIR")
            .env_remove("XDG_CACHE_HOME")
            .env("NN_MNIST_URL", url)
            .current_dir(&home)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let text = run(&serve(&source, Mode::Good));
    assert!(text.contains("LOADED 60000 10000"), "{text}");
    let cache = home.join(".cache/nn/datasets/mnist");
    assert_eq!(names(&cache).len(), 4);
    // The second time the cache has them: no server needed.
    let text = run("http://127.0.0.1:9/nothing-here");
    assert!(text.contains("LOADED 60000 10000"), "{text}");
    std::fs::remove_dir_all(&home).unwrap();
}

#[test]
#[ignore = "run by load_data_downloads_into_the_cache_when_nothing_has_the_files"]
fn child_load_data() {
    match mnist::load_data() {
        Ok(((train, _), (test, _))) => println!("LOADED {} {}", train.count, test.count),
        Err(e) => println!("{e}"),
    }
}
