//! `GET /vms` with a real guest (QEMU TCG, the `minimal` image and its
//! hatch-agent): the list is answered from JSON kept in memory, so every
//! change a client can see elsewhere must already be in the very next
//! list: the agent connecting, its connection ending with the VMM (a stop,
//! a killed VMM), and the VM's own state changes. The list's entry is
//! always what `GET /vms/{id}` (read from the database) shows.

use crate::common;

use std::time::Duration;

use common::agent::{ready_vm_with_agent, wait_agent};
use common::e2e::Topology;
use common::hatchd::{TestDaemon, TestKey};
use serde_json::{json, Value};

/// The VM as the very next `GET /vms` lists it.
fn listed(daemon: &TestDaemon, id: &str) -> Value {
    let (status, vms) = daemon.api("GET", "/vms", None);
    assert_eq!(status, 200, "{vms}");
    vms.as_array()
        .and_then(|vms| vms.iter().find(|vm| vm["id"] == id))
        .cloned()
        .unwrap_or_else(|| panic!("{id} is not listed: {vms}"))
}

/// Asserts the list shows the VM exactly as `shown` (a `GET /vms/{id}` answer).
fn assert_listed_as(daemon: &TestDaemon, shown: &Value) {
    let id = shown["id"].as_str().expect("a VM object");
    assert_eq!(&listed(daemon, id), shown, "GET /vms and GET /vms/{id} disagree");
}

#[tokio::test(flavor = "multi_thread")]
async fn vm_list_shows_agent_links_and_state_changes_in_the_very_next_answer() {
    let image = common::images::minimal_image().await;
    let (_topo, daemon, image_id) = Topology::with_daemon(&image, &[]);
    // The agent connects: listed as connected, with its version.
    let (vm, shown) = ready_vm_with_agent(&daemon, &image_id, &TestKey::generate());
    assert_listed_as(&daemon, &shown);

    // A stop: the next list shows the VM stopped, its agent gone with its VMM.
    let (status, stopped) = daemon.api("POST", &format!("/vms/{}/stop", vm.id), None);
    assert_eq!((status, stopped["state"].as_str()), (200, Some("stopped")), "{stopped}");
    let now = listed(&daemon, &vm.id);
    assert_eq!(
        (now["state"].as_str(), &now["agent"]),
        (Some("stopped"), &json!({"connected": false, "version": null})),
        "{now}"
    );
    let (_, shown) = daemon.api("GET", &format!("/vms/{}", vm.id), None);
    assert_listed_as(&daemon, &shown);

    // A start: running at once, connected once the agent says hello.
    let (status, started) = daemon.api("POST", &format!("/vms/{}/start", vm.id), None);
    assert_eq!(status, 200, "{started}");
    assert_eq!(listed(&daemon, &vm.id)["state"], started["state"]);
    let shown = wait_agent(&daemon, &vm.id);
    assert_listed_as(&daemon, &shown);

    // The VMM killed: its agent's stream ends (on QEMU's serial port that
    // is the only way it ends while the guest lives) and the VM is `error`.
    let pid = shown["pid"].as_i64().expect("a running VM's pid") as i32;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).expect("kill the VMM");
    let gone = daemon.wait_for_vm(&vm.id, "error without its agent", Duration::from_secs(60), |vm| {
        vm["state"] == "error" && vm["agent"]["connected"] == false
    });
    assert_eq!(gone["agent"], json!({"connected": false, "version": null}));
    assert_listed_as(&daemon, &gone);

    // A delete: gone from the very next list.
    let (status, _) = daemon.api("DELETE", &format!("/vms/{}", vm.id), None);
    assert_eq!(status, 204);
    let (_, vms) = daemon.api("GET", "/vms", None);
    assert_eq!(vms, json!([]));
}
