//! What one live VM uses, read at scrape time: CPU and memory from its
//! cgroup when Hatch put it in one (cgroup v2 `cpu.stat` and
//! `memory.current`), else from its VMM process (`/proc/<pid>/stat` utime +
//! stime, `/proc/<pid>/status` VmRSS); network bytes from its TAP's counters
//! in `/proc/self/net/dev`, which lists the links of the daemon's own
//! network namespace (where the TAPs are), whatever /sys was mounted for.
//! Anything unreadable is left out rather than reported as 0.

use std::path::Path;

/// One live VM's usage; `None` where it could not be read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VmUsage {
    pub vm_id: String,
    pub cpu_seconds: Option<f64>,
    pub memory_bytes: Option<u64>,
    /// Bytes the host received on the TAP (sent by the guest).
    pub net_rx_bytes: Option<u64>,
    /// Bytes the host sent on the TAP (received by the guest).
    pub net_tx_bytes: Option<u64>,
}

/// Reads the usage of the VM whose VMM process is `pid` and whose TAP is
/// `tap`. Blocking (file reads): call from a blocking thread.
pub fn read_usage(vm_id: &str, pid: u32, tap: Option<&str>, net_dev: &str) -> VmUsage {
    let cgroup = crate::vmm::cgroup::of_process(pid);
    let from_cgroup = cgroup.as_deref().map(cgroup_usage).unwrap_or_default();
    let (cpu_seconds, memory_bytes) = match from_cgroup {
        (Some(cpu), Some(memory)) => (Some(cpu), Some(memory)),
        (cpu, memory) => {
            let (proc_cpu, proc_memory) = process_usage(pid);
            (cpu.or(proc_cpu), memory.or(proc_memory))
        }
    };
    let (net_rx_bytes, net_tx_bytes) = tap.and_then(|tap| tap_bytes(net_dev, tap)).unzip();
    VmUsage {
        vm_id: vm_id.to_string(),
        cpu_seconds,
        memory_bytes,
        net_rx_bytes,
        net_tx_bytes,
    }
}

/// The daemon's `/proc/self/net/dev`, read once per scrape.
pub fn read_net_dev() -> String {
    std::fs::read_to_string("/proc/self/net/dev").unwrap_or_default()
}

fn cgroup_usage(dir: &Path) -> (Option<f64>, Option<u64>) {
    let cpu = std::fs::read_to_string(dir.join("cpu.stat")).ok().and_then(|text| {
        text.lines()
            .find_map(|l| l.strip_prefix("usage_usec "))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|usec| usec as f64 / 1e6)
    });
    let memory = std::fs::read_to_string(dir.join("memory.current"))
        .ok()
        .and_then(|v| v.trim().parse().ok());
    (cpu, memory)
}

fn process_usage(pid: u32) -> (Option<f64>, Option<u64>) {
    let cpu = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| cpu_ticks(&stat))
        .map(|ticks| ticks as f64 / clock_ticks_per_second());
    let memory = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| vm_rss_bytes(&status));
    (cpu, memory)
}

/// utime + stime (fields 14 and 15 of `/proc/<pid>/stat`), counted after
/// the command name, which may itself hold spaces and parentheses.
fn cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state).
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

fn vm_rss_bytes(status: &str) -> Option<u64> {
    let line = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().next()?.parse().ok()?;
    Some(kib * 1024)
}

fn clock_ticks_per_second() -> f64 {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK) {
        Ok(Some(ticks)) if ticks > 0 => ticks as f64,
        _ => 100.0,
    }
}

/// (received, sent) bytes of `tap` in a `/proc/net/dev` listing.
fn tap_bytes(net_dev: &str, tap: &str) -> Option<(u64, u64)> {
    net_dev.lines().find_map(|line| {
        let (name, counters) = line.split_once(':')?;
        if name.trim() != tap {
            return None;
        }
        let fields: Vec<&str> = counters.split_whitespace().collect();
        Some((fields.first()?.parse().ok()?, fields.get(8)?.parse().ok()?))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_proc_stat_status_and_net_dev() {
        let stat = "1234 (qemu (x) sys) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 999";
        assert_eq!(cpu_ticks(stat), Some(300));
        assert_eq!(vm_rss_bytes("Name:\tqemu\nVmRSS:\t  2048 kB\n"), Some(2 * 1024 * 1024));
        let dev =
            "Inter-|   Receive |  Transmit\n face |bytes packets errs drop fifo frame compressed multicast|bytes\n\
                   htap0: 1500 10 0 0 0 0 0 0 3000 20 0 0 0 0 0 0\n    lo: 1 1 0 0 0 0 0 0 1 1 0 0 0 0 0 0\n";
        assert_eq!(tap_bytes(dev, "htap0"), Some((1500, 3000)));
        assert_eq!(tap_bytes(dev, "htap1"), None);
    }

    #[test]
    fn own_process_is_readable() {
        let usage = read_usage("vm", std::process::id(), None, "");
        assert!(usage.cpu_seconds.is_some());
        assert!(usage.memory_bytes.unwrap_or(0) > 0);
    }
}
