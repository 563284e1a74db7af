//! Bodies go through the proxy as streams: 64 MiB each way without the
//! process's memory growing by anything like that, and a response whose end
//! is held back reaches the client in part and keeps the VM active.
//! (Memory is measured as this process's peak, so this file holds no other
//! test that moves large bodies.)

use crate::common;

use std::time::Duration;

use hyper::StatusCode;

use common::proxy::{
    count_body, generated_body, peak_rss_bytes, read_all, request, start_proxy, Client, FakeResolver, Upstream,
};

const BIG: usize = 64 * 1024 * 1024;
/// Far below the 128 MiB that buffering either body would take.
const MEMORY_BUDGET: u64 = 40 * 1024 * 1024;

#[tokio::test]
async fn large_bodies_stream_both_ways_in_small_memory() {
    let app = Upstream::start("app").await;
    let resolver = FakeResolver::running("app", app.addr);
    let proxy = start_proxy(resolver).await;
    let mut client = Client::connect(proxy.local_addr()).await;
    let before = peak_rss_bytes();

    let upload = request("POST", "app", "/upload", generated_body(BIG));
    let (status, _, body) = read_all(client.send(upload).await).await;
    assert_eq!((status, body), (StatusCode::OK, BIG.to_string()));

    let download = client
        .send(request("GET", "app", &format!("/download/{BIG}"), generated_body(0)))
        .await;
    assert_eq!(download.status(), StatusCode::OK);
    assert_eq!(count_body(download.into_body()).await, BIG);

    let grown = peak_rss_bytes().saturating_sub(before);
    eprintln!(
        "peak memory grew by {} KiB while streaming 2 x {} MiB",
        grown / 1024,
        BIG >> 20
    );
    assert!(
        grown < MEMORY_BUDGET,
        "peak memory grew by {grown} bytes while streaming 2 x {BIG} bytes"
    );
    proxy.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_held_response_streams_its_first_part_and_keeps_the_vm_active() {
    let app = Upstream::start("app").await;
    let resolver = FakeResolver::running("app", app.addr);
    let proxy = start_proxy(resolver).await;
    let active = proxy.active_connections();
    let mut client = Client::connect(proxy.local_addr()).await;

    let response = client.send(request("GET", "app", "/hold", generated_body(0))).await;
    let mut body = response.into_body();
    let first = tokio::time::timeout(Duration::from_secs(10), http_body_util::BodyExt::frame(&mut body))
        .await
        .expect("the first part arrives before the upstream finishes")
        .expect("a frame")
        .expect("no error");
    assert_eq!(first.into_data().ok().as_deref(), Some(&b"first;"[..]));
    assert!(
        active.is_active("vm-app"),
        "an open streamed response counts as activity"
    );

    app.release.notify_one();
    let mut rest = Vec::new();
    while let Some(frame) = http_body_util::BodyExt::frame(&mut body).await {
        rest.extend_from_slice(&frame.expect("frame").into_data().unwrap_or_default());
    }
    assert_eq!(rest, b"last");
    assert!(!active.is_active("vm-app"), "the exchange ends with its body");
    proxy.shutdown(Duration::from_secs(5)).await;
}
