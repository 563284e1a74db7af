//! Pure logic of the image builder: reading the host's apt configuration,
//! apt-cache output, modules.dep closures, and the cpio writer (checked
//! with the host's own cpio).

use std::path::Path;

use hatch::image::apt_sources::{bookworm_sources, build_sources, parse_deb822, parse_one_line, AptSource};
use hatch::image::{module_closure, parse_show, CpioWriter, ImageError};

const DEB822: &str = "\
Types: deb
# a comment
URIs: http://archive.example/debian
Suites: trixie trixie-updates
Components: main contrib
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb deb-src
URIs: http://security.example/debian-security
Suites: trixie-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: https://thirdparty.example/node
Suites: nodistro
Components: main

Types: deb
Enabled: no
URIs: http://disabled.example/debian
Suites: bookworm
Components: main
";

#[test]
fn host_sources_of_any_release_become_bookworm_sources() {
    let entries = parse_deb822(DEB822);
    assert_eq!(entries.len(), 4, "{entries:?}");
    let sources = bookworm_sources(&entries);
    let lines: Vec<String> = sources.iter().map(AptSource::line).collect();
    let keyring = "[signed-by=/usr/share/keyrings/debian-archive-keyring.gpg]";
    assert_eq!(
        lines,
        [
            format!("deb {keyring} http://archive.example/debian bookworm main"),
            format!("deb {keyring} http://archive.example/debian bookworm-updates main"),
            format!("deb {keyring} http://security.example/debian-security bookworm-security main"),
        ]
    );
}

#[test]
fn one_line_sources_with_options_comments_and_backports() {
    let text = "\
# deb http://commented.example/debian bookworm main
deb [arch=amd64 signed-by=/k.gpg] http://a.example/debian bookworm main non-free-firmware
deb http://a.example/debian bookworm-backports main
deb-src http://a.example/debian bookworm main
deb http://old.example/debian-security buster/updates main
deb http://a.example/debian bookworm contrib
";
    let sources = bookworm_sources(&parse_one_line(text));
    let lines: Vec<String> = sources.iter().map(AptSource::line).collect();
    assert_eq!(
        lines,
        [
            "deb [signed-by=/k.gpg] http://a.example/debian bookworm main",
            "deb [signed-by=/k.gpg] http://a.example/debian bookworm-updates main",
            "deb http://old.example/debian-security bookworm-security main",
        ]
    );
}

#[test]
fn mirror_override_replaces_host_sources_and_is_validated() {
    let empty = tempfile::tempdir().expect("tempdir");
    let sources = build_sources(Some("http://mirror.example/debian/"), empty.path()).expect("override");
    let lines: Vec<String> = sources.iter().map(AptSource::line).collect();
    assert_eq!(
        lines,
        [
            "deb http://mirror.example/debian bookworm main",
            "deb http://mirror.example/debian bookworm-updates main"
        ]
    );
    for bad in [
        "mirror.example/debian",
        "http://x/a b",
        "http://x/[signed-by=/evil]",
        "http://x/\ndeb http://y",
    ] {
        assert!(
            matches!(
                build_sources(Some(bad), empty.path()),
                Err(ImageError::Invalid {
                    field: "HATCH_DEBIAN_MIRROR",
                    ..
                })
            ),
            "{bad:?} accepted"
        );
    }
    // No host configuration and no override: a clear mirror error.
    let error = build_sources(None, empty.path()).expect_err("no sources");
    assert!(
        matches!(error, ImageError::Mirror(_)) && error.to_string().contains("HATCH_DEBIAN_MIRROR"),
        "{error}"
    );
}

