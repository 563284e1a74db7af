//! Unpacked Debian packages: extracting .debs with dpkg-deb (never
//! installing them) and finding files and shared libraries inside the
//! unpacked trees without ever following a link out to the host.
use std::path::{Component, Path, PathBuf};

use super::elf::Elf;
use super::tools::{self, DPKG_DEB};
use super::ImageError;

/// Unpacks `deb` into `dest` (created if needed).
pub async fn unpack_deb(deb: &Path, dest: &Path) -> Result<(), ImageError> {
    super::fsutil::create_dir_all(dest)?;
    tools::run(DPKG_DEB, ["-x".as_ref(), deb.as_os_str(), dest.as_os_str()], None)
        .await
        .map_err(|e| ImageError::command(e, dest))?;
    Ok(())
}

/// Resolves `path` (absolute, as seen inside the tree) to a real file
/// below `root`, following symlinks as the guest would see them.
pub fn resolve_in_root(root: &Path, path: &Path) -> Option<PathBuf> {
    let mut current = PathBuf::from("/").join(path);
    for _ in 0..16 {
        let mut resolved = PathBuf::from("/");
        let mut followed = false;
        let components: Vec<Component> = current.components().collect();
        for (index, component) in components.iter().enumerate() {
            match component {
                Component::RootDir | Component::CurDir | Component::Prefix(_) => continue,
                Component::ParentDir => {
                    resolved.pop();
                    continue;
                }
                Component::Normal(name) => resolved.push(name),
            }
            let on_host = root.join(resolved.strip_prefix("/").ok()?);
            let metadata = std::fs::symlink_metadata(&on_host).ok()?;
            if metadata.file_type().is_symlink() {
                let target = std::fs::read_link(&on_host).ok()?;
                let mut next = if target.is_absolute() {
                    target
                } else {
                    resolved.parent().unwrap_or(Path::new("/")).join(target)
                };
                for rest in &components[index + 1..] {
                    next.push(rest);
                }
                current = next;
                followed = true;
                break;
            }
        }
        if !followed {
            let on_host = root.join(resolved.strip_prefix("/").ok()?);
            return on_host.is_file().then_some(on_host);
        }
    }
    None
}

const LIBRARY_DIRS: [&str; 4] = ["/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib", "/usr/lib"];

/// Finds `file_name` in the library directories of any of `roots`.
fn find_library(roots: &[PathBuf], file_name: &str) -> Option<PathBuf> {
    roots.iter().find_map(|root| {
        LIBRARY_DIRS
            .iter()
            .find_map(|dir| resolve_in_root(root, &Path::new(dir).join(file_name)))
    })
}

/// What a dynamically linked program needs at run time.
#[derive(Debug, Default)]
pub struct RuntimeDeps {
    /// (guest path of the dynamic loader, file to copy there)
    pub interpreter: Option<(String, PathBuf)>,
    /// (soname, file to copy) for every DT_NEEDED library, transitively.
    pub libraries: Vec<(String, PathBuf)>,
}

/// Follows DT_NEEDED from `programs` through the libraries found in
/// `roots`; a library found nowhere is an error naming it.
pub fn runtime_deps(programs: &[PathBuf], roots: &[PathBuf]) -> Result<RuntimeDeps, ImageError> {
    let mut deps = RuntimeDeps::default();
    let mut queue: Vec<PathBuf> = programs.to_vec();
    while let Some(file) = queue.pop() {
        let data = std::fs::read(&file).map_err(|e| ImageError::io("reading", &file, e))?;
        let elf =
            Elf::parse(&data).ok_or_else(|| ImageError::Build(format!("{} is not an ELF file", file.display())))?;
        if let Some(interpreter) = elf.interpreter() {
            if deps.interpreter.is_none() {
                let name = Path::new(&interpreter)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned());
                let found = name.as_deref().and_then(|n| find_library(roots, n)).ok_or_else(|| {
                    ImageError::Build(format!(
                        "dynamic loader {interpreter} not found in the unpacked packages"
                    ))
                })?;
                deps.interpreter = Some((interpreter, found));
            }
        }
        for soname in elf.needed_libraries() {
            if deps.libraries.iter().any(|(known, _)| *known == soname) {
                continue;
            }
            let found = find_library(roots, &soname).ok_or_else(|| {
                ImageError::Build(format!(
                    "{} needs {soname}, found in none of the unpacked packages",
                    file.display()
                ))
            })?;
            deps.libraries.push((soname, found.clone()));
            queue.push(found);
        }
    }
    Ok(deps)
}
