//! Daemon configuration from `HATCH_*` environment variables and the matching
//! `hatch serve` flags (a flag wins over its variable). Every value is
//! validated here, so an invalid one stops start-up with a message naming
//! the variable instead of failing later.

mod args;
pub mod values;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use args::ServeArgs;
pub use values::ListenAddr;

use crate::net::NetConfig;
use crate::tls::TlsFiles;
use crate::vmm::select::{HypervisorPreference, HypervisorSettings, QemuAccel};
use values::{absolute_path, dns_name, duration, non_empty, number, socket_addr};

/// A configuration value that was rejected; names the variable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{variable}: {message}")]
pub struct ConfigError {
    pub variable: &'static str,
    pub message: String,
}

impl ConfigError {
    pub fn new(variable: &'static str, message: impl Into<String>) -> Self {
        ConfigError {
            variable,
            message: message.into(),
        }
    }

    /// For `map_err`: attaches the variable name to a value parser's message.
    pub fn on(variable: &'static str) -> impl Fn(String) -> ConfigError {
        move |message| ConfigError { variable, message }
    }
}

/// A value that must never be printed (logs, Debug output, --help).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// S3-compatible snapshot storage; present when HATCH_S3_BUCKET is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Config {
    pub endpoint: Option<String>,
    pub bucket: String,
    pub region: String,
    pub access_key: Option<String>,
    pub secret_key: Option<Secret>,
    /// Key prefix of this host's artefacts (no trailing `/`); `None`: the
    /// host id kept in the data directory (see `crate::snapshot::host_id`).
    pub prefix: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub data_dir: PathBuf,
    pub http_addr: ListenAddr,
    /// HTTPS on the API (HATCH_TLS_CERT, HATCH_TLS_KEY); files are read at start-up.
    pub tls: Option<TlsFiles>,
    pub net: NetConfig,
    pub hypervisor: HypervisorSettings,
    /// Image id or name used when a VM names neither image nor template;
    /// `None`: the newest registered image.
    pub default_image: Option<String>,
    pub default_vcpu_count: u32,
    pub default_mem_mib: u32,
    pub proxy_addr: SocketAddr,
    pub proxy_base_domain: String,
    /// HTTPS on the proxy (HATCH_PROXY_TLS_CERT, HATCH_PROXY_TLS_KEY).
    pub proxy_tls: Option<TlsFiles>,
    /// HSTS max-age the proxy sends over HTTPS (HATCH_PROXY_HSTS); `None`: no header.
    pub proxy_hsts: Option<Duration>,
    pub proxy_wake_timeout: Duration,
    /// How long a proxied request waits for the guest's answer to begin
    /// (HATCH_PROXY_UPSTREAM_TIMEOUT).
    pub proxy_upstream_timeout: Duration,
    pub idle_check_interval: Duration,
    pub idle_timeout: Duration,
    pub image_cache_dir: PathBuf,
    /// `None`: the mirror from the host's apt configuration.
    pub debian_mirror: Option<String>,
    /// The hatch-agent image builds install (HATCH_AGENT_BIN); `None`: the
    /// one beside the running executable (see `image::GuestAgent`).
    pub agent_bin: Option<PathBuf>,
    pub s3: Option<S3Config>,
    /// Snapshots kept per VM (older ones are deleted).
    pub snapshot_retention: u32,
    /// zstd level of stored artefacts (HATCH_SNAPSHOT_ZSTD_LEVEL).
    pub snapshot_zstd_level: i32,
    /// Period of the reconciler that repairs drift between host and database.
    pub reconcile_interval: Duration,
    /// How long shutdown waits for operations in flight.
    pub shutdown_timeout: Duration,
    /// Most bytes of a VM's serial console kept on disk.
    pub console_log_max_bytes: u64,
    /// Where image files may be registered from (see `image::ImportDirs`).
    pub image_import_dirs: Vec<PathBuf>,
    /// Guest memory VMs may hold, in percent of the host's memory
    /// (HATCH_MEM_OVERCOMMIT 1.5 is 150).
    pub mem_overcommit_percent: u32,
    /// Artefacts no snapshot record owns are swept at start-up once this old
    /// (an hour; a hidden setting, for tests): another daemon on the same
    /// prefix, or this one just before a crash, may be uploading a snapshot
    /// it has not recorded yet.
    pub snapshot_sweep_min_age: Duration,
    /// Per-key limit on mutating API requests; `None`: off.
    pub rate_limit: Option<RateLimit>,
    /// `GET /metrics` answers without a key (HATCH_METRICS_PUBLIC).
    pub metrics_public: bool,
}

