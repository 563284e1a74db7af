//! Drift repair for [`reconcile`](super::reconcile): one `iptables -S` per
//! table tells whether Hatch's chains and jumps are what [`rules`](super::rules)
//! wants; when they are not, one `iptables-restore --noflush` per table puts
//! them back. Nothing is written when nothing drifted, so this is cheap
//! enough to run every few seconds.
//!
//! Atomicity: iptables-restore applies a table's whole input as one
//! transaction (one nf_tables batch with iptables-nft, one table
//! replacement at `COMMIT` with iptables-legacy), so no packet ever sees a
//! half-rebuilt chain, unlike a flush followed by appends. `--noflush`
//! leaves every chain not named in the input, and so other programs'
//! rules, as they are.

use std::collections::{BTreeMap, HashSet};

use crate::net::NetError;
use crate::sys::cmd;

use super::iptables::{parse_listed, split_saved_line, Listed};
use super::rules::{ordered, Rule, BUILTIN_CHAINS, OWN_CHAINS, OWN_PREFIX};

/// One table as `iptables -S` lists it.
#[derive(Debug, Default)]
pub struct Dump {
    /// Chains that exist (`-N`, and `-P` for built-in ones).
    chains: HashSet<String>,
    /// Rules by chain, in order.
    rules: BTreeMap<String, Vec<Listed>>,
}

impl Dump {
    pub fn parse(text: &str) -> Dump {
        let mut dump = Dump::default();
        for line in text.lines() {
            let words = split_saved_line(line);
            match words.first().map(String::as_str) {
                Some("-N") | Some("-P") if words.len() >= 2 => {
                    dump.chains.insert(words[1].clone());
                }
                Some("-A") if words.len() >= 2 => {
                    if let Some(listed) = parse_listed(&words[1], line) {
                        dump.rules.entry(words[1].clone()).or_default().push(listed);
                    }
                }
                _ => {}
            }
        }
        dump
    }

    fn rules(&self, chain: &str) -> &[Listed] {
        self.rules.get(chain).map(Vec::as_slice).unwrap_or_default()
    }
}

/// What one table needs: the `iptables-restore` input and, in words, what
/// drifted. Empty when the table is as wanted.
#[derive(Debug, Default)]
pub struct Plan {
    lines: Vec<String>,
    pub repairs: Vec<String>,
    /// Comments of the rules put back and of the rules taken out.
    pub added: Vec<String>,
    pub removed: Vec<String>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// The whole `iptables-restore --noflush` input for `table`.
    pub fn script(&self, table: &str) -> String {
        let mut text = format!("*{table}\n");
        for line in &self.lines {
            text.push_str(line);
            text.push('\n');
        }
        text.push_str("COMMIT\n");
        text
    }
}

/// A word as iptables-restore reads it back: quoted (with `\` escapes)
/// unless it is plain.
fn quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:,=!+@%".contains(&b));
    if plain {
        word.to_string()
    } else {
        format!("\"{}\"", word.replace('\\', "\\\\").replace('"', "\\\""))
    }
}

