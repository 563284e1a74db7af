//! JSON Schemas of the API's request and response bodies.

use serde_json::{json, Map, Value};

use crate::api::error::ErrorKind;
use crate::model::{OnIdle, VmState, MAX_LIFETIME_SECONDS, MAX_WARM_POOL};

/// An object schema; `required` lists the properties always present.
fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn object(properties: Value, required: &[&str]) -> Value {
    json!({ "type": "object", "additionalProperties": false, "properties": properties, "required": required })
}

fn nullable(type_name: &str) -> Value {
    json!({ "type": [type_name, "null"] })
}

fn timestamp() -> Value {
    json!({ "type": "string", "format": "date-time" })
}

fn string_list() -> Value {
    json!({ "type": "array", "items": { "type": "string" } })
}

// user_data is bytes; JSON carries it as text or as base64 (model::UserData).
const USER_DATA_RULE: &str = "cloud-init user data. Shown as user_data when its bytes are valid UTF-8, \
    otherwise as user_data_base64 (standard base64); never both.";

fn user_data_out(nullable_always_present: bool) -> Value {
    if nullable_always_present {
        json!({ "type": ["string", "null"], "description": format!("{USER_DATA_RULE} Null when there is none or when it is binary.") })
    } else {
        json!({ "type": "string", "description": format!("{USER_DATA_RULE} Absent when there is none or when it is binary.") })
    }
}

fn user_data_base64_out() -> Value {
    json!({ "type": "string", "contentEncoding": "base64", "description": "The user data in standard base64, present only when it is not valid UTF-8" })
}

fn user_data_in() -> Value {
    json!({ "type": "string", "maxLength": 65536, "description": "cloud-init user data as text (cloud-config, script, MIME multipart), at most 64 KiB; not with user_data_base64" })
}

fn user_data_base64_in() -> Value {
    json!({
        "type": "string",
        "contentEncoding": "base64",
        "description": "cloud-init user data of any bytes (e.g. gzip-compressed) in standard base64 with padding; \
            whitespace is ignored; at most 64 KiB once decoded; not with user_data"
    })
}

/// `properties` with `ttl_seconds`, `idle_timeout_seconds` and `on_idle`
/// added (VMs, templates and their create requests share them).
fn with_lifetime(mut properties: Value) -> Value {
    let seconds = |what: &str| {
        json!({
            "type": "integer",
            "minimum": 1,
            "maximum": MAX_LIFETIME_SECONDS,
            "description": format!("{what}; whole seconds, at most {MAX_LIFETIME_SECONDS} (365 days). Absent: not set")
        })
    };
    properties["ttl_seconds"] =
        seconds("The VM is deleted (like DELETE, whatever its state) this long after it was created");
    properties["idle_timeout_seconds"] = seconds(
        "How long without a proxied request, an exec or file call, or an established SSH session through its port before on_idle applies \
         (default HATCH_IDLE_TIMEOUT). Setting it idles the VM even without routes",
    );
    properties["on_idle"] = json!({
        "type": "string",
        "enum": OnIdle::ALL.map(OnIdle::as_str),
        "description": "What happens to a running VM once idle: snapshot (snapshotted; auto_wake routes wake it), \
            stop (stopped; start boots it again) or none (never idled). Absent: snapshot, but only while the VM has \
            a route, unless idle_timeout_seconds is set"
    });
    properties
}

fn warm_pool_size() -> Value {
    json!({
        "type": "integer",
        "minimum": 0,
        "maximum": MAX_WARM_POOL,
        "default": 0,
        "description": format!(
            "VMs of the template kept booted to ready and snapshotted (0 to {MAX_WARM_POOL}). POST /vms with this \
             template_id and nothing else but ttl_seconds, idle_timeout_seconds, on_idle or restart_policy takes one \
             and restores it (a boot when none is ready); the pool refills in the background. Pool VMs count against \
             no quota until taken and are not listed; a member key's pools together may hold at most what its \
             quotas would let it run (403 quota_exceeded naming warm_pool_size)"
        )
    })
}

