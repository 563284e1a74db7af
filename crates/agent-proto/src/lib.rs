//! The protocol between Hatch (host) and `hatch-agent` (guest).
//!
//! One byte stream carries everything: a vsock connection (Firecracker, or
//! QEMU with vhost-vsock) or a virtio-serial port (QEMU elsewhere). The guest
//! side opens it, so a guest that boots, wakes from a snapshot or sees the
//! daemon restart simply connects again; the host never polls for it.
//!
//! The stream is a sequence of frames (see [`frame`]). Each frame belongs to a
//! channel: channel 0 carries the agent's [`Hello`]; the host opens any other
//! channel with one [`Request`] and the agent closes it with one final
//! [`Kind::Response`] frame ([`Reply`]). Between the two, data frames flow
//! both ways (stdin, stdout, stderr, file bytes), each direction ending with
//! [`Kind::Eof`]. Many channels run at once over the one stream.
//!
//! Every conversation starts with a sync (see [`sync`]): the host sends its
//! preamble, the agent answers with [`SYNC`] and a Hello frame, and only then
//! does the host open channels.
//!
//! Both ends are written in Rust from this crate, so the JSON bodies are the
//! serde forms of the types below; nothing else speaks it.

pub mod frame;
pub mod message;
pub mod sync;

pub use frame::{Frame, FrameError, Kind, HEADER_LEN, MAX_PAYLOAD};
pub use message::*;
pub use sync::{host_preamble, skip_to_sync, SyncScanner, SYNC};

/// The vsock port the agent connects to on the host (CID 2). Firecracker
/// forwards it to `<uds_path>_1024` on the host.
pub const VSOCK_PORT: u32 = 1024;
/// The host's vsock context id, as seen from a guest.
pub const HOST_CID: u32 = 2;
/// The virtio-serial port name the agent looks for under
/// `/sys/class/virtio-ports/*/name`.
pub const SERIAL_PORT_NAME: &str = "org.hatch.agent.0";
/// The protocol's version; the agent sends it in [`Hello`] and the host
/// refuses an agent with a different major number.
pub const PROTOCOL_VERSION: u32 = 1;
/// The channel reserved for the agent's greeting.
pub const CONTROL_CHANNEL: u32 = 0;
