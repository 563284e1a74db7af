//! Durable operations: every change of a VM runs as a task of the
//! orchestrator's own, so a client that disconnects, times out or is killed
//! never cancels it halfway (the handler's future is dropped; the task is
//! not). Shutdown stops taking new operations and waits for those in flight.
//!
//! A caller either waits for the whole operation (the API's default), or
//! only until it is *accepted*: the VM's lock is held and its transitional
//! state recorded (`Prefer: respond-async` → 202 with that VM).

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio_util::task::TaskTracker;

use crate::metrics::OperationKind;
use crate::model::{Snapshot, Vm};
use crate::store::EventKind;

use super::{CreateVm, OrchError, Orchestrator};

#[derive(Default)]
pub(super) struct Operations {
    tracker: TaskTracker,
    closing: AtomicBool,
}

impl Operations {
    pub(super) fn is_closing(&self) -> bool {
        self.closing.load(Ordering::SeqCst)
    }

    /// Runs host work that finishes what an operation began once it has
    /// answered (nobody waits for it); drained at shutdown like operations.
    pub(super) fn spawn_follow_up(&self, work: impl Future<Output = ()> + Send + 'static) {
        self.tracker.spawn(work);
    }

    /// Refuses new operations and waits (at most `timeout`) for the rest.
    pub(super) async fn drain(&self, timeout: Duration) {
        self.closing.store(true, Ordering::SeqCst);
        self.tracker.close();
        if tokio::time::timeout(timeout, self.tracker.wait()).await.is_err() {
            tracing::warn!(
                running = self.tracker.len(),
                "operations still running at shutdown; the next start finishes or undoes them"
            );
        }
    }
}

/// Tells a caller that waits only for acceptance that the operation has
/// recorded its intent (or found nothing to do), with the VM as it is now.
#[derive(Default)]
pub(super) struct Accepted(Option<oneshot::Sender<Vm>>);

impl Accepted {
    pub(super) fn send(&mut self, vm: &Vm) {
        if let Some(sender) = self.0.take() {
            let _ = sender.send(vm.clone());
        }
    }
}

/// An operation a client may ask for without waiting for it to finish.
#[derive(Debug, Clone)]
pub enum Operation {
    Create(Box<CreateVm>),
    Start(String),
    Stop(String),
    Snapshot(String),
    Restore { vm_id: String, snapshot_id: Option<String> },
    Delete(String),
}

impl Operation {
    /// The VM it changes (none yet for a create).
    fn vm_id(&self) -> Option<String> {
        match self {
            Operation::Create(_) => None,
            Operation::Start(id) | Operation::Stop(id) | Operation::Snapshot(id) | Operation::Delete(id) => {
                Some(id.clone())
            }
            Operation::Restore { vm_id, .. } => Some(vm_id.clone()),
        }
    }

    fn kind(&self) -> OperationKind {
        match self {
            Operation::Create(_) => OperationKind::Create,
            Operation::Start(_) => OperationKind::Start,
            Operation::Stop(_) => OperationKind::Stop,
            Operation::Snapshot(_) => OperationKind::Snapshot,
            Operation::Restore { .. } => OperationKind::Restore,
            Operation::Delete(_) => OperationKind::Delete,
        }
    }
}

/// What a finished operation answers with.
enum Outcome {
    Vm(Box<Vm>),
    Snapshot(Snapshot),
    Deleted,
}

impl Outcome {
    fn into_vm(self) -> Result<Vm, OrchError> {
        match self {
            Outcome::Vm(vm) => Ok(*vm),
            other => Err(other.unexpected()),
        }
    }

    fn unexpected(&self) -> OrchError {
        let what = match self {
            Outcome::Vm(_) => "a VM",
            Outcome::Snapshot(_) => "a snapshot",
            Outcome::Deleted => "a deletion",
        };
        OrchError::Internal(format!("the operation answered with {what} instead"))
    }
}

impl Orchestrator {
    /// Runs `work` as an operation of the orchestrator's own and waits for
    /// it. Dropping the returned future does not stop the work.
    pub(super) async fn run_operation<T, F, Fut>(self: &Arc<Self>, work: F) -> Result<T, OrchError>
    where
        F: FnOnce(Arc<Self>) -> Fut,
        Fut: Future<Output = Result<T, OrchError>> + Send + 'static,
        T: Send + 'static,
    {
        self.run_vm_operation(None, work).await
    }