/// A token bucket: `burst` requests at once, refilled at `per_second`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: u32,
}

// Rates are finite and positive, so equality is total.
impl Eq for RateLimit {}

/// `HATCH_RATE_LIMIT` (`20/s`, `600/m`, `3600/h` or `off`) and `HATCH_RATE_BURST`.
fn rate_limit(args: &ServeArgs) -> Result<Option<RateLimit>, ConfigError> {
    let text = args.rate_limit.trim();
    if text.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    let invalid = |why: &str| {
        ConfigError::new(
            "HATCH_RATE_LIMIT",
            format!("{text:?}: {why} (expected e.g. 20/s, 600/m, 3600/h, or off)"),
        )
    };
    let (count, unit) = text.split_once('/').ok_or_else(|| invalid("no unit"))?;
    let count: u32 = number(count, 1, 1_000_000).map_err(|e| invalid(&e))?;
    let seconds = match unit.trim() {
        "s" | "sec" | "second" => 1.0,
        "m" | "min" | "minute" => 60.0,
        "h" | "hour" => 3600.0,
        other => return Err(invalid(&format!("unknown unit {other:?}"))),
    };
    let burst = number(&args.rate_burst, 1, 1_000_000).map_err(ConfigError::on("HATCH_RATE_BURST"))?;
    Ok(Some(RateLimit {
        per_second: f64::from(count) / seconds,
        burst,
    }))
}

/// Upper bound for HATCH_DEFAULT_VCPU, the same as the API's limit.
pub const MAX_VCPU_COUNT: u32 = 32;
pub const MIN_MEM_MIB: u32 = 128;
/// Bounds of HATCH_CONSOLE_LOG_MAX_BYTES: room for a boot's output, and
/// no more than a guest should be able to make the host keep.
const MIN_CONSOLE_LOG_BYTES: u64 = 64 * 1024;
const MAX_CONSOLE_LOG_BYTES: u64 = 1024 * 1024 * 1024;

