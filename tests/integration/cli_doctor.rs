//! `hatch doctor` on this host: every check printed with ok/FAIL, the
//! hypervisor it would choose and why, and what it sees of the daemon.

use crate::common;

use std::path::Path;
use std::process::Output;

use common::daemon::{hatch_command_in, TestApi};
use serde_json::Value;

fn doctor(args: &[&str], vars: &[(&str, &str)]) -> Output {
    let mut full = vec!["doctor"];
    full.extend_from_slice(args);
    hatch_command_in(None, &full, vars).output().expect("run hatch doctor")
}

fn report(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stdout)))
}

fn find<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no {name} check in {report:#}"))
}

const NO_DAEMON: &str = "unix:/nonexistent/hatch.sock";

#[test]
fn doctor_names_the_hypervisor_and_why() {
    let output = doctor(&[], &[("HATCH_URL", NO_DAEMON)]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let text = String::from_utf8(output.stdout).unwrap();
    let choice = text
        .lines()
        .find_map(|l| l.strip_prefix("hypervisor: "))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        choice.starts_with("qemu (") || choice.starts_with("firecracker ("),
        "{choice}"
    );
    assert!(
        choice.contains("auto:"),
        "the reason names the automatic choice: {choice}"
    );
    for tool in ["dnsmasq", "iptables", "ip", "mmdebstrap"] {
        let row = text
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(tool))
            .unwrap_or_else(|| panic!("{tool}: {text}"));
        assert!(row.starts_with("ok "), "{tool} is installed here: {row}");
    }
    let daemon = text
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some("daemon"))
        .unwrap();
    assert!(
        daemon.starts_with("FAIL") && daemon.contains("cannot reach"),
        "{daemon}"
    );

    let json = report(&doctor(&["--json"], &[("HATCH_URL", NO_DAEMON)]));
    // Each hypervisor found says how the daemon reaches a guest's agent, and why.
    let mut transports = 0;
    if find(&json, "qemu binary")["ok"] == true {
        let qemu = find(&json, "qemu agent transport")["detail"].as_str().unwrap();
        assert!(qemu.starts_with("virtio-serial port org.hatch.agent.0"), "{qemu}");
        assert!(qemu.contains("agent.sock") && qemu.contains("unmigratable"), "{qemu}");
        transports += 1;
    }
    if find(&json, "firecracker binary")["ok"] == true {
        let firecracker = find(&json, "firecracker agent transport")["detail"].as_str().unwrap();
        assert!(
            firecracker.starts_with("vsock (guest CID 3, port 1024)"),
            "{firecracker}"
        );
        assert!(firecracker.contains("vsock.sock_1024"), "{firecracker}");
        transports += 1;
    }
    assert!(transports > 0, "a hypervisor was chosen, so one was found: {json:#}");

    if Path::new("/sys/module/kvm_pvm").exists() {
        let pvm = find(&json, "nested PVM KVM");
        assert!(
            pvm["detail"].as_str().unwrap().starts_with("kvm_pvm is loaded"),
            "{pvm}"
        );
        let detail = json["hypervisor"]["detail"].as_str().unwrap();
        assert!(
            detail.starts_with("qemu (") && detail.contains("with tcg"),
            "PVM means QEMU with TCG: {detail}"
        );
    }
}

#[test]
fn the_settings_steer_the_choice() {
    let json = report(&doctor(
        &["--json"],
        &[
            ("HATCH_URL", NO_DAEMON),
            ("HATCH_HYPERVISOR", "qemu"),
            ("HATCH_QEMU_ACCEL", "tcg"),
        ],
    ));
    assert_eq!(json["hypervisor"]["ok"], true, "{json:#}");
    let detail = json["hypervisor"]["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("qemu (") && detail.contains("tcg: HATCH_QEMU_ACCEL=tcg"),
        "{detail}"
    );
    assert_eq!(find(&json, "configuration")["ok"], true);

    let missing = doctor(
        &["--json"],
        &[
            ("HATCH_URL", NO_DAEMON),
            ("HATCH_HYPERVISOR", "firecracker"),
            ("HATCH_FIRECRACKER_BIN", "/nonexistent/fc"),
        ],
    );
    assert!(!missing.status.success(), "no usable hypervisor is a failure");
    assert_eq!(report(&missing)["hypervisor"]["ok"], false);

    let invalid = doctor(
        &["--json"],
        &[("HATCH_URL", NO_DAEMON), ("HATCH_BRIDGE_CIDR", "banana")],
    );
    assert!(
        !invalid.status.success(),
        "a configuration the daemon refuses is a failure"
    );
    let config = report(&invalid);
    let check = find(&config, "configuration");
    assert_eq!(check["ok"], false);
    assert!(
        check["detail"].as_str().unwrap().contains("HATCH_BRIDGE_CIDR"),
        "{check}"
    );
}

#[tokio::test]
async fn a_running_daemon_is_reported() {
    let api = TestApi::start().await;
    let url = format!("unix:{}", api.socket.display());
    let output = tokio::task::spawn_blocking(move || doctor(&["--json"], &[("HATCH_URL", &url)]))
        .await
        .unwrap();
    let json = report(&output);
    let daemon = find(&json, "daemon");
    assert_eq!(daemon["ok"], true, "{daemon}");
    assert!(daemon["detail"].as_str().unwrap().contains("answers"), "{daemon}");
}
