//! Wake-on-request: requests for a sleeping VM are held (not failed) while
//! exactly one wake runs, and forwarded only once the guest's port accepts;
//! past the wake timeout they get 503 with Retry-After, never 502.

use crate::common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use hyper::header::RETRY_AFTER;
use hyper::StatusCode;

use common::proxy::{start_proxy, Client, FakeResolver, FakeRoute, FakeSleepingVm};

async fn get_all(
    proxy_addr: std::net::SocketAddr,
    subdomain: &str,
    count: usize,
) -> Vec<(StatusCode, Option<String>, String)> {
    let requests = (0..count).map(|_| async move {
        let mut client = Client::connect(proxy_addr).await;
        let (status, headers, body) = client.get(subdomain, "/hello").await;
        let retry_after = headers.get(RETRY_AFTER).map(|v| v.to_str().unwrap().to_string());
        (status, retry_after, body)
    });
    futures_util::future::join_all(requests).await
}

#[tokio::test]
async fn twenty_concurrent_requests_share_one_wake_and_all_succeed() {
    // The restore finishes first; the service listens only later, so
    // forwarding right after the restore would fail.
    let vm = FakeSleepingVm::new(Duration::from_millis(300), Duration::from_millis(400));
    let resolver = FakeResolver::new(Duration::from_secs(30));
    resolver.add(
        "sleepy",
        FakeRoute::Asleep {
            vm_id: "vm-sleepy".into(),
            vm: Arc::clone(&vm),
        },
    );
    let proxy = start_proxy(resolver.clone()).await;

    let answers = get_all(proxy.local_addr(), "sleepy", 20).await;
    for (status, _, body) in &answers {
        assert_eq!((*status, body.as_str()), (StatusCode::OK, "hello from sleepy"));
    }
    assert_eq!(vm.wakes.load(Ordering::SeqCst), 1, "exactly one wake for 20 requests");
    proxy.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_wake_past_the_timeout_gets_503_with_retry_after_then_succeeds_later() {
    let vm = FakeSleepingVm::new(Duration::from_millis(800), Duration::ZERO);
    let resolver = FakeResolver::new(Duration::from_millis(200));
    resolver.add(
        "slow",
        FakeRoute::Asleep {
            vm_id: "vm-slow".into(),
            vm: Arc::clone(&vm),
        },
    );
    let proxy = start_proxy(resolver.clone()).await;

    let answers = get_all(proxy.local_addr(), "slow", 5).await;
    for (status, retry_after, body) in &answers {
        assert_eq!(*status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert_eq!(retry_after.as_deref(), Some("5"));
        assert!(body.contains("vm-slow"), "{body}");
    }
    // The wake was not abandoned with the requests: once it is done, the
    // next request is served, and no second wake was started.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let served = loop {
        let answer = get_all(proxy.local_addr(), "slow", 1).await.remove(0);
        assert_ne!(answer.0, StatusCode::BAD_GATEWAY, "a waking VM never yields 502");
        if answer.0 == StatusCode::OK || tokio::time::Instant::now() > deadline {
            break answer;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!((served.0, served.2.as_str()), (StatusCode::OK, "hello from slow"));
    assert_eq!(vm.wakes.load(Ordering::SeqCst), 1);
    proxy.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_woken_vm_whose_service_never_listens_gets_503_not_502() {
    let vm = FakeSleepingVm::new(Duration::ZERO, Duration::from_secs(3600));
    let resolver = FakeResolver::new(Duration::from_millis(300));
    resolver.add(
        "mute",
        FakeRoute::Asleep {
            vm_id: "vm-mute".into(),
            vm,
        },
    );
    let proxy = start_proxy(resolver).await;
    let answers = get_all(proxy.local_addr(), "mute", 3).await;
    for (status, retry_after, body) in &answers {
        assert_eq!(*status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert!(retry_after.is_some());
    }
    proxy.shutdown(Duration::from_secs(5)).await;
}
