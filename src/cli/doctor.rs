//! `hatch doctor`: host prerequisites, and whether the daemon answers.

use hyper::Method;
use serde_json::Value;

use super::output;
use super::{CliError, ClientArgs};
use crate::sys::cmd::find_on_path;
use crate::vmm::select::DoctorCheck;

fn program(name: &str, why: &str) -> DoctorCheck {
    let found = find_on_path(name);
    DoctorCheck {
        name: name.to_string(),
        ok: found.is_some(),
        detail: match found {
            Some(path) => format!("{} ({why})", path.display()),
            None => format!("not found on PATH; needed for {why}"),
        },
    }
}

/// Checks that need no daemon. (The hypervisor choice is explained by the
/// VMM module's checks once they are merged in.)
fn host_checks() -> Vec<DoctorCheck> {
    let kvm = std::path::Path::new("/dev/kvm");
    vec![
        DoctorCheck {
            name: "/dev/kvm".into(),
            ok: kvm.exists(),
            detail: if kvm.exists() {
                "present".into()
            } else {
                "absent: QEMU will use TCG (slow)".into()
            },
        },
        program("qemu-system-x86_64", "running VMs with QEMU"),
        program("firecracker", "running VMs with Firecracker (optional)"),
        program("dnsmasq", "DHCP for VMs"),
        program("iptables", "NAT and SSH forwards"),
        program("ip", "bridge and TAP devices"),
        program("ssh", "`hatch vm ssh`"),
    ]
}

pub async fn run(args: &ClientArgs) -> Result<(), CliError> {
    let mut checks = host_checks();
    let daemon = match args.client()?.call::<Value>(Method::GET, "/healthz", None).await {
        Ok(health) => DoctorCheck {
            name: "daemon".into(),
            ok: true,
            detail: format!(
                "{} answers (version {})",
                args.url,
                health["version"].as_str().unwrap_or("?")
            ),
        },
        Err(e) => DoctorCheck {
            name: "daemon".into(),
            ok: false,
            detail: e.to_string(),
        },
    };
    checks.push(daemon);
    output::show(args.json, &checks, |checks| {
        let rows: Vec<Vec<String>> = checks
            .iter()
            .map(|c| {
                vec![
                    if c.ok { "ok" } else { "FAIL" }.to_string(),
                    c.name.clone(),
                    c.detail.clone(),
                ]
            })
            .collect();
        output::table(&["", "CHECK", "DETAIL"], &rows);
    });
    Ok(())
}
