//! A plain `cp --sparse=always`, the way a person copies a VM's disk.

use std::path::Path;

use crate::BenchError;

pub async fn cp_sparse(from: &Path, to: &Path) -> Result<(), BenchError> {
    let output = tokio::process::Command::new("cp")
        .arg("--sparse=always")
        .arg(from)
        .arg(to)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(BenchError::io("running cp"))?;
    if !output.status.success() {
        return Err(BenchError::Hatch(format!(
            "cp --sparse=always {} {}: {}",
            from.display(),
            to.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(())
}
