//! Readiness of a guest service: its port accepts a TCP connection.
//!
//! A restored or booted VM answers on its port only once the guest
//! application listens again; forwarding earlier would give the client a 502.
//! So the proxy polls with short, growing pauses until the port accepts or a
//! deadline passes, never with a fixed sleep.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::{sleep_until, timeout_at, Instant};

const FIRST_PAUSE: Duration = Duration::from_millis(5);
const LONGEST_PAUSE: Duration = Duration::from_millis(100);
/// One connection attempt to a VM that silently drops packets must not use up
/// the whole deadline before a retry.
const ATTEMPT_LIMIT: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortWaitError {
    #[error("{addr} did not accept a connection in time (last attempt: {last_error})")]
    TimedOut { addr: SocketAddr, last_error: String },
}

/// Waits until `addr` accepts a TCP connection, or `deadline` passes.
pub async fn wait_port_open(addr: SocketAddr, deadline: Instant) -> Result<(), PortWaitError> {
    let mut pause = FIRST_PAUSE;
    let mut last_error;
    loop {
        let attempt_deadline = deadline.min(Instant::now() + ATTEMPT_LIMIT);
        match timeout_at(attempt_deadline, TcpStream::connect(addr)).await {
            Ok(Ok(_probe)) => return Ok(()),
            Ok(Err(error)) => last_error = error.to_string(),
            Err(_) => last_error = String::from("connect timed out"),
        }
        let next = Instant::now() + pause;
        if next >= deadline {
            return Err(PortWaitError::TimedOut { addr, last_error });
        }
        sleep_until(next).await;
        pause = (pause * 2).min(LONGEST_PAUSE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpSocket;

    #[tokio::test]
    async fn returns_once_a_late_listener_appears() {
        // A bound but not yet listening socket refuses connections on a
        // port nobody else can take.
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = socket.local_addr().unwrap();
        let listen_later = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(150)).await;
            socket.listen(16).unwrap()
        });
        wait_port_open(addr, Instant::now() + Duration::from_secs(10))
            .await
            .unwrap();
        let _listener = listen_later.await.unwrap();
    }

    #[tokio::test]
    async fn times_out_when_nothing_listens() {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = socket.local_addr().unwrap();
        let error = wait_port_open(addr, Instant::now() + Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(matches!(error, PortWaitError::TimedOut { addr: a, .. } if a == addr));
    }
}
