//! Packing and unpacking snapshot artefacts on a real filesystem: content
//! survives, holes stay holes, and damage is caught before restore.

use crate::common;

use common::snapshot::{
    allocated_blocks, dir_names, du_kib, flip_byte, random_bytes, same_contents, sha256_of, sparse_file, MIB,
};
use hatch::snapshot::{pack, unpack, ArtefactInfo, Compression, SnapshotError};

#[tokio::test]
async fn a_sparse_256_mib_disk_round_trips_and_stays_sparse() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (disk, artefact, restored) = (
        dir.path().join("disk.raw"),
        dir.path().join("disk.zst"),
        dir.path().join("restored.raw"),
    );
    let size = 256 * MIB;
    sparse_file(
        &disk,
        size,
        &[
            (0, random_bytes(MIB as usize)),
            (100 * MIB + 123, random_bytes(4096)),
            // Allocated but all zeros: must not come back allocated.
            (150 * MIB, vec![0u8; 8 * MIB as usize]),
            (size - 3, b"end".to_vec()),
        ],
    );

    let info = pack(&disk, &artefact, Compression::default()).await.expect("pack");
    assert_eq!(info.name, "disk.zst");
    assert_eq!(info.size_bytes, size);
    assert_eq!(info.compressed_bytes, std::fs::metadata(&artefact).expect("stat").len());
    assert!(
        info.compressed_bytes < 2 * MIB,
        "artefact is {} bytes",
        info.compressed_bytes
    );
    assert_eq!(info.sha256, sha256_of(&artefact));
    // The artefact is an ordinary zstd stream; the zstd tool agrees.
    let test = std::process::Command::new("zstd")
        .arg("-t")
        .arg("-q")
        .arg(&artefact)
        .status()
        .expect("zstd");
    assert!(test.success(), "zstd -t rejected the artefact");
    // Neither holes nor the allocated zeros are stored: the decompressed
    // container holds little more than the ~1 MiB of data.
    let stored = std::process::Command::new("zstd")
        .arg("-dcq")
        .arg(&artefact)
        .output()
        .expect("zstd -d");
    assert!(stored.status.success(), "zstd -d failed");
    assert!(
        stored.stdout.len() < (MIB + 64 * 1024) as usize,
        "container holds {} bytes",
        stored.stdout.len()
    );

    unpack(&artefact, &info, &restored).await.expect("unpack");
    assert_eq!(std::fs::metadata(&restored).expect("stat").len(), size);
    assert!(same_contents(&disk, &restored), "contents differ after round trip");

    // About 1 MiB + 8 KiB of data: the original holds 9+ MiB allocated, the
    // restored file only its data; neither is anywhere near 256 MiB.
    let (original_kib, restored_kib) = (du_kib(&disk), du_kib(&restored));
    assert!(original_kib > 9 * 1024, "original du {original_kib} KiB");
    assert!(
        restored_kib < 2 * 1024,
        "restored file uses {restored_kib} KiB: not sparse"
    );
    assert!(allocated_blocks(&restored) * 512 < 2 * MIB);
    assert_eq!(
        dir_names(dir.path()),
        ["disk.raw", "disk.zst", "restored.raw"],
        "no temporaries left"
    );
}

#[tokio::test]
async fn dense_odd_sized_and_empty_files_round_trip() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, contents) in [
        ("dense", random_bytes(3 * MIB as usize + 17)),
        ("tiny", b"x".to_vec()),
        ("empty", Vec::new()),
    ] {
        let src = dir.path().join(name);
        std::fs::write(&src, &contents).expect("write");
        let artefact = dir.path().join(format!("{name}.zst"));
        let info = pack(&src, &artefact, Compression::default()).await.expect("pack");
        assert_eq!(info.size_bytes, contents.len() as u64);
        let restored = dir.path().join(format!("{name}.out"));
        unpack(&artefact, &info, &restored).await.expect("unpack");
        assert_eq!(std::fs::read(&restored).expect("read"), contents, "{name}");
    }
}

