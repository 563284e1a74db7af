//! Helpers for the proxy tests: a real upstream HTTP/WebSocket server on
//! loopback, a resolver whose VMs can be asleep (`FakeResolver`), and a
//! keep-alive HTTP client. Everything listens on 127.0.0.1 only.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderValue, CONNECTION, HOST, UPGRADE};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;

use hatch::proxy::{spawn_proxy, ActivityEvent, ProxyConfig, ProxyHandle, Resolution, RouteResolver, WakeCoordinator};

pub const BASE_DOMAIN: &str = "example.test";
pub const CHUNK: usize = 64 * 1024;

type TestBody = BoxBody<Bytes, Infallible>;

/// A real HTTP server standing in for a guest service.
pub struct Upstream {
    pub addr: SocketAddr,
    /// TCP connections it accepted (to observe keep-alive reuse).
    pub connections: Arc<AtomicUsize>,
    /// Lets `/hold` responses finish.
    pub release: Arc<Notify>,
}

impl Upstream {
    pub async fn start(name: &str) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind upstream");
        Self::serve(listener, name)
    }

    /// Serves on an already listening socket (used when a fake VM wakes).
    pub fn serve(listener: TcpListener, name: &str) -> Upstream {
        let upstream = Upstream {
            addr: listener.local_addr().expect("upstream address"),
            connections: Arc::new(AtomicUsize::new(0)),
            release: Arc::new(Notify::new()),
        };
        let (connections, release, name) = (upstream.connections.clone(), upstream.release.clone(), name.to_string());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                connections.fetch_add(1, Ordering::SeqCst);
                let (release, name) = (release.clone(), name.clone());
                let service = hyper::service::service_fn(move |request| {
                    let (release, name) = (release.clone(), name.clone());
                    async move { Ok::<_, Infallible>(upstream_route(request, &name, release).await) }
                });
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades()
                        .await;
                });
            }
        });
        upstream
    }
}

fn text(status: StatusCode, body: String) -> Response<TestBody> {
    let mut response = Response::new(Full::new(Bytes::from(body)).boxed());
    *response.status_mut() = status;
    response
}

/// Routes of the test upstream:
/// `/hello` → "hello from NAME"; `/close` → the same, then closes the
/// connection; `/headers` → the request's host, path and
/// forwarding headers as JSON; `/upload` → number of body bytes received,
/// read chunk by chunk; `/download/N` → N bytes made on the fly;
/// `/hold` → one chunk, the rest after `release`; `/ws` → WebSocket echo.
async fn upstream_route(mut request: Request<Incoming>, name: &str, release: Arc<Notify>) -> Response<TestBody> {
    let path = request.uri().path().to_string();
    match path.as_str() {
        "/hello" => text(StatusCode::OK, format!("hello from {name}")),
        "/close" => {
            let mut response = text(StatusCode::OK, format!("bye from {name}"));
            response
                .headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("close"));
            response
        }
        "/headers" => {
            let header = |key: &str| {
                request
                    .headers()
                    .get(key)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            };
            let seen = serde_json::json!({
                "host": header("host"),
                "path": request.uri().to_string(),
                "x-forwarded-for": header("x-forwarded-for"),
                "x-forwarded-proto": header("x-forwarded-proto"),
                "x-forwarded-host": header("x-forwarded-host"),
                "connection": header("connection"),
                "x-hop": header("x-hop"),
            });
            text(StatusCode::OK, seen.to_string())
        }
        "/upload" => {
            let mut received = 0usize;
            let body = request.body_mut();
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(frame) => received += frame.data_ref().map_or(0, Bytes::len),
                    Err(error) => return text(StatusCode::BAD_REQUEST, error.to_string()),
                }
            }
            text(StatusCode::OK, received.to_string())
        }
        "/hold" => {
            let chunks = futures_util::stream::unfold(0u8, move |step| {
                let release = release.clone();
                async move {
                    match step {
                        0 => Some((Ok(Frame::data(Bytes::from_static(b"first;"))), 1)),
                        1 => {
                            release.notified().await;
                            Some((Ok(Frame::data(Bytes::from_static(b"last"))), 2))
                        }
                        _ => None,
                    }
                }
            });
            Response::new(BodyExt::boxed(StreamBody::new(chunks)))
        }
        "/ws" => websocket_echo(request),
        _ => match path.strip_prefix("/download/").and_then(|n| n.parse::<usize>().ok()) {
            Some(total) => Response::new(generated_body(total)),
            None => text(StatusCode::NOT_FOUND, format!("no {path}")),
        },
    }
}

/// `total` bytes of a repeating pattern, made one chunk at a time.
pub fn generated_body(total: usize) -> TestBody {
    let chunks = futures_util::stream::unfold(0usize, move |sent| async move {
        if sent >= total {
            return None;
        }
        let size = CHUNK.min(total - sent);
        let chunk = Bytes::from(vec![b'x'; size]);
        Some((Ok::<_, Infallible>(Frame::data(chunk)), sent + size))
    });
    BodyExt::boxed(StreamBody::new(chunks))
}

