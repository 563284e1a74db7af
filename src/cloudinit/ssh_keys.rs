//! Validation of OpenSSH public keys (`ssh_authorized_keys`).
//!
//! A key ends up as one line of the guest's `authorized_keys`, so anything
//! that could smuggle a second line or an options prefix is refused, and the
//! base64 blob is decoded and checked against its declared type so that a
//! pasted private key, a truncated key or a typo is caught at the API.

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;

use super::SeedError;

const FIELD: &str = "ssh_authorized_keys";
/// Generous: a 16384-bit RSA key is about 2.8 KiB of text.
const MAX_KEY_CHARS: usize = 8 * 1024;
/// More keys than this is a mistake, not a use case.
pub const MAX_SSH_KEYS: usize = 64;
/// OpenSSH refuses RSA keys under 1024 bits.
const MIN_RSA_MODULUS_BITS: usize = 1024;

const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

fn invalid(message: impl Into<String>) -> SeedError {
    SeedError::Invalid {
        field: FIELD,
        message: message.into(),
    }
}

/// Validates one OpenSSH public key line and returns it normalised to
/// `type base64[ comment]` with single spaces.
pub fn validate_ssh_public_key(key: &str) -> Result<String, SeedError> {
    let key = key.trim();
    if key.is_empty() {
        return Err(invalid("the key is empty"));
    }
    if key.chars().count() > MAX_KEY_CHARS {
        return Err(invalid(format!("the key is longer than {MAX_KEY_CHARS} characters")));
    }
    if let Some(c) = key
        .chars()
        .find(|c| (c.is_control() && *c != '\t') || matches!(c, '\u{2028}' | '\u{2029}'))
    {
        return Err(invalid(format!(
            "the key contains a control character ({:?}); give one key per list entry",
            c
        )));
    }
    let mut parts = key.splitn(2, [' ', '\t']);
    let key_type = parts.next().unwrap_or_default();
    let rest = parts.next().unwrap_or_default().trim_start_matches([' ', '\t']);
    let mut parts = rest.splitn(2, [' ', '\t']);
    let blob_b64 = parts.next().unwrap_or_default();
    let comment = parts.next().unwrap_or_default().trim();

    let Some(layout) = KeyLayout::for_type(key_type) else {
        return Err(invalid(format!(
            "unknown key type {:?}; expected one of ssh-ed25519, ssh-rsa, ecdsa-sha2-nistp256/384/521, \
             sk-ssh-ed25519@openssh.com, sk-ecdsa-sha2-nistp256@openssh.com (options before the key are not accepted)",
            truncate(key_type)
        )));
    };
    if blob_b64.is_empty() {
        return Err(invalid("the key has a type but no base64 key data"));
    }
    let blob = BASE64
        .decode(blob_b64)
        .map_err(|e| invalid(format!("the key data is not valid base64: {e}")))?;
    layout.check(key_type, &blob).map_err(invalid)?;

    let mut normalised = format!("{key_type} {blob_b64}");
    if !comment.is_empty() {
        normalised.push(' ');
        normalised.push_str(comment);
    }
    Ok(normalised)
}

/// Validates a list of keys; the message names the entry's index.
pub fn validate_ssh_keys(keys: &[String]) -> Result<Vec<String>, SeedError> {
    if keys.len() > MAX_SSH_KEYS {
        return Err(invalid(format!(
            "{} keys given; at most {MAX_SSH_KEYS} are accepted",
            keys.len()
        )));
    }
    keys.iter()
        .enumerate()
        .map(|(index, key)| {
            validate_ssh_public_key(key).map_err(|err| match err {
                SeedError::Invalid { field, message } => SeedError::Invalid {
                    field,
                    message: format!("entry {index}: {message}"),
                },
                other => other,
            })
        })
        .collect()
}

fn truncate(s: &str) -> String {
    s.chars().take(40).collect()
}

/// The wire layout (RFC 4253 §6.6, RFC 5656, OpenSSH PROTOCOL.u2f) after
/// the leading type string.
enum KeyLayout {
    Ed25519 {
        security_key: bool,
    },
    Rsa,
    Ecdsa {
        curve: &'static str,
        point_len: usize,
        security_key: bool,
    },
}

impl KeyLayout {
    fn for_type(key_type: &str) -> Option<Self> {
        Some(match key_type {
            "ssh-ed25519" => KeyLayout::Ed25519 { security_key: false },
            "sk-ssh-ed25519@openssh.com" => KeyLayout::Ed25519 { security_key: true },
            "ssh-rsa" => KeyLayout::Rsa,
            "ecdsa-sha2-nistp256" => KeyLayout::Ecdsa {
                curve: "nistp256",
                point_len: 65,
                security_key: false,
            },
            "ecdsa-sha2-nistp384" => KeyLayout::Ecdsa {
                curve: "nistp384",
                point_len: 97,
                security_key: false,
            },
            "ecdsa-sha2-nistp521" => KeyLayout::Ecdsa {
                curve: "nistp521",
                point_len: 133,
                security_key: false,
            },
            "sk-ecdsa-sha2-nistp256@openssh.com" => KeyLayout::Ecdsa {
                curve: "nistp256",
                point_len: 65,
                security_key: true,
            },
            _ => return None,
        })
    }

