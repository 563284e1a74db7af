//! The proxy as raw HTTP/1.1 clients see it: pipelined requests, a
//! connection that moves on to hyper's server mid-way (a request with a
//! body), heads that are malformed, ambiguous, oversized or never
//! finished, and connections closed after their last answer.

use crate::common;

use std::time::Duration;

use hatch::proxy::{spawn_proxy, ProxyConfig, ProxyHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use common::proxy::{raw_exchange as exchange, start_proxy, FakeResolver, Upstream, BASE_DOMAIN};

/// The answers in `text`, each as (status line, head, body), all with a
/// body of their Content-Length.
fn answers(text: &str) -> Vec<(String, String, String)> {
    answers_to(text, &[])
}

/// The same, where the answers at `to_head` (answers to HEAD) have no body.
fn answers_to(text: &str, to_head: &[usize]) -> Vec<(String, String, String)> {
    let mut found = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (head, after) = rest
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("no whole head in {rest:?}"));
        let head = head.to_ascii_lowercase();
        let length = head
            .lines()
            .find_map(|line| line.strip_prefix("content-length: "))
            .map_or(0, |length| length.trim().parse::<usize>().unwrap());
        let length = if to_head.contains(&found.len()) { 0 } else { length };
        let (body, after) = after.split_at(length);
        let status = head.lines().next().unwrap_or_default().to_string();
        found.push((status, head, body.to_string()));
        rest = after;
    }
    found
}

fn get(path: &str, extra: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: app.{BASE_DOMAIN}\r\n{extra}\r\n")
}

