//! `vm_events`: the record of every VM state change (and every repair the
//! reconciler made to a VM's host state), oldest first; `host_events`: the
//! same for host-wide repairs.

use rusqlite::{params, Connection, Row};
use serde::Serialize;

use super::codec::{corrupt, parse_ts, query_all, ts};
use super::{Store, StoreError};
use crate::model::{now, Timestamp, VmState};

/// What kind of thing an event records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// The VM moved from one state to another.
    State,
    /// The reconciler found host state that had drifted and repaired it.
    Repair,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::State => "state",
            EventKind::Repair => "repair",
        }
    }

    fn parse(text: &str) -> Result<Self, StoreError> {
        match text {
            "state" => Ok(EventKind::State),
            "repair" => Ok(EventKind::Repair),
            other => Err(corrupt("events", format!("kind {other:?}"))),
        }
    }
}

/// One state change of a VM, or one repair of its host state (then
/// `from_state` and `to_state` are the state it was in).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VmEvent {
    pub vm_id: String,
    pub kind: EventKind,
    /// `None` for the VM's first state.
    pub from_state: Option<VmState>,
    pub to_state: VmState,
    pub reason: Option<String>,
    pub at: Timestamp,
}

fn parse_state(text: &str) -> Result<VmState, StoreError> {
    VmState::parse(text).ok_or_else(|| corrupt("vm_events", format!("state {text:?}")))
}

fn from_row(row: &Row<'_>) -> Result<VmEvent, StoreError> {
    let from: Option<String> = row.get(1)?;
    let to: String = row.get(2)?;
    let at: String = row.get(4)?;
    let kind: String = row.get(5)?;
    Ok(VmEvent {
        vm_id: row.get(0)?,
        kind: EventKind::parse(&kind)?,
        from_state: from.as_deref().map(parse_state).transpose()?,
        to_state: parse_state(&to)?,
        reason: row.get(3)?,
        at: parse_ts("vm_events", &at)?,
    })
}

pub(super) fn insert_event(
    conn: &Connection,
    vm_id: &str,
    kind: EventKind,
    from: Option<VmState>,
    to: VmState,
    reason: Option<&str>,
) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO vm_events (vm_id, kind, from_state, to_state, reason, at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            vm_id,
            kind.as_str(),
            from.map(VmState::as_str),
            to.as_str(),
            reason,
            ts(&now())
        ],
    )?;
    Ok(())
}

/// One repair of shared host state (bridge, firewall chains, dnsmasq,
/// stray processes), or another host-wide happening.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HostEvent {
    pub kind: EventKind,
    pub detail: String,
    pub at: Timestamp,
}

impl Store {
    /// Records a repair of a VM's host state; the VM's state is unchanged.
    pub fn record_vm_repair(&self, vm_id: &str, state: VmState, detail: &str) -> Result<(), StoreError> {
        insert_event(&self.lock(), vm_id, EventKind::Repair, Some(state), state, Some(detail))
    }

    pub fn record_host_event(&self, kind: EventKind, detail: &str) -> Result<(), StoreError> {
        self.lock().execute(
            "INSERT INTO host_events (kind, detail, at) VALUES (?1, ?2, ?3)",
            params![kind.as_str(), detail, ts(&now())],
        )?;
        Ok(())
    }

    /// The newest `limit` host-wide events, oldest first.
    pub fn list_host_events(&self, limit: u32) -> Result<Vec<HostEvent>, StoreError> {
        let mut events = query_all(
            &self.lock(),
            "SELECT kind, detail, at FROM host_events ORDER BY id DESC LIMIT ?1",
            &[&limit],
            |row| {
                let kind: String = row.get(0)?;
                let at: String = row.get(2)?;
                Ok(HostEvent {
                    kind: EventKind::parse(&kind)?,
                    detail: row.get(1)?,
                    at: parse_ts("host_events", &at)?,
                })
            },
        )?;
        events.reverse();
        Ok(events)
    }

    /// The VM's state changes and repairs in the order they happened.
    pub fn list_transitions(&self, vm_id: &str) -> Result<Vec<VmEvent>, StoreError> {
        query_all(
            &self.lock(),
            "SELECT vm_id, from_state, to_state, reason, at, kind FROM vm_events WHERE vm_id = ?1 ORDER BY id",
            &[&vm_id],
            from_row,
        )
    }
}