    /// [`Self::run_operation`] on the VM `vm_id`: a failure is recorded as
    /// the VM's `error` event.
    pub(super) async fn run_vm_operation<T, F, Fut>(
        self: &Arc<Self>,
        vm_id: Option<String>,
        work: F,
    ) -> Result<T, OrchError>
    where
        F: FnOnce(Arc<Self>) -> Fut,
        Fut: Future<Output = Result<T, OrchError>> + Send + 'static,
        T: Send + 'static,
    {
        let task = self.spawn_operation(vm_id, work)?;
        task.await
            .unwrap_or_else(|error| Err(OrchError::Internal(format!("operation task failed: {error}"))))
    }

    /// Spawns `work`; when it fails on the VM `vm_id` (not a refusal of the
    /// request), the failure is recorded as an `error` event of the VM.
    fn spawn_operation<T, F, Fut>(
        self: &Arc<Self>,
        vm_id: Option<String>,
        work: F,
    ) -> Result<tokio::task::JoinHandle<Result<T, OrchError>>, OrchError>
    where
        F: FnOnce(Arc<Self>) -> Fut,
        Fut: Future<Output = Result<T, OrchError>> + Send + 'static,
        T: Send + 'static,
    {
        if self.operations.closing.load(Ordering::SeqCst) {
            return Err(OrchError::Unavailable {
                message: "the daemon is shutting down; try again once it is back".into(),
            });
        }
        let orch = self.clone();
        let work = work(self.clone());
        Ok(self.operations.tracker.spawn(async move {
            // Shared with other operations; the reconciler waits for all of
            // them before it changes the host.
            let _host = orch.host_ops.read().await;
            let result = work.await;
            if result.as_ref().is_err_and(|e| e.is_host_failure()) {
                orch.reconcile_now.notify_one();
            }
            if let (Some(vm_id), Err(error)) = (&vm_id, &result) {
                orch.record_failure(vm_id, error).await;
            }
            result
        }))
    }

    /// Starts `operation` and answers once it is accepted (its intent is
    /// recorded), with the VM in its transitional state; the rest goes on
    /// in the background. Errors found before that (bad input, a state that
    /// refuses it) are returned as they would be by the waiting form.
    pub async fn submit(self: &Arc<Self>, operation: Operation) -> Result<Vm, OrchError> {
        let (sender, accepted) = oneshot::channel();
        let accepted_by = Accepted(Some(sender));
        let kind = operation.kind();
        let task = self.spawn_operation(operation.vm_id(), move |orch| async move {
            orch.perform(operation, kind, accepted_by).await.map(drop)
        })?;
        match accepted.await {
            Ok(vm) => Ok(vm),
            // Ended before accepting: the error (or, if it somehow ended
            // well without saying so, the VM is gone or settled).
            Err(_) => match task.await {
                Ok(Err(error)) => Err(error),
                Ok(Ok(())) => Err(OrchError::Internal("the operation ended without a result".into())),
                Err(error) => Err(OrchError::Internal(format!("operation task failed: {error}"))),
            },
        }
    }

    pub async fn create_vm(self: &Arc<Self>, req: CreateVm) -> Result<Vm, OrchError> {
        self.run(Operation::Create(Box::new(req))).await?.into_vm()
    }

    pub async fn start_vm(self: &Arc<Self>, id: &str) -> Result<Vm, OrchError> {
        self.run(Operation::Start(id.to_string())).await?.into_vm()
    }

    pub async fn stop_vm(self: &Arc<Self>, id: &str) -> Result<Vm, OrchError> {
        self.run(Operation::Stop(id.to_string())).await?.into_vm()
    }

    pub async fn delete_vm(self: &Arc<Self>, id: &str) -> Result<(), OrchError> {
        self.run(Operation::Delete(id.to_string())).await.map(drop)
    }

    /// Takes a snapshot of a running VM; on a VM already `snapshotted`,
    /// answers with the snapshot it was suspended with.
    pub async fn snapshot_vm(self: &Arc<Self>, id: &str) -> Result<Snapshot, OrchError> {
        match self.run(Operation::Snapshot(id.to_string())).await? {
            Outcome::Snapshot(snapshot) => Ok(snapshot),
            other => Err(other.unexpected()),
        }
    }

    /// Restores the given snapshot, or the one the VM was suspended with.
    pub async fn restore_vm(self: &Arc<Self>, id: &str, snapshot_id: Option<&str>) -> Result<Vm, OrchError> {
        let operation = Operation::Restore {
            vm_id: id.to_string(),
            snapshot_id: snapshot_id.map(str::to_string),
        };
        self.run(operation).await?.into_vm()
    }

