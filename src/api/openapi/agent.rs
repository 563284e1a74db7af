//! The guest agent's part of the document: exec (plain and WebSocket),
//! files, and their schemas. Their bodies are not all JSON, so each
//! operation finishes its own description (see [`super::Op::finish`]).

use serde_json::{json, Value};

use super::{json_content, op, schema, Op};
use crate::api::exec::{DEFAULT_EXEC_TIMEOUT_S, MAX_EXEC_OUTPUT_BYTES, MAX_EXEC_TIMEOUT_S};
use crate::api::exec_stream::{STDERR, STDOUT};

/// Why the agent routes answer 409, and what wakes.
const AGENT_NOTE: &str = "The VM must be running (a snapshotted VM is woken first, like a proxied request); \
    409 agent_unavailable when its guest agent is not connected (an image without hatch-agent: the request \
    waits up to 15 s for an agent that is still starting), 409 invalid_state for a VM that is not running. \
    The call counts as activity for idle management while it lasts.";

/// `/vms/{id}/files?path=…`: every method takes the same query.
fn file_op(
    summary: &'static str,
    ok: (u16, &'static str, Option<&'static str>),
    errors: &'static [u16],
    finish: fn(&mut Value),
) -> Op {
    const FILE_QUERY: &[(&str, &str, &str)] = &[
        (
            "path",
            "string",
            "Absolute path in the guest (required; no NUL, no '..' components)",
        ),
        ("mode", "string", "PUT: octal permission bits, e.g. 0755 (default 0644)"),
        ("uid", "integer", "PUT: owner uid (default the agent's, root)"),
        ("gid", "integer", "PUT: group gid"),
        (
            "list",
            "boolean",
            "GET: true lists the directory (a FileListing) instead of reading a file",
        ),
    ];
    Op {
        query: FILE_QUERY,
        finish: Some(finish),
        ..op(summary, "guest", ok, errors)
    }
}

/// (method, path, operation) of every agent endpoint.
#[rustfmt::skip]
pub(super) fn operations() -> Vec<(&'static str, &'static str, Op)> {
    vec![
        ("post", "/vms/{id}/exec", Op {
            body: Some("ExecRequest"),
            finish: Some(exec_post),
            ..op("Run a command in the guest through its agent and answer when it has ended", "guest", (200, "the command ended (whatever its exit code)", Some("ExecResult")), &[400, 403, 404, 409, 413, 415])
        }),
        ("get", "/vms/{id}/exec", Op {
            finish: Some(exec_websocket),
            ..op("Run a command interactively over a WebSocket (stdin, stdout, stderr, optional TTY)", "guest", (101, "switched to the WebSocket protocol", None), &[400, 404])
        }),
        ("put", "/vms/{id}/files", file_op("Write a file in the guest from the request body (streamed; written beside it and renamed over it)", (200, "written", Some("FileWritten")), &[400, 403, 404, 409], files_put)),
        ("get", "/vms/{id}/files", file_op("Read a file in the guest (streamed), or list a directory with list=true", (200, "the file's bytes, or the listing", None), &[400, 403, 404, 409], files_get)),
        ("delete", "/vms/{id}/files", file_op("Delete a file (or an empty directory) in the guest", (204, "deleted", None), &[400, 403, 404, 409], note_agent)),
    ]
}

fn note_agent(operation: &mut Value) {
    operation["description"] = json!(AGENT_NOTE);
    operation["responses"]["404"]["description"] =
        json!("not_found: no such VM (or another key's), or no such file in the guest");
    operation["responses"]["409"]["description"] = json!("agent_unavailable or invalid_state (see the description)");
    if operation["responses"].get("403").is_some() {
        operation["responses"]["403"]["description"] = json!("forbidden: the guest refused (permission denied)");
    }
}

fn exec_post(operation: &mut Value) {
    note_agent(operation);
    operation["description"] = json!(format!(
        "{AGENT_NOTE} The command runs with the given argv (no shell), env, cwd and user; stdin is given whole. \
         It is killed with its process group after timeout_s (default {DEFAULT_EXEC_TIMEOUT_S}, at most \
         {MAX_EXEC_TIMEOUT_S}): timed_out is true. Each of stdout and stderr keeps at most {MAX_EXEC_OUTPUT_BYTES} \
         bytes (then *_truncated). A command that cannot start (not found, bad cwd or user) is a 400 naming cmd, \
         cwd or user; an agent that has not answered 15 s after timeout_s is a 409 agent_unavailable."
    ));
}

