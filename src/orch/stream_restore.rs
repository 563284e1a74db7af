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
/// Errors: when the VMM failed and so stopped reading (the stream then
/// ends on a broken pipe), the VMM's own error; otherwise the stream's (a
/// damaged artefact is [`OrchError::Corrupt`], whatever the VMM made of the
/// damaged bytes; a store that failed mid-read is that failure).
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
        (Ok(()), Ok(handle)) => match before_resume() {
            Ok(()) => return resume_verified(handle).await,
            Err(error) => {
                kill(handle.as_ref()).await;
                error
            }
        },
        (Ok(()), Err(vmm)) => vmm.into(),
        (Err(stream), Err(vmm)) if reader_went_away(&stream) => vmm.into(),
        (Err(stream), loaded) => {
            if let Ok(handle) = loaded {
                kill(handle.as_ref()).await;
            }
            stream.into()
        }
    };
    Err(error)
}

/// Resumes a guest whose saved state has been verified; a VMM that cannot
/// resume is stopped.
pub(super) async fn resume_verified(handle: Box<dyn VmHandle>) -> Result<Box<dyn VmHandle>, OrchError> {
    match handle.resume().await {
        Ok(()) => Ok(handle),
        Err(error) => {
            kill(handle.as_ref()).await;
            Err(error.into())
        }
    }
}

/// The stream stopped because nobody read it any more (the VMM is gone),
/// not because of the artefact or the store.
fn reader_went_away(error: &SnapshotError) -> bool {
    matches!(error, SnapshotError::Io { source, .. } if source.kind() == std::io::ErrorKind::BrokenPipe)
}

/// Ends a VMM whose guest must not run (it is paused and never resumed).
pub(super) async fn kill(handle: &dyn VmHandle) {
    handle.stop(Duration::ZERO).await;
}

#[cfg(test)]
mod tests {
    use std::io::{self, Read};

    use super::*;
    use crate::snapshot::{pack, Compression};

    /// A store object that fails after its first bytes (a download cut off).
    struct FailingObject(Vec<u8>);

    impl Read for FailingObject {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.0.is_empty() {
                return Err(io::Error::new(io::ErrorKind::ConnectionReset, "the download broke off"));
            }
            let n = buf.len().min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0.drain(..n);
            Ok(n)
        }
    }

    /// Streams a packed artefact from `source` into a pipe whose reader is
    /// dropped at once or read to the end.
    async fn stream_error(source: impl FnOnce(&std::path::Path) -> ObjectReader, keep_reader: bool) -> SnapshotError {
        let dir = tempfile::tempdir().unwrap();
        let (plain, packed) = (dir.path().join("state"), dir.path().join("state.zst"));
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&plain, data).unwrap();
        let info = pack(&plain, &packed, Compression::default()).await.unwrap();
        let (reader, writer) = nix::unistd::pipe().unwrap();
        let draining = keep_reader.then(|| {
            std::thread::spawn(move || {
                let _ = io::copy(&mut File::from(reader), &mut io::sink());
            })
        });
        let result = snapshot::stream_to(source(&packed), &info, File::from(writer)).await;
        if let Some(draining) = draining {
            draining.join().unwrap();
        }
        result.expect_err("the stream was meant to fail")
    }

    #[tokio::test]
    async fn only_a_reader_that_went_away_makes_the_vmm_error_the_answer() {
        let gone = stream_error(|packed| Box::new(File::open(packed).unwrap()), false).await;
        assert!(reader_went_away(&gone), "{gone:?}");
        let cut_off = stream_error(
            |packed| {
                let bytes = std::fs::read(packed).unwrap();
                Box::new(FailingObject(bytes[..bytes.len() / 2].to_vec()))
            },
            true,
        )
        .await;
        assert!(!reader_went_away(&cut_off), "{cut_off:?}");
        assert!(cut_off.to_string().contains("reading"), "{cut_off}");
    }
}
