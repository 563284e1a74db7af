//! The JSON bodies of Hello, Request, Resize and Response frames.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The agent's greeting, sent first on every new connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// [`crate::PROTOCOL_VERSION`] of the agent.
    pub protocol: u32,
    /// The agent's own version (its crate version).
    pub version: String,
    /// The guest's hostname, as the agent sees it.
    pub hostname: String,
    /// `/proc/sys/kernel/random/boot_id`: changes when the guest reboots,
    /// stays across snapshot and restore.
    pub boot_id: String,
    /// The guest's clock when it said hello, nanoseconds since the epoch.
    #[serde(with = "unix_ns")]
    pub guest_time_unix_ns: i128,
}

/// What the host asks; opens a channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Output comes as Stdout and Stderr frames (no Eof), then the final
    /// [`Reply::Exited`] once the output is drained.
    Exec(ExecRequest),
    /// Writes a file from the Data frames that follow, up to Eof, into a
    /// temporary file beside it, then renames it over the path (atomic).
    WriteFile(WriteFileRequest),
    /// Answers [`Reply::FileInfo`] (or an error) first, then Data frames
    /// with the content and Eof, then [`Reply::Done`]. A read that fails or
    /// is cancelled midway ends with an Error reply instead of Eof and Done.
    ReadFile {
        path: String,
    },
    DeleteFile {
        path: String,
    },
    /// Answers [`Reply::Listing`]. Entries are sorted by name. A listing
    /// too large for one frame is split: Data frames, each a JSON array of
    /// [`DirEntry`], carry the leading entries, and the final Listing the
    /// rest (a host concatenates them in order).
    ListDir {
        path: String,
    },
    /// Sets the guest's real-time clock.
    SetClock {
        #[serde(with = "unix_ns")]
        unix_ns: i128,
    },
    /// Gives a guest restored from another VM's snapshot (a fork, or a VM
    /// taken from a warm pool) its own identity; answers [`Reply::Done`].
    SetIdentity(Identity),
}

/// Who a guest is: everything a clone must not share with its parent.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Identity {
    /// The new hostname (also written to /etc/hostname when it exists).
    pub hostname: String,
    /// The NIC's new identity; absent for a VM without networking.
    #[serde(default)]
    pub nic: Option<NicIdentity>,
    /// Random bytes from the host, mixed into the guest's entropy pool
    /// before its random generator is reseeded: clones of one snapshot
    /// must not produce the same "random" numbers.
    #[serde(default)]
    pub entropy: Vec<u8>,
}

