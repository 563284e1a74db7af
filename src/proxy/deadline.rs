//! A time limit put on one wait after another (each request head a client
//! sends, each answer a guest owes), kept with one timer: arming a timer
//! for every wait costs more than the proxy's own work on a request. The
//! timer is moved on only when it goes off before the current wait's limit.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

pub(crate) struct Deadline {
    timer: Pin<Box<Sleep>>,
}

impl Deadline {
    pub(crate) fn new(limit: Duration) -> Self {
        Self {
            timer: Box::pin(tokio::time::sleep(limit)),
        }
    }

    /// What `waiting` gives, or `None` when `limit` is up first.
    pub(crate) fn within<F: Future>(&mut self, limit: Duration, waiting: F) -> Within<'_, F> {
        Within {
            timer: self.timer.as_mut(),
            deadline: Instant::now() + limit,
            waiting,
        }
    }
}

pin_project_lite::pin_project! {
    /// A wait under a [`Deadline`]. A future of its own rather than a
    /// `select!`: it runs on every request, and the macro's machinery costs
    /// more than the two polls it makes.
    pub(crate) struct Within<'a, F> {
        timer: Pin<&'a mut Sleep>,
        deadline: Instant,
        #[pin]
        waiting: F,
    }
}

impl<F: Future> Future for Within<'_, F> {
    type Output = Option<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(done) = this.waiting.poll(cx) {
            return Poll::Ready(Some(done));
        }
        // Polled (and so told whom to wake) only when the wait goes on.
        while this.timer.as_mut().poll(cx).is_ready() {
            if Instant::now() >= *this.deadline {
                return Poll::Ready(None);
            }
            this.timer.as_mut().reset(*this.deadline);
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn each_wait_gets_its_whole_limit_from_when_it_starts() {
        let mut deadline = Deadline::new(Duration::from_secs(10));
        // Most of the timer's first period goes by before the next wait:
        // that wait still has its 10 s, not the 1 s the timer has left.
        tokio::time::sleep(Duration::from_secs(9)).await;
        let slow = tokio::time::sleep(Duration::from_secs(5));
        assert_eq!(deadline.within(Duration::from_secs(10), slow).await, Some(()));
        let too_slow = tokio::time::sleep(Duration::from_secs(11));
        let started = Instant::now();
        assert_eq!(deadline.within(Duration::from_secs(10), too_slow).await, None);
        assert_eq!(started.elapsed(), Duration::from_secs(10));
        // A timer that went off long ago does not cut the next wait short.
        tokio::time::sleep(Duration::from_secs(60)).await;
        let quick = tokio::time::sleep(Duration::from_secs(1));
        assert_eq!(deadline.within(Duration::from_secs(10), quick).await, Some(()));
    }
}
