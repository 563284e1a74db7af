//! Single-flight wake-up of a sleeping VM.
//!
//! Many requests can arrive for a snapshotted VM at once; exactly one wake
//! (restore) must run, and every request waits for it. The wake runs in its
//! own task so a client that gives up does not cancel it for the others, and
//! each waiter is bounded by the wake timeout (then 503 with Retry-After).

use std::collections::HashMap;
use std::fmt::Display;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::future::{BoxFuture, FutureExt, Shared};
use tokio::time::{timeout_at, Instant};

use super::ready::{wait_port_open, PortWaitError};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WakeError {
    #[error("waking {vm_id} did not finish within {timeout:?}")]
    TimedOut { vm_id: String, timeout: Duration },
    #[error("waking {vm_id} failed: {message}")]
    Failed { vm_id: String, message: String },
    #[error("{vm_id} woke but its service is not answering yet: {source}")]
    NotReady { vm_id: String, source: PortWaitError },
    #[error("the wake task for {vm_id} ended without a result")]
    Aborted { vm_id: String },
}

type WakeResult = Result<(), WakeError>;

struct InFlight {
    generation: u64,
    outcome: Shared<BoxFuture<'static, WakeResult>>,
}

#[derive(Default)]
struct Table {
    next_generation: u64,
    in_flight: HashMap<String, InFlight>,
}

/// Runs at most one wake per VM at a time and lets every request wait on it.
#[derive(Clone)]
pub struct WakeCoordinator {
    table: Arc<Mutex<Table>>,
    timeout: Duration,
}

