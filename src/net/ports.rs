//! SSH forward port allocation: the lowest port of the range that no VM
//! holds and no other program has bound.

use std::collections::HashSet;
use std::net::{Ipv4Addr, TcpListener};

/// Whether some program already listens on (or otherwise holds) TCP `port`
/// in the calling thread's network namespace. Binding 0.0.0.0 also fails
/// when only a specific address is bound, which is what we want: a forward
/// on that port would shadow the program.
pub fn bound_by_someone(port: u16) -> bool {
    TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).is_err()
}

/// The lowest port in `min..=max` that is not in `taken` and for which
/// `in_use` is false.
pub fn lowest_free(min: u16, max: u16, taken: &HashSet<u16>, in_use: impl Fn(u16) -> bool) -> Option<u16> {
    (min..=max).find(|port| !taken.contains(port) && !in_use(*port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skips_taken_and_busy_ports() {
        let taken: HashSet<u16> = [2200, 2201].into();
        assert_eq!(lowest_free(2200, 2299, &taken, |p| p == 2202), Some(2203));
        assert_eq!(lowest_free(2200, 2201, &taken, |_| false), None);
        assert_eq!(lowest_free(65535, 65535, &HashSet::new(), |_| false), Some(65535));
    }

    #[test]
    fn a_listening_socket_is_detected() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(bound_by_someone(port));
        drop(listener);
    }
}
