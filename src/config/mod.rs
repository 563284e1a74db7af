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
    pub net: NetConfig,
    pub hypervisor: HypervisorSettings,
    /// Image id or name used when a VM names neither image nor template;
    /// `None`: the newest registered image.
    pub default_image: Option<String>,
    pub default_vcpu_count: u32,
    pub default_mem_mib: u32,
    pub proxy_addr: SocketAddr,
    pub proxy_base_domain: String,
    pub proxy_wake_timeout: Duration,
    pub idle_check_interval: Duration,
    pub idle_timeout: Duration,
    pub image_cache_dir: PathBuf,
    /// `None`: the mirror from the host's apt configuration.
    pub debian_mirror: Option<String>,
    pub s3: Option<S3Config>,
    /// Snapshots kept per VM (older ones are deleted).
    pub snapshot_retention: u32,
    /// Period of the reconciler that repairs drift between host and database.
    pub reconcile_interval: Duration,
    /// How long shutdown waits for operations in flight.
    pub shutdown_timeout: Duration,
    /// Artefacts no snapshot record owns are swept at start-up once this old
    /// (an hour; a hidden setting, for tests): another daemon on the same
    /// prefix, or this one just before a crash, may be uploading a snapshot
    /// it has not recorded yet.
    pub snapshot_sweep_min_age: Duration,
}

/// Upper bound for HATCH_DEFAULT_VCPU, the same as the API's limit.
pub const MAX_VCPU_COUNT: u32 = 32;
pub const MIN_MEM_MIB: u32 = 128;

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
        Ok(Config {
            http_addr: values::listen_addr(&args.http_addr).map_err(ConfigError::on("HATCH_HTTP_ADDR"))?,
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
            idle_check_interval: duration(&args.idle_check_interval)
                .map_err(ConfigError::on("HATCH_IDLE_CHECK_INTERVAL"))?,
            idle_timeout: duration(&args.idle_timeout).map_err(ConfigError::on("HATCH_IDLE_TIMEOUT"))?,
            image_cache_dir,
            debian_mirror: debian_mirror(args)?,
            s3: s3(args)?,
            snapshot_retention: number(&args.snapshot_keep, 1, 10_000)
                .map_err(ConfigError::on("HATCH_SNAPSHOT_KEEP"))?,
            reconcile_interval: duration(&args.reconcile_interval)
                .map_err(ConfigError::on("HATCH_RECONCILE_INTERVAL"))?,
            shutdown_timeout: duration(&args.shutdown_timeout).map_err(ConfigError::on("HATCH_SHUTDOWN_TIMEOUT"))?,
            snapshot_sweep_min_age: duration(&args.snapshot_sweep_min_age)
                .map_err(ConfigError::on("HATCH_SNAPSHOT_SWEEP_MIN_AGE"))?,
            data_dir,
        })
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
    })
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