fn websocket_echo(mut request: Request<Incoming>) -> Response<TestBody> {
    let Some(key) = request.headers().get("sec-websocket-key").cloned() else {
        return text(StatusCode::BAD_REQUEST, "not a WebSocket request".into());
    };
    let on_upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else { return };
        let mut socket = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        while let Some(Ok(message)) = socket.next().await {
            if message.is_close() || socket.send(message).await.is_err() {
                break;
            }
        }
    });
    let mut response = Response::new(Empty::new().boxed());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    let accept = derive_accept_key(key.as_bytes());
    headers.insert(
        "sec-websocket-accept",
        HeaderValue::from_str(&accept).expect("accept key"),
    );
    response
}

enum FakeVmState {
    /// Port bound but not listening: connections are refused.
    Asleep(TcpSocket),
    Restoring,
    Awake,
}

/// A VM that is asleep until a wake "restores" it; some time after the
/// restore its service starts listening on the reserved port.
pub struct FakeSleepingVm {
    state: Mutex<FakeVmState>,
    pub addr: SocketAddr,
    pub restore_takes: Duration,
    pub service_starts_after: Duration,
    /// Restores asked for while asleep or restoring (a second one while
    /// restoring is the double wake the coordinator must prevent).
    pub wakes: AtomicUsize,
}

impl FakeSleepingVm {
    pub fn new(restore_takes: Duration, service_starts_after: Duration) -> Arc<Self> {
        let socket = TcpSocket::new_v4().expect("socket");
        socket.bind("127.0.0.1:0".parse().expect("loopback")).expect("bind");
        Arc::new(Self {
            addr: socket.local_addr().expect("address"),
            state: Mutex::new(FakeVmState::Asleep(socket)),
            restore_takes,
            service_starts_after,
            wakes: AtomicUsize::new(0),
        })
    }

    async fn wake(self: Arc<Self>, name: String) -> Result<(), String> {
        let socket = {
            let mut state = self.state.lock().expect("lock");
            match std::mem::replace(&mut *state, FakeVmState::Restoring) {
                FakeVmState::Asleep(socket) => socket,
                FakeVmState::Restoring => {
                    self.wakes.fetch_add(1, Ordering::SeqCst);
                    return Err("a restore is already running".into());
                }
                // Like orchestration, waking an awake VM is a no-op.
                FakeVmState::Awake => {
                    *state = FakeVmState::Awake;
                    return Ok(());
                }
            }
        };
        self.wakes.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(self.restore_takes).await;
        *self.state.lock().expect("lock") = FakeVmState::Awake;
        let starts_after = self.service_starts_after;
        tokio::spawn(async move {
            tokio::time::sleep(starts_after).await;
            let listener = socket.listen(1024).expect("listen");
            Upstream::serve(listener, &name);
        });
        Ok(())
    }
}

#[derive(Clone)]
pub enum FakeRoute {
    Running {
        vm_id: String,
        addr: SocketAddr,
    },
    Asleep {
        vm_id: String,
        vm: Arc<FakeSleepingVm>,
    },
    Unavailable {
        retry_after: Option<Duration>,
        message: String,
    },
}

/// Resolves subdomains from a table; wakes sleeping VMs through a real
/// [`WakeCoordinator`], as orchestration's resolver does, and versions its
/// answers as orchestration's does (every change of the table moves the
/// version), so connections reuse routes as they do in the daemon.
pub struct FakeResolver {
    routes: Mutex<HashMap<String, FakeRoute>>,
    version: AtomicU64,
    pub coordinator: WakeCoordinator,
    pub retry_after: Duration,
    pub events: Mutex<Vec<(String, ActivityEvent)>>,
}

impl FakeResolver {
    pub fn new(wake_timeout: Duration) -> Arc<Self> {
        Arc::new(Self {
            routes: Mutex::default(),
            version: AtomicU64::new(0),
            coordinator: WakeCoordinator::new(wake_timeout),
            retry_after: Duration::from_secs(5),
            events: Mutex::default(),
        })
    }

    pub fn add(&self, subdomain: &str, route: FakeRoute) {
        self.routes.lock().expect("lock").insert(subdomain.to_string(), route);
        self.version.fetch_add(1, Ordering::SeqCst);
    }

    pub fn remove(&self, subdomain: &str) {
        self.routes.lock().expect("lock").remove(subdomain);
        self.version.fetch_add(1, Ordering::SeqCst);
    }

    /// A resolver (10 s wake timeout) with one route: `subdomain` to a
    /// running VM `vm-<subdomain>` listening on `addr`.
    pub fn running(subdomain: &str, addr: SocketAddr) -> Arc<Self> {
        let resolver = Self::new(Duration::from_secs(10));
        resolver.add_running(subdomain, addr);
        resolver
    }

