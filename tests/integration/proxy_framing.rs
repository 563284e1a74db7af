//! Hatch's proxy in front of an odd or hostile guest: a raw TCP server
//! that answers each request with bytes the test chose. Chunked,
//! close-delimited and bodiless answers arrive intact; ambiguous or
//! oversized heads get 502 and their connection is never reused; a body cut
//! off by the guest is cut off for the client (no hang); a second response
//! the guest slips into a kept-alive connection never answers the next
//! request; a guest that answers before it has read a large upload gets
//! its answer through. Everything runs inside a network namespace made for
//! the test.

use crate::common;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::Frame;
use hyper::StatusCode;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use common::netns::TestNetns;
use common::proxy::{raw_exchange, read_all, request, start_proxy, until_pooled, Client, FakeResolver};
use hatch::proxy::{spawn_proxy, ProxyConfig, ProxyHandle};

/// What the guest does after writing an answer.
#[derive(Clone, Copy)]
enum Then {
    KeepOpen,
    Close,
}

/// Each request's head (lowercased) and body, as the guest read them.
type Requests = Arc<Mutex<Vec<(String, Vec<u8>)>>>;
/// The answers still to give, in order, whichever connection asks.
type Answers = Arc<Mutex<VecDeque<(Vec<u8>, Then)>>>;

/// A guest service that answers the n-th request it reads (on whichever
/// connection) with the n-th scripted answer, and records each request.
struct ScriptedUpstream {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    requests: Requests,
}

impl ScriptedUpstream {
    async fn start(answers: Vec<(Vec<u8>, Then)>) -> ScriptedUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind upstream");
        let upstream = ScriptedUpstream {
            addr: listener.local_addr().expect("upstream address"),
            connections: Arc::default(),
            requests: Arc::default(),
        };
        let answers = Arc::new(Mutex::new(VecDeque::from(answers)));
        let (connections, requests) = (upstream.connections.clone(), upstream.requests.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                connections.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(stream, answers.clone(), requests.clone()));
            }
        });
        upstream
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    fn request(&self, index: usize) -> (String, Vec<u8>) {
        self.requests.lock().unwrap()[index].clone()
    }
}

async fn serve(stream: TcpStream, answers: Answers, requests: Requests) {
    let mut stream = BufReader::new(stream);
    while let Some(request) = read_request(&mut stream).await {
        requests.lock().unwrap().push(request);
        let Some((answer, then)) = answers.lock().unwrap().pop_front() else {
            return;
        };
        // A guest writing a huge head sees the proxy hang up: that is fine.
        if stream.get_mut().write_all(&answer).await.is_err() {
            return;
        }
        if let Then::Close = then {
            return;
        }
    }
}

/// Reads one request: its head, and its body by Content-Length or chunked.
async fn read_request(stream: &mut BufReader<TcpStream>) -> Option<(String, Vec<u8>)> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if stream.read_line(&mut line).await.ok()? == 0 {
            return None;
        }
        head.push_str(&line.to_ascii_lowercase());
        if line == "\r\n" {
            break;
        }
    }
    let mut body = Vec::new();
    if head.contains("transfer-encoding: chunked") {
        loop {
            let mut size = String::new();
            stream.read_line(&mut size).await.ok()?;
            let size = usize::from_str_radix(size.trim(), 16).ok()?;
            let mut chunk = vec![0u8; size + 2];
            stream.read_exact(&mut chunk).await.ok()?;
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    } else if let Some(length) = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .and_then(|value| value.trim().parse::<usize>().ok())
    {
        body.resize(length, 0);
        stream.read_exact(&mut body).await.ok()?;
    }
    Some((head, body))
}

fn answer(text: &str) -> (Vec<u8>, Then) {
    (text.as_bytes().to_vec(), Then::KeepOpen)
}

