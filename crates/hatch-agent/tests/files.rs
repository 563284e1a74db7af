//! File requests against the real agent binary (which, in these tests,
//! works on the host's own files in a temporary directory).

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use common::{error_of, Host};
use hatch_agent_proto::{EntryKind, ErrorCode, Kind, Reply, Request, WriteFileRequest};
use sha2::{Digest, Sha256};

fn write_request(path: &std::path::Path) -> WriteFileRequest {
    WriteFileRequest {
        path: path.to_str().unwrap().into(),
        mode: None,
        uid: None,
        gid: None,
    }
}

#[test]
fn fifty_mebibytes_round_trip_with_mode_and_owner() {
    let (host, mut conn) = Host::start();
    let path = host.path("big.bin");
    let mut content = Vec::with_capacity(50 << 20);
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    while content.len() < 50 << 20 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        content.extend_from_slice(&state.to_le_bytes());
    }
    let request = WriteFileRequest {
        mode: Some(0o640),
        uid: Some(65534),
        gid: Some(65534),
        ..write_request(&path)
    };
    assert_eq!(conn.write_file(request, &content), Reply::Done { bytes: 50 << 20 });
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!((meta.mode() & 0o7777, meta.uid(), meta.gid()), (0o640, 65534, 65534));
    let (info, read) = conn.read_file(&path).unwrap();
    assert_eq!(
        (info.size, info.mode, info.uid, info.gid),
        (50 << 20, 0o640, 65534, 65534)
    );
    assert_eq!(Sha256::digest(&read), Sha256::digest(&content));
    // No temporary file is left beside it.
    let names: Vec<_> = std::fs::read_dir(host.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

#[test]
fn a_write_replaces_the_file_with_the_default_mode() {
    let (host, mut conn) = Host::start();
    let path = host.path("config");
    std::fs::write(&path, "old content that is longer").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(conn.write_file(write_request(&path), b"new"), Reply::Done { bytes: 3 });
    assert_eq!(std::fs::read(&path).unwrap(), b"new");
    assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o7777, 0o644);
    assert_eq!(
        conn.write_file(write_request(&host.path("empty")), b""),
        Reply::Done { bytes: 0 }
    );
    assert_eq!(std::fs::read(host.path("empty")).unwrap(), b"");
}

#[test]
fn missing_and_unusable_paths_are_errors() {
    let (host, mut conn) = Host::start();
    let missing = host.path("no/such/dir/file");
    // Refused before the data: the reply comes without waiting for Eof.
    let channel = conn.open(&Request::WriteFile(write_request(&missing)));
    assert_eq!(error_of(conn.reply(channel).1).code, ErrorCode::NotFound);
    assert!(!host.path("no").exists());
    assert_eq!(
        error_of(conn.read_file(&missing).unwrap_err()).code,
        ErrorCode::NotFound
    );
    assert_eq!(
        error_of(conn.read_file(host.dir.path()).unwrap_err()).code,
        ErrorCode::Invalid
    );
    let into_a_directory = conn.write_file(write_request(host.dir.path()), b"x");
    assert_eq!(error_of(into_a_directory).code, ErrorCode::Invalid);
    for bad in ["relative/path", "/tmp/nul\0byte"] {
        let reply = conn.request(&Request::ReadFile { path: bad.into() });
        assert_eq!(error_of(reply).code, ErrorCode::Invalid, "{bad:?}");
        let reply = conn.request(&Request::DeleteFile { path: bad.into() });
        assert_eq!(error_of(reply).code, ErrorCode::Invalid, "{bad:?}");
    }
    let path = missing.to_str().unwrap().to_string();
    assert_eq!(
        error_of(conn.request(&Request::DeleteFile { path: path.clone() })).code,
        ErrorCode::NotFound
    );
    assert_eq!(
        error_of(conn.request(&Request::ListDir { path })).code,
        ErrorCode::NotFound
    );
    let file = host.path("plain");
    std::fs::write(&file, "x").unwrap();
    let listing = conn.request(&Request::ListDir {
        path: file.to_str().unwrap().into(),
    });
    assert_eq!(error_of(listing).code, ErrorCode::Invalid);
}

