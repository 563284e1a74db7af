//! Which operations a VM accepts in which state: a pure decision, separate
//! from the effects, so it can be tested exhaustively.
//!
//! ```text
//!   create ─► starting ─► running ─► stopping ─► stopped ─┐
//!                 │          │  ▲                          │ start
//!                 ▼          ▼  │ restore                  ▼
//!               error   snapshotting ─► snapshotted ─► restoring
//! ```
//! A VMM that exits on its own moves `running` to `stopped` (clean guest
//! shutdown) or `error` (crash). `delete` is accepted in every settled state.

use crate::model::VmState;

/// An operation a user (or the idle monitor) asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmAction {
    Stop,
    Start,
    Delete,
    Snapshot,
    Restore,
}

impl VmAction {
    pub fn as_str(self) -> &'static str {
        match self {
            VmAction::Stop => "stop",
            VmAction::Start => "start",
            VmAction::Delete => "delete",
            VmAction::Snapshot => "snapshot",
            VmAction::Restore => "restore",
        }
    }
}

/// The state a VM enters while `action` is carried out, or `None` when the
/// action is not allowed from `from`.
pub fn begin(from: VmState, action: VmAction) -> Option<VmState> {
    use VmAction::*;
    use VmState::*;
    match (action, from) {
        (Stop, Running | Starting) => Some(Stopping),
        (Start, Stopped | Error) => Some(Starting),
        (Snapshot, Running) => Some(Snapshotting),
        (Restore, Snapshotted) => Some(Restoring),
        // Deleting is allowed from every state a VM can rest in; the
        // in-between states are only seen while another operation holds the
        // VM's lock, and delete waits for that lock.
        (Delete, _) => Some(from),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_only_from_running_or_starting() {
        for state in VmState::ALL {
            let allowed = begin(state, VmAction::Stop).is_some();
            assert_eq!(
                allowed,
                matches!(state, VmState::Running | VmState::Starting),
                "{state:?}"
            );
        }
    }

    #[test]
    fn start_only_from_stopped_or_error() {
        for state in VmState::ALL {
            let allowed = begin(state, VmAction::Start).is_some();
            assert_eq!(allowed, matches!(state, VmState::Stopped | VmState::Error), "{state:?}");
        }
    }

    #[test]
    fn snapshot_and_restore_pair_up() {
        assert_eq!(begin(VmState::Running, VmAction::Snapshot), Some(VmState::Snapshotting));
        assert_eq!(begin(VmState::Stopped, VmAction::Snapshot), None);
        assert_eq!(begin(VmState::Snapshotted, VmAction::Restore), Some(VmState::Restoring));
        assert_eq!(begin(VmState::Running, VmAction::Restore), None);
    }

    #[test]
    fn delete_is_always_accepted() {
        for state in VmState::ALL {
            assert!(begin(state, VmAction::Delete).is_some());
        }
    }
}
