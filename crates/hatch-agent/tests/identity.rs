//! SetIdentity against the real agent binary, run inside fresh network,
//! UTS, mount and pid namespaces (`unshare`) holding a veth "NIC" with the
//! parent's MAC, addresses and route, and a private /etc bound over the real
//! one: the machine's own links, hostname and files are never touched.
//! Needs root, util-linux and iproute2 (and busybox for its `ip`); without
//! them these tests fail rather than skip.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{error_of, Conn, Host};
use hatch_agent_proto::{ErrorCode, Identity, NicIdentity, Reply, Request};
use serde_json::Value;

const PARENT_MAC: &str = "52:54:00:00:00:01";
const NEW_MAC: &str = "52:54:00:00:00:02";
const PARENT_HOSTS: &str = "127.0.0.1\tlocalhost\n127.0.1.1\tparent\n::1\tlocalhost ip6-localhost\n";

/// Starts the agent in namespaces of its own set up as a restored clone.
const CLONE_NAMESPACE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clone-namespace.sh");

/// An agent in a namespace set up as a freshly restored clone.
struct Clone {
    host: Host,
    conn: Conn,
    /// Bound over /etc inside.
    etc: tempfile::TempDir,
}

/// What a user would check inside the clone.
#[derive(Debug, PartialEq, Eq)]
struct State {
    mac: String,
    up: bool,
    addresses: Vec<String>,
    default_routes: Vec<String>,
    hostname: String,
    etc_hostname: String,
    etc_hosts: String,
}

impl Clone {
    /// `ip_override`: a program bound over the `ip` the agent will find.
    fn start(ip_override: Option<&Path>) -> Clone {
        let etc = tempfile::tempdir().expect("tempdir");
        std::fs::write(etc.path().join("hostname"), "parent\n").unwrap();
        std::fs::write(etc.path().join("hosts"), PARENT_HOSTS).unwrap();
        // The dynamic loader's cache, for the (debug, dynamic) agent.
        if Path::new("/etc/ld.so.cache").exists() {
            std::fs::copy("/etc/ld.so.cache", etc.path().join("ld.so.cache")).unwrap();
        }
        let etc_path = etc.path().to_owned();
        let (host, conn) = Host::start_with(|agent, socket| {
            let mut command = Command::new("sh");
            command.arg(CLONE_NAMESPACE).arg(&etc_path).arg(agent).arg(socket);
            command.args(ip_override);
            command
        });
        assert_eq!(conn.hello.hostname, "parent", "the namespace was not set up");
        Clone { host, conn, etc }
    }

    /// Runs a command of the machine's (its iproute2) in the clone's
    /// network and UTS namespaces; answers its stdout.
    fn inside(&self, command: &[&str]) -> Vec<u8> {
        let output = Command::new("nsenter")
            .arg(format!("--target={}", self.host.pid()))
            .args(["--net", "--uts", "--"])
            .args(command)
            .output()
            .expect("nsenter");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{command:?}: {stderr}");
        output.stdout
    }

    /// `ip -j ARGS` inside.
    fn ip(&self, args: &[&str]) -> Value {
        let command: Vec<&str> = ["ip", "-j"].iter().chain(args).copied().collect();
        serde_json::from_slice(&self.inside(&command)).expect("ip's JSON")
    }

    fn state(&self) -> State {
        let link = &self.ip(&["link", "show", "dev", "eth0"])[0];
        let flags = link["flags"].as_array().unwrap();
        let addresses = self.ip(&["-4", "addr", "show", "dev", "eth0"])[0]["addr_info"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
            .collect();
        let default_routes = self
            .ip(&["-4", "route", "show", "default"])
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                format!(
                    "via {} dev {}",
                    r["gateway"].as_str().unwrap(),
                    r["dev"].as_str().unwrap()
                )
            })
            .collect();
        let hostname = self.inside(&["cat", "/proc/sys/kernel/hostname"]);
        State {
            mac: link["address"].as_str().unwrap().to_string(),
            up: flags.iter().any(|flag| flag == "UP"),
            addresses,
            default_routes,
            hostname: String::from_utf8(hostname).unwrap().trim().to_string(),
            etc_hostname: std::fs::read_to_string(self.etc.path().join("hostname")).unwrap(),
            etc_hosts: std::fs::read_to_string(self.etc.path().join("hosts")).unwrap(),
        }
    }

    fn set(&mut self, identity: Identity) -> Reply {
        self.conn.request(&Request::SetIdentity(identity))
    }
}

/// The `ip` the agent finds (its search order).
fn agent_ip() -> PathBuf {
    ["/sbin/ip", "/usr/sbin/ip", "/bin/ip", "/usr/bin/ip"]
        .iter()
        .map(PathBuf::from)
        .find(|path| path.is_file())
        .expect("iproute2's ip")
}

fn parent_state() -> State {
    State {
        mac: PARENT_MAC.into(),
        up: true,
        addresses: vec!["10.9.9.9/16".into(), "192.168.50.2/24".into()],
        default_routes: vec!["via 10.9.0.1 dev eth0".into()],
        hostname: "parent".into(),
        etc_hostname: "parent\n".into(),
        etc_hosts: PARENT_HOSTS.into(),
    }
}

