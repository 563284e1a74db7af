//! Helpers for the hypervisor backend tests: guest files, launch specs,
//! serial-log polling, process checks and the tiny hand-made ELF guests
//! used with Firecracker.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hatch::vmm::qemu::args::Accel;
use hatch::vmm::qemu::QemuHypervisor;
use hatch::vmm::{host, KernelFiles, VmLaunch};

use super::images::minimal_image;
use super::netns::TestNetns;

/// QEMU with software emulation, as on hosts without hardware virtualisation.
pub fn qemu_tcg() -> QemuHypervisor {
    let binary = hatch::sys::cmd::find_on_path("qemu-system-x86_64").expect("qemu-system-x86_64 is not installed");
    QemuHypervisor::new(
        binary,
        Accel::Tcg {
            tsc_khz: host::tsc_khz(),
        },
    )
}

/// A temporary run directory, removed at the end of the test.
pub fn run_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("hatch-vmm-test-")
        .tempdir()
        .expect("temp dir")
}

/// A launch of the `minimal` image (built through the shared test image
/// cache) with no disks and no network.
pub async fn minimal_launch(vm_id: &str, run_dir: &Path, boot_args: &str) -> VmLaunch {
    let image = minimal_image().await;
    VmLaunch {
        vm_id: vm_id.to_string(),
        vcpu_count: 1,
        mem_mib: 256,
        kernel: KernelFiles {
            elf: image.kernel_path,
            bzimage: image.bzimage_path,
        },
        initrd: Some(image.initrd_path.expect("the minimal image has an initramfs")),
        disks: Vec::new(),
        nic: None,
        boot_args: boot_args.to_string(),
        run_dir: run_dir.to_path_buf(),
    }
}

pub fn serial_log(run_dir: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(run_dir.join("serial.log")).unwrap_or_default()).into_owned()
}