fn exec_websocket(operation: &mut Value) {
    note_agent(operation);
    operation["description"] = json!(format!(
        "{AGENT_NOTE} A WebSocket upgrade (404 before it for an unknown VM; agent errors come as an error message).\n\n\
         Client to server: first one text message, an ExecStart (JSON: the fields of ExecRequest without stdin, \
         plus tty, rows, cols). Then binary messages are stdin; text messages are control: \
         {{\"type\":\"resize\",\"rows\":R,\"cols\":C}}, {{\"type\":\"eof\"}} (close stdin), {{\"type\":\"kill\"}}. \
         Closing the socket kills the command.\n\n\
         Server to client: binary messages whose first byte names the stream ({STDOUT} stdout, {STDERR} stderr; \
         with a TTY everything is stdout) followed by its bytes; then one text message, \
         {{\"type\":\"exit\",\"exit_code\",\"signal\",\"timed_out\",\"duration_ms\"}} or \
         {{\"type\":\"error\",\"code\",\"message\",\"field\"}} (codes as in Error), and the close. \
         Interactive commands have no timeout unless timeout_s is given, and no output cap."
    ));
    operation["x-websocket-first-message"] = schema("ExecStart");
    operation["x-websocket-messages"] = json!({
        "client": { "oneOf": [
            schema("ExecStart"),
            { "type": "string", "format": "binary", "description": "stdin bytes (a binary message)" },
            { "type": "object", "properties": {
                "type": { "type": "string", "enum": ["resize", "eof", "kill"] },
                "rows": { "type": "integer" }, "cols": { "type": "integer" }
            }, "required": ["type"] }
        ] },
        "server": { "oneOf": [
            { "type": "string", "format": "binary", "description": "a stream id byte (1 stdout, 2 stderr), then output" },
            schema("ExecExit"),
            { "type": "object", "properties": {
                "type": { "const": "error" }, "code": { "type": "string" }, "message": { "type": "string" },
                "field": { "type": ["string", "null"] }
            }, "required": ["type", "code", "message"] }
        ] }
    });
    for (name, value) in [("Connection", "Upgrade"), ("Upgrade", "websocket")] {
        let parameters = operation["parameters"].as_array_mut().expect("the id parameter");
        parameters.push(json!({ "name": name, "in": "header", "required": true, "schema": { "const": value } }));
    }
}

fn file_headers() -> Value {
    let header = |description: &str, kind: &str| json!({ "description": description, "schema": { "type": kind } });
    json!({
        "Content-Length": header("The file's size", "integer"),
        "x-file-mode": header("Permission bits in octal, e.g. 0644", "string"),
        "x-file-uid": header("Owner uid", "integer"),
        "x-file-gid": header("Group gid", "integer")
    })
}

fn octet_stream(description: &str) -> Value {
    json!({ "application/octet-stream": { "schema": { "type": "string", "format": "binary", "description": description } } })
}

fn files_put(operation: &mut Value) {
    note_agent(operation);
    operation["requestBody"] =
        json!({ "required": true, "content": octet_stream("The file's new content, streamed (no size limit)") });
}

fn files_get(operation: &mut Value) {
    note_agent(operation);
    let mut content = octet_stream("The file's bytes, streamed");
    content["application/json"] = json_content(schema("FileListing"))["application/json"].clone();
    operation["responses"]["200"]["content"] = content;
    operation["responses"]["200"]["headers"] = file_headers();
}

