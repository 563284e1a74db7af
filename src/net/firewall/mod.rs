//! Hatch's iptables rules: own chains jumped to from the built-in ones,
//! reconciled by comparing rule comments (see [`rules`]).
//!
//! Layout (`BR` = bridge, `NET` = bridge network, `P` = a VM's ssh_port):
//!
//! ```text
//! nat PREROUTING   -p tcp --dport P                -> HATCH-PREROUTING   (one jump per VM)
//! nat HATCH-PREROUTING  -s ALLOWED -p tcp --dport P --dst-type LOCAL -> DNAT guest:22
//! nat OUTPUT       -p tcp --dst-type LOCAL         -> HATCH-OUTPUT
//! nat HATCH-OUTPUT      -p tcp --dport P --dst-type LOCAL -> DNAT guest:22
//! nat POSTROUTING                                  -> HATCH-POSTROUTING
//! nat HATCH-POSTROUTING -s NET ! -o BR -> MASQUERADE; -s 127/8 -o BR -> MASQUERADE
//! filter FORWARD                                   -> HATCH-FORWARD
//! filter HATCH-FORWARD  [deny] BR to BR: DROP; replies and DNATed to BR: ACCEPT;
//!                       from BR to HATCH_EGRESS_DENY_CIDRS: REJECT; from BR -> HATCH-EGRESS;
//!                       from BR (forged source): DROP; other to BR: DROP
//! filter HATCH-EGRESS   per VM, on its address: its egress ACCEPTs, then REJECT
//! filter INPUT     -i BR                           -> HATCH-INPUT
//! filter HATCH-INPUT    replies; DHCP; DNS to the gateway: ACCEPT; anything else: REJECT
//! bridge hatch     (nftables, see [`bridge_table`]) per-TAP anti-spoofing, no
//!                  DHCP servers in guests, [deny] no frames between TAPs
//! ```
//!
//! Every operation's change is one batch: one `iptables-restore --noflush`
//! run for both tables (each table one transaction) and one `nft -f`
//! transaction for the bridge table (see [`drift`]).
//! What the iptables rules trust about a packet's source address is
//! established by the bridge table: a guest's frames carry its own MAC and
//! IPv4 address or are dropped before IP sees them.
//!
//! Why one jump per VM in PREROUTING: the guide's troubleshooting step is
//! `iptables -t nat -L PREROUTING -n -v | grep 2200`, which lists only the
//! built-in chain. Each VM's jump matches its port and its comment names
//! the VM and the guest address, so the grep finds the forward for any
//! port; the DNAT itself (with the HATCH_SSH_ALLOWED_CIDR check) stays in
//! Hatch's chain. The POSTROUTING jump's comment says MASQUERADE for the
//! guide's `grep MASQUERADE` check in the same way.
//!
//! Ownership: every rule in a `HATCH-` chain is Hatch's; in a built-in
//! chain only rules jumping to a `HATCH-` chain are. Nothing else is ever
//! deleted. Jumps are inserted at the top of built-in chains so other
//! programs' DNATs or DROP policies (Docker, firewalld) do not shadow them.
//! Connections the host makes itself are forwarded whatever their source:
//! the host can reach guest addresses directly anyway.

mod bridge_table;
mod drift;
pub mod iptables;
pub mod rules;

use crate::model::NetworkIdentity;

use super::{NetConfig, NetError};
pub use iptables::Changes;

fn is_vm_rule(comment: &str) -> bool {
    comment.starts_with("hatch vm=")
}

/// Plans both iptables tables and applies whatever drifted with one
/// `iptables-restore` run (each table's part is one transaction).
async fn apply(desired: &[rules::Rule], keep: &(dyn Fn(&str) -> bool + Sync)) -> Result<Changes, NetError> {
    apply_to(read_tables().await?, desired, keep).await
}

/// Both iptables tables, read at once (each read is a process run).
async fn read_tables() -> Result<[drift::Dump; 2], NetError> {
    let (nat, filter) = tokio::try_join!(drift::read(rules::NAT), drift::read(rules::FILTER))?;
    Ok([nat, filter])
}

/// [`apply`] to the tables as `found` (nat, filter) holds them.
async fn apply_to(
    found: [drift::Dump; 2],
    desired: &[rules::Rule],
    keep: &(dyn Fn(&str) -> bool + Sync),
) -> Result<Changes, NetError> {
    let mut changes = Changes::default();
    let mut script = String::new();
    for (table, dump) in [rules::NAT, rules::FILTER].into_iter().zip(&found) {
        let plan = drift::plan(table, dump, desired, keep);
        if plan.is_empty() {
            continue;
        }
        script.push_str(&plan.script(table));
        changes.added.extend(plan.added);
        changes.removed.extend(plan.removed);
        changes.repairs.extend(plan.repairs);
    }
    if !script.is_empty() {
        drift::restore(&script).await?;
    }
    Ok(changes)
}

/// Host-wide rules only (chains, jumps, NAT, forwarding policy, the
/// bridge table when missing); per-VM rules are left as they are for the
/// first reconcile.
pub async fn ensure_host(cfg: &NetConfig) -> Result<Changes, NetError> {
    bridge_table::ensure_exists(cfg).await?;
    apply(&rules::host_rules(cfg), &is_vm_rule).await
}

/// Everything: host rules plus exactly the rules of `vms`. Any other rule
/// in Hatch's chains, any other jump into them and any other chain of the
/// bridge table is removed; whatever is missing is put back. Reads each
/// table once and writes one (atomically) only when it drifted, so this
/// is cheap enough to run every few seconds.
pub async fn reconcile(cfg: &NetConfig, vms: &[(String, NetworkIdentity)]) -> Result<Changes, NetError> {
    // One canonical order whoever calls (reconcile, attach, detach), so
    // ordered chains never look out of order between callers.
    let mut vms: Vec<&(String, NetworkIdentity)> = vms.iter().collect();
    vms.sort_by(|a, b| a.0.cmp(&b.0));
    let mut desired = rules::host_rules(cfg);
    for (vm_id, id) in &vms {
        desired.extend(rules::vm_rules(cfg, vm_id, id));
    }
    // Every table read at once; the bridge table written first: it is what
    // makes source addresses trustworthy.
    let (bridge, tables) = tokio::try_join!(bridge_table::read(), read_tables())?;
    let mut changes = Changes::default();
    changes
        .repairs
        .extend(bridge_table::reconcile(cfg, &vms, bridge.as_ref()).await?);
    let ipt = apply_to(tables, &desired, &|_| false).await?;
    changes.added.extend(ipt.added);
    changes.removed.extend(ipt.removed);
    changes.repairs.extend(ipt.repairs);
    Ok(changes)
}
