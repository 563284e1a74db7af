//! Orchestration: one VM's state machine and lock, creation as a ledger with
//! rollback, supervision of VMM processes, and reconcilers that derive host
//! state from the database.
