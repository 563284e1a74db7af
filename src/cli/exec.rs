//! `hatch vm exec ID [-i] [-t] -- cmd args...`: a command in the guest
//! through its agent. Without -i/-t it is one `POST /vms/{id}/exec`; with
//! them it streams over the WebSocket form of `GET /vms/{id}/exec`. Either
//! way hatch exits with the command's status (128+signal when a signal
//! ended it, 124 when it timed out).

use std::io::Write;

use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use hyper::Method;
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use super::http::{segment, Client, WebSocket};
use super::terminal::{self, RawMode};
use super::CliError;
use crate::api::error::ErrorKind;

/// The exit status for a command killed at its timeout (as timeout(1)).
const TIMED_OUT: u8 = 124;

#[derive(Debug, clap::Args)]
pub struct ExecArgs {
    /// The VM's id.
    id: String,
    /// Stream: send standard input to the command (until EOF) and its output
    /// as it comes (without -i the command's stdin is empty).
    #[arg(short, long)]
    interactive: bool,
    /// Run the command on a terminal in the guest (standard input must be a
    /// terminal here; it is put in raw mode while the command runs).
    #[arg(short, long)]
    tty: bool,
    /// A variable for the command, NAME=VALUE (repeatable).
    #[arg(long = "env", short = 'e', value_name = "NAME=VALUE")]
    env: Vec<String>,
    /// Absolute working directory in the guest [default: /].
    #[arg(long)]
    cwd: Option<String>,
    /// User name or uid to run as [default: root].
    #[arg(long, short = 'u')]
    user: Option<String>,
    /// Seconds before the command (and its process group) is killed
    /// [default: 60, at most 3600; with -i/-t: none].
    #[arg(long)]
    timeout: Option<f64>,
    /// The command and its arguments (no shell: use `-- sh -c '...'` for one).
    #[arg(required = true, trailing_var_arg = true, value_name = "CMD")]
    cmd: Vec<String>,
}

impl ExecArgs {
    /// The request fields both forms share.
    fn fields(&self) -> Result<Map<String, Value>, CliError> {
        let mut env = Map::new();
        for pair in &self.env {
            let (name, value) = pair
                .split_once('=')
                .filter(|(name, _)| !name.is_empty())
                .ok_or_else(|| CliError::Usage(format!("--env {pair:?}: expected NAME=VALUE")))?;
            env.insert(name.to_string(), json!(value));
        }
        let mut fields = Map::new();
        fields.insert("cmd".into(), json!(self.cmd));
        if !env.is_empty() {
            fields.insert("env".into(), Value::Object(env));
        }
        for (name, value) in [("cwd", &self.cwd), ("user", &self.user)] {
            if let Some(value) = value {
                fields.insert(name.into(), json!(value));
            }
        }
        if let Some(timeout) = self.timeout {
            fields.insert("timeout_s".into(), json!(timeout));
        }
        Ok(fields)
    }
}

pub async fn run(client: &Client, args: &ExecArgs) -> Result<(), CliError> {
    if args.tty && !terminal::stdin_is_terminal() {
        return Err(CliError::Usage(
            "-t needs a terminal on standard input (use -i alone to pipe input)".into(),
        ));
    }
    let fields = args.fields()?;
    let path = format!("/vms/{}/exec", segment(&args.id));
    let status = if args.interactive || args.tty {
        stream(client, &path, fields, args).await?
    } else {
        once(client, &path, fields).await?
    };
    match status {
        0 => Ok(()),
        code => Err(CliError::Exit(code)),
    }
}

/// `POST /vms/{id}/exec`: prints the output to the matching streams.
async fn once(client: &Client, path: &str, fields: Map<String, Value>) -> Result<u8, CliError> {
    let answer: Value = client.call(Method::POST, path, Some(&Value::Object(fields))).await?;
    write_all(&mut std::io::stdout(), &output(&answer, "stdout")?)?;
    write_all(&mut std::io::stderr(), &output(&answer, "stderr")?)?;
    if answer["truncated"] == true {
        eprintln!(
            "hatch: the output was cut at the API's limit (stdout {}, stderr {}); use -i to stream all of it",
            answer["stdout_truncated"], answer["stderr_truncated"]
        );
    }
    Ok(exit_status(&answer))
}

/// `<name>` as text, or decoded from `<name>_base64`.
fn output(answer: &Value, name: &str) -> Result<Vec<u8>, CliError> {
    if let Some(text) = answer[name].as_str() {
        return Ok(text.as_bytes().to_vec());
    }
    match answer[format!("{name}_base64")].as_str() {
        Some(encoded) => base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|e| CliError::Http(format!("the daemon sent bad base64 in {name}_base64: {e}"))),
        None => Ok(Vec::new()),
    }
}

/// The shell's convention: the exit code, 128+signal, or 124 after a
/// timeout (said on standard error).
fn exit_status(exit: &Value) -> u8 {
    if exit["timed_out"] == true {
        eprintln!(
            "hatch: the command timed out after {} ms and was killed",
            exit["duration_ms"]
        );
        return TIMED_OUT;
    }
    if let Some(code) = exit["exit_code"].as_i64() {
        return (code & 0xff) as u8;
    }
    match exit["signal"].as_i64() {
        Some(signal) => (128 + signal).clamp(0, 255) as u8,
        None => 1,
    }
}

fn write_all(out: &mut impl Write, bytes: &[u8]) -> Result<(), CliError> {
    out.write_all(bytes)
        .and_then(|_| out.flush())
        .map_err(|e| CliError::Local(format!("writing the command's output: {e}")))
}

