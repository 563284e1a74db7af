//! Fork's part of the document: `POST /vms/{id}/fork` and its schemas.
//! (Creating one VM from a snapshot is `snapshot_id` on `CreateVm`.)

use serde_json::{json, Value};

use super::{op, Op};
use crate::orch::MAX_FORK_COUNT;

/// What a new VM shares with the VM it comes from and what is its own.
const IDENTITY: &str = "Each new VM has its own id, IP, MAC, TAP, SSH port, hostname (its id) and cloud-init \
    instance-id; its guest agent applies them right after the restore (the NIC's MAC, the address by DHCP, the \
    hostname), so no two VMs answer for one address. Its memory, running processes and disk are those of the VM it \
    comes from as of the snapshot, and so are its image, vcpu_count, mem_mib and SSH host keys. New VMs belong to \
    the calling key, whose quotas are checked for all of them (403 quota_exceeded).";

#[rustfmt::skip]
pub(super) fn operations() -> Vec<(&'static str, &'static str, Op)> {
    vec![
        ("post", "/vms/{id}/fork", Op {
            body: Some("ForkVm"),
            finish: Some(describe),
            ..op("New VMs from a running or snapshotted VM, as it is now, each with its own identity; all or none", "vms", (201, "created: the new VMs, running and ready", Some("ForkedVms")), &[400, 403, 404, 409, 413, 415, 503])
        }),
    ]
}

fn describe(operation: &mut Value) {
    operation["description"] = json!(format!(
        "A running VM is paused for as long as its memory is saved, then resumes; a snapshotted VM's snapshot is \
         used as it is. {IDENTITY} Forking needs an image with hatch-agent. On any error no new VM exists."
    ));
    let responses = &mut operation["responses"];
    responses["400"]["description"] = json!(format!("invalid_field: count is not 1 to {MAX_FORK_COUNT}"));
    responses["409"]["description"] = json!(
        "invalid_state: the VM is stopped, in error, or in a transitional state (creating, snapshotting, ...); \
         agent_unavailable: its image has no guest agent"
    );
    responses["503"]["description"] = json!("unavailable: not enough guest addresses or host memory for them all");
}

/// The schemas fork uses.
pub(super) fn schemas(add: &mut impl FnMut(&str, Value)) {
    let object = |properties: Value, required: &[&str]| json!({ "type": "object", "additionalProperties": false, "properties": properties, "required": required });
    add(
        "ForkVm",
        object(
            json!({ "count": { "type": "integer", "minimum": 1, "maximum": MAX_FORK_COUNT, "default": 1, "description": "How many VMs to make" } }),
            &[],
        ),
    );
    add(
        "ForkedVms",
        object(
            json!({ "vms": { "type": "array", "items": { "$ref": "#/components/schemas/Vm" }, "description": "The new VMs, in no particular order" } }),
            &["vms"],
        ),
    );
}

/// The description of `snapshot_id` on `CreateVm`.
pub(super) fn snapshot_id_field() -> Value {
    json!({
        "type": "string",
        "description": format!(
            "Restore the new VM from this snapshot (any the key may read) instead of booting it. The guest is the \
             snapshot's, so image_id, template_id, vcpu_count, mem_mib, enable_network, user_data, user_data_base64, \
             ssh_authorized_keys, guest_ip and guest_mac are refused with it (400 naming the field); ttl_seconds, \
             idle_timeout_seconds, on_idle, restart_policy and egress apply. {IDENTITY}"
        )
    })
}
