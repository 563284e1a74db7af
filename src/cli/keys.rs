//! `hatch key create|list|revoke`.

use clap::Subcommand;
use hyper::Method;
use serde_json::{json, Value};

use super::http::segment;
use super::output::{self, opt};
use super::{local, local_store, CliError, ClientArgs};

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Create a key; it is printed once and cannot be shown again.
    Create {
        name: String,
        /// Write the key straight into the database under HATCH_DATA_DIR
        /// instead of asking the daemon (to regain access without a key).
        #[arg(long)]
        local: bool,
    },
    /// List keys (their prefixes, never the keys).
    List,
    /// Revoke a key; requests using it get 401 from then on.
    Revoke { id: String },
}

pub async fn run(command: KeyCommand, args: &ClientArgs) -> Result<(), CliError> {
    let client = args.client()?;
    match command {
        KeyCommand::Create { name, local: true } => {
            crate::api::validate::name(&name).map_err(|e| CliError::Usage(e.message))?;
            let (info, key) = local_store()?.create_api_key(&name, crate::model::Role::Admin, Default::default()).map_err(local)?;
            let mut created = serde_json::to_value(&info).map_err(local)?;
            created["key"] = json!(key);
            print_new_key(args.json, &created);
        }
        KeyCommand::Create { name, local: false } => {
            let key: Value = client
                .call(Method::POST, "/keys", Some(&json!({ "name": name })))
                .await?;
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
                            format!("{}…", text("prefix").unwrap_or_default()),
                            opt(&text("created_at")),
                            opt(&text("revoked_at")),
                        ]
                    })
                    .collect();
                output::table(&["ID", "NAME", "PREFIX", "CREATED", "REVOKED"], &rows);
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

fn print_new_key(as_json: bool, key: &Value) {
    output::show(as_json, key, |k| {
        println!("{}", k["key"].as_str().unwrap_or_default());
        eprintln!(
            "created key {} ({}); store it now, it is not shown again",
            k["id"], k["name"]
        );
    });
}