/// Runs `test` in a network namespace made for it, against Hatch's proxy
/// in front of a guest that gives `answers`; then stops the proxy.
fn against<F, Fut>(answers: Vec<(Vec<u8>, Then)>, test: F)
where
    F: FnOnce(ScriptedUpstream, Arc<ProxyHandle>) -> Fut + Send,
    Fut: std::future::Future<Output = ()>,
{
    let ns = TestNetns::new();
    ns.block_on(move || async move {
        let upstream = ScriptedUpstream::start(answers).await;
        let proxy = Arc::new(start_proxy(FakeResolver::running("app", upstream.addr)).await);
        test(upstream, Arc::clone(&proxy)).await;
        if let Ok(proxy) = Arc::try_unwrap(proxy) {
            proxy.shutdown(Duration::from_secs(5)).await;
        }
    });
}

/// The whole answer through `client`, failing instead of hanging.
async fn send(client: &mut Client, method: &str, path: &str) -> (StatusCode, hyper::HeaderMap, String) {
    let response = client.send(request(method, "app", path, Empty::new().boxed())).await;
    tokio::time::timeout(Duration::from_secs(30), read_all(response))
        .await
        .expect("the answer never ended")
}

#[test]
fn chunked_bodiless_interim_and_close_delimited_answers_arrive_intact() {
    let chunked = concat!(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        "5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nX-Trailer: 1\r\n\r\n"
    );
    let interim = concat!(
        "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    );
    against(
        vec![
            answer(chunked),
            answer("HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nContent-Type: text/plain\r\n\r\n"),
            answer("HTTP/1.1 204 No Content\r\n\r\n"),
            answer(interim),
            (b"HTTP/1.1 200 OK\r\n\r\nuntil the guest closes".to_vec(), Then::Close),
            answer("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfresh"),
        ],
        |upstream, proxy| async move {
            let mut client = Client::connect(proxy.local_addr()).await;

            let (status, _, body) = send(&mut client, "GET", "/chunked").await;
            assert_eq!((status, body.as_str()), (StatusCode::OK, "hello, world"));
            until_pooled(&proxy).await;

            let (status, headers, body) = send(&mut client, "HEAD", "/head").await;
            assert_eq!((status, body.as_str()), (StatusCode::OK, ""));
            assert_eq!(headers["content-length"], "1000", "{headers:?}");
            until_pooled(&proxy).await;

            let (status, _, body) = send(&mut client, "DELETE", "/thing").await;
            assert_eq!((status, body.as_str()), (StatusCode::NO_CONTENT, ""));
            until_pooled(&proxy).await;

            let (status, _, body) = send(&mut client, "GET", "/slow").await;
            assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"));
            until_pooled(&proxy).await;

            let (status, _, body) = send(&mut client, "GET", "/stream").await;
            assert_eq!((status, body.as_str()), (StatusCode::OK, "until the guest closes"));
            assert_eq!(upstream.connections(), 1, "five requests on one kept-alive connection");
            assert_eq!(
                proxy.upstreams().idle_count(),
                0,
                "a close-delimited answer's connection is done"
            );

            let (status, _, body) = send(&mut client, "GET", "/after").await;
            assert_eq!((status, body.as_str()), (StatusCode::OK, "fresh"));
            assert_eq!(upstream.connections(), 2);
        },
    );
}

#[test]
fn ambiguous_or_oversized_heads_get_502_and_their_connection_is_dropped() {
    let big_head = format!("HTTP/1.1 200 OK\r\nX-Big: {}\r\n\r\n", "a".repeat(70 * 1024));
    let many_fields: String = (0..150).map(|i| format!("X-Field-{i}: {i}\r\n")).collect();
    let refused = [
        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_string(),
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 20\r\n\r\nok".to_string(),
        "HTTP/1.1 200 OK\r\nContent-Length: 2x\r\n\r\nok".to_string(),
        big_head,
        format!("HTTP/1.1 200 OK\r\n{many_fields}Content-Length: 2\r\n\r\nok"),
    ];
    let mut script: Vec<_> = refused.iter().map(|text| answer(text)).collect();
    script.push(answer("HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nsane"));
    against(script, |upstream, proxy| async move {
        let mut client = Client::connect(proxy.local_addr()).await;

        for (index, _) in refused.iter().enumerate() {
            let (status, _, body) = send(&mut client, "GET", &format!("/refused/{index}")).await;
            assert_eq!(status, StatusCode::BAD_GATEWAY, "answer {index}: {body}");
            let error: serde_json::Value = serde_json::from_str(&body).expect("a JSON error");
            assert!(
                error["error"].as_str().is_some_and(|e| e.contains("did not answer")),
                "{body}"
            );
            assert_eq!(
                proxy.upstreams().idle_count(),
                0,
                "answer {index}'s connection was kept"
            );
            assert_eq!(
                upstream.connections(),
                index + 1,
                "answer {index}'s connection was reused"
            );
        }
        let (status, _, body) = send(&mut client, "GET", "/sane").await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "sane"));
    });
}

