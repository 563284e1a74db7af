//! The guest agent's transport under QEMU (TCG, `debian` image): the guest
//! sees a virtio-serial port named `org.hatch.agent.0`, and bytes cross it
//! both ways through the VM's `agent.sock`, before and after a snapshot and
//! restore. No agent runs here (it is built separately); the guest's shell
//! stands in for it.

use crate::common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use common::e2e::{Topology, VmView};
use common::hatchd::{TestDaemon, TestKey};
use serde_json::json;

const PORT: &str = "/dev/virtio-ports/org.hatch.agent.0";

/// The daemon's side of the port: a connection to the VM's agent socket.
fn connect(daemon: &TestDaemon, vm: &VmView) -> BufReader<UnixStream> {
    let socket: PathBuf = daemon.data_path().join("vms").join(&vm.id).join("agent.sock");
    let stream = UnixStream::connect(&socket).unwrap_or_else(|e| panic!("{}: {e}", socket.display()));
    stream.set_read_timeout(Some(Duration::from_secs(60))).expect("timeout");
    BufReader::new(stream)
}

/// A line written in the guest arrives on the host, and one written on the
/// host is read in the guest.
fn both_ways(topo: &Topology, key: &TestKey, vm: &VmView, host: &mut BufReader<UnixStream>, tag: &str) {
    topo.ssh(
        key,
        "debian",
        vm.ssh_port,
        &format!("echo guest-{tag} | sudo tee {PORT} >/dev/null"),
    );
    let mut line = String::new();
    host.read_line(&mut line).expect("a line from the guest");
    assert_eq!(line, format!("guest-{tag}\n"));

    host.get_mut()
        .write_all(format!("host-{tag}\n").as_bytes())
        .expect("write");
    let read = topo.ssh(key, "debian", vm.ssh_port, &format!("sudo timeout 30 head -n1 {PORT}"));
    assert_eq!(read.trim(), format!("host-{tag}"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_guest_sees_the_agent_port_and_bytes_cross_it_across_a_restore() {
    let image = common::images::debian_image().await;
    let (topo, daemon, image_id) = Topology::with_daemon(&image, &[]);
    let key = TestKey::generate();
    let (status, vm) = daemon.api(
        "POST",
        "/vms?wait=ready&timeout=600",
        Some(&json!({"image_id": image_id, "ssh_authorized_keys": [key.public], "mem_mib": 512})),
    );
    assert_eq!(status, 201, "{vm}\n{}", daemon.log());
    let vm = VmView::from(&vm);

    // The Debian kernel builds virtio_console as a module (the agent's
    // image loads it); the port's name is what the agent looks for.
    let name = topo.ssh(
        &key,
        "debian",
        vm.ssh_port,
        "sudo modprobe virtio_console && cat /sys/class/virtio-ports/*/name",
    );
    assert_eq!(name.trim(), "org.hatch.agent.0");
    let mut host = connect(&daemon, &vm);
    both_ways(&topo, &key, &vm, &mut host, "before");

    let (status, snapshot) = daemon.api("POST", &format!("/vms/{}/snapshot", vm.id), None);
    assert_eq!(status, 201, "{snapshot}\n{}", daemon.log());
    drop(host);
    let (status, restored) = daemon.api("POST", &format!("/vms/{}/restore", vm.id), None);
    assert_eq!(status, 200, "{restored}\n{}", daemon.log());

    // The restored QEMU serves the port on a fresh socket; the guest kept
    // its driver (its RAM came back) and the port works as before.
    let mut host = connect(&daemon, &vm);
    both_ways(&topo, &key, &vm, &mut host, "after");
    assert_eq!(daemon.api("DELETE", &format!("/vms/{}", vm.id), None).0, 204);
}
