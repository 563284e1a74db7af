//! `POST /vms`: validate, allocate, prepare files and network, boot — each
//! step recorded in a ledger so that a failure anywhere undoes all of it.

use std::path::Path;
use std::sync::Arc;

use crate::cloudinit::{self, SeedInput};
use crate::image;
use crate::model::{
    self, check_quota, Image, Lifetime, LifetimeSeconds, OnIdle, QuotaKind, RestartPolicy, UserData, Vm,
};
use crate::net::{NetRequest, Taken};

use super::fork::CloneSettings;
use super::ledger::Ledger;
use super::operations::Accepted;
use super::transitions::{self, Event};
use super::{OrchError, Orchestrator, VmChange};
use crate::store::StoreError;

/// What `POST /vms` asks for: the request body itself (unknown fields are
/// refused), checked at the API edge before it gets here.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateVm {
    pub image_id: Option<String>,
    pub template_id: Option<String>,
    /// Restore this snapshot into the new VM (with an identity of its own)
    /// instead of booting an image.
    pub snapshot_id: Option<String>,
    pub vcpu_count: Option<u32>,
    pub mem_mib: Option<u32>,
    pub enable_network: Option<bool>,
    pub guest_ip: Option<String>,
    pub guest_mac: Option<String>,
    /// cloud-init user data as text; or, for any bytes, `user_data_base64`.
    pub user_data: Option<String>,
    pub user_data_base64: Option<String>,
    pub ssh_authorized_keys: Option<Vec<String>>,
    /// `never` (default) or `on-failure`: start the VM again when its VMM dies.
    pub restart_policy: Option<String>,
    /// The API key that creates the VM and will own it (set by the API from
    /// the request's key, never from the body); its quotas are checked
    /// when the VM is recorded. `None`: admin-owned, no quotas.
    #[serde(skip)]
    pub owner: Option<String>,
    /// Set by the warm pool filler (never from the body): the VM is made
    /// for this template's pool (admin-owned, no lifetime) until taken.
    #[serde(skip)]
    pub pool_template_id: Option<String>,
    /// `internet` (default), `none` or a list of CIDRs the guest may reach.
    pub egress: Option<serde_json::Value>,
    /// Delete the VM this long after it was created.
    pub ttl_seconds: Option<LifetimeSeconds>,
    /// Idle this long before `on_idle` applies (default HATCH_IDLE_TIMEOUT).
    pub idle_timeout_seconds: Option<LifetimeSeconds>,
    /// `snapshot`, `stop` or `none` (never idle).
    pub on_idle: Option<OnIdle>,
}

impl CreateVm {
    /// The lifetime settings the request itself gives.
    fn lifetime(&self) -> Lifetime {
        Lifetime {
            ttl_seconds: self.ttl_seconds,
            idle_timeout_seconds: self.idle_timeout_seconds,
            on_idle: self.on_idle,
        }
    }

    /// The template whose warm pool may answer this request: it names a
    /// template and, besides, at most lifetime and restart settings (any
    /// other choice needs a VM made for it).
    pub(super) fn pool_template(&self) -> Option<&str> {
        let chooses_guest = self.image_id.is_some()
            || self.snapshot_id.is_some()
            || self.vcpu_count.is_some()
            || self.mem_mib.is_some()
            || self.enable_network.is_some()
            || self.guest_ip.is_some()
            || self.guest_mac.is_some()
            || self.user_data.is_some()
            || self.user_data_base64.is_some()
            || self.ssh_authorized_keys.is_some()
            || self.egress.is_some()
            || self.pool_template_id.is_some();
        self.template_id.as_deref().filter(|_| !chooses_guest)
    }

    /// The lifetime the request gives, checked.
    pub(super) fn checked_lifetime(&self) -> Result<Lifetime, OrchError> {
        let lifetime = self.lifetime();
        lifetime
            .check()
            .map_err(|(field, message)| OrchError::InvalidField { field, message })?;
        Ok(lifetime)
    }

    /// The restart policy the request gives, checked.
    pub(super) fn checked_restart_policy(&self) -> Result<Option<RestartPolicy>, OrchError> {
        self.restart_policy.as_deref().map(parse_restart_policy).transpose()
    }

