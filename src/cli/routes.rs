//! `hatch route create|list|delete`.

use clap::Subcommand;
use hyper::Method;
use serde_json::json;

use super::http::segment;
use super::output;
use super::{CliError, ClientArgs};
use crate::model::Route;

#[derive(Debug, Subcommand)]
pub enum RouteCommand {
    /// Expose a VM port as <subdomain>.<HATCH_PROXY_BASE_DOMAIN>.
    Create {
        vm_id: String,
        /// The guest port requests go to.
        #[arg(long)]
        port: u32,
        /// Default: generated from the VM id.
        #[arg(long)]
        subdomain: Option<String>,
        /// Answer 503 instead of restoring a snapshotted VM.
        #[arg(long)]
        no_auto_wake: bool,
    },
    /// A VM's routes.
    List {
        vm_id: String,
    },
    Delete {
        route_id: String,
    },
}

pub async fn run(command: RouteCommand, args: &ClientArgs) -> Result<(), CliError> {
    let client = args.client()?;
    match command {
        RouteCommand::Create {
            vm_id,
            port,
            subdomain,
            no_auto_wake,
        } => {
            let mut body = json!({ "target_port": port, "auto_wake": !no_auto_wake });
            if let Some(subdomain) = subdomain {
                body["subdomain"] = json!(subdomain);
            }
            let route: Route = client
                .call(Method::POST, &format!("/vms/{}/routes", segment(&vm_id)), Some(&body))
                .await?;
            output::show(args.json, &route, |r| {
                println!("{} {} → {}:{}", r.id, r.subdomain, r.vm_id, r.target_port)
            });
        }
        RouteCommand::List { vm_id } => {
            let routes: Vec<Route> = client
                .call(Method::GET, &format!("/vms/{}/routes", segment(&vm_id)), None)
                .await?;
            output::show(args.json, &routes, |routes| {
                let rows: Vec<Vec<String>> = routes
                    .iter()
                    .map(|r| {
                        vec![
                            r.id.clone(),
                            r.subdomain.clone(),
                            r.target_port.to_string(),
                            r.auto_wake.to_string(),
                        ]
                    })
                    .collect();
                output::table(&["ID", "SUBDOMAIN", "PORT", "AUTO_WAKE"], &rows);
            });
        }
        RouteCommand::Delete { route_id } => {
            client
                .request(Method::DELETE, &format!("/routes/{}", segment(&route_id)), None)
                .await?
                .success()?;
            if !args.json {
                println!("deleted {route_id}");
            }
        }
    }
    Ok(())
}
