//! The proxy terminating TLS with a wildcard certificate for its base
//! domain: requests, keep-alive and WebSockets reach a real upstream over
//! HTTPS, the guest learns the client spoke https, HSTS is sent only when
//! configured, and a client that speaks plain HTTP gets nothing.

use crate::common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Empty};
use hyper::header::STRICT_TRANSPORT_SECURITY;
use hyper::StatusCode;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;

use common::proxy::{read_all, request, FakeResolver, Upstream, BASE_DOMAIN};
use common::tls::TestPki;
use hatch::proxy::{spawn_proxy, ProxyConfig, ProxyHandle};

async fn start_tls_proxy(pki: &TestPki, resolver: Arc<FakeResolver>, hsts: Option<Duration>) -> ProxyHandle {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
    let mut config = ProxyConfig::new(BASE_DOMAIN);
    config.tls = Some(pki.server_config());
    config.hsts = hsts;
    spawn_proxy(listener, config, resolver).expect("start proxy")
}

/// A TLS connection to the proxy for `subdomain` (SNI and certificate name),
/// trusting the test CA.
async fn tls_connect(
    pki: &TestPki,
    proxy: &ProxyHandle,
    subdomain: &str,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let stream = TcpStream::connect(proxy.local_addr()).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from(format!("{subdomain}.{BASE_DOMAIN}")).unwrap();
    tokio_rustls::TlsConnector::from(pki.client_config())
        .connect(name, stream)
        .await
        .expect("TLS handshake with the proxy")
}

type Sender = hyper::client::conn::http1::SendRequest<
    http_body_util::combinators::BoxBody<bytes::Bytes, std::convert::Infallible>,
>;

async fn https_client(pki: &TestPki, proxy: &ProxyHandle, subdomain: &str) -> Sender {
    let stream = tls_connect(pki, proxy, subdomain).await;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("HTTP handshake");
    tokio::spawn(connection);
    sender
}

async fn get(sender: &mut Sender, subdomain: &str, path: &str) -> (StatusCode, hyper::HeaderMap, String) {
    sender.ready().await.expect("connection ready");
    let response = sender
        .send_request(request("GET", subdomain, path, Empty::new().boxed()))
        .await
        .expect("response");
    read_all(response).await
}

#[tokio::test]
async fn https_requests_reuse_one_connection_and_tell_the_guest_it_was_https() {
    let pki = TestPki::generate();
    let app = Upstream::start("app").await;
    let resolver = FakeResolver::running("app", app.addr);
    let proxy = start_tls_proxy(&pki, resolver, None).await;
    let mut client = https_client(&pki, &proxy, "app").await;

    for _ in 0..10 {
        let (status, headers, body) = get(&mut client, "app", "/hello").await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "hello from app"));
        assert!(
            headers.get(STRICT_TRANSPORT_SECURITY).is_none(),
            "HSTS only when configured: {headers:?}"
        );
        for _ in 0..1000 {
            if proxy.upstreams().idle_count() == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    // Keep-alive on both sides: one TLS connection in, one upstream connection out.
    assert_eq!(app.connections.load(Ordering::SeqCst), 1);

    let (status, _, body) = get(&mut client, "app", "/headers").await;
    assert_eq!(status, StatusCode::OK);
    let seen: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(seen["x-forwarded-proto"], "https", "{seen}");
    assert_eq!(seen["host"], "app.example.test:9090", "{seen}");

    // An unknown subdomain still gets the proxy's own answer over TLS.
    let (status, _, _) = get(&mut client, "nobody", "/").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    proxy.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn hsts_is_added_to_every_answer_when_configured() {
    let pki = TestPki::generate();
    let app = Upstream::start("app").await;
    let resolver = FakeResolver::running("app", app.addr);
    let proxy = start_tls_proxy(&pki, resolver, Some(Duration::from_secs(31_536_000))).await;
    let mut client = https_client(&pki, &proxy, "app").await;

    let (status, headers, _) = get(&mut client, "app", "/hello").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[STRICT_TRANSPORT_SECURITY], "max-age=31536000");
    let (status, headers, _) = get(&mut client, "nobody", "/").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        headers[STRICT_TRANSPORT_SECURITY], "max-age=31536000",
        "the proxy's own answers carry it too"
    );
    proxy.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn websockets_work_through_tls() {
    let pki = TestPki::generate();
    let app = Upstream::start("app").await;
    let resolver = FakeResolver::running("ws", app.addr);
    let proxy = start_tls_proxy(&pki, resolver, Some(Duration::from_secs(600))).await;
    let active = proxy.active_connections();

    let stream = tls_connect(&pki, &proxy, "ws").await;
    let (mut socket, response) = tokio_tungstenite::client_async("wss://ws.example.test:9090/ws", stream)
        .await
        .expect("WebSocket handshake through the TLS proxy");
    assert_eq!(response.status(), 101);
    for text in ["hello", &"y".repeat(100_000)] {
        socket.send(Message::text(text)).await.unwrap();
        let echoed = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("echo in time")
            .unwrap()
            .unwrap();
        assert_eq!(echoed, Message::text(text));
    }
    assert!(active.is_active("vm-ws"));
    socket.close(None).await.unwrap();
    drop(socket);
    proxy.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn plain_http_to_the_tls_proxy_gets_no_answer() {
    let pki = TestPki::generate();
    let app = Upstream::start("app").await;
    let resolver = FakeResolver::running("app", app.addr);
    let proxy = start_tls_proxy(&pki, resolver, None).await;

    let mut stream = TcpStream::connect(proxy.local_addr()).await.unwrap();
    stream
        .write_all(b"GET /hello HTTP/1.1\r\nHost: app.example.test\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("the proxy closes the connection");
    let text = String::from_utf8_lossy(&answer);
    assert!(!text.contains("hello from app"), "plain HTTP got through: {text}");
    assert!(!text.starts_with("HTTP/1.1 200"), "{text}");
    assert_eq!(app.connections.load(Ordering::SeqCst), 0);

    // A client that does not trust the CA fails the handshake.
    let stream = TcpStream::connect(proxy.local_addr()).await.unwrap();
    let untrusting = hatch::tls::client_config(Some(&pki.other_ca)).unwrap();
    let name = rustls::pki_types::ServerName::try_from(format!("app.{BASE_DOMAIN}")).unwrap();
    let error = tokio_rustls::TlsConnector::from(untrusting)
        .connect(name, stream)
        .await
        .expect_err("a client that does not trust the CA must fail");
    let explained = hatch::tls::explain_client_error("proxy", &error);
    assert!(explained.contains("does not trust"), "{explained}");
    proxy.shutdown(Duration::from_secs(5)).await;
}
