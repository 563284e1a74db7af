//! [`Network`]: the one object the orchestrator uses for host networking.
//! Host changes are serialised by one lock, so concurrent creates and
//! deletes each see (and leave) a consistent bridge, dnsmasq and firewall.

use std::collections::BTreeMap;

use tokio::sync::Mutex;

use super::dnsmasq::{Dnsmasq, Paths, Reservation};
use super::ipam::Pool;
use super::{alloc, bridge, conntrack, dnsmasq::conf, firewall, link, names, neigh, ports, tap};
use super::{NetConfig, NetError, NetRequest, Taken};
use crate::model::NetworkIdentity;

/// What [`Network::reconcile`] found and changed on the host.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReconcileReport {
    pub taps_created: Vec<String>,
    pub taps_removed: Vec<String>,
    /// Comments of the iptables rules added and removed.
    pub rules_added: Vec<String>,
    pub rules_removed: Vec<String>,
    /// Whether dnsmasq's files were rewritten (and dnsmasq reloaded or
    /// restarted).
    pub reservations_changed: bool,
    /// VMs whose stored identity is unusable (vm id, reason); they get no
    /// host state.
    pub skipped: Vec<(String, String)>,
    /// Everything found different from what it should be and put right,
    /// in words ("TAP fctap-vm-a missing, recreated on fcbridge",
    /// "dnsmasq was not running, restarted"), in the order repaired.
    pub repairs: Vec<String>,
}

impl ReconcileReport {
    /// Nothing on the host had to change. (`skipped` VMs are a database
    /// matter and do not count.)
    pub fn is_clean(&self) -> bool {
        self.repairs.is_empty()
            && self.taps_created.is_empty()
            && self.taps_removed.is_empty()
            && self.rules_added.is_empty()
            && self.rules_removed.is_empty()
            && !self.reservations_changed
    }
}

/// The VMs whose host state Network maintains, by VM id.
type Attached = BTreeMap<String, NetworkIdentity>;

pub struct Network {
    cfg: NetConfig,
    /// Held for every host change. It guards the set of attached VMs,
    /// which is `None` until the first reconcile/attach/detach seeds it.
    /// Tracking it here (instead of trusting each caller's `desired_all`)
    /// means a create racing a delete cannot drop or revive the other's
    /// reservation with a stale snapshot.
    host: Mutex<Option<Attached>>,
    dhcp: Dnsmasq,
}

impl Network {
    pub fn new(cfg: NetConfig) -> Self {
        let dhcp = Dnsmasq::new(Paths::new(&cfg.dhcp_dir));
        Network {
            cfg,
            host: Mutex::new(None),
            dhcp,
        }
    }

    pub fn config(&self) -> &NetConfig {
        &self.cfg
    }

    /// Files of the DHCP server (`dnsmasq.conf`, leases, pid, log).
    pub fn dhcp_paths(&self) -> &Paths {
        self.dhcp.paths()
    }

    /// pid of the running dnsmasq, if any.
    pub fn dnsmasq_pid(&self) -> Option<u32> {
        self.dhcp.pid()
    }

    /// Picks or validates a VM's identity against `taken`. No host effect
    /// beyond probing whether a port is bound by another program.
    pub fn allocate(&self, vm_id: &str, req: &NetRequest, taken: &Taken) -> Result<NetworkIdentity, NetError> {
        alloc::allocate(&self.cfg, vm_id, req, taken, ports::bound_by_someone)
    }

    /// Bridge, kernel switches, chains and host-wide rules, dnsmasq and its
    /// supervisor. Idempotent.
    pub async fn ensure_host(&self) -> Result<(), NetError> {
        let host = self.host.lock().await;
        let previous_bridge = conf::read_interface(&self.dhcp.paths().conf);
        bridge::ensure(&self.cfg).await?;
        bridge::enable_forwarding(&self.cfg)?;
        firewall::ensure_host(&self.cfg).await?;
        // Before the first reconcile, keep the reservations already on disk
        // (reconcile settles them) so a restart does not briefly forget
        // every VM.
        let kept = match host.as_ref() {
            Some(attached) => self.reservations(attached),
            None => {
                let pool = Pool::new(self.cfg.gateway, self.cfg.prefix_len);
                conf::read_reservations(self.dhcp.paths())
                    .into_iter()
                    .filter(|r| pool.check_guest_ip(r.ip()).is_ok())
                    .collect()
            }
        };
        self.apply_reservations(&kept).await?;
        // Only once dnsmasq moved to the new bridge (it was bound to the old).
        if let Some(previous) = previous_bridge {
            bridge::remove_previous(&self.cfg, &previous).await?;
        }
        Ok(())
    }

