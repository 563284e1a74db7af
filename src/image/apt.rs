//! A private apt state (lists, cache, empty dpkg status) under the build
//! cache, fed from the chosen sources. Packages are only downloaded and
//! unpacked, never installed on the host, and the host's own apt lists are
//! neither used nor modified.
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::apt_sources::AptSource;
use super::fsutil::{create_dir_all, StagingDir};
use super::lock::{lock_path, FileLock};
use super::tools::{self, APT_CACHE, APT_GET};
use super::{ImageError, ProgressEvent, ProgressFn};
use crate::sys::cmd::CmdError;

/// A package as the mirror offers it (the candidate version).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageInfo {
    pub name: String,
    pub version: String,
    /// Size of the .deb in bytes.
    pub size: u64,
    /// Names from the Depends field (alternatives and versions dropped).
    pub depends: Vec<String>,
}

/// Parses `apt-cache show` output (deb822 paragraphs).
pub fn parse_show(text: &str) -> Vec<PackageInfo> {
    text.split("\n\n")
        .filter_map(|paragraph| {
            let field = |name: &str| {
                paragraph
                    .lines()
                    .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(": ")))
                    .map(str::trim)
            };
            let depends = field("Depends")
                .unwrap_or("")
                .split(',')
                .filter_map(|dep| dep.split('|').next()?.split_whitespace().next())
                .map(|name| name.split(':').next().unwrap_or(name).to_string())
                .collect();
            Some(PackageInfo {
                name: field("Package")?.to_string(),
                version: field("Version")?.to_string(),
                size: field("Size").and_then(|s| s.parse().ok()).unwrap_or(0),
                depends,
            })
        })
        .collect()
}

/// Package names and versions come from mirror data: check them before
/// they become file names or command arguments.
fn check_name_and_version(info: &PackageInfo) -> Result<(), ImageError> {
    let name_ok = info.name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && info
            .name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c));
    let version_ok = info.version.starts_with(|c: char| c.is_ascii_digit())
        && info
            .version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".+~:-".contains(c));
    if name_ok && version_ok {
        Ok(())
    } else {
        Err(ImageError::Mirror(format!(
            "unexpected package name/version {:?} {:?}",
            info.name, info.version
        )))
    }
}

pub struct Apt {
    dir: PathBuf,
    debs_dir: PathBuf,
    sources: Vec<AptSource>,
}

impl Apt {
    /// One private apt state per distinct set of sources.
    pub fn new(cache_dir: &Path, sources: Vec<AptSource>) -> Self {
        let lines = sources.iter().map(AptSource::line).collect::<Vec<_>>().join("\n");
        let digest = hex::encode(&Sha256::digest(lines.as_bytes())[..8]);
        Apt {
            dir: cache_dir.join("apt").join(digest),
            debs_dir: cache_dir.join("debs"),
            sources,
        }
    }

    pub fn sources(&self) -> &[AptSource] {
        &self.sources
    }

    fn options(&self) -> Vec<String> {
        let dir = self.dir.display();
        [
            format!("Dir::Etc::SourceList={dir}/sources.list"),
            format!("Dir::Etc::SourceParts={dir}/sources.list.d"),
            format!("Dir::Etc::Preferences={dir}/preferences"),
            format!("Dir::Etc::PreferencesParts={dir}/preferences.d"),
            format!("Dir::State::Lists={dir}/lists"),
            format!("Dir::State::status={dir}/status"),
            format!("Dir::Cache={dir}/cache"),
            // Hosts (e.g. container images) may disable the binary caches;
            // without them every apt-cache call re-parses all lists.
            "Dir::Cache::pkgcache=pkgcache.bin".into(),
            "Dir::Cache::srcpkgcache=srcpkgcache.bin".into(),
            "APT::Architecture=amd64".into(),
            "APT::Architectures=amd64".into(),
            "APT::Sandbox::User=root".into(),
            "Acquire::Languages=none".into(),
        ]
        .into_iter()
        .flat_map(|option| ["-o".to_string(), option])
        .collect()
    }

    fn prepare_dirs(&self) -> Result<(), ImageError> {
        for sub in [
            "sources.list.d",
            "preferences.d",
            "lists/partial",
            "cache/archives/partial",
        ] {
            create_dir_all(&self.dir.join(sub))?;
        }
        let mut list: String = self.sources.iter().map(|s| s.line() + "\n").collect();
        list.insert_str(0, "# Written by Hatch for image builds.\n");
        super::fsutil::write_atomically(&self.dir.join("sources.list"), list.as_bytes())?;
        let status = self.dir.join("status");
        if !status.exists() {
            super::fsutil::write_atomically(&status, b"")?;
        }
        Ok(())
    }

    fn has_lists(&self) -> bool {
        std::fs::read_dir(self.dir.join("lists"))
            .map(|entries| {
                entries
                    .flatten()
                    .any(|e| e.file_name().to_string_lossy().contains("_Packages"))
            })
            .unwrap_or(false)
    }

    /// Serialises use of this apt state between processes: hold it while
    /// updating and reading the lists. (flock is per open file: never take
    /// it twice in one task.)
    pub async fn lock(&self) -> Result<FileLock, ImageError> {
        FileLock::acquire(&lock_path(&self.dir)).await
    }