    /// What a create from a snapshot may choose; the guest itself (image,
    /// sizes, user data, keys, network) is the snapshot's.
    fn clone_settings(&self) -> Result<CloneSettings, OrchError> {
        let guest_fields = [
            ("image_id", self.image_id.is_some()),
            ("template_id", self.template_id.is_some()),
            ("vcpu_count", self.vcpu_count.is_some()),
            ("mem_mib", self.mem_mib.is_some()),
            ("enable_network", self.enable_network.is_some()),
            ("guest_ip", self.guest_ip.is_some()),
            ("guest_mac", self.guest_mac.is_some()),
            ("user_data", self.user_data.is_some()),
            ("user_data_base64", self.user_data_base64.is_some()),
            ("ssh_authorized_keys", self.ssh_authorized_keys.is_some()),
        ];
        if let Some((field, _)) = guest_fields.iter().find(|(_, given)| *given) {
            return Err(OrchError::InvalidField {
                field,
                message: format!("{field} cannot be set with snapshot_id: the new VM is the snapshot's guest"),
            });
        }
        let lifetime = self.checked_lifetime()?;
        let given_lifetime =
            lifetime.ttl_seconds.is_some() || lifetime.idle_timeout_seconds.is_some() || lifetime.on_idle.is_some();
        Ok(CloneSettings {
            owner: self.owner.clone(),
            lifetime: given_lifetime.then_some(lifetime),
            restart_policy: self.checked_restart_policy()?,
            egress: self.egress.as_ref().map(parse_egress).transpose()?,
        })
    }
}

fn parse_restart_policy(text: &str) -> Result<RestartPolicy, OrchError> {
    RestartPolicy::parse(text).ok_or_else(|| OrchError::InvalidField {
        field: "restart_policy",
        message: format!("must be \"never\" or \"on-failure\", got {text:?}"),
    })
}

fn parse_egress(value: &serde_json::Value) -> Result<model::Egress, OrchError> {
    model::Egress::from_json(value).map_err(|message| OrchError::InvalidField {
        field: "egress",
        message: format!("egress {message}"),
    })
}

/// A request with template and defaults applied (or, for a clone, its
/// parent's settings). Sizes were validated where they entered (the API for
/// requests and templates, config for defaults).
pub(super) struct Plan {
    pub(super) image: Image,
    pub(super) vcpu_count: u32,
    pub(super) mem_mib: u32,
    pub(super) enable_network: bool,
    pub(super) net_request: NetRequest,
    pub(super) user_data: Option<UserData>,
    pub(super) ssh_authorized_keys: Vec<String>,
    pub(super) restart_policy: RestartPolicy,
    pub(super) lifetime: Lifetime,
    pub(super) owner: Option<String>,
    /// The template whose warm pool the VM is made for.
    pub(super) pool_template_id: Option<String>,
}

/// Where a new VM's root disk comes from.
pub(super) enum DiskOrigin<'a> {
    /// A fresh copy of its image's root filesystem.
    Image,
    /// A copy of the disk saved with the state the VM is restored from
    /// (none for an image without a root disk).
    Saved(Option<&'a Path>),
}

impl Orchestrator {
    /// Records the new VM (`creating`) before any host effect, so a crash
    /// mid-create is rolled back by the reconciler; a failure here releases
    /// everything in reverse order and removes the record.
    pub(super) async fn create_op(self: &Arc<Self>, req: CreateVm, mut accepted: Accepted) -> Result<Vm, OrchError> {
        if let Some(snapshot_id) = req.snapshot_id.clone() {
            let settings = req.clone_settings()?;
            return self.create_from_snapshot_op(&snapshot_id, settings, accepted).await;
        }
        if let Some(vm) = self.take_from_pool(&req, &mut accepted).await? {
            return Ok(vm);
        }
        let plan = self.plan(req).await?;
        let vm_id = self.new_vm_id().await?;
        let _guard = self.locks.lock(&vm_id).await;
        let mut vm = match self.record_new_vm(&vm_id, &plan).await {
            Ok(vm) => vm,
            Err(error) => {
                self.locks.forget(&vm_id);
                return Err(error);
            }
        };
        accepted.send(&vm);
        let mut ledger = Ledger::new();
        match self.provision(&vm, &plan, &mut ledger).await {
            Ok(vm) => {
                ledger.commit();
                Ok(vm)
            }
            Err(error) => {
                tracing::warn!(vm = %vm_id, %error, "create failed; releasing everything it held");
                ledger.rollback().await;
                vm.pid = None;
                if let Err(record_error) = self
                    .apply(&mut vm, Event::BootFailed, Some(format!("create failed: {error}")))
                    .await
                {
                    tracing::error!(vm = %vm_id, %record_error, "removing the record of a failed create failed");
                }
                self.locks.forget(&vm_id);
                Err(error)
            }
        }
    }

