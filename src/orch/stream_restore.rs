//! Restoring from a stored artefact without a scratch copy: the state is
//! read from the snapshot store, checked and decompressed in one pass and
//! written into a pipe that the fresh VMM loads from as it arrives (QEMU's
//! incoming migration), so decompression and loading overlap and nothing
//! is written to disk only to be deleted. The guest stays paused until
//! every stored byte has matched the record; a damaged artefact kills the
//! VMM before the guest ever ran.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::time::Duration;

use nix::fcntl::{fcntl, FcntlArg, OFlag};

use crate::snapshot::{self, ArtefactInfo, ObjectReader, SnapshotError};
use crate::vmm::{Hypervisor, VmHandle, VmLaunch};

use super::OrchError;

/// Lets zstd run this far ahead of the VMM's loader (the default pipe
/// holds 64 KiB).
const PIPE_BYTES: i32 = 1 << 20;

/// Loads the state artefact `state`, read from `source`, into a fresh VMM
/// for `spec` (the hypervisor must [`Hypervisor::loads_streamed_state`])
/// and, once the artefact is verified, runs `before_resume` (e.g. gives the
/// saved disk the VMM has open its final name) and resumes the guest.
///
/// Errors: a damaged artefact is [`OrchError::Corrupt`] (whatever the VMM
/// made of the damaged bytes); otherwise the VMM's own error comes first,
/// as a VMM that stopped reading also stops the stream.
pub async fn restore_streamed(
    hypervisor: &dyn Hypervisor,
    spec: &VmLaunch,
    source: ObjectReader,
    state: &ArtefactInfo,
    before_resume: impl FnOnce() -> Result<(), OrchError>,
) -> Result<Box<dyn VmHandle>, OrchError> {
    let (reader, writer) = nix::unistd::pipe2(OFlag::O_CLOEXEC)
        .map_err(|e| OrchError::Internal(format!("creating the pipe for the incoming state: {e}")))?;
    // Best effort: a smaller pipe is only slower.
    let _ = fcntl(writer.as_raw_fd(), FcntlArg::F_SETPIPE_SZ(PIPE_BYTES));
    let (written, loaded) = tokio::join!(
        snapshot::stream_to(source, state, File::from(writer)),
        hypervisor.restore_paused_from_stream(spec, reader),
    );
    let error: OrchError = match (written, loaded) {
        (Ok(()), Ok(handle)) => {
            let resumed = match before_resume() {
                Ok(()) => handle.resume().await.map_err(OrchError::from),
                Err(error) => Err(error),
            };
            match resumed {
                Ok(()) => return Ok(handle),
                Err(error) => {
                    kill(handle.as_ref()).await;
                    error
                }
            }
        }
        (Err(corrupt @ SnapshotError::Corrupt { .. }), loaded) => {
            if let Ok(handle) = loaded {
                kill(handle.as_ref()).await;
            }
            corrupt.into()
        }
        (_, Err(vmm)) => vmm.into(),
        (Err(stream), Ok(handle)) => {
            kill(handle.as_ref()).await;
            stream.into()
        }
    };
    Err(error)
}

/// Ends a VMM whose guest must not run (it is paused and never resumed).
async fn kill(handle: &dyn VmHandle) {
    handle.stop(Duration::ZERO).await;
}