/// Waits until the serial log (from byte `from` on) satisfies `check`;
/// panics with the log's tail on timeout.
pub async fn wait_for_serial<T>(
    run_dir: &Path,
    from: usize,
    timeout: Duration,
    mut check: impl FnMut(&str) -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let log = serial_log(run_dir);
        let new_part = log.get(from..).unwrap_or("");
        if let Some(found) = check(new_part) {
            return found;
        }
        if tokio::time::Instant::now() >= deadline {
            let tail = &log[log.len().saturating_sub(1500)..];
            panic!("timed out after {timeout:?} waiting on the serial console; it ends with:\n{tail}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn wait_for_marker(run_dir: &Path, marker: &str, timeout: Duration) {
    wait_for_serial(run_dir, 0, timeout, |log| log.contains(marker).then_some(())).await
}

/// Every number printed after `prefix` at the start of a line, in order.
pub fn counters(log: &str, prefix: &str) -> Vec<u64> {
    log.lines()
        .filter_map(|line| line.trim_end_matches('\r').strip_prefix(prefix))
        .filter_map(|rest| rest.trim().parse().ok())
        .collect()
}

/// Pids of live (non-zombie) processes whose command line mentions `text`.
pub fn live_processes_mentioning(text: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| hatch::sys::process::is_alive_with_marker(*pid, text))
        .collect()
}

/// Whether `pid` is a zombie (exited but not reaped).
pub fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// Waits (bounded) until no process mentions `text` any more.
pub async fn wait_no_process_mentioning(text: &str, timeout: Duration) -> Vec<u32> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let left = live_processes_mentioning(text);
        if left.is_empty() || tokio::time::Instant::now() >= deadline {
            return left;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Kills every process still mentioning the run directory when a test ends,
/// passed or failed, so no VMM outlives its test.
pub struct KillLeftovers(pub PathBuf);

impl Drop for KillLeftovers {
    fn drop(&mut self) {
        for pid in live_processes_mentioning(&self.0.display().to_string()) {
            hatch::sys::process::signal(pid, nix::sys::signal::Signal::SIGKILL);
        }
    }
}

/// The Firecracker binary from HATCH_FIRECRACKER_BIN or PATH. Without one,
/// the test fails under CI (`CI` set: it must never pass by skipping) and
/// elsewhere is skipped with a visible message.
pub fn firecracker_bin_or_skip(test: &str) -> Option<PathBuf> {
    reference_binary_or_skip(test, "HATCH_FIRECRACKER_BIN", "firecracker")
}

/// The Firecracker jailer from HATCH_JAILER_BIN (scripts/test points it at
/// ../shared/bin/jailer) or PATH, as [`firecracker_bin_or_skip`].
pub fn jailer_bin_or_skip(test: &str) -> Option<PathBuf> {
    reference_binary_or_skip(test, "HATCH_JAILER_BIN", "jailer")
}

fn reference_binary_or_skip(test: &str, variable: &str, program: &str) -> Option<PathBuf> {
    let found = match std::env::var_os(variable) {
        Some(path) => Some(PathBuf::from(path)).filter(|p| p.is_file()),
        None => hatch::sys::cmd::find_on_path(program),
    };
    if found.is_none() {
        let why = format!("no {program} binary (set {variable} or put {program} on PATH)");
        assert!(
            std::env::var_os("CI").is_none(),
            "{test}: {why}; CI must run the Firecracker tests"
        );
        eprintln!("SKIPPED {test}: {why}");
    }
    found
}

/// Where the tiny guests are loaded and start (Firecracker needs >= 1 MiB).
const GUEST_LOAD_ADDR: u64 = 0x10_0000;
const ELF_HEADER_LEN: usize = 64;
const PROGRAM_HEADER_LEN: usize = 56;

/// Wraps 64-bit code in an ELF executable with one loadable segment
/// (readable, writable, executable) that maps the whole file at 1 MiB; the
/// entry point is the first byte after the headers.
fn elf_with_code(code: &[u8]) -> Vec<u8> {
    let headers = ELF_HEADER_LEN + PROGRAM_HEADER_LEN;
    let total = (headers + code.len()) as u64;
    let mut elf = Vec::with_capacity(total as usize);
    elf.extend_from_slice(b"\x7fELF");
    elf.extend_from_slice(&[2, 1, 1, 0]); // 64-bit, little endian, version 1, SysV ABI
    elf.extend_from_slice(&[0; 8]);
    elf.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    elf.extend_from_slice(&0x3eu16.to_le_bytes()); // EM_X86_64
    elf.extend_from_slice(&1u32.to_le_bytes());
    elf.extend_from_slice(&(GUEST_LOAD_ADDR + headers as u64).to_le_bytes()); // e_entry
    elf.extend_from_slice(&(ELF_HEADER_LEN as u64).to_le_bytes()); // e_phoff
    elf.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
    elf.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    elf.extend_from_slice(&(ELF_HEADER_LEN as u16).to_le_bytes());
    elf.extend_from_slice(&(PROGRAM_HEADER_LEN as u16).to_le_bytes());
    elf.extend_from_slice(&1u16.to_le_bytes()); // e_phnum
    elf.extend_from_slice(&[0; 6]); // no section headers
    elf.extend_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    elf.extend_from_slice(&7u32.to_le_bytes()); // PF_R | PF_W | PF_X
    elf.extend_from_slice(&0u64.to_le_bytes()); // p_offset
    elf.extend_from_slice(&GUEST_LOAD_ADDR.to_le_bytes()); // p_vaddr
    elf.extend_from_slice(&GUEST_LOAD_ADDR.to_le_bytes()); // p_paddr
    elf.extend_from_slice(&total.to_le_bytes()); // p_filesz
    elf.extend_from_slice(&total.to_le_bytes()); // p_memsz
    elf.extend_from_slice(&0x1000u64.to_le_bytes()); // p_align
    assert_eq!(elf.len(), headers);
    elf.extend_from_slice(code);
    elf
}

/// What the marker guest prints before resetting the machine.
pub const TINY_GUEST_MARKER: &str = "hatch-fc-guest: ready";

/// Prints [`TINY_GUEST_MARKER`] on COM1, then resets through the i8042
/// controller (Firecracker then exits with code 0).
pub fn marker_guest() -> Vec<u8> {
    let mut code = vec![
        0x66, 0xba, 0xf8, 0x03, //             mov dx, 0x3f8        ; COM1
        0x48, 0x8d, 0x35, 0x0e, 0x00, 0x00, 0x00, // lea rsi, [rip+0x0e] ; the message
        0xb9, 0x16, 0x00, 0x00, 0x00, //       mov ecx, 22
        0xf3, 0x6e, //                         rep outsb
        0xb0, 0xfe, //                         mov al, 0xfe         ; i8042 "reset CPU"
        0xe6, 0x64, //                         out 0x64, al
        0xf4, //                         halt: hlt
        0xeb, 0xfd, //                         jmp halt
    ];
    code.extend_from_slice(TINY_GUEST_MARKER.as_bytes());
    code.push(b'\n');
    assert_eq!(code.len(), 0x19 + 22);
    elf_with_code(&code)
}

/// Each line the counter guest prints: this prefix and a decimal number.
pub const COUNTER_PREFIX: &str = "hatch-fc-count ";

/// Counts forever: increments a counter kept in guest RAM and prints it on
/// COM1, then spins `delay_polls` times polling the i8042 status port. A key
/// press (Firecracker's SendCtrlAltDel) makes it reset the machine, so a
/// graceful stop really ends the VM.
pub fn counter_guest(delay_polls: u32) -> Vec<u8> {
    let mut code = vec![
        0x66, 0xba, 0xf8, 0x03, //             start: mov dx, 0x3f8
        0x48, 0x8b, 0x05, 0x8b, 0x00, 0x00, 0x00, //  mov rax, [rip+counter]
        0x48, 0xff, 0xc0, //                          inc rax
        0x48, 0x89, 0x05, 0x81, 0x00, 0x00, 0x00, //  mov [rip+counter], rax
        0x48, 0x8d, 0x35, 0x53, 0x00, 0x00, 0x00, //  lea rsi, [rip+prefix]
        0xb9, 0x0f, 0x00, 0x00, 0x00, //              mov ecx, 15
        0xf3, 0x6e, //                                rep outsb
        0x48, 0x8d, 0x3d, 0x6c, 0x00, 0x00, 0x00, //  lea rdi, [rip+buf_end]
        0xbb, 0x0a, 0x00, 0x00, 0x00, //              mov ebx, 10
        0x31, 0xd2, //                         digit: xor edx, edx
        0x48, 0xf7, 0xf3, //                          div rbx
        0x80, 0xc2, 0x30, //                          add dl, '0'
        0x48, 0xff, 0xcf, //                          dec rdi
        0x88, 0x17, //                                mov [rdi], dl
        0x48, 0x85, 0xc0, //                          test rax, rax
        0x75, 0xee, //                                jnz digit
        0x48, 0x89, 0xfe, //                          mov rsi, rdi
        0x48, 0x8d, 0x0d, 0x4b, 0x00, 0x00, 0x00, //  lea rcx, [rip+buf_end]
        0x48, 0x29, 0xf9, //                          sub rcx, rdi
        0x66, 0xba, 0xf8, 0x03, //                    mov dx, 0x3f8
        0xf3, 0x6e, //                                rep outsb
        0xb0, 0x0a, //                                mov al, '\n'
        0xee, //                                      out dx, al
        0xb9, 0x00, 0x00, 0x00, 0x00, //              mov ecx, <delay_polls>
        0xe4, 0x64, //                          wait: in al, 0x64
        0xa8, 0x01, //                                test al, 1 ; a key is waiting
        0x75, 0x06, //                                jnz reset
        0xff, 0xc9, //                                dec ecx
        0x75, 0xf6, //                                jnz wait
        0xeb, 0x98, //                                jmp start
        0xb0, 0xfe, //                         reset: mov al, 0xfe
        0xe6, 0x64, //                                out 0x64, al
        0xf4, //                                halt: hlt
        0xeb, 0xfd, //                                jmp halt
    ];
    code[0x58..0x5c].copy_from_slice(&delay_polls.max(1).to_le_bytes());
    assert_eq!(code.len(), 0x6f, "the rip-relative offsets above assume this layout");
    code.extend_from_slice(COUNTER_PREFIX.as_bytes()); // prefix at 0x6f
    code.extend_from_slice(&[0; 24]); // digit buffer 0x7e..0x96 (buf_end)
    code.extend_from_slice(&[0; 8]); // counter at 0x96
    elf_with_code(&code)
}

/// Shows the backends' log lines in test output (captured unless it fails).
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "hatch=debug".into()))
        .with_test_writer()
        .try_init();
}

/// The TAP interfaces process `pid` holds open (from `iff:` in fdinfo).
pub fn taps_held_by(pid: u32) -> Vec<String> {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return Vec::new();
    };
    fds.filter_map(|fd| std::fs::read_to_string(fd.ok()?.path()).ok())
        .filter_map(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("iff:").map(|t| t.trim().to_string()))
        })
        .collect()
}

/// Whether process `pid` runs in the test's network namespace `netns`.
pub fn runs_in_netns(pid: u32, netns: &TestNetns) -> bool {
    use std::os::unix::fs::MetadataExt;
    let of_process = std::fs::metadata(format!("/proc/{pid}/ns/net")).map(|m| m.ino());
    let of_netns = std::fs::metadata(format!("/run/netns/{}", netns.name())).map(|m| m.ino());
    matches!((of_process, of_netns), (Ok(a), Ok(b)) if a == b)
}
