//! After a clone's NIC took a new MAC, the guest's DHCP client must ask
//! again as that NIC. A client started with the parent's MAC sends it in
//! its requests, and the host's DHCP server keys reservations on it: the
//! clone would renew the parent's lease and put the parent's address back.
//!
//! So the network configuration files that name the old MAC (systemd-
//! networkd's, as cloud-init writes them) are rewritten, networkd is told
//! to reconfigure the link, and running `udhcpc`/`dhclient` processes of
//! the interface are restarted with their own command line.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::system_tools::{self, find_program};

/// Where networkd reads `.network` and `.link` files.
const NETWORKD_DIRS: [&str; 2] = ["/etc/systemd/network", "/run/systemd/network"];
/// DHCP clients restarted when they serve the interface.
const CLIENTS: [&str; 2] = ["udhcpc", "dhclient"];
/// How long a stopped client may take to exit.
const STOP_WAIT: Duration = Duration::from_secs(3);

/// The names that change with the identity.
pub struct Renamed<'a> {
    pub interface: &'a str,
    pub previous_mac: &'a str,
    pub mac: &'a str,
    pub previous_hostname: &'a str,
    pub hostname: &'a str,
}

/// What [`start_over`] did.
#[derive(Debug, Default)]
pub struct StartedOver {
    /// DHCP clients now asking as the new NIC (networkd counts as one).
    pub clients: usize,
    /// What failed (the caller then sets the address itself).
    pub notes: Vec<String>,
}

/// Makes the guest's DHCP clients start over as the new NIC.
pub fn start_over(names: &Renamed<'_>) -> StartedOver {
    let mut started = StartedOver::default();
    let rewritten = rewrite_networkd_files(names, &mut started.notes);
    if rewritten || Path::new("/run/systemd/netif").is_dir() {
        let reconfigured = run_networkctl(&["reload"]).and_then(|_| run_networkctl(&["reconfigure", names.interface]));
        match reconfigured {
            Ok(ran) => started.clients += usize::from(ran),
            Err(note) => started.notes.push(note),
        }
    }
    for pid in client_pids(names.interface) {
        match restart_client(pid, names) {
            Ok(()) => started.clients += 1,
            Err(note) => started.notes.push(note),
        }
    }
    started
}

fn rewrite_networkd_files(names: &Renamed<'_>, notes: &mut Vec<String>) -> bool {
    let mut rewritten = false;
    for dir in NETWORKD_DIRS {
        let Ok(entries) = fs::read_dir(dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(text) = fs::read_to_string(&path) else { continue };
            let Some(updated) = replace_mac(&text, names.previous_mac, names.mac) else {
                continue;
            };
            match replace_file(&path, &updated) {
                Ok(()) => rewritten = true,
                Err(error) => notes.push(format!("rewriting {}: {error}", path.display())),
            }
        }
    }
    rewritten
}

/// `text` with every spelling of `from` (any case) replaced by `to`; `None`
/// when it does not name `from`.
pub fn replace_mac(text: &str, from: &str, to: &str) -> Option<String> {
    let lower = text.to_ascii_lowercase();
    let from = from.to_ascii_lowercase();
    if from.is_empty() || !lower.contains(&from) {
        return None;
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = 0;
    for (at, _) in lower.match_indices(&from) {
        out.push_str(&text[rest..at]);
        out.push_str(to);
        rest = at + from.len();
    }
    out.push_str(&text[rest..]);
    Some(out)
}

fn replace_file(path: &Path, text: &str) -> std::io::Result<()> {
    let mode = fs::metadata(path)?.permissions().mode();
    let temporary = path.with_extension("hatch-tmp");
    fs::write(&temporary, text)?;
    fs::set_permissions(&temporary, fs::Permissions::from_mode(mode))?;
    fs::rename(&temporary, path)
}

/// Whether networkctl was there to run.
fn run_networkctl(args: &[&str]) -> Result<bool, String> {
    match find_program("networkctl") {
        Some(program) => system_tools::run(&program, args).map(|()| true),
        None => Ok(false),
    }
}

/// Running DHCP clients whose command line names the interface.
fn client_pids(interface: &str) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            CLIENTS.contains(&comm.trim()) && command_line(*pid).is_some_and(|argv| serves_interface(&argv, interface))
        })
        .collect()
}

