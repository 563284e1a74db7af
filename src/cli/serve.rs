//! `hatch serve`: the daemon. Opens the store, makes the admin key on first
//! start, starts orchestration and serves the API until SIGTERM or SIGINT.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, UnixListener};

use crate::api::auth::{ensure_admin_key, AdminKeyError};
use crate::api::{self, AppState};
use crate::config::{Config, ConfigError, ListenAddr, ServeArgs};
use crate::idle::spawn_idle_monitor;
use crate::orch::{OrchError, OrchIdleTarget, OrchRouteResolver, Orchestrator};
use crate::proxy::{spawn_proxy, ProxyConfig, ProxyHandle};
use crate::store::{Store, StoreError};
use crate::tls::{server_config, TlsListener, API_TLS, PROXY_TLS};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("cannot prepare {path}: {source}")]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open the database: {0}")]
    Store(#[from] StoreError),
    #[error("cannot create the admin key: {0}")]
    AdminKey(#[from] AdminKeyError),
    #[error("cannot start orchestration: {0}")]
    Orch(#[from] OrchError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the API server failed: {0}")]
    Serve(#[source] std::io::Error),
}

/// Starts orchestration for the daemon: chooses the hypervisor, prepares host
/// networking and reconciles the host with the database.
pub async fn start_orchestrator(config: Arc<Config>, store: Store) -> Result<Arc<Orchestrator>, ServeError> {
    Ok(Orchestrator::start(config, store).await?)
}

/// Creates the data directory if needed and opens the database in it.
pub fn open_store(config: &Config) -> Result<Store, ServeError> {
    let data_dir = &config.data_dir;
    // VM disks, keys and the database live here: owner only. An existing
    // directory keeps its mode (it may be shared, like /tmp).
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(data_dir)
        .map_err(|source| ServeError::DataDir {
            path: data_dir.clone(),
            source,
        })?;
    Ok(Store::open(&config.db_path())?)
}

/// Opens the data directory and database, and makes the admin key on first start.
pub fn open_state(config: &Config) -> Result<Store, ServeError> {
    let store = open_store(config)?;
    if let Some(path) = ensure_admin_key(&store, &config.admin_key_path())? {
        eprintln!("hatch: first start: wrote an admin API key to {}", path.display());
    }
    Ok(store)
}

/// The TLS settings read from their files, before anything else starts.
struct Certificates {
    api: Option<Arc<rustls::ServerConfig>>,
    proxy: Option<Arc<rustls::ServerConfig>>,
}

fn load_certificates(config: &Config) -> Result<Certificates, ConfigError> {
    let load = |files: &Option<crate::tls::TlsFiles>, vars| files.as_ref().map(|f| server_config(f, vars)).transpose();
    Ok(Certificates {
        api: load(&config.tls, API_TLS)?,
        proxy: load(&config.proxy_tls, PROXY_TLS)?,
    })
}

pub async fn run(args: &ServeArgs) -> Result<(), ServeError> {
    let config = Arc::new(Config::from_args(args)?);
    // Unreadable or invalid certificates refuse start-up before anything is
    // created or touched.
    let certificates = load_certificates(&config)?;
    let store = open_state(&config)?;
    let orch = start_orchestrator(config.clone(), store.clone()).await?;
    let background = start_proxy_and_idle_monitor(&config, &orch, certificates.proxy).await?;
    let app = api::router(AppState::new(store, orch.clone(), config.clone()));
    let served = serve(&config, app, certificates.api).await;
    background.idle_monitor.abort();
    background.reconciler.abort();
    background.pool_filler.abort();
    background.console_keeper.abort();
    background.proxy.shutdown(PROXY_SHUTDOWN_GRACE).await;
    // Operations in flight finish (up to HATCH_SHUTDOWN_TIMEOUT); VMs keep
    // running and the next start adopts them.
    orch.shutdown(config.shutdown_timeout).await;
    served
}

/// The long-running tasks besides the API, started in one place.
struct Background {
    proxy: ProxyHandle,
    idle_monitor: tokio::task::JoinHandle<()>,
    reconciler: tokio::task::JoinHandle<()>,
    pool_filler: tokio::task::JoinHandle<()>,
    console_keeper: tokio::task::JoinHandle<()>,
}

/// The subdomain proxy on HATCH_PROXY_ADDR (waking snapshotted VMs), the
/// idle monitor that snapshots routed VMs nobody uses, the reconciler that
/// repairs drift every HATCH_RECONCILE_INTERVAL, the filler of the
/// templates' warm pools, and the keeper of the console logs'
/// HATCH_CONSOLE_LOG_MAX_BYTES.
async fn start_proxy_and_idle_monitor(
    config: &Config,
    orch: &Arc<Orchestrator>,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> Result<Background, ServeError> {
    let addr = config.proxy_addr;
    let bind_error = |source| ServeError::Bind {
        addr: addr.to_string(),
        source,
    };
    let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
    let resolver = Arc::new(OrchRouteResolver::new(orch.clone(), config.proxy_wake_timeout));
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut proxy_config = ProxyConfig::new(config.proxy_base_domain.clone());
    proxy_config.tls = tls;
    proxy_config.hsts = config.proxy_hsts;
    proxy_config.upstream_timeout = config.proxy_upstream_timeout;
    // The daemon's one registry, owned by orchestration (GET /metrics).
    proxy_config.metrics = Some(orch.metrics());
    proxy_config.activity = Some(orch.activity());
    let proxy = spawn_proxy(listener, proxy_config, resolver).map_err(|e| ServeError::Bind {
        addr: addr.to_string(),
        source: std::io::Error::other(e.to_string()),
    })?;
    eprintln!(
        "hatch: reverse proxy on {} ({scheme}) for *.{}",
        proxy.local_addr(),
        config.proxy_base_domain
    );
    // Keep-alive connections to a VM that stops serving are dropped at once.
    orch.add_observer(Arc::new(proxy.upstreams()));
    let target = Arc::new(OrchIdleTarget::new(
        orch.clone(),
        proxy.active_connections(),
        config.idle_timeout,
    ));
    let idle_monitor = spawn_idle_monitor(config.idle_check_interval, target);
    let reconciler = orch.spawn_reconciler(config.reconcile_interval);
    let console_keeper = orch.spawn_console_keeper(config.console_log_max_bytes);
    let pool_filler = orch.spawn_pool_filler();
    Ok(Background {
        proxy,
        idle_monitor,
        reconciler,
        pool_filler,
        console_keeper,
    })
}

async fn serve(config: &Config, app: axum::Router, tls: Option<Arc<rustls::ServerConfig>>) -> Result<(), ServeError> {
    match &config.http_addr {
        ListenAddr::Tcp(addr) => {
            let bind_error = |source| ServeError::Bind {
                addr: addr.to_string(),
                source,
            };
            let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
            let local = listener.local_addr().map_err(bind_error)?;
            match tls {
                Some(tls) => {
                    eprintln!("hatch: HTTPS; listening on {local}");
                    let listener = TlsListener::new(listener, tls).map_err(bind_error)?;
                    serve_until_signal(listener, app, config.shutdown_timeout).await
                }
                None => {
                    warn_if_exposed(local);
                    eprintln!("hatch: listening on {local}");
                    serve_until_signal(listener, app, config.shutdown_timeout).await
                }
            }
        }
        ListenAddr::Unix(path) => {
            let bind_error = |source| ServeError::Bind {
                addr: format!("unix:{}", path.display()),
                source,
            };
            remove_stale_socket(path).map_err(bind_error)?;
            let listener = UnixListener::bind(path).map_err(bind_error)?;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(bind_error)?;
            eprintln!("hatch: listening on unix:{}", path.display());
            let served = serve_until_signal(listener, app, config.shutdown_timeout).await;
            let _ = std::fs::remove_file(path);
            served
        }
    }
}

/// API keys travel in every request: on a non-loopback address without TLS
/// anyone on the path can read them.
fn warn_if_exposed(local: std::net::SocketAddr) {
    if local.ip().is_loopback() {
        return;
    }
    eprintln!(
        "hatch: warning: the API listens on {local} without TLS; API keys cross the network in clear text. \
         Set HATCH_TLS_CERT and HATCH_TLS_KEY, or listen on 127.0.0.1 or a unix socket."
    );
    tracing::warn!(%local, "the API listens on a non-loopback address without TLS");
}

/// How long proxied requests in flight may finish after a stop signal.
const PROXY_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Serves until SIGTERM/SIGINT, then lets requests in flight finish for at
/// most `grace` (HATCH_SHUTDOWN_TIMEOUT). The operations those requests
/// started are the orchestrator's own and are waited for separately.
async fn serve_until_signal<L>(listener: L, app: axum::Router, grace: Duration) -> Result<(), ServeError>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    let stopping = Arc::new(tokio::sync::Notify::new());
    let notify = stopping.clone();
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        shutdown_signal().await;
        notify.notify_one();
    });
    tokio::select! {
        served = server => served.map_err(ServeError::Serve),
        _ = async {
            stopping.notified().await;
            tokio::time::sleep(grace).await;
        } => {
            eprintln!("hatch: requests still running after {}s; stopping anyway", grace.as_secs());
            Ok(())
        }
    }
}

/// A socket file left by a daemon that died is replaced; any other file is not.
fn remove_stale_socket(path: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path),
        Ok(_) => Err(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            "exists and is not a socket",
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        tracing::error!("cannot install signal handlers; stop the daemon with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
    eprintln!("hatch: shutting down");
}
