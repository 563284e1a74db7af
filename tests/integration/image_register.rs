//! Registering existing kernel/initrd/rootfs files: accepted files are
//! classified, and every bad input is refused naming the field.

use crate::common;

use std::path::{Path, PathBuf};

use common::images::minimal_image;
use hatch::image::{validate_boot_args, ImageError, ImportDirs, RegisterRequest};
use hatch::model::ImageProfile;

/// Files from anywhere but a data directory of Hatch's: these tests are
/// about the files' formats (confinement has its own tests).
fn register_image(req: &RegisterRequest) -> Result<hatch::model::Image, ImageError> {
    let data_dir = tempfile::tempdir().unwrap();
    hatch::image::register_image(req, &ImportDirs::new(&[PathBuf::from("/")], data_dir.path()))
}

fn request(kernel: &Path) -> RegisterRequest {
    RegisterRequest {
        name: "my-kernel".into(),
        kernel_path: kernel.to_path_buf(),
        ..Default::default()
    }
}

fn field_of(result: Result<hatch::model::Image, ImageError>) -> &'static str {
    match result {
        Err(ImageError::Invalid { field, .. }) => field,
        other => panic!("expected a validation error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn registers_elf_and_bzimage_kernels_with_their_files() {
    let image = minimal_image().await;
    let vmlinux = image.kernel_path.clone().expect("vmlinux");
    let bzimage = image.bzimage_path.clone().expect("bzImage");
    let initrd = image.initrd_path.clone().expect("initrd");

    let mut req = request(&vmlinux);
    req.initrd_path = Some(initrd.clone());
    req.boot_args = Some("quiet net.ifnames=0".into());
    let registered = register_image(&req).expect("register ELF");
    assert!(
        registered.id.starts_with("img-") && registered.id.len() == 12,
        "{}",
        registered.id
    );
    assert_eq!(registered.profile, ImageProfile::Registered);
    assert_eq!(registered.kernel_path.as_deref(), Some(vmlinux.as_path()));
    assert_eq!(registered.bzimage_path, None);
    assert_eq!(registered.initrd_path.as_deref(), Some(initrd.as_path()));
    assert_eq!(registered.login_user, "root");
    assert_eq!(registered.boot_args, "quiet net.ifnames=0");
    let expected = std::fs::metadata(&vmlinux).unwrap().len() + std::fs::metadata(&initrd).unwrap().len();
    assert_eq!(registered.size_bytes, expected);

    let registered = register_image(&request(&bzimage)).expect("register bzImage");
    assert_eq!(registered.kernel_path, None);
    assert_eq!(registered.bzimage_path.as_deref(), Some(bzimage.as_path()));
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_files_are_refused_naming_the_field() {
    let image = minimal_image().await;
    let vmlinux = image.kernel_path.clone().expect("vmlinux");
    let initrd = image.initrd_path.clone().expect("initrd");
    let dir = tempfile::tempdir().expect("tempdir");

    assert_eq!(
        field_of(register_image(&request(Path::new("/nonexistent/vmlinux")))),
        "kernel_path"
    );
    assert_eq!(
        field_of(register_image(&request(Path::new("relative/vmlinux")))),
        "kernel_path"
    );
    assert_eq!(
        field_of(register_image(&request(dir.path()))),
        "kernel_path",
        "a directory is no kernel"
    );
    assert_eq!(
        field_of(register_image(&request(&initrd))),
        "kernel_path",
        "an initramfs is no kernel"
    );

    let mut req = request(&vmlinux);
    req.initrd_path = Some(vmlinux.clone());
    assert_eq!(
        field_of(register_image(&req)),
        "initrd_path",
        "a kernel is not a cpio archive"
    );
    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "hello").unwrap();
    req.initrd_path = Some(text);
    assert_eq!(field_of(register_image(&req)), "initrd_path");
    req.initrd_path = Some(PathBuf::from("/nonexistent/initrd"));
    assert_eq!(field_of(register_image(&req)), "initrd_path");

    let mut req = request(&vmlinux);
    req.rootfs_path = Some(PathBuf::from("/nonexistent/rootfs.ext4"));
    assert_eq!(field_of(register_image(&req)), "rootfs_path");

    for name in ["", "-dash", "has space", "a/b", &"x".repeat(65)] {
        let mut req = request(&vmlinux);
        req.name = name.to_string();
        assert_eq!(field_of(register_image(&req)), "name", "{name:?}");
    }
    for user in ["Root", "1user", "a b", "x;y"] {
        let mut req = request(&vmlinux);
        req.login_user = Some(user.to_string());
        assert_eq!(field_of(register_image(&req)), "login_user", "{user:?}");
    }
    let mut req = request(&vmlinux);
    req.boot_args = Some("init=/bin/sh\nroot=/dev/sda".into());
    assert_eq!(field_of(register_image(&req)), "boot_args");
}

#[test]
fn boot_args_accept_plain_words_and_refuse_anything_else() {
    for ok in [
        "",
        "quiet",
        "console=ttyS0 net.ifnames=0",
        "hatch.heartbeat=1 root=LABEL=hatch-root",
        "ip=dhcp a.b-c_d=1,2:3/4+5@6%7",
    ] {
        validate_boot_args(ok).unwrap_or_else(|e| panic!("{ok:?} refused: {e}"));
    }
    let too_long = "a".repeat(hatch::image::MAX_BOOT_ARGS_LEN + 1);
    for bad in [
        "quiet\nmalicious",
        "a=\"b c\"",
        "x=$(reboot)",
        "a;b",
        "a|b",
        "--",
        "quiet -- init-arg",
        "é=1",
        "a\tb",
        "=value",
        "a=b'c",
        "a=b\\c",
        too_long.as_str(),
    ] {
        match validate_boot_args(bad) {
            Err(ImageError::Invalid { field: "boot_args", .. }) => {}
            other => panic!("{bad:?} should be refused, got {other:?}"),
        }
    }
}
