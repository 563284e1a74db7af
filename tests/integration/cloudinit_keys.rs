//! `ssh_authorized_keys` validation against real keys from ssh-keygen and
//! against the ways a key line goes wrong in practice.

use crate::common;

use common::cloudinit::ssh_keygen;
use hatch::cloudinit::{validate_ssh_keys, validate_ssh_public_key, SeedError, MAX_SSH_KEYS};

fn real_keys() -> (tempfile::TempDir, Vec<String>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = [
        ("ed25519", None),
        ("rsa", Some(2048)),
        ("ecdsa", Some(256)),
        ("ecdsa", Some(384)),
        ("ecdsa", Some(521)),
    ]
    .iter()
    .map(|(key_type, bits)| ssh_keygen(dir.path(), key_type, *bits, "user@host with spaces"))
    .collect();
    (dir, keys)
}

fn assert_rejected(key: &str, expected_words: &str) {
    match validate_ssh_public_key(key) {
        Err(SeedError::Invalid { field, message }) => {
            assert_eq!(field, "ssh_authorized_keys");
            assert!(
                message.contains(expected_words),
                "{key:?}: message {message:?} lacks {expected_words:?}"
            );
        }
        other => panic!("{key:?} should be rejected, got {other:?}"),
    }
}

#[test]
fn real_keys_of_every_supported_type_are_accepted_unchanged() {
    let (_dir, keys) = real_keys();
    for key in &keys {
        assert_eq!(&validate_ssh_public_key(key).expect("valid key"), key);
    }
    assert_eq!(validate_ssh_keys(&keys).expect("all valid"), keys);
}

#[test]
fn whitespace_is_normalised_and_the_comment_is_optional() {
    let (_dir, keys) = real_keys();
    let mut parts = keys[0].splitn(3, ' ');
    let (key_type, blob) = (parts.next().unwrap(), parts.next().unwrap());
    let messy = format!("  {key_type} \t {blob}   my laptop \n");
    assert_eq!(
        validate_ssh_public_key(&messy).unwrap(),
        format!("{key_type} {blob} my laptop")
    );
    assert_eq!(
        validate_ssh_public_key(&format!("{key_type} {blob}")).unwrap(),
        format!("{key_type} {blob}")
    );
}

#[test]
fn garbage_wrong_types_and_injections_are_rejected_naming_the_field() {
    let (_dir, keys) = real_keys();
    let ed25519 = &keys[0];
    let ed_blob = ed25519.split(' ').nth(1).unwrap();
    let rsa_blob = keys[1].split(' ').nth(1).unwrap();

    assert_rejected("", "empty");
    assert_rejected("hello world", "unknown key type");
    assert_rejected("ssh-dss AAAAB3NzaC1kc3MAAACBAP", "unknown key type");
    assert_rejected(&format!("command=\"/bin/sh\" {ed25519}"), "unknown key type");
    assert_rejected("ssh-ed25519", "no base64");
    assert_rejected("ssh-ed25519 not*base64!", "base64");
    assert_rejected(&format!("ssh-rsa {ed_blob} mislabelled"), "ssh-ed25519");
    assert_rejected(&format!("ecdsa-sha2-nistp256 {rsa_blob}"), "ssh-rsa");
    assert_rejected(&format!("ssh-ed25519 {}", &ed_blob[..ed_blob.len() - 8]), "truncated");
    // A second authorized_keys line smuggled in after a valid key.
    assert_rejected(&format!("{ed25519}\nssh-ed25519 {rsa_blob} evil"), "control character");
    assert_rejected(&format!("{ed25519}\rfrom=\"*\""), "control character");
    assert_rejected(&format!("{ed25519} \u{2028}x"), "control character");
    assert_rejected("-----BEGIN OPENSSH PRIVATE KEY-----", "unknown key type");
}

#[test]
fn list_errors_name_the_entry_index() {
    let (_dir, keys) = real_keys();
    let list = vec![keys[0].clone(), keys[1].clone(), "ssh-rsa AAAA".to_owned()];
    match validate_ssh_keys(&list) {
        Err(SeedError::Invalid { field, message }) => {
            assert_eq!(field, "ssh_authorized_keys");
            assert!(message.starts_with("entry 2:"), "{message}");
        }
        other => panic!("expected rejection, got {other:?}"),
    }
    let too_many = vec![keys[0].clone(); MAX_SSH_KEYS + 1];
    assert!(matches!(
        validate_ssh_keys(&too_many),
        Err(SeedError::Invalid {
            field: "ssh_authorized_keys",
            ..
        })
    ));
    assert_eq!(validate_ssh_keys(&[]).unwrap(), Vec::<String>::new());
}
