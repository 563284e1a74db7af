//! Per-key token buckets for mutating requests (`HATCH_RATE_LIMIT`,
//! `HATCH_RATE_BURST`). A key starts with a full bucket of `burst`
//! tokens; each mutating request takes one; tokens come back at `rate`.
//! Reads (GET, HEAD) are never limited.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::RateLimit;

struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// The buckets of every key that made a mutating request.
pub struct RateLimiter {
    limit: Option<RateLimit>,
    buckets: Mutex<HashMap<String, Bucket>>,
}

/// Buckets full for this long are forgotten (they would be full anyway).
const FORGET_AFTER: Duration = Duration::from_secs(3600);

impl RateLimiter {
    /// `None`: no limit.
    pub fn new(limit: Option<RateLimit>) -> Self {
        RateLimiter {
            limit,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token for `key_id`, or says how long until one is free.
    pub fn take(&self, key_id: &str) -> Result<(), Duration> {
        self.take_at(key_id, Instant::now())
    }

    fn take_at(&self, key_id: &str, now: Instant) -> Result<(), Duration> {
        let Some(limit) = self.limit else {
            return Ok(());
        };
        let burst = f64::from(limit.burst);
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() > 10_000 {
            buckets.retain(|_, b| now.duration_since(b.updated) < FORGET_AFTER);
        }
        let bucket = buckets.entry(key_id.to_string()).or_insert(Bucket {
            tokens: burst,
            updated: now,
        });
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * limit.per_second).min(burst);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / limit.per_second))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate() {
        let limiter = RateLimiter::new(Some(RateLimit {
            per_second: 2.0,
            burst: 3,
        }));
        let start = Instant::now();
        for _ in 0..3 {
            assert!(limiter.take_at("k", start).is_ok());
        }
        let wait = limiter.take_at("k", start).unwrap_err();
        assert!(
            wait > Duration::from_millis(400) && wait <= Duration::from_millis(500),
            "{wait:?}"
        );
        assert!(limiter.take_at("other", start).is_ok(), "keys have their own buckets");
        assert!(limiter.take_at("k", start + Duration::from_millis(500)).is_ok());
        assert!(limiter.take_at("k", start + Duration::from_millis(500)).is_err());
    }

    #[test]
    fn no_limit() {
        let limiter = RateLimiter::new(None);
        for _ in 0..10_000 {
            assert!(limiter.take("k").is_ok());
        }
    }
}
