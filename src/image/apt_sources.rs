//! Which Debian archive to fetch guest packages from: derived from the
//! host's own apt configuration (one-line `.list` files and deb822
//! `.sources` files), or from `HATCH_DEBIAN_MIRROR`. No mirror host name
//! is ever built in.
use std::path::Path;

use super::ImageError;

/// The Debian release every guest image is built from.
pub const SUITE: &str = "bookworm";

/// One `deb` line of the private sources list used for image builds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AptSource {
    pub uri: String,
    pub suite: String,
    pub signed_by: Option<String>,
}

impl AptSource {
    /// The sources.list line (only the `main` component is used).
    pub fn line(&self) -> String {
        match &self.signed_by {
            Some(keyring) => format!("deb [signed-by={keyring}] {} {} main", self.uri, self.suite),
            None => format!("deb {} {} main", self.uri, self.suite),
        }
    }
}

/// A `deb` entry as found in the host configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostEntry {
    pub uri: String,
    pub suite: String,
    pub components: Vec<String>,
    pub signed_by: Option<String>,
}

const DEBIAN_SUITES: [&str; 10] = [
    "buster",
    "bullseye",
    "bookworm",
    "trixie",
    "forky",
    "sid",
    "stable",
    "testing",
    "unstable",
    "oldstable",
];

/// `bookworm-security` → (`bookworm`, Some(`security`)); None for suites
/// that are not Debian's (third-party repositories).
fn split_debian_suite(suite: &str) -> Option<(&str, Option<&str>)> {
    let (base, pocket) = match suite.split_once(['-', '/']) {
        Some((base, pocket)) => (base, Some(pocket)),
        None => (suite, None),
    };
    DEBIAN_SUITES.contains(&base).then_some((base, pocket))
}

/// Parses one-line style (`deb [opts] uri suite component...`).
pub fn parse_one_line(text: &str) -> Vec<HostEntry> {
    let mut entries = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        let Some(rest) = line.strip_prefix("deb ") else {
            continue;
        };
        let mut rest = rest.trim_start();
        let mut signed_by = None;
        if let Some(options) = rest.strip_prefix('[') {
            let Some((options, after)) = options.split_once(']') else {
                continue;
            };
            signed_by = options
                .split_whitespace()
                .find_map(|o| o.strip_prefix("signed-by="))
                .map(str::to_string);
            rest = after;
        }
        let mut words = rest.split_whitespace();
        let (Some(uri), Some(suite)) = (words.next(), words.next()) else {
            continue;
        };
        entries.push(HostEntry {
            uri: uri.to_string(),
            suite: suite.to_string(),
            components: words.map(str::to_string).collect(),
            signed_by,
        });
    }
    entries
}

/// Parses deb822 style (`Types:`, `URIs:`, `Suites:`, `Components:`,
/// `Signed-By:`, `Enabled:` stanzas). An inline Signed-By key block is
/// ignored (apt's default trusted keys then apply).
pub fn parse_deb822(text: &str) -> Vec<HostEntry> {
    let mut entries = Vec::new();
    for stanza in text.split("\n\n") {
        let mut fields: Vec<(String, String)> = Vec::new();
        for line in stanza.lines().filter(|l| !l.trim_start().starts_with('#')) {
            if line.starts_with([' ', '\t']) {
                if let Some((_, value)) = fields.last_mut() {
                    value.push('\n');
                    value.push_str(line.trim());
                }
            } else if let Some((key, value)) = line.split_once(':') {
                fields.push((key.trim().to_ascii_lowercase(), value.trim().to_string()));
            }
        }
        let field = |name: &str| fields.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        let words = |name: &str| {
            field(name)
                .unwrap_or("")
                .split_whitespace()
                .map(str::to_string)
                .collect::<Vec<_>>()
        };
        if !words("types").iter().any(|t| t == "deb") || field("enabled").is_some_and(|v| v.eq_ignore_ascii_case("no"))
        {
            continue;
        }
        let signed_by = field("signed-by")
            .filter(|v| !v.contains('\n') && v.starts_with('/'))
            .map(str::to_string);
        for uri in words("uris") {
            for suite in words("suites") {
                entries.push(HostEntry {
                    uri: uri.clone(),
                    suite,
                    components: words("components"),
                    signed_by: signed_by.clone(),
                });
            }
        }
    }
    entries
}

