//! The networking guide (`shared/spec/networking-guide.txt` beside the
//! repository) read as a test script: its commented
//! command blocks and its cloud-config examples, taken from the text itself
//! so that a changed command in the guide is a changed test.
//!
//! The guide is found beside this checkout, or beside the repository a
//! clean clone came from (as `scripts/test` finds `shared/bin`). Without it
//! the copy in `assets/networking-guide.txt` is used, except under CI,
//! where a missing guide is a failure rather than a silent fallback.

use std::path::{Path, PathBuf};
use std::process::Command;

const GUIDE: &str = "shared/spec/networking-guide.txt";
const COPY: &str = "tests/integration/assets/networking-guide.txt";

fn beside(dir: &Path) -> PathBuf {
    dir.join("..").join(GUIDE)
}

/// Where the guide is, if it is beside this checkout or beside its origin.
pub fn find() -> Option<PathBuf> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let origin = Command::new("git")
        .args(["config", "--get", "remote.origin.url"])
        .current_dir(repo)
        .output()
        .ok()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .filter(|url| Path::new(url).is_dir());
    std::iter::once(beside(repo))
        .chain(origin.map(|url| beside(Path::new(&url))))
        .find(|path| path.is_file())
}

/// The repository's copy of the guide.
pub fn copy() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(COPY);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The guide's text (see the module documentation for where from).
pub fn text() -> String {
    match find() {
        Some(path) => std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
        None if std::env::var_os("CI").is_some() => {
            panic!("the networking guide ({GUIDE}) is not beside the repository or its origin")
        }
        None => {
            eprintln!("networking guide not found beside the repository: using {COPY}");
            copy()
        }
    }
}

/// The part of `text` from the line `start` up to (not including) the line `end`.
pub fn section<'a>(text: &'a str, start: &str, end: &str) -> &'a str {
    let from = text
        .find(&format!("\n{start}\n"))
        .unwrap_or_else(|| panic!("the guide has no section {start:?}"));
    let rest = &text[from + 1..];
    let to = rest
        .find(&format!("\n{end}\n"))
        .unwrap_or_else(|| panic!("the guide's section {start:?} has no end {end:?}"));
    &rest[..to + 1]
}

/// A commented block of commands: `# comment` then the command lines up to
/// a blank line (a trailing `\` joins a line with the next).
#[derive(Debug, Clone, PartialEq)]
pub struct Block {
    pub comment: String,
    pub commands: Vec<String>,
}

/// Every commented command block of `text`, in order.
pub fn blocks(text: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let Some(comment) = line.strip_prefix("# ") else {
            continue;
        };
        let mut commands: Vec<String> = Vec::new();
        let mut continued = false;
        while let Some(next) = lines.next_if(|l| !l.trim().is_empty() && !l.starts_with("# ")) {
            let part = next.trim().trim_end_matches('\\').trim_end();
            match commands.last_mut() {
                Some(last) if continued => {
                    last.push(' ');
                    last.push_str(part);
                }
                _ => commands.push(part.to_string()),
            }
            continued = next.trim_end().ends_with('\\');
        }
        if !commands.is_empty() {
            blocks.push(Block {
                comment: comment.to_string(),
                commands,
            });
        }
    }
    blocks
}

/// The `#cloud-config` document that follows the line `after`: YAML lines
/// (indented, list items, `key:` lines or blank) up to the next prose line.
pub fn cloud_config_after(text: &str, after: &str) -> String {
    let heading = text
        .find(&format!("\n{after}\n"))
        .unwrap_or_else(|| panic!("the guide has no section {after:?}"));
    let start = text[heading..]
        .find("\n#cloud-config\n")
        .map(|at| heading + at + 1)
        .unwrap_or_else(|| panic!("the guide's section {after:?} has no #cloud-config"));
    let mut doc: Vec<&str> = Vec::new();
    for line in text[start..].lines() {
        let yaml_key = line
            .split_once(':')
            .is_some_and(|(key, _)| !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
        let is_yaml = doc.is_empty()
            || line.trim().is_empty()
            || line.starts_with(' ')
            || line.starts_with('-')
            || line.starts_with('#')
            || yaml_key;
        if !is_yaml {
            break;
        }
        doc.push(line);
    }
    while doc.last().is_some_and(|l| l.trim().is_empty()) {
        doc.pop();
    }
    doc.join("\n") + "\n"
}

#[test]
fn blocks_join_continued_lines_and_stop_at_prose() {
    let text = "Solutions:\n# Check it\ncurl https://x/vms \\\n  -H \"A: b\" | jq '.s'\n\n# Two\nssh h -p 1\nping -c 3 x\n\nNext heading\nnot a command\n";
    assert_eq!(
        blocks(text),
        [
            Block {
                comment: "Check it".into(),
                commands: vec!["curl https://x/vms -H \"A: b\" | jq '.s'".into()],
            },
            Block {
                comment: "Two".into(),
                commands: vec!["ssh h -p 1".into(), "ping -c 3 x".into()],
            },
        ]
    );
}

#[test]
fn cloud_config_keeps_blank_lines_inside_and_stops_at_prose() {
    let text = "Intro\nConfiguring Custom DNS\n\nTo use:\n#cloud-config\nwrite_files:\n  - path: /x\n\nruncmd:\n  - true\n\nDisabling Networking\n";
    assert_eq!(
        cloud_config_after(text, "Configuring Custom DNS"),
        "#cloud-config\nwrite_files:\n  - path: /x\n\nruncmd:\n  - true\n"
    );
}

/// The repository's copy is the guide, word for word (so the fallback
/// tests what users read).
#[test]
fn the_repository_copy_of_the_guide_is_current() {
    match find() {
        Some(path) => assert!(
            std::fs::read_to_string(&path).expect("guide") == copy(),
            "{} changed: copy it to {COPY} and run `cargo test --test integration guide`",
            path.display()
        ),
        None if std::env::var_os("CI").is_some() => panic!("the networking guide ({GUIDE}) is not found"),
        None => eprintln!("networking guide not found beside the repository: nothing to compare"),
    }
}
