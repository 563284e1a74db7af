//! dnsmasq's files: rendering (every value validated before it is written),
//! reading back the reservations, atomic replacement, and lease pruning.
//!
//! dnsmasq.conf holds only settings, which dnsmasq reads once at start. The
//! reservations live in two files dnsmasq rereads on SIGHUP, so a create or
//! delete never restarts it (other guests keep DHCP and DNS throughout):
//! `hosts.dhcp` (`dhcp-hostsfile`: `<mac>,<ip>,<vm id>` per VM) and
//! `hosts.dns` (`addn-hosts`: `<ip> <vm id>`, so a VM's name resolves from
//! its creation, not only once it has a lease). dnsmasq.conf still lists
//! each reservation as a comment, so the guide's
//! `grep <mac> /var/lib/hatch/dhcp/dnsmasq.conf` finds it.

use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::net::cidr::Ipv4Cidr;
use crate::net::{mac, names, NetConfig, NetError};

/// One VM's reservation (`<mac>,<ip>,<vm id>`). Only constructible through
/// [`Reservation::new`], so nothing unvalidated reaches the file.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Reservation {
    mac: String,
    ip: Ipv4Addr,
    vm_id: String,
}

impl Reservation {
    pub fn new(mac: &str, ip: Ipv4Addr, vm_id: &str) -> Result<Self, NetError> {
        let mac = mac::normalise(mac).map_err(|message| NetError::Invalid {
            field: "guest_mac",
            message,
        })?;
        names::check_vm_id(vm_id).map_err(|message| NetError::Invalid {
            field: "vm_id",
            message,
        })?;
        Ok(Reservation {
            mac,
            ip,
            vm_id: vm_id.to_string(),
        })
    }

    pub fn mac(&self) -> &str {
        &self.mac
    }

    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }

    /// The line in `hosts.dhcp`.
    fn host_line(&self) -> String {
        format!("{},{},{}", self.mac, self.ip, self.vm_id)
    }

    /// A `hosts.dhcp` line, or a `dhcp-host=` line of a dnsmasq.conf
    /// written by an older Hatch (which kept reservations there).
    fn parse_line(line: &str) -> Option<Self> {
        let value = line.strip_prefix("dhcp-host=").unwrap_or(line);
        let mut parts = value.split(',');
        let (mac, ip, vm_id) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        Reservation::new(mac, ip.parse().ok()?, vm_id).ok()
    }
}

/// Where the files dnsmasq rereads live. dnsmasq reads them as
/// [`DNSMASQ_USER`] (at start too), who cannot enter a data directory
/// that is root's alone, and the data directory is not opened up for it:
/// so they go here, one directory per DHCP directory, open only to
/// dnsmasq's group.
pub const REREAD_ROOT: &str = "/run/hatch-dnsmasq";

/// Where dnsmasq's files live: `$HATCH_DATA_DIR/dhcp`, and the hosts files
/// under [`REREAD_ROOT`].
#[derive(Debug, Clone)]
pub struct Paths {
    pub dir: PathBuf,
    pub conf: PathBuf,
    /// The directory of `hosts` and `names`.
    pub reread: PathBuf,
    /// `dhcp-hostsfile`: the reservations.
    pub hosts: PathBuf,
    /// `addn-hosts`: the VMs' names for DNS.
    pub names: PathBuf,
    pub leases: PathBuf,
    pub pid: PathBuf,
    pub log: PathBuf,
}

impl Paths {
    /// The hosts files go to a directory under [`REREAD_ROOT`] named for
    /// `dir`, so daemons with different data directories never share one.
    pub fn new(dir: &Path) -> Self {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(dir.as_os_str().as_encoded_bytes());
        let name = hex::encode(&digest[..8]);
        Self::with_reread_dir(dir, &Path::new(REREAD_ROOT).join(name))
    }

    pub fn with_reread_dir(dir: &Path, reread: &Path) -> Self {
        Paths {
            dir: dir.to_path_buf(),
            conf: dir.join("dnsmasq.conf"),
            reread: reread.to_path_buf(),
            hosts: reread.join("hosts.dhcp"),
            names: reread.join("hosts.dns"),
            leases: dir.join("dnsmasq.leases"),
            pid: dir.join("dnsmasq.pid"),
            log: dir.join("dnsmasq.log"),
        }
    }
}

