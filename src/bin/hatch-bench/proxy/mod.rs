//! `proxy`: requests per second and p99 latency through Hatch's reverse
//! proxy **with the real route resolver** (the orchestrator's in-memory
//! view of routes and VMs) against nginx proxying to the same upstream,
//! on loopback inside the benchmark's namespace.
//!
//! The upstream is a small HTTP server on its own runtime thread. Hatch
//! resolves `app.bench.test` through a route to a VM recorded as running
//! whose address is the upstream's (127.0.0.1): no guest, so the numbers
//! are the proxies' own. Hatch's proxy gets one runtime thread and nginx
//! one worker process; both keep upstream connections alive. Each round
//! sends the same closed-loop load through both, in alternating order. A
//! context line gives each proxy's CPU time per request (its threads'
//! `schedstat`), which a busy machine disturbs far less than req/s.

mod cpu;
mod load;
pub mod nginx;

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::Response;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use hatch::model::VmState;
use hatch::orch::{CreateRoute, OrchRouteResolver};
use hatch::proxy::{spawn_proxy, ProxyConfig};

use crate::hatchd::Hatchd;
use crate::rows::Ctx;
use crate::stats::{quantile_ms, Comparison};
use crate::BenchError;

const BASE_DOMAIN: &str = "bench.test";
const HOST: &str = "app.bench.test";
/// Requests per proxy per round.
const REQUESTS: usize = 20_000;
/// Concurrent keep-alive client connections.
const CONCURRENCY: usize = 32;
const RESPONSE_BYTES: usize = 256;

/// A runtime on its own thread(s), stopped when dropped.
struct OwnRuntime {
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// Runs `make` on a dedicated runtime and returns what it produced once it
/// is serving; that runtime (and what it serves) ends with the `OwnRuntime`.
fn on_own_runtime<T, F, Fut>(name: &str, threads: usize, make: F) -> Result<(T, OwnRuntime), BenchError>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T>,
{
    let (sender, receiver) = std::sync::mpsc::channel();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .thread_name(name)
        .enable_all()
        .build()
        .map_err(BenchError::io(format!("starting the {name} runtime")))?;
    std::thread::spawn(move || {
        runtime.block_on(async move {
            let _ = sender.send(make().await);
            let _ = stopped.await;
        });
    });
    let made = receiver
        .recv()
        .map_err(|_| BenchError::Hatch(format!("the {name} runtime ended early")))?;
    Ok((made, OwnRuntime { _stop: stop }))
}

async fn start_upstream() -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let body = Bytes::from(vec![b'x'; RESPONSE_BYTES]);
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
    Ok(addr)
}

pub async fn run(nginx_binary: &Path, ctx: &Ctx) -> Result<Vec<Comparison>, BenchError> {
    let scratch = ctx.scratch("hatch-bench-proxy-")?;
    let image = crate::api_list::registered_image(scratch.path());
    // The VM behind the route has no VMM: the reconciler must not see it
    // during the run and record it as crashed.
    let hatchd = Hatchd::start(ctx, &[&image], |config| {
        config.reconcile_interval = Duration::from_secs(24 * 3600)
    })
    .await?;
    let result = measure(nginx_binary, ctx, &hatchd, &image.id).await;
    hatchd.shutdown().await;
    result
}