impl Config {
    /// From the process environment only (no flags), as the CLI's offline
    /// commands and tools need it.
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_args(&ServeArgs::from_env()?)
    }

    /// The defaults with another data directory (tests and tools), ignoring the environment.
    pub fn with_data_dir(data_dir: &std::path::Path) -> Result<Config, ConfigError> {
        let mut args = ServeArgs::defaults();
        args.data_dir = data_dir.to_string_lossy().into_owned();
        Config::from_args(&args)
    }

    pub fn from_args(args: &ServeArgs) -> Result<Config, ConfigError> {
        let data_dir = absolute_path(&args.data_dir).map_err(ConfigError::on("HATCH_DATA_DIR"))?;
        // The networking module owns these rules; its errors name the variable.
        let net = crate::net::settings::config_from_values(
            &args.bridge_name,
            &args.bridge_cidr,
            &args.ssh_allowed_cidr,
            &args.ssh_port_min,
            &args.ssh_port_max,
            data_dir.join("dhcp"),
        )
        .and_then(|net| crate::net::settings::with_isolation(net, &args.vm_to_vm, &args.egress_deny_cidrs))
        .map_err(|error| match error {
            crate::net::NetError::Invalid { field, message } => ConfigError::new(field, message),
            other => ConfigError::new("HATCH_BRIDGE_CIDR", other.to_string()),
        })?;
        let image_cache_dir = match non_empty(&args.image_cache_dir) {
            Some(dir) => absolute_path(dir).map_err(ConfigError::on("HATCH_IMAGE_CACHE_DIR"))?,
            None => data_dir.join("cache"),
        };
        let http_addr = values::listen_addr(&args.http_addr).map_err(ConfigError::on("HATCH_HTTP_ADDR"))?;
        let tls = tls_files(&args.tls_cert, &args.tls_key, crate::tls::API_TLS)?;
        if let (Some(_), ListenAddr::Unix(_)) = (&tls, &http_addr) {
            return Err(ConfigError::new(
                "HATCH_TLS_CERT",
                "HTTPS needs a TCP HATCH_HTTP_ADDR (host:port); a unix socket is served as plain HTTP",
            ));
        }
        let proxy_tls = tls_files(&args.proxy_tls_cert, &args.proxy_tls_key, crate::tls::PROXY_TLS)?;
        let proxy_hsts = values::hsts(&args.proxy_hsts).map_err(ConfigError::on("HATCH_PROXY_HSTS"))?;
        if proxy_hsts.is_some() && proxy_tls.is_none() {
            return Err(ConfigError::new(
                "HATCH_PROXY_HSTS",
                "needs HATCH_PROXY_TLS_CERT and HATCH_PROXY_TLS_KEY (browsers ignore HSTS over plain HTTP)",
            ));
        }
        Ok(Config {
            http_addr,
            tls,
            proxy_tls,
            proxy_hsts,
            net,
            hypervisor: hypervisor(args)?,
            default_image: non_empty(&args.default_image).map(str::to_string),
            default_vcpu_count: number(&args.default_vcpu, 1, MAX_VCPU_COUNT)
                .map_err(ConfigError::on("HATCH_DEFAULT_VCPU"))?,
            default_mem_mib: number(&args.default_mem_mib, MIN_MEM_MIB, u32::MAX)
                .map_err(ConfigError::on("HATCH_DEFAULT_MEM_MIB"))?,
            proxy_addr: socket_addr(&args.proxy_addr).map_err(ConfigError::on("HATCH_PROXY_ADDR"))?,
            proxy_base_domain: dns_name(&args.proxy_base_domain).map_err(ConfigError::on("HATCH_PROXY_BASE_DOMAIN"))?,
            proxy_wake_timeout: duration(&args.proxy_wake_timeout)
                .map_err(ConfigError::on("HATCH_PROXY_WAKE_TIMEOUT"))?,
            proxy_upstream_timeout: duration(&args.proxy_upstream_timeout)
                .map_err(ConfigError::on("HATCH_PROXY_UPSTREAM_TIMEOUT"))?,
            idle_check_interval: duration(&args.idle_check_interval)
                .map_err(ConfigError::on("HATCH_IDLE_CHECK_INTERVAL"))?,
            idle_timeout: duration(&args.idle_timeout).map_err(ConfigError::on("HATCH_IDLE_TIMEOUT"))?,
            image_cache_dir,
            debian_mirror: debian_mirror(args)?,
            agent_bin: non_empty(&args.agent_bin)
                .map(absolute_path)
                .transpose()
                .map_err(ConfigError::on("HATCH_AGENT_BIN"))?,
            s3: s3(args)?,
            snapshot_retention: number(&args.snapshot_keep, 1, 10_000)
                .map_err(ConfigError::on("HATCH_SNAPSHOT_KEEP"))?,
            snapshot_zstd_level: number(
                &args.snapshot_zstd_level,
                *crate::snapshot::Compression::LEVELS.start(),
                *crate::snapshot::Compression::LEVELS.end(),
            )
            .map_err(ConfigError::on("HATCH_SNAPSHOT_ZSTD_LEVEL"))?,
            reconcile_interval: duration(&args.reconcile_interval)
                .map_err(ConfigError::on("HATCH_RECONCILE_INTERVAL"))?,
            shutdown_timeout: duration(&args.shutdown_timeout).map_err(ConfigError::on("HATCH_SHUTDOWN_TIMEOUT"))?,
            console_log_max_bytes: values::byte_size(
                &args.console_log_max_bytes,
                MIN_CONSOLE_LOG_BYTES,
                MAX_CONSOLE_LOG_BYTES,
            )
            .map_err(ConfigError::on("HATCH_CONSOLE_LOG_MAX_BYTES"))?,
            image_import_dirs: match non_empty(&args.image_import_dirs) {
                Some(list) => list
                    .split(':')
                    .map(absolute_path)
                    .collect::<Result<_, _>>()
                    .map_err(ConfigError::on("HATCH_IMAGE_IMPORT_DIRS"))?,
                None => crate::image::ImportDirs::default_dirs(&data_dir),
            },
            mem_overcommit_percent: values::ratio(&args.mem_overcommit, 0.1, 100.0)
                .map(|ratio| (ratio * 100.0).round() as u32)
                .map_err(ConfigError::on("HATCH_MEM_OVERCOMMIT"))?,
            snapshot_sweep_min_age: duration(&args.snapshot_sweep_min_age)
                .map_err(ConfigError::on("HATCH_SNAPSHOT_SWEEP_MIN_AGE"))?,
            rate_limit: rate_limit(args)?,
            metrics_public: values::boolean(&args.metrics_public).map_err(ConfigError::on("HATCH_METRICS_PUBLIC"))?,
            data_dir,
        })
    }

    /// The rule for where image files may come from.
    pub fn import_dirs(&self) -> crate::image::ImportDirs {
        crate::image::ImportDirs::new(&self.image_import_dirs, &self.data_dir)
    }

    /// `$HATCH_DATA_DIR/hatch.db`
    pub fn db_path(&self) -> PathBuf {
        crate::store::Store::path_in(&self.data_dir)
    }

    /// `$HATCH_DATA_DIR/admin.key`
    pub fn admin_key_path(&self) -> PathBuf {
        self.data_dir.join("admin.key")
    }
}

