//! Fixtures for the daemon area's tests: sample domain objects, a temp data
//! dir with a store, and a real API server (inside a test network namespace,
//! on a Unix socket) with a real client.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use hatch::model::{now, random_id, Image, ImageProfile, NetworkIdentity, Template, Vm, VmState};

/// Where [`sample_image`]'s (tiny, unbootable) files live.
pub fn sample_image_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("hatch-sample-image");
    std::fs::create_dir_all(&dir).expect("sample image dir");
    for file in ["vmlinux", "initrd"] {
        if !dir.join(file).exists() {
            std::fs::write(dir.join(file), file.as_bytes()).expect("sample image file");
        }
    }
    dir
}

/// The defaults for `data_dir`, with image files allowed from
/// [`sample_image_dir`] and the shared test images.
pub fn test_config(data_dir: &std::path::Path) -> Config {
    let mut config = Config::with_data_dir(data_dir).expect("config");
    config.image_import_dirs = vec![data_dir.to_path_buf(), sample_image_dir(), super::images::shared_dir()];
    config
}

pub fn sample_image(name: &str) -> Image {
    let dir = sample_image_dir();
    Image {
        id: random_id("img", 10),
        name: name.to_string(),
        profile: ImageProfile::Registered,
        kernel_path: Some(dir.join("vmlinux")),
        bzimage_path: None,
        initrd_path: Some(dir.join("initrd")),
        rootfs_path: None,
        login_user: "root".into(),
        boot_args: String::new(),
        size_bytes: 1234,
        created_at: now(),
    }
}

pub fn sample_template(image_id: &str) -> Template {
    Template {
        id: random_id("tpl", 10),
        name: "small".into(),
        image_id: image_id.to_string(),
        vcpu_count: 1,
        mem_mib: 256,
        user_data: Some("#cloud-config\n".into()),
        ssh_authorized_keys: vec![
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeFakeFakeFakeFakeFakeFakeFakeFakeFakeFake x@y".into(),
        ],
        egress: None,
        lifetime: Default::default(),
        created_at: now(),
        owner_key_id: None,
        warm_pool_size: 0,
    }
}

/// A networked VM whose identity is derived from `n` (distinct for distinct `n`).
pub fn sample_vm(image_id: &str, n: u8) -> Vm {
    let id = random_id("vm", 6);
    Vm {
        agent: Default::default(),
        id: id.clone(),
        state: VmState::Running,
        image_id: image_id.to_string(),
        vcpu_count: 1,
        mem_mib: 256,
        limits: hatch::model::VmmLimits::for_vm(1, 256),
        enable_network: true,
        network: Some(NetworkIdentity {
            guest_ip: Ipv4Addr::new(192, 168, 241, 10 + n),
            guest_mac: format!("02:fc:00:00:00:{n:02x}"),
            tap_name: format!("fctap-{}", &id[..8]),
            ssh_port: 2200 + n as u16,
            egress: Default::default(),
        }),
        user_data: None,
        ssh_authorized_keys: vec![],
        hypervisor: "qemu".into(),
        pid: Some(4242),
        state_reason: None,
        ready_at: None,
        created_at: now(),
        updated_at: now(),
        last_activity_at: None,
        idle_status: None,
        restart_policy: hatch::model::RestartPolicy::Never,
        snapshot_id: None,
        lifetime: Default::default(),
        expires_at: None,
        owner_key_id: None,
        pool_template_id: None,
    }
}

/// A store in a fresh temporary directory (kept while the guard lives).
pub fn temp_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&Store::path_in(dir.path())).expect("open store");
    (dir, store)
}

/// Moves `vm` through `steps` in the store, each with its event, as
/// orchestration records them (for tests of the API's and store's views).
pub fn record_states(store: &Store, vm: &mut Vm, steps: &[(VmState, Option<&str>)]) {
    for (state, reason) in steps {
        let from = vm.state;
        vm.state = *state;
        assert!(store.update_vm_with_transition(vm, Some(from), *reason).unwrap());
    }
}

use std::sync::Arc;

use base64::Engine;
use hatch::api::{router, AppState};
use hatch::cli::http::{Client, Endpoint};
use hatch::config::Config;
use hatch::orch::Orchestrator;
use hatch::store::Store;
use serde_json::Value;

use super::netns::{NsRuntime, TestNetns};

/// A real API server over a fresh data directory, with its first-start admin
/// key. The orchestrator (bridge, firewall, dnsmasq) and the server run on a
/// runtime inside a network namespace of their own, so the host's namespace
/// is never touched; the API is served on a Unix socket, which the test
/// reaches from any namespace.
impl TestApi {
    /// After a test wrote a VM or route straight to the store, as
    /// orchestration would: the orchestrator's view reads it.
    /// The orchestrator behind the API (to serve its routes through a proxy).
    pub fn orch(&self) -> Arc<Orchestrator> {
        Arc::clone(self.orch.as_ref().expect("orchestrator lives as long as the TestApi"))
    }

