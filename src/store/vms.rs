//! The `vms` table. The network identity columns are UNIQUE so that two VMs
//! can never hold the same address, MAC, TAP or port, even across restarts.

use std::net::Ipv4Addr;

use rusqlite::{params, Connection, OptionalExtension, Row};

use super::events::{insert_event, EventKind};

use super::codec::{
    corrupt, lifetime_columns, lifetime_params, map_unique, opt_ts, parse_opt_ts, parse_string_list, parse_ts,
    query_all, string_list, ts, user_data_column, user_data_param,
};
use super::{Store, StoreError};
use crate::model::{NetworkIdentity, RestartPolicy, Vm, VmState, VmmLimits};

const COLUMNS: &str = "id, state, image_id, vcpu_count, mem_mib, enable_network, guest_ip, guest_mac, tap_name, \
                       ssh_port, user_data, ssh_authorized_keys, hypervisor, pid, state_reason, ready_at, \
                       created_at, updated_at, last_activity_at, idle_status, restart_policy, snapshot_id, egress, \
                       ttl_seconds, idle_timeout_seconds, on_idle, owner_key_id, pool_template_id";

/// How many of COLUMNS are rewritten by updates: all but `owner_key_id`
/// and `pool_template_id`, which only [`Store::set_vm_owner`] and
/// [`Store::take_pool_vm`] change (so an operation holding an older copy of
/// the VM never undoes a reassignment or a take).
const UPDATED_COLUMNS: usize = 26;

/// Columns whose constraint violations callers can act on.
const UNIQUE_FIELDS: &[&str] = &["id", "guest_ip", "guest_mac", "tap_name", "ssh_port"];

fn network_from_row(row: &Row<'_>) -> Result<Option<NetworkIdentity>, StoreError> {
    let ip: Option<String> = row.get(6)?;
    let mac: Option<String> = row.get(7)?;
    let tap: Option<String> = row.get(8)?;
    let port: Option<u16> = row.get(9)?;
    let egress: String = row.get(22)?;
    let egress =
        crate::model::Egress::from_column(&egress).map_err(|e| corrupt("vms", format!("egress {egress:?}: {e}")))?;
    match (ip, mac, tap, port) {
        (Some(ip), Some(guest_mac), Some(tap_name), Some(ssh_port)) => Ok(Some(NetworkIdentity {
            guest_ip: ip
                .parse::<Ipv4Addr>()
                .map_err(|e| corrupt("vms", format!("guest_ip {ip:?}: {e}")))?,
            guest_mac,
            tap_name,
            ssh_port,
            egress,
        })),
        (None, None, None, None) => Ok(None),
        _ => Err(corrupt("vms", "network identity is partially set")),
    }
}

fn from_row(row: &Row<'_>) -> Result<Vm, StoreError> {
    let state: String = row.get(1)?;
    let keys: String = row.get(11)?;
    let created_at: String = row.get(16)?;
    let updated_at: String = row.get(17)?;
    let created_at = parse_ts("vms", &created_at)?;
    let lifetime = lifetime_columns("vms", row, 23)?;
    Ok(Vm {
        agent: Default::default(),
        id: row.get(0)?,
        state: VmState::parse(&state).ok_or_else(|| corrupt("vms", format!("state {state:?}")))?,
        image_id: row.get(2)?,
        vcpu_count: row.get(3)?,
        mem_mib: row.get(4)?,
        limits: VmmLimits::for_vm(row.get(3)?, row.get(4)?),
        enable_network: row.get(5)?,
        network: network_from_row(row)?,
        user_data: user_data_column("vms", row, 10)?,
        ssh_authorized_keys: parse_string_list("vms", &keys)?,
        hypervisor: row.get(12)?,
        pid: row.get(13)?,
        state_reason: row.get(14)?,
        ready_at: parse_opt_ts("vms", row.get(15)?)?,
        created_at,
        updated_at: parse_ts("vms", &updated_at)?,
        last_activity_at: parse_opt_ts("vms", row.get(18)?)?,
        idle_status: row.get(19)?,
        restart_policy: {
            let policy: String = row.get(20)?;
            RestartPolicy::parse(&policy).ok_or_else(|| corrupt("vms", format!("restart_policy {policy:?}")))?
        },
        snapshot_id: row.get(21)?,
        expires_at: lifetime.expires_at(created_at),
        lifetime,
        owner_key_id: row.get(26)?,
        pool_template_id: row.get(27)?,
    })
}