#[test]
fn host_configuration_directory_is_read_from_both_file_styles() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("sources.list"),
        "deb http://one.example/debian bookworm main\n",
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("sources.list.d")).unwrap();
    std::fs::write(dir.path().join("sources.list.d/debian.sources"), DEB822).unwrap();
    std::fs::write(
        dir.path().join("sources.list.d/ignored.list.disabled"),
        "deb http://no.example/debian bookworm main\n",
    )
    .unwrap();
    let sources = build_sources(None, dir.path()).expect("sources");
    let uris: Vec<&str> = sources.iter().map(|s| s.uri.as_str()).collect();
    assert_eq!(
        uris,
        [
            "http://one.example/debian",
            "http://one.example/debian",
            "http://archive.example/debian",
            "http://archive.example/debian",
            "http://security.example/debian-security"
        ]
    );
}

#[test]
fn apt_cache_show_paragraphs_are_parsed() {
    let text = "\
Package: linux-image-cloud-amd64
Source: linux-signed-amd64 (6.1.192+2)
Version: 6.1.192-2
Depends: linux-image-6.1.0-56-cloud-amd64 (= 6.1.192-2)
Size: 1488

Package: dropbear-bin
Version: 2022.83-1+deb12u3
Depends: libc6 (>= 2.34), libcrypt1 (>= 1:4.1.0), libtomcrypt1 (>= 1.18.1) | libfoo, zlib1g:amd64 (>= 1:1.1.4)
Size: 190548
Description: lightweight SSH2 server and client - command line interface
";
    let packages = parse_show(text);
    assert_eq!(packages.len(), 2);
    assert_eq!(packages[0].name, "linux-image-cloud-amd64");
    assert_eq!(packages[0].depends, ["linux-image-6.1.0-56-cloud-amd64"]);
    assert_eq!(packages[1].version, "2022.83-1+deb12u3");
    assert_eq!(packages[1].size, 190548);
    assert_eq!(packages[1].depends, ["libc6", "libcrypt1", "libtomcrypt1", "zlib1g"]);
}

#[test]
fn module_closure_follows_modules_dep_and_skips_builtins() {
    let modules_dep = "\
kernel/drivers/virtio/virtio.ko:
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/fs/nls/nls_iso8859-1.ko:
";
    let builtin = "kernel/fs/ext4/ext4.ko\n";
    let files = module_closure(modules_dep, builtin, &["virtio-net", "nls_iso8859_1", "ext4"]).expect("closure");
    let files: Vec<&str> = files.iter().map(String::as_str).collect();
    assert_eq!(
        files,
        [
            "kernel/drivers/net/net_failover.ko",
            "kernel/drivers/net/virtio_net.ko",
            "kernel/drivers/virtio/virtio.ko",
            "kernel/drivers/virtio/virtio_ring.ko",
            "kernel/fs/nls/nls_iso8859-1.ko",
            "kernel/net/core/failover.ko",
        ]
    );
    assert!(
        module_closure(modules_dep, builtin, &["virtio_nett"]).is_err(),
        "a misspelt module must not be dropped silently"
    );
}

#[test]
fn cpio_archives_unpack_with_the_host_cpio() {
    let dir = tempfile::tempdir().expect("tempdir");
    let archive = dir.path().join("test.cpio");
    let mut writer = CpioWriter::new(std::fs::File::create(&archive).unwrap());
    writer.directory("etc", 0o755).unwrap();
    writer.file("etc/odd-size", 0o640, b"12345").unwrap();
    writer.file("etc/empty", 0o644, b"").unwrap();
    writer.symlink("etc/link", "odd-size").unwrap();
    writer.finish().unwrap();

    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let status = std::process::Command::new("cpio")
        .args(["-i", "-d", "--quiet", "-F"])
        .arg(&archive)
        .current_dir(&out)
        .status()
        .expect("cpio");
    assert!(status.success());
    use std::os::unix::fs::PermissionsExt;
    let file = out.join("etc/odd-size");
    assert_eq!(std::fs::read(&file).unwrap(), b"12345");
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o640);
    assert_eq!(std::fs::read(out.join("etc/empty")).unwrap(), b"");
    assert_eq!(std::fs::read_link(out.join("etc/link")).unwrap(), Path::new("odd-size"));
}
