//! The VM state machine as one table: `(state, event) → decision`. It is a
//! pure function, so it is tested exhaustively; the orchestrator's one write
//! path ([`super::Orchestrator::apply`]) consults it for every state change,
//! and nothing else sets a VM's state.
//!
//! ```text
//!            Booted                 Stop            Halted
//! creating ─────────► running ─────────► stopping ─────────► stopped
//!    │ BootFailed      │  ▲ │ ▲                                 │ Start
//!    ▼                 │  │ │ └──────────── Booted ─── starting ◄┘
//! (removed)   Snapshot │  │ │ SaveFailed                │ BootFailed
//!                      ▼  │ │                           ▼
//!             snapshotting ─┘ (guest resumed)          error ──► (Start)
//!                  │ Saved     ▲
//!                  ▼           │ Booted
//!             snapshotted ─► restoring ── RestoreFailed ─► snapshotted
//!                  Restore
//!
//! running ── Fork ──► snapshotting ── Forked ──► running (state saved for clones)
//! any settled state ── Delete ──► deleting ── TornDown ──► (removed)
//! running ── GuestShutdown ──► stopped;  running ── VmmCrashed ──► error
//! ```
//!
//! Requests (`Start`, `Stop`, …) come from users, the proxy and the idle
//! monitor; the rest are outcomes of work the orchestrator did. A request
//! that is already satisfied is `Already` (answered with the VM, nothing
//! done); one that cannot be honoured now is `Refuse` (409 `invalid_state`).
//! An outcome refused by the table is a bug, reported as an internal error.

use crate::model::VmState;

/// Something that asks a VM to change, or reports that work on it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Event {
    // Requests.
    Start,
    Stop,
    Snapshot,
    /// Restore the snapshot the VM was suspended with (also: wake).
    Restore,
    /// Restore a snapshot the caller named.
    RestoreNamed,
    Delete,
    /// Save the running guest's state for new VMs, then resume it.
    Fork,
    // Outcomes.
    /// A VMM runs the guest (after create, start or restore).
    Booted,
    /// Launching the VMM failed (create rolls back; start ends in error;
    /// restore goes back to the snapshot).
    BootFailed,
    /// A requested stop finished: no VMM process is left.
    Halted,
    /// The state for a fork was saved and the guest runs on (a failed save
    /// is `SaveFailed`, as for a snapshot).
    Forked,
    /// A snapshot is complete and the VMM is gone.
    Saved,
    /// A snapshot failed and the guest was resumed.
    SaveFailed,
    /// A snapshot failed and the guest could not be resumed.
    ResumeFailed,
    /// Everything the VM held is released; its record goes.
    TornDown,
    /// The VMM exited on its own after a clean guest shutdown.
    GuestShutdown,
    /// The VMM died (crash, kill) without being asked.
    VmmCrashed,
}

impl Event {
    pub const ALL: [Event; 17] = [
        Event::Start,
        Event::Stop,
        Event::Snapshot,
        Event::Restore,
        Event::RestoreNamed,
        Event::Delete,
        Event::Fork,
        Event::Booted,
        Event::BootFailed,
        Event::Halted,
        Event::Forked,
        Event::Saved,
        Event::SaveFailed,
        Event::ResumeFailed,
        Event::TornDown,
        Event::GuestShutdown,
        Event::VmmCrashed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Event::Start => "start",
            Event::Stop => "stop",
            Event::Snapshot => "snapshot",
            Event::Restore | Event::RestoreNamed => "restore",
            Event::Delete => "delete",
            Event::Fork => "fork",
            Event::Booted => "booted",
            Event::BootFailed => "boot_failed",
            Event::Halted => "halted",
            Event::Forked => "forked",
            Event::Saved => "saved",
            Event::SaveFailed => "save_failed",
            Event::ResumeFailed => "resume_failed",
            Event::TornDown => "torn_down",
            Event::GuestShutdown => "guest_shutdown",
            Event::VmmCrashed => "vmm_crashed",
        }
    }

    /// Whether a user (or the proxy, or the idle monitor) asks for this.
    pub fn is_request(self) -> bool {
        matches!(
            self,
            Event::Start
                | Event::Stop
                | Event::Snapshot
                | Event::Restore
                | Event::RestoreNamed
                | Event::Delete
                | Event::Fork
        )
    }
}

/// What the table says to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Move to this state (recorded with the event).
    Enter(VmState),
    /// The VM's record goes (a rolled-back create, a finished delete).
    Remove,
    /// The request is already satisfied: answer with the VM, do nothing.
    Already,
    /// Not allowed in this state.
    Refuse,
}

/// The state a new VM's record is written in, before any host effect.
pub const INITIAL: VmState = VmState::Creating;