#[test]
fn listing_describes_entries_without_following_symlinks() {
    let (host, mut conn) = Host::start();
    std::fs::write(host.path("a.txt"), "hello").unwrap();
    std::fs::set_permissions(host.path("a.txt"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::create_dir(host.path("sub")).unwrap();
    std::os::unix::fs::symlink("/no/such/target", host.path("link")).unwrap();
    let Reply::Listing { entries } = conn.request(&Request::ListDir {
        path: host.dir.path().to_str().unwrap().into(),
    }) else {
        panic!("no listing")
    };
    let summary: Vec<(&str, EntryKind)> = entries.iter().map(|e| (e.name.as_str(), e.kind)).collect();
    assert_eq!(
        summary,
        [
            ("a.txt", EntryKind::File),
            ("agent.sock", EntryKind::Other),
            ("link", EntryKind::Symlink),
            ("sub", EntryKind::Dir)
        ]
    );
    assert_eq!((entries[0].size, entries[0].mode, entries[0].uid), (5, 0o600, 0));
    assert!(entries[0].modified > 1_600_000_000);
}

#[test]
fn a_large_directory_is_listed_whole_across_frames() {
    let (host, mut conn) = Host::start();
    let dir = host.path("many");
    std::fs::create_dir(&dir).unwrap();
    for n in 0..2000 {
        std::fs::write(dir.join(format!("file-with-a-longish-name-{n:05}")), "").unwrap();
    }
    let channel = conn.open(&Request::ListDir {
        path: dir.to_str().unwrap().into(),
    });
    let (frames, reply) = conn.reply(channel);
    assert!(!frames.is_empty(), "2000 entries fit no single frame");
    let mut entries: Vec<hatch_agent_proto::DirEntry> = Vec::new();
    for frame in frames {
        assert_eq!(frame.kind, Kind::Data);
        entries.extend(serde_json::from_slice::<Vec<_>>(&frame.payload).unwrap());
    }
    let Reply::Listing { entries: rest } = reply else {
        panic!("no listing")
    };
    entries.extend(rest);
    assert_eq!(entries.len(), 2000);
    assert!(entries.windows(2).all(|pair| pair[0].name < pair[1].name));
}

#[test]
fn delete_removes_files_and_empty_directories_only() {
    let (host, mut conn) = Host::start();
    let path = |name: &str| host.path(name).to_str().unwrap().to_string();
    std::fs::write(host.path("f"), "12345").unwrap();
    std::fs::create_dir(host.path("empty")).unwrap();
    std::fs::create_dir(host.path("full")).unwrap();
    std::fs::write(host.path("full/x"), "").unwrap();
    assert_eq!(
        conn.request(&Request::DeleteFile { path: path("f") }),
        Reply::Done { bytes: 5 }
    );
    assert!(!host.path("f").exists());
    assert_eq!(
        conn.request(&Request::DeleteFile { path: path("empty") }),
        Reply::Done { bytes: 0 }
    );
    assert!(!host.path("empty").exists());
    let full = conn.request(&Request::DeleteFile { path: path("full") });
    assert_eq!(error_of(full).code, ErrorCode::Invalid);
    assert!(host.path("full/x").exists());
}

#[test]
fn a_cancelled_write_leaves_nothing_behind() {
    let (host, mut conn) = Host::start();
    let path = host.path("partial");
    let channel = conn.open(&Request::WriteFile(write_request(&path)));
    conn.send_data(channel, &[7u8; 200_000]);
    conn.send(channel, Kind::Cancel, Vec::new());
    assert!(matches!(conn.reply(channel).1, Reply::Error(_)));
    let names: Vec<_> = std::fs::read_dir(host.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["agent.sock"]);
}