    async fn plan(&self, req: CreateVm) -> Result<Plan, OrchError> {
        let requested = req.checked_lifetime()?;
        let template = match req.template_id.clone() {
            Some(id) => {
                let key = id.clone();
                let found = self.store.run(move |store| store.get_template(&key)).await?;
                Some(found.ok_or_else(|| OrchError::InvalidField {
                    field: "template_id",
                    message: format!("no template {id}"),
                })?)
            }
            None => None,
        };
        let requested_image = req.image_id.clone().or(template.as_ref().map(|t| t.image_id.clone()));
        let image = self.resolve_image(requested_image).await?;
        self.check_image_files(&image)?;
        let vcpu_count = req
            .vcpu_count
            .or(template.as_ref().map(|t| t.vcpu_count))
            .unwrap_or(self.config.default_vcpu_count);
        let mem_mib = req
            .mem_mib
            .or(template.as_ref().map(|t| t.mem_mib))
            .unwrap_or(self.config.default_mem_mib);
        let enable_network = req.enable_network.unwrap_or(true);
        if !enable_network {
            for (field, given) in [
                ("guest_ip", req.guest_ip.is_some()),
                ("guest_mac", req.guest_mac.is_some()),
                ("egress", req.egress.is_some()),
            ] {
                if given {
                    return Err(OrchError::InvalidField {
                        field,
                        message: "cannot be set when enable_network is false".into(),
                    });
                }
            }
        }
        let given = UserData::from_fields(req.user_data.as_deref(), req.user_data_base64.as_deref()).map_err(|e| {
            OrchError::InvalidField {
                field: e.field(),
                message: e.to_string(),
            }
        })?;
        // A template's user data flows into the VM byte for byte.
        let user_data = given.or(template.as_ref().and_then(|t| t.user_data.clone()));
        if let Some(data) = &user_data {
            cloudinit::validate_user_data(data.as_bytes())?;
        }
        let restart_policy = req.checked_restart_policy()?.unwrap_or_default();
        let keys = req
            .ssh_authorized_keys
            .or(template.as_ref().map(|t| t.ssh_authorized_keys.clone()))
            .unwrap_or_default();
        let ssh_authorized_keys = cloudinit::validate_ssh_keys(&keys)?;
        let egress = match &req.egress {
            Some(value) => parse_egress(value)?,
            None => template.as_ref().and_then(|t| t.egress.clone()).unwrap_or_default(),
        };
        // A pool VM waits without a lifetime: the template's applies from
        // when it is taken.
        let lifetime = match req.pool_template_id {
            Some(_) => Lifetime::default(),
            None => requested.or(template.as_ref().map(|t| t.lifetime).unwrap_or_default()),
        };
        Ok(Plan {
            image,
            vcpu_count,
            mem_mib,
            enable_network,
            net_request: NetRequest {
                guest_ip: req.guest_ip,
                guest_mac: req.guest_mac,
                egress,
            },
            user_data,
            ssh_authorized_keys,
            restart_policy,
            lifetime,
            owner: req.owner,
            pool_template_id: req.pool_template_id,
        })
    }