fn clone_state() -> State {
    State {
        mac: NEW_MAC.into(),
        addresses: vec!["10.0.0.5/24".into()],
        default_routes: vec!["via 10.0.0.1 dev eth0".into()],
        hostname: "clone-1".into(),
        etc_hostname: "clone-1\n".into(),
        etc_hosts: PARENT_HOSTS.replace("127.0.1.1\tparent", "127.0.1.1\tclone-1"),
        ..parent_state()
    }
}

fn identity() -> Identity {
    Identity {
        hostname: "clone-1".into(),
        nic: Some(NicIdentity {
            previous_mac: PARENT_MAC.into(),
            mac: NEW_MAC.into(),
            address: "10.0.0.5/24".into(),
            gateway: Some("10.0.0.1".into()),
        }),
        entropy: (0..32).collect(),
    }
}

fn machine_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap()
}

/// The clone takes the identity, the same request again changes nothing,
/// and the machine's own hostname is what it was.
fn takes_the_identity(clone: &mut Clone) {
    let machine = machine_hostname();
    assert_eq!(clone.state(), parent_state());
    assert_eq!(clone.set(identity()), Reply::Done { bytes: 32 });
    assert_eq!(clone.state(), clone_state());
    assert_eq!(
        clone.conn.resync().hostname,
        "clone-1",
        "the agent's hello names the new hostname"
    );
    assert_eq!(clone.set(identity()), Reply::Done { bytes: 32 });
    assert_eq!(clone.state(), clone_state());
    assert_eq!(machine_hostname(), machine);
}

#[test]
fn a_clone_gets_its_mac_address_route_and_hostname_with_iproute2() {
    takes_the_identity(&mut Clone::start(None));
}

#[test]
fn a_clone_gets_the_same_with_busybox_ip() {
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .map(Path::new)
        .find(|path| path.is_file())
        .expect("busybox (scripts/install-deps installs busybox-static)");
    let mut clone = Clone::start(Some(busybox));
    // The agent's `ip` inside is busybox's (not iproute2 left in place).
    let same = Command::new("nsenter")
        .arg(format!("--target={}", clone.host.pid()))
        .args(["--mount", "--", "cmp", "-s"])
        .args([agent_ip().as_path(), busybox])
        .status()
        .expect("nsenter");
    assert!(same.success(), "busybox is not bound over {}", agent_ip().display());
    takes_the_identity(&mut clone);
}

#[test]
fn bad_values_are_invalid_and_change_nothing() {
    let mut clone = Clone::start(None);
    let nic = |change: fn(&mut NicIdentity)| {
        let mut identity = identity();
        change(identity.nic.as_mut().unwrap());
        identity
    };
    let cases = [
        (
            Identity {
                hostname: "bad_name;reboot".into(),
                ..identity()
            },
            "hostname",
        ),
        (
            Identity {
                hostname: "a".repeat(65),
                ..identity()
            },
            "hostname",
        ),
        (nic(|n| n.mac = "01:00:5e:00:00:01".into()), "mac"),
        (nic(|n| n.mac = "52:54:00:00:00:02 up".into()), "mac"),
        (nic(|n| n.previous_mac = "52-54-00-00-00-01".into()), "previous_mac"),
        (nic(|n| n.address = "10.0.0.5".into()), "address"),
        (nic(|n| n.address = "10.0.0.5/33".into()), "address"),
        (nic(|n| n.address = "10.0.0.5/24 dev lo".into()), "address"),
        (nic(|n| n.gateway = Some("10.1.0.1".into())), "gateway"),
        (nic(|n| n.gateway = Some("-h".into())), "gateway"),
    ];
    for (identity, field) in cases {
        let error = error_of(clone.set(identity));
        assert_eq!(error.code, ErrorCode::Invalid, "{field}: {}", error.message);
        assert!(error.message.starts_with(field), "{field}: {}", error.message);
        assert_eq!(clone.state(), parent_state(), "after a bad {field}");
    }
}

#[test]
fn an_unknown_previous_mac_is_not_found_and_changes_nothing() {
    let mut clone = Clone::start(None);
    let mut identity = identity();
    let nic = identity.nic.as_mut().unwrap();
    nic.previous_mac = "52:54:00:00:00:07".into();
    nic.mac = "52:54:00:00:00:08".into();
    let error = error_of(clone.set(identity));
    assert_eq!(error.code, ErrorCode::NotFound);
    assert!(error.message.contains("52:54:00:00:00:07"), "{}", error.message);
    assert_eq!(clone.state(), parent_state());
}

#[test]
fn without_a_nic_only_the_hostname_changes() {
    let mut clone = Clone::start(None);
    let reply = clone.set(Identity {
        nic: None,
        entropy: Vec::new(),
        ..identity()
    });
    assert_eq!(reply, Reply::Done { bytes: 0 });
    let hostname_only = State {
        hostname: "clone-1".into(),
        etc_hostname: "clone-1\n".into(),
        etc_hosts: clone_state().etc_hosts,
        ..parent_state()
    };
    assert_eq!(clone.state(), hostname_only);
}
