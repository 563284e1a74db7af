//! Kernel modules: picking the modules an initramfs needs (with their
//! dependencies, from the kernel's modules.dep) and staging them in a
//! `/lib/modules/<version>` tree that busybox modprobe understands.
use std::collections::BTreeSet;
use std::path::Path;

use super::fsutil::create_dir_all;
use super::tools::{self, DEPMOD};
use super::ImageError;

/// `virtio-net` and `virtio_net` name the same module.
fn normalise(name: &str) -> String {
    name.replace('-', "_")
}

fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    normalise(file.split(".ko").next().unwrap_or(file))
}

/// The module files (paths relative to the modules directory) needed to
/// load `wanted`, dependencies included. Names that are built into the
/// kernel (listed in modules.builtin) need nothing; unknown names are an
/// error so a typo cannot silently drop a driver.
pub fn module_closure(modules_dep: &str, builtin: &str, wanted: &[&str]) -> Result<BTreeSet<String>, ImageError> {
    let entries: Vec<(String, &str, Vec<&str>)> = modules_dep
        .lines()
        .filter_map(|line| {
            let (path, deps) = line.split_once(':')?;
            Some((module_name(path), path, deps.split_whitespace().collect()))
        })
        .collect();
    let builtin: BTreeSet<String> = builtin.lines().map(module_name).collect();
    let mut files = BTreeSet::new();
    for name in wanted {
        let name = normalise(name);
        if builtin.contains(&name) {
            continue;
        }
        let (_, path, deps) = entries
            .iter()
            .find(|(module, _, _)| *module == name)
            .ok_or_else(|| ImageError::Build(format!("kernel module {name} is neither a module nor built in")))?;
        files.insert(path.to_string());
        files.extend(deps.iter().map(|d| d.to_string()));
    }
    Ok(files)
}

/// Copies the modules needed for `wanted` from `kernel_root` (an unpacked
/// kernel package with modules.dep) into `dest_root`, and indexes them.
pub async fn stage_modules(
    kernel_root: &Path,
    version: &str,
    dest_root: &Path,
    wanted: &[&str],
) -> Result<(), ImageError> {
    let source = kernel_root.join("lib/modules").join(version);
    let dest = dest_root.join("lib/modules").join(version);
    let read = |name: &str| {
        let path = source.join(name);
        std::fs::read_to_string(&path).map_err(|e| ImageError::io("reading", &path, e))
    };
    let files = module_closure(&read("modules.dep")?, &read("modules.builtin")?, wanted)?;
    for file in files
        .iter()
        .map(String::as_str)
        .chain(["modules.order", "modules.builtin", "modules.builtin.modinfo"])
    {
        let target = dest.join(file);
        if let Some(parent) = target.parent() {
            create_dir_all(parent)?;
        }
        std::fs::copy(source.join(file), &target).map_err(|e| ImageError::io("copying module to", &target, e))?;
    }
    run_depmod(dest_root, version).await
}

/// Writes modules.dep and friends for the tree under `root`.
pub async fn run_depmod(root: &Path, version: &str) -> Result<(), ImageError> {
    tools::run(DEPMOD, ["-b".as_ref(), root.as_os_str(), version.as_ref()], None)
        .await
        .map_err(|e| ImageError::command(e, root))?;
    Ok(())
}
