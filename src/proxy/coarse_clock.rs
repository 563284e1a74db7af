//! The kernel's coarse clocks, in milliseconds: what the proxy stamps and
//! ages things with several times per request. Their resolution (a few
//! milliseconds) is plenty for idle timeouts, and reading them skips the
//! precise clocks' counter read and conversion.

use std::time::{SystemTime, UNIX_EPOCH};

use nix::time::{clock_gettime, ClockId};

/// Milliseconds since the Unix epoch.
pub(crate) fn wall_ms() -> u64 {
    match clock_gettime(ClockId::CLOCK_REALTIME_COARSE) {
        Ok(now) => millis(now.tv_sec(), now.tv_nsec()),
        Err(_) => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| u64::try_from(since.as_millis()).unwrap_or(u64::MAX)),
    }
}

/// Milliseconds on a clock that never goes back (since boot); only
/// differences between two readings mean anything.
pub(crate) fn monotonic_ms() -> u64 {
    clock_gettime(ClockId::CLOCK_MONOTONIC_COARSE).map_or(0, |now| millis(now.tv_sec(), now.tv_nsec()))
}

fn millis(seconds: i64, nanos: i64) -> u64 {
    let seconds = u64::try_from(seconds).unwrap_or(0);
    let nanos = u64::try_from(nanos).unwrap_or(0);
    seconds.saturating_mul(1000).saturating_add(nanos / 1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coarse_wall_clock_agrees_with_the_precise_one() {
        let precise = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
        let coarse = wall_ms();
        // The coarse clock lags by at most a tick (a few milliseconds).
        assert!(coarse <= precise + 1 && precise - coarse < 100, "{coarse} vs {precise}");
    }

    #[test]
    fn monotonic_clock_moves_forward() {
        let before = monotonic_ms();
        std::thread::sleep(std::time::Duration::from_millis(30));
        let after = monotonic_ms();
        assert!(after >= before + 20, "{before} then {after}");
    }
}
