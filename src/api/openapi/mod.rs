//! The OpenAPI 3.1 description served at `GET /openapi.json`. Written by
//! hand (not derived from the route list) so that the contract test, which
//! compares it with [`super::routes`], can catch either side drifting.

mod agent;
mod fork;
mod schemas;

use axum::Json;
use serde_json::{json, Map, Value};

fn schema(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn json_content(schema: Value) -> Value {
    json!({ "application/json": { "schema": schema } })
}

/// A response: status, description, body (a schema name, a `[Name]` list, `text`, or none).
fn response(description: &str, body: Option<&str>) -> Value {
    match body {
        None => json!({ "description": description }),
        Some("text") => {
            json!({ "description": description, "content": { "text/plain": { "schema": { "type": "string" } } } })
        }
        Some("sse") => json!({
            "description": description,
            "content": { "text/event-stream": {
                "schema": { "type": "string", "description": "Server-Sent Events: each message has id: (the event's cursor), event: (its kind) and data: (the event as JSON, an Event); a comment every 15 s keeps the stream open" },
                "x-data-schema": schema("Event")
            } }
        }),
        Some(list) if list.starts_with('[') => {
            let items = schema(list.trim_matches(|c| c == '[' || c == ']'));
            json!({ "description": description, "content": json_content(json!({ "type": "array", "items": items })) })
        }
        Some(name) => json!({ "description": description, "content": json_content(schema(name)) }),
    }
}

struct Op {
    summary: &'static str,
    tag: &'static str,
    public: bool,
    /// Admin keys only: a member key gets 403 `forbidden`.
    admin: bool,
    body: Option<&'static str>,
    query: &'static [(&'static str, &'static str, &'static str)],
    ok: (u16, &'static str, Option<&'static str>),
    /// Also answers 202 with the VM in its transitional state when asked
    /// (`?async=true` or `Prefer: respond-async`).
    accepts_async: bool,
    errors: &'static [u16],
    /// Finishes what the fields above cannot say (non-JSON bodies, WebSocket).
    finish: Option<fn(&mut Value)>,
}

fn operation(method: &str, path: &str, op: &Op) -> Value {
    let mut parameters: Vec<Value> = Vec::new();
    if path.contains("{id}") {
        parameters.push(json!({ "name": "id", "in": "path", "required": true, "schema": { "type": "string" } }));
    }
    for (name, kind, description) in op.query {
        parameters.push(json!({ "name": name, "in": "query", "required": false, "description": description, "schema": { "type": kind } }));
    }
    if op.ok.2 == Some("sse") {
        parameters.push(json!({
            "name": "Last-Event-ID", "in": "header", "required": false, "schema": { "type": "integer", "minimum": 0 },
            "description": "Resume after this event id (sent by EventSource on reconnect; wins over since)"
        }));
    }
    if op.accepts_async {
        parameters.push(json!({
            "name": "async", "in": "query", "required": false, "schema": { "type": "boolean" },
            "description": "true: answer 202 once the operation is recorded (same as the header Prefer: respond-async); it finishes in the server whatever the client does"
        }));
    }
    let mut responses = Map::new();
    let (status, description, body) = op.ok;
    responses.insert(status.to_string(), response(description, body));
    if op.accepts_async {
        responses.insert(
            "202".into(),
            response(
                "accepted: the VM in its transitional state; the operation goes on in the server",
                Some("Vm"),
            ),
        );
    }
    let auth_errors: &[u16] = match (op.public, op.admin) {
        (true, _) => &[],
        (false, false) => &[401],
        (false, true) => &[401, 403],
    };
    // Mutating requests count against the key's rate limit (HATCH_RATE_LIMIT).
    let limited: &[u16] = if !op.public && method != "get" { &[429] } else { &[] };
    for code in op.errors.iter().chain(auth_errors).chain(limited).chain(&[500]) {
        let description = match code {
            403 if op.admin => "forbidden: this needs an admin key (or quota_exceeded on creates)",
            403 => "quota_exceeded: the create would take the owning key past a quota (field names it; the message gives the limit and the use)",
            429 => "rate_limited: too many mutating requests from this key; Retry-After gives the seconds to wait",
            404 if !op.public => "not_found (also for another key's objects: a member key sees only its own)",
            _ => "error",
        };
        let mut error = response(description, Some("Error"));
        if *code == 429 {
            error["headers"] = json!({ "Retry-After": { "description": "Seconds until a request is allowed again", "schema": { "type": "integer" } } });
        }
        responses.insert(code.to_string(), error);
    }
    let summary = if op.admin {
        format!("{} (admin keys only)", op.summary)
    } else {
        op.summary.to_string()
    };
    let mut value = json!({ "summary": summary, "tags": [op.tag], "responses": responses });
    if !parameters.is_empty() {
        value["parameters"] = Value::Array(parameters);
    }
    if let Some(name) = op.body {
        value["requestBody"] = json!({ "required": true, "content": json_content(schema(name)) });
    }
    if op.public {
        value["security"] = json!([]);
    }
    if let Some(finish) = op.finish {
        finish(&mut value);
    }
    value
}

