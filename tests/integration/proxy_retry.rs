//! A pooled keep-alive connection that dies as a request goes out: Hatch's
//! proxy sends a bodiless GET once more on a fresh connection (no 502),
//! and never resends a request with a body. Everything runs inside a
//! network namespace made for the test.

use crate::common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use common::netns::TestNetns;
use common::proxy::{read_all, request, start_proxy, until_pooled, Client, FakeResolver};
use hatch::proxy::ProxyHandle;

/// A real HTTP/1.1 server that keeps connections alive but answers only
/// the first request on each: the next one is read and the connection
/// closed unanswered, as a server does whose idle timeout fires just as a
/// request arrives. Answers say which connection served them.
struct ForgetfulUpstream {
    addr: SocketAddr,
    /// Requests it read, answered or not.
    requests: Arc<AtomicUsize>,
}

impl ForgetfulUpstream {
    async fn start() -> ForgetfulUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind upstream");
        let addr = listener.local_addr().expect("upstream address");
        let requests = Arc::new(AtomicUsize::new(0));
        let counter = requests.clone();
        tokio::spawn(async move {
            let mut accepted = 0usize;
            while let Ok((stream, _)) = listener.accept().await {
                accepted += 1;
                tokio::spawn(serve_once_then_drop(stream, accepted, counter.clone()));
            }
        });
        ForgetfulUpstream { addr, requests }
    }
}

async fn serve_once_then_drop(mut stream: TcpStream, connection: usize, requests: Arc<AtomicUsize>) {
    if read_request(&mut stream).await.is_none() {
        return;
    }
    requests.fetch_add(1, Ordering::SeqCst);
    let body = format!("connection {connection}");
    let answer = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: keep-alive\r\n\r\n{body}",
        body.len()
    );
    if stream.write_all(answer.as_bytes()).await.is_err() {
        return;
    }
    if read_request(&mut stream).await.is_some() {
        requests.fetch_add(1, Ordering::SeqCst);
    }
    // Dropped here: closed without an answer.
}

/// Reads one request (headers and a Content-Length body); `None` at EOF.
async fn read_request(stream: &mut TcpStream) -> Option<()> {
    let mut buffer = Vec::new();
    let mut byte = [0u8; 1];
    while !buffer.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await.ok()? == 0 {
            return None;
        }
        buffer.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buffer).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .and_then(|value| value.trim().parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await.ok()?;
    Some(())
}

async fn proxy_to(upstream: &ForgetfulUpstream) -> ProxyHandle {
    let resolver = FakeResolver::running("app", upstream.addr);
    start_proxy(resolver).await
}

#[test]
fn a_get_on_a_dead_pooled_connection_is_sent_again_on_a_fresh_one() {
    let ns = TestNetns::new();
    ns.block_on(|| async {
        let upstream = ForgetfulUpstream::start().await;
        let proxy = proxy_to(&upstream).await;
        let mut client = Client::connect(proxy.local_addr()).await;
        for expected in ["connection 1", "connection 2", "connection 3"] {
            let (status, _, body) = client.get("app", "/").await;
            assert_eq!((status, body.as_str()), (StatusCode::OK, expected));
            until_pooled(&proxy).await;
        }
        // Requests 2 and 3 each reached a connection that then closed.
        assert_eq!(upstream.requests.load(Ordering::SeqCst), 5);
        proxy.shutdown(Duration::from_secs(5)).await;
    });
}

#[test]
fn a_post_is_never_sent_twice() {
    let ns = TestNetns::new();
    ns.block_on(|| async {
        let upstream = ForgetfulUpstream::start().await;
        let proxy = proxy_to(&upstream).await;
        let mut client = Client::connect(proxy.local_addr()).await;
        let post = || {
            request(
                "POST",
                "app",
                "/orders",
                Full::new("one order".into()).map_err(|never| match never {}).boxed(),
            )
        };
        let (status, _, body) = read_all(client.send(post()).await).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "connection 1"));
        until_pooled(&proxy).await;
        let (status, _, body) = read_all(client.send(post()).await).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
        assert_eq!(
            upstream.requests.load(Ordering::SeqCst),
            2,
            "the POST reached the upstream twice"
        );
        proxy.shutdown(Duration::from_secs(5)).await;
    });
}
