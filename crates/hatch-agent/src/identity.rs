//! SetIdentity: a guest restored from another VM's snapshot (a fork, a VM
//! from a warm pool) becomes itself. Until its NIC has the new MAC the
//! host's bridge drops its frames, and until the random generator is
//! reseeded it shares its parent's "random" numbers.
//!
//! In order, stopping at the first failure: every value is checked (an
//! Invalid reply changes nothing); the host's entropy is mixed into the
//! pool and the CRNG reseeded; the NIC gets its MAC (and loses the parent's
//! address); the hostname is set; the guest's DHCP clients start over as
//! the new NIC (see [`crate::dhcp`]) and bind its address, or it is set
//! here; the default route points at the gateway. Every step may be
//! repeated: a request sent again (after a lost answer) ends in the same
//! state.

mod hostname;
mod nic;
mod values;

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hatch_agent_proto::{Identity, Reply};

use crate::channel::io_error;
use values::Checked;

/// `_IO('R', 0x07)`: reseed the CRNG from the input pool now (Linux 4.17+).
const RNDRESEEDCRNG: libc::Ioctl = 0x5207;

/// Answers Done with the number of entropy bytes mixed in, or the first
/// failure.
pub fn set(identity: &Identity) -> Reply {
    match apply(identity) {
        Ok(()) => Reply::Done {
            bytes: identity.entropy.len() as u64,
        },
        Err(reply) => reply,
    }
}

/// One request at a time: two interleaving their steps could leave a mix
/// of both identities.
static APPLYING: Mutex<()> = Mutex::new(());

fn apply(identity: &Identity) -> Result<(), Reply> {
    let checked = Checked::parse(identity)?;
    let _one_at_a_time = APPLYING.lock().unwrap_or_else(|e| e.into_inner());
    reseed(checked.entropy)?;
    let previous_hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let mut new_nic = None;
    if let Some(wanted) = &checked.nic {
        let ip = nic::SystemIp::find()?;
        let (interface, current) = nic::find_interface(Path::new("/sys/class/net"), wanted)?;
        nic::take_mac(&ip, &interface, current, wanted)?;
        new_nic = Some((ip, interface, wanted));
    }
    hostname::set(&checked.hostname, Path::new("/etc"))?;
    if let Some((ip, interface, wanted)) = new_nic {
        // With the new names in place, the DHCP clients start over as the
        // new NIC, and the answer waits for the lease they bind: a client
        // restarted after the address was set would remove it (its
        // "deconfig") and leave the VM without one for a while after it
        // was called ready. Without a client, or without a lease in time,
        // the address is set here.
        let (previous_mac, mac) = (wanted.previous_mac.to_string(), wanted.mac.to_string());
        let started = crate::dhcp::start_over(&crate::dhcp::Renamed {
            interface: &interface,
            previous_mac: &previous_mac,
            mac: &mac,
            previous_hostname: previous_hostname.trim(),
            hostname: checked.hostname.as_str(),
        });
        for note in &started.notes {
            log!("after the new identity: {note}");
        }
        let bound = started.clients > 0 && wait_for_lease(&interface, wanted.address.address);
        if started.clients > 0 && !bound {
            log!("no DHCP lease on {interface} within {LEASE_WAIT:?}: its address is set statically");
        }
        nic::configure(&ip, &interface, wanted, bound)?;
    }
    Ok(())
}

/// How long the restarted DHCP clients may take to bind the new address.
const LEASE_WAIT: Duration = Duration::from_secs(10);

fn wait_for_lease(interface: &str, address: std::net::Ipv4Addr) -> bool {
    let deadline = Instant::now() + LEASE_WAIT;
    while !nic::has_address(interface, address) {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// Writing to /dev/urandom mixes the bytes into the input pool (without
/// crediting them); the ioctl makes the CRNG use them now rather than at
/// its next scheduled reseed.
fn reseed(entropy: &[u8]) -> Result<(), Reply> {
    let mut urandom = OpenOptions::new()
        .write(true)
        .open("/dev/urandom")
        .map_err(|e| io_error("opening /dev/urandom", &e))?;
    urandom
        .write_all(entropy)
        .map_err(|e| io_error("writing entropy to /dev/urandom", &e))?;
    // SAFETY: an ioctl without arguments on a descriptor we own.
    if unsafe { libc::ioctl(urandom.as_raw_fd(), RNDRESEEDCRNG) } < 0 {
        let e = io::Error::last_os_error();
        // Kernels before 4.17 know no such request; their CRNG reseeds on its own.
        if !matches!(e.raw_os_error(), Some(libc::ENOTTY | libc::EINVAL)) {
            return Err(io_error("reseeding the random generator (RNDRESEEDCRNG)", &e));
        }
    }
    Ok(())
}
