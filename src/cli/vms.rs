//! `hatch vm create|list|show|stop|start|delete|ssh|logs`; `fork`, `exec`,
//! `cp`, `ls` and `rm` are in `fork.rs`, `exec.rs` and `files.rs`.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Subcommand;
use hyper::Method;
use serde_json::{json, Map, Value};

use super::http::{segment, Client};
use super::lifetime::LifetimeArgs;
use super::output::{self, opt};
use super::progress::Progress;
use super::{CliError, ClientArgs};
use crate::model::{Image, UserData, Vm, VmState, USER_DATA_BASE64_FIELD, USER_DATA_FIELD};

#[derive(Debug, Subcommand)]
pub enum VmCommand {
    /// Create and boot a VM (or restore one from a snapshot: --snapshot).
    Create(CreateArgs),
    /// New VMs from a VM as it is now (memory, running processes, disk), each
    /// with its own id, IP, MAC, SSH port and hostname.
    Fork(super::fork::ForkArgs),
    /// List VMs, oldest first.
    List,
    /// Show one VM.
    Show { id: String },
    /// Stop a VM; it keeps its IP, MAC and SSH port.
    Stop { id: String },
    /// Start a stopped VM.
    Start { id: String },
    /// Delete a VM and release everything it held.
    Delete { id: String },
    /// SSH into a VM through its forwarded port (extra arguments go to ssh).
    Ssh {
        id: String,
        #[arg(last = true)]
        ssh_args: Vec<String>,
    },
    /// The VM's state changes, oldest first.
    Events { id: String },
    /// Give a VM, with its snapshots and routes, to another key (admin).
    Owner { id: String, key_id: String },
    /// Run a command in the guest through its agent; exits with its status.
    Exec(super::exec::ExecArgs),
    /// Copy a file into the guest (LOCAL ID:/path) or out of it (ID:/path LOCAL).
    Cp(super::files::CpArgs),
    /// List a directory in the guest: ID:/dir.
    Ls { target: String },
    /// Delete a file in the guest: ID:/path.
    Rm { target: String },
    /// Print the end of the VM's serial console.
    Logs {
        id: String,
        #[arg(long)]
        bytes: Option<usize>,
        /// Keep printing what the guest prints next, until interrupted.
        #[arg(short, long)]
        follow: bool,
    },
}

#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// Image id or name [default: the template's, HATCH_DEFAULT_IMAGE, or the newest].
    #[arg(long)]
    image: Option<String>,
    #[arg(long)]
    template: Option<String>,
    #[arg(long)]
    vcpu: Option<u32>,
    /// Memory in MiB.
    #[arg(long)]
    mem: Option<u32>,
    /// Create the VM without a network interface.
    #[arg(long)]
    no_network: bool,
    #[arg(long)]
    ip: Option<String>,
    #[arg(long)]
    mac: Option<String>,
    /// File with cloud-init user data (cloud-config, script, gzip, ...);
    /// sent as text when it is UTF-8, else base64-encoded.
    #[arg(long)]
    user_data: Option<PathBuf>,
    /// Public key file(s) to authorise [default: ~/.ssh/id_*.pub when present].
    #[arg(long = "ssh-key")]
    ssh_keys: Vec<PathBuf>,
    /// Do not add the default ~/.ssh keys.
    #[arg(long)]
    no_ssh_key: bool,
    /// Restore the new VM from this snapshot (any the key may read): its
    /// memory, processes and disk, with a fresh id, IP, MAC, SSH port and
    /// hostname. The guest is the snapshot's, so the options that shape a
    /// guest (--image, --template, --vcpu, --mem, --no-network, --ip, --mac,
    /// --user-data, --ssh-key) are refused with it; no default ~/.ssh key is sent.
    #[arg(long, value_name = "SNAPSHOT_ID")]
    snapshot: Option<String>,
    /// Wait until the guest accepts SSH connections, printing state changes.
    #[arg(long)]
    wait: bool,
    /// How long --wait waits, in seconds.
    #[arg(long, default_value_t = 120)]
    timeout: u64,
    #[command(flatten)]
    lifetime: LifetimeArgs,
}