/// The WebSocket form: stdin (with -i), output as it comes, resizes (with -t).
async fn stream(client: &Client, path: &str, mut fields: Map<String, Value>, args: &ExecArgs) -> Result<u8, CliError> {
    if args.tty {
        fields.insert("tty".into(), json!(true));
        if let Some((rows, cols)) = terminal::window_size() {
            fields.insert("rows".into(), json!(rows));
            fields.insert("cols".into(), json!(cols));
        }
    }
    let mut socket = client.websocket(path).await?;
    send(&mut socket, Message::Text(Value::Object(fields).to_string().into())).await?;
    // Raw mode from here on, restored when this returns, however it ends.
    let _raw = if args.tty { Some(RawMode::enter()?) } else { None };
    let mut stdin = if args.interactive { Some(read_stdin()) } else { None };
    let mut resized = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
        .map_err(|e| CliError::Local(format!("watching the terminal's size: {e}")))?;
    // The daemon closes after its last message (an error, say) even while we
    // still send: a failed send stops the sending, and what it said is read.
    let mut send_failed: Option<CliError> = None;
    let closed = |failed: Option<CliError>| {
        failed.unwrap_or_else(|| CliError::Http("the daemon closed the stream before the command ended".into()))
    };
    loop {
        let outgoing = tokio::select! {
            message = socket.next() => {
                match message {
                    Some(Ok(Message::Binary(bytes))) => match bytes.split_first() {
                        Some((2, rest)) => write_all(&mut std::io::stderr(), rest)?,
                        Some((_, rest)) => write_all(&mut std::io::stdout(), rest)?,
                        None => {}
                    },
                    Some(Ok(Message::Text(text))) => return last_message(&text),
                    Some(Ok(Message::Close(_))) | None => return Err(closed(send_failed)),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(send_failed.unwrap_or(CliError::Http(format!("WebSocket: {e}")))),
                }
                None
            }
            chunk = next_chunk(&mut stdin), if send_failed.is_none() => match chunk {
                Some(bytes) => Some(Message::Binary(bytes.into())),
                None => {
                    stdin = None;
                    // A terminal's input ends with the command, not with EOF here.
                    (!args.tty).then(|| Message::Text(json!({"type": "eof"}).to_string().into()))
                }
            },
            _ = resized.recv(), if args.tty && send_failed.is_none() => terminal::window_size()
                .map(|(rows, cols)| Message::Text(json!({"type": "resize", "rows": rows, "cols": cols}).to_string().into())),
        };
        if let Some(message) = outgoing {
            if let Err(error) = send(&mut socket, message).await {
                send_failed = Some(error);
                stdin = None;
            }
        }
    }
}

async fn send(socket: &mut WebSocket, message: Message) -> Result<(), CliError> {
    socket
        .send(message)
        .await
        .map_err(|e| CliError::Http(format!("WebSocket: {e}")))
}

/// The next chunk of standard input; pending forever once it has ended.
async fn next_chunk(stdin: &mut Option<mpsc::Receiver<Vec<u8>>>) -> Option<Vec<u8>> {
    match stdin {
        Some(receiver) => receiver.recv().await,
        None => std::future::pending().await,
    }
}

/// Standard input read on a thread of its own: a read blocked there must
/// not keep hatch from exiting once the command has ended.
fn read_stdin() -> mpsc::Receiver<Vec<u8>> {
    let (sender, receiver) = mpsc::channel(4);
    std::thread::spawn(move || {
        use std::io::Read;
        let mut stdin = std::io::stdin().lock();
        let mut buffer = vec![0u8; 32 * 1024];
        loop {
            match stdin.read(&mut buffer) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if sender.blocking_send(buffer[..n].to_vec()).is_err() {
                        return;
                    }
                }
            }
        }
    });
    receiver
}

/// The server's last text message: the exit, or an error.
fn last_message(text: &str) -> Result<u8, CliError> {
    let message: Value =
        serde_json::from_str(text).map_err(|e| CliError::Http(format!("unexpected message from the daemon: {e}")))?;
    if message["type"] == "exit" {
        return Ok(exit_status(&message));
    }
    let code = message["code"].as_str().unwrap_or("unknown").to_string();
    let status = ErrorKind::ALL
        .iter()
        .find(|kind| kind.code() == code)
        .map_or(500, |kind| kind.status().as_u16());
    Err(CliError::Api {
        status,
        code,
        message: message["message"].as_str().unwrap_or(text).to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_statuses_follow_the_shell() {
        assert_eq!(exit_status(&json!({"exit_code": 3, "timed_out": false})), 3);
        assert_eq!(
            exit_status(&json!({"exit_code": null, "signal": 9, "timed_out": false})),
            137
        );
        assert_eq!(
            exit_status(&json!({"exit_code": null, "signal": 9, "timed_out": true})),
            124
        );
    }

    #[test]
    fn output_is_text_or_base64() {
        let answer = json!({"stdout": "hi\n", "stderr_base64": "/wA="});
        assert_eq!(output(&answer, "stdout").unwrap(), b"hi\n");
        assert_eq!(output(&answer, "stderr").unwrap(), vec![0xff, 0]);
    }

    #[test]
    fn an_error_message_is_the_apis_error() {
        let error = last_message(r#"{"type":"error","code":"agent_unavailable","message":"no agent","field":null}"#)
            .unwrap_err();
        assert!(matches!(error, CliError::Api { status: 409, .. }), "{error:?}");
    }
}