    /// The requested image, else `HATCH_DEFAULT_IMAGE`, else the newest one.
    async fn resolve_image(&self, requested: Option<String>) -> Result<Image, OrchError> {
        let default = self.config.default_image.clone();
        self.store
            .run(move |store| {
                if let Some(id) = requested {
                    return store.get_image(&id)?.ok_or_else(|| OrchError::InvalidField {
                        field: "image_id",
                        message: format!("no image {id}"),
                    });
                }
                if let Some(default) = default {
                    return store.find_image(&default)?.ok_or_else(|| {
                        OrchError::Internal(format!("HATCH_DEFAULT_IMAGE names {default}, which is not registered"))
                    });
                }
                store.newest_image()?.ok_or_else(|| OrchError::InvalidField {
                    field: "image_id",
                    message: "no image is registered; build one with `hatch image build`".into(),
                })
            })
            .await
    }

    pub(super) async fn new_vm_id(&self) -> Result<String, OrchError> {
        self.store
            .run(|store| {
                for _ in 0..16 {
                    let id = model::random_id("vm", 6);
                    if store.get_vm(&id)?.is_none() {
                        return Ok(id);
                    }
                }
                Err(OrchError::Internal("could not find a free VM id".into()))
            })
            .await
    }

    async fn provision(self: &Arc<Self>, vm: &Vm, plan: &Plan, ledger: &mut Ledger) -> Result<Vm, OrchError> {
        self.prepare_host(vm, plan, DiskOrigin::Image, ledger).await?;
        self.boot(vm.clone(), &plan.image).await
    }

    /// Makes a recorded VM's directory, disk, seed and network attachment,
    /// each recorded in `ledger` so that a failure undoes all of them.
    pub(super) async fn prepare_host(
        self: &Arc<Self>,
        vm: &Vm,
        plan: &Plan,
        origin: DiskOrigin<'_>,
        ledger: &mut Ledger,
    ) -> Result<(), OrchError> {
        let vm_id = vm.id.as_str();
        let layout = self.layout(vm_id);
        std::fs::create_dir_all(layout.dir())
            .map_err(|e| OrchError::Internal(format!("creating {}: {e}", layout.dir().display())))?;
        let dir = layout.dir().to_path_buf();
        ledger.record("VM directory", async move {
            tokio::fs::remove_dir_all(&dir).await.map_err(|e| e.to_string())
        });

        let seed = SeedInput {
            instance_id: vm_id.to_string(),
            user_data: plan.user_data.clone().map(UserData::into_bytes),
            public_keys: plan.ssh_authorized_keys.clone(),
            nic_mac: vm.network.as_ref().map(|n| n.guest_mac.clone()),
        };
        let network = match &vm.network {
            Some(identity) => {
                // Recorded first: a half-done attachment (TAP made, dnsmasq
                // failed) is undone too; detaching is idempotent.
                let (network, id, held) = (self.network.clone(), vm_id.to_string(), identity.clone());
                let orch = Arc::downgrade(self);
                ledger.record("network attachment", async move {
                    let desired = match orch.upgrade() {
                        Some(orch) => orch.desired_network().await.unwrap_or_default(),
                        None => Vec::new(),
                    };
                    let desired: Vec<_> = desired.into_iter().filter(|(vm, _)| vm != &id).collect();
                    network.detach_vm(&id, &held, &desired).await.map_err(|e| e.to_string())
                });
                Some((identity, self.desired_network().await?))
            }
            None => None,
        };
        // The disk, the seed and the network do not depend on each other:
        // they are made at once. Each runs to its end (none is cancelled
        // halfway by another's failure), then the first error is returned
        // and the ledger undoes all three.
        let disk = async {
            match origin {
                DiskOrigin::Image if plan.image.rootfs_path.is_some() => {
                    image::prepare_vm_disk(&plan.image, &layout.disk()).await?;
                }
                DiskOrigin::Saved(Some(saved)) => clone_disk(saved, &layout.disk()).await?,
                DiskOrigin::Image | DiskOrigin::Saved(None) => {}
            }
            Ok::<(), OrchError>(())
        };
        let seed = async { Ok::<(), OrchError>(cloudinit::write_seed(&seed, &layout.seed()).await?) };
        let attach = async {
            if let Some((identity, desired)) = &network {
                self.network.attach_vm(vm_id, identity, desired).await?;
            }
            Ok::<(), OrchError>(())
        };
        let (disk, seed, attach) = tokio::join!(disk, seed, attach);
        disk.and(seed).and(attach)
    }

