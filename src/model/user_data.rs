//! cloud-init user data: the exact bytes the guest receives. cloud-init also
//! accepts binary user data (gzip-compressed cloud-config, for one), which a
//! JSON string cannot carry, so JSON has two fields for it:
//!
//! - `user_data`: the bytes as a string, when they are valid UTF-8;
//! - `user_data_base64`: the bytes in standard base64, otherwise.
//!
//! Requests give at most one of the two (either works for any bytes that
//! fit it). Responses give exactly the one the rule above picks, so a
//! template or VM as shown can be posted back unchanged.

use base64::Engine;
use serde::{Deserialize, Serialize};

/// The text field's name in requests and responses.
pub const USER_DATA_FIELD: &str = "user_data";
/// The base64 field's name in requests and responses.
pub const USER_DATA_BASE64_FIELD: &str = "user_data_base64";

/// User data, byte for byte. `Debug` shows only the size: it may hold secrets.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct UserData(Vec<u8>);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserDataError {
    #[error("give user_data or user_data_base64, not both")]
    BothGiven,
    #[error("user_data_base64 is not valid standard base64: {0}")]
    InvalidBase64(String),
}

impl UserDataError {
    /// The request field at fault.
    pub fn field(&self) -> &'static str {
        USER_DATA_BASE64_FIELD
    }
}

impl UserData {
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The bytes as text, when they are valid UTF-8.
    pub fn as_text(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }

    pub fn to_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(&self.0)
    }

    /// Decodes standard base64 (padding required). ASCII whitespace is
    /// ignored, so the line-wrapped output of `base64 FILE` works as is.
    pub fn from_base64(encoded: &str) -> Result<Self, UserDataError> {
        let compact: Vec<u8> = encoded.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
        base64::engine::general_purpose::STANDARD
            .decode(compact)
            .map(Self)
            .map_err(|e| UserDataError::InvalidBase64(e.to_string()))
    }

    /// The user data a request's two fields describe, if any.
    pub fn from_fields(text: Option<&str>, base64: Option<&str>) -> Result<Option<Self>, UserDataError> {
        match (text, base64) {
            (Some(_), Some(_)) => Err(UserDataError::BothGiven),
            (Some(text), None) => Ok(Some(Self::from(text))),
            (None, Some(encoded)) => Self::from_base64(encoded).map(Some),
            (None, None) => Ok(None),
        }
    }

    /// The response fields: (`user_data`, `user_data_base64`), one of them set.
    fn to_fields(&self) -> (Option<&str>, Option<String>) {
        match self.as_text() {
            Some(text) => (Some(text), None),
            None => (None, Some(self.to_base64())),
        }
    }
}

impl std::fmt::Debug for UserData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "UserData({} bytes)", self.0.len())
    }
}

impl From<Vec<u8>> for UserData {
    fn from(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }
}

impl From<&[u8]> for UserData {
    fn from(bytes: &[u8]) -> Self {
        Self(bytes.to_vec())
    }
}

impl From<&str> for UserData {
    fn from(text: &str) -> Self {
        Self(text.as_bytes().to_vec())
    }
}

impl From<String> for UserData {
    fn from(text: String) -> Self {
        Self(text.into_bytes())
    }
}

/// Both fields as they appear in JSON (either may be absent or null).
#[derive(Default, Deserialize)]
struct Fields {
    #[serde(default)]
    user_data: Option<String>,
    #[serde(default)]
    user_data_base64: Option<String>,
}

fn from_json_fields<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<UserData>, D::Error> {
    let fields = Fields::deserialize(deserializer)?;
    UserData::from_fields(fields.user_data.as_deref(), fields.user_data_base64.as_deref())
        .map_err(serde::de::Error::custom)
}

/// The response fields; `user_data: Some(None)` is written as null.
#[derive(Serialize)]
struct OutFields<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    user_data: Option<Option<&'a str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_data_base64: Option<String>,
}

fn to_json_fields<S: serde::Serializer>(
    value: &Option<UserData>,
    null_text: bool,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    let (text, user_data_base64) = value.as_ref().map(UserData::to_fields).unwrap_or_default();
    let user_data = if null_text { Some(text) } else { text.map(Some) };
    OutFields {
        user_data,
        user_data_base64,
    }
    .serialize(serializer)
}

/// `#[serde(flatten, with = "user_data_fields")]` on an `Option<UserData>`:
/// the JSON fields are absent when there is no user data.
pub mod user_data_fields {
    use super::*;

    pub fn serialize<S: serde::Serializer>(value: &Option<UserData>, serializer: S) -> Result<S::Ok, S::Error> {
        to_json_fields(value, false, serializer)
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<UserData>, D::Error> {
        from_json_fields(deserializer)
    }
}

/// Like [`user_data_fields`], but `user_data` is always present: null when
/// there is no user data or when it is binary (templates always had it).
pub mod user_data_fields_with_null {
    use super::*;

    pub fn serialize<S: serde::Serializer>(value: &Option<UserData>, serializer: S) -> Result<S::Ok, S::Error> {
        to_json_fields(value, true, serializer)
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<UserData>, D::Error> {
        from_json_fields(deserializer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b, 0x08, 0x00, 0xff, 0xfe];

    #[test]
    fn text_shows_as_text_and_binary_as_base64() {
        assert_eq!(
            UserData::from("#cloud-config\n").to_fields(),
            (Some("#cloud-config\n"), None)
        );
        let binary = UserData::from(GZIP_MAGIC);
        assert_eq!(binary.to_fields(), (None, Some("H4sIAP/+".to_string())));
    }

    #[test]
    fn base64_decodes_byte_for_byte_and_ignores_line_breaks() {
        let decoded = UserData::from_fields(None, Some("H4sI\nAP/+\n")).unwrap().unwrap();
        assert_eq!(decoded.as_bytes(), GZIP_MAGIC);
    }

    #[test]
    fn bad_requests_are_refused() {
        assert_eq!(
            UserData::from_fields(Some("a"), Some("YQ==")),
            Err(UserDataError::BothGiven)
        );
        for bad in ["not base64!", "YQ", "Y==="] {
            let err = UserData::from_fields(None, Some(bad)).unwrap_err();
            assert!(matches!(err, UserDataError::InvalidBase64(_)), "{bad}: {err:?}");
            assert_eq!(err.field(), "user_data_base64");
        }
        assert_eq!(UserData::from_fields(None, None), Ok(None));
    }
}
