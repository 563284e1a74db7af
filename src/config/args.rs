//! `hatch serve` flags, each backed by its HATCH_* variable. Values stay
//! text here and are validated in one place (`Config::from_args`), so every
//! error names the variable the user sets.

use clap::{Args, Parser};

use super::ConfigError;

mod defaults {
    pub const DATA_DIR: &str = "/var/lib/hatch";
    pub const HTTP_ADDR: &str = "127.0.0.1:8080";
    pub const BRIDGE_NAME: &str = "fcbridge";
    pub const BRIDGE_CIDR: &str = "192.168.241.1/24";
    pub const SSH_ALLOWED_CIDR: &str = "0.0.0.0/0";
    pub const VM_TO_VM: &str = "deny";
    pub const EGRESS_DENY_CIDRS: &str = "169.254.0.0/16";
    pub const SSH_PORT_MIN: &str = "2200";
    pub const SSH_PORT_MAX: &str = "2299";
    pub const HYPERVISOR: &str = "auto";
    pub const QEMU_ACCEL: &str = "auto";
    pub const DEFAULT_VCPU: &str = "1";
    pub const DEFAULT_MEM_MIB: &str = "256";
    pub const PROXY_ADDR: &str = "127.0.0.1:9090";
    pub const PROXY_BASE_DOMAIN: &str = "localhost";
    pub const PROXY_HSTS: &str = "off";
    pub const PROXY_WAKE_TIMEOUT: &str = "60s";
    pub const PROXY_UPSTREAM_TIMEOUT: &str = "60s";
    pub const IDLE_CHECK_INTERVAL: &str = "5m";
    pub const IDLE_TIMEOUT: &str = "45m";
    pub const S3_REGION: &str = "us-east-1";
    pub const SNAPSHOT_KEEP: &str = "5";
    /// `snapshot::Compression::DEFAULT_LEVEL` (a test checks they agree).
    pub const SNAPSHOT_ZSTD_LEVEL: &str = "3";
    pub const RECONCILE_INTERVAL: &str = "15s";
    pub const SHUTDOWN_TIMEOUT: &str = "60s";
    pub const CONSOLE_LOG_MAX_BYTES: &str = "8M";
    pub const MEM_OVERCOMMIT: &str = "1.0";
    pub const SNAPSHOT_SWEEP_MIN_AGE: &str = "1h";
    pub const RATE_LIMIT: &str = "50/s";
    pub const RATE_BURST: &str = "200";
    pub const METRICS_PUBLIC: &str = "false";
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// State directory: database, admin.key, images, VM disks, snapshots.
    #[arg(long, env = "HATCH_DATA_DIR", default_value = defaults::DATA_DIR)]
    pub data_dir: String,
    /// API listen address: host:port, or unix:/path/to.sock.
    #[arg(long, env = "HATCH_HTTP_ADDR", default_value = defaults::HTTP_ADDR)]
    pub http_addr: String,
    /// PEM certificate chain (server certificate first) for HTTPS on the API;
    /// set together with HATCH_TLS_KEY [default: unset, plain HTTP].
    #[arg(long, env = "HATCH_TLS_CERT")]
    pub tls_cert: Option<String>,
    /// PEM private key of HATCH_TLS_CERT [default: unset].
    #[arg(long, env = "HATCH_TLS_KEY")]
    pub tls_key: Option<String>,
    /// Linux bridge that connects the VMs' TAP devices.
    #[arg(long, env = "HATCH_BRIDGE_NAME", default_value = defaults::BRIDGE_NAME)]
    pub bridge_name: String,
    /// Gateway address and prefix of the VM network.
    #[arg(long, env = "HATCH_BRIDGE_CIDR", default_value = defaults::BRIDGE_CIDR)]
    pub bridge_cidr: String,
    /// Source network allowed to reach guests through the SSH port forwards.
    #[arg(long, env = "HATCH_SSH_ALLOWED_CIDR", default_value = defaults::SSH_ALLOWED_CIDR)]
    pub ssh_allowed_cidr: String,
    /// Whether guests may exchange traffic with each other: deny or allow.
    #[arg(long, env = "HATCH_VM_TO_VM", default_value = defaults::VM_TO_VM)]
    pub vm_to_vm: String,
    /// Comma-separated networks no guest may reach (empty: none).
    #[arg(long, env = "HATCH_EGRESS_DENY_CIDRS", default_value = defaults::EGRESS_DENY_CIDRS)]
    pub egress_deny_cidrs: String,
    /// First host port used for SSH forwards.
    #[arg(long, env = "HATCH_SSH_PORT_MIN", default_value = defaults::SSH_PORT_MIN)]
    pub ssh_port_min: String,
    /// Last host port used for SSH forwards.
    #[arg(long, env = "HATCH_SSH_PORT_MAX", default_value = defaults::SSH_PORT_MAX)]
    pub ssh_port_max: String,
    /// auto (Firecracker when available with hardware KVM, else QEMU), firecracker or qemu.
    #[arg(long, env = "HATCH_HYPERVISOR", default_value = defaults::HYPERVISOR)]
    pub hypervisor: String,
    /// QEMU acceleration: auto, kvm or tcg.
    #[arg(long, env = "HATCH_QEMU_ACCEL", default_value = defaults::QEMU_ACCEL)]
    pub qemu_accel: String,
    /// Firecracker binary [default: `firecracker` on PATH].
    #[arg(long, env = "HATCH_FIRECRACKER_BIN")]
    pub firecracker_bin: Option<String>,
    /// QEMU binary [default: `qemu-system-x86_64` on PATH].
    #[arg(long, env = "HATCH_QEMU_BIN")]
    pub qemu_bin: Option<String>,
    /// Unprivileged user VMMs run as (created at start when missing) [default: hatch-vmm].
    #[arg(long, env = "HATCH_VMM_USER")]
    pub vmm_user: Option<String>,
    /// Firecracker's jailer [default: `jailer` next to Firecracker or on PATH; none: Firecracker runs unjailed].
    #[arg(long, env = "HATCH_JAILER_BIN")]
    pub jailer_bin: Option<String>,
    /// Image (id or name) for VMs that name no image or template [default: the newest image].
    #[arg(long, env = "HATCH_DEFAULT_IMAGE")]
    pub default_image: Option<String>,
    /// vCPUs for VMs that do not say.
    #[arg(long, env = "HATCH_DEFAULT_VCPU", default_value = defaults::DEFAULT_VCPU)]
    pub default_vcpu: String,
    /// Memory (MiB) for VMs that do not say.
    #[arg(long, env = "HATCH_DEFAULT_MEM_MIB", default_value = defaults::DEFAULT_MEM_MIB)]
    pub default_mem_mib: String,
    /// Subdomain reverse proxy listen address.
    #[arg(long, env = "HATCH_PROXY_ADDR", default_value = defaults::PROXY_ADDR)]
    pub proxy_addr: String,
    /// Routes answer on <subdomain>.<this domain>.
    #[arg(long, env = "HATCH_PROXY_BASE_DOMAIN", default_value = defaults::PROXY_BASE_DOMAIN)]
    pub proxy_base_domain: String,
    /// PEM certificate chain for HTTPS on the proxy, normally a wildcard
    /// certificate for *.<base domain>; set together with HATCH_PROXY_TLS_KEY
    /// [default: unset, plain HTTP].
    #[arg(long, env = "HATCH_PROXY_TLS_CERT")]
    pub proxy_tls_cert: Option<String>,
    /// PEM private key of HATCH_PROXY_TLS_CERT [default: unset].
    #[arg(long, env = "HATCH_PROXY_TLS_KEY")]
    pub proxy_tls_key: Option<String>,
    /// Strict-Transport-Security on the proxy's HTTPS answers: off, true (one
    /// year) or a max-age (e.g. 30d, 3600; 0 tells browsers to forget it).
    /// Needs HATCH_PROXY_TLS_CERT.
    #[arg(long, env = "HATCH_PROXY_HSTS", default_value = defaults::PROXY_HSTS)]
    pub proxy_hsts: String,
    /// How long a request waits for a sleeping VM to wake (90s, 5m, 1h).
    #[arg(long, env = "HATCH_PROXY_WAKE_TIMEOUT", default_value = defaults::PROXY_WAKE_TIMEOUT)]
    pub proxy_wake_timeout: String,
    /// How long the proxy waits for a VM's service to start answering a
    /// request it was sent (then 504): 90s, 5m, 1h.
    #[arg(long, env = "HATCH_PROXY_UPSTREAM_TIMEOUT", default_value = defaults::PROXY_UPSTREAM_TIMEOUT)]
    pub proxy_upstream_timeout: String,
    /// How often idle VMs are looked for.
    #[arg(long, env = "HATCH_IDLE_CHECK_INTERVAL", default_value = defaults::IDLE_CHECK_INTERVAL)]
    pub idle_check_interval: String,
    /// A routed VM without traffic (and without SSH sessions) this long is snapshotted.
    #[arg(long, env = "HATCH_IDLE_TIMEOUT", default_value = defaults::IDLE_TIMEOUT)]
    pub idle_timeout: String,
    /// Image build cache [default: $HATCH_DATA_DIR/cache].
    #[arg(long, env = "HATCH_IMAGE_CACHE_DIR")]
    pub image_cache_dir: Option<String>,
    /// Debian mirror URL for image builds [default: the host's apt sources].
    #[arg(long, env = "HATCH_DEBIAN_MIRROR")]
    pub debian_mirror: Option<String>,
    /// Static hatch-agent binary that built images carry
    /// [default: hatch-agent beside the hatch executable].
    #[arg(long, env = "HATCH_AGENT_BIN")]
    pub agent_bin: Option<String>,
    /// S3-compatible endpoint URL for snapshots [default: unset, AWS].
    #[arg(long, env = "HATCH_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    /// Bucket for snapshots; when unset, snapshots stay under the data dir [default: unset].
    #[arg(long, env = "HATCH_S3_BUCKET")]
    pub s3_bucket: Option<String>,
    /// S3 region.
    #[arg(long, env = "HATCH_S3_REGION", default_value = defaults::S3_REGION)]
    pub s3_region: String,
    /// S3 access key id [default: unset].
    #[arg(long, env = "HATCH_S3_ACCESS_KEY", hide_env_values = true)]
    pub s3_access_key: Option<String>,
    /// S3 secret key (never printed) [default: unset].
    #[arg(long, env = "HATCH_S3_SECRET_KEY", hide_env_values = true)]
    pub s3_secret_key: Option<String>,
    /// Key prefix of this host's artefacts in the bucket, so hosts can share it
    /// [default: the host id kept in $HATCH_DATA_DIR/host-id].
    #[arg(long, env = "HATCH_S3_PREFIX")]
    pub s3_prefix: Option<String>,
    /// Snapshots kept per VM; older ones are deleted.
    #[arg(long, env = "HATCH_SNAPSHOT_KEEP", default_value = defaults::SNAPSHOT_KEEP)]
    pub snapshot_keep: String,
    /// zstd level (1-19) of stored snapshot artefacts, compressed in the
    /// background on every CPU: higher is smaller and slower.
    #[arg(long, env = "HATCH_SNAPSHOT_ZSTD_LEVEL", default_value = defaults::SNAPSHOT_ZSTD_LEVEL)]
    pub snapshot_zstd_level: String,
    /// How often the host is compared with the database and drift repaired.
    #[arg(long, env = "HATCH_RECONCILE_INTERVAL", default_value = defaults::RECONCILE_INTERVAL)]
    pub reconcile_interval: String,
    /// How long a stop signal waits for operations in flight (VMs keep running).
    #[arg(long, env = "HATCH_SHUTDOWN_TIMEOUT", default_value = defaults::SHUTDOWN_TIMEOUT)]
    pub shutdown_timeout: String,
    /// Most bytes of a VM's serial console kept on disk (the newest); 8M, 512K or bytes.
    #[arg(long, env = "HATCH_CONSOLE_LOG_MAX_BYTES", default_value = defaults::CONSOLE_LOG_MAX_BYTES)]
    pub console_log_max_bytes: String,
    /// Guest memory VMs may hold, as a multiple of the host's memory (1.0: no overcommit).
    #[arg(long, env = "HATCH_MEM_OVERCOMMIT", default_value = defaults::MEM_OVERCOMMIT)]
    pub mem_overcommit: String,
    /// Directories image files may be registered from, `:`-separated
    /// [default: $HATCH_DATA_DIR/images:$HATCH_DATA_DIR/import].
    #[arg(long, env = "HATCH_IMAGE_IMPORT_DIRS")]
    pub image_import_dirs: Option<String>,
    /// Mutating API requests allowed per key: N/s, N/m or N/h, or "off".
    #[arg(long, env = "HATCH_RATE_LIMIT", default_value = defaults::RATE_LIMIT)]
    pub rate_limit: String,
    /// How many mutating requests a key may make at once before the rate applies.
    #[arg(long, env = "HATCH_RATE_BURST", default_value = defaults::RATE_BURST)]
    pub rate_burst: String,
    /// `true`: GET /metrics answers without a key (for a scraper on a
    /// trusted network); `false`: admin keys only.
    #[arg(long, env = "HATCH_METRICS_PUBLIC", default_value = defaults::METRICS_PUBLIC)]
    pub metrics_public: String,
    /// Hidden, for tests: how old an artefact no snapshot owns must be before
    /// the start-up sweep removes it.
    #[arg(long, env = "HATCH_SNAPSHOT_SWEEP_MIN_AGE", default_value = defaults::SNAPSHOT_SWEEP_MIN_AGE, hide = true)]
    pub snapshot_sweep_min_age: String,
}