    /// Refreshes the package lists (call with [`Apt::lock`] held). When the
    /// mirror cannot be reached but lists from an earlier build exist,
    /// those are used (with a warning), so cached images can still be
    /// rebuilt offline.
    pub async fn update(&self, progress: ProgressFn<'_>) -> Result<(), ImageError> {
        self.prepare_dirs()?;
        progress(ProgressEvent::Step(format!(
            "updating package lists from {} source(s)",
            self.sources.len()
        )));
        let mut args = self.options();
        args.extend(["-q".into(), "--error-on=any".into(), "update".into()]);
        match tools::run(APT_GET, &args, None).await {
            Ok(_) => Ok(()),
            Err(error) if self.has_lists() => {
                progress(ProgressEvent::Warning(format!(
                    "using package lists from an earlier build: {error}"
                )));
                Ok(())
            }
            Err(error) => {
                let mut uris: Vec<&str> = self.sources.iter().map(|s| s.uri.as_str()).collect();
                uris.dedup();
                Err(ImageError::Mirror(format!(
                    "could not download package lists from {}: {}",
                    uris.join(", "),
                    apt_messages(&error)
                )))
            }
        }
    }

    /// Candidate versions of `packages`, in the same order.
    pub async fn show(&self, packages: &[&str]) -> Result<Vec<PackageInfo>, ImageError> {
        let mut args = self.options();
        args.extend(["show".into(), "--no-all-versions".into()]);
        args.extend(packages.iter().map(|p| p.to_string()));
        let output = tools::run(APT_CACHE, &args, None)
            .await
            .map_err(|e| ImageError::Mirror(format!("looking up {}: {}", packages.join(", "), apt_messages(&e))))?;
        let found = parse_show(&String::from_utf8_lossy(&output));
        packages
            .iter()
            .map(|name| {
                let info = found
                    .iter()
                    .find(|p| p.name == *name)
                    .cloned()
                    .ok_or_else(|| ImageError::Mirror(format!("package {name} is not offered by the mirror")))?;
                check_name_and_version(&info)?;
                Ok(info)
            })
            .collect()
    }

    /// How many packages and bytes installing `packages` pulls in (the
    /// Depends/Pre-Depends closure; Recommends are not installed).
    pub async fn closure_download_size(&self, packages: &[&str]) -> Result<(usize, u64), ImageError> {
        let mut args = self.options();
        args.extend(
            [
                "depends",
                "--recurse",
                "--no-recommends",
                "--no-suggests",
                "--no-conflicts",
                "--no-breaks",
                "--no-replaces",
                "--no-enhances",
            ]
            .map(String::from),
        );
        args.extend(packages.iter().map(|p| p.to_string()));
        let output = tools::run(APT_CACHE, &args, None)
            .await
            .map_err(|e| ImageError::Mirror(format!("resolving dependencies: {e}")))?;
        let text = String::from_utf8_lossy(&output);
        // Unindented lines are package names; `<virtual>` ones have no .deb.
        let mut names: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with(' ') && !l.starts_with('<'))
            .collect();
        names.sort_unstable();
        names.dedup();
        let mut args = self.options();
        args.extend(["show".into(), "--no-all-versions".into()]);
        args.extend(names.iter().map(|n| n.to_string()));
        let output = tools::run(APT_CACHE, &args, None)
            .await
            .map_err(|e| ImageError::Mirror(format!("looking up package sizes: {e}")))?;
        let infos = parse_show(&String::from_utf8_lossy(&output));
        Ok((infos.len(), infos.iter().map(|p| p.size).sum()))
    }

    /// The versioned kernel package behind a meta package such as
    /// `linux-image-cloud-amd64`.
    pub async fn kernel_behind(&self, meta: &PackageInfo) -> Result<PackageInfo, ImageError> {
        let name = meta
            .depends
            .iter()
            .find(|d| d.starts_with("linux-image-") && d.ends_with("-cloud-amd64"))
            .ok_or_else(|| ImageError::Mirror(format!("{} depends on no cloud kernel package", meta.name)))?;
        Ok(self.show(&[name.as_str()]).await?.remove(0))
    }

    /// Downloads `package` (reusing an earlier download of the same
    /// version) and returns the .deb's path.
    pub async fn download(&self, package: &PackageInfo, progress: ProgressFn<'_>) -> Result<PathBuf, ImageError> {
        let dir = self
            .debs_dir
            .join(format!("{}_{}", package.name, package.version.replace(':', "%3a")));
        let _lock = FileLock::acquire(&lock_path(&dir)).await?;
        if let Some(deb) = find_deb(&dir) {
            super::cache::mark_used(&dir);
            return Ok(deb);
        }
        progress(ProgressEvent::Download {
            package: package.name.clone(),
            version: package.version.clone(),
            bytes: package.size,
        });
        let staging = StagingDir::beside(&dir)?;
        let mut args = self.options();
        args.extend([
            "-q".into(),
            "download".into(),
            format!("{}={}", package.name, package.version),
        ]);
        let fetch = tools::run(APT_GET, &args, Some(staging.path()));
        // apt-get download fills staging/partial/, then moves the .deb up.
        super::byte_progress::watch_dir(staging.path(), package.size, progress, fetch)
            .await
            .map_err(|e| match ImageError::command(e, staging.path()) {
                ImageError::Command(e) => {
                    ImageError::Mirror(format!("downloading {}: {}", package.name, apt_messages(&e)))
                }
                other => other,
            })?;
        staging.commit(&dir)?;
        find_deb(&dir).ok_or_else(|| ImageError::Mirror(format!("apt-get download left no .deb for {}", package.name)))
    }
}

/// apt's own error/warning lines (the command line itself is noise).
fn apt_messages(error: &CmdError) -> String {
    let CmdError::Failed { stderr, .. } = error else {
        return error.to_string();
    };
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("E:") || l.starts_with("W:") || l.starts_with("Err:"))
        .take(4)
        .collect();
    if lines.is_empty() {
        stderr.clone()
    } else {
        lines.join("; ")
    }
}

fn find_deb(dir: &Path) -> Option<PathBuf> {
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
}