#[test]
fn a_body_the_guest_cuts_off_is_cut_off_for_the_client() {
    against(
        vec![
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial".to_vec(),
                Then::Close,
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n7\r\npartial\r\n3\r\nab".to_vec(),
                Then::Close,
            ),
        ],
        |_upstream, proxy| async move {
            // A raw client: what matters is which bytes arrive before the
            // proxy closes the connection (hyper may not even send the head
            // when the body breaks before it is flushed).
            for path in ["/length", "/chunked"] {
                let ask = format!(
                    "GET {path} HTTP/1.1\r\nHost: app.{}:9090\r\n\r\n",
                    common::proxy::BASE_DOMAIN
                );
                let received = raw_exchange(proxy.local_addr(), ask.as_bytes()).await;
                let body = received.split_once("\r\n\r\n").map_or("", |(_, body)| body);
                let complete = match path {
                    "/length" => body.len() >= 100,
                    _ => body.ends_with("0\r\n\r\n"),
                };
                assert!(!complete, "{path}: a cut-off body arrived as complete: {received}");
            }
            assert_eq!(proxy.upstreams().idle_count(), 0);
        },
    );
}

#[test]
fn a_second_response_slipped_into_a_connection_never_answers_the_next_request() {
    against(
        vec![
            answer(
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirstHTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled",
            ),
            answer("HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecond"),
            answer("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nthird"),
        ],
        |upstream, proxy| async move {
            let mut client = Client::connect(proxy.local_addr()).await;
            let (_, _, body) = send(&mut client, "GET", "/one").await;
            assert_eq!(body, "first");
            let (_, _, body) = send(&mut client, "GET", "/two").await;
            assert_eq!(body, "second");
            assert_eq!(upstream.connections(), 2, "the connection with extra bytes was reused");
            until_pooled(&proxy).await;
            let (_, _, body) = send(&mut client, "GET", "/three").await;
            assert_eq!(body, "third");
            assert_eq!(upstream.connections(), 2, "a clean connection is reused");
        },
    );
}

#[test]
fn request_bodies_reach_the_guest_with_their_length_or_chunked() {
    against(
        vec![
            answer("HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"),
            answer("HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"),
        ],
        |upstream, proxy| async move {
            let mut client = Client::connect(proxy.local_addr()).await;

            let sized = Full::new(Bytes::from("one order"))
                .map_err(|never| match never {})
                .boxed();
            let (status, _, _) = read_all(client.send(request("POST", "app", "/orders", sized)).await).await;
            assert_eq!(status, StatusCode::CREATED);
            let (head, body) = upstream.request(0);
            assert!(head.contains("content-length: 9\r\n"), "{head}");
            assert_eq!(body, b"one order");

            // No length known in advance: the client sends it chunked.
            let pieces =
                ["two ", "streamed ", "orders"].map(|piece| Ok::<_, Infallible>(Frame::data(Bytes::from(piece))));
            let streamed = StreamBody::new(stream::iter(pieces)).boxed();
            let (status, _, _) = read_all(client.send(request("POST", "app", "/orders", streamed)).await).await;
            assert_eq!(status, StatusCode::CREATED);
            let (head, body) = upstream.request(1);
            assert!(head.contains("transfer-encoding: chunked\r\n"), "{head}");
            assert!(!head.contains("content-length"), "{head}");
            assert_eq!(body, b"two streamed orders");
            assert_eq!(upstream.connections(), 1);
        },
    );
}

