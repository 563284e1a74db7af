//! proxy-bench: requests per second and latency through Hatch's proxy,
//! directly to the same upstream, and (when installed) through nginx, in
//! one run on loopback.
//!
//! The upstream, Hatch's proxy and the load generator each get their own
//! runtime thread(s); nginx gets as many worker processes as the proxy has
//! threads. Rounds alternate between targets so that noise from other work
//! on the machine spreads over all columns.

mod load;
mod nginx;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use clap::Parser;
use http_body_util::Full;
use hyper::Response;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use hatch::proxy::{spawn_proxy, ActivityEvent, ProxyConfig, Resolution, RouteResolver};

#[derive(Parser)]
#[command(about = "Benchmark Hatch's reverse proxy against direct access and nginx")]
struct Args {
    /// Requests per target per round.
    #[arg(long, default_value_t = 20_000)]
    requests: usize,
    /// Concurrent keep-alive client connections.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Rounds; each round measures every target once.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Size of the upstream's response body.
    #[arg(long, default_value_t = 256)]
    response_bytes: usize,
    /// Runtime threads for Hatch's proxy (and nginx worker processes).
    #[arg(long, default_value_t = 1)]
    proxy_threads: usize,
    /// Leave nginx out even if it is installed.
    #[arg(long)]
    no_nginx: bool,
}

const BASE_DOMAIN: &str = "bench.test";
const HOST: &str = "app.bench.test";

/// Resolves every subdomain to the benchmark upstream.
struct StaticResolver {
    addr: SocketAddr,
}

#[async_trait]
impl RouteResolver for StaticResolver {
    async fn resolve(&self, _subdomain: &str) -> Resolution {
        Resolution::Target {
            vm_id: "vm-bench".into(),
            addr: self.addr,
        }
    }
    fn activity(&self, _vm_id: &str, _event: ActivityEvent) {}
}

/// Runs `make` on a dedicated runtime thread and returns what it produced
/// once it is serving; the runtime lives as long as the process.
fn on_own_runtime<T, F, Fut>(name: &str, threads: usize, make: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T>,
{
    let (sender, receiver) = std::sync::mpsc::channel();
    let name = name.to_string();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name(name)
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let _ = sender.send(make().await);
            std::future::pending::<()>().await
        });
    });
    receiver.recv().expect("runtime thread started")
}

async fn start_upstream(response_bytes: usize) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind upstream");
    let addr = listener.local_addr().expect("upstream address");
    let body = Bytes::from(vec![b'x'; response_bytes]);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            let body = body.clone();
            let service = hyper::service::service_fn(move |_request| {
                let body = body.clone();
                async move { Ok::<_, Infallible>(Response::new(Full::new(body))) }
            });
            tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service));
        }
    });
    addr
}

struct Column {
    name: &'static str,
    addr: SocketAddr,
    rounds_rps: Vec<f64>,
    latencies: Vec<Duration>,
    errors: usize,
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

fn print_table(columns: &mut [Column], args: &Args) {
    println!(
        "\n{} requests x {} rounds per target, {} connections, {} B responses, proxy threads {}",
        args.requests, args.rounds, args.concurrency, args.response_bytes, args.proxy_threads
    );
    println!(
        "{:<13} {:>12} {:>10} {:>10} {:>10} {:>8}",
        "target", "req/s (med)", "p50 ms", "p99 ms", "max ms", "errors"
    );
    for column in columns.iter_mut() {
        column.latencies.sort();
        let rps = median(&mut column.rounds_rps);
        let q = |quantile| load::quantile_ms(&column.latencies, quantile);
        println!(
            "{:<13} {:>12.0} {:>10.3} {:>10.3} {:>10.3} {:>8}",
            column.name,
            rps,
            q(0.5),
            q(0.99),
            q(1.0),
            column.errors
        );
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() {
    let args = Args::parse();
    let response_bytes = args.response_bytes;
    let upstream = on_own_runtime("upstream", 1, move || start_upstream(response_bytes));
    // The same proxy twice on one runtime: with its upstream connection pool,
    // and without it (a new guest connection per request) to show its worth.
    let proxies = on_own_runtime("hatch-proxy", args.proxy_threads, move || async move {
        let pooled = ProxyConfig::new(BASE_DOMAIN);
        let unpooled = ProxyConfig {
            max_idle_per_target: 0,
            ..ProxyConfig::new(BASE_DOMAIN)
        };
        let mut handles = Vec::new();
        for config in [pooled, unpooled] {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
            let resolver = Arc::new(StaticResolver { addr: upstream });
            handles.push(spawn_proxy(listener, config, resolver).expect("start proxy"));
        }
        handles
    });
    let column = |name, addr| Column {
        name,
        addr,
        rounds_rps: Vec::new(),
        latencies: Vec::new(),
        errors: 0,
    };
    let mut columns = vec![
        column("direct", upstream),
        column("hatch", proxies[0].local_addr()),
        column("hatch-nopool", proxies[1].local_addr()),
    ];

    let nginx = match nginx::find() {
        Some(binary) if !args.no_nginx => match nginx::start(&binary, upstream, args.proxy_threads).await {
            Ok(nginx) => Some(nginx),
            Err(error) => {
                eprintln!("nginx column left out: {error}");
                None
            }
        },
        _ => {
            eprintln!("nginx column left out: not installed (apt-get install nginx-light) or --no-nginx");
            None
        }
    };
    if let Some(nginx) = &nginx {
        columns.push(column("nginx", nginx.addr));
    }

    for column in &columns {
        let warm = load::run(column.addr, HOST, "/", 1_000.min(args.requests), args.concurrency).await;
        if warm.errors > 0 {
            eprintln!("warning: {} errors warming up {}", warm.errors, column.name);
        }
    }
    for round in 1..=args.rounds {
        for column in columns.iter_mut() {
            let result = load::run(column.addr, HOST, "/", args.requests, args.concurrency).await;
            eprintln!(
                "round {round} {:<13} {:>8.0} req/s",
                column.name,
                result.requests_per_second()
            );
            column.rounds_rps.push(result.requests_per_second());
            column.errors += result.errors;
            column.latencies.extend(result.latencies);
        }
    }
    print_table(&mut columns, &args);
    drop(nginx);
    drop(proxies);
}
