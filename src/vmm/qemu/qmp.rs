//! A minimal QMP (QEMU Machine Protocol) client: JSON lines over a unix
//! socket, one command at a time; asynchronous events are skipped.

use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

use crate::vmm::VmmError;

/// How long one command may take to be answered. QMP commands used here
/// return immediately (migration progress is polled separately).
const REPLY_TIMEOUT: Duration = Duration::from_secs(15);

/// One negotiated QMP session.
pub struct Qmp {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

fn control(what: &str, detail: impl std::fmt::Display) -> VmmError {
    VmmError::Control(format!("QMP {what}: {detail}"))
}

impl Qmp {
    /// Connects, reads the greeting and leaves capabilities negotiation mode.
    pub async fn connect(socket: &Path) -> Result<Qmp, VmmError> {
        let stream = UnixStream::connect(socket)
            .await
            .map_err(|e| control("connect", format!("{}: {e}", socket.display())))?;
        let (read, writer) = stream.into_split();
        let mut qmp = Qmp {
            reader: BufReader::new(read),
            writer,
        };
        let greeting = tokio::time::timeout(REPLY_TIMEOUT, qmp.read_message())
            .await
            .map_err(|_| control("greeting", "timed out"))??;
        if greeting.get("QMP").is_none() {
            return Err(control("greeting", format!("unexpected {greeting}")));
        }
        qmp.execute("qmp_capabilities", None).await?;
        Ok(qmp)
    }

    /// Runs `command` and returns its `return` value.
    pub async fn execute(&mut self, command: &str, arguments: Option<Value>) -> Result<Value, VmmError> {
        self.execute_with_fd(command, arguments, None).await
    }

    /// Like [`Qmp::execute`], passing `fd` along with the command (SCM_RIGHTS),
    /// as `getfd` needs.
    pub async fn execute_with_fd(
        &mut self,
        command: &str,
        arguments: Option<Value>,
        fd: Option<RawFd>,
    ) -> Result<Value, VmmError> {
        let mut request = json!({ "execute": command });
        if let Some(arguments) = arguments {
            request["arguments"] = arguments;
        }
        let mut line = request.to_string();
        line.push('\n');
        let mut sent = 0;
        if let Some(fd) = fd {
            sent = self
                .send_with_fd(line.as_bytes(), fd)
                .await
                .map_err(|e| control(command, e))?;
        }
        self.writer
            .write_all(&line.as_bytes()[sent..])
            .await
            .map_err(|e| control(command, e))?;
        tokio::time::timeout(REPLY_TIMEOUT, self.read_reply(command))
            .await
            .map_err(|_| control(command, "no reply"))?
    }

    /// Sends (a first part of) `bytes` with `fd` attached; returns how many bytes went.
    async fn send_with_fd(&mut self, bytes: &[u8], fd: RawFd) -> std::io::Result<usize> {
        use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
        let stream: &UnixStream = self.writer.as_ref();
        loop {
            stream.writable().await?;
            let result = stream.try_io(tokio::io::Interest::WRITABLE, || {
                let fds = [fd];
                let cmsg = [ControlMessage::ScmRights(&fds)];
                sendmsg::<()>(
                    stream.as_raw_fd(),
                    &[std::io::IoSlice::new(bytes)],
                    &cmsg,
                    MsgFlags::empty(),
                    None,
                )
                .map_err(std::io::Error::from)
            });
            match result {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
    }

    async fn read_reply(&mut self, command: &str) -> Result<Value, VmmError> {
        loop {
            let message = self.read_message().await?;
            if let Some(value) = message.get("return") {
                return Ok(value.clone());
            }
            if let Some(error) = message.get("error") {
                let desc = error.get("desc").and_then(Value::as_str).unwrap_or("unknown error");
                return Err(VmmError::Rejected {
                    request: command.to_string(),
                    message: desc.to_string(),
                });
            }
            // Anything else is an asynchronous event (STOP, POWERDOWN, ...).
        }
    }

    async fn read_message(&mut self) -> Result<Value, VmmError> {
        let mut line = String::new();
        let n = self.reader.read_line(&mut line).await.map_err(|e| control("read", e))?;
        if n == 0 {
            return Err(control("read", "connection closed by QEMU"));
        }
        serde_json::from_str(&line).map_err(|e| control("reply", format!("invalid JSON ({e}): {line}")))
    }
}
