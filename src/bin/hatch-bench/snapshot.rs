//! `snapshot`: the time the guest is paused for a snapshot and restore
//! until running, of a 256 MiB QEMU TCG guest (the `minimal` image, no NIC,
//! no disk), Hatch's path next to QEMU's own save and load of the same
//! guest. Through the library, not the daemon: no database writes or state
//! changes are in the numbers (the `wake` row has them).
//!
//! Each round boots a fresh guest per method, waits for it to beat, saves
//! it, stops it, loads the state into a fresh QEMU and waits for the next
//! heartbeat: with QEMU's own migration stream alone (the baseline), the
//! way Hatch does it from its local hot copy (the guest waits only for the
//! save; the stream is checksummed and packed afterwards, untimed as in
//! Hatch's background pass, and checked while QEMU loads it), or the way
//! Hatch does it from the stored artefact (verified and decompressed
//! straight into QEMU's incoming migration, as when the hot copy is gone),
//! and, for comparison, from the stored artefact unpacked into a scratch
//! file first (the path Firecracker's restores take, and QEMU's did before
//! streaming). The order rotates every round.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hatch::model::Image;
use hatch::vmm::qemu::QemuHypervisor;
use hatch::vmm::{Hypervisor, VmLaunch};

use crate::guest::{self, Guest, Guests};
use crate::rows::Ctx;
use crate::stats::{millis, Comparison};
use crate::BenchError;

const MEM_MIB: u32 = 256;

pub async fn run(image: &Image, ctx: &Ctx) -> Result<Vec<Comparison>, BenchError> {
    let bench = Bench {
        hypervisor: guest::qemu_tcg()?,
        image: image.clone(),
        guests: ctx.guests.clone(),
        work_dir: ctx.work_dir.clone(),
        mem_mib: MEM_MIB,
    };
    const METHODS: [Method; 4] = [Method::Raw, Method::Hatch, Method::HatchStored, Method::HatchScratch];
    let mut samples: [Vec<Sample>; 4] = Default::default();
    for round in 1..=ctx.rounds {
        for k in 0..METHODS.len() {
            let index = (round + k) % METHODS.len();
            let sample = bench.round(METHODS[index]).await?;
            eprintln!("{}", round_line(round, METHODS[index].name(), &sample));
            samples[index].push(sample);
        }
    }
    let [raw, hot, stored, scratch] = samples;
    type Pick = fn(&Sample) -> f64;
    let lines: [(Option<&'static str>, &str, &[Sample], Pick); 5] = [
        (Some("snapshot_ratio"), "snapshot: guest paused and saved", &hot, |s| {
            millis(s.snapshot)
        }),
        (
            Some("restore_ratio"),
            "restore until running, from the hot copy",
            &hot,
            |s| millis(s.resumed),
        ),
        (None, "restore until running, from the stored artefact", &stored, |s| {
            millis(s.resumed)
        }),
        (
            None,
            "restore until running, from the stored artefact unpacked to a scratch file first",
            &scratch,
            |s| millis(s.resumed),
        ),
        (None, "restore until the next heartbeat, from the hot copy", &hot, |s| {
            millis(s.heartbeat)
        }),
    ];
    Ok(lines
        .into_iter()
        .map(|(key, label, hatch, pick)| {
            let mut line = Comparison::new(key, label, "ms", "qemu save/load");
            for (h, b) in hatch.iter().zip(&raw) {
                line.push(pick(h), pick(b));
            }
            line
        })
        .collect())
}

fn round_line(round: usize, method: &str, s: &Sample) -> String {
    let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    format!(
        "round {round} {method:>12}: snapshot {:.0} ms, running after {:.0} ms, heartbeat after {:.0} ms, state {:.1} MiB, stored {:.1} MiB",
        millis(s.snapshot),
        millis(s.resumed),
        millis(s.heartbeat),
        mib(s.state_bytes),
        mib(s.stored_bytes),
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// QEMU's own save (`migrate` to a file) and load (`-incoming`).
    Raw,
    /// Hatch from its hot copy: the same save; the stream's checksum
    /// (XXH3-128) and the packed artefact are made after the guest is
    /// stopped (Hatch's background pass, not timed); the checksum is
    /// checked while QEMU loads the stream, and the guest resumes after.
    Hatch,
    /// Hatch from the stored artefact: the same save, then (timed, as
    /// restore needs it) the artefact read, verified and decompressed
    /// straight into QEMU's incoming migration.
    HatchStored,
    /// As `HatchStored`, but the artefact is first verified and unpacked
    /// into a scratch file, which QEMU then loads.
    HatchScratch,
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::Raw => "raw",
            Method::Hatch => "hatch",
            Method::HatchStored => "hatch-stored",
            Method::HatchScratch => "hatch-scratch",
        }
    }
}

/// What one round measured.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// Pause + save: what the guest waits for.
    pub snapshot: Duration,
    /// (Hatch: checksum check or unpack +) a fresh QEMU loading the state,
    /// until it runs.
    pub resumed: Duration,
    /// The same, until the guest prints its next heartbeat line.
    pub heartbeat: Duration,
    /// Size of QEMU's migration stream.
    pub state_bytes: u64,
    /// What would be kept on disk: the stream itself, or Hatch's artefact.
    pub stored_bytes: u64,
}

