//! `hatch snapshot create|restore|list|delete`.

use std::future::Future;

use clap::Subcommand;
use hyper::Method;
use serde_json::json;

use super::events::{each_message, phase};
use super::http::{segment, Client};
use super::output;
use super::progress::Progress;
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
            let path = format!("/vms/{}/snapshot", segment(&vm_id));
            let call = client.call(Method::POST, &path, None);
            let snapshot: Snapshot =
                with_phases(&client, &vm_id, &format!("snapshotting {vm_id}…"), true, call).await?;
            output::show(args.json, &snapshot, |s| println!("{} {} bytes", s.id, s.total_bytes));
        }
        SnapshotCommand::Restore { vm_id, snapshot } => {
            let body = snapshot.map(|id| json!({ "snapshot_id": id }));
            let path = format!("/vms/{}/restore", segment(&vm_id));
            let call = client.call(Method::POST, &path, body.as_ref());
            let vm: Vm = with_phases(&client, &vm_id, &format!("restoring {vm_id}…"), false, call).await?;
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

/// Runs `call` (a snapshot or restore, answered when it is done). On a
/// terminal a spinner shows `what` and each phase the daemon reports for
/// the VM on `/events` as it happens; otherwise `what` is printed as one
/// line when `line` is set, and nothing else.
async fn with_phases<T>(
    client: &Client,
    vm_id: &str,
    what: &str,
    line: bool,
    call: impl Future<Output = Result<T, CliError>>,
) -> Result<T, CliError> {
    let progress = Progress::on_stderr("");
    if !progress.is_terminal() {
        if line {
            progress.step(what);
        }
        return call.await;
    }
    progress.step(what);
    let phases = async {
        let path = format!("/events?follow=true&vm={}", segment(vm_id));
        if let Ok(stream) = client.open_stream(&path).await {
            let _ = each_message(stream, |block| {
                if let Some(phase) = phase(block) {
                    progress.step(&format!("{}: {phase}", what.trim_end_matches('…')));
                }
                Ok(true)
            })
            .await;
        }
        // Without events the spinner goes on with `what` alone.
        std::future::pending::<()>().await
    };
    tokio::select! {
        result = call => result,
        _ = phases => unreachable!("the phases never end"),
    }
}
