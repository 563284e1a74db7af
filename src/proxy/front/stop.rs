//! Waiting for the proxy to stop, cheap to poll over and over: the own
//! loop polls it while it waits for each request, and the cancellation
//! token's own wait takes a lock on every poll.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};

use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// Ready once `token` is cancelled, where whoever cancels it sets
/// `stopping` first ([`crate::proxy::ProxyHandle::shutdown`] does).
pub(super) struct StopWait<'a> {
    stopping: &'a AtomicBool,
    wait: Pin<Box<WaitForCancellationFutureOwned>>,
    /// The waker the token's wait holds; polled again by the same task,
    /// nothing needs to be registered again.
    registered: Option<Waker>,
}

impl<'a> StopWait<'a> {
    pub(super) fn new(stopping: &'a AtomicBool, token: &CancellationToken) -> Self {
        Self {
            stopping,
            wait: Box::pin(token.clone().cancelled_owned()),
            registered: None,
        }
    }
}

impl Future for StopWait<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if this.stopping.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        if this
            .registered
            .as_ref()
            .is_some_and(|waker| waker.will_wake(cx.waker()))
        {
            return Poll::Pending;
        }
        let polled = this.wait.as_mut().poll(cx);
        if polled.is_pending() {
            this.registered = Some(cx.waker().clone());
        }
        polled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_waiting_loop_wakes_when_the_proxy_stops() {
        let stopping = AtomicBool::new(false);
        let token = CancellationToken::new();
        let mut wait = StopWait::new(&stopping, &token);
        let polled = futures_util::poll!(&mut wait);
        assert!(polled.is_pending());
        assert!(futures_util::poll!(&mut wait).is_pending());
        stopping.store(true, Ordering::Release);
        token.cancel();
        tokio::time::timeout(std::time::Duration::from_secs(10), wait)
            .await
            .expect("woken");
    }
}