/// dnsmasq drops root after binding its sockets and opening its lease and
/// pid files (it keeps only the capabilities DHCP needs). Debian's
/// dnsmasq-base creates no `dnsmasq` user, so `nobody` it is; not the VMM
/// user, so a compromised VMM cannot signal or inspect dnsmasq.
pub const DNSMASQ_USER: &str = "nobody";

/// `nogroup` where it exists (Debian), else `nobody`.
fn dnsmasq_group() -> &'static str {
    match nix::unistd::Group::from_name("nogroup") {
        Ok(Some(_)) => "nogroup",
        _ => "nobody",
    }
}

/// A path as a config value: UTF-8 without control characters (a newline
/// would start a new directive).
fn path_value(path: &Path) -> Result<&str, NetError> {
    path.to_str()
        .filter(|text| !text.chars().any(char::is_control))
        .ok_or_else(|| NetError::Invalid {
            field: "HATCH_DATA_DIR",
            message: format!("{} must be UTF-8 without control characters", path.display()),
        })
}

/// What Hatch writes for one set of reservations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Files {
    pub conf: String,
    pub hosts: String,
    pub names: String,
}

/// All three files. Reservations are sorted so the text only changes when
/// the set does.
pub fn render(cfg: &NetConfig, paths: &Paths, reservations: &[Reservation]) -> Result<Files, NetError> {
    names::check_ifname(&cfg.bridge_name).map_err(|message| NetError::Invalid {
        field: "HATCH_BRIDGE_NAME",
        message,
    })?;
    let net = Ipv4Cidr::new(cfg.gateway, cfg.prefix_len);
    let mut sorted = reservations.to_vec();
    sorted.sort();
    sorted.dedup();
    let mut conf = format!(
        "# Written by Hatch; rewritten whenever networked VMs change. Do not edit.\n\
         interface={bridge}\n\
         bind-dynamic\n\
         except-interface=lo\n\
         no-hosts\n\
         domain-needed\n\
         bogus-priv\n\
         dhcp-authoritative\n\
         dhcp-range={network},static,{netmask},12h\n\
         dhcp-option=option:router,{gateway}\n\
         dhcp-option=option:dns-server,{gateway}\n\
         dhcp-leasefile={leases}\n\
         dhcp-hostsfile={hosts}\n\
         addn-hosts={names}\n\
         pid-file={pid}\n\
         user={user}\n\
         group={group}\n\
         log-facility=-\n\
         # One reservation per networked VM, served from {hosts} (reread on SIGHUP):\n",
        bridge = cfg.bridge_name,
        network = net.network(),
        netmask = net.netmask(),
        gateway = cfg.gateway,
        leases = path_value(&paths.leases)?,
        hosts = path_value(&paths.hosts)?,
        names = path_value(&paths.names)?,
        pid = path_value(&paths.pid)?,
        user = DNSMASQ_USER,
        group = dnsmasq_group(),
    );
    let mut hosts = String::new();
    let mut names = String::new();
    for reservation in &sorted {
        conf.push_str(&format!("# dhcp-host={}\n", reservation.host_line()));
        hosts.push_str(&reservation.host_line());
        hosts.push('\n');
        names.push_str(&format!("{} {}\n", reservation.ip, reservation.vm_id));
    }
    Ok(Files { conf, hosts, names })
}

/// The settings of a dnsmasq.conf: what dnsmasq reads from it (comments
/// left out). Only a change here needs a restart.
pub fn settings(conf: &str) -> Vec<&str> {
    conf.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .collect()
}

/// The reservations currently on disk (invalid lines are ignored): the
/// hosts file, else the list in dnsmasq.conf (after a reboot emptied
/// [`REREAD_ROOT`], or as an older Hatch wrote it, inline).
pub fn read_reservations(paths: &Paths) -> Vec<Reservation> {
    if let Ok(text) = std::fs::read_to_string(&paths.hosts) {
        return text.lines().filter_map(Reservation::parse_line).collect();
    }
    std::fs::read_to_string(&paths.conf)
        .map(|text| {
            text.lines()
                .filter(|line| line.trim_start_matches("# ").starts_with("dhcp-host="))
                .filter_map(|line| Reservation::parse_line(line.trim_start_matches("# ")))
                .collect()
        })
        .unwrap_or_default()
}