/// Everything a round needs.
pub struct Bench {
    pub hypervisor: QemuHypervisor,
    pub image: Image,
    pub guests: Guests,
    pub work_dir: PathBuf,
    pub mem_mib: u32,
}

impl Bench {
    /// Runs one round in its own temporary directory; on failure every
    /// QEMU is stopped before that directory goes away.
    pub async fn round(&self, method: Method) -> Result<Sample, BenchError> {
        let dir = tempfile::Builder::new()
            .prefix("hatch-bench-snapshot-")
            .tempdir_in(&self.work_dir)
            .map_err(BenchError::io(format!(
                "creating a directory in {}",
                self.work_dir.display()
            )))?;
        let result = self.measure(method, dir.path()).await;
        if result.is_err() {
            self.guests.stop_all().await;
        }
        result
    }

    async fn measure(&self, method: Method, dir: &Path) -> Result<Sample, BenchError> {
        let vm_id = format!("bench-{}", method.name());
        let spec = guest::launch_spec(&self.image, &vm_id, &dir.join("run"), self.mem_mib);
        let snapshot_dir = dir.join("snapshot");

        let booted = self.boot(&spec).await?;
        let started = Instant::now();
        let files = booted.handle.save_snapshot(&snapshot_dir).await?;
        let snapshot = started.elapsed();
        self.guests.stop(booted).await;

        // Hatch's background pass, untimed: checksum and pack.
        let state_bytes = file_len(&files.state)?;
        let (stored_bytes, hot_checksum, artefact) = match method {
            Method::Raw => (state_bytes, None, None),
            Method::Hatch | Method::HatchStored | Method::HatchScratch => {
                let checksum = hatch::orch::hot_checksums(&files).await?;
                let path = snapshot_dir.join("vmstate.zst");
                let info = hatch::snapshot::pack(&files.state, &path, Default::default()).await?;
                (info.compressed_bytes, Some(checksum), Some((info, path)))
            }
        };
        if let (Method::HatchStored | Method::HatchScratch, Some(_)) = (method, &artefact) {
            // Only the artefact is left; restore starts from it alone.
            remove(&files.state)?;
        }

        let from = guest::serial_len(&spec);
        let started = Instant::now();
        let restored = match (method, &artefact) {
            (Method::HatchStored, Some((info, path))) => {
                // As a restore from the store loads it: read, checked and
                // decompressed straight into QEMU's incoming migration.
                let source = std::fs::File::open(path).map_err(BenchError::io("opening the artefact"))?;
                hatch::orch::restore_streamed(&self.hypervisor, &spec, Box::new(source), info, || Ok(()))
                    .await
                    .map_err(|e| BenchError::Hatch(e.to_string()))?
            }
            (Method::HatchScratch, Some((info, path))) => {
                let source = std::fs::File::open(path).map_err(BenchError::io("opening the artefact"))?;
                hatch::snapshot::unpack_from(Box::new(source), info, &files.state, hatch::snapshot::Keep::Scratch)
                    .await?;
                self.hypervisor.restore(&spec, &files).await?
            }
            (Method::Hatch, _) => {
                // As a restore from the hot copy: its checksums verified
                // while QEMU loads it, the guest resumed once they match.
                let sums = hot_checksum.ok_or_else(|| BenchError::Hatch("the hot copy has no checksums".into()))?;
                hatch::orch::restore_hot(&self.hypervisor, &spec, &files, &sums)
                    .await
                    .map_err(|e| BenchError::Hatch(e.to_string()))?
                    .map_err(|damage| BenchError::Hatch(format!("the hot copy changed: {damage:?}")))?
            }
            _ => self.hypervisor.restore(&spec, &files).await?,
        };
        let resumed = started.elapsed();
        let restored = self.guests.register(restored).await;
        guest::wait_for_heartbeat(&spec, from).await?;
        let heartbeat = started.elapsed();
        self.guests.stop(restored).await;

        Ok(Sample {
            snapshot,
            resumed,
            heartbeat,
            state_bytes,
            stored_bytes,
        })
    }

    /// Launches a guest and waits until it has booted and beats.
    async fn boot(&self, spec: &VmLaunch) -> Result<Guest, BenchError> {
        let handle = self.hypervisor.launch(spec).await?;
        let booted = self.guests.register(handle).await;
        guest::wait_until_booted(spec).await?;
        Ok(booted)
    }
}

fn file_len(path: &Path) -> Result<u64, BenchError> {
    std::fs::metadata(path)
        .map(|m| m.len())
        .map_err(|source| BenchError::Io {
            context: format!("reading the size of {}", path.display()),
            source,
        })
}

fn remove(path: &Path) -> Result<(), BenchError> {
    std::fs::remove_file(path).map_err(|source| BenchError::Io {
        context: format!("removing {}", path.display()),
        source,
    })
}
