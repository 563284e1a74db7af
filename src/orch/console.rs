//! Serial consoles: bounded on disk (a guest can print without end) and
//! read from the end, once or followed as they grow.

use std::sync::Arc;
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
                drop(orch);
                let trimmed = tokio::task::spawn_blocking(move || {
                    logs.into_iter()
                        .filter_map(|(path, id)| match console_log::trim(&path, cap, cap / 2) {
                            Ok(0) => None,
                            Ok(cut) => Some((id, Ok(cut))),
                            Err(error) => Some((id, Err(error))),
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
        let first = self.logs(id, max_bytes).await?;
        let path = self.layout(id).serial_log();
        let offset = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let state = (Arc::downgrade(self), id.to_string(), path, offset, Some(first));
        Ok(futures_util::stream::unfold(
            state,
            |(orch, id, path, mut offset, first)| async move {
                if let Some(first) = first {
                    return Some((Ok(first), (orch, id, path, offset, None)));
                }
                loop {
                    tokio::time::sleep(FOLLOW_PERIOD).await;
                    let alive = match orch.upgrade() {
                        Some(orch) => orch.store.get_vm(&id).ok().flatten().is_some(),
                        None => false,
                    };
                    if !alive {
                        return None;
                    }
                    let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                    if len < offset {
                        // Trimmed to its cap meanwhile: go on from its new end.
                        offset = len;
                        continue;
                    }
                    if len == offset {
                        continue;
                    }
                    let read_path = path.clone();
                    let chunk =
                        tokio::task::spawn_blocking(move || console_log::read_from(&read_path, offset, FOLLOW_CHUNK))
                            .await
                            .map_err(std::io::Error::other)
                            .and_then(|r| r);
                    match chunk {
                        Ok(bytes) => {
                            offset += bytes.len() as u64;
                            return Some((Ok(Bytes::from(bytes)), (orch, id, path, offset, None)));
                        }
                        Err(error) => return Some((Err(error), (orch, id, path, offset, None))),
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