/// The bridge the file was written for (`interface=`), if any.
pub fn read_interface(conf: &Path) -> Option<String> {
    let text = std::fs::read_to_string(conf).ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix("interface="))
        .map(str::to_string)
}

/// What [`write_files`] changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    /// dnsmasq.conf's settings (not only its comments): needs a restart.
    pub settings: bool,
    /// The hosts files: needs a reload (SIGHUP).
    pub hosts: bool,
}

/// The hosts files' directory: root's, open to dnsmasq's group only.
fn prepare_reread_dir(dir: &Path) -> Result<(), NetError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o750)).map_err(io(dir))?;
    let group = nix::unistd::Group::from_name(dnsmasq_group())
        .ok()
        .flatten()
        .map(|g| g.gid);
    nix::unistd::chown(dir, None, group).map_err(|e| io(dir)(e.into()))
}

/// Writes whichever of the three files differ from `files`.
pub fn write_files(paths: &Paths, files: &Files) -> Result<Written, NetError> {
    prepare_reread_dir(&paths.reread)?;
    let old_conf = std::fs::read_to_string(&paths.conf).ok();
    let settings_changed = old_conf.as_deref().map(settings) != Some(settings(&files.conf));
    write_if_changed(&paths.conf, &files.conf)?;
    let hosts = write_if_changed(&paths.hosts, &files.hosts)?;
    let names = write_if_changed(&paths.names, &files.names)?;
    Ok(Written {
        settings: settings_changed,
        hosts: hosts || names,
    })
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> NetError + '_ {
    move |source| NetError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Replaces `path` with `text` atomically (temp file + rename) unless it
/// already holds exactly that. Returns whether it changed.
pub fn write_if_changed(path: &Path, text: &str) -> Result<bool, NetError> {
    if std::fs::read_to_string(path).is_ok_and(|current| current == text) {
        return Ok(false);
    }
    let dir = path.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file")
    ));
    std::fs::write(&tmp, text).map_err(io(&tmp))?;
    // dnsmasq rereads its hosts files after dropping root.
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))?;
    Ok(true)
}

