//! `hatch vm fork ID [-n N]`: new VMs restored from a running VM's memory
//! (or a snapshotted VM's snapshot), each with its own identity.

use hyper::Method;
use serde::Deserialize;
use serde_json::json;

use super::http::{segment, Client};
use super::output;
use super::vms::print_vm;
use super::{CliError, ClientArgs};
use crate::model::Vm;

#[derive(Debug, clap::Args)]
pub struct ForkArgs {
    /// The VM to fork: running (paused for a moment while it is saved, then
    /// resumed) or snapshotted (its snapshot is used). Its image needs hatch-agent.
    pub id: String,
    /// How many VMs to make (1 to 16); all of them or none.
    #[arg(short = 'n', long, default_value_t = 1)]
    pub count: u32,
}

/// The body of the answer to `POST /vms/{id}/fork`.
#[derive(Debug, Deserialize)]
struct Forked {
    vms: Vec<Vm>,
}

/// `--json` prints the list of new VMs (as `hatch vm list --json` does);
/// otherwise each is shown as `hatch vm create` shows one.
pub async fn run(client: &Client, args: &ClientArgs, fork: &ForkArgs) -> Result<(), CliError> {
    let path = format!("/vms/{}/fork", segment(&fork.id));
    let body = json!({ "count": fork.count });
    let forked: Forked = client.call(Method::POST, &path, Some(&body)).await?;
    if !args.json {
        for vm in &forked.vms {
            eprintln!("created {} ({}) from {}", vm.id, vm.state.as_str(), fork.id);
        }
    }
    output::show(args.json, &forked.vms, |vms| {
        for (i, vm) in vms.iter().enumerate() {
            if i > 0 {
                println!();
            }
            print_vm(vm);
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::ForkArgs;
    use crate::cli::vms::VmCommand;
    use crate::cli::{Cli, Command};

    fn parse(args: &[&str]) -> Result<ForkArgs, clap::Error> {
        let cli = Cli::try_parse_from(["hatch", "vm", "fork"].iter().chain(args))?;
        match cli.command {
            Command::Vm(group) => match group.command {
                VmCommand::Fork(fork) => Ok(fork),
                other => panic!("parsed as {other:?}"),
            },
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn count_is_one_unless_given_with_n_or_count() {
        let fork = parse(&["vm-1"]).unwrap();
        assert_eq!((fork.id.as_str(), fork.count), ("vm-1", 1));
        assert_eq!(parse(&["vm-1", "-n", "3"]).unwrap().count, 3);
        assert_eq!(parse(&["--count", "16", "vm-1"]).unwrap().count, 16);
        // The daemon judges the range (400 naming count); only a count that is
        // not a number at all is a usage error here.
        assert_eq!(parse(&["vm-1", "-n", "0"]).unwrap().count, 0);
        assert!(parse(&["vm-1", "-n", "two"]).is_err());
        assert!(parse(&[]).is_err(), "the VM id is required");
    }
}