    /// Makes TAPs, reservations and forwards match exactly `desired`.
    ///
    /// `desired` must be complete: take it while no create or delete runs
    /// (at start-up, or under the orchestrator's own lock).
    pub async fn reconcile(&self, desired: &[(String, NetworkIdentity)]) -> Result<ReconcileReport, NetError> {
        let mut host = self.host.lock().await;
        let mut report = ReconcileReport::default();
        let mut valid = Vec::new();
        let mut reservations = Vec::new();
        let mut seen = Taken::default();
        for (vm_id, id) in desired {
            // Two VMs holding the same address, MAC, TAP or port (a
            // corrupted database) would break each other: the first keeps it.
            let duplicate = seen.ips.contains(&id.guest_ip)
                || seen.macs.contains(&id.guest_mac.to_ascii_lowercase())
                || seen.taps.contains(&id.tap_name)
                || seen.ports.contains(&id.ssh_port);
            if duplicate {
                report.skipped.push((
                    vm_id.clone(),
                    "shares its IP, MAC, TAP or SSH port with another VM".into(),
                ));
                continue;
            }
            match self.check_identity(vm_id, id) {
                Ok(reservation) => {
                    seen.ips.insert(id.guest_ip);
                    seen.macs.insert(id.guest_mac.to_ascii_lowercase());
                    seen.taps.insert(id.tap_name.clone());
                    seen.ports.insert(id.ssh_port);
                    valid.push((vm_id.clone(), id.clone()));
                    reservations.push(reservation);
                }
                Err(err) => report.skipped.push((vm_id.clone(), err.to_string())),
            }
        }
        // One `ip` call shows the bridge and every TAP.
        let links = link::states().await?;
        let bridge_drift = bridge::drift(&self.cfg, &links);
        if !bridge_drift.is_empty() {
            bridge::ensure(&self.cfg).await?;
            report.repairs.extend(bridge_drift.iter().cloned());
        }
        for switch in bridge::enable_forwarding(&self.cfg)? {
            report.repairs.push(format!("sysctl {switch} was off, turned on"));
        }
        let wanted_taps: Vec<&str> = valid.iter().map(|(_, id)| id.tap_name.as_str()).collect();
        for stale in links
            .iter()
            .map(|l| l.ifname.as_str())
            .filter(|name| names::is_hatch_tap(name) && !wanted_taps.contains(name))
        {
            if tap::delete(stale).await? {
                report.taps_removed.push(stale.to_string());
                report.repairs.push(format!("TAP {stale} belongs to no VM, removed"));
            }
        }
        for name in wanted_taps {
            let Some(problem) = tap::drift(name, &self.cfg.bridge_name, &links) else {
                continue;
            };
            if tap::ensure(name, &self.cfg.bridge_name).await? {
                report.taps_created.push(name.to_string());
            }
            report.repairs.push(problem);
        }
        report.repairs.extend(neigh::reconcile(&self.cfg, &valid).await?);
        // dnsmasq binds to the bridge: a new bridge needs a new dnsmasq.
        let bridge_recreated = !links.iter().any(|l| l.ifname == self.cfg.bridge_name);
        self.repair_dhcp(&reservations, bridge_recreated, &mut report).await?;
        let changes = firewall::reconcile(&self.cfg, &valid).await?;
        *host = Some(valid.into_iter().collect());
        report.rules_added = changes.added;
        report.rules_removed = changes.removed;
        report.repairs.extend(changes.repairs);
        Ok(report)
    }

