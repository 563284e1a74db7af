//! The NoCloud seed read back as cloud-init would see it: a FAT volume
//! checked by dosfstools, read with mtools and the fatfs crate, and its
//! YAML parsed with PyYAML (cloud-init's own parser).

use crate::common;

use common::cloudinit::{gzip, pyyaml_load, ssh_keygen, SeedImage};
use hatch::cloudinit::{build_seed, validate_user_data, SeedError, SeedInput, MAX_USER_DATA_BYTES};
use serde_json::json;

const MAC: &str = "52:54:00:12:34:56";
const GUIDE_NETWORK_USER_DATA: &str =
    "#cloud-config\nnetwork:\n  version: 2\n  ethernets:\n    eth0:\n      dhcp4: true";

fn input(user_data: Option<&[u8]>, nic_mac: Option<&str>) -> SeedInput {
    SeedInput {
        instance_id: "vm-7f3a9c".to_owned(),
        user_data: user_data.map(<[u8]>::to_vec),
        public_keys: Vec::new(),
        nic_mac: nic_mac.map(str::to_owned),
    }
}

#[tokio::test]
async fn seed_is_a_clean_fat_volume_labelled_cidata_with_all_three_documents() {
    let keys_dir = tempfile::tempdir().expect("tempdir");
    let key = ssh_keygen(keys_dir.path(), "ed25519", None, "alice@laptop");
    let mut seed_input = input(Some(b"#cloud-config\nruncmd: [touch /ok]\n"), Some(MAC));
    seed_input.public_keys = vec![key.clone()];
    let seed = SeedImage::write(&seed_input).await;

    seed.assert_fsck_clean();
    assert_eq!(seed.mtools_label(), "CIDATA");
    let fs = seed.fatfs();
    assert_eq!(fs.volume_label(), "CIDATA");
    assert_eq!(
        fs.read_volume_label_from_root_dir().expect("root dir").as_deref(),
        Some("CIDATA")
    );
    assert!(matches!(fs.fat_type(), fatfs::FatType::Fat12 | fatfs::FatType::Fat16));
    assert_eq!(seed.names_both(), ["meta-data", "network-config", "user-data"]);

    let meta = pyyaml_load(&seed.read_both("meta-data"));
    assert_eq!(
        meta,
        json!({"instance-id": "vm-7f3a9c", "local-hostname": "vm-7f3a9c", "public-keys": [key]})
    );
    let network = pyyaml_load(&seed.read_both("network-config"));
    assert_eq!(
        network,
        json!({"version": 2, "ethernets": {"eth0": {
            "match": {"macaddress": MAC}, "set-name": "eth0", "dhcp4": true}}})
    );
    assert_eq!(seed.read_both("user-data"), b"#cloud-config\nruncmd: [touch /ok]\n");
}

#[tokio::test]
async fn every_kind_of_user_data_passes_through_byte_for_byte() {
    let multipart = b"Content-Type: multipart/mixed; boundary=\"XX\"\nMIME-Version: 1.0\n\n--XX\n\
Content-Type: text/cloud-config; charset=\"us-ascii\"\n\n#cloud-config\nruncmd: [touch /a]\n\n--XX\n\
Content-Type: text/x-shellscript; charset=\"us-ascii\"\n\n#!/bin/sh\ntouch /b\n\n--XX--\n"
        .to_vec();
    let compressed = gzip(b"#cloud-config\nwrite_files:\n  - path: /etc/motd\n    content: hi\n");
    assert_eq!(compressed[..2], [0x1f, 0x8b], "gzip magic");
    // Exactly the limit, every byte value, no trailing newline.
    let full: Vec<u8> = (0..MAX_USER_DATA_BYTES).map(|i| (i * 7 % 256) as u8).collect();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("cloud-config", b"#cloud-config\r\nhostname: x  \r\n\r\n".to_vec()),
        ("shell script", b"#!/bin/sh\necho marker > /root/marker\n".to_vec()),
        ("MIME multipart", multipart),
        ("gzip", compressed),
        ("exactly 64 KiB", full),
        ("empty", Vec::new()),
    ];
    for (kind, user_data) in cases {
        validate_user_data(&user_data).unwrap_or_else(|e| panic!("{kind}: {e}"));
        let seed = SeedImage::write(&input(Some(&user_data), Some(MAC))).await;
        seed.assert_fsck_clean();
        assert_eq!(seed.read_both("user-data"), user_data, "{kind}");
    }
}

