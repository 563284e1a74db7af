use super::*;
use crate::sys::clone_file::clone_file;

/// The artefact file at `path`, as a store hands it over.
fn open(path: &Path) -> ObjectReader {
    Box::new(File::open(path).unwrap())
}

const MIB: u64 = 1 << 20;

/// A 32 MiB "image": data at 0-2 MiB and 8-9 MiB, a zero data block at
/// 12 MiB, holes elsewhere.
fn image(path: &Path) {
    let file = File::create_new(path).unwrap();
    file.set_len(32 * MIB).unwrap();
    let data: Vec<u8> = (0..2 * MIB).map(|i| (i % 253) as u8 + 1).collect();
    file.write_all_at(&data, 0).unwrap();
    file.write_all_at(&data[..MIB as usize], 8 * MIB).unwrap();
    file.write_all_at(&vec![0u8; BLOCK as usize], 12 * MIB).unwrap();
}

fn write_at(path: &Path, offset: u64, data: &[u8]) {
    File::options()
        .write(true)
        .open(path)
        .unwrap()
        .write_all_at(data, offset)
        .unwrap();
}

/// A temporary directory with an image `rootfs` and its clone `disk`.
fn image_and_clone() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let (base, disk) = (dir.path().join("rootfs"), dir.path().join("disk"));
    image(&base);
    clone_file(&base, &disk).unwrap();
    (dir, base, disk)
}

fn base_of(info: &ArtefactInfo) -> &DiskBase {
    info.base.as_ref().expect("a diff records its base")
}

#[tokio::test]
async fn a_disk_comes_back_byte_identical_from_base_and_differing_blocks() {
    let (dir, base, disk) = image_and_clone();
    // The guest writes a file (two blocks), overwrites a base block with
    // zeros (comes back as zeros), writes into a hole, and grows the disk
    // by an unaligned amount with data in the tail.
    write_at(&disk, 5 * MIB + 100, &vec![7u8; BLOCK as usize]);
    write_at(&disk, 8 * MIB, &vec![0u8; BLOCK as usize]);
    write_at(&disk, 20 * MIB, b"hello");
    write_at(&disk, 40 * MIB + 3, b"grown");

    let packed = dir.path().join("disk-diff.zst");
    let info = pack_disk_diff(&disk, &base, "img-1", &packed, Compression::default())
        .await
        .unwrap();
    assert_eq!(info.size_bytes, 40 * MIB + 8);
    assert_eq!(base_of(&info).image_id, "img-1");
    assert_eq!(base_of(&info).size_bytes, 32 * MIB);
    // Five blocks differ (two for the file, the zeroed one, the hole, the tail).
    assert!(
        info.compressed_bytes < 5 * BLOCK / 2,
        "{} bytes stored",
        info.compressed_bytes
    );

    let restored = dir.path().join("restored");
    unpack_disk_diff(open(&packed), &info, &base, &restored).await.unwrap();
    assert!(
        std::fs::read(&restored).unwrap() == std::fs::read(&disk).unwrap(),
        "restored disk differs"
    );
    let blocks = |p: &Path| std::fs::metadata(p).unwrap().blocks();
    assert!(
        blocks(&restored) <= blocks(&disk) + 128,
        "holes were filled: {} vs {}",
        blocks(&restored),
        blocks(&disk)
    );
}

#[tokio::test]
async fn an_unchanged_disk_stores_nothing_but_a_header() {
    let (dir, base, disk) = image_and_clone();
    let info = pack_disk_diff(&disk, &base, "img-1", &dir.path().join("d.zst"), Compression::default())
        .await
        .unwrap();
    assert!(info.compressed_bytes < 200, "{info:?}");
}

#[test]
fn the_digest_depends_on_content_not_on_holes() {
    let dir = tempfile::tempdir().unwrap();
    let (sparse, dense) = (dir.path().join("sparse"), dir.path().join("dense"));
    image(&sparse);
    // The same bytes with every block written out.
    std::fs::write(&dense, std::fs::read(&sparse).unwrap()).unwrap();
    assert_eq!(base_digest(&sparse).unwrap(), base_digest(&dense).unwrap());
    write_at(&dense, 30 * MIB, b"x");
    assert_ne!(base_digest(&sparse).unwrap(), base_digest(&dense).unwrap());
}

#[tokio::test]
async fn a_changed_or_missing_base_is_refused_naming_the_image() {
    let (dir, base, disk) = image_and_clone();
    write_at(&disk, 0, b"changed");
    let packed = dir.path().join("disk-diff.zst");
    let info = pack_disk_diff(&disk, &base, "img-7", &packed, Compression::default())
        .await
        .unwrap();
    check_disk_base(&base, base_of(&info)).await.unwrap();

    let restored = dir.path().join("restored");
    write_at(&base, 9 * MIB, b"edited in place");
    for error in [
        check_disk_base(&base, base_of(&info)).await.unwrap_err(),
        unpack_disk_diff(open(&packed), &info, &base, &restored)
            .await
            .unwrap_err(),
    ] {
        assert!(matches!(error, SnapshotError::BaseChanged { .. }), "{error}");
        let message = error.to_string();
        assert!(
            message.contains("image img-7") && message.contains("has changed"),
            "{message}"
        );
    }
    assert!(!restored.exists());

    std::fs::remove_file(&base).unwrap();
    let error = check_disk_base(&base, base_of(&info)).await.unwrap_err();
    assert!(error.to_string().contains("is missing"), "{error}");
}

#[tokio::test]
async fn a_damaged_diff_is_corrupt_and_writes_nothing() {
    let (dir, base, disk) = image_and_clone();
    write_at(&disk, 3 * MIB, b"data");
    let packed = dir.path().join("disk-diff.zst");
    let info = pack_disk_diff(&disk, &base, "img-1", &packed, Compression::default())
        .await
        .unwrap();
    let mut bytes = std::fs::read(&packed).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&packed, bytes).unwrap();
    let restored = dir.path().join("restored");
    let error = unpack_disk_diff(open(&packed), &info, &base, &restored)
        .await
        .unwrap_err();
    assert!(matches!(error, SnapshotError::Corrupt { .. }), "{error}");
    assert!(!restored.exists());
}

#[test]
fn block_ranges_round_out_and_merge() {
    let b = BLOCK;
    assert_eq!(
        block_ranges(vec![(3 * b + 1, 4 * b), (0, 10), (b, 2 * b + 1), (10 * b, 11 * b)]),
        [(0, 4), (10, 11)]
    );
    assert!(block_ranges(Vec::new()).is_empty());
}
