//! Hatch's proxy in front of a real HTTP server on loopback: routing by
//! Host, forwarding headers, keep-alive, and the error answers.

use crate::common;

use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::header::RETRY_AFTER;
use hyper::StatusCode;

use common::proxy::{request, start_proxy, Client, FakeResolver, FakeRoute, Upstream};

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

#[tokio::test]
async fn routes_by_host_with_forwarding_headers() {
    let (app, other) = (Upstream::start("app").await, Upstream::start("other").await);
    let resolver = FakeResolver::running("app", app.addr);
    resolver.add_running("other", other.addr);
    let proxy = start_proxy(resolver.clone()).await;
    let mut client = Client::connect(proxy.local_addr()).await;

    let (status, _, body) = client.get("app", "/hello").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "hello from app"));
    let (status, _, body) = client.get("OTHER", "/hello").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "hello from other"));

    let mut with_headers = request("GET", "app", "/headers?x=1", Empty::new().boxed());
    let headers = with_headers.headers_mut();
    headers.insert("x-forwarded-for", "203.0.113.9".parse().unwrap());
    headers.insert("x-forwarded-proto", "https".parse().unwrap());
    headers.insert("connection", "x-hop".parse().unwrap());
    headers.insert("x-hop", "must not reach the guest".parse().unwrap());
    let (status, _, body) = common::proxy::read_all(client.send(with_headers).await).await;
    assert_eq!(status, StatusCode::OK);
    let seen = json(&body);
    assert_eq!(seen["host"], "app.example.test:9090");
    assert_eq!(seen["path"], "/headers?x=1");
    assert_eq!(seen["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    // The client is not a trusted TLS terminator: its claim is replaced.
    assert_eq!(seen["x-forwarded-proto"], "http");
    assert_eq!(seen["x-forwarded-host"], "app.example.test:9090");
    assert!(seen["x-hop"].is_null(), "{seen}");
    assert!(
        seen["connection"].is_null() || seen["connection"] == "keep-alive",
        "{seen}"
    );

    let events = resolver.events_for("vm-app");
    assert!(
        events.contains(&hatch::proxy::ActivityEvent::RequestStarted),
        "{events:?}"
    );
    assert!(proxy.active_connections().last_activity("vm-app").is_some());
    proxy.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn keep_alive_connections_are_reused_on_both_sides() {
    let app = Upstream::start("app").await;
    let resolver = FakeResolver::running("app", app.addr);
    let proxy = start_proxy(resolver).await;
    let mut client = Client::connect(proxy.local_addr()).await;
    for _ in 0..20 {
        let (status, _, body) = client.get("app", "/hello").await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "hello from app"));
        // The pooled connection goes back once the response is read; wait
        // for that before the next request so the count below is exact.
        for _ in 0..1000 {
            if proxy.upstreams().idle_count() == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    assert_eq!(app.connections.load(std::sync::atomic::Ordering::SeqCst), 1);
    proxy.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_keep_alive_connection_follows_every_route_change_at_once() {
    let (first, second) = (Upstream::start("first").await, Upstream::start("second").await);
    let resolver = FakeResolver::running("app", first.addr);
    let proxy = start_proxy(resolver.clone()).await;
    let mut client = Client::connect(proxy.local_addr()).await;
    for _ in 0..3 {
        let (status, _, body) = client.get("app", "/hello").await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "hello from first"));
    }
    // Requests on the same connection go where the route goes now.
    resolver.add_running("app", second.addr);
    let (status, _, body) = client.get("app", "/hello").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "hello from second"));
    resolver.add(
        "app",
        FakeRoute::Unavailable {
            retry_after: None,
            message: "vm-app is stopped".into(),
        },
    );
    let (status, _, body) = client.get("app", "/hello").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    resolver.remove("app");
    let (status, _, _) = client.get("app", "/hello").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Another host on the same connection is resolved for itself.
    resolver.add_running("app", first.addr);
    resolver.add_running("other", second.addr);
    let (_, _, body) = client.get("app", "/hello").await;
    assert_eq!(body, "hello from first");
    let (_, _, body) = client.get("other", "/hello").await;
    assert_eq!(body, "hello from second");
    let (_, _, body) = client.get("app", "/hello").await;
    assert_eq!(body, "hello from first");
    proxy.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn unknown_hosts_get_404_json() {
    let resolver = FakeResolver::new(Duration::from_secs(10));
    let proxy = start_proxy(resolver).await;
    let mut client = Client::connect(proxy.local_addr()).await;
    for subdomain in ["nobody", "a.b"] {
        let (status, headers, body) = client.get(subdomain, "/").await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{subdomain}");
        assert_eq!(headers["content-type"], "application/json");
        assert!(json(&body)["error"].as_str().unwrap().contains("no route"), "{body}");
    }
    let wrong_domain = hyper::Request::builder()
        .uri("/")
        .header("host", "app.elsewhere.test")
        .body(Empty::new().boxed())
        .unwrap();
    let (status, _, _) = common::proxy::read_all(client.send(wrong_domain).await).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    proxy.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn unavailable_routes_get_503_with_retry_after() {
    let resolver = FakeResolver::new(Duration::from_secs(10));
    let message = "vm-x is stopped and its route does not auto-wake".to_string();
    resolver.add(
        "later",
        FakeRoute::Unavailable {
            retry_after: Some(Duration::from_secs(30)),
            message: message.clone(),
        },
    );
    resolver.add(
        "never",
        FakeRoute::Unavailable {
            retry_after: None,
            message: message.clone(),
        },
    );
    let proxy = start_proxy(resolver).await;
    let mut client = Client::connect(proxy.local_addr()).await;
    let (status, headers, body) = client.get("later", "/").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(headers[RETRY_AFTER], "30");
    assert_eq!(json(&body)["error"], message.as_str());
    let (status, headers, _) = client.get("never", "/").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(headers.get(RETRY_AFTER).is_none());
    proxy.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_running_vm_whose_port_refuses_gets_502() {
    // A bound socket that never listens: connections are refused.
    let closed = tokio::net::TcpSocket::new_v4().unwrap();
    closed.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let resolver = FakeResolver::running("down", closed.local_addr().unwrap());
    let proxy = start_proxy(resolver).await;
    let mut client = Client::connect(proxy.local_addr()).await;
    let (status, _, body) = client.get("down", "/").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(
        json(&body)["error"].as_str().unwrap().contains("did not answer"),
        "{body}"
    );
    assert!(!proxy.active_connections().is_active("vm-down"));
    proxy.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn connections_the_guest_closes_are_not_reused() {
    let app = Upstream::start("app").await;
    let resolver = FakeResolver::running("app", app.addr);
    let proxy = start_proxy(resolver).await;
    let mut client = Client::connect(proxy.local_addr()).await;
    for _ in 0..5 {
        let (status, headers, body) = client.get("app", "/close").await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "bye from app"));
        // The guest's `Connection: close` is about the proxy's connection,
        // not the client's.
        assert!(headers.get("connection").is_none_or(|v| v != "close"), "{headers:?}");
    }
    assert_eq!(app.connections.load(std::sync::atomic::Ordering::SeqCst), 5);
    proxy.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn absolute_form_targets_route_by_their_authority() {
    let app = Upstream::start("app").await;
    let resolver = FakeResolver::running("app", app.addr);
    let proxy = start_proxy(resolver).await;
    let mut client = Client::connect(proxy.local_addr()).await;
    let absolute = hyper::Request::builder()
        .uri("http://app.example.test/headers")
        .header("host", "ignored.example.test")
        .body(Empty::new().boxed())
        .unwrap();
    let (status, _, body) = common::proxy::read_all(client.send(absolute).await).await;
    assert_eq!(status, StatusCode::OK);
    let seen = json(&body);
    assert_eq!(seen["path"], "/headers", "the guest gets an origin-form target");
    assert_eq!(seen["host"], "app.example.test");
    proxy.shutdown(Duration::from_secs(5)).await;
}