    pub fn written(&self, vm_id: &str) {
        if let Some(orch) = &self.orch {
            orch.vm_written_elsewhere(vm_id);
        }
    }

    /// A VM in `state` whose guest agent never connected (an image without
    /// it), written as ready an hour ago so that requests do not wait for
    /// the agent (AGENT_WAIT is shortened by the time since ready_at). `n`
    /// tells apart the network identities of several in one test.
    pub fn vm_without_agent(&self, state: VmState, n: u8) -> String {
        let image = sample_image(&random_id("noagent", 4));
        self.store.insert_image(&image).unwrap();
        let mut vm = sample_vm(&image.id, n);
        vm.state = state;
        vm.ready_at = Some(now() - chrono::Duration::hours(1));
        self.store.insert_vm(&vm, None).unwrap();
        self.written(&vm.id);
        vm.id
    }
}

pub struct TestApi {
    pub dir: tempfile::TempDir,
    pub store: Store,
    pub socket: PathBuf,
    pub admin_key: String,
    server: Option<tokio::task::JoinHandle<()>>,
    orch: Option<Arc<Orchestrator>>,
    runtime: Option<NsRuntime>,
    netns: Option<TestNetns>,
}

impl Drop for TestApi {
    /// Server first, then the orchestrator's shutdown, then the runtime, and
    /// the namespace last (which kills whatever still runs in it).
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
        if let (Some(runtime), Some(orch)) = (&self.runtime, self.orch.take()) {
            // A panic here must not abort a test that is already unwinding.
            let stopped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                runtime.run(async move { orch.shutdown(std::time::Duration::from_secs(60)).await })
            }));
            if stopped.is_err() {
                eprintln!("TestApi: orchestrator shutdown panicked");
            }
        }
        drop(self.runtime.take());
        drop(self.netns.take());
    }
}

impl TestApi {
    pub async fn start() -> TestApi {
        Self::start_with(|_| {}).await
    }

    /// Like [`start`](Self::start), with the defaults' configuration changed by `adjust`.
    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> TestApi {
        let dir = tempfile::tempdir().expect("tempdir");
        // Tests register files they make in this directory, the sample
        // image's and the shared test images.
        let mut config = test_config(dir.path());
        adjust(&mut config);
        let config = Arc::new(config);
        let store = hatch::cli::serve::open_state(&config).expect("open state");
        let admin_key = std::fs::read_to_string(config.admin_key_path())
            .expect("admin.key")
            .trim()
            .to_string();
        let socket = dir.path().join("api.sock");
        let netns = TestNetns::new();
        let runtime = netns.runtime();
        let (orch, server) = {
            let (store, socket) = (store.clone(), socket.clone());
            runtime.run(async move {
                let orch = hatch::cli::serve::start_orchestrator(config.clone(), store.clone())
                    .await
                    .expect("orchestrator");
                let app = router(AppState::new(store, orch.clone(), config));
                let listener = tokio::net::UnixListener::bind(&socket).expect("bind the API socket");
                let server = tokio::spawn(async move {
                    axum::serve(listener, app).await.expect("serve");
                });
                (orch, server)
            })
        };
        TestApi {
            dir,
            store,
            socket,
            admin_key,
            server: Some(server),
            orch: Some(orch),
            runtime: Some(runtime),
            netns: Some(netns),
        }
    }

    /// The namespace the daemon's host networking lives in.
    pub fn netns(&self) -> &TestNetns {
        self.netns.as_ref().expect("namespace lives as long as the TestApi")
    }

    pub fn client(&self, key: Option<&str>) -> Client {
        Client {
            endpoint: Endpoint::Unix(self.socket.clone()),
            ca_cert: None,
            api_key: key.map(str::to_string),
        }
    }

    /// A request with the admin key; returns the status and the JSON body (Null when empty).
    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let method = hyper::Method::from_bytes(method.as_bytes()).unwrap();
        let reply = self
            .client(Some(&self.admin_key))
            .request(method, path, body.as_ref())
            .await
            .expect("request");
        (reply.status.as_u16(), reply_value(reply.status.as_u16(), &reply.body))
    }

    /// A request with `key`; returns the status and the JSON body (Null when empty).
    pub async fn call_as(&self, key: &str, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let method = hyper::Method::from_bytes(method.as_bytes()).unwrap();
        let reply = self
            .client(Some(key))
            .request(method, path, body.as_ref())
            .await
            .expect("request");
        (reply.status.as_u16(), reply_value(reply.status.as_u16(), &reply.body))
    }

    /// A request with a raw body and content type, with the admin key.
    pub async fn raw(&self, method: &str, path: &str, content_type: &str, body: Vec<u8>) -> (u16, Value) {
        let method = hyper::Method::from_bytes(method.as_bytes()).unwrap();
        let reply = self
            .client(Some(&self.admin_key))
            .send(method, path, Some((content_type, body.into())))
            .await
            .expect("request");
        (reply.status.as_u16(), reply_value(reply.status.as_u16(), &reply.body))
    }
}

