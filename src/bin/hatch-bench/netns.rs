//! The network namespace the benchmark measures in: Hatch's bridge, TAPs,
//! iptables rules and dnsmasq are all made inside it, and it is deleted
//! (with every process still in it) when dropped, also on error or Ctrl-C.

use std::process::{Command, Stdio};

use crate::BenchError;

pub struct BenchNetns {
    name: String,
}

fn ip(args: &[&str]) -> Result<String, BenchError> {
    let output = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| BenchError::Io {
            context: "running ip".into(),
            source,
        })?;
    if !output.status.success() {
        return Err(BenchError::Namespace(format!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

impl BenchNetns {
    /// Creates `hatch-b-<random>` with its loopback up.
    pub fn create() -> Result<BenchNetns, BenchError> {
        let name = format!("hatch-b-{:08x}", rand::random::<u32>());
        ip(&["netns", "add", &name])?;
        let ns = BenchNetns { name };
        ip(&["-n", &ns.name, "link", "set", "dev", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for BenchNetns {
    fn drop(&mut self) {
        // QEMU and dnsmasq left behind by an interrupted run die with it.
        for pid in ip(&["netns", "pids", &self.name])
            .unwrap_or_default()
            .split_whitespace()
        {
            if let Ok(pid) = pid.parse::<i32>() {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            }
        }
        if let Err(error) = ip(&["netns", "del", &self.name]) {
            eprintln!("hatch-bench: {error}");
        }
    }
}