async fn measure(
    nginx_binary: &Path,
    ctx: &Ctx,
    hatchd: &Hatchd,
    image_id: &str,
) -> Result<Vec<Comparison>, BenchError> {
    let (upstream, _upstream_runtime) = on_own_runtime("upstream", 1, start_upstream)?;
    let upstream = upstream.map_err(BenchError::io("starting the upstream"))?;
    let mut vm = crate::api_list::vm(image_id, VmState::Running, 0);
    if let Some(network) = &mut vm.network {
        network.guest_ip = Ipv4Addr::LOCALHOST;
    }
    hatchd
        .store
        .insert_vm(&vm, Some("created"))
        .map_err(BenchError::hatch)?;
    hatchd.orch.vm_written_elsewhere(&vm.id);
    hatchd
        .orch
        .create_route(
            &vm.id,
            CreateRoute {
                subdomain: Some("app".into()),
                target_port: upstream.port(),
                auto_wake: false,
            },
            |id| Some(id.to_string()),
        )
        .await
        .map_err(BenchError::hatch)?;
    let resolver = Arc::new(OrchRouteResolver::new(hatchd.orch.clone(), Duration::from_secs(60)));
    let (proxy, _proxy_runtime) = on_own_runtime("hatch-proxy", 1, move || async move {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(BenchError::io("binding the proxy"))?;
        spawn_proxy(listener, ProxyConfig::new(BASE_DOMAIN), resolver).map_err(BenchError::hatch)
    })?;
    let proxy = proxy?;
    hatchd.orch.add_observer(Arc::new(proxy.upstreams()));
    let nginx = nginx::start(nginx_binary, upstream, 1)
        .await
        .map_err(BenchError::Http)?;

    let targets = [("hatch", proxy.local_addr()), ("nginx", nginx.addr)];
    for (name, addr) in targets {
        let warm = load::run(addr, HOST, "/", 1_000, CONCURRENCY).await;
        if warm.errors > 0 {
            return Err(BenchError::Http(format!("{} errors warming up {name}", warm.errors)));
        }
    }
    let mut rps = Comparison::new(
        Some("proxy_rps_ratio"),
        "proxy req/s (higher is better)",
        "req/s",
        "nginx",
    );
    let mut p99 = Comparison::new(Some("proxy_p99_ratio"), "proxy p99 latency", "ms", "nginx");
    // Looked up after the warm-up: nginx's worker exists by then.
    let clocks = [
        cpu::CpuClock::own_threads("hatch-proxy"),
        cpu::CpuClock::children_of(nginx.pid()),
    ];
    let mut cpu = match &clocks {
        [Some(_), Some(_)] => Some(Comparison::new(
            None,
            "proxy CPU per request (lower is better)",
            "µs",
            "nginx",
        )),
        _ => None,
    };
    for round in 1..=ctx.rounds {
        // Alternate which proxy goes first.
        let order = if round % 2 == 1 { [0, 1] } else { [1, 0] };
        let mut results: [Option<load::RunResult>; 2] = [None, None];
        let mut cpu_per_request = [0.0; 2];
        for index in order {
            let (name, addr) = targets[index];
            let cpu_before = clocks[index].as_ref().map(cpu::CpuClock::nanos);
            let result = load::run(addr, HOST, "/", REQUESTS, CONCURRENCY).await;
            let cpu_after = clocks[index].as_ref().map(cpu::CpuClock::nanos);
            if let (Some(before), Some(after)) = (cpu_before, cpu_after) {
                cpu_per_request[index] = after.saturating_sub(before) as f64 / 1000.0 / REQUESTS as f64;
            }
            eprintln!(
                "round {round} {name:<6} {:>8.0} req/s  p99 {:.3} ms  errors {}  CPU {:.1} µs/request",
                result.requests_per_second(),
                quantile_ms(&result.latencies, 0.99),
                result.errors,
                cpu_per_request[index]
            );
            if result.errors > 0 {
                return Err(BenchError::Http(format!("{} errors through {name}", result.errors)));
            }
            results[index] = Some(result);
        }
        let [Some(hatch), Some(nginx)] = results else {
            unreachable!("both proxies ran");
        };
        rps.push(hatch.requests_per_second(), nginx.requests_per_second());
        p99.push(quantile_ms(&hatch.latencies, 0.99), quantile_ms(&nginx.latencies, 0.99));
        if let Some(cpu) = &mut cpu {
            cpu.push(cpu_per_request[0], cpu_per_request[1]);
        }
    }
    proxy.shutdown(Duration::from_secs(1)).await;
    drop(nginx);
    Ok([rps, p99].into_iter().chain(cpu).collect())
}
