//! Guest images for tests: `minimal_image()` / `debian_image()` build once
//! into a directory shared by all test binaries (the build cache makes
//! later calls cheap, and its file locks make parallel binaries safe), with
//! the static hatch-agent of `agent_bin()`, plus a small QEMU TCG runner to
//! boot them and watch the serial console.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

use hatch::image::{build_image, BuildEnv, BuildRequest};
use hatch::model::{Image, ImageProfile};
use tokio::sync::OnceCell;

use super::netns::run_ok;

/// `$HATCH_TEST_IMAGE_DIR`, else `<cargo target tmpdir>/hatch-images`.
pub fn shared_dir() -> PathBuf {
    std::env::var_os("HATCH_TEST_IMAGE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("hatch-images"))
}

/// The static hatch-agent images get: `$HATCH_AGENT_BIN` (scripts/test
/// builds it and sets it), else built here once with the command
/// scripts/test uses, so a lone `cargo test` works too.
pub fn agent_bin() -> PathBuf {
    static AGENT: OnceLock<PathBuf> = OnceLock::new();
    AGENT
        .get_or_init(|| {
            if let Some(path) = std::env::var_os("HATCH_AGENT_BIN").filter(|p| !p.is_empty()) {
                return PathBuf::from(path);
            }
            let workspace = Path::new(env!("CARGO_MANIFEST_DIR"));
            let target_dir = workspace.join("target/agent");
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let status = Command::new(cargo)
                .current_dir(workspace)
                .env("RUSTFLAGS", "-C target-feature=+crt-static")
                .args(["build", "--quiet", "-p", "hatch-agent", "--release"])
                .args(["--target", "x86_64-unknown-linux-gnu", "--target-dir"])
                .arg(&target_dir)
                .status()
                .expect("run cargo to build hatch-agent");
            assert!(status.success(), "building the static hatch-agent failed");
            target_dir.join("x86_64-unknown-linux-gnu/release/hatch-agent")
        })
        .clone()
}

/// The build environment tests use (mirror override honoured).
pub fn test_build_env() -> BuildEnv {
    let dir = shared_dir();
    let mut env = BuildEnv::new(&dir);
    env.debian_mirror = std::env::var("HATCH_DEBIAN_MIRROR").ok().filter(|m| !m.is_empty());
    env.agent_bin = Some(agent_bin());
    env
}

/// Image directories from earlier runs are hard links into the cache;
/// drop those older than a day so the shared directory does not grow.
fn prune_old_images(images_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(images_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .is_some_and(|age| age > Duration::from_secs(24 * 3600));
        if old && entry.file_name().to_string_lossy().starts_with("img-") {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

async fn build(profile: ImageProfile) -> Image {
    let env = test_build_env();
    prune_old_images(&env.images_dir);
    let request = BuildRequest { profile, name: None };
    let started = Instant::now();
    let print = |event: hatch::image::ProgressEvent| {
        if event.is_tick() {
            return;
        }
        eprintln!(
            "[image {} +{:.1}s] {event}",
            profile.as_str(),
            started.elapsed().as_secs_f64()
        )
    };
    build_image(&request, &env, &print)
        .await
        .unwrap_or_else(|e| panic!("building the {} image failed: {e}", profile.as_str()))
}

/// A fresh `minimal` build named `name` in `env`, and the progress it reported.
pub async fn build_minimal_recording(env: &BuildEnv, name: &str) -> (Image, Vec<hatch::image::ProgressEvent>) {
    let events = std::sync::Mutex::new(Vec::new());
    let record = |event: hatch::image::ProgressEvent| events.lock().unwrap().push(event);
    let request = BuildRequest {
        profile: ImageProfile::Minimal,
        name: Some(name.into()),
    };
    let image = build_image(&request, env, &record).await.expect("build");
    (image, events.into_inner().unwrap())
}

/// The `minimal` image (kernel + initramfs), built once per test binary.
pub async fn minimal_image() -> Image {
    static IMAGE: OnceCell<Image> = OnceCell::const_new();
    IMAGE.get_or_init(|| build(ImageProfile::Minimal)).await.clone()
}

/// The `debian` image (kernel + initrd + ext4 rootfs), built once per test binary.
pub async fn debian_image() -> Image {
    static IMAGE: OnceCell<Image> = OnceCell::const_new();
    IMAGE.get_or_init(|| build(ImageProfile::Debian)).await.clone()
}

/// The host TSC frequency in kHz, which TCG guests need on their command
/// line (`tsc_early_khz`) to boot reliably.
pub fn host_tsc_khz() -> u64 {
    hatch::vmm::host::tsc_khz().expect("cpu MHz in /proc/cpuinfo")
}

/// A virtio-blk disk for [`TcgGuest::boot`].
pub struct Disk {
    pub path: PathBuf,
    pub read_only: bool,
}

/// A QEMU microvm (TCG) guest, killed when dropped.
pub struct TcgGuest {
    child: Child,
    pub serial_log: PathBuf,
    qmp_socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl TcgGuest {
    /// Boots `kernel` + `initrd` with `extra_args` appended to the
    /// standard command line. `ssh_forward` (namespace name, port) runs
    /// QEMU inside that namespace with user-mode networking forwarding
    /// `127.0.0.1:<port>` to guest port 22.
    pub fn boot(
        kernel: &Path,
        initrd: &Path,
        extra_args: &str,
        disks: &[Disk],
        ssh_forward: Option<(&str, u16)>,
    ) -> TcgGuest {
        Self::boot_with(kernel, initrd, extra_args, disks, ssh_forward, false)
    }

    /// [`TcgGuest::boot`], with `agent_port` a virtio-serial port named
    /// `org.hatch.agent.0` (as Hatch gives QEMU guests for hatch-agent)
    /// whose host end is a socket nobody connects to.
    pub fn boot_with(
        kernel: &Path,
        initrd: &Path,
        extra_args: &str,
        disks: &[Disk],
        ssh_forward: Option<(&str, u16)>,
        agent_port: bool,
    ) -> TcgGuest {
        let dir = tempfile::tempdir().expect("tempdir");
        let serial_log = dir.path().join("serial.log");
        let qmp_socket = dir.path().join("qmp.sock");
        let append = format!(
            "console=ttyS0 reboot=k panic=1 tsc_early_khz={} {extra_args}",
            host_tsc_khz()
        );
        let mut args: Vec<String> = [
            "-M",
            "microvm,accel=tcg,acpi=on",
            "-cpu",
            "max",
            "-m",
            "512",
            "-smp",
            "1",
            "-nodefaults",
            "-no-user-config",
            "-nographic",
            "-no-reboot",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(["-serial".into(), format!("file:{}", serial_log.display())]);
        args.extend([
            "-qmp".into(),
            format!("unix:{},server=on,wait=off", qmp_socket.display()),
        ]);
        args.extend([
            "-kernel".into(),
            kernel.display().to_string(),
            "-initrd".into(),
            initrd.display().to_string(),
        ]);
        args.extend(["-append".into(), append]);
        for (index, disk) in disks.iter().enumerate() {
            let readonly = if disk.read_only { ",readonly=on" } else { "" };
            args.extend([
                "-drive".into(),
                format!(
                    "if=none,id=disk{index},format=raw,file={}{readonly}",
                    disk.path.display()
                ),
                "-device".into(),
                format!("virtio-blk-device,drive=disk{index}"),
            ]);
        }
        if agent_port {
            args.extend([
                "-chardev".into(),
                format!(
                    "socket,id=agent,path={},server=on,wait=off",
                    dir.path().join("agent.sock").display()
                ),
                "-device".into(),
                "virtio-serial-device".into(),
                "-device".into(),
                "virtserialport,chardev=agent,name=org.hatch.agent.0".into(),
            ]);
        }
        let mut command = match ssh_forward {
            Some((netns, port)) => {
                args.extend([
                    "-netdev".into(),
                    format!("user,id=net0,hostfwd=tcp:127.0.0.1:{port}-:22"),
                    "-device".into(),
                    "virtio-net-device,netdev=net0".into(),
                ]);
                let mut command = Command::new("ip");
                command.args(["netns", "exec", netns, "qemu-system-x86_64"]);
                command
            }
            None => Command::new("qemu-system-x86_64"),
        };
        let child = command
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start qemu-system-x86_64");
        TcgGuest {
            child,
            serial_log,
            qmp_socket,
            _dir: dir,
        }
    }

    pub fn serial(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.serial_log).unwrap_or_default()).into_owned()
    }

    /// Waits until the serial console shows `marker`; panics with the log
    /// tail on timeout or if QEMU exits first.
    pub async fn wait_for(&mut self, marker: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if self.serial().contains(marker) {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("QEMU exited ({status}) before {marker:?}; serial:\n{}", self.tail());
            }
            if Instant::now() > deadline {
                panic!(
                    "no {marker:?} on the serial console within {timeout:?}; serial:\n{}",
                    self.tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub fn tail(&self) -> String {
        let serial = self.serial();
        let start = serial.len().saturating_sub(4000);
        serial.get(start..).unwrap_or(&serial).to_string()
    }

    /// Sends a QMP command (after the capabilities handshake).
    pub fn qmp(&self, command: &str) -> String {
        let stream = UnixStream::connect(&self.qmp_socket).expect("connect to QMP");
        stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        let mut reader = BufReader::new(stream.try_clone().expect("clone"));
        let mut line = String::new();
        reader.read_line(&mut line).expect("QMP greeting");
        let mut writer = stream;
        writeln!(writer, r#"{{"execute":"qmp_capabilities"}}"#).expect("qmp write");
        line.clear();
        reader.read_line(&mut line).expect("QMP capabilities reply");
        writeln!(writer, r#"{{"execute":"{command}"}}"#).expect("qmp write");
        // Asynchronous events may arrive before the command's reply.
        loop {
            line.clear();
            reader.read_line(&mut line).expect("QMP reply");
            if line.contains("\"return\"") || line.contains("\"error\"") || line.is_empty() {
                return line;
            }
        }
    }

    /// Waits for QEMU to exit by itself; its exit status, or None on timeout.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        None
    }
}

impl Drop for TcgGuest {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A NoCloud seed disk (FAT labelled CIDATA, 1 MiB) made with the
/// dosfstools and mtools programs, holding the given files.
pub fn make_seed_disk(dir: &Path, files: &[(&str, &str)]) -> PathBuf {
    let image = dir.join("seed.img");
    let image_arg = image.to_str().expect("utf-8 path");
    run_ok("mkfs.vfat", &["-n", "CIDATA", "-C", image_arg, "1024"]);
    for (name, contents) in files {
        let local = dir.join(format!("seed-{name}"));
        std::fs::write(&local, contents).expect("write seed file");
        let local_arg = local.to_str().expect("utf-8 path");
        run_ok("mcopy", &["-i", image_arg, local_arg, &format!("::{name}")]);
    }
    image
}
