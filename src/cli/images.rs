//! `hatch image build|register|list|show|delete`. `build` and `list` also
//! work without a daemon: they use the database under HATCH_DATA_DIR.

use std::path::{Path, PathBuf};

use clap::Subcommand;
use hyper::Method;
use serde_json::json;

use super::http::segment;
use super::output::{self, opt};
use super::{local, local_store, CliError, ClientArgs};
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
        ImageCommand::Build { profile, name } => {
            let profile =
                ImageProfile::parse(&profile).ok_or_else(|| CliError::Usage(format!("unknown profile {profile}")))?;
            let image = build_image(profile, name).await?;
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
            let mut body = json!({ "name": name, "kernel_path": absolute(&kernel)? });
            for (key, path) in [("initrd_path", &initrd), ("rootfs_path", &rootfs)] {
                if let Some(path) = path {
                    body[key] = json!(absolute(path)?);
                }
            }
            if let Some(user) = login_user {
                body["login_user"] = json!(user);
            }
            if let Some(boot_args) = boot_args {
                body["boot_args"] = json!(boot_args);
            }
            let image: Image = args.client()?.call(Method::POST, "/images", Some(&body)).await?;
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

fn absolute(path: &Path) -> Result<String, CliError> {
    let full = std::path::absolute(path).map_err(|e| CliError::Usage(format!("{}: {e}", path.display())))?;
    Ok(full.to_string_lossy().into_owned())
}

/// Builds and registers an image in the local store (no daemon needed).
async fn build_image(profile: ImageProfile, name: Option<String>) -> Result<Image, CliError> {
    let _store = local_store()?;
    let _name = name.unwrap_or_else(|| profile.as_str().to_string());
    // The builder (`crate::image::build_image`) is not part of this branch.
    Err(CliError::Local(format!(
        "building {} images needs the image builder, which this build of hatch does not include",
        profile.as_str()
    )))
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
