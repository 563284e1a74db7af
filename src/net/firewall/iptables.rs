//! Reading back what is there with `iptables -S` (changes are written by
//! [`drift`](super::drift) as one `iptables-restore` batch). Works with the
//! nf_tables backend (`iptables-nft`) and the legacy one.

/// A rule as `iptables -S` prints it.
#[derive(Debug, Clone)]
pub struct Listed {
    /// Everything after `-A <chain>`, unquoted: valid for `-D <chain>`.
    pub spec: Vec<String>,
    pub comment: Option<String>,
    pub target: Option<String>,
}

/// Splits an `iptables -S` line into arguments. iptables quotes values
/// with characters outside `[A-Za-z0-9_-]` in double quotes and escapes
/// `"`, `\` and `'` inside them with a backslash.
pub fn split_saved_line(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quoted = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' if quoted => {
                if let Some(next) = chars.next() {
                    word.push(next);
                }
            }
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            c if c.is_whitespace() && !quoted => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

pub(super) fn parse_listed(chain: &str, line: &str) -> Option<Listed> {
    let words = split_saved_line(line);
    if words.len() < 2 || words[0] != "-A" || words[1] != chain {
        return None;
    }
    let spec = words[2..].to_vec();
    let after = |flag: &str| {
        spec.iter()
            .position(|w| w == flag)
            .and_then(|i| spec.get(i + 1))
            .cloned()
    };
    Some(Listed {
        comment: after("--comment"),
        target: after("-j"),
        spec,
    })
}

/// What one reconcile changed, by rule comment.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changes {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// What drifted, in words (filled by [`reconcile`](super::reconcile)).
    pub repairs: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_quoted_comments() {
        let line = r#"-A PREROUTING -p tcp -m tcp --dport 2200 -m comment --comment "hatch vm=vm-a ssh 2200 -> 10.0.0.2:22 \"x\" #ab" -j HATCH-PREROUTING"#;
        let listed = parse_listed("PREROUTING", line).unwrap();
        assert_eq!(
            listed.comment.as_deref(),
            Some(r#"hatch vm=vm-a ssh 2200 -> 10.0.0.2:22 "x" #ab"#)
        );
        assert_eq!(listed.target.as_deref(), Some("HATCH-PREROUTING"));
        assert_eq!(listed.spec[..6], ["-p", "tcp", "-m", "tcp", "--dport", "2200"]);
        assert!(parse_listed("PREROUTING", "-P PREROUTING ACCEPT").is_none());
        assert!(parse_listed("OUTPUT", line).is_none());
    }
}
