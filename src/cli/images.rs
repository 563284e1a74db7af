//! `hatch image build|register|list|show|delete`. `build` always, and
//! `register`, `list` and `show` when no daemon answers, use the database
//! under HATCH_DATA_DIR directly.

use std::path::{Path, PathBuf};

use clap::Subcommand;
use hyper::Method;
use serde_json::json;

use super::http::segment;
use super::output::{self, opt};
use super::progress::Progress;
use super::{local, local_store, CliError, ClientArgs};
use crate::image::{register_image, BuildEnv, BuildRequest, ProgressEvent, RegisterRequest};
use crate::model::{Image, ImageProfile};

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Build an image from Debian packages and register it.
    Build {
        #[arg(long, value_parser = ["debian", "minimal"], default_value = "debian")]
        profile: String,
        /// Name [default: the profile].
        #[arg(long)]
        name: Option<String>,
        /// Static hatch-agent binary to install into the image [default:
        /// HATCH_AGENT_BIN, else hatch-agent beside the hatch executable].
        #[arg(long)]
        agent_bin: Option<PathBuf>,
    },
    /// Register existing kernel/initrd/rootfs files.
    Register {
        #[arg(long)]
        name: String,
        /// ELF vmlinux or bzImage.
        #[arg(long)]
        kernel: PathBuf,
        #[arg(long)]
        initrd: Option<PathBuf>,
        #[arg(long)]
        rootfs: Option<PathBuf>,
        /// User to log in as over SSH [default: root].
        #[arg(long)]
        login_user: Option<String>,
        /// Extra kernel command line.
        #[arg(long)]
        boot_args: Option<String>,
    },
    /// List images, newest first.
    List,
    /// Show an image by id or name.
    Show { id: String },
    /// Delete an image that no VM or template uses.
    Delete { id: String },
}

pub async fn run(command: ImageCommand, args: &ClientArgs) -> Result<(), CliError> {
    match command {
        ImageCommand::Build {
            profile,
            name,
            agent_bin,
        } => {
            let profile =
                ImageProfile::parse(&profile).ok_or_else(|| CliError::Usage(format!("unknown profile {profile}")))?;
            let agent_bin = agent_bin.as_deref().map(absolute).transpose()?;
            let image = build_image(profile, name, agent_bin).await?;
            output::show(args.json, &image, print_image);
        }
        ImageCommand::Register {
            name,
            kernel,
            initrd,
            rootfs,
            login_user,
            boot_args,
        } => {
            let request = RegisterRequest {
                name,
                kernel_path: absolute(&kernel)?,
                initrd_path: initrd.as_deref().map(absolute).transpose()?,
                rootfs_path: rootfs.as_deref().map(absolute).transpose()?,
                login_user,
                boot_args,
            };
            let image: Image = match args
                .client()?
                .call(Method::POST, "/images", Some(&register_body(&request)))
                .await
            {
                // Without a daemon, the same checks run here and the image goes straight into the database.
                Err(CliError::Unreachable { .. }) => {
                    let config = crate::config::Config::from_env().map_err(|e| CliError::Usage(e.to_string()))?;
                    let image = register_image(&request, &config.import_dirs()).map_err(local)?;
                    local_store()?.insert_image(&image).map_err(local)?;
                    image
                }
                other => other?,
            };
            output::show(args.json, &image, print_image);
        }
        ImageCommand::List => {
            let images: Vec<Image> = match args.client()?.call(Method::GET, "/images", None).await {
                Err(CliError::Unreachable { .. }) => local_store()?.list_images().map_err(local)?,
                other => other?,
            };
            output::show(args.json, &images, |images| {
                let rows: Vec<Vec<String>> = images
                    .iter()
                    .map(|i| {
                        vec![
                            i.id.clone(),
                            i.name.clone(),
                            i.profile.as_str().to_string(),
                            i.login_user.clone(),
                            format!("{} MiB", i.size_bytes / (1024 * 1024)),
                            i.created_at.format("%Y-%m-%d %H:%M").to_string(),
                        ]
                    })
                    .collect();
                output::table(&["ID", "NAME", "PROFILE", "LOGIN", "SIZE", "CREATED"], &rows);
            });
        }
        ImageCommand::Show { id } => {
            let image: Image = match args
                .client()?
                .call(Method::GET, &format!("/images/{}", segment(&id)), None)
                .await
            {
                Err(CliError::Unreachable { .. }) => local_store()?
                    .find_image(&id)
                    .map_err(local)?
                    .ok_or_else(|| CliError::Local(format!("image {id} not found")))?,
                other => other?,
            };
            output::show(args.json, &image, print_image);
        }
        ImageCommand::Delete { id } => {
            args.client()?
                .request(Method::DELETE, &format!("/images/{}", segment(&id)), None)
                .await?
                .success()?;
            if !args.json {
                println!("deleted {id}");
            }
        }
    }
    Ok(())
}

