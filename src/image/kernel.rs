//! Recognising guest boot files by their content: an x86_64 ELF vmlinux
//! (and whether it has the PVH entry note) or a bzImage, and an initrd.
//! These are Hatch's only rules for that: image registration and the VMM
//! backends' launch checks (`vmm::kernel`) both call them.
//!
//! Only the parts of a file that decide are read (the first bytes, the ELF
//! program headers and note segments), so a check before every launch stays
//! cheap even for a large vmlinux.
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::elf::{notes_in, u16_at, ElfHeader, Note, ELF_MAGIC, EM_X86_64, PT_NOTE};
use super::ImageError;
use crate::model::KernelFormat;

// Linux x86 boot protocol (Documentation/arch/x86/boot.rst).
pub(super) const SETUP_SECTS: usize = 0x1f1;
const BOOT_FLAG: usize = 0x1fe;
const HEADER_MAGIC: usize = 0x202;
pub(super) const PROTOCOL_VERSION: usize = 0x206;
/// Enough of a file to tell its format: the ELF header, or the boot sector
/// and the setup header up to the protocol version.
const KERNEL_HEAD_LEN: usize = 0x210;
/// A program header table or note segment bigger than this is not a
/// kernel's; it is not read (the sizes come from the file itself).
const MAX_ELF_PART_BYTES: usize = 1 << 20;

/// What a kernel file turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelInfo {
    pub format: KernelFormat,
    /// ELF only: has the Xen PVH entry note (QEMU needs it to boot an ELF).
    pub pvh_entry: bool,
}

/// How an initrd starts: a newc cpio archive, or compressed in a way Linux
/// unpacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitrdStart {
    Cpio,
    Gzip,
    Zstd,
    /// xz, lz4 (legacy frame), bzip2 or lzma: recognised by magic only.
    OtherCompression,
}

/// The magic numbers of [`InitrdStart::OtherCompression`].
const OTHER_INITRD_MAGICS: [&[u8]; 4] = [b"\xfd7zXZ\0", b"\x02\x21\x4c\x18", b"BZh", b"\x5d\x00\x00"];

/// Whether `bytes` start a cpio archive Linux unpacks ("newc", with or
/// without checksums; the old binary and odc formats are refused).
pub fn is_newc_cpio(bytes: &[u8]) -> bool {
    bytes.starts_with(b"070701") || bytes.starts_with(b"070702")
}

/// The kind of initrd `head` (its first 6 bytes or more) starts.
pub fn initrd_start_of(head: &[u8]) -> Option<InitrdStart> {
    if is_newc_cpio(head) {
        Some(InitrdStart::Cpio)
    } else if head.starts_with(&[0x1f, 0x8b]) {
        Some(InitrdStart::Gzip)
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Some(InitrdStart::Zstd)
    } else if OTHER_INITRD_MAGICS.iter().any(|magic| head.starts_with(magic)) {
        Some(InitrdStart::OtherCompression)
    } else {
        None
    }
}

/// The first `len` bytes of the file at `path` (fewer if it is shorter).
pub fn read_head(path: &Path, len: usize) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(len);
    File::open(path)?.take(len as u64).read_to_end(&mut head)?;
    Ok(head)
}

/// The format of kernel bytes, from the start of the file: an x86_64 ELF
/// header, or a boot sector with the `HdrS` setup header.
pub fn kernel_format_of(head: &[u8]) -> Option<KernelFormat> {
    if head.starts_with(ELF_MAGIC) {
        return ElfHeader::parse(head)
            .filter(|elf| elf.machine == EM_X86_64)
            .map(|_| KernelFormat::Elf);
    }
    let is_bzimage =
        u16_at(head, BOOT_FLAG) == Some(0xaa55) && head.get(HEADER_MAGIC..HEADER_MAGIC + 4) == Some(b"HdrS".as_slice());
    is_bzimage.then_some(KernelFormat::Bzimage)
}

/// What the kernel file `file` is; `None` when it is neither an x86_64 ELF
/// vmlinux nor a bzImage.
pub fn inspect_kernel_file(file: &File) -> std::io::Result<Option<KernelInfo>> {
    let head = read_at(file, 0, KERNEL_HEAD_LEN)?;
    let Some(format) = kernel_format_of(&head) else {
        return Ok(None);
    };
    let pvh_entry = format == KernelFormat::Elf && has_pvh_note(file, &head)?;
    Ok(Some(KernelInfo { format, pvh_entry }))
}

/// Detects whether `path` is an x86_64 ELF vmlinux or a bzImage.
pub fn detect_kernel_format(path: &Path) -> Result<KernelFormat, ImageError> {
    let info = File::open(path)
        .and_then(|file| inspect_kernel_file(&file))
        .map_err(|e| ImageError::io("reading kernel", path, e))?;
    info.map(|info| info.format).ok_or_else(|| ImageError::Kernel {
        path: path.to_path_buf(),
        message: "neither an x86_64 ELF vmlinux nor a bzImage (no x86_64 ELF header, no `HdrS` boot header)".into(),
    })
}

/// Walks the PT_NOTE segments of the ELF whose header is `head`, looking
/// for the Xen PVH entry note.
fn has_pvh_note(file: &File, head: &[u8]) -> std::io::Result<bool> {
    let Some(header) = ElfHeader::parse(head) else {
        return Ok(false);
    };
    let Some(table_len) = header.program_table_len().filter(|len| *len <= MAX_ELF_PART_BYTES) else {
        return Ok(false);
    };
    let table = read_at(file, header.phoff, table_len)?;
    let Some(program_headers) = header.program_headers(&table) else {
        return Ok(false);
    };
    for note_header in program_headers.iter().filter(|h| h.kind == PT_NOTE) {
        let Some(size) = usize::try_from(note_header.filesz)
            .ok()
            .filter(|size| *size <= MAX_ELF_PART_BYTES)
        else {
            continue;
        };
        let segment = read_at(file, note_header.offset, size)?;
        if notes_in(&segment).iter().any(Note::is_pvh_entry) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Reads `len` bytes at `offset`, or fewer if the file is shorter.
fn read_at(file: &File, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let mut filled = 0;
    while filled < len {
        match file.read_at(&mut buf[filled..], offset.saturating_add(filled as u64))? {
            0 => break,
            n => filled += n,
        }
    }
    buf.truncate(filled);
    Ok(buf)
}

#[cfg(test)]
#[path = "kernel_tests.rs"]
mod tests;