pub async fn run(command: VmCommand, args: &ClientArgs) -> Result<(), CliError> {
    let client = args.client()?;
    match command {
        VmCommand::Create(create) => {
            let body = create_body(&create)?;
            let vm: Vm = client.call(Method::POST, "/vms", Some(&body)).await?;
            if !args.json {
                eprintln!("created {} ({})", vm.id, vm.state.as_str());
            }
            let vm = if create.wait {
                wait_ready(&client, vm, Duration::from_secs(create.timeout), args.json).await?
            } else {
                vm
            };
            output::show(args.json, &vm, print_vm);
        }
        VmCommand::Fork(fork) => return super::fork::run(&client, args, &fork).await,
        VmCommand::List => {
            let vms: Vec<Vm> = client.call(Method::GET, "/vms", None).await?;
            output::show(args.json, &vms, |vms| {
                let rows: Vec<Vec<String>> = vms
                    .iter()
                    .map(|vm| {
                        let net = vm.network.as_ref();
                        vec![
                            vm.id.clone(),
                            vm.state.as_str().to_string(),
                            vm.image_id.clone(),
                            vm.vcpu_count.to_string(),
                            vm.mem_mib.to_string(),
                            opt(&net.map(|n| n.guest_ip)),
                            opt(&net.map(|n| n.ssh_port)),
                            opt(&vm.owner_key_id),
                        ]
                    })
                    .collect();
                output::table(
                    &["ID", "STATE", "IMAGE", "VCPU", "MEM_MIB", "IP", "SSH_PORT", "OWNER"],
                    &rows,
                );
            });
        }
        VmCommand::Show { id } => {
            let vm: Vm = client
                .call(Method::GET, &format!("/vms/{}", segment(&id)), None)
                .await?;
            output::show(args.json, &vm, print_vm);
        }
        VmCommand::Stop { id } => action(&client, args, &id, "stop").await?,
        VmCommand::Start { id } => action(&client, args, &id, "start").await?,
        VmCommand::Delete { id } => {
            client
                .request(Method::DELETE, &format!("/vms/{}", segment(&id)), None)
                .await?
                .success()?;
            if !args.json {
                println!("deleted {id}");
            }
        }
        VmCommand::Owner { id, key_id } => {
            let vm: Value = client
                .call(
                    Method::POST,
                    &format!("/vms/{}/owner", segment(&id)),
                    Some(&serde_json::json!({ "key_id": key_id })),
                )
                .await?;
            output::show(args.json, &vm, |vm| {
                println!(
                    "{} now belongs to {}",
                    vm["id"].as_str().unwrap_or("-"),
                    vm["owner_key_id"].as_str().unwrap_or("-")
                );
            });
        }
        VmCommand::Events { id } => {
            let events: Vec<Value> = client
                .call(Method::GET, &format!("/vms/{}/events", segment(&id)), None)
                .await?;
            output::show(args.json, &events, |events| {
                let text = |e: &Value, key: &str| e[key].as_str().unwrap_or("-").to_string();
                let rows: Vec<Vec<String>> = events
                    .iter()
                    .map(|e| {
                        vec![
                            text(e, "at"),
                            text(e, "from_state"),
                            text(e, "to_state"),
                            text(e, "reason"),
                        ]
                    })
                    .collect();
                output::table(&["AT", "FROM", "TO", "REASON"], &rows);
            });
        }
        VmCommand::Ssh { id, ssh_args } => return ssh(&client, &id, &ssh_args).await,
        VmCommand::Exec(exec) => return super::exec::run(&client, &exec).await,
        VmCommand::Cp(cp) => return super::files::cp(&client, &cp).await,
        VmCommand::Ls { target } => return super::files::ls(&client, args, &target).await,
        VmCommand::Rm { target } => return super::files::rm(&client, &target).await,
        VmCommand::Logs { id, bytes, follow } => {
            let mut query: Vec<String> = bytes.map(|b| format!("bytes={b}")).into_iter().collect();
            if follow {
                query.push("follow=true".into());
            }
            let query = if query.is_empty() {
                String::new()
            } else {
                format!("?{}", query.join("&"))
            };
            let path = format!("/vms/{}/logs{query}", segment(&id));
            if follow {
                return follow_logs(&client, &path).await;
            }
            let reply = client.request(Method::GET, &path, None).await?.success()?;
            print!("{}", String::from_utf8_lossy(&reply.body));
        }
    }
    Ok(())
}

/// Prints the console as the daemon streams it, until it ends.
async fn follow_logs(client: &Client, path: &str) -> Result<(), CliError> {
    use http_body_util::BodyExt;
    use std::io::Write;
    let mut response = client.open_stream(path).await?;
    let mut stdout = std::io::stdout();
    while let Some(frame) = response.body_mut().frame().await {
        let frame = frame.map_err(|e| CliError::Http(e.to_string()))?;
        if let Some(data) = frame.data_ref() {
            stdout
                .write_all(data)
                .map_err(|e| CliError::Http(format!("writing: {e}")))?;
            stdout.flush().map_err(|e| CliError::Http(format!("writing: {e}")))?;
        }
    }
    Ok(())
}

