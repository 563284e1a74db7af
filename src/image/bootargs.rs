//! Validation of extra kernel command-line arguments stored with an image.
//!
//! They end up on a VMM command line / API body, so only plain
//! `key` or `key=value` words are accepted: no quoting, no shell or YAML
//! metacharacters, no `--` (which would hand the rest to init).
use super::ImageError;

/// x86 COMMAND_LINE_SIZE is 2048; keep half for what Hatch itself adds.
pub const MAX_BOOT_ARGS_LEN: usize = 1024;

fn key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')
}

fn value_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ',' | ':' | '/' | '=' | '+' | '@' | '%')
}

/// Accepts space-separated `key` / `key=value` words (empty is fine).
pub fn validate_boot_args(args: &str) -> Result<(), ImageError> {
    let invalid = |message: String| ImageError::Invalid {
        field: "boot_args",
        message,
    };
    if args.len() > MAX_BOOT_ARGS_LEN {
        return Err(invalid(format!(
            "{} bytes; at most {MAX_BOOT_ARGS_LEN} are allowed",
            args.len()
        )));
    }
    if let Some(c) = args.chars().find(|c| *c != ' ' && (c.is_control() || !c.is_ascii())) {
        return Err(invalid(format!(
            "contains the character {c:?}; only printable ASCII is allowed"
        )));
    }
    for word in args.split(' ').filter(|w| !w.is_empty()) {
        if word == "--" {
            return Err(invalid("`--` is not allowed (it passes the rest to init)".into()));
        }
        let (key, value) = word.split_once('=').unwrap_or((word, ""));
        if key.is_empty() || !key.chars().all(key_char) {
            return Err(invalid(format!(
                "`{word}`: a parameter name may hold only letters, digits, `_`, `-` and `.`"
            )));
        }
        if let Some(c) = value.chars().find(|c| !value_char(*c)) {
            return Err(invalid(format!(
                "`{word}`: the character {c:?} is not allowed in a value"
            )));
        }
    }
    Ok(())
}