/// The schemas the agent endpoints use.
pub(super) fn schemas(add: &mut impl FnMut(&str, Value)) {
    let object = |properties: Value, required: &[&str]| json!({ "type": "object", "additionalProperties": false, "properties": properties, "required": required });
    let command = || {
        json!({
            "cmd": { "type": "array", "minItems": 1, "items": { "type": "string" }, "description": "argv: the program (looked up in PATH) and its arguments; no shell" },
            "env": { "type": "object", "additionalProperties": { "type": "string" }, "maxProperties": 256, "description": "Variables added to the agent's environment (names without '=' or NUL)" },
            "cwd": { "type": "string", "description": "Absolute working directory (default /)" },
            "user": { "type": "string", "pattern": "^[A-Za-z0-9_.][A-Za-z0-9_.-]{0,31}$", "description": "User name or uid to run as (default root)" },
            "timeout_s": { "type": "number", "exclusiveMinimum": 0, "maximum": MAX_EXEC_TIMEOUT_S, "description": format!("Seconds before the command and its process group are killed (default {DEFAULT_EXEC_TIMEOUT_S}; over the WebSocket: none)") }
        })
    };
    let mut request = command();
    request["stdin"] = json!({ "type": "string", "description": "Standard input as text; not with stdin_base64. Without either, stdin is empty" });
    request["stdin_base64"] = json!({ "type": "string", "contentEncoding": "base64", "description": "Standard input of any bytes, in standard base64" });
    add("ExecRequest", object(request, &["cmd"]));
    let mut start = command();
    start["tty"] = json!({ "type": "boolean", "default": false, "description": "Run on a pseudo-terminal (stdout and stderr merged)" });
    start["rows"] = json!({ "type": "integer", "default": 24 });
    start["cols"] = json!({ "type": "integer", "default": 80 });
    add("ExecStart", object(start, &["cmd"]));
    let output = |name: &str| json!({ "type": "string", "description": format!("{name} when it is valid UTF-8 (else {name}_base64), at most {MAX_EXEC_OUTPUT_BYTES} bytes") });
    let base64 = |name: &str| json!({ "type": "string", "contentEncoding": "base64", "description": format!("{name} in standard base64, present only when it is not valid UTF-8") });
    let exit = json!({
        "exit_code": { "type": ["integer", "null"], "description": "null when a signal ended the command" },
        "signal": { "type": ["integer", "null"], "description": "The signal that ended it (absent or null otherwise)" },
        "timed_out": { "type": "boolean", "description": "Killed (with its process group) at timeout_s" },
        "duration_ms": { "type": "integer" }
    });
    let mut result = exit.clone();
    for (name, value) in [
        ("stdout", output("stdout")),
        ("stdout_base64", base64("stdout")),
        ("stderr", output("stderr")),
        ("stderr_base64", base64("stderr")),
        (
            "truncated",
            json!({ "type": "boolean", "description": "stdout_truncated or stderr_truncated" }),
        ),
        ("stdout_truncated", json!({ "type": "boolean" })),
        ("stderr_truncated", json!({ "type": "boolean" })),
    ] {
        result[name] = value;
    }
    add(
        "ExecResult",
        object(
            result,
            &[
                "exit_code",
                "timed_out",
                "duration_ms",
                "truncated",
                "stdout_truncated",
                "stderr_truncated",
            ],
        ),
    );
    let mut exit_message = exit;
    exit_message["type"] = json!({ "type": "string", "enum": ["exit"] });
    add(
        "ExecExit",
        object(
            exit_message,
            &["type", "exit_code", "signal", "timed_out", "duration_ms"],
        ),
    );
    add(
        "FileWritten",
        object(
            json!({ "path": { "type": "string" }, "bytes": { "type": "integer", "description": "Bytes written" } }),
            &["path", "bytes"],
        ),
    );
    add(
        "FileEntry",
        object(
            json!({
                "name": { "type": "string" },
                "type": { "type": "string", "enum": ["file", "dir", "symlink", "other"] },
                "size": { "type": "integer" },
                "mode": { "type": "integer", "description": "st_mode permission and type bits (a number; 420 is 0644)" },
                "uid": { "type": "integer" },
                "gid": { "type": "integer" },
                "modified": { "type": "integer", "description": "Seconds since the epoch" }
            }),
            &["name", "type", "size", "mode", "uid", "gid", "modified"],
        ),
    );
    add(
        "FileListing",
        object(
            json!({ "path": { "type": "string" }, "entries": { "type": "array", "items": schema("FileEntry") } }),
            &["path", "entries"],
        ),
    );
    add(
        "AgentStatus",
        object(
            json!({
                "connected": { "type": "boolean", "description": "Whether the guest agent is connected now" },
                "version": { "type": ["string", "null"], "description": "hatch-agent's version, while connected" }
            }),
            &["connected", "version"],
        ),
    );
}