#[test]
fn a_guest_that_answers_before_reading_a_large_upload_is_not_stalled() {
    const ANSWER: usize = 4 << 20;
    const UPLOAD: usize = 16 << 20;
    let ns = TestNetns::new();
    ns.block_on(|| async {
        // Reads the request's head only, then writes a long answer and
        // reads nothing more: neither side's buffers can hold what the
        // other still has to send.
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind upstream");
        let addr = listener.local_addr().expect("upstream address");
        let guest = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.expect("accept");
            let mut stream = BufReader::new(stream);
            let mut line = String::new();
            while stream.read_line(&mut line).await.expect("read head") > 2 {
                line.clear();
            }
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {ANSWER}\r\n\r\n");
            let stream = stream.get_mut();
            stream.write_all(head.as_bytes()).await.expect("write head");
            stream.write_all(&vec![b'a'; ANSWER]).await.expect("write answer");
            // Open until the test ends, still reading nothing.
            tokio::time::sleep(Duration::from_secs(60)).await;
        });
        let proxy = start_proxy(FakeResolver::running("app", addr)).await;
        let mut client = Client::connect(proxy.local_addr()).await;
        let upload = Full::new(Bytes::from(vec![b'u'; UPLOAD]))
            .map_err(|never| match never {})
            .boxed();
        let response = tokio::time::timeout(
            Duration::from_secs(60),
            client.send(request("POST", "app", "/upload", upload)),
        )
        .await
        .expect("the exchange stalled: no answer");
        assert_eq!(response.status(), StatusCode::OK);
        // The answer's body streams until the proxy's server closes the
        // client connection it can no longer reuse (the rest of the upload
        // is unread): however much of it arrives, nothing hangs.
        let mut body = response.into_body();
        tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(Ok(_)) = body.frame().await {}
        })
        .await
        .expect("the answer's body stalled");
        assert_eq!(
            proxy.upstreams().idle_count(),
            0,
            "a connection with an unsent body was kept"
        );
        guest.abort();
        proxy.shutdown(Duration::from_secs(5)).await;
    });
}

