//! The proxy's two stops (stop accepting and let requests finish; then,
//! after the grace period, close everything), as signals that are cheap to
//! look at and to wait on over and over: a cancellation token takes a lock
//! both when asked whether it fired and on every poll of a wait, and the
//! own loop does both for every request.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};

use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// A stop that fires once: a flag for looking, a token for waiting.
#[derive(Default)]
pub(crate) struct StopSignal {
    fired: AtomicBool,
    token: CancellationToken,
}

impl StopSignal {
    pub(crate) fn fire(&self) {
        // The flag first: a wait woken by the token must find it set.
        self.fired.store(true, Ordering::Release);
        self.token.cancel();
    }

    pub(crate) fn fired(&self) -> bool {
        self.fired.load(Ordering::Acquire)
    }

    /// For waits that run in tasks of their own (tunnels) or inside
    /// hyper's connection, polled a few times per connection at most.
    pub(crate) fn token(&self) -> &CancellationToken {
        &self.token
    }

    /// A wait to poll again and again from one task.
    pub(crate) fn wait(&self) -> StopWait<'_> {
        StopWait {
            signal: self,
            wait: Box::pin(self.token.clone().cancelled_owned()),
            registered: None,
        }
    }
}

/// Ready once its signal fires.
pub(crate) struct StopWait<'a> {
    signal: &'a StopSignal,
    wait: Pin<Box<WaitForCancellationFutureOwned>>,
    /// The waker the token's wait holds; polled again by the same task,
    /// nothing needs to be registered again.
    registered: Option<Waker>,
}

impl Future for StopWait<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if this.signal.fired() {
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
    async fn a_waiting_loop_wakes_when_the_signal_fires() {
        let signal = StopSignal::default();
        let mut wait = signal.wait();
        assert!(futures_util::poll!(&mut wait).is_pending());
        assert!(futures_util::poll!(&mut wait).is_pending());
        assert!(!signal.fired());
        let waiting = tokio::spawn({
            let token = signal.token().clone();
            async move { token.cancelled().await }
        });
        signal.fire();
        assert!(signal.fired());
        tokio::time::timeout(std::time::Duration::from_secs(10), wait)
            .await
            .expect("woken");
        waiting.await.expect("the token fired too");
    }
}