    fn check(&self, key_type: &str, blob: &[u8]) -> Result<(), String> {
        let mut reader = WireReader { rest: blob };
        let embedded = reader.string()?;
        if embedded != key_type.as_bytes() {
            return Err(format!(
                "the key data is a {:?} key but the line says {key_type:?}",
                String::from_utf8_lossy(&embedded[..embedded.len().min(40)])
            ));
        }
        match self {
            KeyLayout::Ed25519 { security_key } => {
                expect_len("ed25519 public key", reader.string()?, 32)?;
                if *security_key {
                    reader.string()?;
                }
            }
            KeyLayout::Rsa => {
                let _exponent = reader.string()?;
                let modulus = reader.string()?;
                let significant = modulus.iter().skip_while(|b| **b == 0).count();
                if significant * 8 < MIN_RSA_MODULUS_BITS {
                    return Err(format!("the RSA key is shorter than {MIN_RSA_MODULUS_BITS} bits"));
                }
            }
            KeyLayout::Ecdsa {
                curve,
                point_len,
                security_key,
            } => {
                if reader.string()? != curve.as_bytes() {
                    return Err(format!("the key data does not name the curve {curve}"));
                }
                let point = reader.string()?;
                expect_len("ECDSA point", point, *point_len)?;
                if point.first() != Some(&0x04) {
                    return Err("the ECDSA point is not in uncompressed form".to_owned());
                }
                if *security_key {
                    reader.string()?;
                }
            }
        }
        if !reader.rest.is_empty() {
            return Err("the key data has trailing bytes".to_owned());
        }
        Ok(())
    }
}

fn expect_len(what: &str, bytes: &[u8], len: usize) -> Result<(), String> {
    if bytes.len() == len {
        Ok(())
    } else {
        Err(format!("the {what} is {} bytes, expected {len}", bytes.len()))
    }
}

/// Reads SSH wire-format `string`s (u32 big-endian length + bytes).
struct WireReader<'a> {
    rest: &'a [u8],
}

impl<'a> WireReader<'a> {
    fn string(&mut self) -> Result<&'a [u8], String> {
        const TRUNCATED: &str = "the key data is truncated or not an SSH public key";
        let (len, rest) = self.rest.split_first_chunk::<4>().ok_or(TRUNCATED)?;
        let len = u32::from_be_bytes(*len) as usize;
        if rest.len() < len {
            return Err(TRUNCATED.to_owned());
        }
        let (value, rest) = rest.split_at(len);
        self.rest = rest;
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(parts: &[&[u8]]) -> String {
        let mut blob = Vec::new();
        for part in parts {
            blob.extend_from_slice(&(part.len() as u32).to_be_bytes());
            blob.extend_from_slice(part);
        }
        BASE64.encode(blob)
    }

    #[test]
    fn structural_checks_catch_malformed_blobs() {
        let short_ed = wire(&[b"ssh-ed25519", &[7u8; 31]]);
        assert!(validate_ssh_public_key(&format!("ssh-ed25519 {short_ed}")).is_err());
        let trailing = wire(&[b"ssh-ed25519", &[7u8; 32], b"x"]);
        assert!(validate_ssh_public_key(&format!("ssh-ed25519 {trailing}")).is_err());
        let small_rsa = wire(&[b"ssh-rsa", &[1, 0, 1], &[0xff; 64]]);
        let err = validate_ssh_public_key(&format!("ssh-rsa {small_rsa}")).unwrap_err();
        assert!(err.to_string().contains("1024 bits"), "{err}");
        let wrong_curve = wire(&[b"ecdsa-sha2-nistp256", b"nistp384", &[4u8; 65]]);
        assert!(validate_ssh_public_key(&format!("ecdsa-sha2-nistp256 {wrong_curve}")).is_err());
        let sk = wire(&[b"sk-ssh-ed25519@openssh.com", &[7u8; 32], b"ssh:"]);
        let line = format!("sk-ssh-ed25519@openssh.com {sk}  my  yubikey ");
        assert_eq!(
            validate_ssh_public_key(&line).unwrap(),
            format!("sk-ssh-ed25519@openssh.com {sk} my  yubikey")
        );
        let huge_len = BASE64.encode([0xff, 0xff, 0xff, 0xff, b's']);
        assert!(validate_ssh_public_key(&format!("ssh-ed25519 {huge_len}")).is_err());
    }
}
