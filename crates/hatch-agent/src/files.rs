//! Files: atomic writes, streamed reads, deletes and listings.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Receiver;

use hatch_agent_proto::{DirEntry, EntryKind, ErrorCode, FileInfo, Kind, Reply, WriteFileRequest, MAX_PAYLOAD};

use crate::channel::{cancelled, error, io_error, Channel, Input};

/// An absolute path without NUL bytes.
fn absolute(path: &str) -> Result<&Path, Reply> {
    if !path.starts_with('/') {
        return Err(error(ErrorCode::Invalid, format!("path {path:?} is not absolute")));
    }
    if path.contains('\0') {
        return Err(error(ErrorCode::Invalid, "path contains a NUL byte"));
    }
    Ok(Path::new(path))
}

/// Writes the Data frames into a temporary file beside `path`, then
/// renames it over `path`: readers see the old file or the whole new one.
/// Refuses (before reading any data) a missing parent or a directory.
pub fn write(channel: &Channel, input: Receiver<Input>, request: &WriteFileRequest) -> Reply {
    let path = match absolute(&request.path) {
        Ok(path) => path,
        Err(reply) => return reply,
    };
    let mode = request.mode.unwrap_or(0o644);
    if mode > 0o7777 {
        return error(ErrorCode::Invalid, format!("mode {mode:o} has bits beyond 7777"));
    }
    if request.uid == Some(u32::MAX) || request.gid == Some(u32::MAX) {
        return error(ErrorCode::Invalid, "uid and gid must be below 4294967295");
    }
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return error(ErrorCode::Invalid, format!("{} names no file", path.display()));
    };
    if std::fs::symlink_metadata(path).is_ok_and(|meta| meta.is_dir()) {
        return error(ErrorCode::Invalid, format!("{} is a directory", path.display()));
    }
    match std::fs::metadata(parent) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => return error(ErrorCode::Invalid, format!("{} is not a directory", parent.display())),
        Err(e) => return io_error(&format!("directory {}", parent.display()), &e),
    }
    let mut temp = match TempFile::create(parent, name.as_bytes()) {
        Ok(temp) => temp,
        Err(e) => return io_error(&format!("creating a file in {}", parent.display()), &e),
    };
    let mut bytes = 0u64;
    loop {
        match input.recv() {
            Ok(Input::Data(data)) => {
                if let Err(e) = temp.file.write_all(&data) {
                    return io_error(&format!("writing {}", path.display()), &e);
                }
                bytes += data.len() as u64;
            }
            Ok(Input::Eof) => break,
            Ok(Input::Resize(_)) => {}
            // Cancelled, or the conversation is gone: the temporary file goes.
            Err(_) => return cancelled(),
        }
        if channel.control.is_cancelled() {
            return cancelled();
        }
    }
    match temp.commit(path, mode, request.uid, request.gid) {
        Ok(()) => Reply::Done { bytes },
        Err(e) => io_error(&format!("writing {}", path.display()), &e),
    }
}

/// Replaces an existing file's content atomically, keeping its mode and
/// owner (what the identity does to /etc/hostname and /etc/hosts).
pub fn replace(path: &Path, content: &[u8]) -> io::Result<()> {
    let meta = std::fs::metadata(path)?;
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "names no file"));
    };
    let mut temp = TempFile::create(parent, name.as_bytes())?;
    temp.file.write_all(content)?;
    temp.commit(path, meta.mode() & 0o7777, Some(meta.uid()), Some(meta.gid()))
}

/// A temporary file that is removed unless committed.
struct TempFile {
    path: PathBuf,
    file: File,
    committed: bool,
}

impl TempFile {
    fn create(dir: &Path, name: &[u8]) -> io::Result<TempFile> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        // Short enough for NAME_MAX whatever the target's name is.
        let mut temp_name = b".".to_vec();
        temp_name.extend_from_slice(&name[..name.len().min(100)]);
        let unique = format!(
            ".hatch-{}-{}.tmp",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        temp_name.extend_from_slice(unique.as_bytes());
        let path = dir.join(OsString::from_vec(temp_name));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        Ok(TempFile {
            path,
            file,
            committed: false,
        })
    }