/// The whole state machine.
pub fn decide(state: VmState, event: Event) -> Decision {
    use Decision::*;
    use Event as E;
    use VmState as S;
    match (state, event) {
        // Requests.
        (S::Stopped | S::Error, E::Start) => Enter(S::Starting),
        (S::Running, E::Start) => Already,
        (S::Running | S::Error, E::Stop) => Enter(S::Stopping),
        (S::Stopped, E::Stop) => Already,
        (S::Running, E::Snapshot | E::Fork) => Enter(S::Snapshotting),
        (S::Snapshotted, E::Snapshot) => Already,
        (S::Snapshotted, E::Restore | E::RestoreNamed) => Enter(S::Restoring),
        (S::Running, E::Restore) => Already,
        // Deleting again finishes a teardown that was cut short.
        (S::Running | S::Stopped | S::Snapshotted | S::Error | S::Deleting, E::Delete) => Enter(S::Deleting),

        // Outcomes.
        (S::Creating | S::Starting | S::Restoring, E::Booted) => Enter(S::Running),
        (S::Creating, E::BootFailed) => Remove,
        (S::Starting, E::BootFailed) => Enter(S::Error),
        (S::Restoring, E::BootFailed) => Enter(S::Snapshotted),
        (S::Stopping, E::Halted) => Enter(S::Stopped),
        // A start cut short by a daemon crash, with no VMM left, is undone.
        (S::Starting, E::Halted) => Enter(S::Stopped),
        (S::Snapshotting, E::Saved) => Enter(S::Snapshotted),
        (S::Snapshotting, E::SaveFailed | E::Forked) => Enter(S::Running),
        (S::Snapshotting, E::ResumeFailed) => Enter(S::Error),
        (S::Deleting, E::TornDown) => Remove,
        (S::Running, E::GuestShutdown) => Enter(S::Stopped),
        (S::Running | S::Snapshotting, E::VmmCrashed) => Enter(S::Error),

        _ => Refuse,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Decision::*;
    use Event as E;
    use VmState as S;

    /// Every (state, event) pair, written out: a change to the table must
    /// change this list too.
    #[test]
    fn the_table_is_exactly_this() {
        let allowed: &[(S, E, Decision)] = &[
            (S::Stopped, E::Start, Enter(S::Starting)),
            (S::Error, E::Start, Enter(S::Starting)),
            (S::Running, E::Start, Already),
            (S::Running, E::Stop, Enter(S::Stopping)),
            (S::Error, E::Stop, Enter(S::Stopping)),
            (S::Stopped, E::Stop, Already),
            (S::Running, E::Snapshot, Enter(S::Snapshotting)),
            (S::Running, E::Fork, Enter(S::Snapshotting)),
            (S::Snapshotted, E::Snapshot, Already),
            (S::Snapshotted, E::Restore, Enter(S::Restoring)),
            (S::Snapshotted, E::RestoreNamed, Enter(S::Restoring)),
            (S::Running, E::Restore, Already),
            (S::Running, E::Delete, Enter(S::Deleting)),
            (S::Stopped, E::Delete, Enter(S::Deleting)),
            (S::Snapshotted, E::Delete, Enter(S::Deleting)),
            (S::Error, E::Delete, Enter(S::Deleting)),
            (S::Deleting, E::Delete, Enter(S::Deleting)),
            (S::Creating, E::Booted, Enter(S::Running)),
            (S::Starting, E::Booted, Enter(S::Running)),
            (S::Restoring, E::Booted, Enter(S::Running)),
            (S::Creating, E::BootFailed, Remove),
            (S::Starting, E::BootFailed, Enter(S::Error)),
            (S::Restoring, E::BootFailed, Enter(S::Snapshotted)),
            (S::Stopping, E::Halted, Enter(S::Stopped)),
            (S::Starting, E::Halted, Enter(S::Stopped)),
            (S::Snapshotting, E::Saved, Enter(S::Snapshotted)),
            (S::Snapshotting, E::SaveFailed, Enter(S::Running)),
            (S::Snapshotting, E::Forked, Enter(S::Running)),
            (S::Snapshotting, E::ResumeFailed, Enter(S::Error)),
            (S::Deleting, E::TornDown, Remove),
            (S::Running, E::GuestShutdown, Enter(S::Stopped)),
            (S::Running, E::VmmCrashed, Enter(S::Error)),
            (S::Snapshotting, E::VmmCrashed, Enter(S::Error)),
        ];
        for state in VmState::ALL {
            for event in Event::ALL {
                let expected = allowed
                    .iter()
                    .find(|(s, e, _)| *s == state && *e == event)
                    .map(|(_, _, d)| *d)
                    .unwrap_or(Refuse);
                assert_eq!(decide(state, event), expected, "({state:?}, {event:?})");
            }
        }
    }

    #[test]
    fn requests_never_enter_a_settled_state_directly() {
        // A request starts work (a transitional state) or does nothing; only
        // outcomes settle a VM, so a crash always leaves a state that says
        // what was under way.
        for state in VmState::ALL {
            for event in Event::ALL.into_iter().filter(|e| e.is_request()) {
                if let Enter(next) = decide(state, event) {
                    assert!(next.is_transitional(), "({state:?}, {event:?}) → {next:?}");
                }
            }
        }
    }

    #[test]
    fn outcomes_never_answer_already() {
        for state in VmState::ALL {
            for event in Event::ALL.into_iter().filter(|e| !e.is_request()) {
                assert_ne!(decide(state, event), Already, "({state:?}, {event:?})");
            }
        }
    }

    #[test]
    fn every_transitional_state_has_a_way_out() {
        for state in VmState::ALL.into_iter().filter(|s| s.is_transitional()) {
            let exits = Event::ALL
                .into_iter()
                .filter(|e| !e.is_request())
                .filter(|e| {
                    matches!(decide(state, *e), Enter(next) if !next.is_transitional()) || decide(state, *e) == Remove
                })
                .count();
            assert!(exits > 0, "{state:?} has no outcome that settles it");
        }
    }

    #[test]
    fn every_settled_state_can_be_deleted() {
        for state in VmState::ALL.into_iter().filter(|s| !s.is_transitional()) {
            assert_eq!(decide(state, E::Delete), Enter(S::Deleting), "{state:?}");
        }
    }
}