    /// dnsmasq's files must be exactly what Hatch writes for
    /// `reservations` and dnsmasq must run; dnsmasq is restarted only when
    /// its settings were not so, reloaded when its reservations were not.
    async fn repair_dhcp(
        &self,
        reservations: &[Reservation],
        force_restart: bool,
        report: &mut ReconcileReport,
    ) -> Result<(), NetError> {
        let paths = self.dhcp.paths();
        let files = conf::render(&self.cfg, paths, reservations)?;
        let on_disk = std::fs::read_to_string(&paths.conf).ok();
        let mut wanted = reservations.to_vec();
        wanted.sort();
        wanted.dedup();
        let mut found = conf::read_reservations(paths);
        found.sort();
        found.dedup();
        let hosts_drift = std::fs::read_to_string(&paths.hosts).ok().as_deref() != Some(files.hosts.as_str())
            || std::fs::read_to_string(&paths.names).ok().as_deref() != Some(files.names.as_str());
        // Exits the supervisor already repaired are news all the same.
        let exits = self.dhcp.take_unexpected_exits();
        let settings_drift = on_disk.as_deref().map(conf::settings) != Some(conf::settings(&files.conf));
        if settings_drift || hosts_drift {
            let what = match on_disk {
                None => "dnsmasq.conf missing".to_string(),
                Some(_) if settings_drift => "dnsmasq.conf differed from what Hatch writes".to_string(),
                Some(_) if found != wanted => {
                    let added = wanted.iter().filter(|r| !found.contains(r)).count();
                    let removed = found.iter().filter(|r| !wanted.contains(r)).count();
                    format!("reservations out of date ({added} to add, {removed} to remove)")
                }
                Some(_) => "hosts.dhcp or hosts.dns differed from what Hatch writes".to_string(),
            };
            let how = self.serve(&files, &found).await?;
            report.reservations_changed = true;
            report.repairs.push(format!("{what}, rewritten; dnsmasq {how}"));
        } else if !self.dhcp.is_running() {
            self.dhcp.restart().await?;
            report.repairs.push("dnsmasq was not running, restarted".into());
        } else if force_restart {
            self.dhcp.restart().await?;
            report.repairs.push("dnsmasq restarted for the recreated bridge".into());
        } else if exits > 0 {
            report.repairs.push(format!(
                "dnsmasq had exited {exits} time(s) since the last check; its supervisor restarted it"
            ));
        }
        // Comments only (the reservations listed for the guide's grep).
        if on_disk.as_deref().is_some_and(|text| text != files.conf) {
            conf::write_if_changed(&paths.conf, &files.conf)?;
        }
        // An exit the supervisor saw meanwhile is this same repair.
        self.dhcp.take_unexpected_exits();
        Ok(())
    }

    /// Host state for one new VM. Returns once the reservation is served,
    /// so the VM may boot. `desired_all` (every networked VM, with or
    /// without this one) only seeds the attached set if neither reconcile
    /// nor attach/detach ran before; later the set Network tracks wins.
    pub async fn attach_vm(
        &self,
        vm_id: &str,
        id: &NetworkIdentity,
        desired_all: &[(String, NetworkIdentity)],
    ) -> Result<(), NetError> {
        let mut host = self.host.lock().await;
        self.check_identity(vm_id, id)?;
        let attached = host.get_or_insert_with(|| self.seed(desired_all));
        // A restore finds its network as the snapshot left it (the TAP stays
        // while a VM is snapshotted): nothing to redo on the wake path.
        // Drift is the reconciler's to repair, as for a running VM.
        if attached.get(vm_id) == Some(id) && tap::is_attached(&id.tap_name, &self.cfg.bridge_name) {
            return Ok(());
        }
        attached.insert(vm_id.to_string(), id.clone());
        let reservations = self.reservations(attached);
        tap::ensure(&id.tap_name, &self.cfg.bridge_name).await?;
        neigh::set(&self.cfg.bridge_name, id.guest_ip, &id.guest_mac).await?;
        self.apply_reservations(&reservations).await?;
        let all: Vec<(String, NetworkIdentity)> = attached.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        firewall::reconcile(&self.cfg, &all).await?;
        Ok(())
    }

    /// Removes one VM's host state. Every step is attempted; the first
    /// failure is returned. `desired_all` as for [`attach_vm`](Self::attach_vm).
    pub async fn detach_vm(
        &self,
        vm_id: &str,
        id: &NetworkIdentity,
        desired_all: &[(String, NetworkIdentity)],
    ) -> Result<(), NetError> {
        let mut host = self.host.lock().await;
        let attached = host.get_or_insert_with(|| self.seed(desired_all));
        attached.remove(vm_id);
        let reservations = self.reservations(attached);
        let tap_result = if names::is_hatch_tap(&id.tap_name) {
            tap::delete(&id.tap_name).await.map(|_| ())
        } else {
            Ok(())
        };
        let neigh_result = neigh::remove(&self.cfg.bridge_name, id.guest_ip).await;
        let dhcp_result = self.apply_reservations(&reservations).await;
        let all: Vec<(String, NetworkIdentity)> = attached.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let rules_result = firewall::reconcile(&self.cfg, &all).await.map(|_| ());
        tap_result.and(neigh_result).and(dhcp_result).and(rules_result)
    }