#[tokio::test]
async fn missing_user_data_becomes_an_empty_cloud_config() {
    let seed = SeedImage::write(&input(None, Some(MAC))).await;
    assert_eq!(seed.read_both("user-data"), b"#cloud-config\n");
}

#[test]
fn user_data_over_64_kib_is_too_large() {
    let over = vec![b'#'; MAX_USER_DATA_BYTES + 1];
    assert!(matches!(validate_user_data(&over), Err(SeedError::TooLarge { size }) if size == MAX_USER_DATA_BYTES + 1));
    assert!(matches!(
        build_seed(&input(Some(&over), Some(MAC))),
        Err(SeedError::TooLarge { .. })
    ));
}

#[tokio::test]
async fn users_own_network_block_replaces_the_mac_matched_dhcp_config() {
    let seed = SeedImage::write(&input(Some(GUIDE_NETWORK_USER_DATA.as_bytes()), Some(MAC))).await;
    seed.assert_fsck_clean();
    let network_config = seed.read_both("network-config");
    let text = String::from_utf8_lossy(&network_config);
    assert!(
        !text.contains(MAC) && !text.contains("match"),
        "Hatch's own config leaked in: {text}"
    );
    assert_eq!(
        pyyaml_load(&network_config),
        json!({"version": 2, "ethernets": {"eth0": {"dhcp4": true}}})
    );
    assert_eq!(seed.read_both("user-data"), GUIDE_NETWORK_USER_DATA.as_bytes());
}

#[tokio::test]
async fn networking_off_means_no_network_config() {
    for user_data in [None, Some(GUIDE_NETWORK_USER_DATA.as_bytes())] {
        let seed = SeedImage::write(&input(user_data, None)).await;
        seed.assert_fsck_clean();
        assert_eq!(seed.names_both(), ["meta-data", "user-data"]);
    }
}

#[tokio::test]
async fn meta_data_values_stay_strings_whatever_they_look_like() {
    for id in ["no", "12:34:56", "vm: #x", "- a", "'\"\\", "null", "0x1f"] {
        let mut seed_input = input(None, None);
        seed_input.instance_id = id.to_owned();
        let seed = SeedImage::write(&seed_input).await;
        let meta = pyyaml_load(&seed.read_both("meta-data"));
        assert_eq!(meta, json!({"instance-id": id, "local-hostname": id}), "{id:?}");
    }
    let mut empty = input(None, None);
    empty.instance_id = String::new();
    assert!(matches!(
        build_seed(&empty),
        Err(SeedError::Invalid {
            field: "instance_id",
            ..
        })
    ));
}

#[test]
fn bad_nic_mac_or_key_is_refused_naming_the_field() {
    assert!(matches!(
        build_seed(&input(None, Some("52:54:00:12:34\n"))),
        Err(SeedError::Invalid { field: "nic_mac", .. })
    ));
    let mut with_bad_key = input(None, Some(MAC));
    with_bad_key.public_keys = vec!["ssh-ed25519 AAAA\nroot".to_owned()];
    assert!(matches!(
        build_seed(&with_bad_key),
        Err(SeedError::Invalid {
            field: "ssh_authorized_keys",
            ..
        })
    ));
}

#[tokio::test]
async fn write_seed_replaces_the_file_atomically_and_leaves_nothing_behind() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("seed.img");
    std::fs::write(&path, b"old").expect("write old");

    let mut bad = input(None, None);
    bad.instance_id = String::new();
    assert!(hatch::cloudinit::write_seed(&bad, &path).await.is_err());
    assert_eq!(
        std::fs::read(&path).expect("read"),
        b"old",
        "a failed write must not touch the old seed"
    );

    hatch::cloudinit::write_seed(&input(None, Some(MAC)), &path)
        .await
        .expect("write_seed");
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["seed.img"], "no temporary files may remain");
    let seed = SeedImage { path, dir };
    seed.assert_fsck_clean();
    assert_eq!(seed.mtools_label(), "CIDATA");
}

#[test]
fn a_network_block_that_cannot_be_network_config_is_refused() {
    let err = validate_user_data(b"#cloud-config\nnetwork: dhcp\n").unwrap_err();
    assert!(matches!(err, SeedError::Invalid { field: "user_data", .. }), "{err}");
}
