//! Recognising guest boot files by their content, so a wrong file is refused
//! with a clear message before any VMM process starts.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::model::KernelFormat;

/// What a kernel file turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelInfo {
    pub format: KernelFormat,
    /// ELF only: has the Xen PVH entry note (QEMU needs it to boot an ELF).
    pub pvh_entry: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum KernelFileError {
    #[error("cannot read {path}: {source}")]
    Unreadable {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is neither an x86_64 ELF vmlinux nor a bzImage")]
    UnknownFormat { path: String },
    #[error("{path} is not an initrd (expected a cpio archive, optionally gzip/zstd/xz/lz4/bzip2/lzma compressed)")]
    NotAnInitrd { path: String },
}

const ELF_MAGIC: &[u8; 4] = b"\x7fELF";
const EM_X86_64: u16 = 0x3e;
const PT_NOTE: u32 = 4;
/// `XEN_ELFNOTE_PHYS32_ENTRY`: the 32-bit PVH entry point.
const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;
/// A note segment bigger than this is not a kernel's; don't read it.
const MAX_NOTE_BYTES: u64 = 1 << 20;

fn unreadable(path: &Path) -> impl FnOnce(std::io::Error) -> KernelFileError + '_ {
    move |source| KernelFileError::Unreadable {
        path: path.display().to_string(),
        source,
    }
}

