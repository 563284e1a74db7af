//! This host's id: made once (random), kept in `<data dir>/host-id` and
//! reused on every later start. It is the default key prefix of the host's
//! artefacts in a bucket that several hosts share (HATCH_S3_PREFIX).

use std::fs;
use std::io::{self, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use super::{validate_key, SnapshotError};
use crate::sys::atomic_file::PARTIAL_SUFFIX;

/// `<data dir>/host-id`
pub fn host_id_path(data_dir: &Path) -> PathBuf {
    data_dir.join("host-id")
}

/// The stored id, if one was made; never creates it (for `hatch doctor`).
pub fn read_host_id(data_dir: &Path) -> Result<Option<String>, SnapshotError> {
    let path = host_id_path(data_dir);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(SnapshotError::io(format!("reading {}", path.display()), e)),
    };
    let id = text.trim();
    if validate_key(id).is_err() || id.contains('/') {
        let reason = format!("{id:?} is not a host id; restore the file or set HATCH_S3_PREFIX");
        return Err(SnapshotError::io(
            format!("reading {}", path.display()),
            io::Error::new(io::ErrorKind::InvalidData, reason),
        ));
    }
    Ok(Some(id.to_string()))
}

/// The stored id, made on first use: `host-<random>`, written atomically
/// with mode 0600. Two processes racing here end up with the same id (the
/// first file to land wins; the other is read back).
pub fn host_id(data_dir: &Path) -> Result<String, SnapshotError> {
    if let Some(id) = read_host_id(data_dir)? {
        return Ok(id);
    }
    let path = host_id_path(data_dir);
    let context = || format!("writing {}", path.display());
    fs::create_dir_all(data_dir).map_err(|e| SnapshotError::io(context(), e))?;
    let id = crate::model::random_id("host", 12);
    let mut temp = tempfile::Builder::new()
        .prefix(".host-id.")
        .suffix(PARTIAL_SUFFIX)
        .permissions(fs::Permissions::from_mode(0o600))
        .tempfile_in(data_dir)
        .map_err(|e| SnapshotError::io(context(), e))?;
    writeln!(temp, "{id}").map_err(|e| SnapshotError::io(context(), e))?;
    temp.as_file().sync_all().map_err(|e| SnapshotError::io(context(), e))?;
    match temp.persist_noclobber(&path) {
        Ok(_) => {
            fs::File::open(data_dir)
                .and_then(|dir| dir.sync_all())
                .map_err(|e| SnapshotError::io(context(), e))?;
            Ok(id)
        }
        Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => {
            read_host_id(data_dir)?.ok_or_else(|| SnapshotError::io(context(), e.error))
        }
        Err(e) => Err(SnapshotError::io(context(), e.error)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_id_is_made_once_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        assert_eq!(read_host_id(&data).unwrap(), None);

        let id = host_id(&data).unwrap();
        assert!(id.starts_with("host-") && id.len() == "host-".len() + 12, "{id}");
        assert!(validate_key(&id).is_ok());
        let file = host_id_path(&data);
        assert_eq!(fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(fs::read_to_string(&file).unwrap(), format!("{id}\n"));

        assert_eq!(host_id(&data).unwrap(), id, "reused on a later start");
        assert_eq!(read_host_id(&data).unwrap().as_deref(), Some(id.as_str()));
        let names: Vec<_> = fs::read_dir(&data).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["host-id"], "no temporary file is left");

        let other = tempfile::tempdir().unwrap();
        assert_ne!(host_id(other.path()).unwrap(), id, "each host makes its own");
    }

    #[test]
    fn a_damaged_host_id_is_reported_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(host_id_path(dir.path()), "../escape\n").unwrap();
        let error = host_id(dir.path()).unwrap_err();
        assert!(error.to_string().contains("HATCH_S3_PREFIX"), "{error}");
        assert_eq!(fs::read_to_string(host_id_path(dir.path())).unwrap(), "../escape\n");
    }
}