    /// Adds `subdomain` to a running VM `vm-<subdomain>` on `addr`.
    pub fn add_running(&self, subdomain: &str, addr: SocketAddr) {
        let vm_id = format!("vm-{subdomain}");
        self.add(subdomain, FakeRoute::Running { vm_id, addr });
    }

    pub fn events_for(&self, vm_id: &str) -> Vec<ActivityEvent> {
        let events = self.events.lock().expect("lock");
        events
            .iter()
            .filter(|(vm, _)| vm == vm_id)
            .map(|(_, event)| *event)
            .collect()
    }
}

#[async_trait]
impl RouteResolver for FakeResolver {
    async fn resolve(&self, subdomain: &str) -> Resolution {
        let route = self.routes.lock().expect("lock").get(subdomain).cloned();
        match route {
            None => Resolution::NotFound,
            Some(FakeRoute::Running { vm_id, addr }) => Resolution::Target { vm_id, addr },
            Some(FakeRoute::Unavailable { retry_after, message }) => Resolution::Unavailable { retry_after, message },
            Some(FakeRoute::Asleep { vm_id, vm }) => {
                let (addr, name) = (vm.addr, subdomain.to_string());
                let woken = self.coordinator.wake_until_ready(&vm_id, addr, || vm.wake(name)).await;
                match woken {
                    Ok(()) => Resolution::Target { vm_id, addr },
                    Err(error) => Resolution::from_wake_error(&error, self.retry_after),
                }
            }
        }
    }

    fn resolve_now(&self, subdomain: &str) -> Option<Resolution> {
        match self.routes.lock().expect("lock").get(subdomain).cloned() {
            None => Some(Resolution::NotFound),
            Some(FakeRoute::Running { vm_id, addr }) => Some(Resolution::Target { vm_id, addr }),
            Some(FakeRoute::Unavailable { retry_after, message }) => {
                Some(Resolution::Unavailable { retry_after, message })
            }
            Some(FakeRoute::Asleep { .. }) => None,
        }
    }

    fn answers_version(&self) -> Option<u64> {
        Some(self.version.load(Ordering::SeqCst))
    }

    fn activity(&self, vm_id: &str, event: ActivityEvent) {
        self.events.lock().expect("lock").push((vm_id.to_string(), event));
    }
}

/// Starts Hatch's proxy on a loopback port.
pub async fn start_proxy(resolver: Arc<FakeResolver>) -> ProxyHandle {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
    spawn_proxy(listener, ProxyConfig::new(BASE_DOMAIN), resolver).expect("start proxy")
}

/// Waits until the proxy has put its upstream connection back in the pool,
/// so that the next request is sent over it.
pub async fn until_pooled(proxy: &ProxyHandle) {
    for _ in 0..1000 {
        if proxy.upstreams().idle_count() == 1 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("the upstream connection never went back to the pool");
}

/// One keep-alive HTTP/1.1 client connection.
pub struct Client {
    sender: SendRequest<TestBody>,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(connection);
        Client { sender }
    }

    pub async fn send(&mut self, request: Request<TestBody>) -> Response<Incoming> {
        self.sender.ready().await.expect("connection ready");
        self.sender.send_request(request).await.expect("response")
    }

    /// GET `path` for `subdomain`, returning status, headers and whole body.
    pub async fn get(&mut self, subdomain: &str, path: &str) -> (StatusCode, hyper::HeaderMap, String) {
        let response = self.send(request("GET", subdomain, path, Empty::new().boxed())).await;
        read_all(response).await
    }
}

pub fn request(method: &str, subdomain: &str, path: &str, body: TestBody) -> Request<TestBody> {
    Request::builder()
        .method(method)
        .uri(path)
        .header(HOST, format!("{subdomain}.{BASE_DOMAIN}:9090"))
        .body(body)
        .expect("request")
}

pub async fn read_all(response: Response<Incoming>) -> (StatusCode, hyper::HeaderMap, String) {
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.expect("body").to_bytes();
    (
        parts.status,
        parts.headers,
        String::from_utf8_lossy(&bytes).into_owned(),
    )
}

/// Reads a body to the end counting bytes, without keeping them.
pub async fn count_body(mut body: Incoming) -> usize {
    let mut total = 0;
    while let Some(frame) = body.frame().await {
        total += frame.expect("frame").data_ref().map_or(0, Bytes::len);
    }
    total
}

/// Peak resident memory of this process so far (VmHWM), in bytes.
pub fn peak_rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).expect("VmHWM");
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("VmHWM value");
    kib * 1024
}

/// Sends `text` on a new connection to `proxy` and reads until the proxy
/// closes it (failing after 30 s instead of hanging).
pub async fn raw_exchange(proxy: SocketAddr, text: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(proxy).await.expect("connect");
    stream.write_all(text).await.expect("send");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut answer))
        .await
        .expect("the proxy closed the connection")
        .expect("read");
    String::from_utf8_lossy(&answer).into_owned()
}
