//! Upgraded connections (WebSocket and any other `Upgrade`): once both the
//! client and the guest have switched protocols, bytes are copied both ways
//! until either side closes, and the tunnel counts as active meanwhile.

use std::time::Duration;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::activity::ActivityGuard;

pub(crate) struct Tunnel {
    pub client: OnUpgrade,
    pub upstream: OnUpgrade,
    pub guard: ActivityGuard,
}

/// Runs the tunnel on `tracker` until a side closes or `hard_stop` fires,
/// reporting activity every `tick` while it stays open.
pub(crate) fn spawn(tunnel: Tunnel, tick: Duration, tracker: &TaskTracker, hard_stop: CancellationToken) {
    tracker.spawn(async move {
        let Tunnel {
            client,
            upstream,
            mut guard,
        } = tunnel;
        let (client, upstream) = match tokio::try_join!(client, upstream) {
            Ok(pair) => pair,
            Err(error) => {
                tracing::debug!(vm_id = guard.vm_id(), %error, "upgrade did not complete");
                return;
            }
        };
        let mut client = TokioIo::new(client);
        let mut upstream = TokioIo::new(upstream);
        let copy = tokio::io::copy_bidirectional(&mut client, &mut upstream);
        tokio::pin!(copy);
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + tick, tick);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                copied = &mut copy => {
                    match copied {
                        Ok((up, down)) => tracing::debug!(vm_id = guard.vm_id(), up, down, "tunnel closed"),
                        Err(error) => tracing::debug!(vm_id = guard.vm_id(), %error, "tunnel broke"),
                    }
                    break;
                }
                _ = ticker.tick() => guard.force_tick(),
                _ = hard_stop.cancelled() => break,
            }
        }
    });
}