/// Drops leases that no longer match a reservation. Run while dnsmasq is
/// stopped: otherwise a deleted VM's lease keeps its address "in use" and
/// dnsmasq refuses to hand it to the next VM reserved for it.
pub fn prune_leases(leases: &Path, reservations: &[Reservation]) -> Result<(), NetError> {
    let Ok(text) = std::fs::read_to_string(leases) else {
        return Ok(());
    };
    let keep = |line: &&str| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.len() >= 3
            && reservations
                .iter()
                .any(|r| fields[1].eq_ignore_ascii_case(&r.mac) && fields[2] == r.ip.to_string())
    };
    let kept: String = text.lines().filter(keep).map(|line| format!("{line}\n")).collect();
    write_if_changed(leases, &kept).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> NetConfig {
        crate::net::settings::config_from_values(
            "fcbridge",
            "10.20.0.1/16",
            "0.0.0.0/0",
            "2200",
            "2299",
            "/var/lib/hatch/dhcp".into(),
        )
        .unwrap()
    }

    #[test]
    fn renders_range_router_dns_and_reservations() {
        let paths = Paths::with_reread_dir(Path::new("/var/lib/hatch/dhcp"), Path::new("/run/x"));
        let r = Reservation::new("02:FC:00:00:00:01", "10.20.3.4".parse().unwrap(), "vm-abc123").unwrap();
        let files = render(&cfg(), &paths, &[r.clone(), r]).unwrap();
        let text = &files.conf;
        assert!(text.contains("\ninterface=fcbridge\n"));
        assert!(text.contains("\ndhcp-range=10.20.0.0,static,255.255.0.0,12h\n"));
        assert!(text.contains("\ndhcp-option=option:router,10.20.0.1\n"));
        assert!(text.contains("\ndhcp-option=option:dns-server,10.20.0.1\n"));
        assert!(text.contains("\ndhcp-leasefile=/var/lib/hatch/dhcp/dnsmasq.leases\n"));
        assert!(text.contains("\ndhcp-hostsfile=/run/x/hosts.dhcp\n"));
        assert!(text.contains("\naddn-hosts=/run/x/hosts.dns\n"));
        // Listed for the guide's grep, as a comment dnsmasq ignores.
        assert_eq!(
            text.matches("\n# dhcp-host=02:fc:00:00:00:01,10.20.3.4,vm-abc123\n")
                .count(),
            1
        );
        assert!(!settings(text).iter().any(|l| l.contains("02:fc")));
        assert_eq!(files.hosts, "02:fc:00:00:00:01,10.20.3.4,vm-abc123\n");
        assert_eq!(files.names, "10.20.3.4 vm-abc123\n");
        let read: Vec<Reservation> = files.hosts.lines().filter_map(Reservation::parse_line).collect();
        assert_eq!(read.len(), 1);
    }

    #[test]
    fn only_settings_changes_need_a_restart_and_old_confs_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::with_reread_dir(dir.path(), &dir.path().join("reread"));
        let a = Reservation::new("02:fc:00:00:00:01", "10.20.3.4".parse().unwrap(), "vm-a").unwrap();
        let b = Reservation::new("02:fc:00:00:00:02", "10.20.3.5".parse().unwrap(), "vm-b").unwrap();
        // A dnsmasq.conf of an older Hatch, reservations inline.
        std::fs::write(
            &paths.conf,
            "interface=fcbridge\ndhcp-host=02:fc:00:00:00:01,10.20.3.4,vm-a\n",
        )
        .unwrap();
        assert_eq!(read_reservations(&paths), std::slice::from_ref(&a));
        let first = write_files(&paths, &render(&cfg(), &paths, std::slice::from_ref(&a)).unwrap()).unwrap();
        assert_eq!(
            first,
            Written {
                settings: true,
                hosts: true
            }
        );
        let second = write_files(&paths, &render(&cfg(), &paths, &[a.clone(), b.clone()]).unwrap()).unwrap();
        assert_eq!(
            second,
            Written {
                settings: false,
                hosts: true
            }
        );
        assert_eq!(read_reservations(&paths), [a.clone(), b.clone()]);
        let again = write_files(&paths, &render(&cfg(), &paths, &[b.clone(), a.clone()]).unwrap()).unwrap();
        assert_eq!(again, Written::default());
        // The hosts files gone (a reboot empties /run): dnsmasq.conf lists them.
        std::fs::remove_dir_all(&paths.reread).unwrap();
        assert_eq!(read_reservations(&paths), [a, b]);
    }

    #[test]
    fn injection_is_impossible() {
        let ip: Ipv4Addr = "10.20.3.4".parse().unwrap();
        assert!(Reservation::new("02:fc:00:00:00:01\ndhcp-range=x", ip, "vm-a").is_err());
        assert!(Reservation::new("02:fc:00:00:00:01", ip, "vm-a\nserver=1.2.3.4").is_err());
        assert!(Reservation::new("02:fc:00:00:00:01", ip, "vm,a").is_err());
        let bad_dir = Paths::with_reread_dir(Path::new("/tmp/x\nuser=nobody"), Path::new("/run/x"));
        assert!(render(&cfg(), &bad_dir, &[]).is_err());
    }

    #[test]
    fn atomic_write_reports_changes_and_prunes_leases() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("dnsmasq.conf");
        assert!(write_if_changed(&file, "a\n").unwrap());
        assert!(!write_if_changed(&file, "a\n").unwrap());
        assert!(write_if_changed(&file, "b\n").unwrap());
        let leases = dir.path().join("leases");
        std::fs::write(
            &leases,
            "1 02:fc:00:00:00:01 10.20.3.4 vm-a *\n1 02:fc:00:00:00:02 10.20.3.5 vm-b *\n",
        )
        .unwrap();
        let keep = Reservation::new("02:fc:00:00:00:01", "10.20.3.4".parse().unwrap(), "vm-a").unwrap();
        prune_leases(&leases, &[keep]).unwrap();
        assert_eq!(
            std::fs::read_to_string(&leases).unwrap(),
            "1 02:fc:00:00:00:01 10.20.3.4 vm-a *\n"
        );
    }
}