fn op(
    summary: &'static str,
    tag: &'static str,
    ok: (u16, &'static str, Option<&'static str>),
    errors: &'static [u16],
) -> Op {
    Op {
        summary,
        tag,
        public: false,
        admin: false,
        body: None,
        query: &[],
        ok,
        accepts_async: false,
        errors,
        finish: None,
    }
}

/// An operation only admin keys may call.
fn admin_op(
    summary: &'static str,
    tag: &'static str,
    ok: (u16, &'static str, Option<&'static str>),
    errors: &'static [u16],
) -> Op {
    Op {
        admin: true,
        ..op(summary, tag, ok, errors)
    }
}

/// An operation that changes a VM, which may be answered asynchronously.
fn vm_op(
    summary: &'static str,
    tag: &'static str,
    ok: (u16, &'static str, Option<&'static str>),
    errors: &'static [u16],
) -> Op {
    Op {
        accepts_async: true,
        ..op(summary, tag, ok, errors)
    }
}

/// (method, path, operation) for every documented endpoint.
#[rustfmt::skip]
fn operations() -> Vec<(&'static str, &'static str, Op)> {
    const BAD: &[u16] = &[400, 413, 415];
    const VM_QUERY: &[(&str, &str, &str)] = &[
        ("wait", "string", "`ready`: answer once the guest is ready: its agent said hello, or (without an agent) it accepts SSH (ready_at is set)"),
        ("timeout", "string", "How long wait=ready waits (seconds, or 90s/5m); default 120"),
    ];
    const LOGS_QUERY: &[(&str, &str, &str)] =
        &[
            ("bytes", "integer", "How many bytes of the console's end (default 65536, at most 1048576)"),
            ("follow", "boolean", "true: keep the answer open and stream what the guest prints next"),
        ];
    const EVENTS_QUERY: &[(&str, &str, &str)] = &[
        ("vm", "string", "Only this VM's events (404 for a VM the key may not see); the stream ends after its deletion"),
        ("since", "string", "Send the events after this id (0: from the first; now: after the newest one recorded), then follow"),
        ("follow", "boolean", "false: end once the recorded events are sent (default true: then follow live)"),
    ];
    vec![
        ("get", "/healthz", Op { public: true, ..op("Liveness and counts", "health", (200, "healthy", Some("Health")), &[]) }),
        ("get", "/openapi.json", op("This document", "health", (200, "OpenAPI document", None), &[])),
        ("post", "/images", Op {
            body: Some("RegisterImage"),
            ..admin_op("Register existing kernel/initrd/rootfs files", "images", (201, "registered", Some("Image")), BAD)
        }),
        ("get", "/images", op("List images, newest first", "images", (200, "images", Some("[Image]")), &[])),
        ("get", "/images/{id}", op("Show an image (by id or name)", "images", (200, "the image", Some("Image")), &[404])),
        ("delete", "/images/{id}", admin_op("Delete an image no VM or template uses", "images", (204, "deleted", None), &[404, 409])),
        ("post", "/templates", Op {
            body: Some("CreateTemplate"),
            ..op("Create a template", "templates", (201, "created", Some("Template")), &[400, 404, 413, 415])
        }),
        ("get", "/templates", op("List templates (a member key: its own)", "templates", (200, "templates", Some("[Template]")), &[])),
        ("get", "/templates/{id}", op("Show a template", "templates", (200, "the template", Some("Template")), &[404])),
        ("delete", "/templates/{id}", op("Delete a template and its warm pool (its VMs and their snapshots)", "templates", (204, "deleted", None), &[404])),
        ("post", "/vms", Op {
            body: Some("CreateVm"),
            query: VM_QUERY,
            ..vm_op("Create and boot a VM, or with snapshot_id restore one from a snapshot with a fresh identity; owned by the calling key (its quotas max_vms, max_vcpus and max_mem_mib are checked)", "vms", (201, "created", Some("Vm")), &[400, 403, 404, 409, 413, 415, 503, 504])
        }),
        ("get", "/vms", op("List VMs, oldest first (a member key: its own; VMs waiting in warm pools are never listed)", "vms", (200, "VMs", Some("[Vm]")), &[])),
        ("get", "/vms/{id}", op("Show a VM", "vms", (200, "the VM", Some("Vm")), &[404])),
        ("delete", "/vms/{id}", vm_op("Delete a VM and release everything it held (state deleting until done)", "vms", (204, "deleted", None), &[404, 409])),
        ("post", "/vms/{id}/stop", vm_op("Stop a VM (keeps its network identity); a stopped VM is answered as it is", "vms", (200, "stopped", Some("Vm")), &[404, 409])),
        ("post", "/vms/{id}/start", vm_op("Start a stopped VM; a running VM is answered as it is", "vms", (200, "started", Some("Vm")), &[404, 409, 503])),
        ("get", "/vms/{id}/logs", Op {
            query: LOGS_QUERY,
            ..op("Serial console tail", "vms", (200, "console text", Some("text")), &[400, 404])
        }),
        ("get", "/vms/{id}/events", op("The VM's events (state changes, readiness, repairs, idle decisions, failed operations), oldest first", "vms", (200, "events", Some("[VmEvent]")), &[404])),
        ("get", "/events", Op {
            query: EVENTS_QUERY,
            ..op("Live events as Server-Sent Events: everything recorded after the cursor, then what happens (an admin key: every VM and host-wide events; a member key: its own VMs)", "events", (200, "event stream", Some("sse")), &[400, 404])
        }),
        ("get", "/host/events", admin_op("Host-wide repairs by the reconciler (newest 1000, oldest first)", "health", (200, "events", Some("[HostEvent]")), &[])),
        ("post", "/vms/{id}/snapshot", vm_op("Save a running VM (memory, state, disk) and stop its VMM; it keeps its network identity. A snapshotted VM answers 200 with the snapshot it was suspended with", "snapshots", (201, "snapshot taken", Some("Snapshot")), &[403, 404, 409, 503])),
        ("post", "/vms/{id}/owner", Op {
            body: Some("ReassignVm"),
            ..admin_op("Give a VM, with its snapshots and routes, to another active key (e.g. after its key was revoked)", "vms", (200, "reassigned", Some("Vm")), &[400, 404, 413, 415])
        }),
        ("post", "/vms/{id}/restore", Op {
            body: Some("RestoreVm"),
            ..vm_op("Restore a snapshotted VM (the snapshot it was suspended with unless snapshot_id is given); a running VM is answered as it is. A disk stored as its differences from the image needs that image's root filesystem unchanged: 409 `conflict` naming the image otherwise (the VM stays snapshotted)", "snapshots", (200, "running again", Some("Vm")), &[400, 404, 409, 422, 503])
        }),
        ("get", "/vms/{id}/snapshots", op("A VM's complete snapshots, newest first", "snapshots", (200, "snapshots", Some("[Snapshot]")), &[404])),
        ("delete", "/snapshots/{id}", op("Delete a snapshot (409 invalid_state for the one a snapshotted VM would restore from)", "snapshots", (204, "deleted", None), &[404, 409])),
        ("post", "/vms/{id}/routes", Op {
            body: Some("CreateRoute"),
            ..op("Expose a VM port on <subdomain>.<HATCH_PROXY_BASE_DOMAIN> through the proxy", "routes", (201, "created", Some("Route")), &[400, 403, 404, 409, 413, 415])
        }),
        ("get", "/vms/{id}/routes", op("A VM's routes", "routes", (200, "routes", Some("[Route]")), &[404])),
        ("delete", "/routes/{id}", op("Delete a route", "routes", (204, "deleted", None), &[404])),
        ("post", "/keys", Op {
            body: Some("CreateKey"),
            ..admin_op("Create an API key (shown once) with a role (default member) and quotas", "keys", (201, "created", Some("NewApiKey")), BAD)
        }),
        ("get", "/keys", admin_op("List API keys", "keys", (200, "keys", Some("[ApiKey]")), &[])),
        ("get", "/keys/me", op("The calling key: its role, quotas and what its objects use now", "keys", (200, "the key", Some("KeyUsage")), &[])),
        ("patch", "/keys/{id}", Op {
            body: Some("UpdateKey"),
            ..admin_op("Replace a key's quotas", "keys", (200, "updated", Some("ApiKey")), &[400, 404, 413, 415])
        }),
        ("delete", "/keys/{id}", admin_op("Revoke an API key (its VMs stay; the last active admin key cannot be revoked: 409)", "keys", (204, "revoked", None), &[404, 409])),
        ("get", "/audit", Op {
            query: &[("limit", "integer", "How many entries (default 100, at most 10000)")],
            ..admin_op("Mutating requests, newest first: time, key, method, path, status", "keys", (200, "entries", Some("[AuditEntry]")), &[400])
        }),
        ("get", "/metrics", admin_op(
            "Prometheus metrics, text format 0.0.4 (Content-Type text/plain; version=0.0.4): VMs by state, per-VM CPU, memory and network bytes, operation, API and proxy latency histograms, idle decisions, snapshot bytes, reconcile repairs. Every VM's series: admin keys only, or no key at all when the daemon runs with HATCH_METRICS_PUBLIC=true",
            "health", (200, "the metrics", Some("text")), &[400],
        )),
    ]
}

pub fn document() -> Value {
    let mut paths = Map::new();
    for (method, path, op) in operations()
        .into_iter()
        .chain(fork::operations())
        .chain(agent::operations())
    {
        let item = paths.entry(path.to_string()).or_insert_with(|| json!({}));
        item[method] = operation(method, path, &op);
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Hatch",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "A control plane that turns a Linux host into a small cloud of microVMs.\n\nKeys are `admin` or `member`. Admins manage keys, images and the host and see every object (with its `owner_key_id`). Members create and manage their own VMs, snapshots, routes and templates and may use any image; another key's object answers 404, an admin-only endpoint 403 `forbidden`. Creates are checked against the owning key's quotas (403 `quota_exceeded`); mutating requests against a per-key rate limit (429 `rate_limited` with Retry-After)."
        },
        "security": [{ "bearer": [] }],
        "paths": paths,
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "schemas": schemas::all()
        }
    })
}

pub async fn serve() -> Json<Value> {
    Json(document())
}
