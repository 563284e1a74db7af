//! Firecracker's API resources that Hatch uses: one struct per request body
//! (field names as in Firecracker's API), and a thin typed client.

use std::path::PathBuf;
use std::time::Duration;

use hyper::Method;
use serde::{Deserialize, Serialize};

use super::api_client::{ApiClientError, UnixHttpClient};
use crate::vmm::VmmError;

/// The network interface id; snapshots refer to it in `network_overrides`.
pub const IFACE_ID: &str = "eth0";
/// Firecracker answers its API quickly; snapshot create/load write or map
/// all guest memory, so they get longer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(600);

/// `PUT /machine-config`
#[derive(Debug, Serialize)]
pub struct MachineConfig {
    pub vcpu_count: u32,
    pub mem_size_mib: u32,
    pub smt: bool,
}

/// `PUT /boot-source`
#[derive(Debug, Serialize)]
pub struct BootSource {
    pub kernel_image_path: PathBuf,
    /// Replaces Firecracker's default command line entirely.
    pub boot_args: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initrd_path: Option<PathBuf>,
}

/// `PUT /drives/{drive_id}`
#[derive(Debug, Serialize)]
pub struct Drive {
    pub drive_id: String,
    pub path_on_host: PathBuf,
    /// Always false: Hatch's initrds find the root filesystem by label, so
    /// Firecracker must not add its own `root=` argument.
    pub is_root_device: bool,
    pub is_read_only: bool,
}

/// `PUT /network-interfaces/{iface_id}`
#[derive(Debug, Serialize)]
pub struct NetworkInterface {
    pub iface_id: String,
    pub host_dev_name: String,
    pub guest_mac: String,
}

/// `PUT /vsock`: the guest's vsock device, backed on the host by
/// Firecracker's Unix-socket multiplexer at `uds_path`.
#[derive(Debug, Serialize)]
pub struct Vsock {
    pub guest_cid: u32,
    pub uds_path: PathBuf,
}

/// `PUT /actions`
#[derive(Debug, Serialize)]
pub struct Action {
    pub action_type: ActionType,
}

#[derive(Debug, Serialize)]
pub enum ActionType {
    InstanceStart,
    /// Injects Ctrl-Alt-Del through the emulated i8042 (x86_64 only).
    SendCtrlAltDel,
}

/// `PATCH /vm`
#[derive(Debug, Serialize)]
pub struct VmStateChange {
    pub state: RequestedVmState,
}

#[derive(Debug, Serialize)]
pub enum RequestedVmState {
    Paused,
    Resumed,
}

/// `PUT /snapshot/create`
#[derive(Debug, Serialize)]
pub struct SnapshotCreate {
    pub snapshot_type: SnapshotType,
    pub snapshot_path: PathBuf,
    pub mem_file_path: PathBuf,
}

#[derive(Debug, Serialize)]
pub enum SnapshotType {
    Full,
}

/// `PUT /snapshot/load`
#[derive(Debug, Serialize)]
pub struct SnapshotLoad {
    pub snapshot_path: PathBuf,
    pub mem_backend: MemBackend,
    pub resume_vm: bool,
    /// TAP device names can differ from the ones at snapshot time.
    pub network_overrides: Vec<NetworkOverride>,
    /// The vsock socket is this VM's own, not the one of the VM whose
    /// snapshot it is (a clone's parent may still run and hold it).
    pub vsock_override: VsockOverride,
}

#[derive(Debug, Serialize)]
pub struct VsockOverride {
    pub uds_path: PathBuf,
}

#[derive(Debug, Serialize)]
pub struct MemBackend {
    pub backend_type: MemBackendType,
    pub backend_path: PathBuf,
}

#[derive(Debug, Serialize)]
pub enum MemBackendType {
    File,
}

#[derive(Debug, Serialize)]
pub struct NetworkOverride {
    pub iface_id: String,
    pub host_dev_name: String,
}

/// `GET /` (instance information); only the field Hatch reads.
#[derive(Debug, Deserialize)]
pub struct InstanceInfo {
    /// "Not started", "Running" or "Paused".
    pub state: String,
}

/// Firecracker's error body.
#[derive(Debug, Deserialize)]
struct Fault {
    fault_message: String,
}

