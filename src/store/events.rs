//! `vm_events`: the record of every VM state change, oldest first.

use rusqlite::{params, Connection, Row};
use serde::Serialize;

use super::codec::{corrupt, parse_ts, query_all, ts};
use super::{Store, StoreError};
use crate::model::{now, Timestamp, VmState};

/// One state change of a VM.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VmEvent {
    pub vm_id: String,
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
    Ok(VmEvent {
        vm_id: row.get(0)?,
        from_state: from.as_deref().map(parse_state).transpose()?,
        to_state: parse_state(&to)?,
        reason: row.get(3)?,
        at: parse_ts("vm_events", &at)?,
    })
}

pub(super) fn insert_event(
    conn: &Connection,
    vm_id: &str,
    from: Option<VmState>,
    to: VmState,
    reason: Option<&str>,
) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO vm_events (vm_id, from_state, to_state, reason, at) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![vm_id, from.map(VmState::as_str), to.as_str(), reason, ts(&now())],
    )?;
    Ok(())
}

impl Store {
    pub fn record_transition(
        &self,
        vm_id: &str,
        from: Option<VmState>,
        to: VmState,
        reason: Option<&str>,
    ) -> Result<(), StoreError> {
        insert_event(&self.lock(), vm_id, from, to, reason)
    }

    /// The VM's state changes in the order they happened.
    pub fn list_transitions(&self, vm_id: &str) -> Result<Vec<VmEvent>, StoreError> {
        query_all(
            &self.lock(),
            "SELECT vm_id, from_state, to_state, reason, at FROM vm_events WHERE vm_id = ?1 ORDER BY id",
            &[&vm_id],
            from_row,
        )
    }
}
