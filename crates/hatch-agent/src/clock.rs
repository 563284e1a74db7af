//! Setting the guest clock (after a restore the guest's clock is as old as
//! the snapshot). The clock is behind a trait so the request handling is
//! tested against a fake: a test must never set the real clock of the
//! machine it runs on.

use std::io;

use hatch_agent_proto::{ErrorCode, Reply};

use crate::channel::{error, io_error};

pub trait Clock {
    fn now_ns(&self) -> io::Result<i128>;
    fn set_ns(&self, unix_ns: i128) -> io::Result<()>;
}

/// CLOCK_REALTIME.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ns(&self) -> io::Result<i128> {
        realtime_ns()
    }

    fn set_ns(&self, unix_ns: i128) -> io::Result<()> {
        let time = libc::timespec {
            tv_sec: (unix_ns / 1_000_000_000) as libc::time_t,
            tv_nsec: (unix_ns % 1_000_000_000) as libc::c_long,
        };
        // SAFETY: a valid timespec.
        if unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &time) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

pub fn realtime_ns() -> io::Result<i128> {
    let mut time = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid out pointer.
    if unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut time) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(time.tv_sec as i128 * 1_000_000_000 + time.tv_nsec as i128)
}

/// The latest time accepted: year 2262, where i64 nanoseconds end.
const MAX_UNIX_NS: i128 = i64::MAX as i128;

pub fn set(clock: &dyn Clock, unix_ns: i128) -> Reply {
    if !(0..=MAX_UNIX_NS).contains(&unix_ns) {
        return error(ErrorCode::Invalid, format!("unix_ns {unix_ns} is outside 1970..2262"));
    }
    let previous = match clock.now_ns() {
        Ok(now) => now,
        Err(e) => return io_error("reading the clock", &e),
    };
    if let Err(e) = clock.set_ns(unix_ns) {
        return io_error("setting the clock", &e);
    }
    match clock.now_ns() {
        Ok(now) => Reply::ClockSet {
            previous_unix_ns: previous,
            now_unix_ns: now,
        },
        Err(e) => io_error("reading the clock", &e),
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    struct FakeClock {
        now: Cell<i128>,
        refuse: bool,
    }

    impl Clock for FakeClock {
        fn now_ns(&self) -> io::Result<i128> {
            Ok(self.now.get())
        }

        fn set_ns(&self, unix_ns: i128) -> io::Result<()> {
            if self.refuse {
                return Err(io::Error::from_raw_os_error(libc::EPERM));
            }
            self.now.set(unix_ns);
            Ok(())
        }
    }

    #[test]
    fn setting_the_clock_answers_the_previous_and_new_time() {
        let clock = FakeClock {
            now: Cell::new(1_000),
            refuse: false,
        };
        let reply = set(&clock, 1_700_000_000_000_000_000);
        assert_eq!(
            reply,
            Reply::ClockSet {
                previous_unix_ns: 1_000,
                now_unix_ns: 1_700_000_000_000_000_000
            }
        );
    }

    #[test]
    fn times_out_of_range_and_refusals_are_errors_and_leave_the_clock_alone() {
        let clock = FakeClock {
            now: Cell::new(5),
            refuse: false,
        };
        for bad in [-1, MAX_UNIX_NS + 1] {
            let Reply::Error(error) = set(&clock, bad) else {
                panic!("accepted {bad}")
            };
            assert_eq!(error.code, ErrorCode::Invalid);
        }
        assert_eq!(clock.now.get(), 5);
        let refusing = FakeClock {
            now: Cell::new(5),
            refuse: true,
        };
        let Reply::Error(error) = set(&refusing, 10) else {
            panic!("a refused set succeeded")
        };
        assert_eq!(error.code, ErrorCode::PermissionDenied);
    }
}
