//! Hatch's iptables rules: own chains jumped to from the built-in ones,
//! reconciled by comparing rule comments (see [`rules`]).

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
        let here: Vec<&Rule> = desired.iter().filter(|r| r.table == table && r.chain == chain).collect();
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
/// rule in Hatch's chains, and any other jump into them, is removed.
pub async fn reconcile(cfg: &NetConfig, vms: &[(String, NetworkIdentity)]) -> Result<Changes, NetError> {
    let mut desired = rules::host_rules(cfg);
    for (vm_id, id) in vms {
        desired.extend(rules::vm_rules(cfg, vm_id, id));
    }
    sync(all_chains(), &desired, &|_| true).await
}

/// One VM's forwards: present when `id` is given, absent otherwise.
pub async fn sync_vm(cfg: &NetConfig, vm_id: &str, id: Option<&NetworkIdentity>) -> Result<Changes, NetError> {
    let desired = id.map(|id| rules::vm_rules(cfg, vm_id, id)).unwrap_or_default();
    let prefix = rules::vm_prefix(vm_id);
    // Only the chains that hold per-VM rules: attach/detach stay cheap.
    let chains = [(NAT, PREROUTING_CHAIN), (NAT, OUTPUT_CHAIN), (NAT, "PREROUTING")].into_iter();
    sync(chains, &desired, &|comment| comment.is_some_and(|c| c.starts_with(&prefix))).await
}
