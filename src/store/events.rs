//! `events`: one log of everything that happened, oldest first, with one
//! cursor (the row id): VM state changes, readiness, repairs the reconciler
//! made to a VM's host state, idle decisions and failed operations; and
//! host-wide events (`vm_id` NULL): repairs of shared host state. Each VM
//! row records the VM's owner when it was written, so events can be
//! filtered by owner after the VM is gone.

use rusqlite::{params, Connection, Row};
use serde::Serialize;

use super::codec::{corrupt, parse_ts, query_all, ts};
use super::{Store, StoreError};
use crate::model::{now, Timestamp, VmState};

/// What kind of thing an event records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// The VM moved from one state to another (`to_state` absent: the VM
    /// was deleted).
    State,
    /// The guest became ready (accepts SSH).
    Ready,
    /// The reconciler found host state that had drifted and repaired it.
    Repair,
    /// The idle monitor decided to keep or suspend the VM.
    Idle,
    /// An operation on the VM failed.
    Error,
    /// The guest agent connected (and the guest clock was set from the host).
    Agent,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::State => "state",
            EventKind::Ready => "ready",
            EventKind::Repair => "repair",
            EventKind::Idle => "idle",
            EventKind::Error => "error",
            EventKind::Agent => "agent",
        }
    }

    fn parse(text: &str) -> Result<Self, StoreError> {
        match text {
            "state" => Ok(EventKind::State),
            "ready" => Ok(EventKind::Ready),
            "repair" => Ok(EventKind::Repair),
            "idle" => Ok(EventKind::Idle),
            "agent" => Ok(EventKind::Agent),
            "error" => Ok(EventKind::Error),
            other => Err(corrupt("events", format!("kind {other:?}"))),
        }
    }
}

/// One event of a VM: a state change, or something that happened while it
/// was in `to_state` (then `from_state` is that state too).
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

/// One entry of the whole log, as `GET /events` streams it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LogEvent {
    /// The cursor: later events have larger ids.
    pub id: i64,
    /// `None` for a host-wide event.
    pub vm_id: Option<String>,
    pub kind: EventKind,
    pub from_state: Option<VmState>,
    /// `None` for a host-wide event and for a VM's deletion.
    pub to_state: Option<VmState>,
    pub reason: Option<String>,
    pub at: Timestamp,
}

/// Which events a reader of the log may see.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    /// Only this VM's events.
    pub vm_id: Option<String>,
    /// Only events of VMs this key owned (never host-wide ones); `None`:
    /// everything.
    pub owner_key_id: Option<String>,
}

fn parse_state(text: &str) -> Result<VmState, StoreError> {
    VmState::parse(text).ok_or_else(|| corrupt("events", format!("state {text:?}")))
}

fn from_row(row: &Row<'_>) -> Result<VmEvent, StoreError> {
    let from: Option<String> = row.get(1)?;
    let to: Option<String> = row.get(2)?;
    let at: String = row.get(4)?;
    let kind: String = row.get(5)?;
    let to = to.ok_or_else(|| corrupt("events", "a VM event without a state".to_string()))?;
    Ok(VmEvent {
        vm_id: row.get(0)?,
        kind: EventKind::parse(&kind)?,
        from_state: from.as_deref().map(parse_state).transpose()?,
        to_state: parse_state(&to)?,
        reason: row.get(3)?,
        at: parse_ts("events", &at)?,
    })
}

fn log_row(row: &Row<'_>) -> Result<LogEvent, StoreError> {
    let from: Option<String> = row.get(3)?;
    let to: Option<String> = row.get(4)?;
    let kind: String = row.get(2)?;
    let at: String = row.get(6)?;
    Ok(LogEvent {
        id: row.get(0)?,
        vm_id: row.get(1)?,
        kind: EventKind::parse(&kind)?,
        from_state: from.as_deref().map(parse_state).transpose()?,
        to_state: to.as_deref().map(parse_state).transpose()?,
        reason: row.get(5)?,
        at: parse_ts("events", &at)?,
    })
}

