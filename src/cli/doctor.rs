//! `hatch doctor`: the hypervisor prerequisites and the backend the daemon
//! would choose (and why), the guest agent's transport on each hypervisor
//! found (and why), the host programs networking and image builds run, and
//! whether the daemon answers. Fails only when a daemon could not
//! start: an invalid configuration or no usable hypervisor.

use hyper::Method;
use serde::Serialize;
use serde_json::Value;

use super::output;
use super::{CliError, ClientArgs};
use crate::config::Config;
use crate::image::tools::{self, Tool};
use crate::snapshot::SnapshotError;
use crate::sys::cmd::find_on_path;
use crate::vmm::select::{doctor_checks, DoctorCheck, HypervisorSettings};

/// The name `crate::vmm::select` gives the check that states the choice.
const CHOICE_CHECK: &str = "hypervisor";
/// The check of where snapshot artefacts go. A bucket that does not answer
/// fails the check but not `doctor`: the daemon starts anyway and refuses
/// snapshots and restores until it answers. Invalid S3 settings fail both.
const STORAGE_CHECK: &str = "snapshot storage";
/// How long `doctor` waits for the S3 bucket to answer.
const STORAGE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Programs the daemon runs by name (so they must be on its PATH), with the
/// Debian package that provides each.
const RUNTIME_TOOLS: [(&str, &str, &str); 5] = [
    ("ip", "iproute2", "bridge and TAP devices"),
    ("iptables", "iptables", "NAT, SSH forwards and guest isolation"),
    ("dnsmasq", "dnsmasq-base", "DHCP for VMs"),
    ("conntrack", "conntrack", "counting SSH sessions for idle detection"),
    ("ssh", "openssh-client", "`hatch vm ssh`"),
];

/// Programs image builds need, and for which profiles.
const BUILD_TOOLS: [(Tool, &str); 6] = [
    (tools::APT_GET, "package lists for image builds"),
    (tools::APT_CACHE, "package versions for image builds"),
    (tools::DPKG_DEB, "unpacking packages in image builds"),
    (tools::DEPMOD, "kernel module lists in image builds"),
    (tools::MMDEBSTRAP, "the root file system of debian images"),
    (tools::MKFS_EXT4, "the root disk of debian images"),
];

#[derive(Debug, Serialize)]
struct Report {
    checks: Vec<DoctorCheck>,
    /// What `hatch serve` would run VMs with, and why (or why nothing).
    hypervisor: DoctorCheck,
    /// False when the snapshot storage settings would stop `hatch serve`.
    #[serde(skip)]
    storage_startable: bool,
}

fn check(name: &str, ok: bool, detail: String) -> DoctorCheck {
    DoctorCheck {
        name: name.to_string(),
        ok,
        detail,
    }
}

fn runtime_tool((program, package, why): (&str, &str, &str)) -> DoctorCheck {
    match find_on_path(program) {
        Some(path) => check(program, true, format!("{} ({why})", path.display())),
        None => check(
            program,
            false,
            format!("not on PATH; install the Debian package `{package}` ({why})"),
        ),
    }
}

fn build_tool((tool, why): (Tool, &str)) -> DoctorCheck {
    match tools::locate(tool) {
        Ok(path) => check(tool.name, true, format!("{path} ({why})")),
        Err(error) => check(tool.name, false, format!("{error} ({why})")),
    }
}

/// The hypervisor settings `hatch serve` would use, and a check saying
/// whether the whole configuration is valid.
fn settings() -> (HypervisorSettings, DoctorCheck) {
    match Config::from_env() {
        Ok(config) => (
            config.hypervisor,
            check("configuration", true, "HATCH_* variables are valid".into()),
        ),
        Err(error) => {
            let invalid = check("configuration", false, format!("hatch serve would not start: {error}"));
            // Still explain the hypervisor choice from the variables that govern it.
            (HypervisorSettings::from_env().unwrap_or_default(), invalid)
        }
    }
}

/// Where snapshots would be stored; an S3 bucket is asked to answer. The
/// flag says whether the daemon could start with it.
async fn storage_check() -> Option<(DoctorCheck, bool)> {
    // An invalid configuration is already reported by the configuration check.
    let config = Config::from_env().ok()?;
    let result = match tokio::time::timeout(STORAGE_TIMEOUT, crate::snapshot::check_store(&config)).await {
        Ok(result) => result,
        Err(_) => {
            let message = format!("no answer within {}s", STORAGE_TIMEOUT.as_secs());
            return Some((check(STORAGE_CHECK, false, message), true));
        }
    };
    Some(match result {
        Ok(store) => (check(STORAGE_CHECK, true, store), true),
        Err(error @ SnapshotError::S3Unreachable { .. }) => (
            check(
                STORAGE_CHECK,
                false,
                format!("{error}; hatch serve starts, but snapshots and restores answer 503 until it answers"),
            ),
            true,
        ),
        Err(error) => (check(STORAGE_CHECK, false, error.to_string()), false),
    })
}

async fn daemon_check(args: &ClientArgs) -> DoctorCheck {
    let answer = match args.client() {
        Ok(client) => client.call::<Value>(Method::GET, "/healthz", None).await,
        Err(error) => Err(error),
    };
    match answer {
        Ok(health) => check(
            "daemon",
            true,
            format!(
                "{} answers (version {})",
                args.url,
                health["version"].as_str().unwrap_or("?")
            ),
        ),
        Err(error) => check("daemon", false, error.to_string()),
    }
}

async fn gather(args: &ClientArgs) -> Report {
    let (settings, config_check) = settings();
    // Probing runs each binary's --version: blocking, so off the runtime.
    let probed = tokio::task::spawn_blocking(move || doctor_checks(&settings))
        .await
        .unwrap_or_default();
    let (choice, mut checks): (Vec<_>, Vec<_>) = probed.into_iter().partition(|c| c.name == CHOICE_CHECK);
    let hypervisor = choice
        .into_iter()
        .next()
        .unwrap_or_else(|| check(CHOICE_CHECK, false, "the hypervisor probe did not finish".into()));
    checks.insert(0, config_check);
    checks.extend(RUNTIME_TOOLS.into_iter().map(runtime_tool));
    checks.extend(BUILD_TOOLS.into_iter().map(build_tool));
    let storage = storage_check().await;
    let storage_startable = storage.as_ref().is_none_or(|(_, startable)| *startable);
    checks.extend(storage.map(|(check, _)| check));
    checks.push(daemon_check(args).await);
    Report {
        checks,
        hypervisor,
        storage_startable,
    }
}

fn print(report: &Report) {
    let status = |ok: bool| if ok { "ok" } else { "FAIL" }.to_string();
    let rows: Vec<Vec<String>> = report
        .checks
        .iter()
        .map(|c| vec![status(c.ok), c.name.clone(), c.detail.clone()])
        .collect();
    output::table(&["", "CHECK", "DETAIL"], &rows);
    println!();
    if report.hypervisor.ok {
        println!("hypervisor: {}", report.hypervisor.detail);
    } else {
        println!("hypervisor: FAIL: {}", report.hypervisor.detail);
    }
}

pub async fn run(args: &ClientArgs) -> Result<(), CliError> {
    let report = gather(args).await;
    output::show(args.json, &report, print);
    let config_ok = report.storage_startable && report.checks.iter().all(|c| c.name != "configuration" || c.ok);
    if !report.hypervisor.ok || !config_ok {
        return Err(CliError::Local(
            "the daemon could not start on this host as configured".into(),
        ));
    }
    Ok(())
}