/// Parses only the environment (no command line).
#[derive(Parser)]
struct EnvOnly {
    #[command(flatten)]
    args: ServeArgs,
}

impl ServeArgs {
    /// The values from HATCH_* variables, defaults where unset.
    pub fn from_env() -> Result<ServeArgs, ConfigError> {
        EnvOnly::try_parse_from(["hatch"])
            .map(|parsed| parsed.args)
            .map_err(|e| ConfigError::new("HATCH_*", e.to_string()))
    }

    /// The built-in defaults, ignoring the environment.
    pub fn defaults() -> ServeArgs {
        use defaults::*;
        ServeArgs {
            data_dir: DATA_DIR.into(),
            http_addr: HTTP_ADDR.into(),
            tls_cert: None,
            tls_key: None,
            bridge_name: BRIDGE_NAME.into(),
            bridge_cidr: BRIDGE_CIDR.into(),
            ssh_allowed_cidr: SSH_ALLOWED_CIDR.into(),
            vm_to_vm: VM_TO_VM.into(),
            egress_deny_cidrs: EGRESS_DENY_CIDRS.into(),
            ssh_port_min: SSH_PORT_MIN.into(),
            ssh_port_max: SSH_PORT_MAX.into(),
            hypervisor: HYPERVISOR.into(),
            qemu_accel: QEMU_ACCEL.into(),
            firecracker_bin: None,
            qemu_bin: None,
            vmm_user: None,
            jailer_bin: None,
            default_image: None,
            default_vcpu: DEFAULT_VCPU.into(),
            default_mem_mib: DEFAULT_MEM_MIB.into(),
            proxy_addr: PROXY_ADDR.into(),
            proxy_base_domain: PROXY_BASE_DOMAIN.into(),
            proxy_tls_cert: None,
            proxy_tls_key: None,
            proxy_hsts: PROXY_HSTS.into(),
            proxy_wake_timeout: PROXY_WAKE_TIMEOUT.into(),
            proxy_upstream_timeout: PROXY_UPSTREAM_TIMEOUT.into(),
            idle_check_interval: IDLE_CHECK_INTERVAL.into(),
            idle_timeout: IDLE_TIMEOUT.into(),
            image_cache_dir: None,
            debian_mirror: None,
            agent_bin: None,
            s3_endpoint: None,
            s3_bucket: None,
            s3_region: S3_REGION.into(),
            s3_access_key: None,
            s3_secret_key: None,
            s3_prefix: None,
            snapshot_keep: SNAPSHOT_KEEP.into(),
            snapshot_zstd_level: SNAPSHOT_ZSTD_LEVEL.into(),
            reconcile_interval: RECONCILE_INTERVAL.into(),
            shutdown_timeout: SHUTDOWN_TIMEOUT.into(),
            console_log_max_bytes: CONSOLE_LOG_MAX_BYTES.into(),
            mem_overcommit: MEM_OVERCOMMIT.into(),
            image_import_dirs: None,
            snapshot_sweep_min_age: SNAPSHOT_SWEEP_MIN_AGE.into(),
            rate_limit: RATE_LIMIT.into(),
            rate_burst: RATE_BURST.into(),
            metrics_public: METRICS_PUBLIC.into(),
        }
    }
}
