//! The `hatch` command line: `hatch serve` runs the daemon; every other
//! command is a client of its API (`HATCH_URL`, `HATCH_API_KEY`).

mod doctor;
mod events;
mod exec;
mod files;
mod fork;
pub mod http;
mod images;
mod keys;
mod lifetime;
mod output;
mod progress;
mod routes;
pub mod serve;
mod snapshots;
mod templates;
mod terminal;
mod vms;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::ServeArgs;
use http::{Client, Endpoint};

#[derive(Debug, Parser)]
#[command(
    name = "hatch",
    version,
    about = "A small cloud of microVMs on one Linux host, behind one REST API"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// How the client commands reach the daemon.
#[derive(Debug, Clone, clap::Args)]
pub struct ClientArgs {
    /// Daemon URL: http://host:port, https://host:port or unix:/path/to.sock.
    #[arg(long, global = true, env = "HATCH_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// CA certificates (PEM) to trust for an https:// URL, instead of the
    /// system's [default: the system's CAs].
    #[arg(long, global = true, env = "HATCH_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// API key [default: the contents of $HATCH_DATA_DIR/admin.key when readable].
    #[arg(long, global = true, env = "HATCH_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon (every setting also reads its HATCH_* variable).
    Serve(Box<ServeArgs>),
    /// Create and manage VMs.
    Vm(Group<vms::VmCommand>),
    /// Build, register and manage guest images.
    Image(Group<images::ImageCommand>),
    /// Saved VM defaults.
    Template(Group<templates::TemplateCommand>),
    /// API keys.
    Key(Group<keys::KeyCommand>),
    /// Save and restore VMs.
    Snapshot(Group<snapshots::SnapshotCommand>),
    /// Reverse-proxy routes to VM ports.
    Route(Group<routes::RouteCommand>),
    /// Mutating API requests, newest first (admin keys only).
    Audit(keys::AuditArgs),
    /// Events (state changes, readiness, repairs, idle decisions, errors),
    /// one line each; `-f` follows them live.
    Events(events::EventsArgs),
    /// Check the host's prerequisites and show which hypervisor would be used.
    Doctor(ClientArgs),
    /// Print a shell completion script: `hatch completion bash > /etc/bash_completion.d/hatch`.
    Completion { shell: clap_complete::Shell },
}

/// A command group with the connection options every client command takes.
#[derive(Debug, clap::Args)]
pub struct Group<C: Subcommand> {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(subcommand)]
    pub command: C,
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error("cannot reach the hatch daemon at {at} ({source}); is `hatch serve` running? (HATCH_URL)")]
    Unreachable {
        at: String,
        #[source]
        source: std::io::Error,
    },
    #[error("HTTP error: {0}")]
    Http(String),
    #[error("{0}")]
    Tls(String),
    #[error("{message} ({status} {code})")]
    Api { status: u16, code: String, message: String },
    #[error(transparent)]
    Serve(#[from] serve::ServeError),
    #[error("{0}")]
    Local(String),
    /// Exit with this status, having said what there was to say (a
    /// command run in the guest ended with it).
    #[error("exit status {0}")]
    Exit(u8),
}

impl ClientArgs {
    pub fn client(&self) -> Result<Client, CliError> {
        let api_key = match &self.api_key {
            Some(key) => Some(key.trim().to_string()),
            None => admin_key_from_data_dir(),
        };
        Ok(Client {
            endpoint: Endpoint::parse(&self.url)?,
            api_key,
            ca_cert: self.ca_cert.clone().filter(|path| !path.as_os_str().is_empty()),
        })
    }
}

/// `$HATCH_DATA_DIR/admin.key`, when this user can read it.
fn admin_key_from_data_dir() -> Option<String> {
    let data_dir = std::env::var_os("HATCH_DATA_DIR").unwrap_or_else(|| "/var/lib/hatch".into());
    let key = std::fs::read_to_string(std::path::Path::new(&data_dir).join("admin.key")).ok()?;
    Some(key.trim().to_string()).filter(|k| !k.is_empty())
}

/// The database the daemon uses, opened directly (for use without a daemon).
fn local_store() -> Result<crate::store::Store, CliError> {
    let config = crate::config::Config::from_env().map_err(|e| CliError::Usage(e.to_string()))?;
    crate::store::Store::open(&config.db_path()).map_err(local)
}

fn local(error: impl std::fmt::Display) -> CliError {
    CliError::Local(error.to_string())
}

/// Commands that keep writing to the daemon (a streamed exec's stdin, a
/// file upload) while the daemon may already have answered and closed the
/// connection (an error): SIGPIPE stays ignored for them, so the write fails
/// and they read and show the daemon's answer instead of dying silently.
/// Their own output goes through `write_all`, which reports a closed pipe.
fn writes_to_a_socket_the_daemon_may_close(command: &Command) -> bool {
    matches!(command, Command::Vm(group) if matches!(group.command, vms::VmCommand::Exec(_) | vms::VmCommand::Cp(_)))
}

/// Entry point of the `hatch` binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(cli.command, Command::Serve(_)) {
        init_tracing();
    } else if !writes_to_a_socket_the_daemon_may_close(&cli.command) {
        // A client command piped into `head` ends quietly when the reader
        // goes away, as Unix tools do (Rust ignores SIGPIPE, so printing
        // would panic). The daemon keeps ignoring it: a client closing its
        // socket must never kill the daemon.
        // SAFETY: setting a signal's disposition to its default before any
        // thread is started.
        let _ = unsafe {
            nix::sys::signal::signal(nix::sys::signal::Signal::SIGPIPE, nix::sys::signal::SigHandler::SigDfl)
        };
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("hatch: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(CliError::Exit(code)) => ExitCode::from(code),
        Err(error) => {
            eprintln!("hatch: {error}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

pub async fn run(command: Command) -> Result<(), CliError> {
    match command {
        Command::Serve(args) => Ok(serve::run(&args).await?),
        Command::Vm(group) => vms::run(group.command, &group.client).await,
        Command::Image(group) => images::run(group.command, &group.client).await,
        Command::Template(group) => templates::run(group.command, &group.client).await,
        Command::Key(group) => keys::run(group.command, &group.client).await,
        Command::Snapshot(group) => snapshots::run(group.command, &group.client).await,
        Command::Route(group) => routes::run(group.command, &group.client).await,
        Command::Audit(args) => keys::audit(&args).await,
        Command::Events(args) => events::run(&args).await,
        Command::Doctor(args) => doctor::run(&args).await,
        Command::Completion { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(shell, &mut Cli::command(), "hatch", &mut std::io::stdout());
            Ok(())
        }
    }
}