/// A certificate and key pair: both set or neither.
fn tls_files(
    cert: &Option<String>,
    key: &Option<String>,
    vars: crate::tls::TlsVariables,
) -> Result<Option<TlsFiles>, ConfigError> {
    match (non_empty(cert), non_empty(key)) {
        (None, None) => Ok(None),
        (Some(cert), Some(key)) => Ok(Some(TlsFiles {
            cert: PathBuf::from(cert),
            key: PathBuf::from(key),
        })),
        (Some(_), None) => Err(ConfigError::new(
            vars.key,
            format!("is not set but {} is; set both or neither", vars.cert),
        )),
        (None, Some(_)) => Err(ConfigError::new(
            vars.cert,
            format!("is not set but {} is; set both or neither", vars.key),
        )),
    }
}

fn hypervisor(args: &ServeArgs) -> Result<HypervisorSettings, ConfigError> {
    let preference = HypervisorPreference::parse(&args.hypervisor).ok_or_else(|| {
        ConfigError::new(
            "HATCH_HYPERVISOR",
            format!("{:?}: expected auto, firecracker or qemu", args.hypervisor),
        )
    })?;
    let qemu_accel = QemuAccel::parse(&args.qemu_accel).ok_or_else(|| {
        ConfigError::new(
            "HATCH_QEMU_ACCEL",
            format!("{:?}: expected auto, kvm or tcg", args.qemu_accel),
        )
    })?;
    Ok(HypervisorSettings {
        preference,
        qemu_accel,
        firecracker_bin: non_empty(&args.firecracker_bin).map(PathBuf::from),
        qemu_bin: non_empty(&args.qemu_bin).map(PathBuf::from),
        vmm_user: vmm_user(args)?,
        jailer_bin: non_empty(&args.jailer_bin).map(PathBuf::from),
        jail_base: Some(PathBuf::from(&args.data_dir).join("jail")),
    })
}

