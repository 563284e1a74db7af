//! A closed-loop load generator: `concurrency` keep-alive connections, each
//! sending its next request as soon as the previous answer is read.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// What one run measured.
pub struct RunResult {
    pub latencies: Vec<Duration>,
    pub elapsed: Duration,
    pub errors: usize,
}

impl RunResult {
    pub fn requests_per_second(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }
}

/// Sends `requests` GETs of `path` with `host` to `addr`.
pub async fn run(addr: SocketAddr, host: &str, path: &str, requests: usize, concurrency: usize) -> RunResult {
    let remaining = Arc::new(AtomicUsize::new(requests));
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency.max(1))
        .map(|_| {
            let (remaining, host, path) = (Arc::clone(&remaining), host.to_string(), path.to_string());
            tokio::spawn(async move { worker(addr, &host, &path, &remaining).await })
        })
        .collect();
    let mut result = RunResult {
        latencies: Vec::with_capacity(requests),
        elapsed: Duration::ZERO,
        errors: 0,
    };
    for worker in workers {
        if let Ok((latencies, errors)) = worker.await {
            result.latencies.extend(latencies);
            result.errors += errors;
        } else {
            result.errors += 1;
        }
    }
    result.elapsed = started.elapsed();
    result
}

/// Takes one request at a time from `remaining` until none is left.
async fn worker(addr: SocketAddr, host: &str, path: &str, remaining: &AtomicUsize) -> (Vec<Duration>, usize) {
    let mut latencies = Vec::new();
    let mut errors = 0;
    let mut sender: Option<SendRequest<Empty<Bytes>>> = None;
    while take_one(remaining) {
        let started = Instant::now();
        if sender.as_ref().is_none_or(SendRequest::is_closed) {
            sender = connect(addr).await;
        }
        let Some(connection) = sender.as_mut() else {
            errors += 1;
            continue;
        };
        match exchange(connection, host, path).await {
            Ok(()) => latencies.push(started.elapsed()),
            Err(()) => {
                errors += 1;
                sender = None;
            }
        }
    }
    (latencies, errors)
}

fn take_one(remaining: &AtomicUsize) -> bool {
    remaining
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| left.checked_sub(1))
        .is_ok()
}

async fn connect(addr: SocketAddr) -> Option<SendRequest<Empty<Bytes>>> {
    let stream = TcpStream::connect(addr).await.ok()?;
    stream.set_nodelay(true).ok()?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.ok()?;
    tokio::spawn(connection);
    Some(sender)
}

async fn exchange(sender: &mut SendRequest<Empty<Bytes>>, host: &str, path: &str) -> Result<(), ()> {
    sender.ready().await.map_err(|_| ())?;
    let request = Request::get(path)
        .header("host", host)
        .body(Empty::new())
        .map_err(|_| ())?;
    let response = sender.send_request(request).await.map_err(|_| ())?;
    let ok = response.status().is_success();
    response.into_body().collect().await.map_err(|_| ())?;
    if ok {
        Ok(())
    } else {
        Err(())
    }
}