/// A successful answer may be text (`GET /metrics`, console logs): a
/// string then; errors must be JSON.
fn reply_value(status: u16, body: &[u8]) -> Value {
    match serde_json::from_slice(body) {
        Ok(value) => value,
        Err(_) if status < 400 && !body.is_empty() => Value::String(String::from_utf8_lossy(body).into_owned()),
        Err(_) => json_or_null(body),
    }
}

/// Every error response must be JSON; a non-JSON body fails the test.
pub fn json_or_null(body: &[u8]) -> Value {
    if body.is_empty() {
        return Value::Null;
    }
    serde_json::from_slice(body).unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", String::from_utf8_lossy(body)))
}

/// Asserts an error body `{"error": {"code", "message", "field"}}` and returns (code, field).
pub fn error_parts(body: &Value) -> (String, Option<String>) {
    let error = &body["error"];
    assert!(error["message"].is_string(), "error without message: {body}");
    let code = error["code"]
        .as_str()
        .unwrap_or_else(|| panic!("error without code: {body}"))
        .to_string();
    (code, error["field"].as_str().map(str::to_string))
}

/// A well-formed OpenSSH ed25519 public key (random key material).
pub fn test_public_key() -> String {
    let mut blob = Vec::new();
    blob.extend_from_slice(&11u32.to_be_bytes());
    blob.extend_from_slice(b"ssh-ed25519");
    blob.extend_from_slice(&32u32.to_be_bytes());
    blob.extend((0..32).map(|_| rand::random::<u8>()));
    format!(
        "ssh-ed25519 {} test@hatch",
        base64::engine::general_purpose::STANDARD.encode(blob)
    )
}

/// Files that pass for kernels (x86_64 ELF and bzImage headers) and an initrd (a cpio archive).
pub fn fake_boot_files(dir: &std::path::Path) -> (PathBuf, PathBuf, PathBuf) {
    // An ELF64 little-endian x86_64 header with no program headers.
    let elf = dir.join("vmlinux");
    let mut bytes = vec![0u8; 4096];
    bytes[..6].copy_from_slice(b"\x7fELF\x02\x01");
    bytes[18..20].copy_from_slice(&62u16.to_le_bytes());
    bytes[32..40].copy_from_slice(&64u64.to_le_bytes());
    bytes[54..56].copy_from_slice(&56u16.to_le_bytes());
    std::fs::write(&elf, &bytes).unwrap();
    // The x86 boot sector flag and the setup header magic.
    let bz = dir.join("bzImage");
    let mut bytes = vec![0u8; 4096];
    bytes[0x1fe..0x200].copy_from_slice(&0xaa55u16.to_le_bytes());
    bytes[0x202..0x206].copy_from_slice(b"HdrS");
    std::fs::write(&bz, &bytes).unwrap();
    // A real (tiny) newc cpio archive, zero-padded to 2048 bytes as the
    // kernel allows.
    let initrd = dir.join("initrd.img");
    let mut cpio = hatch::image::CpioWriter::new(Vec::new());
    cpio.file("init", 0o755, b"#!/bin/sh\n").unwrap();
    let mut bytes = cpio.finish().unwrap();
    assert!(bytes.len() <= 2048);
    bytes.resize(2048, 0);
    std::fs::write(&initrd, &bytes).unwrap();
    (elf, bz, initrd)
}

/// The `hatch` binary with a clean HATCH_* environment plus `vars`, run
/// inside `netns` when given (`ip netns exec` execs it, so the child's pid
/// is hatch's).
pub fn hatch_command_in(netns: Option<&TestNetns>, args: &[&str], vars: &[(&str, &str)]) -> std::process::Command {
    const HATCH: &str = env!("CARGO_BIN_EXE_hatch");
    let mut command = match netns {
        Some(netns) => {
            let mut command = std::process::Command::new("ip");
            command.args(["netns", "exec", netns.name(), HATCH]);
            command
        }
        None => std::process::Command::new(HATCH),
    };
    command.args(args).stdin(std::process::Stdio::null());
    for (name, _) in std::env::vars() {
        if name.starts_with("HATCH_") {
            command.env_remove(name);
        }
    }
    command.envs(vars.iter().copied());
    command
}

/// `command` (program, arguments, environment) run on a pseudo-terminal
/// made by `script` (util-linux): `-q` no banner, `-e` the command's exit
/// status, `/dev/null` no typescript file. What the terminal showed, stdout
/// and stderr together, is `script`'s stdout. Arguments are joined with
/// spaces into `script`'s command line: test paths and words only.
pub fn on_terminal(command: &std::process::Command) -> std::process::Command {
    let line = std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|word| word.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    let mut script = std::process::Command::new("script");
    script
        .args(["-qec", &line, "/dev/null"])
        .stdin(std::process::Stdio::null());
    for (name, value) in command.get_envs() {
        match value {
            Some(value) => script.env(name, value),
            None => script.env_remove(name),
        };
    }
    script
}
