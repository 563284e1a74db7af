//! Applying [`Rule`]s with `iptables` (argument arrays only), and reading
//! back what is there with `iptables -S`. Works with the nf_tables backend
//! (`iptables-nft`) and the legacy one (`-w` waits for its lock).

use std::collections::HashSet;

use crate::net::NetError;
use crate::sys::cmd;

use super::rules::{ordered, Rule, OWN_PREFIX};

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

async fn iptables(table: &str, args: &[String]) -> Result<String, cmd::CmdError> {
    let mut full: Vec<String> = vec!["-w".into(), "-t".into(), table.into()];
    full.extend_from_slice(args);
    cmd::stdout("iptables", &full).await
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

/// The chain's rules, or `None` if the chain does not exist. Lists the
/// whole table: iptables-nft reports a missing chain as "incompatible",
/// so existence is read from the `-N`/`-P` lines instead of error texts.
pub async fn list(table: &str, chain: &str) -> Result<Option<Vec<Listed>>, NetError> {
    let out = iptables(table, &strings(&["-S"])).await?;
    let exists = out.lines().any(|line| {
        let words = split_saved_line(line);
        words.len() >= 2 && (words[0] == "-N" || words[0] == "-P") && words[1] == chain
    });
    Ok(exists.then(|| out.lines().filter_map(|line| parse_listed(chain, line)).collect()))
}

pub async fn ensure_chain(table: &str, chain: &str) -> Result<(), NetError> {
    if list(table, chain).await?.is_none() {
        if let Err(err) = iptables(table, &strings(&["-N", chain])).await {
            // Lost a race with another creator: fine if it exists now.
            if list(table, chain).await?.is_none() {
                return Err(err.into());
            }
        }
    }
    Ok(())
}

async fn add(rule: &Rule) -> Result<(), NetError> {
    let mut args = if rule.goes_first() {
        strings(&["-I", rule.chain, "1"])
    } else {
        strings(&["-A", rule.chain])
    };
    args.extend(rule.spec());
    iptables(rule.table, &args).await?;
    Ok(())
}

async fn delete(table: &str, chain: &str, listed: &Listed) -> Result<(), NetError> {
    let mut args = strings(&["-D", chain]);
    args.extend(listed.spec.iter().cloned());
    iptables(table, &args).await?;
    Ok(())
}

/// What one sync changed, by rule comment.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changes {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// What drifted, in words (filled by [`reconcile`](super::reconcile)).
    pub repairs: Vec<String>,
}

/// Makes `chain` hold exactly the `desired` rules among the rules that are
/// Hatch's and `in_scope`. Hatch's rules are every rule of a `HATCH-`
/// chain, and in a built-in chain only jumps to a `HATCH-` chain: nothing
/// else is read, let alone removed.
pub async fn sync_chain(
    table: &'static str,
    chain: &'static str,
    desired: &[&Rule],
    in_scope: &(dyn Fn(Option<&str>) -> bool + Sync),
    changes: &mut Changes,
) -> Result<(), NetError> {
    let own_chain = chain.starts_with(OWN_PREFIX);
    if own_chain {
        ensure_chain(table, chain).await?;
    }
    let existing = list(table, chain).await?.unwrap_or_default();
    let ours: Vec<&Listed> = existing
        .iter()
        .filter(|l| own_chain || l.target.as_deref().is_some_and(|t| t.starts_with(OWN_PREFIX)))
        .filter(|l| in_scope(l.comment.as_deref()))
        .collect();

    let wanted: Vec<&str> = desired.iter().map(|r| r.comment.as_str()).collect();
    let present: Vec<&str> = ours.iter().filter_map(|l| l.comment.as_deref()).collect();
    if own_chain && ordered(chain) && present != wanted {
        // Order matters here (ACCEPTs before the final DROP): rebuild.
        // The chain is Hatch's own, so flushing it touches nobody else.
        iptables(table, &strings(&["-F", chain])).await?;
        changes.removed.extend(
            ours.iter()
                .map(|l| l.comment.clone().unwrap_or_else(|| l.spec.join(" "))),
        );
        for rule in desired {
            add(rule).await?;
            changes.added.push(rule.comment.clone());
        }
        return Ok(());
    }

    let mut kept = HashSet::new();
    for listed in ours {
        let keep = listed
            .comment
            .as_deref()
            .is_some_and(|c| wanted.contains(&c) && kept.insert(c.to_string()));
        if !keep {
            delete(table, chain, listed).await?;
            changes
                .removed
                .push(listed.comment.clone().unwrap_or_else(|| listed.spec.join(" ")));
        }
    }
    for rule in desired.iter().filter(|r| !kept.contains(&r.comment)) {
        add(rule).await?;
        changes.added.push(rule.comment.clone());
    }
    Ok(())
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