fn command_line(pid: u32) -> Option<Vec<String>> {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let argv: Vec<String> = raw
        .split(|b| *b == 0)
        .filter(|arg| !arg.is_empty())
        .map(|arg| String::from_utf8_lossy(arg).into_owned())
        .collect();
    (!argv.is_empty()).then_some(argv)
}

/// Whether a client's argv names `interface` (`-i eth0`, `-ieth0`,
/// `--interface=eth0`, or dhclient's bare `eth0`).
pub fn serves_interface(argv: &[String], interface: &str) -> bool {
    argv.iter().skip(1).any(|arg| {
        arg == interface
            || arg.strip_prefix("-i").is_some_and(|rest| rest == interface)
            || arg.strip_prefix("--interface=").is_some_and(|rest| rest == interface)
    })
}

/// The client's argv for its restart: a hostname it sends (`-x
/// hostname:NAME`, `-H NAME`) becomes the new one.
pub fn renamed_argv(argv: &[String], previous_hostname: &str, hostname: &str) -> Vec<String> {
    argv.iter()
        .map(|arg| {
            if arg == &format!("hostname:{previous_hostname}") {
                format!("hostname:{hostname}")
            } else if arg == previous_hostname && !previous_hostname.is_empty() {
                hostname.to_string()
            } else {
                arg.clone()
            }
        })
        .collect()
}

fn restart_client(pid: u32, names: &Renamed<'_>) -> Result<(), String> {
    let argv = command_line(pid).ok_or_else(|| format!("DHCP client {pid} is gone"))?;
    let argv = renamed_argv(&argv, names.previous_hostname, names.hostname);
    let program = fs::read_link(format!("/proc/{pid}/exe"))
        .ok()
        .filter(|exe| exe.is_file())
        .or_else(|| find_program(&argv[0]))
        .ok_or_else(|| format!("{} not found", argv[0]))?;
    // SAFETY: signals a process found a moment ago by its name and command line.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
    let started = Instant::now();
    while Path::new(&format!("/proc/{pid}")).exists() && started.elapsed() < STOP_WAIT {
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut command = system_tools::command(&program);
    command
        .arg0(&argv[0])
        .args(&argv[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: setsid is async-signal-safe; the client must not belong to the
    // agent's session (it outlives any request).
    unsafe {
        command.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = command
        .spawn()
        .map_err(|e| format!("restarting {}: {e}", argv.join(" ")))?;
    // Reaped when it exits or daemonizes; the agent is not the guest's init.
    std::thread::spawn(move || child.wait());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<String> {
        line.split(' ').map(String::from).collect()
    }

    #[test]
    fn every_spelling_of_the_old_mac_is_replaced() {
        let text = "[Match]\nMACAddress=52:54:00:AB:cd:01\n\n[Network]\nDHCP=ipv4\n# was 52:54:00:ab:cd:01\n";
        assert_eq!(
            replace_mac(text, "52:54:00:ab:cd:01", "52:54:00:00:00:02").as_deref(),
            Some("[Match]\nMACAddress=52:54:00:00:00:02\n\n[Network]\nDHCP=ipv4\n# was 52:54:00:00:00:02\n")
        );
        assert_eq!(replace_mac("[Match]\nName=eth0\n", "52:54:00:ab:cd:01", "x"), None);
    }

    #[test]
    fn clients_of_the_interface_are_recognised() {
        assert!(serves_interface(
            &args("udhcpc -i eth0 -s /etc/udhcpc.script -b"),
            "eth0"
        ));
        assert!(serves_interface(&args("udhcpc -ieth0"), "eth0"));
        assert!(serves_interface(&args("dhclient -4 -v eth0"), "eth0"));
        assert!(!serves_interface(&args("udhcpc -i eth1"), "eth0"));
        assert!(!serves_interface(&args("eth0"), "eth0"), "argv[0] is the program");
    }

    #[test]
    fn the_hostname_the_client_sends_becomes_the_new_one() {
        assert_eq!(
            renamed_argv(
                &args("udhcpc -i eth0 -x hostname:vm-parent -b"),
                "vm-parent",
                "vm-child"
            ),
            args("udhcpc -i eth0 -x hostname:vm-child -b")
        );
        assert_eq!(
            renamed_argv(&args("dhclient -H vm-parent eth0"), "vm-parent", "vm-child"),
            args("dhclient -H vm-child eth0")
        );
    }
}
