//! Just enough ELF64 (little-endian) reading for the image builder: program
//! headers, notes (the PVH entry note of a vmlinux), the interpreter and the
//! DT_NEEDED libraries of a dynamically linked program.
//!
//! Every offset is bounds-checked: input files may be anything.

pub const ELF_MAGIC: &[u8; 4] = b"\x7fELF";
const ELFCLASS64: u8 = 2;
const ELFDATA2LSB: u8 = 1;
pub const EM_X86_64: u16 = 62;
const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const PT_INTERP: u32 = 3;
const PT_NOTE: u32 = 4;
const DT_NULL: u64 = 0;
const DT_NEEDED: u64 = 1;
const DT_STRTAB: u64 = 5;
/// Xen's note type announcing the 32-bit PVH entry point (used by
/// Firecracker and QEMU to boot a vmlinux directly).
pub const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;

fn u16_at(data: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(data.get(at..at + 2)?.try_into().ok()?))
}
fn u32_at(data: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(data.get(at..at + 4)?.try_into().ok()?))
}
fn u64_at(data: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(data.get(at..at + 8)?.try_into().ok()?))
}

#[derive(Debug, Clone, Copy)]
struct ProgramHeader {
    kind: u32,
    offset: u64,
    vaddr: u64,
    filesz: u64,
}

/// A parsed view over the bytes of an ELF64 little-endian file.
pub struct Elf<'a> {
    data: &'a [u8],
    pub machine: u16,
    headers: Vec<ProgramHeader>,
}

impl<'a> Elf<'a> {
    /// `None` when the bytes are not a well-formed ELF64 LE file.
    pub fn parse(data: &'a [u8]) -> Option<Self> {
        if data.get(..4)? != ELF_MAGIC
            || *data.get(4)? != ELFCLASS64
            || *data.get(5)? != ELFDATA2LSB
        {
            return None;
        }
        let machine = u16_at(data, 18)?;
        let phoff = usize::try_from(u64_at(data, 32)?).ok()?;
        let phentsize = usize::from(u16_at(data, 54)?);
        let phnum = usize::from(u16_at(data, 56)?);
        if phentsize < 56 {
            return None;
        }
        let mut headers = Vec::with_capacity(phnum);
        for index in 0..phnum {
            let at = phoff.checked_add(index.checked_mul(phentsize)?)?;
            headers.push(ProgramHeader {
                kind: u32_at(data, at)?,
                offset: u64_at(data, at + 8)?,
                vaddr: u64_at(data, at + 16)?,
                filesz: u64_at(data, at + 32)?,
            });
        }
        Some(Elf {
            data,
            machine,
            headers,
        })
    }

    fn segment(&self, header: &ProgramHeader) -> Option<&'a [u8]> {
        let start = usize::try_from(header.offset).ok()?;
        let end = start.checked_add(usize::try_from(header.filesz).ok()?)?;
        self.data.get(start..end)
    }

    /// (name, type, descriptor) of every note in PT_NOTE segments.
    pub fn notes(&self) -> Vec<(&'a [u8], u32, &'a [u8])> {
        let mut notes = Vec::new();
        for header in self.headers.iter().filter(|h| h.kind == PT_NOTE) {
            let Some(segment) = self.segment(header) else {
                continue;
            };
            let mut at = 0usize;
            while let (Some(namesz), Some(descsz), Some(kind)) = (
                u32_at(segment, at),
                u32_at(segment, at + 4),
                u32_at(segment, at + 8),
            ) {
                let name_start = at + 12;
                let desc_start = name_start + align4(namesz as usize);
                let next = desc_start + align4(descsz as usize);
                let (Some(name), Some(desc)) = (
                    segment.get(name_start..name_start + namesz as usize),
                    segment.get(desc_start..desc_start + descsz as usize),
                ) else {
                    break;
                };
                let name = name.strip_suffix(b"\0").unwrap_or(name);
                notes.push((name, kind, desc));
                at = next;
            }
        }
        notes
    }

    /// Whether the file carries the Xen PVH entry note.
    pub fn has_pvh_note(&self) -> bool {
        self.notes()
            .iter()
            .any(|(name, kind, _)| *name == b"Xen" && *kind == XEN_ELFNOTE_PHYS32_ENTRY)
    }

    /// The program interpreter (dynamic loader) path, if any.
    pub fn interpreter(&self) -> Option<String> {
        let header = self.headers.iter().find(|h| h.kind == PT_INTERP)?;
        let bytes = self.segment(header)?;
        let bytes = bytes.split(|b| *b == 0).next()?;
        Some(String::from_utf8_lossy(bytes).into_owned())
    }

    /// File offset of a virtual address, through the PT_LOAD segments.
    fn file_offset(&self, vaddr: u64) -> Option<usize> {
        let load = self
            .headers
            .iter()
            .find(|h| h.kind == PT_LOAD && vaddr >= h.vaddr && vaddr < h.vaddr + h.filesz)?;
        usize::try_from(vaddr - load.vaddr + load.offset).ok()
    }

    /// The DT_NEEDED shared library names (e.g. `libc.so.6`).
    pub fn needed_libraries(&self) -> Vec<String> {
        let Some(dynamic) = self
            .headers
            .iter()
            .find(|h| h.kind == PT_DYNAMIC)
            .and_then(|h| self.segment(h))
        else {
            return Vec::new();
        };
        let entries: Vec<(u64, u64)> = dynamic
            .chunks_exact(16)
            .map(|e| (u64_at(e, 0).unwrap_or(DT_NULL), u64_at(e, 8).unwrap_or(0)))
            .take_while(|(tag, _)| *tag != DT_NULL)
            .collect();
        let Some(strtab) = entries
            .iter()
            .find(|(tag, _)| *tag == DT_STRTAB)
            .and_then(|(_, addr)| self.file_offset(*addr))
        else {
            return Vec::new();
        };
        entries
            .iter()
            .filter(|(tag, _)| *tag == DT_NEEDED)
            .filter_map(|(_, name_offset)| {
                let start = strtab.checked_add(usize::try_from(*name_offset).ok()?)?;
                let bytes = self.data.get(start..)?.split(|b| *b == 0).next()?;
                Some(String::from_utf8_lossy(bytes).into_owned())
            })
            .collect()
    }
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}
