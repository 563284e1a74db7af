//! The open files a QEMU process is handed (see `vmm::privilege` for why
//! QEMU opens nothing of Hatch's by path). All are opened by the daemon,
//! close-on-exec, and inherited only by the one QEMU they are for.

use std::fs::{File, OpenOptions};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use crate::vmm::{VmLaunch, VmmError};

const IFF_TAP: i16 = 0x0002;
const IFF_NO_PI: i16 = 0x1000;
/// QEMU uses virtio-net headers whenever the TAP offers them, as when it
/// opened the TAP itself; snapshots stay compatible either way.
const IFF_VNET_HDR: i16 = 0x4000;

#[repr(C)]
struct IfReq {
    name: [u8; 16],
    flags: i16,
    _pad: [u8; 22],
}

nix::ioctl_write_ptr_bad!(tun_set_iff, 0x4004_54ca, IfReq);

/// The descriptors of one QEMU launch and the numbers its argv names.
pub struct QemuFds {
    pub qmp: OwnedFd,
    /// The listening socket of the guest agent's port (`agent.sock`).
    pub agent: OwnedFd,
    pub serial_log: OwnedFd,
    pub kernel: OwnedFd,
    pub initrd: Option<OwnedFd>,
    pub tap: Option<OwnedFd>,
    /// Per disk, in launch order.
    pub disks: Vec<OwnedFd>,
    /// Per writable disk, a second, read-only descriptor in the same
    /// fdset: QEMU's raw driver reopens an image read-only (for its image
    /// locking) and takes from the fdset only a descriptor of that mode.
    pub disk_readers: Vec<Option<OwnedFd>>,
    /// The saved state to load, for a restore: its file, or the read end
    /// of a pipe the daemon fills.
    pub incoming: Option<OwnedFd>,
}

/// The Unix sockets the daemon binds for one QEMU.
pub struct SocketPaths {
    pub qmp: PathBuf,
    pub agent: PathBuf,
}

/// The numbers of [`QemuFds`] as QEMU's argv names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FdNumbers {
    pub qmp: RawFd,
    pub agent: RawFd,
    pub serial_log: RawFd,
    pub kernel: RawFd,
    pub initrd: Option<RawFd>,
    pub tap: Option<RawFd>,
    pub disks: Vec<RawFd>,
    pub disk_readers: Vec<Option<RawFd>>,
    pub incoming: Option<RawFd>,
}

impl QemuFds {
    pub fn numbers(&self) -> FdNumbers {
        FdNumbers {
            qmp: self.qmp.as_raw_fd(),
            agent: self.agent.as_raw_fd(),
            serial_log: self.serial_log.as_raw_fd(),
            kernel: self.kernel.as_raw_fd(),
            initrd: self.initrd.as_ref().map(AsRawFd::as_raw_fd),
            tap: self.tap.as_ref().map(AsRawFd::as_raw_fd),
            disks: self.disks.iter().map(AsRawFd::as_raw_fd).collect(),
            disk_readers: self
                .disk_readers
                .iter()
                .map(|fd| fd.as_ref().map(AsRawFd::as_raw_fd))
                .collect(),
            incoming: self.incoming.as_ref().map(AsRawFd::as_raw_fd),
        }
    }

    /// Every descriptor, for `SpawnSpec::pass_fds`.
    pub fn all(&self) -> Vec<RawFd> {
        let n = self.numbers();
        let mut all = vec![n.qmp, n.agent, n.serial_log, n.kernel];
        all.extend(n.initrd);
        all.extend(n.tap);
        all.extend(n.disks);
        all.extend(n.disk_readers.into_iter().flatten());
        all.extend(n.incoming);
        all
    }

    /// Opens everything `spec` needs. The QMP and agent sockets are bound
    /// here (the VMM user could not create them in the root-owned run
    /// directory); `sockets` are their paths.
    pub fn open(
        spec: &VmLaunch,
        kernel: &Path,
        sockets: &SocketPaths,
        netns: Option<&Path>,
        incoming: Option<OwnedFd>,
    ) -> Result<QemuFds, VmmError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| VmmError::Io { path, source }
        };
        let read = |path: &Path| File::open(path).map(OwnedFd::from).map_err(io(path));
        let listen = |path: &Path| UnixListener::bind(path).map(OwnedFd::from).map_err(io(path));
        let qmp = listen(&sockets.qmp)?;
        let agent = listen(&sockets.agent)?;
        let serial = spec.serial_log_path();
        let serial_log = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&serial)
            .map(OwnedFd::from)
            .map_err(io(&serial))?;
        let kernel = read(kernel)?;
        let initrd = spec.initrd.as_deref().map(read).transpose()?;
        let disks = spec
            .disks
            .iter()
            .map(|disk| {
                OpenOptions::new()
                    .read(true)
                    .write(!disk.read_only)
                    .open(&disk.path)
                    .map(OwnedFd::from)
                    .map_err(io(&disk.path))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let disk_readers = spec
            .disks
            .iter()
            .map(|disk| match disk.read_only {
                true => Ok(None),
                false => read(&disk.path).map(Some),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let tap = match &spec.nic {
            Some(nic) => Some(open_tap(&nic.tap_name, netns)?),
            None => None,
        };
        Ok(QemuFds {
            qmp,
            agent,
            serial_log,
            kernel,
            initrd,
            tap,
            disks,
            disk_readers,
            incoming,
        })
    }
}

/// Attaches to the existing TAP `name` (in `netns` when given: the tun
/// device binds to the namespace it is opened in, so a helper thread enters
/// it first; the rest of the daemon stays where it is).
pub fn open_tap(name: &str, netns: Option<&Path>) -> Result<OwnedFd, VmmError> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= 16 {
        return Err(VmmError::InvalidLaunch(format!(
            "TAP name {name:?} is not a valid interface name"
        )));
    }
    let mut req = IfReq {
        name: [0; 16],
        flags: IFF_TAP | IFF_NO_PI | IFF_VNET_HDR,
        _pad: [0; 22],
    };
    req.name[..bytes.len()].copy_from_slice(bytes);
    let netns: Option<PathBuf> = netns.map(Path::to_path_buf);
    let tun = PathBuf::from("/dev/net/tun");
    let attach = move || -> std::io::Result<OwnedFd> {
        if let Some(ns) = &netns {
            let file = File::open(ns)?;
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)?;
        }
        let file = OpenOptions::new().read(true).write(true).open(&tun)?;
        // SAFETY: TUNSETIFF reads one ifreq, which `req` is.
        unsafe { tun_set_iff(file.as_raw_fd(), &req) }?;
        Ok(OwnedFd::from(file))
    };
    let result = std::thread::spawn(attach)
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("TAP helper thread panicked")));
    result.map_err(|source| VmmError::Io {
        path: PathBuf::from(format!("/dev/net/tun ({name})")),
        source,
    })
}
