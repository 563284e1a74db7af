//! Helpers for the snapshot tests: sparse files with known contents and
//! ways to see how much disk a file really uses.

use std::fs::{File, OpenOptions};
use std::io::Read as _;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::process::Command;

use rand::RngCore as _;

pub const MIB: u64 = 1024 * 1024;

/// Creates a file of `size` bytes that is a hole except for `pieces`
/// (offset, bytes). Returns nothing; read it back with [`sha256_of`].
pub fn sparse_file(path: &Path, size: u64, pieces: &[(u64, Vec<u8>)]) {
    let file = OpenOptions::new()
        .create_new(true)
        .write(true)
        .open(path)
        .expect("create sparse file");
    file.set_len(size).expect("set_len");
    for (offset, bytes) in pieces {
        file.write_all_at(bytes, *offset).expect("write piece");
    }
    file.sync_all().expect("sync");
}

pub fn random_bytes(len: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; len];
    rand::thread_rng().fill_bytes(&mut bytes);
    bytes
}

/// 512-byte blocks actually allocated (st_blocks).
pub fn allocated_blocks(path: &Path) -> u64 {
    std::fs::metadata(path).expect("stat").blocks()
}

/// Disk usage in KiB as `du -k` reports it (an independent view of
/// sparseness).
pub fn du_kib(path: &Path) -> u64 {
    let out = Command::new("du").arg("-k").arg(path).output().expect("run du");
    assert!(
        out.status.success(),
        "du failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .expect("du prints a number")
}

/// SHA-256 of a file's full logical contents (holes read as zeros).
pub fn sha256_of(path: &Path) -> String {
    use sha2::Digest as _;
    let mut file = File::open(path).expect("open");
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    hex::encode(hasher.finalize())
}

/// Whether two files have identical logical contents, by `cmp` (fast even
/// in debug builds, and independent of the code under test).
pub fn same_contents(a: &Path, b: &Path) -> bool {
    let status = Command::new("cmp").arg("-s").arg(a).arg(b).status().expect("run cmp");
    status.success()
}

/// Flips one bit of the byte at `offset`.
pub fn flip_byte(path: &Path, offset: u64) {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("open for corruption");
    let mut byte = [0u8; 1];
    file.read_exact_at(&mut byte, offset).expect("read byte");
    byte[0] ^= 0x01;
    file.write_all_at(&byte, offset).expect("write byte");
}

/// Names in a directory, sorted (to see that no temporary file is left).
pub fn dir_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}
