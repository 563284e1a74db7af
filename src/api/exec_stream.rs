//! `GET /vms/{id}/exec` upgraded to a WebSocket: an interactive command.
//!
//! Client → server: first a text message with the command (JSON, the
//! fields of `POST /vms/{id}/exec` but stdin, plus `tty`, `rows`, `cols`);
//! then binary messages are stdin, and text messages are control:
//! `{"type":"resize","rows":R,"cols":C}`, `{"type":"eof"}` (close stdin),
//! `{"type":"kill"}`. Closing the socket kills the command.
//!
//! Server → client: binary messages whose first byte names the stream
//! (1 stdout, 2 stderr) followed by its bytes; then one text message
//! `{"type":"exit","exit_code","signal","timed_out","duration_ms"}` or
//! `{"type":"error","code","message","field"}`, and the close.

use std::collections::BTreeMap;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;

use super::agent::{agent_error, session};
use super::auth::Caller;
use super::error::{ApiError, ApiResult};
use super::exec::{validate, ExecBody};
use super::{owner, AppState};
use crate::agent::proto::{Kind, Reply, WindowSize};
use crate::agent::{exec, Channel};

/// Stream ids on binary messages from the server.
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Start {
    cmd: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    cwd: Option<String>,
    user: Option<String>,
    timeout_s: Option<f64>,
    #[serde(default)]
    tty: bool,
    rows: Option<u16>,
    cols: Option<u16>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Control {
    Resize { rows: u16, cols: u16 },
    Eof,
    Kill,
}

pub async fn upgrade(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    // Unknown VMs answer 404 before the upgrade.
    owner::vm(&state, &caller, &id).await?;
    // A plain GET gets a JSON error like every other bad request.
    let ws = ws.map_err(|rejection| {
        ApiError::invalid(
            "Upgrade",
            format!(
                "{}: GET /vms/{{id}}/exec is a WebSocket (or use POST /vms/{{id}}/exec)",
                rejection.body_text()
            ),
        )
    })?;
    Ok(ws.on_upgrade(move |socket| async move { serve(state, caller, id, socket).await }))
}

async fn serve(state: AppState, caller: Caller, id: String, mut socket: WebSocket) {
    let outcome = async {
        let start = read_start(&mut socket).await?;
        let session = session(&state, &caller, &id).await?;
        let channel = exec::start(&session.conversation, start)
            .await
            .map_err(|e| agent_error(e, "cmd"))?;
        relay(&mut socket, channel).await
    }
    .await;
    let last = match outcome {
        Ok(exit) => exit,
        Err(error) => {
            json!({"type": "error", "code": error.kind.code(), "message": error.message, "field": error.field})
        }
    };
    let _ = socket.send(Message::Text(last.to_string().into())).await;
    let _ = socket.send(Message::Close(None)).await;
}

/// The first message: the command to run, checked like `POST /vms/{id}/exec`.
async fn read_start(socket: &mut WebSocket) -> ApiResult<crate::agent::proto::ExecRequest> {
    let text = loop {
        match socket.recv().await {
            Some(Ok(Message::Text(text))) => break text,
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            _ => {
                return Err(ApiError::invalid(
                    "cmd",
                    "the first message must be the command as JSON text",
                ))
            }
        }
    };
    let start: Start = super::json::parse_json(text.as_bytes())?;
    let tty = start.tty;
    let size = WindowSize {
        rows: start.rows.unwrap_or(24),
        cols: start.cols.unwrap_or(80),
    };
    // Interactive commands run until they end unless a timeout is asked for.
    let timeout_given = start.timeout_s.is_some();
    let body = ExecBody {
        cmd: start.cmd,
        env: start.env,
        cwd: start.cwd,
        user: start.user,
        stdin: None,
        stdin_base64: None,
        timeout_s: start.timeout_s,
    };
    let (mut request, _) = validate(body)?;
    request.stdin = true;
    request.tty = tty.then_some(size);
    request.output_limit = None;
    if !timeout_given {
        request.timeout_ms = None;
    }
    Ok(request)
}

/// Moves bytes both ways until the command exits; answers its exit message.
async fn relay(socket: &mut WebSocket, mut channel: Channel) -> ApiResult<serde_json::Value> {
    let lost = |e| agent_error(e, "cmd");
    loop {
        tokio::select! {
            frame = channel.recv() => {
                let frame = frame.map_err(lost)?;
                let stream = match frame.kind {
                    Kind::Stdout => STDOUT,
                    Kind::Stderr => STDERR,
                    Kind::Response => {
                        channel.finish();
                        let reply: Reply = frame.parse().map_err(|e| lost(e.into()))?;
                        return match reply {
                            Reply::Exited(exit) => Ok(json!({
                                "type": "exit",
                                "exit_code": exit.exit_code,
                                "signal": exit.signal,
                                "timed_out": exit.timed_out,
                                "duration_ms": exit.duration_ms,
                            })),
                            Reply::Error(error) => Err(agent_error(
                                crate::agent::AgentError::Guest { code: error.code, message: error.message },
                                "cmd",
                            )),
                            other => Err(ApiError::internal(format!("the agent answered {other:?} to an exec"))),
                        };
                    }
                    _ => continue,
                };
                let mut message = Vec::with_capacity(frame.payload.len() + 1);
                message.push(stream);
                message.extend_from_slice(&frame.payload);
                if socket.send(Message::Binary(message.into())).await.is_err() {
                    // The client is gone: dropping the channel kills the command.
                    return Err(ApiError::invalid("cmd", "the client closed the connection"));
                }
            }
            message = socket.recv() => {
                match message {
                    Some(Ok(Message::Binary(bytes))) => channel.send_data(&bytes).await.map_err(lost)?,
                    Some(Ok(Message::Text(text))) => match serde_json::from_str::<Control>(&text) {
                        Ok(Control::Resize { rows, cols }) => {
                            channel.send_json(Kind::Resize, &WindowSize { rows, cols }).await.map_err(lost)?
                        }
                        Ok(Control::Eof) => channel.send_eof().await.map_err(lost)?,
                        Ok(Control::Kill) => channel.cancel().await.map_err(lost)?,
                        Err(error) => {
                            return Err(ApiError::invalid("type", format!("unknown control message: {error}")));
                        }
                    },
                    Some(Ok(_)) => {}
                    // Closed or broken: dropping the channel kills the command.
                    Some(Err(_)) | None => {
                        return Err(ApiError::invalid("cmd", "the client closed the connection"));
                    }
                }
            }
        }
    }
}
