//! The recognition rules on small hand-made files.
use std::io::Write;

use super::*;
use crate::image::elf::XEN_ELFNOTE_PHYS32_ENTRY;

fn file_with(bytes: &[u8]) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().expect("temp file");
    f.write_all(bytes).expect("write");
    f
}

fn inspect(bytes: &[u8]) -> Option<KernelInfo> {
    let f = file_with(bytes);
    inspect_kernel_file(f.as_file()).expect("readable")
}

/// An ELF64 header for `machine` with one PT_NOTE program header pointing
/// at `note`.
fn elf_with_note(machine: u16, note: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; 64 + 56];
    b[..4].copy_from_slice(ELF_MAGIC);
    b[4] = 2;
    b[5] = 1;
    b[0x12..0x14].copy_from_slice(&machine.to_le_bytes());
    b[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
    b[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
    b[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes());
    b[64..68].copy_from_slice(&PT_NOTE.to_le_bytes());
    b[64 + 8..64 + 16].copy_from_slice(&120u64.to_le_bytes());
    b[64 + 32..64 + 40].copy_from_slice(&(note.len() as u64).to_le_bytes());
    b.extend_from_slice(note);
    b
}

fn note(name: &[u8], kind: u32, desc: &[u8]) -> Vec<u8> {
    let mut n = Vec::new();
    n.extend_from_slice(&(name.len() as u32).to_le_bytes());
    n.extend_from_slice(&(desc.len() as u32).to_le_bytes());
    n.extend_from_slice(&kind.to_le_bytes());
    n.extend_from_slice(name);
    n.resize((n.len() + 3) & !3, 0);
    n.extend_from_slice(desc);
    n.resize((n.len() + 3) & !3, 0);
    n
}

fn bzimage_head() -> Vec<u8> {
    let mut b = vec![0u8; 0x300];
    b[0x1fe] = 0x55;
    b[0x1ff] = 0xaa;
    b[0x202..0x206].copy_from_slice(b"HdrS");
    b
}

#[test]
fn elf_with_pvh_note_is_recognised() {
    let mut notes = note(b"GNU\0", 3, &[1, 2, 3, 4]);
    notes.extend(note(b"Xen\0", XEN_ELFNOTE_PHYS32_ENTRY, &[0, 0, 0, 1]));
    assert_eq!(
        inspect(&elf_with_note(EM_X86_64, &notes)),
        Some(KernelInfo {
            format: KernelFormat::Elf,
            pvh_entry: true
        })
    );
}

#[test]
fn elf_without_pvh_note_is_plain_elf() {
    let info = inspect(&elf_with_note(EM_X86_64, &note(b"GNU\0", 3, &[0; 4])));
    assert_eq!(
        info,
        Some(KernelInfo {
            format: KernelFormat::Elf,
            pvh_entry: false
        })
    );
}

#[test]
fn elf_for_another_machine_is_no_kernel() {
    const EM_AARCH64: u16 = 183;
    let notes = note(b"Xen\0", XEN_ELFNOTE_PHYS32_ENTRY, &[0; 4]);
    assert_eq!(inspect(&elf_with_note(EM_AARCH64, &notes)), None);
    assert_eq!(kernel_format_of(&elf_with_note(EM_AARCH64, &notes)), None);
}

#[test]
fn huge_program_header_table_is_not_read() {
    // 65535 entries of 65535 bytes: 4 GiB the file does not have.
    let mut elf = elf_with_note(EM_X86_64, &note(b"Xen\0", XEN_ELFNOTE_PHYS32_ENTRY, &[0; 4]));
    elf[0x36..0x38].copy_from_slice(&u16::MAX.to_le_bytes());
    elf[0x38..0x3a].copy_from_slice(&u16::MAX.to_le_bytes());
    assert_eq!(
        inspect(&elf),
        Some(KernelInfo {
            format: KernelFormat::Elf,
            pvh_entry: false
        })
    );
}

#[test]
fn bzimage_is_recognised() {
    let head = bzimage_head();
    assert_eq!(kernel_format_of(&head), Some(KernelFormat::Bzimage));
    assert_eq!(
        inspect(&head),
        Some(KernelInfo {
            format: KernelFormat::Bzimage,
            pvh_entry: false
        })
    );
    // The boot flag alone is any boot sector, not a kernel.
    let mut mbr = head;
    mbr[0x202..0x206].copy_from_slice(b"\0\0\0\0");
    assert_eq!(inspect(&mbr), None);
}

#[test]
fn garbage_is_no_kernel() {
    assert_eq!(inspect(b"#!/bin/sh\necho not a kernel\n"), None);
    assert_eq!(inspect(b""), None);
}

#[test]
fn initrd_starts_are_told_apart() {
    assert_eq!(initrd_start_of(b"070701000000"), Some(InitrdStart::Cpio));
    assert_eq!(initrd_start_of(b"070702000000"), Some(InitrdStart::Cpio));
    assert_eq!(initrd_start_of(&[0x1f, 0x8b, 8, 0]), Some(InitrdStart::Gzip));
    assert_eq!(initrd_start_of(&[0x28, 0xb5, 0x2f, 0xfd]), Some(InitrdStart::Zstd));
    assert_eq!(initrd_start_of(b"\xfd7zXZ\0"), Some(InitrdStart::OtherCompression));
    assert_eq!(initrd_start_of(b"BZh91AY"), Some(InitrdStart::OtherCompression));
    // The odc cpio format, which Linux does not unpack, and plain text.
    assert_eq!(initrd_start_of(b"070707000000"), None);
    assert_eq!(initrd_start_of(b"hello world"), None);
}
