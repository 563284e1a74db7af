//! The daemon's `set_identity` against the real static `hatch-agent`, run
//! in namespaces of its own (network, UTS, mount, pid) with a veth NIC
//! carrying a snapshot's MAC and a private /etc
//! (`crates/hatch-agent/tests/clone-namespace.sh`): the request and its
//! answer as both sides speak them, and a refused value as the typed error
//! the daemon gets. The test machine's links, hostname and files are never
//! touched; without root and unshare this test fails.

use crate::common;

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use hatch::agent::proto::{ErrorCode, Identity, NicIdentity};
use hatch::agent::{set_identity, AgentError, Agents, Conversation};
use hatch::vmm::AgentEndpoint;

/// Starts the agent in namespaces of its own, set up as a restored clone
/// whose NIC has the parent's MAC 52:54:00:00:00:01 (shared with the
/// agent crate's own tests).
const CLONE_NAMESPACE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/crates/hatch-agent/tests/clone-namespace.sh"
);

struct Namespaced(std::process::Child);

impl Drop for Namespaced {
    fn drop(&mut self) {
        // --kill-child: the agent, pid 1 of its namespace, dies with unshare.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Namespaced {
    /// `ip -j ARGS` in its network namespace.
    fn ip(&self, args: &[&str]) -> serde_json::Value {
        let output = Command::new("nsenter")
            .arg(format!("--target={}", self.0.id()))
            .args(["--net", "--", "ip", "-j"])
            .args(args)
            .output()
            .expect("nsenter");
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        serde_json::from_slice(&output.stdout).expect("ip's JSON")
    }
}

fn clone_identity(hostname: &str) -> Identity {
    Identity {
        hostname: hostname.into(),
        nic: Some(NicIdentity {
            previous_mac: "52:54:00:00:00:01".into(),
            mac: "52:54:00:0a:00:02".into(),
            address: "10.20.0.7/24".into(),
            gateway: Some("10.20.0.1".into()),
        }),
        entropy: vec![7; 64],
    }
}

async fn connect(agents: &Agents) -> Arc<Conversation> {
    agents
        .conversation("vm-clone", Duration::from_secs(20))
        .await
        .expect("the namespaced agent connects")
}

#[tokio::test]
async fn set_identity_gives_a_restored_guest_its_own_mac_address_and_name() {
    let bin = common::images::agent_bin();
    let dir = tempfile::tempdir().unwrap();
    let etc = dir.path().join("etc");
    std::fs::create_dir(&etc).unwrap();
    std::fs::write(etc.join("hostname"), "parent\n").unwrap();
    let socket = dir.path().join("agent.sock");
    let agents = Agents::default();
    agents.attach("vm-clone", AgentEndpoint::Listen(socket.clone()), Arc::new(|_| {}));
    let guest = Namespaced(
        Command::new("sh")
            .arg(CLONE_NAMESPACE)
            .args([&etc, &bin, &socket])
            .spawn()
            .expect("the agent in its namespaces"),
    );
    let conversation = connect(&agents).await;

    let refused = set_identity(&conversation, &clone_identity("not_a_hostname")).await;
    match refused {
        Err(AgentError::Guest { code, message }) => {
            assert_eq!(code, ErrorCode::Invalid);
            assert!(message.contains("hostname"), "{message}");
        }
        other => panic!("a bad hostname was not refused: {other:?}"),
    }
    assert_eq!(
        guest.ip(&["link", "show", "dev", "eth0"])[0]["address"],
        "52:54:00:00:00:01"
    );

    set_identity(&conversation, &clone_identity("clone-7"))
        .await
        .expect("the identity is set");
    assert_eq!(
        guest.ip(&["link", "show", "dev", "eth0"])[0]["address"],
        "52:54:00:0a:00:02"
    );
    let address = &guest.ip(&["-4", "addr", "show", "dev", "eth0"])[0]["addr_info"];
    assert_eq!(
        (&address[0]["local"], &address[0]["prefixlen"]),
        (&"10.20.0.7".into(), &24.into())
    );
    assert_eq!(guest.ip(&["-4", "route", "show", "default"])[0]["gateway"], "10.20.0.1");
    assert_eq!(std::fs::read_to_string(etc.join("hostname")).unwrap(), "clone-7\n");
    agents.detach("vm-clone");
    drop(guest);
}