#[test]
fn hop_by_hop_fields_stop_at_the_proxy_both_ways_and_the_rest_pass_as_they_came() {
    let guest_answer = concat!(
        "HTTP/1.1 200 OK\r\nX-Guest: Kept\r\nConnection: X-Guest-Hop\r\nX-Guest-Hop: 1\r\n",
        "Keep-Alive: timeout=5\r\nProxy-Authenticate: Basic\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n",
        "Content-Length: 2\r\n\r\nok"
    );
    against(
        vec![answer(guest_answer), answer(guest_answer)],
        |upstream, proxy| async move {
            let host = format!("app.{}:9090", common::proxy::BASE_DOMAIN);
            let fields = format!(
                "Host: {host}\r\nX-Trace: One\r\nConnection: keep-alive, X-Client-Hop\r\nX-Client-Hop: secret\r\n\
                 Keep-Alive: timeout=5\r\nTE: trailers\r\nProxy-Authorization: Basic eA==\r\n\
                 X-Forwarded-For: 203.0.113.9\r\nAccept: */*\r\n"
            );
            // The first is answered by the proxy's own loop, the second
            // (with a body) by hyper's server: both pass on the same.
            let requests = format!(
                "GET /fields HTTP/1.1\r\n{fields}\r\n\
                 POST /fields HTTP/1.1\r\n{fields}Content-Length: 3\r\nConnection: close\r\n\r\nabc"
            );
            let answers = raw_exchange(proxy.local_addr(), requests.as_bytes()).await;

            let forwarded = format!(
                "x-trace: one\r\naccept: */*\r\nhost: {host}\r\nx-forwarded-for: 203.0.113.9, 127.0.0.1\r\n\
                 x-forwarded-proto: http\r\nx-forwarded-host: {host}\r\n"
            );
            let (get, _) = upstream.request(0);
            assert_eq!(get, format!("get /fields http/1.1\r\n{forwarded}\r\n"));
            let (post, body) = upstream.request(1);
            let post_fields: Vec<&str> = post
                .lines()
                .filter(|line| !line.starts_with("content-length"))
                .collect();
            let get_fields: Vec<&str> = get.lines().skip(1).collect();
            assert_eq!(post_fields[0], "post /fields http/1.1");
            assert_eq!(post_fields[1..], get_fields, "{post}");
            assert_eq!(body, b"abc");

            let heads: Vec<&str> = answers.split("\r\n\r\nok").filter(|head| !head.is_empty()).collect();
            assert_eq!(heads.len(), 2, "{answers}");
            // The own loop passes names in the guest's case; hyper's
            // server writes them lowercase.
            let own_fields: Vec<&str> = heads[0].lines().filter(|line| !line.starts_with("date: ")).collect();
            assert_eq!(
                own_fields,
                [
                    "HTTP/1.1 200 OK",
                    "X-Guest: Kept",
                    "Set-Cookie: a=1",
                    "Set-Cookie: b=2",
                    "content-length: 2",
                ],
                "{answers}"
            );
            let hyper_fields = heads[1].to_ascii_lowercase();
            for passed in [
                "x-guest: kept",
                "set-cookie: a=1",
                "set-cookie: b=2",
                "content-length: 2",
            ] {
                assert!(hyper_fields.contains(passed), "{passed} in {answers}");
            }
            for stopped in ["x-guest-hop", "keep-alive", "proxy-authenticate"] {
                assert!(
                    !answers.to_ascii_lowercase().contains(stopped),
                    "{stopped} in {answers}"
                );
            }
        },
    );
}

#[test]
fn a_guest_that_never_answers_gets_504_after_the_upstream_timeout_and_its_connections_are_closed() {
    let ns = TestNetns::new();
    ns.block_on(|| async {
        // Reads each request's head and never answers; reports how many
        // bytes followed the head once the proxy hangs up.
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind upstream");
        let addr = listener.local_addr().expect("upstream address");
        let (hung_up, mut hang_ups) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let hung_up = hung_up.clone();
                tokio::spawn(async move {
                    let mut stream = BufReader::new(stream);
                    let mut line = String::new();
                    while stream.read_line(&mut line).await.unwrap_or(0) > 2 {
                        line.clear();
                    }
                    let mut rest = Vec::new();
                    let _ = stream.read_to_end(&mut rest).await;
                    let _ = hung_up.send(rest);
                });
            }
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let mut config = ProxyConfig::new(common::proxy::BASE_DOMAIN);
        config.upstream_timeout = Duration::from_millis(500);
        let proxy = spawn_proxy(listener, config, FakeResolver::running("app", addr)).expect("start proxy");
        let mut client = Client::connect(proxy.local_addr()).await;

        // Bodiless (the proxy's own loop), then with a body (hyper's server).
        for (method, sent_after_head) in [("GET", &b""[..]), ("POST", b"abc")] {
            let body = Full::new(Bytes::from_static(sent_after_head))
                .map_err(|never| match never {})
                .boxed();
            let response = client.send(request(method, "app", "/never", body)).await;
            let (status, _, answer) = tokio::time::timeout(Duration::from_secs(30), read_all(response))
                .await
                .expect("no answer at all");
            assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{method}: {answer}");
            assert!(answer.contains("did not answer within 500ms"), "{method}: {answer}");
            let rest = tokio::time::timeout(Duration::from_secs(10), hang_ups.recv())
                .await
                .expect("the proxy kept the silent guest's connection open")
                .expect("guest");
            assert_eq!(rest, sent_after_head, "{method}");
        }
        assert_eq!(proxy.upstreams().idle_count(), 0);
        proxy.shutdown(Duration::from_secs(5)).await;
    });
}
