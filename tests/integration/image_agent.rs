//! Built images carry hatch-agent: the minimal initramfs has the very binary
//! given and the modules of its transports, the debian root file system has
//! it with an enabled systemd unit; a new agent makes a new image, and a
//! binary that cannot run in a guest (dynamic) or none at all is refused
//! before any work with a message naming HATCH_AGENT_BIN.

use crate::common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::daemon::hatch_command_in;
use common::images::{agent_bin, build_minimal_recording, debian_image, minimal_image, test_build_env};
use common::netns::run_ok;
use hatch::image::{build_image, BuildEnv, BuildRequest, ImageError, ProgressEvent};
use hatch::model::ImageProfile;
use sha2::{Digest, Sha256};

fn sha256_of(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The names in a gzip'd cpio archive, read by the host's gzip and cpio.
fn cpio_names(archive: &Path) -> Vec<String> {
    let listing = Command::new("sh")
        .arg("-c")
        .arg("gzip -dc \"$1\" | cpio -t --quiet")
        .arg("sh")
        .arg(archive)
        .output()
        .expect("gzip | cpio");
    assert!(listing.status.success(), "{}", String::from_utf8_lossy(&listing.stderr));
    String::from_utf8_lossy(&listing.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// One member of a gzip'd cpio archive.
fn cpio_member(archive: &Path, name: &str) -> Vec<u8> {
    let out = Command::new("sh")
        .arg("-c")
        .arg("gzip -dc \"$1\" | cpio -i --quiet --to-stdout \"$2\"")
        .arg("sh")
        .arg(archive)
        .arg(name)
        .output()
        .expect("gzip | cpio -i");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// `debugfs -R <request>` on an ext4 image (read-only, nothing mounted).
fn debugfs(image: &Path, request: &str) -> String {
    run_ok("debugfs", &["-R", request, image.to_str().expect("utf-8 path")])
}

fn agent_bytes() -> Vec<u8> {
    std::fs::read(agent_bin()).expect("read the agent")
}

#[tokio::test(flavor = "multi_thread")]
async fn minimal_initramfs_holds_the_agent_and_its_transport_modules() {
    let image = minimal_image().await;
    let initrd = image.initrd_path.expect("initramfs");
    let names = cpio_names(&initrd);
    // /usr/sbin points at /bin in the initramfs' merged layout.
    assert!(names.iter().any(|n| n == "usr/sbin"), "no usr/sbin");
    assert!(names.iter().any(|n| n == "bin/hatch-agent"), "no hatch-agent");
    let installed = cpio_member(&initrd, "bin/hatch-agent");
    assert_eq!(
        sha256_of(&installed),
        sha256_of(&agent_bytes()),
        "the initramfs holds another agent"
    );
    for module in [
        "virtio_console.ko",
        "vsock.ko",
        "vmw_vsock_virtio_transport_common.ko",
        "vmw_vsock_virtio_transport.ko",
    ] {
        assert!(
            names.iter().any(|n| n.ends_with(&format!("/{module}"))),
            "{module} missing from the initramfs"
        );
    }
    let modules = String::from_utf8(cpio_member(&initrd, "etc/hatch/modules")).unwrap();
    assert!(
        modules.split_whitespace().any(|m| m == "vmw_vsock_virtio_transport")
            && modules.split_whitespace().any(|m| m == "virtio_console"),
        "/init does not load the transports: {modules}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn debian_root_has_the_agent_its_enabled_unit_and_modules_load_config() {
    let image = debian_image().await;
    let rootfs = image.rootfs_path.expect("rootfs");
    let stat = debugfs(&rootfs, "stat /usr/local/sbin/hatch-agent");
    assert!(stat.contains("Mode:  0755") && stat.contains("Type: regular"), "{stat}");
    let dir = tempfile::tempdir().unwrap();
    let dumped = dir.path().join("hatch-agent");
    debugfs(
        &rootfs,
        &format!("dump /usr/local/sbin/hatch-agent {}", dumped.display()),
    );
    assert_eq!(
        sha256_of(&std::fs::read(&dumped).unwrap()),
        sha256_of(&agent_bytes()),
        "the root file system holds another agent"
    );

    let unit = debugfs(&rootfs, "cat /etc/systemd/system/hatch-agent.service");
    for line in [
        "ExecStart=/usr/local/sbin/hatch-agent",
        "Restart=always",
        "After=systemd-modules-load.service ssh.service",
        "WantedBy=multi-user.target",
    ] {
        assert!(unit.lines().any(|l| l == line), "{line} missing:\n{unit}");
    }
    let wants = debugfs(
        &rootfs,
        "stat /etc/systemd/system/multi-user.target.wants/hatch-agent.service",
    );
    assert!(
        wants.contains("Type: symlink") && wants.contains("/etc/systemd/system/hatch-agent.service"),
        "the unit is not enabled: {wants}"
    );
    let modules = debugfs(&rootfs, "cat /etc/modules-load.d/hatch-agent.conf");
    for module in ["virtio_console", "vmw_vsock_virtio_transport"] {
        assert!(modules.lines().any(|l| l == module), "{module} not loaded:\n{modules}");
    }
}

/// The cache entry an image's initramfs came from (same inode).
fn cache_entry_of(env: &BuildEnv, initrd: &Path) -> PathBuf {
    let wanted = std::fs::metadata(initrd).unwrap();
    std::fs::read_dir(env.cache_dir.join("images"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|entry| {
            std::fs::metadata(entry.join("initramfs.cpio.gz"))
                .is_ok_and(|m| (m.dev(), m.ino()) == (wanted.dev(), wanted.ino()))
        })
        .expect("the image's cache entry")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_agent_binary_makes_a_new_image() {
    minimal_image().await;
    let dir = tempfile::tempdir().unwrap();
    // Trailing bytes leave a valid static ELF program with another hash.
    let changed = dir.path().join("hatch-agent");
    let mut bytes = agent_bytes();
    bytes.extend_from_slice(b"\0hatch test: another agent build\0");
    std::fs::write(&changed, &bytes).unwrap();

    let env = BuildEnv {
        agent_bin: Some(changed),
        ..test_build_env()
    };
    let (image, events) = build_minimal_recording(&env, "new-agent").await;
    let initrd = image.initrd_path.clone().expect("initramfs");
    let entry = cache_entry_of(&env, &initrd);
    let installed = cpio_member(&initrd, "bin/hatch-agent");
    // Leave no second minimal entry in the shared cache.
    std::fs::remove_dir_all(env.images_dir.join(&image.id)).unwrap();
    std::fs::remove_dir_all(&entry).unwrap();
    let _ = std::fs::remove_file(format!("{}.lock", entry.display()));

    assert!(
        !events.iter().any(|e| matches!(e, ProgressEvent::CacheHit { .. })),
        "an image with the old agent was reused: {events:?}"
    );
    assert_eq!(sha256_of(&installed), sha256_of(&bytes));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dynamic_or_missing_agent_is_refused_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let request = BuildRequest {
        profile: ImageProfile::Debian,
        name: None,
    };
    // The hatch binary links the host's libc dynamically.
    let dynamic = PathBuf::from(env!("CARGO_BIN_EXE_hatch"));
    let env = BuildEnv {
        agent_bin: Some(dynamic.clone()),
        ..BuildEnv::new(dir.path())
    };
    let error = build_image(&request, &env, &|_| {}).await.expect_err("dynamic agent");
    eprintln!("error shown to the user: {error}");
    assert!(
        matches!(
            error,
            ImageError::Invalid {
                field: "HATCH_AGENT_BIN",
                ..
            }
        ),
        "{error:?}"
    );
    let text = error.to_string();
    assert!(
        text.contains(&dynamic.display().to_string()) && text.contains("dynamically linked"),
        "{text}"
    );

    // No setting, and no hatch-agent beside this test program.
    let env = BuildEnv::new(dir.path());
    let error = build_image(&request, &env, &|_| {}).await.expect_err("no agent");
    eprintln!("error shown to the user: {error}");
    let text = error.to_string();
    assert!(text.starts_with("HATCH_AGENT_BIN: no hatch-agent binary"), "{text}");
    assert!(
        text.contains("cargo build -p hatch-agent"),
        "says how to build it: {text}"
    );
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "a refused build left files"
    );

    // The CLI says the same, with the flag's value.
    let out = hatch_command_in(
        None,
        &[
            "image",
            "build",
            "--profile",
            "minimal",
            "--agent-bin",
            dynamic.to_str().unwrap(),
        ],
        &[("HATCH_DATA_DIR", &dir.path().join("data").display().to_string())],
    )
    .output()
    .expect("run hatch");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("HATCH_AGENT_BIN") && stderr.contains("dynamically linked"),
        "{stderr}"
    );
}