async fn action(client: &Client, args: &ClientArgs, id: &str, verb: &str) -> Result<(), CliError> {
    let vm: Vm = client
        .call(Method::POST, &format!("/vms/{}/{verb}", segment(id)), None)
        .await?;
    output::show(args.json, &vm, |vm| println!("{} {}", vm.id, vm.state.as_str()));
    Ok(())
}

fn read_file(path: &PathBuf, what: &str) -> Result<String, CliError> {
    std::fs::read_to_string(path).map_err(|e| CliError::Usage(format!("cannot read {what} {}: {e}", path.display())))
}

/// A user-data file as a request field: `user_data` when it is UTF-8 text,
/// else `user_data_base64` (e.g. gzip-compressed cloud-config).
pub fn user_data_field(path: &Path) -> Result<(&'static str, Value), CliError> {
    let bytes =
        std::fs::read(path).map_err(|e| CliError::Usage(format!("cannot read user data {}: {e}", path.display())))?;
    let data = UserData::from(bytes);
    Ok(match data.as_text() {
        Some(text) => (USER_DATA_FIELD, json!(text)),
        None => (USER_DATA_BASE64_FIELD, json!(data.to_base64())),
    })
}

/// The user's own public keys, as `ssh-keygen` names them.
fn default_ssh_keys() -> Vec<PathBuf> {
    let Some(home) = std::env::var_os("HOME") else {
        return Vec::new();
    };
    ["id_ed25519.pub", "id_ecdsa.pub", "id_rsa.pub"]
        .iter()
        .map(|name| PathBuf::from(&home).join(".ssh").join(name))
        .filter(|path| path.is_file())
        .collect()
}

/// Reads public key files; one key per non-empty, non-comment line.
pub fn read_ssh_keys(paths: &[PathBuf]) -> Result<Vec<String>, CliError> {
    let mut keys = Vec::new();
    for path in paths {
        let text = read_file(path, "SSH key")?;
        keys.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_string),
        );
    }
    Ok(keys)
}

fn create_body(args: &CreateArgs) -> Result<Value, CliError> {
    let mut body = Map::new();
    let mut set = |key: &str, value: Value| {
        body.insert(key.to_string(), value);
    };
    if let Some(snapshot) = &args.snapshot {
        set("snapshot_id", json!(snapshot));
    }
    if let Some(image) = &args.image {
        set("image_id", json!(image));
    }
    if let Some(template) = &args.template {
        set("template_id", json!(template));
    }
    if let Some(vcpu) = args.vcpu {
        set("vcpu_count", json!(vcpu));
    }
    if let Some(mem) = args.mem {
        set("mem_mib", json!(mem));
    }
    if args.no_network {
        set("enable_network", json!(false));
    }
    if let Some(ip) = &args.ip {
        set("guest_ip", json!(ip));
    }
    if let Some(mac) = &args.mac {
        set("guest_mac", json!(mac));
    }
    if let Some(path) = &args.user_data {
        let (field, value) = user_data_field(path)?;
        set(field, value);
    }
    let key_files = if !args.ssh_keys.is_empty() {
        args.ssh_keys.clone()
    } else if args.no_ssh_key || args.snapshot.is_some() {
        // A restored guest keeps the snapshot's keys: adding the user's own
        // would only be refused.
        Vec::new()
    } else {
        default_ssh_keys()
    };
    let keys = read_ssh_keys(&key_files)?;
    if !keys.is_empty() {
        set("ssh_authorized_keys", json!(keys));
    }
    args.lifetime.add_to(&mut body);
    Ok(Value::Object(body))
}

