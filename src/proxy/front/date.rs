//! The `Date` of answers that carry none (RFC 9110 §6.6.1: a proxy
//! forwarding such an answer adds it), formatted once a second per thread.

use std::cell::RefCell;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// "Sun, 06 Nov 1994 08:49:37 GMT".len()
const LEN: usize = 29;

struct Cached {
    second: u64,
    text: [u8; LEN],
}

thread_local! {
    static CACHED: RefCell<Cached> = const { RefCell::new(Cached { second: 0, text: *b"Thu, 01 Jan 1970 00:00:00 GMT" }) };
}

/// Calls `with` with the current date as an HTTP-date.
pub(super) fn with_now<T>(with: impl FnOnce(&[u8]) -> T) -> T {
    let second = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    CACHED.with(|cached| {
        let mut cached = cached.borrow_mut();
        if cached.second != second {
            let text = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(second));
            if text.len() == LEN {
                cached.text.copy_from_slice(text.as_bytes());
                cached.second = second;
            }
        }
        with(&cached.text)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_date_is_an_http_date_of_now() {
        let text = with_now(|now| String::from_utf8(now.to_vec()).unwrap());
        let parsed = httpdate::parse_http_date(&text).unwrap();
        let off = SystemTime::now().duration_since(parsed).unwrap_or_default();
        assert!(off < Duration::from_secs(5), "{text}");
    }
}
