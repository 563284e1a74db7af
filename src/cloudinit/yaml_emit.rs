//! A deliberately small YAML writer for the documents Hatch generates
//! (meta-data, network-config).
//!
//! cloud-init reads these with PyYAML, which speaks YAML 1.1: there a plain
//! `52:54:00:12:34:56` is a base-60 integer and a plain `no` is `false`. To
//! make every string mean exactly itself under YAML 1.1 and 1.2 alike, this
//! writer always emits strings double-quoted and escapes everything outside
//! printable ASCII, so the output is plain ASCII whatever the input.

use std::fmt::Write as _;

/// A YAML value tree as Hatch writes it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum YamlNode {
    Null,
    Bool(bool),
    /// A number already formatted as a plain YAML scalar (e.g. `2`).
    Number(String),
    Str(String),
    Seq(Vec<YamlNode>),
    Map(Vec<(YamlNode, YamlNode)>),
}

/// Why a tree cannot be written in block style.
#[derive(Debug, thiserror::Error)]
pub(crate) enum EmitError {
    #[error("a mapping key is itself a list or a mapping")]
    CollectionKey,
    #[error("the top level must be a mapping")]
    TopLevelNotMapping,
}

impl YamlNode {
    pub(crate) fn str(s: impl Into<String>) -> Self {
        YamlNode::Str(s.into())
    }

    /// A mapping from string keys, the common case for generated documents.
    pub(crate) fn map<K: Into<String>>(entries: impl IntoIterator<Item = (K, YamlNode)>) -> Self {
        YamlNode::Map(entries.into_iter().map(|(k, v)| (YamlNode::Str(k.into()), v)).collect())
    }

    /// Converts a parsed YAML value. Tags are dropped (cloud-init's safe
    /// loader would reject custom tags anyway); the tagged value is kept.
    pub(crate) fn from_parsed(value: &serde_yaml_ng::Value) -> Self {
        use serde_yaml_ng::Value;
        match value {
            Value::Null => YamlNode::Null,
            Value::Bool(b) => YamlNode::Bool(*b),
            Value::Number(n) => YamlNode::Number(n.to_string()),
            Value::String(s) => YamlNode::Str(s.clone()),
            Value::Sequence(items) => YamlNode::Seq(items.iter().map(Self::from_parsed).collect()),
            Value::Mapping(m) => YamlNode::Map(
                m.iter()
                    .map(|(k, v)| (Self::from_parsed(k), Self::from_parsed(v)))
                    .collect(),
            ),
            Value::Tagged(tagged) => Self::from_parsed(&tagged.value),
        }
    }

    fn scalar(&self) -> Option<String> {
        match self {
            YamlNode::Null => Some("null".to_owned()),
            YamlNode::Bool(b) => Some(b.to_string()),
            YamlNode::Number(n) => Some(n.clone()),
            YamlNode::Str(s) => Some(quote(s)),
            YamlNode::Seq(items) if items.is_empty() => Some("[]".to_owned()),
            YamlNode::Map(entries) if entries.is_empty() => Some("{}".to_owned()),
            YamlNode::Seq(_) | YamlNode::Map(_) => None,
        }
    }
}

/// Writes a document whose top level is a mapping, in block style.
pub(crate) fn to_document(root: &YamlNode) -> Result<String, EmitError> {
    let YamlNode::Map(entries) = root else {
        return Err(EmitError::TopLevelNotMapping);
    };
    let mut out = String::new();
    write_map(entries, 0, &mut out)?;
    Ok(out)
}

fn write_map(entries: &[(YamlNode, YamlNode)], indent: usize, out: &mut String) -> Result<(), EmitError> {
    for (key, value) in entries {
        let key = match key {
            YamlNode::Seq(_) | YamlNode::Map(_) => return Err(EmitError::CollectionKey),
            YamlNode::Str(s) if is_plain_safe_key(s) => s.clone(),
            scalar => scalar.scalar().unwrap_or_default(),
        };
        pad(indent, out);
        out.push_str(&key);
        out.push(':');
        write_value_after_marker(value, indent, out)?;
    }
    Ok(())
}

fn write_seq(items: &[YamlNode], indent: usize, out: &mut String) -> Result<(), EmitError> {
    for item in items {
        pad(indent, out);
        out.push('-');
        write_value_after_marker(item, indent, out)?;
    }
    Ok(())
}

/// After `key:` or `-`: a scalar stays on the line, a non-empty collection
/// starts on the next line, two spaces deeper.
fn write_value_after_marker(value: &YamlNode, indent: usize, out: &mut String) -> Result<(), EmitError> {
    if let Some(scalar) = value.scalar() {
        out.push(' ');
        out.push_str(&scalar);
        out.push('\n');
        return Ok(());
    }
    out.push('\n');
    match value {
        YamlNode::Map(entries) => write_map(entries, indent + 2, out),
        YamlNode::Seq(items) => write_seq(items, indent + 2, out),
        _ => Ok(()),
    }
}

fn pad(indent: usize, out: &mut String) {
    out.extend(std::iter::repeat_n(' ', indent));
}

/// Keys such as `instance-id` read better unquoted; a word that YAML 1.1
/// would turn into a boolean or null (`on`, `no`, `null`...) stays quoted.
fn is_plain_safe_key(s: &str) -> bool {
    const YAML11_WORDS: [&str; 9] = ["y", "n", "yes", "no", "on", "off", "true", "false", "null"];
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && !YAML11_WORDS.iter().any(|w| w.eq_ignore_ascii_case(s))
}

/// A double-quoted YAML scalar that contains only printable ASCII.
pub(crate) fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            ' '..='~' => out.push(c),
            c if (c as u32) <= 0xFFFF => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => {
                let _ = write!(out, "\\U{:08X}", c as u32);
            }
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(doc: &str) -> serde_yaml_ng::Value {
        serde_yaml_ng::from_str(doc).expect("emitted YAML parses")
    }

    #[test]
    fn awkward_strings_round_trip_as_strings() {
        let awkward = [
            "no",
            "52:54:00:12:34:56",
            "- x",
            "a: b",
            "#c",
            "'q'",
            "\"dq\"",
            "back\\slash",
            "tab\there",
            "line\nbreak",
            "nul\u{0}",
            "é ü 中",
            "🦀",
            "\u{85}\u{2028}",
            "",
            " lead",
            "null",
            "~",
            "1e3",
        ];
        for s in awkward {
            let doc = to_document(&YamlNode::map([("k", YamlNode::str(s))])).expect("emits");
            assert!(doc.is_ascii(), "{doc:?}");
            let parsed = parse(&doc);
            assert_eq!(parsed["k"].as_str(), Some(s), "{doc:?}");
        }
    }

    #[test]
    fn nested_collections_round_trip() {
        let src =
            "on: 1\nNo: 2\nok-key_1: 3\na:\n  - 1\n  - b: [x, {}]\n    c: []\n  - [1, [2]]\nd: {e: null, 5: true}\n";
        let value: serde_yaml_ng::Value = parse(src);
        let doc = to_document(&YamlNode::from_parsed(&value)).expect("emits");
        assert_eq!(parse(&doc), value, "{doc}");
    }

    #[test]
    fn collection_keys_and_non_mapping_roots_are_refused() {
        let value = parse("? [a, b]\n: 1\n");
        assert!(matches!(
            to_document(&YamlNode::from_parsed(&value)),
            Err(EmitError::CollectionKey)
        ));
        assert!(matches!(
            to_document(&YamlNode::Seq(vec![])),
            Err(EmitError::TopLevelNotMapping)
        ));
    }
}
