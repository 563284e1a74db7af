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
//! filter HATCH-FORWARD  replies and DNATed to BR: ACCEPT; from BR: ACCEPT; other to BR: DROP
//! filter INPUT     -i BR                           -> HATCH-INPUT
//! filter HATCH-INPUT    replies, DHCP, DNS, ICMP: ACCEPT; anything else: REJECT
//! ```
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

mod drift;
pub mod iptables;
pub mod rules;

use crate::model::NetworkIdentity;

use super::{NetConfig, NetError};
pub use iptables::Changes;
use rules::{Rule, BUILTIN_CHAINS, NAT, OUTPUT_CHAIN, OWN_CHAINS, PREROUTING_CHAIN};

/// Every chain Hatch manages, own chains first (a jump needs its target).
fn all_chains() -> impl Iterator<Item = (&'static str, &'static str)> {
    OWN_CHAINS.into_iter().chain(BUILTIN_CHAINS)
}

async fn sync(
    chains: impl Iterator<Item = (&'static str, &'static str)>,
    desired: &[Rule],
    in_scope: &(dyn Fn(Option<&str>) -> bool + Sync),
) -> Result<Changes, NetError> {
    let mut changes = Changes::default();
    for (table, chain) in chains {
        let here: Vec<&Rule> = desired
            .iter()
            .filter(|r| r.table == table && r.chain == chain)
            .collect();
        iptables::sync_chain(table, chain, &here, in_scope, &mut changes).await?;
    }
    Ok(changes)
}

fn is_vm_rule(comment: Option<&str>) -> bool {
    comment.is_some_and(|c| c.starts_with("hatch vm="))
}

/// Host-wide rules only (chains, jumps, NAT, forwarding policy); per-VM
/// forwards are left as they are.
pub async fn ensure_host(cfg: &NetConfig) -> Result<Changes, NetError> {
    sync(all_chains(), &rules::host_rules(cfg), &|comment| !is_vm_rule(comment)).await
}

/// Everything: host rules plus exactly the forwards of `vms`. Any other
/// rule in Hatch's chains, and any other jump into them, is removed; a
/// missing chain, rule or jump is put back. Reads each table once and
/// writes a table (atomically, see [`drift`]) only when it drifted.
pub async fn reconcile(cfg: &NetConfig, vms: &[(String, NetworkIdentity)]) -> Result<Changes, NetError> {
    let mut desired = rules::host_rules(cfg);
    for (vm_id, id) in vms {
        desired.extend(rules::vm_rules(cfg, vm_id, id));
    }
    let mut changes = Changes::default();
    for table in [rules::NAT, rules::FILTER] {
        let plan = drift::plan(table, &drift::read(table).await?, &desired);
        if plan.is_empty() {
            continue;
        }
        drift::apply(table, &plan).await?;
        changes.added.extend(plan.added);
        changes.removed.extend(plan.removed);
        changes.repairs.extend(plan.repairs);
    }
    Ok(changes)
}

/// One VM's forwards: present when `id` is given, absent otherwise.
pub async fn sync_vm(cfg: &NetConfig, vm_id: &str, id: Option<&NetworkIdentity>) -> Result<Changes, NetError> {
    let desired = id.map(|id| rules::vm_rules(cfg, vm_id, id)).unwrap_or_default();
    let prefix = rules::vm_prefix(vm_id);
    // Only the chains that hold per-VM rules: attach/detach stay cheap.
    let chains = [(NAT, PREROUTING_CHAIN), (NAT, OUTPUT_CHAIN), (NAT, "PREROUTING")].into_iter();
    sync(chains, &desired, &|comment| {
        comment.is_some_and(|c| c.starts_with(&prefix))
    })
    .await
}