/// `HATCH_VMM_USER`: a user name as `useradd` accepts it.
fn vmm_user(args: &ServeArgs) -> Result<Option<String>, ConfigError> {
    let Some(name) = non_empty(&args.vmm_user) else {
        return Ok(None);
    };
    let valid = name.len() <= 32
        && name.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if !valid {
        return Err(ConfigError::new(
            "HATCH_VMM_USER",
            format!("{name:?}: expected a user name ([a-z_][a-z0-9_-]*, at most 32 characters)"),
        ));
    }
    if name == "root" {
        return Err(ConfigError::new("HATCH_VMM_USER", "VMMs must not run as root"));
    }
    Ok(Some(name.to_string()))
}

fn debian_mirror(args: &ServeArgs) -> Result<Option<String>, ConfigError> {
    let Some(mirror) = non_empty(&args.debian_mirror) else {
        return Ok(None);
    };
    let ok = (mirror.starts_with("http://") || mirror.starts_with("https://") || mirror.starts_with("file:/"))
        && !mirror.chars().any(|c| c.is_whitespace() || c.is_control());
    if !ok {
        return Err(ConfigError::new(
            "HATCH_DEBIAN_MIRROR",
            format!("{mirror:?}: expected an http(s):// or file:/ URL"),
        ));
    }
    Ok(Some(mirror.trim_end_matches('/').to_string()))
}