fn absolute(path: &Path) -> Result<PathBuf, CliError> {
    std::path::absolute(path).map_err(|e| CliError::Usage(format!("{}: {e}", path.display())))
}

/// The `POST /images` body for a registration (unset fields left out).
fn register_body(request: &RegisterRequest) -> serde_json::Value {
    let mut body = json!({ "name": request.name, "kernel_path": request.kernel_path });
    let optional = [
        ("initrd_path", request.initrd_path.as_ref().map(|p| json!(p))),
        ("rootfs_path", request.rootfs_path.as_ref().map(|p| json!(p))),
        ("login_user", request.login_user.as_ref().map(|u| json!(u))),
        ("boot_args", request.boot_args.as_ref().map(|a| json!(a))),
    ];
    for (key, value) in optional {
        if let Some(value) = value {
            body[key] = value;
        }
    }
    body
}

/// Builds an image and registers it in the local store (no daemon needed:
/// the daemon reads new images from the same database). Progress goes to
/// stderr as it happens (a bar on a terminal), so stdout stays the image alone.
async fn build_image(
    profile: ImageProfile,
    name: Option<String>,
    agent_bin: Option<PathBuf>,
) -> Result<Image, CliError> {
    let config = crate::config::Config::from_env().map_err(|e| CliError::Usage(e.to_string()))?;
    let store = super::serve::open_store(&config)?;
    let env = BuildEnv {
        images_dir: config.data_dir.join("images"),
        cache_dir: config.image_cache_dir.clone(),
        debian_mirror: config.debian_mirror.clone(),
        agent_bin: agent_bin.or(config.agent_bin.clone()),
    };
    let request = BuildRequest { profile, name };
    let progress = Progress::on_stderr("hatch: ");
    let print = |event: ProgressEvent| progress.image_event(&event);
    let image = crate::image::build_image(&request, &env, &print).await.map_err(local)?;
    drop(progress);
    if let Err(error) = store.insert_image(&image) {
        // Not registered, so nothing would ever delete the files.
        let _ = std::fs::remove_dir_all(env.images_dir.join(&image.id));
        return Err(local(error));
    }
    Ok(image)
}

fn print_image(image: &Image) {
    let path = |p: &Option<PathBuf>| opt(&p.as_ref().map(|p| p.display().to_string()));
    output::fields(&[
        ("id", image.id.clone()),
        ("name", image.name.clone()),
        ("profile", image.profile.as_str().to_string()),
        ("kernel (ELF)", path(&image.kernel_path)),
        ("kernel (bzImage)", path(&image.bzimage_path)),
        ("initrd", path(&image.initrd_path)),
        ("rootfs", path(&image.rootfs_path)),
        ("login_user", image.login_user.clone()),
        ("boot_args", image.boot_args.clone()),
        ("size_bytes", image.size_bytes.to_string()),
        ("created_at", image.created_at.to_string()),
    ]);
}
