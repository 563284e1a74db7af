//! The greeting sent at the start of every conversation.

use hatch_agent_proto::{Hello, PROTOCOL_VERSION};

pub fn current() -> Hello {
    Hello {
        protocol: PROTOCOL_VERSION,
        version: env!("CARGO_PKG_VERSION").to_string(),
        hostname: read_trimmed("/proc/sys/kernel/hostname"),
        // Empty when the kernel has none to give; the host treats it as unknown.
        boot_id: read_trimmed("/proc/sys/kernel/random/boot_id"),
        guest_time_unix_ns: crate::clock::realtime_ns().unwrap_or(0),
    }
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|text| text.trim().to_string())
        .unwrap_or_default()
}