fn s3(args: &ServeArgs) -> Result<Option<S3Config>, ConfigError> {
    let Some(bucket) = non_empty(&args.s3_bucket) else {
        let stray = [
            ("HATCH_S3_ENDPOINT", &args.s3_endpoint),
            ("HATCH_S3_ACCESS_KEY", &args.s3_access_key),
            ("HATCH_S3_SECRET_KEY", &args.s3_secret_key),
            ("HATCH_S3_PREFIX", &args.s3_prefix),
        ];
        if let Some((variable, _)) = stray.iter().find(|(_, value)| non_empty(value).is_some()) {
            return Err(ConfigError::new(variable, "is set but HATCH_S3_BUCKET is not"));
        }
        return Ok(None);
    };
    let endpoint = non_empty(&args.s3_endpoint).map(str::to_string);
    if let Some(url) = &endpoint {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(ConfigError::new(
                "HATCH_S3_ENDPOINT",
                format!("{url:?}: expected an http(s):// URL"),
            ));
        }
    }
    let access_key = non_empty(&args.s3_access_key).map(str::to_string);
    let secret_key = non_empty(&args.s3_secret_key).map(|s| Secret(s.to_string()));
    if access_key.is_some() != secret_key.is_some() {
        let missing = if access_key.is_some() {
            "HATCH_S3_SECRET_KEY"
        } else {
            "HATCH_S3_ACCESS_KEY"
        };
        return Err(ConfigError::new(
            missing,
            "HATCH_S3_ACCESS_KEY and HATCH_S3_SECRET_KEY must be set together",
        ));
    }
    let prefix = non_empty(&args.s3_prefix)
        .map(values::key_prefix)
        .transpose()
        .map_err(ConfigError::on("HATCH_S3_PREFIX"))?;
    Ok(Some(S3Config {
        endpoint,
        bucket: bucket.to_string(),
        region: args.s3_region.trim().to_string(),
        access_key,
        secret_key,
        prefix,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_s3(prefix: Option<&str>) -> Result<Config, ConfigError> {
        let mut args = ServeArgs::defaults();
        args.data_dir = "/var/lib/hatch-test".into();
        args.s3_bucket = Some("snaps".into());
        args.s3_prefix = prefix.map(str::to_string);
        Config::from_args(&args)
    }

    #[test]
    fn tls_files_come_in_pairs_and_hsts_needs_proxy_tls() {
        let mut args = ServeArgs::defaults();
        args.tls_cert = Some("/etc/hatch/cert.pem".into());
        assert_eq!(Config::from_args(&args).unwrap_err().variable, "HATCH_TLS_KEY");
        args.tls_cert = None;
        args.tls_key = Some("/etc/hatch/key.pem".into());
        assert_eq!(Config::from_args(&args).unwrap_err().variable, "HATCH_TLS_CERT");
        args.tls_cert = Some("/etc/hatch/cert.pem".into());
        let config = Config::from_args(&args).unwrap();
        assert_eq!(config.tls.unwrap().key, PathBuf::from("/etc/hatch/key.pem"));
        args.http_addr = "unix:/run/hatch.sock".into();
        assert_eq!(Config::from_args(&args).unwrap_err().variable, "HATCH_TLS_CERT");

        let mut args = ServeArgs::defaults();
        args.proxy_tls_key = Some("/k.pem".into());
        assert_eq!(Config::from_args(&args).unwrap_err().variable, "HATCH_PROXY_TLS_CERT");
        let mut args = ServeArgs::defaults();
        args.proxy_hsts = "true".into();
        assert_eq!(Config::from_args(&args).unwrap_err().variable, "HATCH_PROXY_HSTS");
        args.proxy_tls_cert = Some("/c.pem".into());
        args.proxy_tls_key = Some("/k.pem".into());
        assert_eq!(
            Config::from_args(&args).unwrap().proxy_hsts,
            Some(Duration::from_secs(31_536_000))
        );
        args.proxy_hsts = "sometimes".into();
        assert_eq!(Config::from_args(&args).unwrap_err().variable, "HATCH_PROXY_HSTS");
    }

    #[test]
    fn the_vmm_user_is_validated_and_never_root() {
        let with_user = |user: Option<&str>| {
            let mut args = ServeArgs::defaults();
            args.data_dir = "/var/lib/hatch-test".into();
            args.vmm_user = user.map(str::to_string);
            Config::from_args(&args)
        };
        let config = with_user(None).unwrap();
        assert_eq!(config.hypervisor.vmm_user, None);
        assert_eq!(
            config.hypervisor.jail_base.as_deref(),
            Some(std::path::Path::new("/var/lib/hatch-test/jail"))
        );
        assert_eq!(
            with_user(Some("vmm-runner")).unwrap().hypervisor.vmm_user.as_deref(),
            Some("vmm-runner")
        );
        for bad in ["root", "Bad User", "9lives", "a/b"] {
            let error = with_user(Some(bad)).unwrap_err();
            assert_eq!(error.variable, "HATCH_VMM_USER", "{bad}: {error}");
        }
    }

    #[test]
    fn the_zstd_level_is_validated_and_defaults_to_the_measured_one() {
        let with_level = |level: &str| {
            let mut args = ServeArgs::defaults();
            args.snapshot_zstd_level = level.into();
            Config::from_args(&args)
        };
        let default = Config::from_args(&ServeArgs::defaults()).unwrap();
        assert_eq!(default.snapshot_zstd_level, crate::snapshot::Compression::DEFAULT_LEVEL);
        assert_eq!(with_level("1").unwrap().snapshot_zstd_level, 1);
        assert_eq!(with_level(" 19 ").unwrap().snapshot_zstd_level, 19);
        for bad in ["0", "20", "-3", "fast", "3.5", ""] {
            let error = with_level(bad).unwrap_err();
            assert_eq!(error.variable, "HATCH_SNAPSHOT_ZSTD_LEVEL", "{bad:?}: {error}");
        }
    }

    #[test]
    fn the_s3_prefix_is_validated_and_defaults_to_the_host_id() {
        assert_eq!(with_s3(None).unwrap().s3.unwrap().prefix, None);
        assert_eq!(with_s3(Some(" ")).unwrap().s3.unwrap().prefix, None);
        assert_eq!(
            with_s3(Some("fleet/host-7/")).unwrap().s3.unwrap().prefix.as_deref(),
            Some("fleet/host-7")
        );
        let error = with_s3(Some("../other-host")).unwrap_err();
        assert_eq!(error.variable, "HATCH_S3_PREFIX", "{error}");

        let mut args = ServeArgs::defaults();
        args.s3_prefix = Some("host-a".into());
        let error = Config::from_args(&args).unwrap_err();
        assert_eq!(error.variable, "HATCH_S3_PREFIX", "{error}");
        assert!(error.message.contains("HATCH_S3_BUCKET"), "{error}");
    }
}
