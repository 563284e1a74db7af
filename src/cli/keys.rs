//! `hatch key create|list|me|quotas|revoke` and `hatch audit`.

use clap::Subcommand;
use hyper::Method;
use serde_json::{json, Value};

use super::http::segment;
use super::output::{self, opt};
use super::{local, local_store, CliError, ClientArgs};
use crate::model::{QuotaKind, Quotas, Role};

/// Quota flags; a flag not given is unlimited.
#[derive(Debug, Default, clap::Args)]
pub struct QuotaArgs {
    /// VMs the key may own.
    #[arg(long, allow_negative_numbers = true)]
    pub max_vms: Option<u64>,
    /// Sum of vCPUs over its VMs.
    #[arg(long, allow_negative_numbers = true)]
    pub max_vcpus: Option<u64>,
    /// Sum of memory (MiB) over its VMs.
    #[arg(long, allow_negative_numbers = true)]
    pub max_mem_mib: Option<u64>,
    /// Snapshots of its VMs.
    #[arg(long, allow_negative_numbers = true)]
    pub max_snapshots: Option<u64>,
    /// Routes to its VMs.
    #[arg(long, allow_negative_numbers = true)]
    pub max_routes: Option<u64>,
}

impl QuotaArgs {
    fn quotas(&self) -> Quotas {
        Quotas {
            max_vms: self.max_vms,
            max_vcpus: self.max_vcpus,
            max_mem_mib: self.max_mem_mib,
            max_snapshots: self.max_snapshots,
            max_routes: self.max_routes,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Create a key; it is printed once and cannot be shown again.
    Create {
        name: String,
        /// admin or member [default: member; admin with --local].
        #[arg(long)]
        role: Option<String>,
        #[command(flatten)]
        quotas: QuotaArgs,
        /// Write the key straight into the database under HATCH_DATA_DIR
        /// instead of asking the daemon (to regain access without a key).
        #[arg(long)]
        local: bool,
    },
    /// List keys (their prefixes, never the keys).
    List,
    /// The key in use: its role, quotas and what its objects use now.
    Me,
    /// Replace a key's quotas (a flag not given is unlimited).
    Quotas {
        id: String,
        #[command(flatten)]
        quotas: QuotaArgs,
    },
    /// Revoke a key; requests using it get 401 from then on. Its VMs stay.
    Revoke { id: String },
}

/// Checks the role and quotas as the API would, for `--local`.
fn local_key_settings(role: Option<&str>, quotas: &QuotaArgs) -> Result<(Role, Quotas), CliError> {
    let role = match role {
        None => Role::Admin,
        Some(text) => {
            Role::parse(text).ok_or_else(|| CliError::Usage(format!("--role must be admin or member, got {text:?}")))?
        }
    };
    let quotas = quotas.quotas();
    for kind in QuotaKind::ALL {
        if quotas.get(kind).is_some_and(|limit| limit > kind.max_limit()) {
            return Err(CliError::Usage(format!(
                "--{} is at most {}",
                kind.name().replace('_', "-"),
                kind.max_limit()
            )));
        }
    }
    Ok((role, quotas))
}

pub async fn run(command: KeyCommand, args: &ClientArgs) -> Result<(), CliError> {
    let client = args.client()?;
    match command {
        KeyCommand::Create {
            name,
            role,
            quotas,
            local: true,
        } => {
            crate::api::validate::name(&name).map_err(|e| CliError::Usage(e.message))?;
            let (role, quotas) = local_key_settings(role.as_deref(), &quotas)?;
            let (info, key) = local_store()?.create_api_key(&name, role, quotas).map_err(local)?;
            let mut created = serde_json::to_value(&info).map_err(local)?;
            created["key"] = json!(key);
            print_new_key(args.json, &created);
        }
        KeyCommand::Create {
            name,
            role,
            quotas,
            local: false,
        } => {
            let mut body = json!({ "name": name, "quotas": quotas.quotas() });
            if let Some(role) = role {
                body["role"] = json!(role);
            }
            let key: Value = client.call(Method::POST, "/keys", Some(&body)).await?;
            print_new_key(args.json, &key);
        }
        KeyCommand::List => {
            let keys: Vec<Value> = client.call(Method::GET, "/keys", None).await?;
            output::show(args.json, &keys, |keys| {
                let rows: Vec<Vec<String>> = keys
                    .iter()
                    .map(|k| {
                        let text = |f: &str| k[f].as_str().map(str::to_string);
                        vec![
                            opt(&text("id")),
                            opt(&text("name")),
                            opt(&text("role")),
                            format!("{}…", text("prefix").unwrap_or_default()),
                            quotas_text(&k["quotas"]),
                            opt(&text("created_at")),
                            opt(&text("revoked_at")),
                        ]
                    })
                    .collect();
                output::table(&["ID", "NAME", "ROLE", "PREFIX", "QUOTAS", "CREATED", "REVOKED"], &rows);
            });
        }
        KeyCommand::Me => {
            let me: Value = client.call(Method::GET, "/keys/me", None).await?;
            output::show(args.json, &me, |k| {
                println!(
                    "{} ({}, {})",
                    k["id"].as_str().unwrap_or("-"),
                    k["name"].as_str().unwrap_or("-"),
                    k["role"].as_str().unwrap_or("-")
                );
                let rows: Vec<Vec<String>> = [
                    ("max_vms", "vms"),
                    ("max_vcpus", "vcpus"),
                    ("max_mem_mib", "mem_mib"),
                    ("max_snapshots", "snapshots"),
                    ("max_routes", "routes"),
                ]
                .iter()
                .map(|(quota, used)| {
                    vec![
                        quota.to_string(),
                        k["usage"][used].to_string(),
                        k["quotas"][quota]
                            .as_u64()
                            .map_or("unlimited".into(), |l| l.to_string()),
                    ]
                })
                .collect();
                output::table(&["QUOTA", "USED", "LIMIT"], &rows);
            });
        }
        KeyCommand::Quotas { id, quotas } => {
            let key: Value = client
                .call(
                    Method::PATCH,
                    &format!("/keys/{}", segment(&id)),
                    Some(&json!({ "quotas": quotas.quotas() })),
                )
                .await?;
            output::show(args.json, &key, |k| {
                println!("{}: {}", k["id"].as_str().unwrap_or("-"), quotas_text(&k["quotas"]));
            });
        }
        KeyCommand::Revoke { id } => {
            client
                .request(Method::DELETE, &format!("/keys/{}", segment(&id)), None)
                .await?
                .success()?;
            if !args.json {
                println!("revoked {id}");
            }
        }
    }
    Ok(())
}

/// `max_vms=2 max_routes=5`, or `unlimited`.
fn quotas_text(quotas: &Value) -> String {
    let set: Vec<String> = quotas
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(name, limit)| limit.as_u64().map(|l| format!("{name}={l}")))
        .collect();
    if set.is_empty() {
        "unlimited".into()
    } else {
        set.join(" ")
    }
}

fn print_new_key(as_json: bool, key: &Value) {
    output::show(as_json, key, |k| {
        println!("{}", k["key"].as_str().unwrap_or_default());
        eprintln!(
            "created {} key {} ({}); store it now, it is not shown again",
            k["role"].as_str().unwrap_or("?"),
            k["id"],
            k["name"]
        );
    });
}

/// `hatch audit`: the newest mutating requests (admin).
#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// How many entries (default 100, at most 10000).
    #[arg(long)]
    pub limit: Option<u32>,
}

pub async fn audit(args: &AuditArgs) -> Result<(), CliError> {
    let client = args.client.client()?;
    let path = match args.limit {
        Some(limit) => format!("/audit?limit={limit}"),
        None => "/audit".to_string(),
    };
    let entries: Vec<Value> = client.call(Method::GET, &path, None).await?;
    output::show(args.client.json, &entries, |entries| {
        let rows: Vec<Vec<String>> = entries
            .iter()
            .map(|e| {
                let text = |f: &str| e[f].as_str().unwrap_or("-").to_string();
                vec![
                    text("at"),
                    text("key_id"),
                    text("method"),
                    text("path"),
                    e["status"].to_string(),
                ]
            })
            .collect();
        output::table(&["AT", "KEY", "METHOD", "PATH", "STATUS"], &rows);
    });
    Ok(())
}