/// Parameters in COLUMNS order.
fn to_params(vm: &Vm) -> Vec<Box<dyn rusqlite::ToSql>> {
    let net = vm.network.as_ref();
    let mut params: Vec<Box<dyn rusqlite::ToSql>> = vec![
        Box::new(vm.id.clone()),
        Box::new(vm.state.as_str()),
        Box::new(vm.image_id.clone()),
        Box::new(vm.vcpu_count),
        Box::new(vm.mem_mib),
        Box::new(vm.enable_network),
        Box::new(net.map(|n| n.guest_ip.to_string())),
        Box::new(net.map(|n| n.guest_mac.clone())),
        Box::new(net.map(|n| n.tap_name.clone())),
        Box::new(net.map(|n| n.ssh_port)),
        Box::new(user_data_param(&vm.user_data)),
        Box::new(string_list(&vm.ssh_authorized_keys)),
        Box::new(vm.hypervisor.clone()),
        Box::new(vm.pid),
        Box::new(vm.state_reason.clone()),
        Box::new(opt_ts(&vm.ready_at)),
        Box::new(ts(&vm.created_at)),
        Box::new(ts(&vm.updated_at)),
        Box::new(opt_ts(&vm.last_activity_at)),
        Box::new(vm.idle_status.clone()),
        Box::new(vm.restart_policy.as_str()),
        Box::new(vm.snapshot_id.clone()),
        Box::new(net.map(|n| n.egress.to_column()).unwrap_or_else(|| "internet".into())),
    ];
    params.extend(lifetime_params(&vm.lifetime));
    params.push(Box::new(vm.owner_key_id.clone()));
    params.push(Box::new(vm.pool_template_id.clone()));
    params
}

fn update_row(conn: &Connection, vm: &Vm) -> Result<bool, StoreError> {
    let assignments: Vec<String> = COLUMNS
        .split(',')
        .map(str::trim)
        .enumerate()
        .take(UPDATED_COLUMNS)
        .skip(1)
        .map(|(i, column)| format!("{column} = ?{}", i + 1))
        .collect();
    let sql = format!("UPDATE vms SET {} WHERE id = ?1", assignments.join(", "));
    let mut values = to_params(vm);
    values.truncate(UPDATED_COLUMNS);
    let changed = conn
        .prepare_cached(&sql)?
        .execute(rusqlite::params_from_iter(values.iter()))
        .map_err(|e| map_unique(e, UNIQUE_FIELDS))?;
    Ok(changed > 0)
}

impl Store {
    /// Inserts a new VM together with the event of its first state; a taken
    /// id or network value is `Conflict` naming the field.
    pub fn insert_vm(&self, vm: &Vm, reason: Option<&str>) -> Result<(), StoreError> {
        let count = COLUMNS.split(',').count();
        let placeholders: Vec<String> = (1..=count).map(|i| format!("?{i}")).collect();
        let sql = format!("INSERT INTO vms ({COLUMNS}) VALUES ({})", placeholders.join(", "));
        let values = to_params(vm);
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        tx.prepare_cached(&sql)?
            .execute(rusqlite::params_from_iter(values.iter()))
            .map_err(|e| map_unique(e, UNIQUE_FIELDS))?;
        insert_event(&tx, &vm.id, EventKind::State, None, Some(vm.state), reason)?;
        tx.commit()?;
        Ok(())
    }

