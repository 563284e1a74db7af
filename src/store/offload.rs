//! Keeping SQLite off the async runtime's workers: [`Store::run`] hands
//! store calls to a blocking thread, and in debug builds a handle made by
//! [`Store::off_workers`] (the daemon's) panics when a statement runs
//! anywhere else inside a runtime, so a synchronous call left in async
//! code fails the tests that reach it instead of stalling a worker.

use std::cell::Cell;

use super::{Store, StoreError};

thread_local! {
    /// Set while this thread runs calls handed over by [`Store::run`].
    static IN_RUN: Cell<bool> = const { Cell::new(false) };
}

/// Marks the thread as running [`Store::run`]'s calls until dropped (a
/// panic included), putting back what was there.
struct RunMark(bool);

impl RunMark {
    fn enter() -> RunMark {
        RunMark(IN_RUN.with(|mark| mark.replace(true)))
    }
}

impl Drop for RunMark {
    fn drop(&mut self) {
        IN_RUN.with(|mark| mark.set(self.0));
    }
}

impl Store {
    /// Runs `calls` (any of this store's synchronous methods) on a blocking
    /// thread, so no SQLite statement, nor the wait for a connection's
    /// mutex, holds an async worker. Errors stay the caller's type.
    pub async fn run<T, E>(&self, calls: impl FnOnce(&Store) -> Result<T, E> + Send + 'static) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        let store = self.clone();
        tokio::task::spawn_blocking(move || {
            let _mark = RunMark::enter();
            calls(&store)
        })
        .await
        .unwrap_or_else(|joined| Err(StoreError::Interrupted(joined.to_string()).into()))
    }

    /// This handle, for code that runs on the async runtime: every call
    /// goes through [`Store::run`]. Code outside any runtime (the CLI,
    /// start-up before it) and tests use the plain handle.
    pub fn off_workers(&self) -> Store {
        Store {
            off_workers: true,
            ..self.clone()
        }
    }

    /// In debug builds: a statement on an [`off_workers`](Self::off_workers)
    /// handle inside a runtime but outside [`Store::run`] is a bug.
    pub(super) fn check_thread(&self) {
        if cfg!(debug_assertions) && self.off_workers {
            let in_runtime = tokio::runtime::Handle::try_current().is_ok();
            assert!(
                !in_runtime || IN_RUN.with(Cell::get),
                "a SQLite call on an async worker: hand it to Store::run"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The check is live: the same read that passes through `run` panics
    /// when made directly on a runtime's thread.
    #[tokio::test]
    #[cfg_attr(debug_assertions, should_panic(expected = "hand it to Store::run"))]
    async fn a_direct_call_on_a_worker_panics() {
        let store = Store::open_in_memory().unwrap().off_workers();
        store.run(|store| store.list_vms()).await.unwrap();
        let _ = store.list_vms();
    }

    #[tokio::test]
    async fn run_passes_and_plain_handles_are_not_checked() {
        let store = Store::open_in_memory().unwrap();
        assert!(store
            .off_workers()
            .run(|store| store.list_vms())
            .await
            .unwrap()
            .is_empty());
        assert!(store.list_vms().unwrap().is_empty());
    }

    #[test]
    fn outside_a_runtime_a_direct_call_is_fine() {
        let store = Store::open_in_memory().unwrap().off_workers();
        assert!(store.list_vms().unwrap().is_empty());
    }
}