/// A typed client for one Firecracker process's API socket.
#[derive(Debug, Clone)]
pub struct FirecrackerApi {
    http: UnixHttpClient,
    snapshot_http: UnixHttpClient,
}

impl FirecrackerApi {
    pub fn new(socket: PathBuf) -> Self {
        FirecrackerApi {
            http: UnixHttpClient::new(socket.clone(), REQUEST_TIMEOUT),
            snapshot_http: UnixHttpClient::new(socket, SNAPSHOT_TIMEOUT),
        }
    }

    pub async fn instance_info(&self) -> Result<InstanceInfo, VmmError> {
        let response = self.http.send(Method::GET, "/", None).await.map_err(control)?;
        if !response.status.is_success() {
            return Err(rejected("GET /", &response.body_text()));
        }
        serde_json::from_slice(&response.body).map_err(|e| VmmError::Control(format!("GET / answered {e}")))
    }

    pub async fn put<T: Serialize>(&self, path: &str, body: &T) -> Result<(), VmmError> {
        self.call(&self.http, Method::PUT, path, body).await
    }

    pub async fn patch<T: Serialize>(&self, path: &str, body: &T) -> Result<(), VmmError> {
        self.call(&self.http, Method::PATCH, path, body).await
    }

    /// PUT with the long timeout snapshot operations need.
    pub async fn put_snapshot<T: Serialize>(&self, path: &str, body: &T) -> Result<(), VmmError> {
        self.call(&self.snapshot_http, Method::PUT, path, body).await
    }

    async fn call<T: Serialize>(
        &self,
        http: &UnixHttpClient,
        method: Method,
        path: &str,
        body: &T,
    ) -> Result<(), VmmError> {
        let request = format!("{method} {path}");
        let response = http.send_json(method, path, Some(body)).await.map_err(control)?;
        if response.status.is_success() {
            Ok(())
        } else {
            Err(rejected(&request, &response.body_text()))
        }
    }
}

fn control(e: ApiClientError) -> VmmError {
    VmmError::Control(format!("Firecracker API: {e}"))
}

fn rejected(request: &str, body: &str) -> VmmError {
    let message = serde_json::from_str::<Fault>(body)
        .map(|f| f.fault_message)
        .unwrap_or_else(|_| body.to_string());
    VmmError::Rejected {
        request: request.to_string(),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bodies_use_firecracker_field_names() {
        let load = SnapshotLoad {
            snapshot_path: "/s/vmstate".into(),
            mem_backend: MemBackend {
                backend_type: MemBackendType::File,
                backend_path: "/s/memory".into(),
            },
            resume_vm: true,
            network_overrides: vec![NetworkOverride {
                iface_id: IFACE_ID.into(),
                host_dev_name: "htap1".into(),
            }],
            vsock_override: VsockOverride {
                uds_path: "/run/vm-b/vsock.sock".into(),
            },
        };
        assert_eq!(
            serde_json::to_value(&load).expect("json"),
            json!({
                "snapshot_path": "/s/vmstate",
                "mem_backend": {"backend_type": "File", "backend_path": "/s/memory"},
                "resume_vm": true,
                "network_overrides": [{"iface_id": "eth0", "host_dev_name": "htap1"}],
                "vsock_override": {"uds_path": "/run/vm-b/vsock.sock"}
            })
        );
        let vsock = Vsock {
            guest_cid: 3,
            uds_path: "/vsock.sock".into(),
        };
        assert_eq!(
            serde_json::to_value(&vsock).expect("json"),
            json!({"guest_cid": 3, "uds_path": "/vsock.sock"})
        );
        let action = Action {
            action_type: ActionType::SendCtrlAltDel,
        };
        assert_eq!(
            serde_json::to_value(&action).expect("json"),
            json!({"action_type": "SendCtrlAltDel"})
        );
    }

    #[test]
    fn fault_message_is_extracted() {
        let err = rejected("PUT /boot-source", r#"{"fault_message":"Invalid Elf magic number"}"#);
        assert_eq!(
            err.to_string(),
            "the VMM rejected PUT /boot-source: Invalid Elf magic number"
        );
    }
}