/// Records an event of a VM (with the VM's current owner); `to` is `None`
/// only for the deletion.
pub(super) fn insert_event(
    conn: &Connection,
    vm_id: &str,
    kind: EventKind,
    from: Option<VmState>,
    to: Option<VmState>,
    reason: Option<&str>,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO events (vm_id, owner_key_id, kind, from_state, to_state, reason, at) \
         VALUES (?1, (SELECT owner_key_id FROM vms WHERE id = ?1), ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        vm_id,
        kind.as_str(),
        from.map(VmState::as_str),
        to.map(VmState::as_str),
        reason,
        ts(&now())
    ])?;
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
        self.record_vm_event(vm_id, EventKind::Repair, state, Some(detail))
    }

    /// Records something that happened to a VM in `state` without changing
    /// it (readiness, an idle decision, a failed operation, a repair).
    pub fn record_vm_event(
        &self,
        vm_id: &str,
        kind: EventKind,
        state: VmState,
        detail: Option<&str>,
    ) -> Result<(), StoreError> {
        insert_event(&self.lock(), vm_id, kind, Some(state), Some(state), detail)
    }

    pub fn record_host_event(&self, kind: EventKind, detail: &str) -> Result<(), StoreError> {
        self.lock().execute(
            "INSERT INTO events (kind, reason, at) VALUES (?1, ?2, ?3)",
            params![kind.as_str(), detail, ts(&now())],
        )?;
        Ok(())
    }

    /// Whether the VM ever recorded an event of `kind` (e.g. its guest
    /// agent's hello).
    pub fn vm_had_event(&self, vm_id: &str, kind: EventKind) -> Result<bool, StoreError> {
        Ok(self.read().query_row(
            "SELECT EXISTS(SELECT 1 FROM events WHERE vm_id = ?1 AND kind = ?2)",
            params![vm_id, kind.as_str()],
            |row| row.get(0),
        )?)
    }

    /// The newest `limit` host-wide events, oldest first.
    pub fn list_host_events(&self, limit: u32) -> Result<Vec<HostEvent>, StoreError> {
        let mut events = query_all(
            &self.read(),
            "SELECT kind, reason, at FROM events WHERE vm_id IS NULL ORDER BY id DESC LIMIT ?1",
            &[&limit],
            |row| {
                let kind: String = row.get(0)?;
                let detail: Option<String> = row.get(1)?;
                let at: String = row.get(2)?;
                Ok(HostEvent {
                    kind: EventKind::parse(&kind)?,
                    detail: detail.unwrap_or_default(),
                    at: parse_ts("events", &at)?,
                })
            },
        )?;
        events.reverse();
        Ok(events)
    }

    /// The VM's state changes and other events in the order they happened.
    pub fn list_transitions(&self, vm_id: &str) -> Result<Vec<VmEvent>, StoreError> {
        query_all(
            &self.read(),
            "SELECT vm_id, from_state, to_state, reason, at, kind FROM events \
             WHERE vm_id = ?1 AND to_state IS NOT NULL ORDER BY id",
            &[&vm_id],
            from_row,
        )
    }

    /// Up to `limit` events after the cursor `after` that `filter` lets
    /// through, oldest first.
    pub fn events_after(&self, after: i64, filter: &EventFilter, limit: u32) -> Result<Vec<LogEvent>, StoreError> {
        query_all(
            &self.read(),
            "SELECT id, vm_id, kind, from_state, to_state, reason, at FROM events \
             WHERE id > ?1 AND (?2 IS NULL OR vm_id = ?2) \
             AND (?3 IS NULL OR (vm_id IS NOT NULL AND owner_key_id = ?3)) \
             ORDER BY id LIMIT ?4",
            &[&after, &filter.vm_id, &filter.owner_key_id, &limit],
            log_row,
        )
    }

    /// The newest event's id (0 when there is none).
    pub fn last_event_id(&self) -> Result<i64, StoreError> {
        Ok(self
            .lock()
            .query_row("SELECT COALESCE(MAX(id), 0) FROM events", [], |row| row.get(0))?)
    }
}