async fn packed_sample(dir: &std::path::Path) -> (std::path::PathBuf, ArtefactInfo) {
    let src = dir.join("mem.raw");
    sparse_file(
        &src,
        64 * MIB,
        &[(MIB, random_bytes(2 * MIB as usize)), (40 * MIB, random_bytes(5000))],
    );
    let artefact = dir.join("mem.zst");
    let info = pack(&src, &artefact, Compression::default()).await.expect("pack");
    (artefact, info)
}

fn assert_corrupt(result: Result<(), SnapshotError>, what: &str) {
    match result {
        Err(SnapshotError::Corrupt { artefact, .. }) => assert_eq!(artefact, "mem.zst", "{what}"),
        other => panic!("{what}: expected Corrupt, got {other:?}"),
    }
}

#[tokio::test]
async fn one_corrupt_byte_is_refused_and_nothing_is_restored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (artefact, info) = packed_sample(dir.path()).await;
    let restored = dir.path().join("restored.raw");
    std::fs::write(&restored, b"previous").expect("write");

    flip_byte(&artefact, info.compressed_bytes / 2);
    assert_corrupt(unpack(&artefact, &info, &restored).await, "flipped byte");
    assert_eq!(
        std::fs::read(&restored).expect("read"),
        b"previous",
        "destination must stay untouched"
    );
    assert_eq!(
        dir_names(dir.path()),
        ["mem.raw", "mem.zst", "restored.raw"],
        "no temporaries left"
    );
}

#[tokio::test]
async fn records_that_do_not_match_the_artefact_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (artefact, info) = packed_sample(dir.path()).await;
    let restored = dir.path().join("restored.raw");

    let wrong_size = ArtefactInfo {
        size_bytes: info.size_bytes + 1,
        ..info.clone()
    };
    assert_corrupt(unpack(&artefact, &wrong_size, &restored).await, "logical size");
    let wrong_sha = ArtefactInfo {
        sha256: "00".repeat(32),
        ..info.clone()
    };
    assert_corrupt(unpack(&artefact, &wrong_sha, &restored).await, "sha256");

    let truncated = dir.path().join("mem.zst.cut");
    let bytes = std::fs::read(&artefact).expect("read");
    std::fs::write(&truncated, &bytes[..bytes.len() - 10]).expect("write");
    assert_corrupt(unpack(&truncated, &info, &restored).await, "truncated");
    assert!(!restored.exists());

    unpack(&artefact, &info, &restored)
        .await
        .expect("the intact artefact still unpacks");
}

#[tokio::test]
async fn holes_are_skipped_not_read() {
    // 1 TiB of holes around 4 KiB of data: reading the holes would take far
    // longer than the generous timeout below, skipping them takes no time.
    use std::os::unix::fs::FileExt as _;
    let dir = tempfile::tempdir().expect("tempdir");
    let (disk, artefact, restored) = (
        dir.path().join("big.raw"),
        dir.path().join("big.zst"),
        dir.path().join("big.out"),
    );
    let size = 1024 * 1024 * MIB;
    let data = random_bytes(4096);
    sparse_file(&disk, size, &[(size / 2, data.clone())]);

    let limit = std::time::Duration::from_secs(120);
    let info = tokio::time::timeout(limit, pack(&disk, &artefact, Compression::default()))
        .await
        .expect("pack skips holes")
        .expect("pack");
    assert_eq!(info.size_bytes, size);
    tokio::time::timeout(limit, unpack(&artefact, &info, &restored))
        .await
        .expect("unpack skips holes")
        .expect("unpack");

    let out = std::fs::File::open(&restored).expect("open");
    assert_eq!(out.metadata().expect("stat").len(), size);
    let mut back = vec![0u8; 4096];
    out.read_exact_at(&mut back, size / 2).expect("read");
    assert_eq!(back, data);
    assert!(allocated_blocks(&restored) <= 64, "restored file is not sparse");
}
