//! Kernel format detection and vmlinux extraction on the real Debian cloud
//! kernel that the `minimal` build fetched.

use crate::common;

use std::path::Path;

use common::images::minimal_image;
use hatch::image::elf::Elf;
use hatch::image::{detect_kernel_format, extract_vmlinux, ImageError, KernelFormat};

#[tokio::test(flavor = "multi_thread")]
async fn detects_bzimage_elf_and_rejects_other_files() {
    let image = minimal_image().await;
    let bzimage = image.bzimage_path.as_deref().expect("bzImage");
    let vmlinux = image.kernel_path.as_deref().expect("vmlinux");
    assert_eq!(
        detect_kernel_format(bzimage).expect("bzImage detected"),
        KernelFormat::Bzimage
    );
    assert_eq!(detect_kernel_format(vmlinux).expect("ELF detected"), KernelFormat::Elf);

    let initrd = image.initrd_path.as_deref().expect("initrd");
    assert!(matches!(detect_kernel_format(initrd), Err(ImageError::Kernel { .. })));
    let missing = Path::new("/nonexistent/vmlinuz");
    assert!(matches!(detect_kernel_format(missing), Err(ImageError::Io { .. })));

    let dir = tempfile::tempdir().expect("tempdir");
    let arm = dir.path().join("not-x86.elf");
    let mut header = std::fs::read(vmlinux).expect("read vmlinux")[..4096].to_vec();
    header[18] = 183; // EM_AARCH64
    std::fs::write(&arm, &header).expect("write");
    assert!(
        matches!(detect_kernel_format(&arm), Err(ImageError::Kernel { .. })),
        "an arm64 ELF is not a usable kernel"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn extracts_an_elf_vmlinux_with_the_pvh_note_from_the_debian_bzimage() {
    let image = minimal_image().await;
    let bzimage = image.bzimage_path.as_deref().expect("bzImage");
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("vmlinux");
    extract_vmlinux(bzimage, &out).expect("extract");

    let data = std::fs::read(&out).expect("read extracted");
    let elf = Elf::parse(&data).expect("extracted file is ELF64");
    assert_eq!(elf.machine, 62, "x86_64");
    assert!(
        elf.has_pvh_note(),
        "no XEN_ELFNOTE_PHYS32_ENTRY note: Firecracker/QEMU could not use the PVH entry"
    );
    // `file` is an independent judge of what was written.
    let described = std::process::Command::new("file")
        .arg("-b")
        .arg(&out)
        .output()
        .expect("file");
    let described = String::from_utf8_lossy(&described.stdout);
    assert!(
        described.starts_with("ELF 64-bit LSB executable, x86-64"),
        "{described}"
    );
    // The image's own vmlinux is the same extraction.
    assert_eq!(
        data,
        std::fs::read(image.kernel_path.as_deref().expect("vmlinux")).expect("read")
    );
    // No temporary files left next to the output.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .expect("ls")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(names, ["vmlinux"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn extraction_rejects_truncated_and_non_bzimage_files() {
    let image = minimal_image().await;
    let bzimage = std::fs::read(image.bzimage_path.as_deref().expect("bzImage")).expect("read");
    let dir = tempfile::tempdir().expect("tempdir");
    let truncated = dir.path().join("truncated");
    std::fs::write(&truncated, &bzimage[..bzimage.len() / 2]).expect("write");
    let out = dir.path().join("out");
    let error = extract_vmlinux(&truncated, &out).expect_err("half a bzImage");
    assert!(error.to_string().contains("beyond the end"), "{error}");
    let error = extract_vmlinux(image.kernel_path.as_deref().expect("vmlinux"), &out).expect_err("ELF input");
    assert!(matches!(error, ImageError::Kernel { .. }), "{error}");
    assert!(!out.exists(), "a failed extraction left an output file");
}

/// Extracting onto a 1 MiB tmpfs (mounted in a private mount namespace of a
/// dedicated thread) hits ENOSPC, reported as DiskFull, with nothing left.
#[tokio::test(flavor = "multi_thread")]
async fn disk_full_is_reported_as_such() {
    let image = minimal_image().await;
    let bzimage = image.bzimage_path.clone().expect("bzImage");
    let dir = tempfile::tempdir().expect("tempdir");
    let small = dir.path().to_path_buf();
    let result = std::thread::spawn(move || {
        private_tmpfs(&small, "size=1m");
        let out = small.join("vmlinux");
        let result = extract_vmlinux(&bzimage, &out);
        let leftovers = std::fs::read_dir(&small).expect("ls").count();
        (result, out, leftovers)
    })
    .join()
    .expect("thread");
    let (result, out, leftovers) = result;
    match result {
        Err(ImageError::DiskFull(path)) => assert_eq!(path, out),
        other => panic!("expected DiskFull, got {other:?}"),
    }
    assert_eq!(leftovers, 0, "a partial file was left on the full file system");
}

/// Mounts a tmpfs on `dir`, visible only to the calling thread: the thread
/// leaves the process's shared fs context and mount namespace first, so
/// nothing changes for the rest of the host. (Plain libc calls: the
/// namespace/mount wrappers need nix features the crate does not enable.)
fn private_tmpfs(dir: &Path, options: &str) {
    use nix::libc;
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    // SAFETY: plain syscalls with valid NUL-terminated strings; they only
    // affect this thread's own namespace.
    unsafe {
        assert_eq!(
            libc::unshare(libc::CLONE_FS | libc::CLONE_NEWNS),
            0,
            "unshare: {}",
            std::io::Error::last_os_error()
        );
        let root = CString::new("/").unwrap();
        let none = std::ptr::null();
        let private = libc::mount(
            none,
            root.as_ptr(),
            none,
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        );
        assert_eq!(private, 0, "make mounts private: {}", std::io::Error::last_os_error());
        let (fstype, target, data) = (
            CString::new("tmpfs").unwrap(),
            CString::new(dir.as_os_str().as_bytes()).unwrap(),
            CString::new(options).unwrap(),
        );
        let mounted = libc::mount(
            fstype.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            data.as_ptr().cast(),
        );
        assert_eq!(mounted, 0, "mount tmpfs: {}", std::io::Error::last_os_error());
    }
}
