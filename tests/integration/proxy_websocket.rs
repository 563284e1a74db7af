//! WebSockets through the proxy: the upgrade passes, messages echo both
//! ways, and an open socket keeps its VM active until it closes.

use crate::common;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use common::proxy::{start_proxy, FakeResolver, Upstream};
use hatch::proxy::ActivityEvent;

#[tokio::test]
async fn websocket_echo_through_the_proxy_keeps_the_vm_active() {
    let app = Upstream::start("app").await;
    let resolver = FakeResolver::running("ws", app.addr);
    let proxy = start_proxy(resolver.clone()).await;
    let active = proxy.active_connections();

    let stream = TcpStream::connect(proxy.local_addr()).await.unwrap();
    let (mut socket, response) = tokio_tungstenite::client_async("ws://ws.example.test:9090/ws", stream)
        .await
        .expect("WebSocket handshake through the proxy");
    assert_eq!(response.status(), 101);

    for text in ["hello", "second message", &"x".repeat(200_000)] {
        socket.send(Message::text(text)).await.unwrap();
        let echoed = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(echoed, Message::text(text));
    }
    socket.send(Message::binary(vec![0u8, 1, 2, 255])).await.unwrap();
    let echoed = socket.next().await.unwrap().unwrap();
    assert_eq!(echoed, Message::binary(vec![0u8, 1, 2, 255]));

    assert!(active.is_active("vm-ws"), "an open WebSocket counts as activity");
    assert_eq!(active.active_count("vm-ws"), 1);
    assert!(resolver.events_for("vm-ws").contains(&ActivityEvent::TunnelOpened));

    socket.close(None).await.unwrap();
    drop(socket);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while active.is_active("vm-ws") && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!active.is_active("vm-ws"), "closing the socket ends the activity");
    assert!(resolver.events_for("vm-ws").contains(&ActivityEvent::TunnelClosed));
    proxy.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn shutdown_closes_open_websockets_after_the_grace_period() {
    let app = Upstream::start("app").await;
    let resolver = FakeResolver::running("ws", app.addr);
    let proxy = start_proxy(resolver).await;
    let active = proxy.active_connections();
    let stream = TcpStream::connect(proxy.local_addr()).await.unwrap();
    let (mut socket, _) = tokio_tungstenite::client_async("ws://ws.example.test/ws", stream)
        .await
        .unwrap();
    socket.send(Message::text("ping")).await.unwrap();
    assert_eq!(socket.next().await.unwrap().unwrap(), Message::text("ping"));

    tokio::time::timeout(Duration::from_secs(10), proxy.shutdown(Duration::from_millis(100)))
        .await
        .expect("shutdown finishes after its grace period");
    assert!(!active.is_active("vm-ws"));
    // The client sees its connection end.
    let next = tokio::time::timeout(Duration::from_secs(10), socket.next())
        .await
        .expect("socket ends");
    assert!(!matches!(next, Some(Ok(Message::Text(_)))), "{next:?}");
}