async fn app_proxy() -> (Upstream, ProxyHandle) {
    let app = Upstream::start("app").await;
    let proxy = start_proxy(FakeResolver::running("app", app.addr)).await;
    (app, proxy)
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_and_close_is_honoured() {
    let (_app, proxy) = app_proxy().await;
    let pipelined = [
        get("/hello", ""),
        get("/headers?n=2", ""),
        format!("HEAD /hello HTTP/1.1\r\nHost: app.{BASE_DOMAIN}\r\n\r\n"),
        get("/hello", "Connection: close\r\n"),
    ]
    .concat();
    let text = exchange(proxy.local_addr(), pipelined.as_bytes()).await;
    let found = answers_to(&text, &[2]);
    assert_eq!(found.len(), 4, "{text}");
    assert!(found.iter().all(|(status, _, _)| status == "http/1.1 200 ok"), "{text}");
    assert_eq!(found[0].2, "hello from app");
    assert!(found[1].2.contains(r#""path":"/headers?n=2""#), "{text}");
    // The HEAD answer keeps the length of the GET's body, and has none.
    assert!(found[2].1.contains("content-length: 14"), "{text}");
    assert_eq!(found[3].2, "hello from app");
    assert!(
        found[3].1.contains("connection: close") && found[3].1.contains("date: "),
        "{text}"
    );
    proxy.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_request_with_a_body_moves_the_connection_to_hyper_and_it_carries_on() {
    let (app, proxy) = app_proxy().await;
    let requests = [
        get("/hello", ""),
        format!("POST /upload HTTP/1.1\r\nHost: app.{BASE_DOMAIN}\r\nContent-Length: 5\r\n\r\nabcde"),
        format!("POST /upload HTTP/1.1\r\nHost: app.{BASE_DOMAIN}\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"),
        get("/hello", "Connection: close\r\n"),
    ]
    .concat();
    let found = answers(&exchange(proxy.local_addr(), requests.as_bytes()).await);
    let bodies: Vec<_> = found
        .iter()
        .map(|(status, _, body)| (status.as_str(), body.as_str()))
        .collect();
    assert_eq!(
        bodies,
        [
            ("http/1.1 200 ok", "hello from app"),
            ("http/1.1 200 ok", "5"),
            ("http/1.1 200 ok", "3"),
            ("http/1.1 200 ok", "hello from app"),
        ]
    );
    // One upstream connection, kept alive across both sides of the proxy.
    assert_eq!(app.connections.load(std::sync::atomic::Ordering::SeqCst), 1);
    proxy.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn malformed_ambiguous_and_oversized_heads_get_a_4xx_and_never_reach_the_guest() {
    let (app, proxy) = app_proxy().await;
    let host = format!("Host: app.{BASE_DOMAIN}\r\n");
    let cases = [
        ("garbage", "HELLO\r\n\r\n".to_string(), "400"),
        // Answered by the proxy itself, which keeps the connection unless told.
        (
            "no host",
            "GET /hello HTTP/1.1\r\nConnection: close\r\n\r\n".to_string(),
            "400",
        ),
        (
            "two hosts",
            format!("GET /hello HTTP/1.1\r\n{host}Host: other.{BASE_DOMAIN}\r\nConnection: close\r\n\r\n"),
            "400",
        ),
        // The same with a body: hyper's server reads it, the same rule holds.
        (
            "two hosts and a body",
            format!(
                "POST /hello HTTP/1.1\r\nHost: other.{BASE_DOMAIN}\r\n{host}Content-Length: 2\r\n\
                 Connection: close\r\n\r\nhi"
            ),
            "400",
        ),
        (
            "header without colon",
            format!("GET /hello HTTP/1.1\r\n{host}X-Broken\r\n\r\n"),
            "400",
        ),
        (
            "control byte",
            format!("GET /hello HTTP/1.1\r\n{host}X-Bad: a\u{1}b\r\n\r\n"),
            "400",
        ),
        (
            "a megabyte of header",
            format!("GET /hello HTTP/1.1\r\n{host}X-Big: {}\r\n\r\n", "a".repeat(1 << 20)),
            "431",
        ),
    ];
    for (what, text, status) in cases {
        let answer = exchange(proxy.local_addr(), text.as_bytes()).await;
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status} ")),
            "{what}: {}",
            &answer[..answer.len().min(300)]
        );
    }
    assert_eq!(app.connections.load(std::sync::atomic::Ordering::SeqCst), 0);

    // A large head that is still within hyper's limits is served whole.
    let large = get(
        "/headers",
        &format!("X-Large: {}\r\nConnection: close\r\n", "b".repeat(20 * 1024)),
    );
    let found = answers(&exchange(proxy.local_addr(), large.as_bytes()).await);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].0, "http/1.1 200 ok");
    proxy.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_head_never_finished_or_never_begun_is_closed_after_the_header_timeout() {
    let app = Upstream::start("app").await;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
    let mut config = ProxyConfig::new(BASE_DOMAIN);
    config.header_read_timeout = Duration::from_millis(300);
    let proxy = spawn_proxy(listener, config, FakeResolver::running("app", app.addr)).expect("start proxy");

    let unfinished = format!("GET /hello HTTP/1.1\r\nHost: app.{BASE_DOMAIN}\r\n");
    assert_eq!(exchange(proxy.local_addr(), unfinished.as_bytes()).await, "");
    // Idle after an answer: the next head has the same time to come.
    let found = answers(&exchange(proxy.local_addr(), get("/hello", "").as_bytes()).await);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].2, "hello from app");
    proxy.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn shutdown_closes_idle_keep_alive_connections_without_waiting_for_the_grace_period() {
    let (_app, proxy) = app_proxy().await;
    let mut stream = TcpStream::connect(proxy.local_addr()).await.expect("connect");
    stream.write_all(get("/hello", "").as_bytes()).await.expect("send");
    let mut answer = vec![0u8; 4096];
    let read = stream.read(&mut answer).await.expect("answer");
    assert!(String::from_utf8_lossy(&answer[..read]).ends_with("hello from app"));

    let shutdown = tokio::spawn(proxy.shutdown(Duration::from_secs(600)));
    tokio::time::timeout(Duration::from_secs(60), shutdown)
        .await
        .expect("shutdown waited for an idle connection")
        .expect("shutdown");
    assert_eq!(stream.read(&mut answer).await.expect("closed"), 0);
}