    /// Whether `owner` (none: admin, no quotas) may hold `count` more VMs
    /// of these sizes.
    pub(super) async fn check_vm_quotas(
        &self,
        owner: Option<&str>,
        count: u32,
        vcpu_count: u32,
        mem_mib: u32,
    ) -> Result<(), OrchError> {
        let Some(owner) = owner else { return Ok(()) };
        let owner = owner.to_string();
        let (quotas, usage) = self
            .store
            .run(move |store| Ok::<_, StoreError>((store.quotas_of(Some(&owner))?, store.usage_of(&owner)?)))
            .await?;
        let count = u64::from(count);
        for (kind, requested) in [
            (QuotaKind::Vms, count),
            (QuotaKind::Vcpus, count * u64::from(vcpu_count)),
            (QuotaKind::MemMib, count * u64::from(mem_mib)),
        ] {
            check_quota(&quotas, &usage, kind, requested).map_err(OrchError::QuotaExceeded)?;
        }
        Ok(())
    }

    /// Chooses network resources and inserts the VM row in one critical
    /// section; the row is what holds the resources from then on.
    /// The owner's quotas are checked here too, under the same lock: every
    /// VM row is inserted under it, so two creates cannot both pass.
    pub(super) async fn record_new_vm(&self, vm_id: &str, plan: &Plan) -> Result<Vm, OrchError> {
        let _allocating = self.allocation.lock().await;
        self.admit_memory(vm_id, plan.mem_mib).await?;
        self.admit_disk(&plan.image)?;
        self.check_vm_quotas(plan.owner.as_deref(), 1, plan.vcpu_count, plan.mem_mib)
            .await?;
        let network = if plan.enable_network {
            let vms = self.store.run(|store| store.list_vms()).await?;
            let taken = Taken::from_identities(vms.iter().filter_map(|vm| vm.network.as_ref()));
            Some(self.network.allocate(vm_id, &plan.net_request, &taken)?)
        } else {
            None
        };
        let now = model::now();
        let vm = Vm {
            agent: Default::default(),
            id: vm_id.to_string(),
            state: transitions::INITIAL,
            image_id: plan.image.id.clone(),
            vcpu_count: plan.vcpu_count,
            mem_mib: plan.mem_mib,
            limits: model::VmmLimits::for_vm(plan.vcpu_count, plan.mem_mib),
            enable_network: plan.enable_network,
            network,
            user_data: plan.user_data.clone(),
            ssh_authorized_keys: plan.ssh_authorized_keys.clone(),
            hypervisor: self.hypervisor.kind().as_str().to_string(),
            pid: None,
            state_reason: None,
            ready_at: None,
            created_at: now,
            updated_at: now,
            last_activity_at: None,
            idle_status: None,
            restart_policy: plan.restart_policy,
            snapshot_id: None,
            lifetime: plan.lifetime,
            expires_at: plan.lifetime.expires_at(now),
            owner_key_id: plan.owner.clone(),
            pool_template_id: plan.pool_template_id.clone(),
        };
        // The record (in `creating`) is the intent: from here on, a crash is
        // rolled back by the reconciler; a failure by the ledger and then
        // `BootFailed`, which removes the record.
        let row = vm.clone();
        self.record(move |store, observers| {
            store.insert_vm(&row, Some("created"))?;
            observers.notify(&VmChange::Updated { vm_id: &row.id });
            Ok(())
        })
        .await?;
        Ok(vm)
    }
}

/// A reflink or sparse copy of `saved` as a new VM's disk.
pub(super) async fn clone_disk(saved: &Path, disk: &Path) -> Result<(), OrchError> {
    let (from, to) = (saved.to_path_buf(), disk.to_path_buf());
    tokio::task::spawn_blocking(move || crate::sys::clone_file::clone_file(&from, &to))
        .await
        .map_err(|e| OrchError::Internal(format!("copying a disk: {e}")))?
        .map_err(|e| OrchError::Internal(format!("copying {} to {}: {e}", saved.display(), disk.display())))?;
    Ok(())
}
