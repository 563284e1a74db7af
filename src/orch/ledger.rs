//! Creation as a ledger: every resource a multi-step operation acquires is
//! recorded with the step that releases it, and on failure the steps run in
//! reverse order. Nothing a failed create touched stays behind.

use std::future::Future;
use std::pin::Pin;

type Undo = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

#[derive(Default)]
pub struct Ledger {
    entries: Vec<(String, Undo)>,
}

impl Ledger {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records how to release something just acquired.
    pub fn record<F>(&mut self, what: impl Into<String>, undo: F)
    where
        F: Future<Output = Result<(), String>> + Send + 'static,
    {
        self.entries.push((what.into(), Box::pin(undo)));
    }

    /// The operation succeeded: keep everything.
    pub fn commit(mut self) {
        self.entries.clear();
    }

    /// The operation failed: release everything, newest first. Errors while
    /// undoing are logged and do not stop the remaining steps.
    pub async fn rollback(mut self) {
        while let Some((what, undo)) = self.entries.pop() {
            if let Err(error) = undo.await {
                tracing::error!(%what, %error, "rollback step failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[tokio::test]
    async fn rollback_runs_newest_first_and_continues_past_failures() {
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut ledger = Ledger::new();
        for step in ["ip", "tap", "process"] {
            let order = order.clone();
            ledger.record(step, async move {
                order.lock().unwrap().push(step);
                if step == "tap" {
                    Err("tap busy".to_string())
                } else {
                    Ok(())
                }
            });
        }
        ledger.rollback().await;
        assert_eq!(*order.lock().unwrap(), vec!["process", "tap", "ip"]);
    }

    #[tokio::test]
    async fn commit_releases_nothing() {
        let released = Arc::new(Mutex::new(false));
        let mut ledger = Ledger::new();
        let flag = released.clone();
        ledger.record("ip", async move {
            *flag.lock().unwrap() = true;
            Ok(())
        });
        ledger.commit();
        assert!(!*released.lock().unwrap());
    }
}
