//! `hatch template create|list|show|delete`.

use std::path::PathBuf;

use clap::Subcommand;
use hyper::Method;
use serde_json::json;

use super::http::segment;
use super::lifetime::LifetimeArgs;
use super::output;
use super::vms::{read_ssh_keys, user_data_field};
use super::{CliError, ClientArgs};
use crate::api::templates::TemplateView;

#[derive(Debug, Subcommand)]
pub enum TemplateCommand {
    /// Save VM defaults under a name.
    Create {
        #[arg(long)]
        name: String,
        /// Image id or name.
        #[arg(long)]
        image: String,
        #[arg(long)]
        vcpu: Option<u32>,
        /// Memory in MiB.
        #[arg(long)]
        mem: Option<u32>,
        /// File with cloud-init user data (cloud-config, script, gzip, ...);
        /// sent as text when it is UTF-8, else base64-encoded.
        #[arg(long)]
        user_data: Option<PathBuf>,
        /// Public key file(s) to authorise in VMs made from this template.
        #[arg(long = "ssh-key")]
        ssh_keys: Vec<PathBuf>,
        #[command(flatten)]
        lifetime: LifetimeArgs,
        /// VMs kept booted and snapshotted for creates from it (0 to 8).
        #[arg(long = "warm-pool")]
        warm_pool: Option<u32>,
    },
    /// List templates.
    List,
    /// Show one template.
    Show { id: String },
    /// Delete a template.
    Delete { id: String },
}

pub async fn run(command: TemplateCommand, args: &ClientArgs) -> Result<(), CliError> {
    let client = args.client()?;
    match command {
        TemplateCommand::Create {
            name,
            image,
            vcpu,
            mem,
            user_data,
            ssh_keys,
            lifetime,
            warm_pool,
        } => {
            let mut body = json!({ "name": name, "image_id": image, "ssh_authorized_keys": read_ssh_keys(&ssh_keys)? });
            if let Some(vcpu) = vcpu {
                body["vcpu_count"] = json!(vcpu);
            }
            if let Some(mem) = mem {
                body["mem_mib"] = json!(mem);
            }
            if let Some(size) = warm_pool {
                body["warm_pool_size"] = json!(size);
            }
            if let Some(path) = user_data {
                let (field, value) = user_data_field(&path)?;
                body[field] = value;
            }
            if let Some(body) = body.as_object_mut() {
                lifetime.add_to(body);
            }
            let template: TemplateView = client.call(Method::POST, "/templates", Some(&body)).await?;
            output::show(args.json, &template, print_template);
        }
        TemplateCommand::List => {
            let templates: Vec<TemplateView> = client.call(Method::GET, "/templates", None).await?;
            output::show(args.json, &templates, |templates| {
                let rows: Vec<Vec<String>> = templates
                    .iter()
                    .map(|view| {
                        let t = &view.template;
                        vec![
                            t.id.clone(),
                            t.name.clone(),
                            t.image_id.clone(),
                            t.vcpu_count.to_string(),
                            t.mem_mib.to_string(),
                            format!("{}/{}", view.warm_pool.ready, view.warm_pool.size),
                        ]
                    })
                    .collect();
                output::table(&["ID", "NAME", "IMAGE", "VCPU", "MEM_MIB", "WARM_POOL"], &rows);
            });
        }
        TemplateCommand::Show { id } => {
            let template: TemplateView = client
                .call(Method::GET, &format!("/templates/{}", segment(&id)), None)
                .await?;
            output::show(args.json, &template, print_template);
        }
        TemplateCommand::Delete { id } => {
            client
                .request(Method::DELETE, &format!("/templates/{}", segment(&id)), None)
                .await?
                .success()?;
            if !args.json {
                println!("deleted {id}");
            }
        }
    }
    Ok(())
}

fn print_template(view: &TemplateView) {
    let (t, pool) = (&view.template, &view.warm_pool);
    output::fields(&[
        ("id", t.id.clone()),
        ("name", t.name.clone()),
        ("image", t.image_id.clone()),
        ("vcpu_count", t.vcpu_count.to_string()),
        ("mem_mib", t.mem_mib.to_string()),
        (
            "user_data",
            format!("{} bytes", t.user_data.as_ref().map_or(0, |data| data.len())),
        ),
        ("ssh keys", t.ssh_authorized_keys.len().to_string()),
        ("ttl_seconds", output::opt(&t.lifetime.ttl_seconds.map(|s| s.get()))),
        (
            "idle_timeout_seconds",
            output::opt(&t.lifetime.idle_timeout_seconds.map(|s| s.get())),
        ),
        ("on_idle", output::opt(&t.lifetime.on_idle.map(|a| a.as_str()))),
        (
            "warm_pool",
            format!("{} of {} ready, {} filling", pool.ready, pool.size, pool.filling),
        ),
        ("created_at", t.created_at.to_string()),
    ]);
}
