//! `POST /vms/{id}/exec`: runs a command in the guest through its agent and
//! answers when it has finished.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::Json;
use base64::Engine;
use serde::{Deserialize, Serialize};

use super::agent::{agent_error, session, validate_guest_path};
use super::auth::Caller;
use super::error::{ApiError, ApiResult, ErrorKind};
use super::json::ApiJson;
use super::AppState;
use crate::agent::exec;
use crate::agent::proto::ExecRequest;

/// The longest a command may run (`timeout_s`).
pub const MAX_EXEC_TIMEOUT_S: f64 = 3600.0;
/// `timeout_s` when the request gives none.
pub const DEFAULT_EXEC_TIMEOUT_S: f64 = 60.0;
/// Bytes of stdout, and of stderr, kept at most; the rest is dropped and
/// the answer says `truncated`.
pub const MAX_EXEC_OUTPUT_BYTES: u64 = 1024 * 1024;
const MAX_ENV_VARS: usize = 256;
/// How long past a command's timeout the agent has to report it.
const AGENT_ANSWER_GRACE: Duration = Duration::from_secs(15);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecBody {
    pub cmd: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    pub cwd: Option<String>,
    pub user: Option<String>,
    pub stdin: Option<String>,
    pub stdin_base64: Option<String>,
    pub timeout_s: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct ExecAnswer {
    /// The exit code, or null when a signal ended the command.
    pub exit_code: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    #[serde(flatten)]
    pub stdout: Output,
    #[serde(flatten)]
    pub stderr: Output,
    pub timed_out: bool,
    pub duration_ms: u64,
    /// Whether stdout or stderr was cut at the output limit.
    pub truncated: bool,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
}

/// One output stream: `<name>` as text when it is UTF-8, else `<name>_base64`.
#[derive(Debug)]
pub struct Output {
    name: &'static str,
    bytes: Vec<u8>,
}

impl Serialize for Output {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(1))?;
        match std::str::from_utf8(&self.bytes) {
            Ok(text) => map.serialize_entry(self.name, text)?,
            Err(_) => map.serialize_entry(
                &format!("{}_base64", self.name),
                &base64::engine::general_purpose::STANDARD.encode(&self.bytes),
            )?,
        }
        map.end()
    }
}

/// Checks a request and turns it into the agent's; `Err` names the field.
pub fn validate(body: ExecBody) -> Result<(ExecRequest, Option<Vec<u8>>), ApiError> {
    let Some(program) = body.cmd.first() else {
        return Err(ApiError::invalid(
            "cmd",
            "must name a command: a non-empty array of strings",
        ));
    };
    if program.is_empty() {
        return Err(ApiError::invalid("cmd", "the command (cmd[0]) must not be empty"));
    }
    if let Some(index) = body.cmd.iter().position(|arg| arg.contains('\0')) {
        return Err(ApiError::invalid(
            "cmd",
            format!("cmd[{index}] contains a NUL character"),
        ));
    }
    if body.env.len() > MAX_ENV_VARS {
        return Err(ApiError::invalid("env", format!("at most {MAX_ENV_VARS} variables")));
    }
    for (key, value) in &body.env {
        if key.is_empty() || key.contains('=') || key.contains('\0') {
            return Err(ApiError::invalid(
                "env",
                format!("variable name {key:?} must be non-empty, without '=' or NUL"),
            ));
        }
        if value.contains('\0') {
            return Err(ApiError::invalid(
                "env",
                format!("the value of {key} contains a NUL character"),
            ));
        }
    }
    let cwd = body
        .cwd
        .as_deref()
        .map(|cwd| validate_guest_path("cwd", cwd))
        .transpose()?;
    if let Some(user) = &body.user {
        let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
        if user.is_empty() || user.len() > 32 || !user.chars().all(plain) || user.starts_with('-') {
            return Err(ApiError::invalid(
                "user",
                "must be a user name or uid: 1-32 letters, digits, '_', '-' or '.'",
            ));
        }
    }
    let stdin = match (body.stdin, body.stdin_base64) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                "stdin_base64",
                "give stdin or stdin_base64, not both",
            ));
        }
        (Some(text), None) => Some(text.into_bytes()),
        (None, Some(encoded)) => Some(
            base64::engine::general_purpose::STANDARD
                .decode(encoded.as_bytes())
                .map_err(|e| ApiError::invalid("stdin_base64", format!("is not valid base64: {e}")))?,
        ),
        (None, None) => None,
    };
    let timeout_s = body.timeout_s.unwrap_or(DEFAULT_EXEC_TIMEOUT_S);
    if !(timeout_s > 0.0 && timeout_s <= MAX_EXEC_TIMEOUT_S) {
        return Err(ApiError::invalid(
            "timeout_s",
            format!("must be more than 0 and at most {MAX_EXEC_TIMEOUT_S} seconds"),
        ));
    }
    let request = ExecRequest {
        cmd: body.cmd,
        env: body.env,
        cwd,
        user: body.user,
        stdin: stdin.is_some(),
        tty: None,
        timeout_ms: Some((timeout_s * 1000.0).ceil() as u64),
        output_limit: Some(MAX_EXEC_OUTPUT_BYTES),
    };
    Ok((request, stdin))
}