impl WakeCoordinator {
    /// `timeout` bounds how long each request waits (HATCH_PROXY_WAKE_TIMEOUT).
    pub fn new(timeout: Duration) -> Self {
        Self {
            table: Arc::default(),
            timeout,
        }
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Whether a wake for the VM is running now.
    pub fn is_waking(&self, vm_id: &str) -> bool {
        lock(&self.table).in_flight.contains_key(vm_id)
    }

    /// Joins the VM's running wake, or starts one with `start` if none runs,
    /// and waits until it finishes or `deadline` passes. The wake itself
    /// continues after a waiter's deadline (a later request may join it).
    /// `start` runs under the coordinator's lock: it must only build the
    /// future (the work happens when the future runs) and not call back into
    /// this coordinator.
    pub async fn wake<F, Fut, E>(&self, vm_id: &str, deadline: Instant, start: F) -> WakeResult
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Display,
    {
        let outcome = self.join_or_start(vm_id, start);
        match timeout_at(deadline, outcome).await {
            Ok(result) => result,
            Err(_) => Err(WakeError::TimedOut {
                vm_id: vm_id.to_string(),
                timeout: self.timeout,
            }),
        }
    }

    /// The usual path for a request: wake the VM (shared with concurrent
    /// requests), then wait until `target` accepts connections, all within
    /// the wake timeout from now. Only after this succeeds may the proxy
    /// forward, so a waking VM never yields 502.
    pub async fn wake_until_ready<F, Fut, E>(&self, vm_id: &str, target: SocketAddr, start: F) -> WakeResult
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Display,
    {
        let deadline = Instant::now() + self.timeout;
        self.wake(vm_id, deadline, start).await?;
        wait_port_open(target, deadline).await.map_err(|source| match source {
            // Out of time while waiting for the port is still a timeout to the client.
            PortWaitError::TimedOut { .. } if Instant::now() >= deadline => WakeError::TimedOut {
                vm_id: vm_id.to_string(),
                timeout: self.timeout,
            },
            source => WakeError::NotReady {
                vm_id: vm_id.to_string(),
                source,
            },
        })
    }

    fn join_or_start<F, Fut, E>(&self, vm_id: &str, start: F) -> Shared<BoxFuture<'static, WakeResult>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Display,
    {
        let mut table = lock(&self.table);
        if let Some(running) = table.in_flight.get(vm_id) {
            return running.outcome.clone();
        }
        table.next_generation += 1;
        let generation = table.next_generation;
        let wake = start();
        let owned_id = vm_id.to_string();
        let shared_table = Arc::clone(&self.table);
        let task = tokio::spawn(async move {
            let result = wake.await.map_err(|error| WakeError::Failed {
                vm_id: owned_id.clone(),
                message: error.to_string(),
            });
            // Leave the table before waiters see the result, so a request
            // arriving after a failed wake starts a fresh one.
            let mut table = lock(&shared_table);
            if table
                .in_flight
                .get(&owned_id)
                .is_some_and(|entry| entry.generation == generation)
            {
                table.in_flight.remove(&owned_id);
            }
            result
        });
        let aborted_id = vm_id.to_string();
        let outcome = async move { task.await.unwrap_or(Err(WakeError::Aborted { vm_id: aborted_id })) }
            .boxed()
            .shared();
        table.in_flight.insert(
            vm_id.to_string(),
            InFlight {
                generation,
                outcome: outcome.clone(),
            },
        );
        outcome
    }
}

fn lock(table: &Mutex<Table>) -> MutexGuard<'_, Table> {
    table.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn counting_wake(
        calls: &Arc<AtomicUsize>,
        takes: Duration,
        result: Result<(), String>,
    ) -> impl FnOnce() -> BoxFuture<'static, Result<(), String>> {
        let calls = Arc::clone(calls);
        move || {
            calls.fetch_add(1, Ordering::SeqCst);
            async move {
                tokio::time::sleep(takes).await;
                result
            }
            .boxed()
        }
    }

    #[tokio::test]
    async fn concurrent_wakes_share_one_run() {
        let coordinator = WakeCoordinator::new(Duration::from_secs(10));
        let calls = Arc::new(AtomicUsize::new(0));
        let deadline = Instant::now() + coordinator.timeout();
        let waiters = (0..16).map(|_| {
            coordinator.wake(
                "vm-a",
                deadline,
                counting_wake(&calls, Duration::from_millis(100), Ok(())),
            )
        });
        let results = futures_util::future::join_all(waiters).await;
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(!coordinator.is_waking("vm-a"));
    }

    #[tokio::test]
    async fn a_failed_wake_reaches_every_waiter_and_the_next_request_retries() {
        let coordinator = WakeCoordinator::new(Duration::from_secs(10));
        let calls = Arc::new(AtomicUsize::new(0));
        let deadline = Instant::now() + coordinator.timeout();
        let failing = || counting_wake(&calls, Duration::from_millis(50), Err("restore failed".into()));
        let (a, b) = tokio::join!(
            coordinator.wake("vm-a", deadline, failing()),
            coordinator.wake("vm-a", deadline, failing())
        );
        for result in [a, b] {
            assert!(matches!(result, Err(WakeError::Failed { ref message, .. }) if message == "restore failed"));
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        coordinator
            .wake("vm-a", deadline, counting_wake(&calls, Duration::ZERO, Ok(())))
            .await
            .unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn waiters_time_out_but_the_wake_goes_on() {
        let coordinator = WakeCoordinator::new(Duration::from_millis(50));
        let calls = Arc::new(AtomicUsize::new(0));
        let deadline = Instant::now() + coordinator.timeout();
        let slow = counting_wake(&calls, Duration::from_millis(300), Ok(()));
        let result = coordinator.wake("vm-a", deadline, slow).await;
        assert!(matches!(result, Err(WakeError::TimedOut { .. })), "{result:?}");
        assert!(coordinator.is_waking("vm-a"));
        // A later request joins the same wake instead of starting another.
        let later = Instant::now() + Duration::from_secs(10);
        coordinator
            .wake("vm-a", later, counting_wake(&calls, Duration::ZERO, Ok(())))
            .await
            .unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn different_vms_wake_independently() {
        let coordinator = WakeCoordinator::new(Duration::from_secs(10));
        let calls = Arc::new(AtomicUsize::new(0));
        let deadline = Instant::now() + coordinator.timeout();
        let (a, b) = tokio::join!(
            coordinator.wake(
                "vm-a",
                deadline,
                counting_wake(&calls, Duration::from_millis(20), Ok(()))
            ),
            coordinator.wake(
                "vm-b",
                deadline,
                counting_wake(&calls, Duration::from_millis(20), Ok(()))
            )
        );
        assert!(a.is_ok() && b.is_ok());
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }
}
