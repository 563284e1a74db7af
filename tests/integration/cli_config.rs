//! Configuration: defaults from the networking guide, and every invalid
//! value rejected with the variable's name.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use hatch::config::{Config, ListenAddr, ServeArgs};

#[test]
fn defaults_follow_the_guide() {
    let config = Config::from_args(&ServeArgs::defaults()).unwrap();
    assert_eq!(config.data_dir, PathBuf::from("/var/lib/hatch"));
    assert_eq!(config.http_addr, ListenAddr::Tcp("127.0.0.1:8080".parse().unwrap()));
    assert_eq!(config.net.bridge_name, "fcbridge");
    assert_eq!(
        (config.net.gateway, config.net.prefix_len),
        (Ipv4Addr::new(192, 168, 241, 1), 24)
    );
    assert_eq!(config.net.ssh_allowed, (Ipv4Addr::UNSPECIFIED, 0));
    assert_eq!((config.net.ssh_port_min, config.net.ssh_port_max), (2200, 2299));
    assert_eq!(config.net.dhcp_dir, PathBuf::from("/var/lib/hatch/dhcp"));
    assert_eq!((config.default_vcpu_count, config.default_mem_mib), (1, 256));
    assert_eq!(config.proxy_addr, "127.0.0.1:9090".parse().unwrap());
    assert_eq!(config.proxy_wake_timeout, Duration::from_secs(60));
    assert_eq!(config.proxy_upstream_timeout, Duration::from_secs(60));
    assert_eq!(config.idle_check_interval, Duration::from_secs(300));
    assert_eq!(config.idle_timeout, Duration::from_secs(45 * 60));
    assert_eq!(config.image_cache_dir, PathBuf::from("/var/lib/hatch/cache"));
    assert!(config.s3.is_none() && config.default_image.is_none() && config.debian_mirror.is_none());
    assert_eq!(config.snapshot_retention, 5);
}

#[test]
fn values_parse() {
    let mut args = ServeArgs::defaults();
    args.data_dir = "/srv/hatch".into();
    args.http_addr = "unix:/run/hatch.sock".into();
    args.idle_timeout = "90s".into();
    args.idle_check_interval = "1h".into();
    args.bridge_cidr = "10.20.0.1/16".into();
    args.ssh_allowed_cidr = "10.0.0.0/8".into();
    args.s3_bucket = Some("snaps".into());
    args.s3_access_key = Some("AKIA".into());
    args.s3_secret_key = Some("very-secret-value".into());
    let config = Config::from_args(&args).unwrap();
    assert_eq!(config.http_addr, ListenAddr::Unix("/run/hatch.sock".into()));
    assert_eq!(config.idle_timeout, Duration::from_secs(90));
    assert_eq!(config.idle_check_interval, Duration::from_secs(3600));
    assert_eq!(config.net.prefix_len, 16);
    assert_eq!(config.net.ssh_allowed, (Ipv4Addr::new(10, 0, 0, 0), 8));
    assert_eq!(config.net.dhcp_dir, PathBuf::from("/srv/hatch/dhcp"));
    assert_eq!(
        config.s3.as_ref().unwrap().secret_key.as_ref().unwrap().expose(),
        "very-secret-value"
    );
    assert!(
        !format!("{config:?}").contains("very-secret-value"),
        "secrets never printed"
    );
    let default_limit = config.rate_limit.expect("rate-limited by default");
    assert_eq!((default_limit.per_second, default_limit.burst), (50.0, 200));

    args.rate_limit = "600/m".into();
    args.rate_burst = "7".into();
    let limit = Config::from_args(&args).unwrap().rate_limit.unwrap();
    assert_eq!((limit.per_second, limit.burst), (10.0, 7));
    args.rate_limit = "off".into();
    assert_eq!(Config::from_args(&args).unwrap().rate_limit, None);
}