/// Reads `len` bytes at `offset`, or fewer if the file is shorter.
fn read_at(file: &File, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let mut filled = 0;
    while filled < len {
        match file.read_at(&mut buf[filled..], offset + filled as u64)? {
            0 => break,
            n => filled += n,
        }
    }
    buf.truncate(filled);
    Ok(buf)
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// Detects whether `path` is an x86_64 ELF vmlinux (and whether it has the
/// PVH note) or a bzImage.
pub fn inspect_kernel(path: &Path) -> Result<KernelInfo, KernelFileError> {
    let file = File::open(path).map_err(unreadable(path))?;
    let head = read_at(&file, 0, 0x210).map_err(unreadable(path))?;
    if head.starts_with(ELF_MAGIC) {
        let is_x86_64 = head.get(4) == Some(&2)
            && head.get(5) == Some(&1)
            && u16_at(&head, 0x12) == Some(EM_X86_64);
        if !is_x86_64 {
            return Err(KernelFileError::UnknownFormat {
                path: path.display().to_string(),
            });
        }
        let pvh_entry = has_pvh_note(&file, &head).map_err(unreadable(path))?;
        return Ok(KernelInfo {
            format: KernelFormat::Elf,
            pvh_entry,
        });
    }
    // bzImage: boot sector signature 0xAA55 at 0x1fe and "HdrS" at 0x202.
    if head.get(0x1fe..0x200) == Some(&[0x55, 0xaa]) && head.get(0x202..0x206) == Some(b"HdrS") {
        return Ok(KernelInfo {
            format: KernelFormat::Bzimage,
            pvh_entry: false,
        });
    }
    Err(KernelFileError::UnknownFormat {
        path: path.display().to_string(),
    })
}

/// Walks the PT_NOTE segments looking for the Xen PVH entry note.
fn has_pvh_note(file: &File, header: &[u8]) -> std::io::Result<bool> {
    let (Some(phoff), Some(phentsize), Some(phnum)) = (
        u64_at(header, 0x20),
        u16_at(header, 0x36),
        u16_at(header, 0x38),
    ) else {
        return Ok(false);
    };
    if phentsize < 56 {
        return Ok(false);
    }
    let table = read_at(file, phoff, phentsize as usize * phnum as usize)?;
    for entry in table.chunks_exact(phentsize as usize) {
        if u32_at(entry, 0) != Some(PT_NOTE) {
            continue;
        }
        let (Some(offset), Some(size)) = (u64_at(entry, 8), u64_at(entry, 32)) else {
            continue;
        };
        if size > MAX_NOTE_BYTES {
            continue;
        }
        if notes_contain_pvh(&read_at(file, offset, size as usize)?) {
            return Ok(true);
        }
    }
    Ok(false)
}

fn notes_contain_pvh(notes: &[u8]) -> bool {
    let align4 = |n: usize| (n + 3) & !3;
    let mut at = 0;
    while let (Some(namesz), Some(descsz), Some(kind)) = (
        u32_at(notes, at),
        u32_at(notes, at + 4),
        u32_at(notes, at + 8),
    ) {
        let name_start = at + 12;
        let name = notes.get(name_start..name_start + namesz as usize);
        if kind == XEN_ELFNOTE_PHYS32_ENTRY && name == Some(b"Xen\0") {
            return true;
        }
        at = name_start + align4(namesz as usize) + align4(descsz as usize);
    }
    false
}

/// Checks that `path` starts like an initrd: a cpio archive ("070701" /
/// "070702") or one of the compressions Linux can unpack.
pub fn check_initrd(path: &Path) -> Result<(), KernelFileError> {
    let file = File::open(path).map_err(unreadable(path))?;
    let head = read_at(&file, 0, 6).map_err(unreadable(path))?;
    const MAGICS: [&[u8]; 8] = [
        b"070701",
        b"070702",
        &[0x1f, 0x8b],             // gzip
        &[0x28, 0xb5, 0x2f, 0xfd], // zstd
        &[0xfd, b'7', b'z', b'X'], // xz
        &[0x02, 0x21, 0x4c, 0x18], // lz4 legacy frame
        b"BZh",                    // bzip2
        &[0x5d, 0x00, 0x00],       // lzma
    ];
    if MAGICS.iter().any(|magic| head.starts_with(magic)) {
        Ok(())
    } else {
        Err(KernelFileError::NotAnInitrd {
            path: path.display().to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file_with(bytes: &[u8]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().expect("temp file");
        f.write_all(bytes).expect("write");
        f
    }

    /// An ELF64 header with one PT_NOTE program header pointing at `note`.
    fn elf_with_note(note: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; 64 + 56];
        b[..4].copy_from_slice(ELF_MAGIC);
        b[4] = 2;
        b[5] = 1;
        b[0x12..0x14].copy_from_slice(&EM_X86_64.to_le_bytes());
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

    #[test]
    fn elf_with_pvh_note_is_recognised() {
        let mut notes = note(b"GNU\0", 3, &[1, 2, 3, 4]);
        notes.extend(note(b"Xen\0", XEN_ELFNOTE_PHYS32_ENTRY, &[0, 0, 0, 1]));
        let f = file_with(&elf_with_note(&notes));
        let info = inspect_kernel(f.path()).expect("elf");
        assert_eq!(
            info,
            KernelInfo {
                format: KernelFormat::Elf,
                pvh_entry: true
            }
        );
    }

    #[test]
    fn elf_without_pvh_note_is_plain_elf() {
        let f = file_with(&elf_with_note(&note(b"GNU\0", 3, &[0; 4])));
        assert!(!inspect_kernel(f.path()).expect("elf").pvh_entry);
    }

    #[test]
    fn bzimage_is_recognised() {
        let mut b = vec![0u8; 0x300];
        b[0x1fe] = 0x55;
        b[0x1ff] = 0xaa;
        b[0x202..0x206].copy_from_slice(b"HdrS");
        let f = file_with(&b);
        assert_eq!(
            inspect_kernel(f.path()).expect("bzimage").format,
            KernelFormat::Bzimage
        );
    }

    #[test]
    fn garbage_and_missing_files_are_refused() {
        let f = file_with(b"#!/bin/sh\necho not a kernel\n");
        assert!(matches!(
            inspect_kernel(f.path()),
            Err(KernelFileError::UnknownFormat { .. })
        ));
        assert!(matches!(
            inspect_kernel(Path::new("/nonexistent/vmlinux")),
            Err(KernelFileError::Unreadable { .. })
        ));
    }

    #[test]
    fn initrd_magic_is_checked() {
        assert!(check_initrd(file_with(b"070701000000").path()).is_ok());
        assert!(check_initrd(file_with(&[0x1f, 0x8b, 8, 0]).path()).is_ok());
        assert!(matches!(
            check_initrd(file_with(b"hello world").path()),
            Err(KernelFileError::NotAnInitrd { .. })
        ));
    }
}
