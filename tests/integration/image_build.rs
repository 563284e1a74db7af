//! Building images: the cache makes a rebuild with identical inputs reuse
//! the artefacts (new id, shared files), the initramfs holds what the
//! minimal guest needs, and failures (unreachable mirror, bad input) give a
//! precise error and leave no image directory behind.

use crate::common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use common::images::{agent_bin, build_minimal_recording, minimal_image, test_build_env};
use hatch::image::{build_image, BuildEnv, BuildRequest, ImageError, ProgressEvent};
use hatch::model::ImageProfile;

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread")]
async fn rebuilding_with_identical_inputs_reuses_the_cache() {
    let first = minimal_image().await;
    let env = test_build_env();
    let (second, events) = build_minimal_recording(&env, "again").await;

    assert!(
        events.iter().any(|e| matches!(e, ProgressEvent::CacheHit { .. })),
        "no cache hit: {events:?}"
    );
    assert!(
        !events.iter().any(|e| matches!(e, ProgressEvent::Download { .. })),
        "downloaded again: {events:?}"
    );
    assert!(matches!(events.last(), Some(ProgressEvent::Finished { image_id, .. }) if *image_id == second.id));

    assert_ne!(first.id, second.id, "every build is a new image");
    assert_eq!(second.name, "again");
    assert_eq!(second.profile, ImageProfile::Minimal);
    assert_eq!(second.login_user, "root");
    assert_eq!(second.rootfs_path, None);
    assert_eq!(second.size_bytes, first.size_bytes);
    let (a, b) = (first.kernel_path.unwrap(), second.kernel_path.unwrap());
    assert_eq!(a.parent().unwrap().parent(), Some(env.images_dir.as_path()));
    assert_eq!(b.parent().unwrap(), env.images_dir.join(&second.id));
    let (ma, mb) = (std::fs::metadata(&a).unwrap(), std::fs::metadata(&b).unwrap());
    assert_eq!(
        (ma.dev(), ma.ino()),
        (mb.dev(), mb.ino()),
        "cached vmlinux should be shared, not copied"
    );
    assert_eq!(ma.mode() & 0o222, 0, "shared artefacts must be read-only");
}

#[tokio::test(flavor = "multi_thread")]
async fn cache_entries_unused_for_a_week_are_pruned_after_a_build() {
    let env = test_build_env();
    let entries_dir = env.cache_dir.join("images");
    std::fs::create_dir_all(&entries_dir).unwrap();
    let suffix = hatch::model::random_id("test", 8);
    let (old, recent) = (
        entries_dir.join(format!("minimal-old{suffix}")),
        entries_dir.join(format!("minimal-new{suffix}")),
    );
    for dir in [&old, &recent] {
        std::fs::create_dir(dir).unwrap();
        std::fs::write(dir.join("vmlinux"), b"stale").unwrap();
    }
    let eight_days_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(8 * 24 * 3600);
    std::fs::File::open(&old).unwrap().set_modified(eight_days_ago).unwrap();

    let request = BuildRequest {
        profile: ImageProfile::Minimal,
        name: None,
    };
    let image = build_image(&request, &env, &|_| {}).await.expect("build");
    assert!(!old.exists(), "an entry unused for 8 days survived");
    assert!(recent.exists(), "a recently used entry was pruned");
    assert!(image.kernel_path.unwrap().exists(), "the entry just used was pruned");
    std::fs::remove_dir_all(&recent).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn minimal_initramfs_holds_init_busybox_dropbear_and_modules() {
    let image = minimal_image().await;
    let initrd = image.initrd_path.expect("initramfs");
    // Read it back with the host's own gzip and cpio, not with our code.
    let listing = Command::new("sh")
        .arg("-c")
        .arg("gzip -dc \"$1\" | cpio -t --quiet")
        .arg("sh")
        .arg(&initrd)
        .output()
        .expect("gzip | cpio");
    assert!(listing.status.success(), "{}", String::from_utf8_lossy(&listing.stderr));
    let names: Vec<String> = String::from_utf8_lossy(&listing.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    let has = |wanted: &str| names.iter().any(|n| n == wanted);
    let has_suffix = |suffix: &str| names.iter().any(|n| n.ends_with(suffix));
    for wanted in [
        "init",
        "bin/busybox",
        "bin/sh",
        "bin/udhcpc",
        "bin/dropbear",
        "bin/dropbearkey",
        "lib64/ld-linux-x86-64.so.2",
        "lib/x86_64-linux-gnu/libc.so.6",
        "lib/x86_64-linux-gnu/libtomcrypt.so.1",
        "lib/hatch/common.sh",
        "etc/udhcpc.script",
        "etc/passwd",
        "dev/console",
    ] {
        assert!(has(wanted), "{wanted} missing from the initramfs");
    }
    for module in [
        "virtio_mmio.ko",
        "virtio_blk.ko",
        "virtio_net.ko",
        "net_failover.ko",
        "vfat.ko",
        "nls_cp437.ko",
        "modules.dep",
    ] {
        assert!(has_suffix(module), "{module} missing from the initramfs");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn unreachable_mirror_fails_clearly_and_leaves_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Nothing listens on the discard port of the loopback address.
    let env = BuildEnv {
        debian_mirror: Some("http://127.0.0.1:9/debian".into()),
        agent_bin: Some(agent_bin()),
        ..BuildEnv::new(dir.path())
    };
    let request = BuildRequest {
        profile: ImageProfile::Minimal,
        name: None,
    };
    let error = build_image(&request, &env, &|_| {}).await.expect_err("no mirror");
    eprintln!("error shown to the user: {error}");
    assert!(matches!(error, ImageError::Mirror(_)), "{error:?}");
    assert!(
        error.to_string().contains("127.0.0.1:9"),
        "the message should name the mirror: {error}"
    );
    assert!(
        entries(&env.images_dir).is_empty(),
        "left behind: {:?}",
        entries(&env.images_dir)
    );
    assert!(!env.cache_dir.join("images").exists() || entries(&env.cache_dir.join("images")).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_requests_are_refused_before_any_work() {
    let dir = tempfile::tempdir().expect("tempdir");
    let env = BuildEnv {
        agent_bin: Some(agent_bin()),
        ..BuildEnv::new(dir.path())
    };
    let cases = [
        (
            BuildRequest {
                profile: ImageProfile::Minimal,
                name: Some("bad name".into()),
            },
            None,
            "name",
        ),
        (
            BuildRequest {
                profile: ImageProfile::Registered,
                name: None,
            },
            None,
            "profile",
        ),
        (
            BuildRequest {
                profile: ImageProfile::Minimal,
                name: None,
            },
            Some("ftp://mirror/debian"),
            "HATCH_DEBIAN_MIRROR",
        ),
        (
            BuildRequest {
                profile: ImageProfile::Minimal,
                name: None,
            },
            Some("http://x/ debian"),
            "HATCH_DEBIAN_MIRROR",
        ),
    ];
    for (request, mirror, field) in cases {
        let env = BuildEnv {
            debian_mirror: mirror.map(str::to_string),
            ..env.clone()
        };
        match build_image(&request, &env, &|_| {}).await {
            Err(ImageError::Invalid { field: got, .. }) => {
                assert_eq!(got, field, "{request:?} {mirror:?}")
            }
            other => panic!("{request:?} {mirror:?}: expected an error for {field}, got {other:?}"),
        }
    }
    assert!(entries(dir.path()).iter().all(|n| n != "images") || entries(&env.images_dir).is_empty());
}