#[test]
fn every_invalid_value_names_its_variable() {
    type Set = fn(&mut ServeArgs);
    let cases: Vec<(&str, Set)> = vec![
        ("HATCH_DATA_DIR", |a| a.data_dir = "relative/dir".into()),
        ("HATCH_HTTP_ADDR", |a| a.http_addr = "8080".into()),
        ("HATCH_HTTP_ADDR", |a| a.http_addr = "unix:relative.sock".into()),
        ("HATCH_BRIDGE_NAME", |a| {
            a.bridge_name = "a-name-that-is-too-long".into()
        }),
        ("HATCH_BRIDGE_NAME", |a| a.bridge_name = "br0;rm".into()),
        ("HATCH_BRIDGE_CIDR", |a| a.bridge_cidr = "192.168.241.0/24".into()),
        ("HATCH_BRIDGE_CIDR", |a| a.bridge_cidr = "192.168.241.255/24".into()),
        ("HATCH_BRIDGE_CIDR", |a| a.bridge_cidr = "192.168.241.1/33".into()),
        ("HATCH_BRIDGE_CIDR", |a| a.bridge_cidr = "banana".into()),
        ("HATCH_SSH_ALLOWED_CIDR", |a| a.ssh_allowed_cidr = "10.0.0.0".into()),
        ("HATCH_SSH_PORT_MIN", |a| a.ssh_port_min = "abc".into()),
        ("HATCH_SSH_PORT_MIN", |a| a.ssh_port_min = "0".into()),
        ("HATCH_SSH_PORT_MAX", |a| a.ssh_port_max = "70000".into()),
        // An inverted range is reported on its first bound.
        ("HATCH_SSH_PORT_MIN", |a| {
            a.ssh_port_min = "3000".into();
            a.ssh_port_max = "2999".into();
        }),
        // Host bits in the allowed network are a mistake worth naming.
        ("HATCH_SSH_ALLOWED_CIDR", |a| a.ssh_allowed_cidr = "10.1.2.3/8".into()),
        ("HATCH_VM_TO_VM", |a| a.vm_to_vm = "sometimes".into()),
        ("HATCH_EGRESS_DENY_CIDRS", |a| {
            a.egress_deny_cidrs = "169.254.0.0/16,metadata".into()
        }),
        ("HATCH_EGRESS_DENY_CIDRS", |a| {
            a.egress_deny_cidrs = "169.254.169.254/16".into()
        }),
        ("HATCH_HYPERVISOR", |a| a.hypervisor = "vmware".into()),
        ("HATCH_QEMU_ACCEL", |a| a.qemu_accel = "hvf".into()),
        ("HATCH_DEFAULT_VCPU", |a| a.default_vcpu = "0".into()),
        ("HATCH_DEFAULT_VCPU", |a| a.default_vcpu = "33".into()),
        ("HATCH_DEFAULT_MEM_MIB", |a| a.default_mem_mib = "64".into()),
        ("HATCH_PROXY_ADDR", |a| a.proxy_addr = "nowhere".into()),
        ("HATCH_PROXY_BASE_DOMAIN", |a| a.proxy_base_domain = "bad domain".into()),
        ("HATCH_PROXY_WAKE_TIMEOUT", |a| a.proxy_wake_timeout = "soon".into()),
        ("HATCH_PROXY_UPSTREAM_TIMEOUT", |a| {
            a.proxy_upstream_timeout = "0".into()
        }),
        ("HATCH_IDLE_CHECK_INTERVAL", |a| a.idle_check_interval = "0s".into()),
        ("HATCH_IDLE_TIMEOUT", |a| a.idle_timeout = "5d".into()),
        ("HATCH_IMAGE_CACHE_DIR", |a| a.image_cache_dir = Some("cache".into())),
        ("HATCH_DEBIAN_MIRROR", |a| a.debian_mirror = Some("ftp:/x y".into())),
        ("HATCH_AGENT_BIN", |a| a.agent_bin = Some("target/hatch-agent".into())),
        ("HATCH_S3_ENDPOINT", |a| {
            a.s3_endpoint = Some("http://127.0.0.1:9000".into())
        }),
        ("HATCH_S3_ENDPOINT", |a| {
            a.s3_bucket = Some("b".into());
            a.s3_endpoint = Some("127.0.0.1:9000".into());
        }),
        ("HATCH_S3_SECRET_KEY", |a| {
            a.s3_bucket = Some("b".into());
            a.s3_access_key = Some("id".into());
        }),
        ("HATCH_SNAPSHOT_KEEP", |a| a.snapshot_keep = "-1".into()),
        ("HATCH_TLS_KEY", |a| a.tls_cert = Some("/etc/hatch/cert.pem".into())),
        ("HATCH_PROXY_TLS_CERT", |a| {
            a.proxy_tls_key = Some("/etc/hatch/key.pem".into())
        }),
        ("HATCH_PROXY_HSTS", |a| a.proxy_hsts = "forever".into()),
        ("HATCH_RATE_LIMIT", |a| a.rate_limit = "fast".into()),
        ("HATCH_RATE_LIMIT", |a| a.rate_limit = "0/s".into()),
        ("HATCH_RATE_LIMIT", |a| a.rate_limit = "-5/s".into()),
        ("HATCH_RATE_LIMIT", |a| a.rate_limit = "10/fortnight".into()),
        ("HATCH_RATE_LIMIT", |a| a.rate_limit = "99999999/s".into()),
        ("HATCH_RATE_BURST", |a| a.rate_burst = "0".into()),
        ("HATCH_RATE_BURST", |a| a.rate_burst = "lots".into()),
    ];
    for (variable, set) in cases {
        let mut args = ServeArgs::defaults();
        set(&mut args);
        match Config::from_args(&args) {
            Err(error) => {
                assert_eq!(error.variable, variable, "{error}");
                assert!(error.to_string().starts_with(variable), "{error}");
            }
            Ok(_) => panic!("{variable}: an invalid value was accepted"),
        }
    }
}