    /// Brings a VM back to `running` for a request through the proxy:
    /// restores a snapshotted VM, accepts one that already runs.
    pub async fn wake_vm(self: &Arc<Self>, id: &str) -> Result<Vm, OrchError> {
        let operation = Operation::Restore {
            vm_id: id.to_string(),
            snapshot_id: None,
        };
        self.run_as(operation, OperationKind::Wake).await?.into_vm()
    }

    /// Runs `operation` and waits for it to finish.
    async fn run(self: &Arc<Self>, operation: Operation) -> Result<Outcome, OrchError> {
        let kind = operation.kind();
        self.run_as(operation, kind).await
    }

    async fn run_as(self: &Arc<Self>, operation: Operation, kind: OperationKind) -> Result<Outcome, OrchError> {
        self.run_vm_operation(operation.vm_id(), move |orch| async move {
            orch.perform(operation, kind, Accepted::default()).await
        })
        .await
    }

    /// The work of one operation, timed as `kind`; `accepted` hears when
    /// its intent is recorded.
    async fn perform(
        self: Arc<Self>,
        operation: Operation,
        kind: OperationKind,
        accepted: Accepted,
    ) -> Result<Outcome, OrchError> {
        self.timed(kind, async {
            match operation {
                Operation::Create(request) => self
                    .create_op(*request, accepted)
                    .await
                    .map(|vm| Outcome::Vm(Box::new(vm))),
                Operation::Start(id) => self.start_op(&id, accepted).await.map(|vm| Outcome::Vm(Box::new(vm))),
                Operation::Stop(id) => self.stop_op(&id, accepted).await.map(|vm| Outcome::Vm(Box::new(vm))),
                Operation::Snapshot(id) => {
                    let _guard = self.locks.lock(&id).await;
                    self.snapshot_locked(&id, accepted).await.map(Outcome::Snapshot)
                }
                Operation::Restore { vm_id, snapshot_id } => {
                    let _guard = self.locks.lock(&vm_id).await;
                    self.restore_locked(&vm_id, snapshot_id.as_deref(), accepted)
                        .await
                        .map(|vm| Outcome::Vm(Box::new(vm)))
                }
                Operation::Delete(id) => self.delete_op(&id, accepted).await.map(|()| Outcome::Deleted),
            }
        })
        .await
    }

    /// Runs one operation's work and records how long it took and whether
    /// it failed (`hatch_vm_operation_duration_seconds`).
    pub(super) async fn timed<T>(
        &self,
        kind: OperationKind,
        work: impl Future<Output = Result<T, OrchError>>,
    ) -> Result<T, OrchError> {
        let started = std::time::Instant::now();
        let result = work.await;
        self.metrics.observe_operation(kind, result.is_ok(), started.elapsed());
        result
    }
}

impl Orchestrator {
    /// Records a failed operation on the VM as its `error` event (not a
    /// refusal of the request: those are answered, not recorded).
    async fn record_failure(&self, vm_id: &str, error: &OrchError) {
        if error.is_refusal() {
            return;
        }
        let (id, detail) = (vm_id.to_string(), error.to_string());
        let recorded = self.store.run(move |store| match store.get_vm(&id) {
            Ok(Some(vm)) => store.record_vm_event(&id, EventKind::Error, vm.state, Some(&detail)),
            // Gone (or unreadable): nothing to record it on.
            _ => Ok(()),
        });
        if let Err(store_error) = recorded.await {
            tracing::warn!(vm = %vm_id, %store_error, "recording the failed operation failed");
        }
    }
}

impl OrchError {
    /// Whether the error refuses the request itself (bad input, a state or
    /// quota that does not allow it) rather than reporting a failure.
    fn is_refusal(&self) -> bool {
        matches!(
            self,
            OrchError::NotFound { .. }
                | OrchError::InvalidField { .. }
                | OrchError::Conflict { .. }
                | OrchError::InvalidState { .. }
                | OrchError::TooLarge { .. }
                | OrchError::Insufficient { .. }
                | OrchError::QuotaExceeded(_)
        )
    }

    /// Whether the failure may have left host state to repair (as opposed
    /// to a refusal of the request itself).
    fn is_host_failure(&self) -> bool {
        matches!(self, OrchError::Internal(_) | OrchError::Exhausted { .. })
    }
}
