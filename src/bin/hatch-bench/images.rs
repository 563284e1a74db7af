//! The guest images the rows boot, built (or taken from the build cache
//! the tests share) before the run enters its network namespace. An image
//! that cannot be had makes the rows that need it skipped, with the reason.

use std::path::Path;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use hatch::image::{build_image, BuildEnv, BuildRequest, ProgressEvent};
use hatch::model::{Image, ImageProfile};

use crate::rows::Row;
use crate::{Args, BenchError};

/// What the measuring process gets from the one that built the images.
#[derive(Serialize, Deserialize)]
pub struct Inputs {
    pub minimal: Result<Image, String>,
    pub debian: Result<Image, String>,
    /// The images' own directories (hard links into the build cache),
    /// removed after the run.
    pub image_dirs: Vec<std::path::PathBuf>,
}

/// Builds the images the selected rows need.
pub async fn prepare(args: &Args, data_dir: &Path) -> Inputs {
    let needs = |rows: &[Row]| rows.iter().any(|row| args.selected(*row));
    let mut inputs = Inputs {
        minimal: Err("not needed by the selected rows".into()),
        debian: Err("not needed by the selected rows".into()),
        image_dirs: Vec::new(),
    };
    if needs(&[Row::Snapshot, Row::Wake, Row::CreateSshMinimal, Row::Fork]) {
        inputs.minimal = build(ImageProfile::Minimal, data_dir, &mut inputs.image_dirs).await;
    }
    if needs(&[Row::CreateSshDebian, Row::Disk, Row::Compress]) {
        inputs.debian = build(ImageProfile::Debian, data_dir, &mut inputs.image_dirs).await;
    }
    inputs
}

async fn build(profile: ImageProfile, data_dir: &Path, dirs: &mut Vec<std::path::PathBuf>) -> Result<Image, String> {
    let env = BuildEnv::from_env(data_dir);
    let request = BuildRequest { profile, name: None };
    let started = Instant::now();
    let print = |event: ProgressEvent| {
        if !event.is_tick() {
            eprintln!(
                "[image {} +{:.1}s] {event}",
                profile.as_str(),
                started.elapsed().as_secs_f64()
            );
        }
    };
    match build_image(&request, &env, &print).await {
        Ok(image) => {
            let dir = std::path::absolute(&env.images_dir).unwrap_or_else(|_| env.images_dir.clone());
            dirs.push(dir.join(&image.id));
            Ok(image)
        }
        Err(error) => Err(format!(
            "the {} image could not be built: {}",
            profile.as_str(),
            BenchError::from(error)
        )),
    }
}

/// The image directories hold hard links into the build cache: cheap to
/// drop, and the cache keeps the files for the next run.
pub fn remove_image_dirs(inputs: &Inputs) {
    for dir in &inputs.image_dirs {
        let _ = std::fs::remove_dir_all(dir);
    }
}