/// Polls the VM, showing each state change (a spinner on a terminal),
/// until the guest is ready.
async fn wait_ready(client: &Client, mut vm: Vm, timeout: Duration, quiet: bool) -> Result<Vm, CliError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last: Option<VmState> = None;
    let progress = (!quiet).then(|| Progress::on_stderr(""));
    loop {
        if let Some(progress) = progress.as_ref().filter(|_| last != Some(vm.state)) {
            progress.step(&format!("{}: {}", vm.id, vm.state.as_str()));
        }
        last = Some(vm.state);
        if vm.ready_at.is_some() {
            if let Some(progress) = &progress {
                progress.note(&format!("{}: ready (SSH accepts connections)", vm.id));
            }
            return Ok(vm);
        }
        if matches!(vm.state, VmState::Error | VmState::Stopped) {
            let reason = vm.state_reason.clone().unwrap_or_default();
            return Err(CliError::Local(format!(
                "{} is {} before becoming ready: {reason}",
                vm.id,
                vm.state.as_str()
            )));
        }
        if !vm.enable_network {
            return Err(CliError::Usage(
                "--wait needs networking (readiness is an SSH connection)".into(),
            ));
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(CliError::Local(format!(
                "{} did not become ready within {}s (state {})",
                vm.id,
                timeout.as_secs(),
                vm.state.as_str()
            )));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        vm = client
            .call(Method::GET, &format!("/vms/{}", segment(&vm.id)), None)
            .await?;
    }
}

pub(super) fn print_vm(vm: &Vm) {
    let net = vm.network.as_ref();
    output::fields(&[
        ("id", vm.id.clone()),
        ("state", vm.state.as_str().to_string()),
        ("reason", opt(&vm.state_reason)),
        ("image", vm.image_id.clone()),
        ("vcpu_count", vm.vcpu_count.to_string()),
        ("mem_mib", vm.mem_mib.to_string()),
        ("hypervisor", vm.hypervisor.clone()),
        ("network", vm.enable_network.to_string()),
        ("guest_ip", opt(&net.map(|n| n.guest_ip))),
        ("guest_mac", opt(&net.map(|n| n.guest_mac.clone()))),
        ("tap_name", opt(&net.map(|n| n.tap_name.clone()))),
        ("ssh_port", opt(&net.map(|n| n.ssh_port))),
        ("ready_at", opt(&vm.ready_at)),
        ("agent", agent_text(&vm.agent)),
        ("created_at", vm.created_at.to_string()),
        ("expires_at", opt(&vm.expires_at)),
        ("on_idle", opt(&vm.lifetime.on_idle.map(|a| a.as_str()))),
        (
            "idle_timeout_seconds",
            opt(&vm.lifetime.idle_timeout_seconds.map(|s| s.get())),
        ),
        ("idle_status", opt(&vm.idle_status)),
    ]);
}

/// `connected (version)` or `not connected` (exec and cp need it).
fn agent_text(agent: &crate::model::AgentStatus) -> String {
    match (&agent.version, agent.connected) {
        (Some(version), true) => format!("connected ({version})"),
        (None, true) => "connected".into(),
        (_, false) => "not connected".into(),
    }
}

/// Replaces this process with `ssh -p <port> <user>@<host>`.
async fn ssh(client: &Client, id: &str, extra: &[String]) -> Result<(), CliError> {
    let vm: Vm = client.call(Method::GET, &format!("/vms/{}", segment(id)), None).await?;
    let net = vm
        .network
        .as_ref()
        .ok_or_else(|| CliError::Usage(format!("{id} has no network")))?;
    let image: Image = client
        .call(Method::GET, &format!("/images/{}", segment(&vm.image_id)), None)
        .await?;
    let mut command = std::process::Command::new("ssh");
    command
        .arg("-p")
        .arg(net.ssh_port.to_string())
        // Every VM has fresh host keys and ports are reused: do not pin them.
        .args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
        ])
        .arg(format!("{}@{}", image.login_user, client.endpoint.ssh_host()))
        .args(extra);
    let error = command.exec();
    Err(CliError::Local(format!("cannot run ssh: {error}")))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command, Group};

    fn body_of(args: &[&str]) -> Value {
        let cli = Cli::try_parse_from(["hatch", "vm", "create"].iter().chain(args)).unwrap();
        match cli.command {
            Command::Vm(Group {
                command: VmCommand::Create(create),
                ..
            }) => create_body(&create).unwrap(),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn snapshot_becomes_snapshot_id_without_default_ssh_keys() {
        assert_eq!(
            body_of(&["--snapshot", "snap-1", "--ttl", "1h", "--on-idle", "stop"]),
            json!({ "snapshot_id": "snap-1", "ttl_seconds": 3600, "on_idle": "stop" })
        );
        // What the daemon refuses with a snapshot is sent as given, for it
        // to name the field.
        assert_eq!(
            body_of(&["--snapshot", "snap-1", "--image", "minimal", "--no-ssh-key"]),
            json!({ "snapshot_id": "snap-1", "image_id": "minimal" })
        );
    }
}
