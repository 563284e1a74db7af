//! A keep-alive connection through the daemon's proxy reuses what its last
//! request's route resolved to, and must still follow every change of the
//! route or its VM on its very next request: orchestration's in-memory view
//! tells the proxy when its answers change.
//!
//! The VM is written to the store directly as running, its address the
//! loopback one of a real HTTP server standing in for the guest's service
//! (a fake image cannot boot), then announced as orchestration announces its
//! own writes.

use crate::common;

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use hyper::StatusCode;
use serde_json::json;

use common::daemon::{record_states, sample_image, sample_vm, TestApi};
use common::proxy::{Client, Upstream, BASE_DOMAIN};
use hatch::model::VmState;
use hatch::orch::OrchRouteResolver;
use hatch::proxy::{spawn_proxy, ProxyConfig};

#[tokio::test(flavor = "multi_thread")]
async fn a_keep_alive_connection_follows_route_and_vm_changes_on_its_next_request() {
    let api = TestApi::start().await;
    let (first, second) = (Upstream::start("first").await, Upstream::start("second").await);
    let image = sample_image("base");
    api.store.insert_image(&image).unwrap();
    let mut vm = sample_vm(&image.id, 1);
    vm.network.as_mut().unwrap().guest_ip = Ipv4Addr::LOCALHOST;
    api.store.insert_vm(&vm, Some("created")).unwrap();
    api.written(&vm.id);
    let add_route = |port: u16| {
        let body = json!({ "subdomain": "app", "target_port": port, "auto_wake": false });
        let api = &api;
        let path = format!("/vms/{}/routes", vm.id);
        async move {
            let (status, route) = api.call("POST", &path, Some(body)).await;
            assert_eq!(status, 201, "{route}");
            route["id"].as_str().unwrap().to_string()
        }
    };
    let route_id = add_route(first.addr.port()).await;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let resolver = Arc::new(OrchRouteResolver::new(api.orch(), Duration::from_secs(10)));
    let proxy = spawn_proxy(listener, ProxyConfig::new(BASE_DOMAIN), resolver).unwrap();
    let mut client = Client::connect(proxy.local_addr()).await;
    for _ in 0..3 {
        let (status, _, body) = client.get("app", "/hello").await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "hello from first"));
    }

    // The route moves to another port.
    let (status, _) = api.call("DELETE", &format!("/routes/{route_id}"), None).await;
    assert_eq!(status, 204);
    let (status, _, body) = client.get("app", "/hello").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    add_route(second.addr.port()).await;
    let (status, _, body) = client.get("app", "/hello").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "hello from second"));

    // The VM stops: nothing more is forwarded to it.
    let mut stopped = vm.clone();
    record_states(
        &api.store,
        &mut stopped,
        &[(VmState::Stopped, Some("stopped by request"))],
    );
    api.written(&vm.id);
    let (status, _, body) = client.get("app", "/hello").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains("stopped"), "{body}");
    record_states(&api.store, &mut stopped, &[(VmState::Running, None)]);
    api.written(&vm.id);
    let (status, _, body) = client.get("app", "/hello").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "hello from second"));
    proxy.shutdown(Duration::from_secs(5)).await;
}
