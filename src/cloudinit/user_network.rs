//! Finding a `network:` block in a `#cloud-config` user-data.
//!
//! cloud-init never applies network settings found in user-data (its docs:
//! "User-data cannot change an instance's network configuration"); only the
//! datasource's `network-config` counts. So when a user puts a `network:`
//! block in their cloud-config, as the networking guide shows, Hatch copies
//! that block into `network-config` instead of its own DHCP config; that is
//! what makes the user's block win. The user-data itself stays untouched.

use super::yaml_emit::{to_document, YamlNode};

/// cloud-init's own test: leading whitespace ignored, case-insensitive.
fn is_cloud_config(text: &str) -> bool {
    let start = text.trim_start();
    start.len() >= 13 && start.as_bytes()[..13].eq_ignore_ascii_case(b"#cloud-config")
}

/// Most bytes a gzip-compressed user-data may expand to before Hatch stops
/// looking into it (a guard against compression bombs; cloud-init itself
/// would choke on such a document anyway).
const MAX_GUNZIPPED_BYTES: u64 = 4 * 1024 * 1024;

/// cloud-init decompresses gzip user-data before reading it, so Hatch looks
/// at the same text it will: the decompressed bytes, or the bytes as given.
fn as_cloud_init_reads_it(user_data: &[u8]) -> Option<std::borrow::Cow<'_, [u8]>> {
    use std::io::Read as _;
    if !user_data.starts_with(&[0x1f, 0x8b]) {
        return Some(user_data.into());
    }
    let mut text = Vec::new();
    let decoder = flate2::read::GzDecoder::new(user_data);
    decoder.take(MAX_GUNZIPPED_BYTES + 1).read_to_end(&mut text).ok()?;
    (text.len() as u64 <= MAX_GUNZIPPED_BYTES).then_some(text.into())
}

/// The value of the top-level `network` key of a `#cloud-config` (plain or
/// gzip-compressed), if any. Anything that is not a parseable cloud-config
/// mapping has none.
fn parsed_network_value(user_data: &[u8]) -> Option<(String, serde_yaml_ng::Value)> {
    let bytes = as_cloud_init_reads_it(user_data)?;
    let text = std::str::from_utf8(&bytes).ok()?;
    if !is_cloud_config(text) {
        return None;
    }
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(text).ok()?;
    let network = doc.as_mapping()?.get("network")?.clone();
    Some((text.to_owned(), network))
}

/// Whether `user_data` is a `#cloud-config` with a top-level `network` key.
pub fn user_data_has_network_config(user_data: &[u8]) -> bool {
    parsed_network_value(user_data).is_some()
}

/// Why a user's `network:` block cannot become `network-config`.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UserNetworkError {
    #[error("the network block must be a mapping (e.g. `version: 2` and `ethernets:`)")]
    NotMapping,
    #[error("the network block cannot be copied: {0}")]
    Unwritable(#[from] super::yaml_emit::EmitError),
}

/// The user's `network:` block as a `network-config` document, or `None`
/// when the user-data has no such block.
///
/// The block's own text is preferred (dedented), because cloud-init reads
/// it with YAML 1.1 and re-writing it could change what plain scalars such
/// as `dhcp4: yes` mean. The text is used only if it parses to exactly the
/// same value as the block did inside the whole document; otherwise the
/// parsed value is written out with every string quoted.
pub(crate) fn user_network_config(user_data: &[u8]) -> Result<Option<String>, UserNetworkError> {
    let Some((text, network)) = parsed_network_value(user_data) else {
        return Ok(None);
    };
    if !network.is_mapping() {
        return Err(UserNetworkError::NotMapping);
    }
    if let Some(block) = dedented_block(&text) {
        if serde_yaml_ng::from_str::<serde_yaml_ng::Value>(&block).ok().as_ref() == Some(&network) {
            return Ok(Some(block));
        }
    }
    Ok(Some(to_document(&YamlNode::from_parsed(&network))?))
}

/// The lines under a column-0 `network:` key, with their common indent
/// removed. `None` for any layout this simple reader does not handle
/// (flow style, quoted key, odd indentation); the caller then falls back.
fn dedented_block(text: &str) -> Option<String> {
    let mut lines = text.split_inclusive('\n');
    lines.by_ref().find(|line| is_network_key_line(line))?;
    let mut indent: Option<usize> = None;
    let mut block = String::new();
    for line in lines {
        let content = line.trim_start_matches(' ');
        let depth = line.len() - content.len();
        let rest = content.trim_end();
        if rest.is_empty() {
            block.push('\n');
            continue;
        }
        if rest.starts_with('#') {
            // Keep a comment's place inside the block (it may be a line of a
            // literal scalar); a shallower one is just moved to column 0.
            block.push_str(match indent {
                Some(indent) if depth >= indent => &line[indent..],
                _ => content,
            });
            continue;
        }
        if depth == 0 {
            break;
        }
        let indent = *indent.get_or_insert(depth);
        if depth < indent {
            return None;
        }
        block.push_str(&line[indent..]);
    }
    indent.map(|_| block)
}