pub fn all() -> Map<String, Value> {
    let codes: Vec<&str> = ErrorKind::ALL.iter().map(|k| k.code()).collect();
    let states: Vec<&str> = VmState::ALL.iter().map(|s| s.as_str()).collect();
    let mut states_or_null: Vec<Value> = states.iter().map(|s| json!(s)).collect();
    states_or_null.push(Value::Null);
    let mut schemas = Map::new();
    let mut add = |name: &str, schema: Value| {
        schemas.insert(name.to_string(), schema);
    };
    add(
        "Error",
        object(
            json!({ "error": object(
                json!({
                    "code": { "type": "string", "enum": codes },
                    "message": { "type": "string" },
                    "field": { "type": ["string", "null"], "description": "The request field at fault" }
                }),
                &["code", "message", "field"],
            )}),
            &["error"],
        ),
    );
    add(
        "Health",
        object(
            json!({
                "status": { "type": "string", "enum": ["ok", "degraded"] },
                "version": { "type": "string" },
                "vms": object(json!({
                    "total": { "type": "integer" },
                    "by_state": { "type": "object", "additionalProperties": { "type": "integer" } }
                }), &["total", "by_state"]),
                "images": { "type": "integer" },
                "snapshot_storage": object(json!({
                    "kind": { "type": "string", "enum": ["local", "s3"] },
                    "ok": { "type": "boolean" },
                    "detail": { "type": "string" }
                }), &["kind", "ok", "detail"])
            }),
            &["status", "version", "vms", "images", "snapshot_storage"],
        ),
    );
    add(
        "Image",
        object(
            json!({
                "id": { "type": "string" },
                "name": { "type": "string" },
                "profile": { "type": "string", "enum": ["debian", "minimal", "registered"] },
                "kernel_path": nullable("string"),
                "bzimage_path": nullable("string"),
                "initrd_path": nullable("string"),
                "rootfs_path": nullable("string"),
                "login_user": { "type": "string" },
                "boot_args": { "type": "string" },
                "size_bytes": { "type": "integer" },
                "created_at": timestamp()
            }),
            &[
                "id",
                "name",
                "profile",
                "kernel_path",
                "bzimage_path",
                "initrd_path",
                "rootfs_path",
                "login_user",
                "boot_args",
                "size_bytes",
                "created_at",
            ],
        ),
    );
    add(
        "RegisterImage",
        object(
            json!({
                "name": { "type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$" },
                "kernel_path": { "type": "string", "description": "Absolute path to an ELF vmlinux or a bzImage" },
                "initrd_path": { "type": "string" },
                "rootfs_path": { "type": "string" },
                "login_user": { "type": "string", "default": "root" },
                "boot_args": { "type": "string", "maxLength": 1024 }
            }),
            &["name", "kernel_path"],
        ),
    );
    add(
        "Template",
        object(
            with_lifetime(json!({
                "id": { "type": "string" },
                "name": { "type": "string" },
                "image_id": { "type": "string" },
                "vcpu_count": { "type": "integer" },
                "mem_mib": { "type": "integer" },
                "user_data": user_data_out(true),
                "user_data_base64": user_data_base64_out(),
                "ssh_authorized_keys": string_list(),
                "egress": {
                    "description": "internet (default: all but HATCH_EGRESS_DENY_CIDRS), none (only DHCP and DNS on the gateway) or at most 64 CIDRs the guest may reach",
                    "oneOf": [
                        { "type": "string", "enum": ["internet", "none"] },
                        { "type": "array", "maxItems": 64, "items": { "type": "string", "example": "10.20.0.0/16" } }
                    ]
                },
                "created_at": timestamp(),
                "owner_key_id": { "type": "string", "description": "The API key that owns this object (absent: admin-owned)" },
                "warm_pool_size": warm_pool_size(),
                "warm_pool": object(
                    json!({
                        "size": { "type": "integer", "description": "warm_pool_size" },
                        "ready": { "type": "integer", "description": "Pool VMs snapshotted and ready to be taken" },
                        "filling": { "type": "integer", "description": "Pool VMs being made (booting, being snapshotted or stored)" }
                    }),
                    &["size", "ready", "filling"],
                )
            })),
            &[
                "id",
                "name",
                "image_id",
                "vcpu_count",
                "mem_mib",
                "user_data",
                "ssh_authorized_keys",
                "created_at",
                "warm_pool_size",
                "warm_pool",
            ],
        ),
    );
    add(
        "CreateTemplate",
        object(
            with_lifetime(json!({
                "name": { "type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$" },
                "image_id": { "type": "string", "description": "Image id or name" },
                "vcpu_count": { "type": "integer", "minimum": 1, "maximum": 32 },
                "mem_mib": { "type": "integer", "minimum": 128, "description": "At most the host's memory" },
                "user_data": user_data_in(),
                "user_data_base64": user_data_base64_in(),
                "ssh_authorized_keys": string_list(),
                "egress": {
                    "description": "internet (default: all but HATCH_EGRESS_DENY_CIDRS), none (only DHCP and DNS on the gateway) or at most 64 CIDRs the guest may reach",
                    "oneOf": [
                        { "type": "string", "enum": ["internet", "none"] },
                        { "type": "array", "maxItems": 64, "items": { "type": "string", "example": "10.20.0.0/16" } }
                    ]
                },
                "warm_pool_size": warm_pool_size()
            })),
            &["name", "image_id"],
        ),
    );
    add(
        "Vm",
        object(
            with_lifetime(json!({
                "id": { "type": "string", "example": "vm-xyz789" },
                "state": { "type": "string", "enum": states },
                "image_id": { "type": "string" },
                "vcpu_count": { "type": "integer" },
                "mem_mib": { "type": "integer" },
                "limits": {
                    "type": "object",
                    "description": "cgroup v2 limits of the VM's VMM, computed from its size; applied when the host's cgroup v2 hierarchy allows (see `hatch doctor`)",
                    "properties": {
                        "memory_max_bytes": { "type": "integer", "description": "memory.max: guest memory plus 256 MiB VMM overhead" },
                        "cpu_max": { "type": "string", "description": "cpu.max: quota and period in microseconds, vcpu_count whole CPUs", "example": "200000 100000" },
                        "pids_max": { "type": "integer", "description": "pids.max" }
                    },
                    "required": ["memory_max_bytes", "cpu_max", "pids_max"],
                    "additionalProperties": false
                },
                "enable_network": { "type": "boolean" },
                "guest_ip": { "type": "string", "description": "Absent when networking is off" },
                "guest_mac": { "type": "string" },
                "tap_name": { "type": "string" },
                "ssh_port": { "type": "integer" },
                "egress": {
                    "description": "internet (default: all but HATCH_EGRESS_DENY_CIDRS), none (only DHCP and DNS on the gateway) or at most 64 CIDRs the guest may reach",
                    "oneOf": [
                        { "type": "string", "enum": ["internet", "none"] },
                        { "type": "array", "maxItems": 64, "items": { "type": "string", "example": "10.20.0.0/16" } }
                    ]
                },
                "user_data": user_data_out(false),
                "user_data_base64": user_data_base64_out(),
                "ssh_authorized_keys": string_list(),
                "hypervisor": { "type": "string", "enum": ["qemu", "firecracker"] },
                "pid": { "type": "integer" },
                "state_reason": { "type": "string" },
                "ready_at": timestamp(),
                "created_at": timestamp(),
                "updated_at": timestamp(),
                "last_activity_at": { "type": "string", "format": "date-time", "description": "The last proxied request, exec or file call, or the last idle check that saw an SSH session open" },
                "idle_status": { "type": "string", "description": "The idle monitor's last decision: kept: …, suspended: … (snapshotted) or stopped: …" },
                "restart_policy": { "type": "string", "enum": ["never", "on-failure"] },
                "snapshot_id": { "type": "string", "description": "While snapshotted: the snapshot restore and wake load" },
                "expires_at": { "type": "string", "format": "date-time", "description": "created_at + ttl_seconds: when the VM is deleted (absent without a TTL)" },
                "owner_key_id": { "type": "string", "description": "The API key that owns the VM (absent: admin-owned)" },
                "pool_template_id": { "type": "string", "description": "Present while the VM waits in this template's warm pool (admin keys only see such VMs, and only by id)" },
                "agent": { "$ref": "#/components/schemas/AgentStatus", "description": "The guest agent's connection now (exec and files need it)" }
            })),
            &[
                "agent",
                "id",
                "state",
                "restart_policy",
                "image_id",
                "vcpu_count",
                "mem_mib",
                "limits",
                "enable_network",
                "hypervisor",
                "created_at",
                "updated_at",
            ],
        ),
    );
    add(
        "CreateVm",
        object(
            with_lifetime(json!({
                "snapshot_id": super::fork::snapshot_id_field(),
                "image_id": { "type": "string", "description": "Default: the template's image, HATCH_DEFAULT_IMAGE, or the newest image" },
                "template_id": { "type": "string", "description": "A template whose defaults apply. With nothing else but ttl_seconds, idle_timeout_seconds, on_idle or restart_policy, a VM of its warm pool is taken and restored when one is ready" },
                "vcpu_count": { "type": "integer", "minimum": 1, "maximum": 32 },
                "mem_mib": { "type": "integer", "minimum": 128, "description": "At most the host's memory" },
                "enable_network": { "type": "boolean", "default": true },
                "guest_ip": { "type": "string", "format": "ipv4" },
                "guest_mac": { "type": "string", "example": "02:fc:00:11:22:33" },
                "user_data": user_data_in(),
                "user_data_base64": user_data_base64_in(),
                "ssh_authorized_keys": string_list(),
                "restart_policy": {
                    "type": "string",
                    "enum": ["never", "on-failure"],
                    "default": "never",
                    "description": "on-failure: start the VM again when its VMM dies unasked"
                },
                "egress": {
                    "description": "internet (default: all but HATCH_EGRESS_DENY_CIDRS), none (only DHCP and DNS on the gateway) or at most 64 CIDRs the guest may reach",
                    "oneOf": [
                        { "type": "string", "enum": ["internet", "none"] },
                        { "type": "array", "maxItems": 64, "items": { "type": "string", "example": "10.20.0.0/16" } }
                    ]
                }
            })),
            &[],
        ),
    );
    add(
        "VmEvent",
        object(
            json!({
                "vm_id": { "type": "string" },
                "kind": { "type": "string", "enum": ["state", "ready", "repair", "idle", "error", "agent"], "description": "state: a state change; ready: the guest is ready (its agent said hello, or it accepts SSH); agent: the guest agent connected and the guest clock was set from the host's (reason says by how much it was off); repair: the reconciler fixed drifted host state; idle: the idle monitor's decision changed; error: an operation failed (reason says why). Only state changes the state" },
                "from_state": { "type": ["string", "null"], "enum": states_or_null },
                "to_state": { "type": "string", "enum": states },
                "reason": nullable("string"),
                "at": timestamp()
            }),
            &["vm_id", "kind", "from_state", "to_state", "reason", "at"],
        ),
    );
    add(
        "Event",
        object(
            json!({
                "id": { "type": "integer", "description": "The cursor: later events have larger ids" },
                "vm_id": { "type": ["string", "null"], "description": "null: a host-wide event" },
                "kind": { "type": "string", "enum": ["state", "ready", "repair", "idle", "error", "agent"] },
                "from_state": { "type": ["string", "null"], "enum": states_or_null },
                "to_state": { "type": ["string", "null"], "enum": states_or_null, "description": "null for host-wide events and for the VM's deletion (a state event)" },
                "reason": nullable("string"),
                "at": timestamp()
            }),
            &["id", "vm_id", "kind", "from_state", "to_state", "reason", "at"],
        ),
    );
    add(
        "HostEvent",
        object(
            json!({
                "kind": { "type": "string", "enum": ["repair"] },
                "detail": { "type": "string" },
                "at": timestamp()
            }),
            &["kind", "detail", "at"],
        ),
    );
    add(
        "Snapshot",
        object(
            json!({
                "id": { "type": "string" },
                "vm_id": { "type": "string" },
                "created_at": timestamp(),
                "hypervisor": { "type": "string", "enum": ["qemu", "firecracker"] },
                "artefacts": { "type": "array", "items": object(json!({
                    "name": { "type": "string" },
                    "size_bytes": { "type": "integer", "description": "Logical size of the saved file" },
                    "compressed_bytes": { "type": "integer", "description": "Size as stored (zstd)" },
                    "sha256": { "type": "string", "description": "SHA-256 of the stored artefact, checked before restore" },
                    "base": object(json!({
                        "image_id": { "type": "string" },
                        "size_bytes": { "type": "integer", "description": "Logical size of the image's root filesystem" },
                        "sha256": { "type": "string", "description": "Digest of the root filesystem's content (size, then each non-zero 64 KiB block with its index)" }
                    }), &["image_id", "size_bytes", "sha256"])
                }), &["name", "size_bytes", "compressed_bytes", "sha256"]) },
                "total_bytes": { "type": "integer" },
                "durable": { "type": "boolean", "description": "Whether the artefacts are compressed, checksummed and in their final store (local directory or S3). A snapshot is restorable at once, from its local copy; it is stored in the background, and `artefacts` is empty until then" },
                "owner_key_id": { "type": "string", "description": "The API key that owns this snapshot (the VM's owner) (absent: admin-owned)" }
            }),
            &[
                "id",
                "vm_id",
                "created_at",
                "hypervisor",
                "artefacts",
                "total_bytes",
                "durable",
            ],
        ),
    );
    add(
        "Route",
        object(
            json!({
                "id": { "type": "string" },
                "vm_id": { "type": "string" },
                "subdomain": { "type": "string" },
                "target_port": { "type": "integer", "minimum": 1, "maximum": 65535 },
                "auto_wake": { "type": "boolean" },
                "created_at": timestamp(),
                "owner_key_id": { "type": "string", "description": "The API key that owns this route (the VM's owner) (absent: admin-owned)" }
            }),
            &["id", "vm_id", "subdomain", "target_port", "auto_wake", "created_at"],
        ),
    );
    add(
        "CreateRoute",
        object(
            json!({
                "subdomain": { "type": "string", "pattern": "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", "description": "Generated from the VM id when absent; reserved names are refused" },
                "target_port": { "type": "integer", "minimum": 1, "maximum": 65535 },
                "auto_wake": { "type": "boolean", "description": "Restore a snapshotted VM on request (default true)" }
            }),
            &["target_port"],
        ),
    );
    add(
        "RestoreVm",
        object(
            json!({ "snapshot_id": { "type": "string", "description": "Default: the snapshot the VM was suspended with" } }),
            &[],
        ),
    );
    let key_properties = json!({
        "id": { "type": "string" },
        "name": { "type": "string" },
        "prefix": { "type": "string", "description": "The key's first characters, for telling keys apart" },
        "role": { "type": "string", "enum": ["admin", "member"] },
        "quotas": schema_ref("Quotas"),
        "created_at": timestamp(),
        "revoked_at": timestamp()
    });
    let quota = |what: &str| json!({ "type": ["integer", "null"], "minimum": 0, "description": format!("{what}; null: unlimited") });
    add(
        "Quotas",
        object(
            json!({
                "max_vms": quota("VMs the key may own (any state), at most 100000"),
                "max_vcpus": quota("Sum of vcpu_count over its VMs, at most 1000000"),
                "max_mem_mib": quota("Sum of mem_mib over its VMs, at most 1073741824"),
                "max_snapshots": quota("Snapshots of its VMs, at most 100000"),
                "max_routes": quota("Routes to its VMs, at most 100000")
            }),
            &[],
        ),
    );
    add(
        "ApiKey",
        object(
            key_properties.clone(),
            &["id", "name", "prefix", "role", "quotas", "created_at"],
        ),
    );
    let mut with_usage = key_properties.clone();
    with_usage["usage"] = object(
        json!({
            "vms": { "type": "integer" },
            "vcpus": { "type": "integer" },
            "mem_mib": { "type": "integer" },
            "snapshots": { "type": "integer" },
            "routes": { "type": "integer" }
        }),
        &["vms", "vcpus", "mem_mib", "snapshots", "routes"],
    );
    add(
        "KeyUsage",
        object(
            with_usage,
            &["id", "name", "prefix", "role", "quotas", "created_at", "usage"],
        ),
    );
    add(
        "UpdateKey",
        object(json!({ "quotas": schema_ref("Quotas") }), &["quotas"]),
    );
    add(
        "ReassignVm",
        object(
            json!({ "key_id": { "type": "string", "description": "An active key" } }),
            &["key_id"],
        ),
    );
    add(
        "AuditEntry",
        object(
            json!({
                "id": { "type": "integer" },
                "at": timestamp(),
                "key_id": { "type": ["string", "null"] },
                "method": { "type": "string" },
                "path": { "type": "string", "description": "The path only (never the query or body)" },
                "status": { "type": "integer" }
            }),
            &["id", "at", "key_id", "method", "path", "status"],
        ),
    );
    let mut new_key = key_properties;
    new_key["key"] = json!({ "type": "string", "description": "The key itself; shown only in this response" });
    add(
        "NewApiKey",
        object(
            new_key,
            &["id", "name", "prefix", "role", "quotas", "created_at", "key"],
        ),
    );
    add(
        "CreateKey",
        object(
            json!({
                "name": { "type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$" },
                "role": { "type": "string", "enum": ["admin", "member"], "description": "Default member" },
                "quotas": schema_ref("Quotas")
            }),
            &["name"],
        ),
    );
    super::agent::schemas(&mut add);
    super::fork::schemas(&mut add);
    schemas
}