/// Turns host entries into bookworm sources: the Debian archive(s) used
/// by the host (whatever release it runs) serve `bookworm` and
/// `bookworm-updates`, its security archive serves `bookworm-security`.
pub fn bookworm_sources(entries: &[HostEntry]) -> Vec<AptSource> {
    let mut sources: Vec<AptSource> = Vec::new();
    for entry in entries.iter().filter(|e| e.components.iter().any(|c| c == "main")) {
        let Some((_, pocket)) = split_debian_suite(&entry.suite) else {
            continue;
        };
        // Old releases named their security pocket `<codename>/updates`.
        let is_security = entry.suite.ends_with("-security") || entry.suite.ends_with("/updates");
        let suites: Vec<String> = match pocket {
            _ if is_security => vec![format!("{SUITE}-security")],
            Some(p) if p.contains("backports") || p == "proposed-updates" => continue,
            _ => vec![SUITE.to_string(), format!("{SUITE}-updates")],
        };
        for suite in suites {
            let source = AptSource {
                uri: entry.uri.clone(),
                suite,
                signed_by: entry.signed_by.clone(),
            };
            if !sources.iter().any(|s| s.uri == source.uri && s.suite == source.suite) {
                sources.push(source);
            }
        }
    }
    sources
}

/// Reads the host's apt configuration below `etc_apt` (normally /etc/apt).
pub fn host_entries(etc_apt: &Path) -> Vec<HostEntry> {
    let mut entries = Vec::new();
    if let Ok(text) = std::fs::read_to_string(etc_apt.join("sources.list")) {
        entries.extend(parse_one_line(&text));
    }
    let mut files: Vec<_> = std::fs::read_dir(etc_apt.join("sources.list.d"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    for file in files {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        match file.extension().and_then(|e| e.to_str()) {
            Some("list") => entries.extend(parse_one_line(&text)),
            Some("sources") => entries.extend(parse_deb822(&text)),
            _ => {}
        }
    }
    entries
}

/// Validates a `HATCH_DEBIAN_MIRROR` value: an http(s) or file URL with no
/// whitespace or option brackets (it is written into a sources list).
pub fn validate_mirror(mirror: &str) -> Result<(), ImageError> {
    let invalid = |message: &str| ImageError::Invalid {
        field: "HATCH_DEBIAN_MIRROR",
        message: message.to_string(),
    };
    let scheme_ok = ["http://", "https://", "file:/"].iter().any(|s| mirror.starts_with(s));
    if !scheme_ok {
        return Err(invalid("must start with http://, https:// or file:/"));
    }
    if mirror.len() > 512
        || mirror
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "[]#\"'".contains(c))
    {
        return Err(invalid("must be a plain URL without spaces, quotes, `#` or brackets"));
    }
    Ok(())
}

/// The sources for a build: the mirror override when given, else the host's.
pub fn build_sources(mirror: Option<&str>, etc_apt: &Path) -> Result<Vec<AptSource>, ImageError> {
    if let Some(mirror) = mirror {
        validate_mirror(mirror)?;
        return Ok([SUITE.to_string(), format!("{SUITE}-updates")]
            .into_iter()
            .map(|suite| AptSource {
                uri: mirror.trim_end_matches('/').to_string(),
                suite,
                signed_by: None,
            })
            .collect());
    }
    let sources = bookworm_sources(&host_entries(etc_apt));
    if sources.is_empty() {
        return Err(ImageError::Mirror(format!(
            "no Debian archive with the `main` component found in {}/sources.list or sources.list.d; \
             set HATCH_DEBIAN_MIRROR to a Debian mirror URL",
            etc_apt.display()
        )));
    }
    Ok(sources)
}
