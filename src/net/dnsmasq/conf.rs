//! dnsmasq.conf: rendering (every value validated before it is written),
//! reading back the reservations, atomic replacement, and lease pruning.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use crate::net::cidr::Ipv4Cidr;
use crate::net::{mac, names, NetConfig, NetError};

/// One `dhcp-host=<mac>,<ip>,<vm id>` line. Only constructible through
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

    fn line(&self) -> String {
        format!("dhcp-host={},{},{}", self.mac, self.ip, self.vm_id)
    }

    fn parse_line(line: &str) -> Option<Self> {
        let value = line.strip_prefix("dhcp-host=")?;
        let mut parts = value.split(',');
        let (mac, ip, vm_id) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        Reservation::new(mac, ip.parse().ok()?, vm_id).ok()
    }
}

/// Where dnsmasq's files live inside `$HATCH_DATA_DIR/dhcp`.
#[derive(Debug, Clone)]
pub struct Paths {
    pub dir: PathBuf,
    pub conf: PathBuf,
    pub leases: PathBuf,
    pub pid: PathBuf,
    pub log: PathBuf,
}

impl Paths {
    pub fn new(dir: &Path) -> Self {
        Paths {
            dir: dir.to_path_buf(),
            conf: dir.join("dnsmasq.conf"),
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

/// The whole file. Reservations are sorted so the text only changes when
/// the set does.
pub fn render(cfg: &NetConfig, paths: &Paths, reservations: &[Reservation]) -> Result<String, NetError> {
    names::check_ifname(&cfg.bridge_name).map_err(|message| NetError::Invalid {
        field: "HATCH_BRIDGE_NAME",
        message,
    })?;
    let net = Ipv4Cidr::new(cfg.gateway, cfg.prefix_len);
    let mut sorted = reservations.to_vec();
    sorted.sort();
    sorted.dedup();
    let mut text = format!(
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
         pid-file={pid}\n\
         user={user}\n\
         group={group}\n\
         log-facility=-\n\
         # One reservation per networked VM: dhcp-host=<mac>,<ip>,<vm id>\n",
        bridge = cfg.bridge_name,
        network = net.network(),
        netmask = net.netmask(),
        gateway = cfg.gateway,
        leases = path_value(&paths.leases)?,
        pid = path_value(&paths.pid)?,
        user = DNSMASQ_USER,
        group = dnsmasq_group(),
    );
    for reservation in &sorted {
        text.push_str(&reservation.line());
        text.push('\n');
    }
    Ok(text)
}

/// The reservations currently in the file (invalid lines are ignored).
pub fn read_reservations(conf: &Path) -> Vec<Reservation> {
    std::fs::read_to_string(conf)
        .map(|text| text.lines().filter_map(Reservation::parse_line).collect())
        .unwrap_or_default()
}

/// The bridge the file was written for (`interface=`), if any.
pub fn read_interface(conf: &Path) -> Option<String> {
    let text = std::fs::read_to_string(conf).ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix("interface="))
        .map(str::to_string)
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
        let paths = Paths::new(Path::new("/var/lib/hatch/dhcp"));
        let r = Reservation::new("02:FC:00:00:00:01", "10.20.3.4".parse().unwrap(), "vm-abc123").unwrap();
        let text = render(&cfg(), &paths, &[r.clone(), r]).unwrap();
        assert!(text.contains("\ninterface=fcbridge\n"));
        assert!(text.contains("\ndhcp-range=10.20.0.0,static,255.255.0.0,12h\n"));
        assert!(text.contains("\ndhcp-option=option:router,10.20.0.1\n"));
        assert!(text.contains("\ndhcp-option=option:dns-server,10.20.0.1\n"));
        assert!(text.contains("\ndhcp-leasefile=/var/lib/hatch/dhcp/dnsmasq.leases\n"));
        assert_eq!(
            text.matches("dhcp-host=02:fc:00:00:00:01,10.20.3.4,vm-abc123\n")
                .count(),
            1
        );
        assert_eq!(read_reservations_from(&text).len(), 1);
    }

    fn read_reservations_from(text: &str) -> Vec<Reservation> {
        text.lines().filter_map(Reservation::parse_line).collect()
    }

    #[test]
    fn injection_is_impossible() {
        let ip: Ipv4Addr = "10.20.3.4".parse().unwrap();
        assert!(Reservation::new("02:fc:00:00:00:01\ndhcp-range=x", ip, "vm-a").is_err());
        assert!(Reservation::new("02:fc:00:00:00:01", ip, "vm-a\nserver=1.2.3.4").is_err());
        assert!(Reservation::new("02:fc:00:00:00:01", ip, "vm,a").is_err());
        let bad_dir = Paths::new(Path::new("/tmp/x\nuser=nobody"));
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