fn line(command: &str, chain: &str, spec: &[String]) -> String {
    let mut text = format!("{command} {chain}");
    for word in spec {
        text.push(' ');
        text.push_str(&quote(word));
    }
    text
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn label(listed: &Listed) -> String {
    listed.comment.clone().unwrap_or_else(|| listed.spec.join(" "))
}

/// Compares `table` as dumped with the `desired` rules (all tables; the
/// others are ignored) and plans the repair. Every rule of a `HATCH-` chain
/// is Hatch's; in a built-in chain only jumps to a `HATCH-` chain are, and
/// nothing else there is read or touched. A rule is recognised by its
/// comment, which fingerprints its arguments.
///
/// `keep` names rules (by comment) that are neither wanted nor to be
/// removed: another caller's scope (start-up's host rules leave the
/// per-VM rules to the first reconcile). They stay, and are put back as
/// they were listed when their chain is rebuilt.
pub fn plan(table: &str, dump: &Dump, desired: &[Rule], keep: &dyn Fn(&str) -> bool) -> Plan {
    let mut plan = Plan::default();
    let wanted_in = |chain: &str| -> Vec<&Rule> {
        desired
            .iter()
            .filter(|r| r.table == table && r.chain == chain)
            .collect()
    };
    for (_, chain) in OWN_CHAINS.iter().filter(|(t, _)| *t == table) {
        let wanted = wanted_in(chain);
        if !dump.chains.contains(*chain) {
            plan.lines.push(format!(":{chain} - [0:0]"));
            plan.repairs.push(format!(
                "chain {chain} missing, recreated with {}",
                plural(wanted.len(), "rule", "rules")
            ));
        } else {
            let (kept, present): (Vec<&Listed>, Vec<&Listed>) = dump.rules(chain).iter().partition(|l| {
                l.comment
                    .as_deref()
                    .is_some_and(|c| keep(c) && !wanted.iter().any(|r| r.comment == c))
            });
            let mut unmatched: Vec<Option<&str>> = present.iter().map(|l| l.comment.as_deref()).collect();
            let mut missing = 0;
            for rule in &wanted {
                match unmatched.iter().position(|c| *c == Some(rule.comment.as_str())) {
                    Some(i) => {
                        unmatched.remove(i);
                    }
                    None => {
                        missing += 1;
                        plan.added.push(rule.comment.clone());
                    }
                }
            }
            let extra: Vec<String> = present
                .iter()
                .filter(|l| !wanted.iter().any(|r| Some(r.comment.as_str()) == l.comment.as_deref()))
                .map(|l| label(l))
                .collect();
            let duplicates = unmatched.len() - extra.len();
            let in_order = present
                .iter()
                .map(|l| l.comment.as_deref())
                .eq(wanted.iter().map(|r| Some(r.comment.as_str())));
            if missing == 0 && unmatched.is_empty() && (in_order || !ordered(chain)) {
                continue;
            }
            let mut found = Vec::new();
            if missing > 0 {
                found.push(plural(missing, "rule missing", "rules missing"));
            }
            if !extra.is_empty() {
                found.push(plural(extra.len(), "unknown rule", "unknown rules"));
            }
            if duplicates > 0 {
                found.push(plural(duplicates, "duplicate rule", "duplicate rules"));
            }
            if found.is_empty() {
                found.push("rules out of order".into());
            }
            plan.repairs
                .push(format!("chain {chain}: {}, restored", found.join(", ")));
            plan.removed.extend(extra);
            plan.lines.push(format!("-F {chain}"));
            for listed in kept {
                plan.lines.push(line("-A", chain, &listed.spec));
            }
        }
        for rule in &wanted {
            plan.lines.push(line("-A", chain, &rule.spec()));
        }
        if !dump.chains.contains(*chain) {
            plan.added.extend(wanted.iter().map(|r| r.comment.clone()));
        }
    }
    for (_, chain) in BUILTIN_CHAINS.iter().filter(|(t, _)| *t == table) {
        let wanted = wanted_in(chain);
        let ours = dump
            .rules(chain)
            .iter()
            .filter(|l| l.target.as_deref().is_some_and(|t| t.starts_with(OWN_PREFIX)));
        let mut kept = HashSet::new();
        let mut stale = 0;
        for listed in ours {
            let comment = listed.comment.as_deref();
            if comment.is_some_and(|c| keep(c) && !wanted.iter().any(|r| r.comment == c)) {
                continue;
            }
            let keep = comment.is_some_and(|c| wanted.iter().any(|r| r.comment == c) && kept.insert(c.to_string()));
            if !keep {
                stale += 1;
                plan.lines.push(line("-D", chain, &listed.spec));
                plan.removed.push(label(listed));
            }
        }
        let mut missing = 0;
        for rule in wanted.iter().filter(|r| !kept.contains(&r.comment)) {
            missing += 1;
            plan.lines.push(line("-I", &format!("{chain} 1"), &rule.spec()));
            plan.added.push(rule.comment.clone());
        }
        if missing > 0 {
            plan.repairs.push(format!(
                "chain {chain}: {} missing, restored",
                plural(missing, "jump into Hatch's chains", "jumps into Hatch's chains")
            ));
        }
        if stale > 0 {
            plan.repairs.push(format!(
                "chain {chain}: {} removed",
                plural(
                    stale,
                    "stale jump into Hatch's chains",
                    "stale jumps into Hatch's chains"
                )
            ));
        }
    }
    plan
}

pub async fn read(table: &str) -> Result<Dump, NetError> {
    let out = cmd::stdout("iptables", ["-w", "-t", table, "-S"]).await?;
    Ok(Dump::parse(&out))
}

/// Applies `script` (the [`Plan::script`]s of one or more tables).
pub async fn restore(script: &str) -> Result<(), NetError> {
    cmd::run_with_input("iptables-restore", ["-w", "--noflush"], script.as_bytes()).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::firewall::rules::{host_rules, FILTER, FORWARD_CHAIN, NAT};

    fn cfg() -> crate::net::NetConfig {
        crate::net::settings::guide_defaults_for_tests()
    }

    /// `iptables -S` of a table holding exactly `rules` (and a foreign one).
    fn dump_of(table: &str, rules: &[Rule]) -> String {
        let mut text = String::from(
            "-P FORWARD ACCEPT\n-P INPUT ACCEPT\n-P PREROUTING ACCEPT\n-P OUTPUT ACCEPT\n-P POSTROUTING ACCEPT\n",
        );
        for (t, chain) in OWN_CHAINS {
            if t == table {
                text.push_str(&format!("-N {chain}\n"));
            }
        }
        text.push_str("-A FORWARD -s 10.66.0.0/16 -m comment --comment \"someone else\" -j DROP\n");
        for rule in rules.iter().filter(|r| r.table == table) {
            text.push_str(&line("-A", rule.chain, &rule.spec()));
            text.push('\n');
        }
        text
    }

    #[test]
    fn a_table_as_wanted_needs_nothing() {
        let desired = host_rules(&cfg());
        for table in [NAT, FILTER] {
            let plan = plan(table, &Dump::parse(&dump_of(table, &desired)), &desired, &|_| false);
            assert!(plan.is_empty() && plan.repairs.is_empty(), "{table}: {plan:?}");
        }
    }

    #[test]
    fn missing_rules_and_jumps_are_put_back_in_one_script() {
        let desired = host_rules(&cfg());
        let kept: Vec<Rule> = desired
            .iter()
            .filter(|r| r.chain != FORWARD_CHAIN && r.chain != "INPUT")
            .cloned()
            .collect();
        let plan = plan(FILTER, &Dump::parse(&dump_of(FILTER, &kept)), &desired, &|_| false);
        assert_eq!(
            plan.repairs,
            [
                "chain HATCH-FORWARD: 8 rules missing, restored",
                "chain INPUT: 1 jump into Hatch's chains missing, restored"
            ]
        );
        let script = plan.script(FILTER);
        assert!(
            script.starts_with("*filter\n-F HATCH-FORWARD\n-A HATCH-FORWARD -i fcbridge -o fcbridge "),
            "{script}"
        );
        assert!(script
            .contains("\n-I INPUT 1 -i fcbridge -j HATCH-INPUT -m comment --comment \"hatch guests to the host #"));
        assert!(script.ends_with("COMMIT\n"));
        assert!(!script.contains("someone else"), "{script}");
    }

    #[test]
    fn a_missing_chain_is_created_and_unknown_rules_go() {
        let desired = host_rules(&cfg());
        let mut text = dump_of(FILTER, &desired).replace("-N HATCH-INPUT\n", "");
        text = text
            .lines()
            .filter(|l| !l.starts_with("-A HATCH-INPUT"))
            .map(|l| format!("{l}\n"))
            .collect();
        text.push_str("-A HATCH-FORWARD -p tcp -j ACCEPT\n");
        let plan = plan(FILTER, &Dump::parse(&text), &desired, &|_| false);
        assert_eq!(
            plan.repairs,
            [
                "chain HATCH-FORWARD: 1 unknown rule, restored",
                "chain HATCH-INPUT missing, recreated with 6 rules"
            ]
        );
        assert_eq!(plan.removed, ["-p tcp -j ACCEPT"]);
        assert!(plan.script(FILTER).contains("\n:HATCH-INPUT - [0:0]\n"));
    }

    #[test]
    fn quoting_round_trips_through_the_listing_parser() {
        let spec: Vec<String> = ["-m", "comment", "--comment", "a \"b\" \\c #d"]
            .map(String::from)
            .into();
        let text = line("-A", "HATCH-X", &spec);
        assert_eq!(split_saved_line(&text)[2..], spec[..]);
    }
}
