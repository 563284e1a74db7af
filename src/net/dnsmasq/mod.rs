//! The DHCP/DNS server for the bridge: one dnsmasq child, kept running by a
//! supervisor task owned by [`Dnsmasq`] (restarted with back-off if it
//! dies). Reservations change by SIGHUP: dnsmasq rereads its hosts files
//! (see [`conf`]) without dropping a query or a lease, so other guests keep
//! DHCP and DNS while VMs come and go; a deleted VM's lease is released
//! ([`release`]) so its address can go to the next VM at once. dnsmasq is
//! restarted only when dnsmasq.conf's settings change (it never rereads
//! that file) or a reload did not take.

pub mod conf;
mod process;
mod release;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, Mutex};
use tokio::task::JoinHandle;

use super::{NetConfig, NetError};
pub use conf::{Paths, Reservation};

enum Request {
    Restart(oneshot::Sender<Result<(), String>>),
    Reload(oneshot::Sender<Result<(), String>>),
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
        self.ask(Request::Restart).await
    }

    /// Makes dnsmasq reread its hosts files (SIGHUP; a restart if that does
    /// not take); returns once it serves what they say.
    pub async fn reload(&self) -> Result<(), NetError> {
        self.ask(Request::Reload).await
    }

    /// Releases the lease a removed reservation may still hold (dnsmasq
    /// keeps leases across a reload), so its address can go to a new VM.
    pub fn release(&self, cfg: &NetConfig, reservation: &Reservation) {
        if let Err(error) = release::send(cfg, reservation) {
            tracing::warn!(%error, ip = %reservation.ip(), "releasing a removed VM's DHCP lease failed");
        }
    }

    /// Sends a request to the supervisor and waits for its answer; with no
    /// supervisor, starts one (which serves everything on disk).
    async fn ask(&self, request: fn(oneshot::Sender<Result<(), String>>) -> Request) -> Result<(), NetError> {
        let sent = {
            let supervisor = self.supervisor.lock().await;
            match supervisor.as_ref().filter(|s| !s.task.is_finished()) {
                Some(s) => {
                    let (reply, answer) = oneshot::channel();
                    s.requests.send(request(reply)).await.ok().map(|_| answer)
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
        if let Some(supervisor) = self.supervisor.lock().await.take() {
            let (reply, done) = oneshot::channel();
            if supervisor.requests.send(Request::Stop(reply)).await.is_ok() {
                let _ = done.await;
            }
            let _ = supervisor.task.await;
        }
        // Written again, complete, by the next start.
        let _ = std::fs::remove_dir_all(&self.paths.reread);
    }
}

impl Drop for Dnsmasq {
    /// Dropped without [`stop`](Self::stop) (its runtime ended): dnsmasq
    /// dies with its supervisor (`kill_on_drop`), and its hosts files go
    /// too, as `stop` would have removed them.
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.paths.reread);
    }
}