/// `network:` at column 0 with nothing but whitespace or a comment after it.
fn is_network_key_line(line: &str) -> bool {
    line.strip_prefix("network")
        .map(|rest| rest.trim_start_matches([' ', '\t']))
        .and_then(|rest| rest.strip_prefix(':'))
        .map(|rest| {
            let rest = rest.trim();
            rest.is_empty() || rest.starts_with('#')
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GUIDE_EXAMPLE: &str = "#cloud-config\nnetwork:\n  version: 2\n  ethernets:\n    eth0:\n      dhcp4: true";

    fn gzip(data: &[u8]) -> Vec<u8> {
        use std::io::Write as _;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    #[test]
    fn looks_inside_gzip_user_data_as_cloud_init_does() {
        let compressed = gzip(GUIDE_EXAMPLE.as_bytes());
        assert!(user_data_has_network_config(&compressed));
        let config = user_network_config(&compressed).unwrap().expect("network block");
        assert!(config.contains("ethernets"), "{config}");
        assert!(!user_data_has_network_config(&gzip(b"#cloud-config\nhostname: x\n")));
        // Truncated archives are opaque, not an error.
        assert!(!user_data_has_network_config(&compressed[..compressed.len() / 2]));
    }

    #[test]
    fn a_gzip_bomb_is_not_expanded_past_the_cap() {
        let mut huge = b"#cloud-config\nnetwork: {version: 2}\n".to_vec();
        huge.resize(MAX_GUNZIPPED_BYTES as usize + 10, b'\n');
        assert!(!user_data_has_network_config(&gzip(&huge)));
    }

    #[test]
    fn detects_only_a_top_level_network_key_in_cloud_config() {
        assert!(user_data_has_network_config(GUIDE_EXAMPLE.as_bytes()));
        assert!(user_data_has_network_config(
            b"  #Cloud-Config\nnetwork: {version: 2}\n"
        ));
        assert!(!user_data_has_network_config(
            b"#cloud-config\nwrite_files:\n  - path: /x\n    content: 'network: 1'\n"
        ));
        assert!(!user_data_has_network_config(b"#!/bin/sh\nnetwork: 1\n"));
        assert!(!user_data_has_network_config(b"#cloud-config\n- network\n"));
        assert!(!user_data_has_network_config(b"#cloud-config\nnetwork: [unclosed\n"));
        assert!(!user_data_has_network_config(&[0x1f, 0x8b, 0x08, 0x00, 0xff]));
    }

    #[test]
    fn block_text_is_kept_so_yaml_1_1_scalars_keep_their_meaning() {
        let ud = "#cloud-config\nhostname: a\nnetwork:   # mine\n  version: 2\n  ethernets:\n    e:\n\n      # why\n      dhcp4: yes\n      match: {macaddress: 52:54:00:12:34:56}\nruncmd: [true]\n";
        let config = user_network_config(ud.as_bytes()).expect("ok").expect("present");
        assert_eq!(
            config,
            "version: 2\nethernets:\n  e:\n\n    # why\n    dhcp4: yes\n    match: {macaddress: 52:54:00:12:34:56}\n"
        );
    }

    #[test]
    fn flow_style_falls_back_to_a_quoted_rewrite() {
        let ud = b"#cloud-config\nnetwork: {version: 2, ethernets: {eth0: {dhcp4: true}}}\n";
        let config = user_network_config(ud).expect("ok").expect("present");
        let parsed: serde_yaml_ng::Value = serde_yaml_ng::from_str(&config).expect("parses");
        assert_eq!(parsed["version"].as_u64(), Some(2));
        assert_eq!(parsed["ethernets"]["eth0"]["dhcp4"].as_bool(), Some(true));
    }

    #[test]
    fn a_non_mapping_network_block_is_an_error_and_none_without_block() {
        assert!(matches!(
            user_network_config(b"#cloud-config\nnetwork: 3\n"),
            Err(UserNetworkError::NotMapping)
        ));
        assert!(user_network_config(b"#cloud-config\nusers: []\n")
            .expect("ok")
            .is_none());
    }
}
