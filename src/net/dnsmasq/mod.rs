//! The DHCP/DNS server for the bridge: one dnsmasq child, kept running by a
//! supervisor task owned by [`Dnsmasq`] (restarted with back-off if it
//! dies), restarted on demand when its configuration changes (dnsmasq
//! rereads hosts files on SIGHUP but never dnsmasq.conf itself, where the
//! reservations live).

pub mod conf;
mod process;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, Mutex};
use tokio::task::JoinHandle;

use super::NetError;
pub use conf::{Paths, Reservation};

enum Request {
    Restart(oneshot::Sender<Result<(), String>>),
    Stop(oneshot::Sender<()>),
}

struct Supervisor {
    requests: mpsc::Sender<Request>,
    task: JoinHandle<()>,
}

pub struct Dnsmasq {
    paths: Paths,
    supervisor: Mutex<Option<Supervisor>>,
    /// pid of the running child, 0 when none.
    pid: Arc<AtomicU32>,
    /// Times dnsmasq exited without being asked to, since last taken.
    exits: Arc<AtomicU32>,
}

impl Dnsmasq {
    pub fn new(paths: Paths) -> Self {
        Dnsmasq {
            paths,
            supervisor: Mutex::new(None),
            pid: Arc::new(AtomicU32::new(0)),
            exits: Arc::new(AtomicU32::new(0)),
        }
    }

    pub fn paths(&self) -> &Paths {
        &self.paths
    }

    /// The running dnsmasq's pid, if one runs.
    pub fn pid(&self) -> Option<u32> {
        Some(self.pid.load(Ordering::SeqCst)).filter(|pid| *pid != 0)
    }

    /// Whether a dnsmasq of ours is alive right now.
    pub fn is_running(&self) -> bool {
        self.pid().is_some_and(crate::sys::process::is_alive)
    }

    /// How often dnsmasq exited on its own (and so was restarted by the
    /// supervisor) since the last call.
    pub fn take_unexpected_exits(&self) -> u32 {
        self.exits.swap(0, Ordering::SeqCst)
    }

    /// Starts dnsmasq and its supervisor unless they already run. Returns
    /// once dnsmasq has read its configuration and bound its sockets.
    pub async fn ensure_running(&self) -> Result<(), NetError> {
        let mut supervisor = self.supervisor.lock().await;
        if supervisor.as_ref().is_some_and(|s| !s.task.is_finished()) {
            return Ok(());
        }
        process::stop_orphan(&self.paths).await;
        let child = process::start(&self.paths).await.map_err(NetError::Dhcp)?;
        // Published now, not when the supervisor task first runs.
        self.pid.store(child.id().unwrap_or(0), Ordering::SeqCst);
        let (requests, receiver) = mpsc::channel(8);
        let task = tokio::spawn(process::supervise(
            self.paths.clone(),
            child,
            receiver,
            self.pid.clone(),
            self.exits.clone(),
        ));
        *supervisor = Some(Supervisor { requests, task });
        Ok(())
    }

    /// Restarts dnsmasq so it reads a changed dnsmasq.conf; returns once the
    /// new one is serving.
    pub async fn restart(&self) -> Result<(), NetError> {
        let sent = {
            let supervisor = self.supervisor.lock().await;
            match supervisor.as_ref().filter(|s| !s.task.is_finished()) {
                Some(s) => {
                    let (reply, answer) = oneshot::channel();
                    s.requests.send(Request::Restart(reply)).await.ok().map(|_| answer)
                }
                None => None,
            }
        };
        match sent {
            Some(answer) => match answer.await {
                Ok(result) => result.map_err(NetError::Dhcp),
                Err(_) => Err(NetError::Dhcp("the dnsmasq supervisor stopped".into())),
            },
            None => self.ensure_running().await,
        }
    }

    /// Stops the supervisor and dnsmasq.
    pub async fn stop(&self) {
        let Some(supervisor) = self.supervisor.lock().await.take() else {
            return;
        };
        let (reply, done) = oneshot::channel();
        if supervisor.requests.send(Request::Stop(reply)).await.is_ok() {
            let _ = done.await;
        }
        let _ = supervisor.task.await;
    }
}
