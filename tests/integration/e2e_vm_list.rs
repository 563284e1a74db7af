//! `GET /vms` with a real guest (QEMU TCG, the `minimal` image and its
//! hatch-agent): the list is answered from JSON kept in memory, so every
//! change a client can see elsewhere must already be in the very next
//! list: the agent connecting, the agent's connection ending while the VM
//! runs, and the VM's own state changes. The list's entry is always what
//! `GET /vms/{id}` (read from the database) shows.

use crate::common;

use std::time::Duration;

use common::agent::{sh, wait_agent};
use common::e2e::{create_ready_vm, Topology};
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
    let key = TestKey::generate();
    let vm = create_ready_vm(&daemon, &image_id, &key, json!({}));

    // The agent connects: listed as connected, with its version.
    let shown = wait_agent(&daemon, &vm.id);
    assert!(
        shown["agent"]["version"].as_str().is_some_and(|v| !v.is_empty()),
        "{shown}"
    );
    assert_listed_as(&daemon, &shown);

    // The agent's connection ends while the VM keeps running: the guest's
    // agent is killed and cannot be restarted for half a minute (its
    // /init restarts it every second once it is executable again). Started
    // in a session of its own so the exec's answer comes first.
    sh(
        &daemon,
        &vm.id,
        "setsid sh -c 'sleep 1; chmod -x /usr/sbin/hatch-agent; kill -9 $(pidof hatch-agent); \
         sleep 30; chmod +x /usr/sbin/hatch-agent' </dev/null >/dev/null 2>&1 &",
    );
    let gone = daemon.wait_for_vm(&vm.id, "without its agent", Duration::from_secs(60), |vm| {
        vm["agent"]["connected"] == false
    });
    assert_eq!(gone["state"], "running", "{gone}");
    assert_eq!(gone["agent"], json!({"connected": false, "version": null}));
    assert_listed_as(&daemon, &gone);

    // It connects again.
    let back = wait_agent(&daemon, &vm.id);
    assert_listed_as(&daemon, &back);

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

    // A delete: gone from the very next list.
    let (status, _) = daemon.api("DELETE", &format!("/vms/{}", vm.id), None);
    assert_eq!(status, 204);
    let (_, vms) = daemon.api("GET", "/vms", None);
    assert_eq!(vms, json!([]));
}