pub async fn run(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ExecBody>,
) -> ApiResult<Json<ExecAnswer>> {
    let (request, stdin) = validate(body)?;
    let session = session(&state, &caller, &id).await?;
    // The agent kills the command at its timeout; an agent that never
    // answers (broken or hostile) must not hold the request forever.
    let deadline = Duration::from_millis(request.timeout_ms.unwrap_or(0)) + AGENT_ANSWER_GRACE;
    let output = tokio::time::timeout(deadline, exec::run(&session.conversation, request, stdin))
        .await
        .map_err(|_| {
            ApiError::new(
                ErrorKind::AgentUnavailable,
                format!(
                    "the guest agent did not answer within {}s of the command's timeout",
                    AGENT_ANSWER_GRACE.as_secs()
                ),
            )
        })?
        .map_err(|e| agent_error(e, "cmd"))?;
    let exit = output.exit;
    Ok(Json(ExecAnswer {
        exit_code: exit.exit_code,
        signal: exit.signal,
        stdout: Output {
            name: "stdout",
            bytes: output.stdout,
        },
        stderr: Output {
            name: "stderr",
            bytes: output.stderr,
        },
        timed_out: exit.timed_out,
        duration_ms: exit.duration_ms,
        truncated: exit.stdout_truncated || exit.stderr_truncated,
        stdout_truncated: exit.stdout_truncated,
        stderr_truncated: exit.stderr_truncated,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(json: serde_json::Value) -> ExecBody {
        serde_json::from_value(json).expect("body")
    }

    fn field_of(json: serde_json::Value) -> Option<String> {
        validate(body(json)).err().and_then(|e| e.field)
    }

    #[test]
    fn bad_requests_name_their_field() {
        use serde_json::json;
        assert_eq!(field_of(json!({"cmd": []})).as_deref(), Some("cmd"));
        assert_eq!(field_of(json!({"cmd": [""]})).as_deref(), Some("cmd"));
        assert_eq!(field_of(json!({"cmd": ["a\u{0}b"]})).as_deref(), Some("cmd"));
        assert_eq!(
            field_of(json!({"cmd": ["env"], "env": {"A=B": "c"}})).as_deref(),
            Some("env")
        );
        assert_eq!(
            field_of(json!({"cmd": ["env"], "env": {"A": "c\u{0}"}})).as_deref(),
            Some("env")
        );
        assert_eq!(field_of(json!({"cmd": ["pwd"], "cwd": "tmp"})).as_deref(), Some("cwd"));
        assert_eq!(
            field_of(json!({"cmd": ["id"], "user": "root;x"})).as_deref(),
            Some("user")
        );
        assert_eq!(
            field_of(json!({"cmd": ["true"], "timeout_s": 0})).as_deref(),
            Some("timeout_s")
        );
        assert_eq!(
            field_of(json!({"cmd": ["true"], "timeout_s": -1})).as_deref(),
            Some("timeout_s")
        );
        assert_eq!(
            field_of(json!({"cmd": ["true"], "timeout_s": 3601})).as_deref(),
            Some("timeout_s")
        );
        assert_eq!(
            field_of(json!({"cmd": ["cat"], "stdin": "a", "stdin_base64": "YQ=="})).as_deref(),
            Some("stdin_base64")
        );
        assert_eq!(
            field_of(json!({"cmd": ["cat"], "stdin_base64": "%%"})).as_deref(),
            Some("stdin_base64")
        );
    }

    #[test]
    fn a_good_request_becomes_the_agents() {
        let (request, stdin) = validate(body(serde_json::json!({
            "cmd": ["cat"], "stdin_base64": "AAE=", "timeout_s": 1.5, "env": {"A": "b"}, "cwd": "/tmp", "user": "nobody"
        })))
        .expect("valid");
        assert_eq!(stdin, Some(vec![0, 1]));
        assert!(request.stdin);
        assert_eq!(request.timeout_ms, Some(1500));
        assert_eq!(request.output_limit, Some(MAX_EXEC_OUTPUT_BYTES));
        assert_eq!(request.cwd.as_deref(), Some("/tmp"));
    }

    #[test]
    fn output_is_text_when_it_can_be() {
        let text = serde_json::to_value(Output {
            name: "stdout",
            bytes: b"hi\n".to_vec(),
        })
        .unwrap();
        assert_eq!(text, serde_json::json!({"stdout": "hi\n"}));
        let binary = serde_json::to_value(Output {
            name: "stdout",
            bytes: vec![0xff, 0],
        })
        .unwrap();
        assert_eq!(binary, serde_json::json!({"stdout_base64": "/wA="}));
    }
}
