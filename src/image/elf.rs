//! Just enough ELF64 (little-endian) reading for kernels and the image
//! builder: the file header, program headers, notes (the PVH entry note of
//! a vmlinux), the interpreter and the DT_NEEDED libraries of a dynamically
//! linked program.
//!
//! The pieces (header, program header table, note segment) parse separately
//! so a caller can read only those parts of a large file (see
//! `kernel::inspect_kernel_file`); [`Elf`] puts them together over a whole
//! file in memory. Every offset is bounds-checked: input files may be anything.

pub const ELF_MAGIC: &[u8; 4] = b"\x7fELF";
const ELFCLASS64: u8 = 2;
const ELFDATA2LSB: u8 = 1;
pub const EM_X86_64: u16 = 62;
/// Bytes of the ELF64 file header.
pub const ELF_HEADER_LEN: usize = 64;
/// Bytes of one ELF64 program header; tables with smaller entries are refused.
const PROGRAM_HEADER_LEN: usize = 56;
const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const PT_INTERP: u32 = 3;
pub const PT_NOTE: u32 = 4;
const DT_NULL: u64 = 0;
const DT_NEEDED: u64 = 1;
const DT_STRTAB: u64 = 5;
/// Xen's note type announcing the 32-bit PVH entry point (used by
/// Firecracker and QEMU to boot a vmlinux directly).
pub const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;

/// Little-endian field readers (also used for the x86 boot header).
pub(super) fn u16_at(data: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(data.get(at..at + 2)?.try_into().ok()?))
}
pub(super) fn u32_at(data: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(data.get(at..at + 4)?.try_into().ok()?))
}
fn u64_at(data: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(data.get(at..at + 8)?.try_into().ok()?))
}

/// The ELF64 LE file header: what the file is for and where its program
/// header table lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ElfHeader {
    pub machine: u16,
    /// File offset of the program header table.
    pub phoff: u64,
    pub phentsize: usize,
    pub phnum: usize,
}

impl ElfHeader {
    /// `None` when `head` (the file's first [`ELF_HEADER_LEN`] bytes or
    /// more) is not an ELF64 little-endian header.
    pub fn parse(head: &[u8]) -> Option<Self> {
        if head.get(..4)? != ELF_MAGIC || *head.get(4)? != ELFCLASS64 || *head.get(5)? != ELFDATA2LSB {
            return None;
        }
        Some(ElfHeader {
            machine: u16_at(head, 18)?,
            phoff: u64_at(head, 32)?,
            phentsize: usize::from(u16_at(head, 54)?),
            phnum: usize::from(u16_at(head, 56)?),
        })
    }

    /// Bytes of the program header table, `None` when its entries are too
    /// small to be ELF64 program headers.
    pub fn program_table_len(&self) -> Option<usize> {
        if self.phentsize < PROGRAM_HEADER_LEN {
            return None;
        }
        self.phentsize.checked_mul(self.phnum)
    }

    /// Parses the program header table (`table` holds its bytes, read from
    /// [`phoff`](Self::phoff)); `None` when it is cut short.
    pub fn program_headers(&self, table: &[u8]) -> Option<Vec<ProgramHeader>> {
        self.program_table_len()?;
        (0..self.phnum)
            .map(|index| {
                let at = index.checked_mul(self.phentsize)?;
                Some(ProgramHeader {
                    kind: u32_at(table, at)?,
                    offset: u64_at(table, at + 8)?,
                    vaddr: u64_at(table, at + 16)?,
                    filesz: u64_at(table, at + 32)?,
                })
            })
            .collect()
    }
}

/// One ELF64 program header (the fields Hatch uses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProgramHeader {
    pub kind: u32,
    pub offset: u64,
    pub vaddr: u64,
    pub filesz: u64,
}

/// One note of a PT_NOTE segment; `name` without its trailing NUL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Note<'a> {
    pub name: &'a [u8],
    pub kind: u32,
    pub desc: &'a [u8],
}

impl Note<'_> {
    /// Whether this is Xen's PVH entry note.
    pub fn is_pvh_entry(&self) -> bool {
        self.name == b"Xen" && self.kind == XEN_ELFNOTE_PHYS32_ENTRY
    }
}

/// The notes in the bytes of one PT_NOTE segment, up to the first that is
/// cut short.
pub fn notes_in(segment: &[u8]) -> Vec<Note<'_>> {
    let mut notes = Vec::new();
    let mut at = 0usize;
    while let (Some(namesz), Some(descsz), Some(kind)) =
        (u32_at(segment, at), u32_at(segment, at + 4), u32_at(segment, at + 8))
    {
        let name_start = at + 12;
        let desc_start = name_start + align4(namesz as usize);
        let (Some(name), Some(desc)) = (
            segment.get(name_start..name_start + namesz as usize),
            segment.get(desc_start..desc_start + descsz as usize),
        ) else {
            break;
        };
        let name = name.strip_suffix(b"\0").unwrap_or(name);
        notes.push(Note { name, kind, desc });
        at = desc_start + align4(descsz as usize);
    }
    notes
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
        let header = ElfHeader::parse(data)?;
        let table = data.get(usize::try_from(header.phoff).ok()?..)?;
        let headers = header.program_headers(table)?;
        Some(Elf {
            data,
            machine: header.machine,
            headers,
        })
    }

    fn segment(&self, header: &ProgramHeader) -> Option<&'a [u8]> {
        let start = usize::try_from(header.offset).ok()?;
        let end = start.checked_add(usize::try_from(header.filesz).ok()?)?;
        self.data.get(start..end)
    }

    /// Every note in the PT_NOTE segments.
    pub fn notes(&self) -> Vec<Note<'a>> {
        self.headers
            .iter()
            .filter(|h| h.kind == PT_NOTE)
            .filter_map(|h| self.segment(h))
            .flat_map(notes_in)
            .collect()
    }

    /// Whether the file carries the Xen PVH entry note.
    pub fn has_pvh_note(&self) -> bool {
        self.notes().iter().any(Note::is_pvh_entry)
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
            .find(|h| h.kind == PT_LOAD && vaddr >= h.vaddr && vaddr - h.vaddr < h.filesz)?;
        usize::try_from((vaddr - load.vaddr).checked_add(load.offset)?).ok()
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
