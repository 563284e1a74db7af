//! `hatch snapshot create|restore|list|delete`.

use clap::Subcommand;
use hyper::Method;
use serde_json::json;

use super::http::segment;
use super::output;
use super::{CliError, ClientArgs};
use crate::model::{Snapshot, Vm};

#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Save a running VM (memory, state, disk) and stop its VMM.
    Create {
        vm_id: String,
    },
    /// Bring a snapshotted VM back (the newest snapshot unless --snapshot).
    Restore {
        vm_id: String,
        #[arg(long)]
        snapshot: Option<String>,
    },
    /// A VM's snapshots, newest first.
    List {
        vm_id: String,
    },
    Delete {
        snapshot_id: String,
    },
}

pub async fn run(command: SnapshotCommand, args: &ClientArgs) -> Result<(), CliError> {
    let client = args.client()?;
    match command {
        SnapshotCommand::Create { vm_id } => {
            eprintln!("snapshotting {vm_id}…");
            let snapshot: Snapshot = client
                .call(Method::POST, &format!("/vms/{}/snapshot", segment(&vm_id)), None)
                .await?;
            output::show(args.json, &snapshot, |s| println!("{} {} bytes", s.id, s.total_bytes));
        }
        SnapshotCommand::Restore { vm_id, snapshot } => {
            let body = snapshot.map(|id| json!({ "snapshot_id": id }));
            let vm: Vm = client
                .call(
                    Method::POST,
                    &format!("/vms/{}/restore", segment(&vm_id)),
                    body.as_ref(),
                )
                .await?;
            output::show(args.json, &vm, |vm| println!("{} {}", vm.id, vm.state.as_str()));
        }
        SnapshotCommand::List { vm_id } => {
            let snapshots: Vec<Snapshot> = client
                .call(Method::GET, &format!("/vms/{}/snapshots", segment(&vm_id)), None)
                .await?;
            output::show(args.json, &snapshots, |snapshots| {
                let rows: Vec<Vec<String>> = snapshots
                    .iter()
                    .map(|s| {
                        vec![
                            s.id.clone(),
                            s.created_at.to_rfc3339(),
                            s.hypervisor.clone(),
                            s.total_bytes.to_string(),
                        ]
                    })
                    .collect();
                output::table(&["ID", "CREATED", "HYPERVISOR", "BYTES"], &rows);
            });
        }
        SnapshotCommand::Delete { snapshot_id } => {
            client
                .request(Method::DELETE, &format!("/snapshots/{}", segment(&snapshot_id)), None)
                .await?
                .success()?;
            if !args.json {
                println!("deleted {snapshot_id}");
            }
        }
    }
    Ok(())
}