/// A NIC's new MAC and IPv4 configuration.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NicIdentity {
    /// The MAC the NIC had in the snapshot: finds the interface.
    pub previous_mac: String,
    /// The new MAC, `aa:bb:cc:dd:ee:ff`.
    pub mac: String,
    /// The new address with its prefix length, `10.0.0.5/24`; it replaces
    /// every IPv4 address of the interface.
    pub address: String,
    /// The default route's gateway.
    #[serde(default)]
    pub gateway: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ExecRequest {
    /// argv; `cmd[0]` is looked up in PATH when it has no slash.
    pub cmd: Vec<String>,
    /// Added to the agent's clean base environment (PATH, HOME, USER, SHELL, TERM).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory (absolute); the user's home when absent.
    #[serde(default)]
    pub cwd: Option<String>,
    /// User name or numeric uid; root when absent.
    #[serde(default)]
    pub user: Option<String>,
    /// Whether Data frames with stdin follow; without, stdin is /dev/null.
    #[serde(default)]
    pub stdin: bool,
    /// Run on a pseudo-terminal of this size; all output then arrives as Stdout.
    #[serde(default)]
    pub tty: Option<WindowSize>,
    /// Kill the whole process group after this long.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Bytes of stdout and of stderr forwarded at most (each); the rest is
    /// read and dropped, and the reply says it was truncated.
    #[serde(default)]
    pub output_limit: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowSize {
    pub rows: u16,
    pub cols: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteFileRequest {
    pub path: String,
    /// Permission bits; 0644 when absent.
    #[serde(default)]
    pub mode: Option<u32>,
    #[serde(default)]
    pub uid: Option<u32>,
    #[serde(default)]
    pub gid: Option<u32>,
}

/// The agent's final answer on a channel (and, for ReadFile, its first).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Reply {
    Exited(ExecExit),
    FileInfo(FileInfo),
    Listing {
        entries: Vec<DirEntry>,
    },
    ClockSet {
        #[serde(with = "unix_ns")]
        previous_unix_ns: i128,
        #[serde(with = "unix_ns")]
        now_unix_ns: i128,
    },
    /// Success with nothing more to say (a write, a delete, the end of a read).
    Done {
        bytes: u64,
    },
    Error(AgentError),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecExit {
    /// The exit code, when the process exited rather than being killed.
    pub exit_code: Option<i32>,
    /// The signal that ended it, when it was killed.
    pub signal: Option<i32>,
    pub timed_out: bool,
    pub duration_ms: u64,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileInfo {
    /// The size `stat` gave when the read started. The content sent may
    /// differ (a file still growing; /proc files say 0): the final
    /// [`Reply::Done`] counts the bytes actually sent.
    pub size: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirEntry {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: EntryKind,
    pub size: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Seconds since the epoch.
    pub modified: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentError {
    pub code: ErrorCode,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The path (or the command) does not exist.
    NotFound,
    /// The request is malformed or names something unusable (a relative
    /// path, an unknown user, a directory where a file is expected).
    Invalid,
    PermissionDenied,
    /// The command could not be started.
    SpawnFailed,
    Io,
}

/// Nanosecond times travel as JSON integers within i64 (until 2262):
/// serde cannot buffer an i128, and it must for the internally tagged
/// Request and Reply, so an i128 there would never parse.
mod unix_ns {
    use serde::{de::Error as _, ser::Error as _, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &i128, serializer: S) -> Result<S::Ok, S::Error> {
        let value = i64::try_from(*value).map_err(|_| S::Error::custom(format!("{value} ns is out of range")))?;
        serializer.serialize_i64(value)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i128, D::Error> {
        i64::deserialize(deserializer)
            .map(i128::from)
            .map_err(|e| D::Error::custom(format!("{e} (nanoseconds since 1970 within i64)")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_tagged_by_op() {
        let request = Request::ReadFile {
            path: "/etc/hostname".into(),
        };
        let json = serde_json::to_value(&request).unwrap();
        assert_eq!(json, serde_json::json!({"op": "read_file", "path": "/etc/hostname"}));
        let exec: Request = serde_json::from_value(serde_json::json!({"op": "exec", "cmd": ["true"]})).unwrap();
        assert_eq!(
            exec,
            Request::Exec(ExecRequest {
                cmd: vec!["true".into()],
                ..Default::default()
            })
        );
    }

    #[test]
    fn clock_times_parse_inside_tagged_requests_and_replies() {
        let set = Request::SetClock {
            unix_ns: 1_800_000_000_123_456_789,
        };
        let json = serde_json::to_string(&set).unwrap();
        assert_eq!(json, r#"{"op":"set_clock","unix_ns":1800000000123456789}"#);
        assert_eq!(serde_json::from_str::<Request>(&json).unwrap(), set);
        let done = Reply::ClockSet {
            previous_unix_ns: -5,
            now_unix_ns: 1_800_000_000_000_000_000,
        };
        let json = serde_json::to_vec(&done).unwrap();
        assert_eq!(serde_json::from_slice::<Reply>(&json).unwrap(), done);
        let too_late = Request::SetClock { unix_ns: i128::MAX };
        assert!(serde_json::to_vec(&too_late).is_err());
    }

    #[test]
    fn replies_are_tagged_by_result() {
        let reply = Reply::Error(AgentError {
            code: ErrorCode::NotFound,
            message: "no such file".into(),
        });
        let json = serde_json::to_value(&reply).unwrap();
        assert_eq!(json["result"], "error");
        assert_eq!(json["code"], "not_found");
        assert_eq!(serde_json::from_value::<Reply>(json).unwrap(), reply);
    }
}