    /// Stops the dnsmasq supervisor and dnsmasq. TAPs and rules stay: the
    /// next start reconciles them.
    pub async fn shutdown(&self) {
        self.dhcp.stop().await;
    }

    pub async fn established_ssh_sessions(&self, id: &NetworkIdentity) -> Result<usize, NetError> {
        conntrack::established_ssh_sessions(id).await
    }

    /// A stored identity must still be usable under the current settings
    /// (HATCH_BRIDGE_CIDR may have changed since it was allocated).
    fn check_identity(&self, vm_id: &str, id: &NetworkIdentity) -> Result<Reservation, NetError> {
        let pool = Pool::new(self.cfg.gateway, self.cfg.prefix_len);
        pool.check_guest_ip(id.guest_ip).map_err(|message| NetError::Invalid {
            field: "guest_ip",
            message,
        })?;
        if !names::is_hatch_tap(&id.tap_name) {
            return Err(NetError::Invalid {
                field: "tap_name",
                message: format!("{:?} is not a Hatch TAP name", id.tap_name),
            });
        }
        Reservation::new(&id.guest_mac, id.guest_ip, vm_id)
    }

    fn seed(&self, desired_all: &[(String, NetworkIdentity)]) -> Attached {
        desired_all
            .iter()
            .filter(|(vm_id, id)| self.check_identity(vm_id, id).is_ok())
            .cloned()
            .collect()
    }

    fn reservations(&self, attached: &Attached) -> Vec<Reservation> {
        attached
            .iter()
            .filter_map(|(vm_id, id)| self.check_identity(vm_id, id).ok())
            .collect()
    }

    /// Writes dnsmasq's files for `reservations` and makes dnsmasq serve
    /// them: a reload when only reservations changed, a restart when its
    /// settings did (it never rereads dnsmasq.conf).
    async fn apply_reservations(&self, reservations: &[Reservation]) -> Result<(), NetError> {
        let files = conf::render(&self.cfg, self.dhcp.paths(), reservations)?;
        let before = conf::read_reservations(self.dhcp.paths());
        self.serve(&files, &before).await.map(drop)
    }

    /// Writes `files` and has dnsmasq serve them; `before` are the
    /// reservations it served until now, whose leases end if they are gone.
    /// Says what happened to dnsmasq.
    async fn serve(&self, files: &conf::Files, before: &[Reservation]) -> Result<&'static str, NetError> {
        let paths = self.dhcp.paths();
        let written = conf::write_files(paths, files)?;
        if written.settings {
            // A fresh dnsmasq prunes the lease file as it starts.
            self.dhcp.restart().await?;
            return Ok("restarted");
        }
        if !written.hosts {
            self.dhcp.ensure_running().await?;
            return Ok("left running");
        }
        self.dhcp.reload().await?;
        let now = conf::read_reservations(paths);
        for gone in before.iter().filter(|r| !now.contains(r)) {
            self.dhcp.release(&self.cfg, gone);
        }
        Ok("reloaded")
    }
}

#[async_trait::async_trait]
impl super::HostNetwork for Network {
    fn config(&self) -> &NetConfig {
        Network::config(self)
    }

    fn allocate(&self, vm_id: &str, req: &NetRequest, taken: &Taken) -> Result<NetworkIdentity, NetError> {
        Network::allocate(self, vm_id, req, taken)
    }

    async fn ensure_host(&self) -> Result<(), NetError> {
        Network::ensure_host(self).await
    }

    async fn reconcile(&self, desired: &[(String, NetworkIdentity)]) -> Result<ReconcileReport, NetError> {
        Network::reconcile(self, desired).await
    }

    async fn attach_vm(
        &self,
        vm_id: &str,
        id: &NetworkIdentity,
        desired_all: &[(String, NetworkIdentity)],
    ) -> Result<(), NetError> {
        Network::attach_vm(self, vm_id, id, desired_all).await
    }

    async fn detach_vm(
        &self,
        vm_id: &str,
        id: &NetworkIdentity,
        desired_all: &[(String, NetworkIdentity)],
    ) -> Result<(), NetError> {
        Network::detach_vm(self, vm_id, id, desired_all).await
    }

    async fn shutdown(&self) {
        Network::shutdown(self).await
    }

    async fn established_ssh_sessions(&self, id: &NetworkIdentity) -> Result<usize, NetError> {
        Network::established_ssh_sessions(self, id).await
    }
}
