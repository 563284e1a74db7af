//! Fixtures for the daemon area's tests: sample domain objects, a temp data
//! dir with a store, and a real API server on 127.0.0.1:0 with a real client.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use hatch::model::{now, random_id, Image, ImageProfile, NetworkIdentity, Template, Vm, VmState};

pub fn sample_image(name: &str) -> Image {
    Image {
        id: random_id("img", 10),
        name: name.to_string(),
        profile: ImageProfile::Registered,
        kernel_path: Some(PathBuf::from("/tmp/vmlinux")),
        bzimage_path: None,
        initrd_path: Some(PathBuf::from("/tmp/initrd")),
        rootfs_path: None,
        login_user: "root".into(),
        boot_args: String::new(),
        size_bytes: 1234,
        created_at: now(),
    }
}

pub fn sample_template(image_id: &str) -> Template {
    Template {
        id: random_id("tpl", 10),
        name: "small".into(),
        image_id: image_id.to_string(),
        vcpu_count: 1,
        mem_mib: 256,
        user_data: Some("#cloud-config\n".into()),
        ssh_authorized_keys: vec!["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeFakeFakeFakeFakeFakeFakeFakeFakeFakeFake x@y".into()],
        created_at: now(),
    }
}

/// A networked VM whose identity is derived from `n` (distinct for distinct `n`).
pub fn sample_vm(image_id: &str, n: u8) -> Vm {
    let id = random_id("vm", 6);
    Vm {
        id: id.clone(),
        state: VmState::Running,
        image_id: image_id.to_string(),
        vcpu_count: 1,
        mem_mib: 256,
        enable_network: true,
        network: Some(NetworkIdentity {
            guest_ip: Ipv4Addr::new(192, 168, 241, 10 + n),
            guest_mac: format!("02:fc:00:00:00:{n:02x}"),
            tap_name: format!("fctap-{}", &id[..8]),
            ssh_port: 2200 + n as u16,
        }),
        user_data: None,
        ssh_authorized_keys: vec![],
        hypervisor: "qemu".into(),
        pid: Some(4242),
        state_reason: None,
        ready_at: None,
        created_at: now(),
        updated_at: now(),
    }
}
