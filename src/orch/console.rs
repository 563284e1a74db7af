//! Serial consoles: bounded on disk (a guest can print without end) and
//! read from the end, once or followed as they grow.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;

use crate::sys::console_log;

use super::{OrchError, Orchestrator};

/// How often running VMs' console logs are measured (a stat each).
const KEEPER_PERIOD: Duration = Duration::from_millis(250);
/// How often a followed console is read for new output.
const FOLLOW_PERIOD: Duration = Duration::from_millis(250);
/// At most this much is sent per read while following.
const FOLLOW_CHUNK: u64 = 1024 * 1024;

/// Bytes cut from the head of each VM's console log since the daemon
/// started. A follower counts in bytes ever printed (its file offset plus
/// what was cut before it), so a cut between two reads loses nothing it
/// could still read. Trimming and reading hold the lock, so neither sees
/// the file and the count disagree.
#[derive(Clone, Default)]
pub(super) struct Cuts(Arc<Mutex<HashMap<String, u64>>>);

impl Cuts {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Orchestrator {
    /// Keeps every live VM's console log at most `cap` bytes on disk,
    /// cutting it to the newest half when it grows past the cap.
    pub fn spawn_console_keeper(self: &Arc<Self>, cap: u64) -> tokio::task::JoinHandle<()> {
        let orch = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(KEEPER_PERIOD).await;
                let Some(orch) = orch.upgrade() else { return };
                let logs: Vec<_> = orch
                    .live_vm_ids()
                    .into_iter()
                    .map(|id| (orch.layout(&id).serial_log(), id))
                    .collect();
                let cuts = orch.console_cuts.clone();
                drop(orch);
                let trimmed = tokio::task::spawn_blocking(move || {
                    logs.into_iter()
                        .filter_map(|(path, id)| {
                            let mut cuts = cuts.lock();
                            match console_log::trim(&path, cap, cap / 2) {
                                Ok(0) => None,
                                Ok(cut) => {
                                    *cuts.entry(id.clone()).or_default() += cut;
                                    Some((id, Ok(cut)))
                                }
                                Err(error) => Some((id, Err(error))),
                            }
                        })
                        .collect::<Vec<_>>()
                })
                .await
                .unwrap_or_default();
                for (vm, result) in trimmed {
                    match result {
                        Ok(cut) => tracing::debug!(%vm, cut, "console log trimmed to its cap"),
                        Err(error) => tracing::warn!(%vm, %error, "trimming the console log failed"),
                    }
                }
            }
        })
    }

    /// The last `max_bytes` of the VM's serial console (reads only those).
    pub async fn logs(&self, id: &str, max_bytes: u64) -> Result<Bytes, OrchError> {
        self.get_vm(id).await?;
        let path = self.layout(id).serial_log();
        let tail = tokio::task::spawn_blocking(move || console_log::read_tail(&path, max_bytes))
            .await
            .map_err(|e| OrchError::Internal(format!("reading the console: {e}")))?
            .map_err(|e| OrchError::Internal(format!("reading the console: {e}")))?;
        Ok(Bytes::from(tail))
    }

    /// The last `max_bytes` of the console, then whatever the guest prints
    /// next, until the VM is deleted or the reader goes away.
    pub async fn follow_logs(
        self: &Arc<Self>,
        id: &str,
        max_bytes: u64,
    ) -> Result<impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static, OrchError> {
        self.get_vm(id).await?;
        let path = self.layout(id).serial_log();
        let cuts = self.console_cuts.clone();
        let (first, printed) = {
            let (path, cuts, id) = (path.clone(), cuts.clone(), id.to_string());
            tokio::task::spawn_blocking(move || -> std::io::Result<(Vec<u8>, u64)> {
                let cuts = cuts.lock();
                let tail = console_log::read_tail(&path, max_bytes)?;
                let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                Ok((tail, len + cuts.get(&id).copied().unwrap_or(0)))
            })
            .await
            .map_err(|e| OrchError::Internal(format!("reading the console: {e}")))?
            .map_err(|e| OrchError::Internal(format!("reading the console: {e}")))?
        };
        let follower = Follower {
            orch: Arc::downgrade(self),
            vm_id: id.to_string(),
            path,
            cuts,
            printed,
        };
        let state = (follower, Some(Bytes::from(first)));
        Ok(futures_util::stream::unfold(
            state,
            |(mut follower, first)| async move {
                if let Some(first) = first {
                    return Some((Ok(first), (follower, None)));
                }
                loop {
                    tokio::time::sleep(FOLLOW_PERIOD).await;
                    if !follower.vm_exists() {
                        return None;
                    }
                    match follower.read_next().await {
                        Ok(bytes) if bytes.is_empty() => continue,
                        Ok(bytes) => return Some((Ok(Bytes::from(bytes)), (follower, None))),
                        Err(error) => return Some((Err(error), (follower, None))),
                    }
                }
            },
        ))
    }

    /// VMs whose VMM process this daemon watches.
    fn live_vm_ids(&self) -> Vec<String> {
        self.handles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect()
    }
}

/// One reader following a console log.
struct Follower {
    orch: std::sync::Weak<Orchestrator>,
    vm_id: String,
    path: std::path::PathBuf,
    cuts: Cuts,
    /// Bytes of console output ever printed that this reader has seen.
    printed: u64,
}

impl Follower {
    /// From the in-memory view (a deletion leaves it before the deleting
    /// operation ends), so a poll every [`FOLLOW_PERIOD`] costs no SQLite read.
    fn vm_exists(&self) -> bool {
        self.orch
            .upgrade()
            .is_some_and(|orch| orch.view.vm(&self.vm_id).is_some())
    }

    /// What was printed since the last read (from the oldest byte still
    /// on disk, if some were cut before this reader got to them).
    async fn read_next(&mut self) -> std::io::Result<Vec<u8>> {
        let (path, cuts, id, printed) = (self.path.clone(), self.cuts.clone(), self.vm_id.clone(), self.printed);
        let (bytes, start) = tokio::task::spawn_blocking(move || -> std::io::Result<(Vec<u8>, u64)> {
            let cuts = cuts.lock();
            let cut = cuts.get(&id).copied().unwrap_or(0);
            let offset = printed.saturating_sub(cut);
            let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            if len <= offset {
                return Ok((Vec::new(), printed));
            }
            let bytes = console_log::read_from(&path, offset, FOLLOW_CHUNK)?;
            Ok((bytes, offset + cut))
        })
        .await
        .map_err(std::io::Error::other)??;
        self.printed = start + bytes.len() as u64;
        Ok(bytes)
    }
}