    pub fn get_vm(&self, id: &str) -> Result<Option<Vm>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM vms WHERE id = ?1");
        Ok(query_all(&self.read(), &sql, &[&id], from_row)?.pop())
    }

    /// All VMs, oldest first.
    pub fn list_vms(&self) -> Result<Vec<Vm>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM vms ORDER BY created_at, rowid");
        query_all(&self.read(), &sql, &[], from_row)
    }

    /// Rewrites the whole row (every column from `vm`; nothing set implicitly).
    /// Returns false when no VM has this id.
    pub fn update_vm(&self, vm: &Vm) -> Result<bool, StoreError> {
        update_row(&self.lock(), vm)
    }

    /// Rewrites the row and records the change from `from` to `vm.state` in
    /// one transaction, so the history never disagrees with the VM.
    /// Returns false (and records nothing) when no VM has this id.
    pub fn update_vm_with_transition(
        &self,
        vm: &Vm,
        from: Option<VmState>,
        reason: Option<&str>,
    ) -> Result<bool, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        if !update_row(&tx, vm)? {
            return Ok(false);
        }
        insert_event(&tx, &vm.id, EventKind::State, from, Some(vm.state), reason)?;
        tx.commit()?;
        Ok(true)
    }

    /// [`Self::update_vm_with_transition`] for several VMs in one
    /// transaction: all change, or none. Returns false (and changes
    /// nothing) when one of them does not exist.
    pub fn update_vms_with_transitions(
        &self,
        changes: &[(&Vm, VmState)],
        reason: Option<&str>,
    ) -> Result<bool, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        for (vm, from) in changes {
            if !update_row(&tx, vm)? {
                return Ok(false);
            }
            insert_event(&tx, &vm.id, EventKind::State, Some(*from), Some(vm.state), reason)?;
        }
        tx.commit()?;
        Ok(true)
    }

    /// Rewrites the row and records an event of `kind` (in the VM's state)
    /// in one transaction. Returns false (and records nothing) when no VM
    /// has this id.
    pub fn update_vm_with_event(&self, vm: &Vm, kind: EventKind, detail: Option<&str>) -> Result<bool, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        if !update_row(&tx, vm)? {
            return Ok(false);
        }
        insert_event(&tx, &vm.id, kind, Some(vm.state), Some(vm.state), detail)?;
        tx.commit()?;
        Ok(true)
    }

    /// Deletes the VM, recording its deletion (a state event from the
    /// state it was in to none); its events stay in the log.
    pub fn delete_vm(&self, id: &str) -> Result<bool, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let state: Option<String> = tx
            .query_row("SELECT state FROM vms WHERE id = ?1", [id], |row| row.get(0))
            .optional()?;
        if let Some(state) = state.as_deref().and_then(VmState::parse) {
            insert_event(&tx, id, EventKind::State, Some(state), None, Some("deleted"))?;
        }
        let deleted = tx.execute("DELETE FROM vms WHERE id = ?1", params![id])? > 0;
        tx.commit()?;
        Ok(deleted)
    }

    /// Gives a VM, its snapshots and its routes to another key, in one
    /// transaction. False when there is no such VM.
    pub fn set_vm_owner(&self, vm_id: &str, owner: Option<&str>) -> Result<bool, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        // A pool VM given away is no longer the pool's.
        let changed = tx.execute(
            "UPDATE vms SET owner_key_id = ?2, pool_template_id = NULL WHERE id = ?1",
            params![vm_id, owner],
        )?;
        if changed == 0 {
            return Ok(false);
        }
        give_away(&tx, vm_id, owner)?;
        tx.commit()?;
        Ok(true)
    }

    /// A warm pool's VM taken by `owner`: the row as `vm` has it (its new
    /// lifetime and restart policy), owned by `owner` and no longer the
    /// pool's, with its snapshots, routes and history, in one transaction.
    /// False when it is no longer a pool VM of `template_id`.
    pub fn take_pool_vm(&self, vm: &Vm, template_id: &str, owner: &str) -> Result<bool, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let changed = tx.execute(
            "UPDATE vms SET owner_key_id = ?2, pool_template_id = NULL WHERE id = ?1 AND pool_template_id = ?3",
            params![vm.id, owner, template_id],
        )?;
        if changed == 0 {
            return Ok(false);
        }
        update_row(&tx, vm)?;
        give_away(&tx, &vm.id, Some(owner))?;
        let reason = format!("taken from the warm pool of template {template_id}");
        insert_event(
            &tx,
            &vm.id,
            EventKind::State,
            Some(vm.state),
            Some(vm.state),
            Some(&reason),
        )?;
        tx.commit()?;
        Ok(true)
    }

    /// VMs owned by `owner`, oldest first.
    pub fn list_vms_of(&self, owner: &str) -> Result<Vec<Vm>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM vms WHERE owner_key_id = ?1 ORDER BY created_at, rowid");
        query_all(&self.read(), &sql, &[&owner], from_row)
    }

    /// The VMs waiting in warm pools, oldest first.
    pub fn list_pool_vms(&self) -> Result<Vec<Vm>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM vms WHERE pool_template_id IS NOT NULL ORDER BY created_at, rowid");
        query_all(&self.read(), &sql, &[], from_row)
    }
}

/// Moves a VM's snapshots, routes and history to `owner` (inside the
/// transaction that changed the VM's owner).
fn give_away(tx: &rusqlite::Transaction<'_>, vm_id: &str, owner: Option<&str>) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE snapshots SET owner_key_id = ?2 WHERE vm_id = ?1",
        params![vm_id, owner],
    )?;
    tx.execute(
        "UPDATE routes SET owner_key_id = ?2 WHERE vm_id = ?1",
        params![vm_id, owner],
    )?;
    // The VM's history goes with it: the new owner sees it, the old
    // one no longer does.
    tx.execute(
        "UPDATE events SET owner_key_id = ?2 WHERE vm_id = ?1",
        params![vm_id, owner],
    )?;
    Ok(())
}