    fn commit(mut self, path: &Path, mode: u32, uid: Option<u32>, gid: Option<u32>) -> io::Result<()> {
        // Owner before mode: chown clears set-id bits.
        if uid.is_some() || gid.is_some() {
            std::os::unix::fs::fchown(&self.file, uid, gid)?;
        }
        self.file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        self.file.sync_all()?;
        std::fs::rename(&self.path, path)?;
        self.committed = true;
        let dir = path.parent().unwrap_or(Path::new("/"));
        File::open(dir)?.sync_all()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// FileInfo (a Response frame), the content as Data frames, Eof, then the
/// final Done. A failure or Cancel midway ends the channel with an Error
/// instead of Eof and Done.
pub fn read(channel: &Channel, path: &str) -> Reply {
    let path = match absolute(path) {
        Ok(path) => path,
        Err(reply) => return reply,
    };
    // Non-blocking so that a FIFO cannot hang the open; it is refused below.
    let mut file = match OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(path) {
        Ok(file) => file,
        Err(e) => return io_error(&path.display().to_string(), &e),
    };
    let meta = match file.metadata() {
        Ok(meta) => meta,
        Err(e) => return io_error(&path.display().to_string(), &e),
    };
    if meta.is_dir() {
        return error(ErrorCode::Invalid, format!("{} is a directory", path.display()));
    }
    if !meta.is_file() {
        return error(ErrorCode::Invalid, format!("{} is not a regular file", path.display()));
    }
    let info = FileInfo {
        size: meta.len(),
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
    };
    if channel.send_reply(&Reply::FileInfo(info)).is_err() {
        return cancelled();
    }
    let mut buffer = vec![0u8; MAX_PAYLOAD];
    let mut bytes = 0u64;
    loop {
        if channel.control.is_cancelled() {
            return cancelled();
        }
        let count = match file.read(&mut buffer) {
            Ok(0) => break,
            Ok(count) => count,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return io_error(&format!("reading {}", path.display()), &e),
        };
        if channel.send(Kind::Data, buffer[..count].to_vec()).is_err() {
            return cancelled();
        }
        bytes += count as u64;
    }
    if channel.send(Kind::Eof, Vec::new()).is_err() {
        return cancelled();
    }
    Reply::Done { bytes }
}

/// Deletes a file, a symlink (not its target) or an empty directory;
/// Done says how many bytes the file had.
pub fn delete(path: &str) -> Reply {
    let path = match absolute(path) {
        Ok(path) => path,
        Err(reply) => return reply,
    };
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) => return io_error(&path.display().to_string(), &e),
    };
    let removed = if meta.is_dir() {
        std::fs::remove_dir(path).map(|()| 0)
    } else {
        std::fs::remove_file(path).map(|()| meta.len())
    };
    match removed {
        Ok(bytes) => Reply::Done { bytes },
        Err(e) if e.kind() == io::ErrorKind::DirectoryNotEmpty => error(
            ErrorCode::Invalid,
            format!("{} is a directory that is not empty", path.display()),
        ),
        Err(e) => io_error(&format!("deleting {}", path.display()), &e),
    }
}

/// The directory's entries, sorted by name, symlinks not followed. A
/// listing larger than one frame comes as Data frames, each a JSON array of
/// entries, before the final Listing with the rest.
pub fn list(channel: &Channel, path: &str) -> Reply {
    let path = match absolute(path) {
        Ok(path) => path,
        Err(reply) => return reply,
    };
    let entries = match read_entries(path) {
        Ok(entries) => entries,
        Err(reply) => return reply,
    };
    let (parts, last) = split_listing(entries);
    for part in parts {
        if channel.send(Kind::Data, part).is_err() {
            return cancelled();
        }
    }
    Reply::Listing { entries: last }
}

fn read_entries(path: &Path) -> Result<Vec<DirEntry>, Reply> {
    let describe = |e: io::Error| io_error(&path.display().to_string(), &e);
    if !std::fs::metadata(path).map_err(describe)?.is_dir() {
        return Err(error(
            ErrorCode::Invalid,
            format!("{} is not a directory", path.display()),
        ));
    }
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(path).map_err(describe)? {
        let entry = entry.map_err(describe)?;
        // Gone since the directory was read: not listed.
        let Ok(meta) = entry.metadata() else { continue };
        let kind = match meta.file_type() {
            t if t.is_symlink() => EntryKind::Symlink,
            t if t.is_dir() => EntryKind::Dir,
            t if t.is_file() => EntryKind::File,
            _ => EntryKind::Other,
        };
        entries.push(DirEntry {
            name: entry.file_name().to_string_lossy().into_owned(),
            kind,
            size: meta.len(),
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
            modified: meta.mtime(),
        });
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(entries)
}

/// Room left in a frame for the Listing reply's own JSON around its entries.
const LISTING_OVERHEAD: usize = 64;

/// Splits entries into JSON arrays that each fit a frame, keeping the last
/// group for the final reply.
fn split_listing(entries: Vec<DirEntry>) -> (Vec<Vec<u8>>, Vec<DirEntry>) {
    let budget = MAX_PAYLOAD - LISTING_OVERHEAD;
    let mut groups: Vec<Vec<DirEntry>> = vec![Vec::new()];
    let mut size = 2;
    for entry in entries {
        let length = serde_json::to_vec(&entry).map(|json| json.len()).unwrap_or(budget) + 1;
        if size + length > budget && !groups.last().is_some_and(Vec::is_empty) {
            groups.push(Vec::new());
            size = 2;
        }
        size += length;
        groups.last_mut().expect("one group at least").push(entry);
    }
    let last = groups.pop().unwrap_or_default();
    let parts = groups
        .iter()
        .map(|group| serde_json::to_vec(group).expect("entries serialize"))
        .collect();
    (parts, last)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: String) -> DirEntry {
        DirEntry {
            name,
            kind: EntryKind::File,
            size: u64::MAX,
            mode: 0o644,
            uid: u32::MAX,
            gid: u32::MAX,
            modified: i64::MIN,
        }
    }

    #[test]
    fn a_large_listing_is_split_into_frames_that_fit() {
        let entries: Vec<DirEntry> = (0..5000).map(|n| entry(format!("{n:0>200}"))).collect();
        let (parts, last) = split_listing(entries.clone());
        assert!(parts.len() > 10);
        let mut joined: Vec<DirEntry> = Vec::new();
        for part in &parts {
            assert!(part.len() <= MAX_PAYLOAD);
            joined.extend(serde_json::from_slice::<Vec<DirEntry>>(part).unwrap());
        }
        let reply = serde_json::to_vec(&Reply::Listing { entries: last.clone() }).unwrap();
        assert!(reply.len() <= MAX_PAYLOAD);
        joined.extend(last);
        assert_eq!(joined, entries);
    }

    #[test]
    fn a_small_listing_is_one_reply() {
        let (parts, last) = split_listing(vec![entry("a".into())]);
        assert!(parts.is_empty());
        assert_eq!(last.len(), 1);
        assert_eq!(split_listing(Vec::new()), (Vec::new(), Vec::new()));
    }
}
